//! The only place in okernel with inline assembly.
//!
//! Every function here is a thin, `unsafe` wrapper around one instruction
//! (or the VM-entry/VM-exit stub in [`run`]). Everything above this module
//! reaches the hardware through the [`crate::hw`] traits, whose real
//! implementations ([`crate::hw::real`], and [`crate::hw::phys`] for the
//! identity map's copies) are the only callers.
//!
//! Each `asm!` block carries the narrowest `options` that are true of the
//! instruction, and a `// SAFETY:` comment naming the invariant that makes it
//! sound.

pub mod cpu;
pub mod descriptors;
pub mod phys;
pub mod port;
pub mod run;
pub mod vmx;
