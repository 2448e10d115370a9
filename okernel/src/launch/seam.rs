//! The seam's upper half: the guest memory a run's virtual CPU uses, as
//! this build chooses it by cargo feature — the views themselves in
//! production, the fuzz build's tracking decorator of them
//! (`crate::fuzz::tracked::Tracked`, whose exit hooks are the fuzzer's)
//! with `fuzz`. Named here, where the run's types are, because the
//! decorator is above every layer but this one; the lower half is
//! `crate::seam`.

#![forbid(unsafe_code)]

/// The memory a run's [`crate::vcpu::Vcpu`] uses over the views `M`: `M`
/// itself in production.
#[cfg(not(feature = "fuzz"))]
pub type RunMemory<M> = M;

/// The memory a run's [`crate::vcpu::Vcpu`] uses over the views `M`: in a
/// fuzz build `M` tracked, with the fuzzer's exit hooks.
#[cfg(feature = "fuzz")]
pub type RunMemory<M> = crate::fuzz::tracked::Tracked<M>;
