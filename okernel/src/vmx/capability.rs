//! VMX capability MSRs and what they allow (SDM Vol. 3D Appendix A).

/// IA32_FEATURE_CONTROL bits (SDM Vol. 3C §24.7 "Enabling and Entering VMX
/// Operation").
pub mod feature_control {
    /// Lock bit: once set, the MSR cannot be written until reset.
    pub const LOCK: u64 = 1 << 0;
    /// Enable VMX inside SMX operation.
    pub const VMX_INSIDE_SMX: u64 = 1 << 1;
    /// Enable VMX outside SMX operation.
    pub const VMX_OUTSIDE_SMX: u64 = 1 << 2;
    /// SENTER local function enables (bits 14:8) and global enable (bit 15).
    pub const SENTER_ENABLES: u64 = 0xff << 8;
}

/// IA32_VMX_BASIC decoded (SDM Appendix A.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmxBasic(pub u64);

impl VmxBasic {
    /// The VMCS revision identifier (bits 30:0).
    pub const fn revision_id(self) -> u32 {
        (self.0 & 0x7fff_ffff) as u32
    }
    /// The size of the VMXON and VMCS regions in bytes (bits 44:32).
    pub const fn region_size(self) -> u32 {
        ((self.0 >> 32) & 0x1fff) as u32
    }
    /// Whether region addresses are limited to 32 bits (bit 48).
    pub const fn addresses_32bit(self) -> bool {
        self.0 & (1 << 48) != 0
    }
    /// The memory type for the VMCS and the structures it points to
    /// (bits 53:50; 6 = write-back).
    pub const fn memory_type(self) -> u8 {
        ((self.0 >> 50) & 0xf) as u8
    }
    /// Whether the TRUE_ capability MSRs exist (bit 55): controls that are
    /// "default1" may then be cleared (SDM Appendix A.2).
    pub const fn true_controls(self) -> bool {
        self.0 & (1 << 55) != 0
    }
}

/// The allowed settings of one control field, from its capability MSR
/// (SDM Appendix A.3-A.5): bits 31:0 are the allowed 0-settings (a 1 there
/// means the control must be 1), bits 63:32 the allowed 1-settings (a 0
/// there means the control must be 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedSettings {
    /// Controls that must be 1.
    pub must_be_one: u32,
    /// Controls that may be 1.
    pub may_be_one: u32,
}

impl AllowedSettings {
    /// Decodes a capability MSR value.
    pub const fn from_msr(value: u64) -> Self {
        Self {
            must_be_one: value as u32,
            may_be_one: (value >> 32) as u32,
        }
    }

    /// Whether `bits` may all be set.
    pub const fn allows(self, bits: u32) -> bool {
        bits & !self.may_be_one == 0
    }

    /// Chooses the control value: every `required` bit (an error naming the
    /// missing ones if the CPU does not allow them), each `optional` bit the
    /// CPU allows, every bit the CPU insists on, and nothing else.
    pub const fn adjust(self, required: u32, optional: u32) -> Result<u32, u32> {
        let missing = required & !self.may_be_one;
        if missing != 0 {
            return Err(missing);
        }
        Ok((required | (optional & self.may_be_one) | self.must_be_one) & self.may_be_one)
    }
}

/// The CR0 or CR4 bits VMX operation fixes (SDM Appendix A.7, A.8): a bit
/// set in FIXED0 must be 1, a bit clear in FIXED1 must be 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedBits {
    /// IA32_VMX_CRn_FIXED0.
    pub fixed0: u64,
    /// IA32_VMX_CRn_FIXED1.
    pub fixed1: u64,
}

impl FixedBits {
    /// Applies the fixed bits to a register value.
    pub const fn apply(self, value: u64) -> u64 {
        (value | self.fixed0) & self.fixed1
    }
    /// Whether `value` satisfies the fixed bits.
    pub const fn accepts(self, value: u64) -> bool {
        self.apply(value) == value
    }
}

/// IA32_VMX_EPT_VPID_CAP decoded (SDM Appendix A.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptVpidCap(pub u64);

