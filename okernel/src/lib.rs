//! The okernel monitor: the inner kernel that runs in VMX root mode.
//!
//! Its modules, in layers from the bottom; a module imports only modules
//! of lower layers (`docs/developer-guide.md`, "Layers"; checked by the
//! host test `tests::layers`):
//!
//! 0. [`bits`], [`msrs`], [`memmap`], [`fmt`]: data that names no other
//!    module; [`seam`]: the build's choice of policy rules and fuzz port
//!    (what a planted-defect or fuzz build puts in place of the
//!    production rules; with [`launch::seam`] the only production files
//!    that name those features, besides the `fuzz` module's gate below).
//! 1. [`vmx`]: the VMX architecture as typed data (SDM Vol. 3C/3D).
//! 2. [`arch`]: the only inline assembly (VMX instructions, MSRs, CRs, the
//!    VM-entry/exit stub).
//! 3. [`hw`]: the hardware-access traits ([`hw::Vmcs`], [`hw::Cpu`]), their
//!    real implementations and host fakes, host-physical memory.
//! 4. [`check`]: capability checks with named refusal reasons; [`mem`]:
//!    guest-physical memory through the EPT views.
//! 5. [`policy`]: the protection state, the audit log, the EPT rights per
//!    view and the policy hooks.
//! 6. [`vcpu`]: the virtual CPU, its guest memory and exit hooks, and what
//!    a handler returns.
//! 7. [`hypercall`]: VMCALL dispatch over [`okernel_abi::hypercall`].
//! 8. [`exit`]: one handler per exit reason, as free functions.
//! 9. `fuzz` (fuzz builds; its view oracle also with `fake`): coverage
//!    and the invariant checks of VM fuzzing (`okernel_abi::fuzz`).
//! 10. [`mod@launch`]: bring-up and the run loop; [`launch()`] is what the
//!     loader calls.
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
pub mod mem;
pub mod memmap;
pub mod msrs;
pub mod policy;
pub mod seam;
pub mod vcpu;
pub mod vmx;

#[cfg(test)]
mod tests;

pub use launch::{LaunchConfig, LaunchError, launch};
