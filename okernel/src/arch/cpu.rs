//! CPUID, MSRs, control registers, XCRs and cache control.

use core::arch::asm;

/// The four registers CPUID returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Executes CPUID with EAX = `leaf`, ECX = `subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let (eax, ebx, ecx, edx): (u32, u32, u32, u32);
    // SAFETY: CPUID is unprivileged, touches no memory and only writes
    // EAX..EDX. RBX is reserved by LLVM, so it is saved in a scratch register
    // and swapped back; the stack is not used.
    unsafe {
        asm!(
            "mov {tmp:r}, rbx",
            "cpuid",
            "xchg {tmp:r}, rbx",
            tmp = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags),
        );
    }
    CpuidResult { eax, ebx, ecx, edx }
}

/// Reads a model-specific register.
///
/// # Safety
/// The caller must run at CPL0 and `msr` must exist on this CPU (RDMSR of
/// an unimplemented MSR raises #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees CPL0 and that `msr` exists, so RDMSR
    // cannot fault; it reads no memory and leaves the flags alone.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
             options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// The caller must run at CPL0, `msr` must exist and be writable with
/// `value`, and the change must not break the assumptions of running code
/// (for example EFER.LME or the FS/GS base of the current thread).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the write is valid and harmless to
    // running code. WRMSR may change how memory is accessed (PAT, MTRRs),
    // so `nomem` is not claimed.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags));
    }
}

macro_rules! read_cr {
    ($(#[$m:meta])* $name:ident, $reg:literal) => {
        $(#[$m])*
        pub fn $name() -> u64 {
            let v: u64;
            // SAFETY: reading a control register has no side effect; okernel
            // runs at CPL0 (root mode), where MOV from CR cannot fault.
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }
    };
}

read_cr!(
    /// Reads CR0.
    read_cr0, "cr0"
);
read_cr!(
    /// Reads CR2.
    read_cr2, "cr2"
);
read_cr!(
    /// Reads CR3.
    read_cr3, "cr3"
);
read_cr!(
    /// Reads CR4.
    read_cr4, "cr4"
);

/// Writes CR0.
///
/// # Safety
/// `value` must be a valid CR0 for the current mode (PE, PG stay set in
/// long mode; reserved bits clear) and must keep paging and caching as the
/// running code expects.
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: the caller guarantees the new CR0 is valid and keeps the
    // current address space; CR0 changes memory semantics, so no `nomem`.
    unsafe { asm!("mov cr0, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Writes CR4.
///
/// # Safety
/// `value` must be valid for this CPU (no unsupported bits, PAE kept in
/// long mode) and keep the running code's assumptions.
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: the caller guarantees the new CR4 is valid for this CPU and
    // mode; CR4 changes paging semantics, so no `nomem`.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Writes CR2.
///
/// # Safety
/// The caller must be at CPL0; CR2 then only changes what the next page
/// fault handler (the guest's, after VM entry) reads as the faulting
/// address.
pub unsafe fn write_cr2(value: u64) {
    // SAFETY: the caller is at CPL0; writing CR2 changes no translation
    // or memory semantics.
    unsafe { asm!("mov cr2, {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
}

/// Writes an extended control register (XSETBV).
///
/// # Safety
/// CR4.OSXSAVE must be set, the caller must run at CPL0, and `value` must be
/// a valid setting of XCR `xcr` for this CPU (SDM Vol. 2D, XSETBV: otherwise
/// #GP).
pub unsafe fn xsetbv(xcr: u32, value: u64) {
    // SAFETY: the caller validated `value` against CPUID leaf 0xD and the
    // XSETBV rules, so the instruction cannot fault. The monitor itself is
    // built without SSE/AVX, so changing XCR0 does not affect its own state.
    unsafe {
        asm!("xsetbv", in("ecx") xcr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nomem, nostack, preserves_flags));
    }
}

/// Reads an extended control register (XGETBV).
///
/// # Safety
/// CR4.OSXSAVE must be set and `xcr` must be readable (0, or 1 when
/// CPUID.(EAX=0DH,ECX=1):EAX\[2\] = 1).
pub unsafe fn xgetbv(xcr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees OSXSAVE is set and `xcr` exists.
    unsafe {
        asm!("xgetbv", in("ecx") xcr, out("eax") lo, out("edx") hi,
             options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes back and invalidates all caches (WBINVD).
///
/// # Safety
/// The caller must run at CPL0.
pub unsafe fn wbinvd() {
    // SAFETY: WBINVD writes dirty lines back before invalidating, so no data
    // is lost; it is privileged, which the caller guarantees.
    unsafe { asm!("wbinvd", options(nostack, preserves_flags)) };
}

/// The time-stamp counter (RDTSC, SDM Vol. 2B).
pub fn tsc() -> u64 {
    // SAFETY: RDTSC reads a counter; it touches no memory (CR4.TSD does not
    // apply at CPL0, where the monitor runs).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Halts this processor for good: interrupts disabled, HLT in a loop (an
/// NMI or SMI wakes HLT, and the loop halts again).
pub fn halt_in_root() -> ! {
    loop {
        // SAFETY: CLI and HLT touch no memory; the caller runs at CPL0
        // (HLT raises #GP elsewhere) and wants this processor stopped.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Invalidates the TLB entries and paging-structure caches for the page
/// that holds `address` (INVLPG, SDM Vol. 2A; §4.10.4.1).
///
/// # Safety
/// The caller must run at CPL0.
pub unsafe fn invlpg(address: u64) {
    // SAFETY: INVLPG is privileged (the caller's contract) and changes no
    // memory, only cached translations, which the next access rebuilds
    // from the page tables.
    unsafe { asm!("invlpg [{}]", in(reg) address, options(nostack, preserves_flags)) };
}
