//! The okernel monitor: the inner kernel that runs in VMX root mode.
//!
//! - [`arch`]: the only inline assembly (VMX instructions, MSRs, CRs, the
//!   VM-entry/exit stub).
//! - [`vmx`]: the VMX architecture as typed data (SDM Vol. 3C/3D).
//! - [`hw`]: the hardware-access traits ([`hw::Vmcs`], [`hw::Cpu`]), their
//!   real implementations and host fakes.
//! - [`check`]: capability checks with named refusal reasons.
//! - [`exit`]: one handler per exit reason, as free functions.
//! - [`hypercall`]: VMCALL dispatch over [`okernel_abi::hypercall`].
//! - [`policy`]: the audit log and the hooks the policy layer fills in.
//! - `fuzz` (fuzz builds; its view oracle also with `fake`): coverage
//!   and the invariant checks of VM fuzzing (`okernel_abi::fuzz`).
//! - [`mod@launch`]: bring-up and the run loop; [`launch()`] is what the loader
//!   calls.
//! - [`seam`]: what a fuzz or planted-defect build puts in place of the
//!   production memory and policy rules (the only production file that
//!   names those features, besides the `fuzz` module's gate below).
#![cfg_attr(not(test), no_std)]

pub mod arch;
pub mod bits;
pub mod check;
pub mod exit;
pub mod fmt;
#[cfg(any(
    test,
    feature = "fake",
    feature = "fuzz",
    feature = "planted-text-writable",
    feature = "planted-pin-ignored",
    feature = "planted-unlock",
    feature = "planted-gate-bypass"
))]
pub mod fuzz;
pub mod hw;
pub mod hypercall;
pub mod launch;
pub mod memmap;
pub mod msrs;
pub mod policy;
pub mod seam;
pub mod vmx;

#[cfg(test)]
mod tests;

pub use launch::{LaunchConfig, LaunchError, launch};
