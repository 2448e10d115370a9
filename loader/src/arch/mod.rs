//! The loader's machine-dependent code: the entry stubs (the bootstrap
//! processor's and the application processors') and exception stubs
//! (the only assembly outside `okernel/src/arch`) and descriptor tables.

mod ap_entry;
mod entry;
pub mod exceptions;
pub mod protected32;
pub mod tables;

pub use entry::{arm_stack_guard, stack_guard_intact};

/// The time-stamp counter (in Bochs with `clock: sync=none`: emulated
/// instructions), for the boot-cost lines on the console.
pub fn tsc() -> u64 {
    // SAFETY: RDTSC exists on every x86-64 processor (CPUID.1:EDX.TSC;
    // long mode requires it) and CR4.TSD restricts it only at CPL > 0;
    // the loader runs at CPL 0 and reads nothing but the counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}
