//! Reading the host's segment registers and descriptor tables, so that the
//! VMCS host-state area matches what the loader set up rather than assumed
//! constants (SDM Vol. 3C §25.5 "Host-State Area").

use core::arch::asm;

/// A GDTR or IDTR value as stored by SGDT/SIDT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, packed)]
pub struct DescriptorTablePointer {
    /// The table limit (size in bytes minus one).
    pub limit: u16,
    /// The linear base address.
    pub base: u64,
}

/// Stores the GDTR (SGDT).
pub fn sgdt() -> DescriptorTablePointer {
    let mut p = DescriptorTablePointer::default();
    // SAFETY: SGDT writes exactly 10 bytes to the operand, which is a live
    // `DescriptorTablePointer` (repr(C, packed), 10 bytes).
    unsafe { asm!("sgdt [{}]", in(reg) &raw mut p, options(nostack, preserves_flags)) };
    p
}

/// Stores the IDTR (SIDT).
pub fn sidt() -> DescriptorTablePointer {
    let mut p = DescriptorTablePointer::default();
    // SAFETY: SIDT writes exactly 10 bytes to the operand, which is a live
    // `DescriptorTablePointer` (repr(C, packed), 10 bytes).
    unsafe { asm!("sidt [{}]", in(reg) &raw mut p, options(nostack, preserves_flags)) };
    p
}

/// The host's segment selectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selectors {
    /// CS.
    pub cs: u16,
    /// SS.
    pub ss: u16,
    /// DS.
    pub ds: u16,
    /// ES.
    pub es: u16,
    /// FS.
    pub fs: u16,
    /// GS.
    pub gs: u16,
    /// TR (STR).
    pub tr: u16,
}

/// Reads the current segment selectors and the task register.
pub fn selectors() -> Selectors {
    let (cs, ss, ds, es, fs, gs, tr): (u16, u16, u16, u16, u16, u16, u16);
    // SAFETY: MOV from a segment register and STR only copy a selector into
    // a general register; they touch no memory and no flags.
    unsafe {
        asm!(
            "mov {0:x}, cs", "mov {1:x}, ss", "mov {2:x}, ds", "mov {3:x}, es",
            "mov {4:x}, fs", "mov {5:x}, gs", "str {6:x}",
            out(reg) cs, out(reg) ss, out(reg) ds, out(reg) es,
            out(reg) fs, out(reg) gs, out(reg) tr,
            options(nomem, nostack, preserves_flags),
        );
    }
    Selectors {
        cs,
        ss,
        ds,
        es,
        fs,
        gs,
        tr,
    }
}

/// Calls `f(arg)` on a new stack whose top is `stack_top`; never returns.
///
/// # Safety
/// `stack_top` must be the 16-byte aligned end of writable memory that is
/// used by nothing else and is large enough for everything `f` does.
pub unsafe fn call_on_stack(arg: *mut u8, f: extern "C" fn(*mut u8) -> !, stack_top: u64) -> ! {
    // SAFETY: the caller guarantees the stack is exclusive, mapped and
    // aligned; `f` never returns, so the abandoned old stack is never
    // popped. RBP is cleared so back-traces end here.
    unsafe {
        asm!(
            "mov rsp, {top}",
            "xor ebp, ebp",
            "call {f}",
            "ud2",
            top = in(reg) stack_top,
            f = in(reg) f,
            in("rdi") arg,
            options(noreturn),
        );
    }
}