impl EptVpidCap {
    const fn bit(self, n: u32) -> bool {
        self.0 & (1 << n) != 0
    }
    /// Execute-only EPT translations (bit 0).
    pub const fn execute_only(self) -> bool {
        self.bit(0)
    }
    /// 4-level EPT page walks (bit 6).
    pub const fn page_walk_4(self) -> bool {
        self.bit(6)
    }
    /// Uncacheable EPT paging-structure memory type (bit 8).
    pub const fn memory_type_uc(self) -> bool {
        self.bit(8)
    }
    /// Write-back EPT paging-structure memory type (bit 14).
    pub const fn memory_type_wb(self) -> bool {
        self.bit(14)
    }
    /// 2-MByte EPT pages (bit 16).
    pub const fn pages_2m(self) -> bool {
        self.bit(16)
    }
    /// 1-GByte EPT pages (bit 17).
    pub const fn pages_1g(self) -> bool {
        self.bit(17)
    }
    /// INVEPT supported (bit 20).
    pub const fn invept(self) -> bool {
        self.bit(20)
    }
    /// Accessed and dirty flags for EPT (bit 21).
    pub const fn accessed_dirty(self) -> bool {
        self.bit(21)
    }
    /// Advanced VM-exit information for EPT violations (bit 22).
    pub const fn advanced_exit_info(self) -> bool {
        self.bit(22)
    }
    /// Single-context INVEPT (bit 25).
    pub const fn invept_single_context(self) -> bool {
        self.bit(25)
    }
    /// All-context INVEPT (bit 26).
    pub const fn invept_all_context(self) -> bool {
        self.bit(26)
    }
    /// INVVPID supported (bit 32).
    pub const fn invvpid(self) -> bool {
        self.bit(32)
    }
    /// Single-context INVVPID (bit 41).
    pub const fn invvpid_single_context(self) -> bool {
        self.bit(41)
    }
    /// All-context INVVPID (bit 42).
    pub const fn invvpid_all_context(self) -> bool {
        self.bit(42)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjust_keeps_required_and_mandatory_bits() {
        // must be one: bits 1, 2; may be one: bits 1, 2, 4, 8.
        let a = AllowedSettings::from_msr((0x116u64 << 32) | 0x6);
        assert_eq!(a.adjust(0x10, 0), Ok(0x16));
        // Optional bit 5 is not allowed: dropped silently.
        assert_eq!(a.adjust(0x10, 0x20), Ok(0x16));
        // Optional bit 8 is allowed: kept.
        assert_eq!(a.adjust(0, 0x100), Ok(0x106));
        // Required bit 5 is not allowed: named.
        assert_eq!(a.adjust(0x30, 0), Err(0x20));
        assert!(a.allows(0x104));
        assert!(!a.allows(0x1));
    }

    #[test]
    fn true_controls_let_default1_bits_clear() {
        // Bochs-like primary controls: the non-true MSR forces CR3-load and
        // CR3-store exiting (bits 15, 16) to 1, the TRUE MSR does not.
        let legacy = AllowedSettings::from_msr((0xffff_ffffu64 << 32) | 0x0401_e172);
        let truec = AllowedSettings::from_msr((0xffff_ffffu64 << 32) | 0x0400_6172);
        assert_ne!(legacy.adjust(0, 0).unwrap() & (1 << 15), 0);
        assert_eq!(truec.adjust(0, 0).unwrap() & (1 << 15), 0);
    }

    #[test]
    fn basic_fields_decode() {
        let b = VmxBasic((1u64 << 55) | (6u64 << 50) | (0x1000u64 << 32) | 0x1234);
        assert_eq!(b.revision_id(), 0x1234);
        assert_eq!(b.region_size(), 0x1000);
        assert_eq!(b.memory_type(), 6);
        assert!(b.true_controls());
        assert!(!b.addresses_32bit());
    }

    #[test]
    fn fixed_bits_apply() {
        let f = FixedBits {
            fixed0: 0x8000_0021,
            fixed1: 0xffff_ffff,
        };
        assert_eq!(f.apply(0x11), 0x8000_0031);
        assert!(!f.accepts(0x11));
        assert!(f.accepts(0x8000_0031));
        let f4 = FixedBits {
            fixed0: 0x2000,
            fixed1: 0x3727ff,
        };
        assert_eq!(f4.apply(0x20), 0x2020);
        assert_eq!(f4.apply(0x1_0000_0020), 0x2020);
    }

    #[test]
    fn vmx_capability_range() {
        assert!(crate::msrs::is_vmx_capability(0x480));
        assert!(crate::msrs::is_vmx_capability(0x491));
        assert!(!crate::msrs::is_vmx_capability(0x3a));
        assert!(!crate::msrs::is_vmx_capability(0x494));
    }
}
