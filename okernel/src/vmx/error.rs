//! VMX instruction failures (SDM Vol. 3C §31.2 "Conventions" and §31.4
//! "VM Instruction Error Numbers").
//!
//! A VMX instruction either succeeds (`VMsucceed`: CF = ZF = 0), fails
//! without a current VMCS (`VMfailInvalid`: CF = 1), or fails with a current
//! VMCS and leaves an error number in the read-only VM-instruction error
//! field (`VMfailValid`: ZF = 1).

use thiserror::Error;

/// How a VMX instruction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VmFail {
    /// VMfailInvalid: the instruction failed and there is no current VMCS to hold an error number
    #[error("VMfailInvalid (no current VMCS)")]
    Invalid,
    /// VMfailValid: the instruction failed with an error number in the current VMCS
    #[error("VMfailValid: {0}")]
    Valid(InstructionError),
}

/// A VM-instruction error number (SDM Vol. 3C §31.4, Table 31-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstructionError(pub u32);

impl InstructionError {
    /// 1: VMCALL executed in VMX root operation.
    pub const VMCALL_IN_ROOT: Self = Self(1);
    /// 2: VMCLEAR with invalid physical address.
    pub const VMCLEAR_INVALID_ADDRESS: Self = Self(2);
    /// 3: VMCLEAR with VMXON pointer.
    pub const VMCLEAR_VMXON_POINTER: Self = Self(3);
    /// 4: VMLAUNCH with non-clear VMCS.
    pub const VMLAUNCH_NON_CLEAR: Self = Self(4);
    /// 5: VMRESUME with non-launched VMCS.
    pub const VMRESUME_NON_LAUNCHED: Self = Self(5);
    /// 7: VM entry with invalid control field(s).
    pub const ENTRY_INVALID_CONTROLS: Self = Self(7);
    /// 8: VM entry with invalid host-state field(s).
    pub const ENTRY_INVALID_HOST_STATE: Self = Self(8);
    /// 11: VMPTRLD with incorrect VMCS revision identifier.
    pub const VMPTRLD_BAD_REVISION: Self = Self(11);
    /// 12: VMREAD/VMWRITE from/to unsupported VMCS component.
    pub const UNSUPPORTED_COMPONENT: Self = Self(12);
    /// 13: VMWRITE to read-only VMCS component.
    pub const VMWRITE_READ_ONLY: Self = Self(13);
    /// 15: VMXON executed in VMX root operation.
    pub const VMXON_IN_ROOT: Self = Self(15);
    /// 28: Invalid operand to INVEPT/INVVPID.
    pub const INVALID_INVEPT_INVVPID_OPERAND: Self = Self(28);

    /// The meaning of the error number, as worded in SDM Table 31-1.
    pub const fn meaning(self) -> &'static str {
        match self.0 {
            1 => "VMCALL executed in VMX root operation",
            2 => "VMCLEAR with invalid physical address",
            3 => "VMCLEAR with VMXON pointer",
            4 => "VMLAUNCH with non-clear VMCS",
            5 => "VMRESUME with non-launched VMCS",
            6 => "VMRESUME after VMXOFF",
            7 => "VM entry with invalid control field(s)",
            8 => "VM entry with invalid host-state field(s)",
            9 => "VMPTRLD with invalid physical address",
            10 => "VMPTRLD with VMXON pointer",
            11 => "VMPTRLD with incorrect VMCS revision identifier",
            12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
            13 => "VMWRITE to read-only VMCS component",
            15 => "VMXON executed in VMX root operation",
            16 => "VM entry with invalid executive-VMCS pointer",
            17 => "VM entry with non-launched executive VMCS",
            18 => "VM entry with executive-VMCS pointer not VMXON pointer",
            19 => "VMCALL with non-clear VMCS",
            20 => "VMCALL with invalid VM-exit control fields",
            22 => "VMCALL with incorrect MSEG revision identifier",
            23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
            24 => "VMCALL with invalid SMM-monitor features",
            25 => "VM entry with invalid VM-execution control fields in executive VMCS",
            26 => "VM entry with events blocked by MOV SS",
            28 => "invalid operand to INVEPT/INVVPID",
            _ => "unknown VM-instruction error number",
        }
    }
}

impl core::fmt::Display for InstructionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "VM-instruction error {}: {}", self.0, self.meaning())
    }
}

/// Decodes RFLAGS after a VMX instruction (SDM Vol. 3C §31.2).
///
/// `read_error` is called only for VMfailValid, to fetch the
/// VM-instruction error field of the current VMCS.
pub fn decode_rflags(rflags: u64, read_error: impl FnOnce() -> u32) -> Result<(), VmFail> {
    const CF: u64 = 1 << 0;
    const ZF: u64 = 1 << 6;
    if rflags & CF != 0 {
        Err(VmFail::Invalid)
    } else if rflags & ZF != 0 {
        Err(VmFail::Valid(InstructionError(read_error())))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn rflags_decode_follows_the_conventions() {
        assert_eq!(decode_rflags(0x2, || unreachable!()), Ok(()));
        assert_eq!(decode_rflags(0x3, || unreachable!()), Err(VmFail::Invalid));
        assert_eq!(
            decode_rflags(0x42, || 7),
            Err(VmFail::Valid(InstructionError::ENTRY_INVALID_CONTROLS))
        );
    }

    #[test]
    fn messages_name_the_sdm_meaning() {
        let e = VmFail::Valid(InstructionError(8));
        assert_eq!(
            e.to_string(),
            "VMfailValid: VM-instruction error 8: VM entry with invalid host-state field(s)"
        );
        assert_eq!(
            VmFail::Invalid.to_string(),
            "VMfailInvalid (no current VMCS)"
        );
        assert_eq!(
            InstructionError(99).meaning(),
            "unknown VM-instruction error number"
        );
        for n in [
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18, 19, 20, 22, 23, 24, 25, 26,
            28,
        ] {
            assert_ne!(
                InstructionError(n).meaning(),
                "unknown VM-instruction error number",
                "{n}"
            );
        }
    }
}
