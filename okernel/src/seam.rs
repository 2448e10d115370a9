//! The seam: the one production file that chooses, by cargo feature, what
//! a fuzz build or a planted-defect proof build puts in place of the
//! production types (besides the `mod` lines that bring `crate::fuzz` in).
//! Everything chosen here is implemented in `crate::fuzz`; every other
//! production file names only the aliases.

// Safe code only above the hardware layers (`hw`, `arch`, `launch`):
// issue 14, DESIGN.md §6.
#![forbid(unsafe_code)]

/// The memory a run's [`crate::exit::Vcpu`] uses over the views `M`: `M`
/// itself in production; in a fuzz build `M` tracked, with the fuzzer's
/// exit hooks (`crate::fuzz::tracked::Tracked`).
#[cfg(not(feature = "fuzz"))]
pub type RunMemory<M> = M;

/// The memory a run's [`crate::exit::Vcpu`] uses over the views `M`: in a
/// fuzz build `M` tracked, with the fuzzer's exit hooks.
#[cfg(feature = "fuzz")]
pub type RunMemory<M> = crate::fuzz::tracked::Tracked<M>;

/// The port the KVM harness's fuzz doorbell uses
/// (`okernel_abi::fuzz::DOORBELL_PORT`), passed in a fuzz build only.
pub const FUZZ_DOORBELL: Option<u16> = if cfg!(feature = "fuzz") {
    Some(okernel_abi::fuzz::DOORBELL_PORT)
} else {
    None
};

/// The policy rules of this build: as written
/// ([`crate::policy::hooks::AsWritten`]).
#[cfg(not(any(
    feature = "planted-text-writable",
    feature = "planted-pin-ignored",
    feature = "planted-unlock",
    feature = "planted-gate-bypass"
)))]
pub type PolicyDefects = crate::policy::hooks::AsWritten;

/// The policy rules of a planted-defect proof build: with its deliberate
/// defect (`crate::fuzz::planted_policy`).
#[cfg(any(
    feature = "planted-text-writable",
    feature = "planted-pin-ignored",
    feature = "planted-unlock",
    feature = "planted-gate-bypass"
))]
pub type PolicyDefects = crate::fuzz::planted_policy::Planted;
