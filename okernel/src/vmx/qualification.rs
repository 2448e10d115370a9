//! Exit-qualification decoders (SDM Vol. 3C §28.2.1 "Basic VM-Exit
//! Information", Tables 28-1 .. 28-7) and the VM-entry failure
//! qualification (§27.8 "VM-Entry Failures During or After Loading Guest
//! State"). EPT-violation qualifications are decoded by the `ept` crate.

use super::regs::Gpr;

/// The kind of control-register access (Table 28-3, bits 5:4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrAccessType {
    /// MOV to CR.
    MovTo,
    /// MOV from CR.
    MovFrom,
    /// CLTS.
    Clts,
    /// LMSW.
    Lmsw,
}

/// A decoded control-register-access qualification (Table 28-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrAccess {
    /// The control register number (bits 3:0): 0, 3, 4 or 8.
    pub cr: u8,
    /// The access type.
    pub access: CrAccessType,
    /// For MOV CR, the general-purpose register (bits 11:8).
    pub gpr: Gpr,
    /// For LMSW, whether the operand is in memory (bit 6).
    pub lmsw_memory_operand: bool,
    /// For LMSW, the source data (bits 31:16).
    pub lmsw_source: u16,
}

impl CrAccess {
    /// Decodes the exit qualification of a control-register access exit.
    pub const fn decode(q: u64) -> Self {
        let access = match (q >> 4) & 3 {
            0 => CrAccessType::MovTo,
            1 => CrAccessType::MovFrom,
            2 => CrAccessType::Clts,
            _ => CrAccessType::Lmsw,
        };
        Self {
            cr: (q & 0xf) as u8,
            access,
            gpr: Gpr::from_index(((q >> 8) & 0xf) as u8),
            lmsw_memory_operand: q & (1 << 6) != 0,
            lmsw_source: (q >> 16) as u16,
        }
    }
}

/// A decoded I/O-instruction qualification (Table 28-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoAccess {
    /// Access size in bytes (1, 2 or 4).
    pub size: u8,
    /// IN (true) or OUT (false).
    pub is_in: bool,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefixed.
    pub rep: bool,
    /// Operand encoding: immediate (true) or DX (false).
    pub immediate: bool,
    /// The port.
    pub port: u16,
}

impl IoAccess {
    /// Decodes the exit qualification of an I/O-instruction exit.
    pub const fn decode(q: u64) -> Self {
        Self {
            size: ((q & 7) + 1) as u8,
            is_in: q & (1 << 3) != 0,
            string: q & (1 << 4) != 0,
            rep: q & (1 << 5) != 0,
            immediate: q & (1 << 6) != 0,
            port: (q >> 16) as u16,
        }
    }
}

/// The exit qualification of a VM-entry failure with basic reason 33
/// ("invalid guest state", SDM §27.8, §28.2.1 Table 28-1).
pub const fn entry_failure_meaning(qualification: u64) -> &'static str {
    match qualification {
        0 => "no further information (a guest-state check of SDM §27.3.1 failed)",
        1 => "reserved",
        2 => "failure loading the PDPTEs",
        3 => {
            "attempt to inject a non-maskable interrupt (NMI) into a guest that is blocking events through the STI blocking bit"
        }
        4 => "invalid VMCS link pointer",
        _ => "undefined qualification",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cr_access_decodes() {
        // MOV CR4, RBX: cr=4, type 0, gpr 3.
        let q = CrAccess::decode(0x304);
        assert_eq!(q.cr, 4);
        assert_eq!(q.access, CrAccessType::MovTo);
        assert_eq!(q.gpr, Gpr::Rbx);
        // MOV R12, CR3.
        let q = CrAccess::decode(0xc13);
        assert_eq!(
            (q.cr, q.access, q.gpr),
            (3, CrAccessType::MovFrom, Gpr::R12)
        );
        // LMSW with source 0x0001 from memory.
        let q = CrAccess::decode((1 << 16) | (1 << 6) | (3 << 4));
        assert_eq!(q.access, CrAccessType::Lmsw);
        assert!(q.lmsw_memory_operand);
        assert_eq!(q.lmsw_source, 1);
        assert_eq!(CrAccess::decode(0x20).access, CrAccessType::Clts);
    }

    #[test]
    fn io_access_decodes() {
        // OUT 0xe9, AL: size 1, out, immediate.
        let q = IoAccess::decode((0xe9 << 16) | (1 << 6));
        assert_eq!(
            q,
            IoAccess {
                size: 1,
                is_in: false,
                string: false,
                rep: false,
                immediate: true,
                port: 0xe9
            }
        );
        // REP INSD from DX=0x3f8.
        let q = IoAccess::decode((0x3f8 << 16) | (1 << 5) | (1 << 4) | (1 << 3) | 3);
        assert_eq!(
            (q.size, q.is_in, q.string, q.rep, q.port),
            (4, true, true, true, 0x3f8)
        );
    }

    #[test]
    fn entry_failure_qualifications_have_meanings() {
        assert_eq!(entry_failure_meaning(4), "invalid VMCS link pointer");
        assert_eq!(entry_failure_meaning(9), "undefined qualification");
    }
}
