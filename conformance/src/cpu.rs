//! The few register accesses the checks make outside probes (inside a
//! probe, the instruction under test is in `probes.rs`).

/// Reads DR6.
pub fn dr6() -> u64 {
    let v: u64;
    // SAFETY: reading DR6 at CPL0 has no side effect.
    unsafe { core::arch::asm!("mov {}, dr6", out(reg) v, options(nomem, nostack)) };
    v
}

/// Clears DR6 and DR7 (no breakpoint stays armed after a check).
pub fn clear_debug() {
    // SAFETY: at CPL0; zero in DR7 disables every breakpoint and DR6's
    // status bits are the handler's to clear (SDM Vol. 3A §19.2.3); the
    // reserved-1 bits of DR6 read back as 1 whatever is written.
    unsafe {
        core::arch::asm!(
            "mov dr7, {z}",
            "mov dr6, {z}",
            z = in(reg) 0u64,
            options(nomem, nostack)
        )
    };
}

/// Arms DR0 as an instruction breakpoint at `addr` (DR7.L0, R/W0 = LEN0
/// = 00: SDM Vol. 3A §19.2.4).
pub fn exec_breakpoint(addr: u64) {
    // SAFETY: at CPL0; an execute breakpoint only raises #DB at `addr`,
    // which the caller runs under a probe.
    unsafe {
        core::arch::asm!(
            "mov dr0, {a}",
            "mov dr7, {e}",
            a = in(reg) addr,
            e = in(reg) 1u64,
            options(nomem, nostack)
        )
    };
}

/// CPUID.(EAX=leaf, ECX=sub).
pub fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// RDTSC.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads the time-stamp counter; CR4.TSD is never set here.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Reads CR4.
pub fn cr4() -> u64 {
    x86_64::registers::control::Cr4::read_raw()
}

/// Writes CR4.
///
/// # Safety
///
/// `v` must keep paging as it is (PAE, LA57) and enable only features the
/// kernel's code is ready for.
pub unsafe fn set_cr4(v: u64) {
    // SAFETY: forwarded from the caller.
    unsafe { core::arch::asm!("mov cr4, {}", in(reg) v, options(nostack)) };
}

/// RDMSR of an MSR the caller knows exists.
///
/// # Safety
///
/// `msr` must exist on this CPU (else #GP outside a probe ends the run).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: forwarded from the caller.
    unsafe { x86_64::registers::model_specific::Msr::new(msr).read() }
}

/// WRMSR.
///
/// # Safety
///
/// `msr` must exist and `v` must be a value that leaves the kernel
/// running (EFER keeps LME/LMA).
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: forwarded from the caller.
    unsafe { x86_64::registers::model_specific::Msr::new(msr).write(v) }
}

/// XGETBV(0): XCR0.
pub fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: called only with CR4.OSXSAVE set (else #UD).
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi,
            options(nomem, nostack))
    };
    u64::from(hi) << 32 | u64::from(lo)
}
