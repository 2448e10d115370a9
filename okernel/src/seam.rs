//! The seam's lower half: what a fuzz build or a planted-defect proof build
//! chooses, by cargo feature, for the layers that read it (the policy,
//! `hypercall`, `exit`). It names no other module of the monitor, so it
//! sits in the lowest layer: the build's choice is a marker type here, and
//! the layer that owns the trait gives it its behaviour — the policy's
//! [`AsWritten`] in `crate::policy::hooks`, the planted defects' `Planted`
//! in the fuzz-only `crate::fuzz::planted_policy`. The upper half, the
//! run's guest memory, is `crate::launch::seam`. Besides the `mod` lines
//! that bring `crate::fuzz` in, these two are the only production files
//! that name the fuzz and planted-defect features.

// Safe code only above the hardware layers (`hw`, `arch`, `launch`):
// issue 14, DESIGN.md §6.
#![forbid(unsafe_code)]

/// The port the KVM harness's fuzz doorbell uses
/// (`okernel_abi::fuzz::DOORBELL_PORT`), passed in a fuzz build only.
pub const FUZZ_DOORBELL: Option<u16> = if cfg!(feature = "fuzz") {
    Some(okernel_abi::fuzz::DOORBELL_PORT)
} else {
    None
};

/// Whether a hypercall that changed the policy waits until every other
/// processor has left the guest (`crate::launch::presence`, issue 17):
/// always, but in the planted-defect build that proves the SMP race row
/// catches its absence (`planted-no-shootdown`, `cargo xtask platform
/// smp-race`).
pub const SHOOTDOWN: bool = !cfg!(feature = "planted-no-shootdown");

/// Whether an exit moves the exiting processor's own context into the
/// shared virtual CPU (`crate::launch::run`, issue 17): always, but in
/// the planted-defect build that proves the SMP view-switch row catches
/// its absence (`planted-shared-context`, `cargo xtask platform
/// smp-shared-context`): there every exit runs in the context the last
/// exit of any processor left, so one processor's switch out of a context
/// takes the others with it.
pub const PER_CPU_CONTEXT: bool = !cfg!(feature = "planted-shared-context");

/// Every policy rule as written: the production build's policy hooks
/// (`crate::policy::hooks::PolicyHooks`, whose defaults it keeps).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AsWritten;

/// The policy rules with a planted-defect proof build's deliberate defect
/// (its `PolicyHooks` are in `crate::fuzz::planted_policy`).
#[cfg(any(
    feature = "planted-text-writable",
    feature = "planted-pin-ignored",
    feature = "planted-unlock",
    feature = "planted-gate-bypass"
))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Planted;

/// The policy rules of this build: as written ([`AsWritten`]).
#[cfg(not(any(
    feature = "planted-text-writable",
    feature = "planted-pin-ignored",
    feature = "planted-unlock",
    feature = "planted-gate-bypass"
)))]
pub type PolicyDefects = AsWritten;

/// The policy rules of a planted-defect proof build: with its deliberate
/// defect (`Planted`).
#[cfg(any(
    feature = "planted-text-writable",
    feature = "planted-pin-ignored",
    feature = "planted-unlock",
    feature = "planted-gate-bypass"
))]
pub type PolicyDefects = Planted;
