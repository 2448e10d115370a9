//! The guest's general-purpose registers, saved and restored around every
//! VM entry and exit by [`crate::arch::run`] (VMX does not switch them).

/// The guest's general-purpose registers, indexed by the SDM register
/// encoding used in exit qualifications and instruction information (SDM
/// Vol. 3C §28.2.1, Table 28-3: 0 = RAX, 1 = RCX, 2 = RDX, 3 = RBX, 4 = RSP,
/// 5 = RBP, 6 = RSI, 7 = RDI, 8..15 = R8..R15).
///
/// Slot 4 (RSP) is unused: the guest's RSP lives in the VMCS guest-state
/// area; use [`crate::vcpu::Vcpu::gpr`] to read any register by
/// number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GuestRegisters {
    /// The registers, by SDM encoding.
    pub gpr: [u64; 16],
}

/// A general-purpose register number (SDM encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Gpr {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

impl Gpr {
    /// Decodes a 4-bit register number.
    pub const fn from_index(i: u8) -> Self {
        const ALL: [Gpr; 16] = [
            Gpr::Rax,
            Gpr::Rcx,
            Gpr::Rdx,
            Gpr::Rbx,
            Gpr::Rsp,
            Gpr::Rbp,
            Gpr::Rsi,
            Gpr::Rdi,
            Gpr::R8,
            Gpr::R9,
            Gpr::R10,
            Gpr::R11,
            Gpr::R12,
            Gpr::R13,
            Gpr::R14,
            Gpr::R15,
        ];
        ALL[(i & 0xf) as usize]
    }

    /// The register's name, for logs.
    pub const fn name(self) -> &'static str {
        const NAMES: [&str; 16] = [
            "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15",
        ];
        NAMES[self as usize]
    }
}

impl GuestRegisters {
    /// RAX.
    pub const fn rax(&self) -> u64 {
        self.gpr[Gpr::Rax as usize]
    }
    /// RCX.
    pub const fn rcx(&self) -> u64 {
        self.gpr[Gpr::Rcx as usize]
    }
    /// RDX.
    pub const fn rdx(&self) -> u64 {
        self.gpr[Gpr::Rdx as usize]
    }
    /// RSI.
    pub const fn rsi(&self) -> u64 {
        self.gpr[Gpr::Rsi as usize]
    }
    /// RDI.
    pub const fn rdi(&self) -> u64 {
        self.gpr[Gpr::Rdi as usize]
    }
    /// Sets a register (RSP is ignored: it lives in the VMCS).
    pub fn set(&mut self, r: Gpr, value: u64) {
        self.gpr[r as usize] = value;
    }
    /// Reads a register (RSP reads as the unused slot: use the VMCS).
    pub const fn get(&self, r: Gpr) -> u64 {
        self.gpr[r as usize]
    }
}
