//! VM fuzzing, the monitor's side (`okernel/fuzz` feature; never in a
//! production image): the protocol is `okernel_abi::fuzz`.
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
//! are unknown to it (`Status::UnknownCall`), and the exit path, the
//! [`crate::exit::Vcpu`] and the run state are the same as before.

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
#[cfg(feature = "fuzz")]
pub mod mirror;
#[cfg(feature = "fuzz")]
pub mod observe;
pub mod oracle;
#[cfg(feature = "fuzz")]
pub mod planted;
#[cfg(feature = "fuzz")]
pub mod watch;

/// The fuzzing state a [`crate::exit::Vcpu`] carries in a fuzz build.
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
