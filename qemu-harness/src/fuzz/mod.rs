//! VM fuzzing sessions: a booted okernel image whose guest runs the
//! in-guest persistent executor (`scenario=fuzz`), fed one test case at a
//! time through the protocol of [`okernel_abi::fuzz`].
//!
//! A session boots once and runs many cases: on Bochs the executor
//! resets its own state between cases and the monitor verifies it (COM2
//! carries the frames); on KVM every case starts from a snapshot taken
//! when the executor first asked for a case (the mailbox and the doorbell
//! port carry them). After a case that broke an invariant, or one that
//! hung or killed the machine, the driver calls [`FuzzSession::restart`]
//! before the next case.

pub mod bochs;
pub mod frame;
pub mod kvm;
pub mod summary;

pub use bochs::{BochsOptions, BochsSession};
pub use kvm::{KvmOptions, KvmSession};

use okernel_abi::fuzz::CaseVerdict;
use std::time::Duration;

/// What one test case did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseOutcome {
    /// The executor's verdict.
    pub verdict: CaseVerdict,
    /// Operations the case decoded to.
    pub ops_total: u16,
    /// Operations that ran before the case ended.
    pub ops_run: u16,
    /// VM exits the monitor counted during the case.
    pub exits: u32,
    /// Coverage indices hit, each below [`okernel_abi::fuzz::MAP_SIZE`].
    pub hits: Vec<u16>,
    /// The executor's message (why a case failed; empty on a pass).
    pub message: String,
}

/// Why a case produced no [`CaseOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The image reported that VMX is unavailable before the executor
    /// was ready: this backend cannot run the monitor here.
    #[error("VMX unavailable on {backend}: okernel reported `{reason}`")]
    VmxUnavailable {
        /// The backend.
        backend: String,
        /// The image's reason.
        reason: String,
    },
    /// The image never became ready for cases (it failed, panicked or
    /// stopped during boot).
    #[error(
        "{backend}: the image did not become ready for cases: {reason}\n--- console (last lines) ---\n{console}"
    )]
    Boot {
        /// The backend.
        backend: String,
        /// What ended the boot.
        reason: String,
        /// The console's last lines.
        console: String,
    },
    /// The case did not finish in time.
    #[error(
        "{backend}: the case did not finish within {timeout:?}\n--- console (last lines) ---\n{console}"
    )]
    Timeout {
        /// The backend.
        backend: String,
        /// The limit.
        timeout: Duration,
        /// The console's last lines.
        console: String,
    },
    /// The machine stopped during the case: a triple fault, a monitor
    /// panic or a fatal exit, the run-result marker, the emulator dying.
    #[error(
        "{backend}: the machine stopped during the case: {reason}\n--- console (last lines) ---\n{console}"
    )]
    Crashed {
        /// The backend.
        backend: String,
        /// What stopped it.
        reason: String,
        /// The console's last lines.
        console: String,
    },
    /// The executor sent bytes that are not a result frame.
    #[error("{backend}: protocol error: {detail}")]
    Protocol {
        /// The backend.
        backend: String,
        /// What was wrong.
        detail: String,
    },
    /// Setting up or talking to the backend failed.
    #[error(transparent)]
    Harness(#[from] crate::HarnessError),
}

/// A booted image running the in-guest executor.
pub trait FuzzSession {
    /// The backend's name (`bochs`, `kvm`).
    fn backend(&self) -> &str;
    /// Runs one case (at most [`okernel_abi::fuzz::MAX_CASE`] bytes; a
    /// longer one is cut) and returns what the executor reported.
    fn run_case(&mut self, case: &[u8]) -> Result<CaseOutcome, SessionError>;
    /// Boots a fresh machine (after a violation, a timeout or a crash).
    fn restart(&mut self) -> Result<(), SessionError>;
    /// The console's last lines, for crash reports.
    fn console_tail(&self) -> String;
}

/// The last `n` lines of `text`.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The first run-result marker on `console` ([`okernel_abi::result`]):
/// the outcome and its detail.
pub(crate) fn find_marker(console: &str) -> Option<(okernel_abi::result::Outcome, String)> {
    console.lines().find_map(|l| {
        okernel_abi::result::Outcome::parse_marker(l).map(|(o, d)| (o, d.to_string()))
    })
}
