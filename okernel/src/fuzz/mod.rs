//! VM fuzzing, the monitor's side (`okernel/fuzz` feature; never in a
//! production image): the protocol is `okernel_abi::fuzz`.
//!
//! # The seam
//!
//! The production files carry no `cfg` for fuzzing. A fuzz build drives
//! exactly the production [`crate::vcpu::Vcpu`], exit handlers and policy
//! types; what it adds comes in through three doors, all here:
//!
//! - **The memory decorator** [`tracked::Tracked`]: the run's guest
//!   memory (a `ViewMemory`) wrapped, chosen once where the run names its
//!   types (`launch::run::MonitorMemory`). It keeps the views generation
//!   and the monitor write log ([`dirty`]) by watching the `Views` and
//!   `GuestMemory` calls that change a view or write guest RAM.
//! - **The exit hooks** (`crate::vcpu::hooks::ExitHooks`): every guest
//!   memory has them, the production ones doing nothing and keeping `()`
//!   in `Vcpu::hooks`; [`tracked::Tracked`]'s record coverage, answer the
//!   two fuzz calls and keep a [`FuzzState`] there.
//! - **The inspection trait** [`inspect::Inspect`]: what the oracles read
//!   of the views beyond the policy's `Views` (runs of equal rights, the
//!   monitor's ranges, guest RAM in place), implemented for `ViewMemory`
//!   here (built with `fake` too, for the host `policy` fuzz target).
//!
//! The planted defects are fuzz-only files too: [`planted`] (the VM
//! fuzzer's, around every slow exit) and `planted_policy` (the policy
//! defects both fuzzers must find, through the few
//! `crate::policy::hooks::PolicyHooks` points whose production defaults
//! are the rules as written). The only production files that name these
//! features are `crate::seam` (the run's memory type, the policy rules
//! and the fuzz doorbell port of the build) and the `mod` line in
//! `lib.rs` that brings this module in.
//!
//! # Modules
//!
//! - [`coverage`]: the edge map the monitor fills, one edge per pair of
//!   consecutive VM exits.
//! - [`observe`]: the key of each exit (reason × handler outcome × policy
//!   decision), computed once the handler has decided.
//! - [`hash`]: the word hash of locked regions and the policy fingerprints.
//! - [`baseline`]: what `CALL_BASELINE` records.
//! - [`check`]: what `CALL_CHECK` compares, in the documented order.
//! - [`dirty`]: the views generation and the monitor write log that let
//!   most checks be incremental.
//! - [`tracked`]: the memory decorator that keeps them, and whose exit
//!   hooks are the fuzzer's.
//! - [`inspect`]: what the oracles read of the views.
//! - [`watch`]: the views scanned at the end of every exit that changed
//!   them, which keeps checks after a view change incremental.
//! - [`calls`]: the two calls themselves.
//! - [`mirror`]: the audit mirror page the executor registers with the
//!   baseline.
//! - [`planted`]: the planted defects of the VM fuzzer's proof for port
//!   I/O, debug state and self-IPIs (off but in that proof), around every
//!   slow exit.
//! - [`oracle`]: the EPT-view invariants (1, 2, 3, 6, 7) as one function,
//!   shared with the host `policy` fuzz target (also built with `fake`).
//!
//! A monitor without the feature has none of this: the two call numbers
//! are unknown to it (`Status::UnknownCall`), and its memory's hooks are
//! the no-op defaults.

#[cfg(feature = "fuzz")]
pub mod baseline;
#[cfg(feature = "fuzz")]
pub mod calls;
#[cfg(feature = "fuzz")]
pub mod check;
#[cfg(feature = "fuzz")]
pub mod coverage;
#[cfg(feature = "fuzz")]
pub mod dirty;
#[cfg(feature = "fuzz")]
pub mod hash;
pub mod inspect;
#[cfg(feature = "fuzz")]
pub mod mirror;
#[cfg(feature = "fuzz")]
pub mod observe;
pub mod oracle;
#[cfg(feature = "fuzz")]
pub mod planted;
#[cfg(any(
    feature = "planted-text-writable",
    feature = "planted-pin-ignored",
    feature = "planted-unlock",
    feature = "planted-gate-bypass"
))]
pub mod planted_policy;
#[cfg(feature = "fuzz")]
pub mod tracked;
#[cfg(feature = "fuzz")]
pub mod watch;

/// The fuzzing state a [`crate::vcpu::Vcpu`] carries in a fuzz build.
#[cfg(feature = "fuzz")]
#[derive(Debug, Clone)]
pub struct FuzzState {
    /// Edges hit since the last check.
    pub coverage: coverage::Coverage,
    /// What the last `CALL_BASELINE` recorded.
    pub baseline: Option<baseline::Baseline>,
    /// Successful checks so far (the observer skips the exit of a check,
    /// which starts the next map).
    pub checks: u64,
    /// Unexpected but survived exits since the last check
    /// ([`observe::unexpected`]), and the first one's basic reason.
    pub unexpected: (u32, u16),
    /// The last full check that found everything intact since the
    /// baseline, if the checks since were intact too (`None`: the next
    /// check is full).
    pub last_full: Option<LastFull>,
    /// The executor's audit mirror page ([`mirror`]), once registered.
    pub mirror: Option<u64>,
    /// The views watch ([`watch`]).
    pub watch: watch::Watch,
}

/// What `CALL_CHECK` remembers of its last intact full check.
#[cfg(feature = "fuzz")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastFull {
    /// Incremental checks since.
    pub incremental: u32,
}

#[cfg(feature = "fuzz")]
impl FuzzState {
    /// Nothing recorded.
    pub const fn new() -> Self {
        Self {
            coverage: coverage::Coverage::new(),
            baseline: None,
            checks: 0,
            unexpected: (0, 0),
            last_full: None,
            mirror: None,
            watch: watch::Watch {
                scanned: 0,
                finding: None,
            },
        }
    }
}

#[cfg(feature = "fuzz")]
impl Default for FuzzState {
    fn default() -> Self {
        Self::new()
    }
}
