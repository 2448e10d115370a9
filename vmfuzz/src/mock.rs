//! A fake [`FuzzSession`] with a planted defect, for the driver's own
//! tests and for `--backend mock` (a self-test of the LibAFL loop that
//! needs no emulator).
//!
//! The defect hides behind the 4-byte magic [`MAGIC`] anywhere in a case.
//! The mock reports one coverage index per correct magic prefix it saw
//! (the longest prefix at any offset), so a coverage-guided fuzzer climbs
//! to it one byte at a time, in a few thousand cases, while blind
//! guessing needs about 2^32 tries per offset. Three more patterns stand
//! for the other ways a case can end: [`TIMEOUT_PATTERN`],
//! [`CRASH_PATTERN`] and [`PROTOCOL_PATTERN`]; [`MockSession::fail_with`]
//! makes the next case end with a fatal error.

use okernel_abi::fuzz::{CaseVerdict, GUEST_MAP_BASE, MAX_CASE};
use qemu_harness::fuzz::{CaseOutcome, FuzzSession, SessionError};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// The planted defect's trigger: a case that contains these bytes
/// "violates an invariant".
pub const MAGIC: [u8; 4] = *b"OKRN";
/// A case that contains these bytes "hangs" ([`SessionError::Timeout`]).
pub const TIMEOUT_PATTERN: [u8; 4] = [0xde, 0xad, 0x71, 0x3e];
/// A case that contains these bytes "kills the machine"
/// ([`SessionError::Crashed`]).
pub const CRASH_PATTERN: [u8; 4] = [0xde, 0xad, 0xc0, 0xde];
/// A case that contains these bytes makes the "executor" answer garbage
/// ([`SessionError::Protocol`]).
pub const PROTOCOL_PATTERN: [u8; 4] = [0xde, 0xad, 0xba, 0xd0];

/// The fatal errors [`MockSession::fail_with`] can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fatal {
    /// [`SessionError::VmxUnavailable`].
    VmxUnavailable,
    /// [`SessionError::Boot`].
    Boot,
}

/// What the mock saw (shared with tests through [`MockSession::probe`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MockCounters {
    /// Cases run since the last restart.
    pub cases: u64,
    /// Restarts so far.
    pub restarts: u64,
    /// A case ran after a violation without a restart in between (the
    /// driver broke the protocol).
    pub dirty_case: bool,
    dirty: bool,
}

/// The fake session.
#[derive(Debug, Default)]
pub struct MockSession {
    counters: Rc<Cell<MockCounters>>,
    fail: Option<Fatal>,
}

impl MockSession {
    /// A fresh session.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle on the counters that outlives handing the session over.
    pub fn probe(&self) -> Rc<Cell<MockCounters>> {
        Rc::clone(&self.counters)
    }

    /// Makes the next case end with `fatal`.
    pub fn fail_with(&mut self, fatal: Fatal) {
        self.fail = Some(fatal);
    }
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The longest prefix of [`MAGIC`] that occurs in `case`.
pub fn magic_prefix(case: &[u8]) -> usize {
    (1..=MAGIC.len())
        .rev()
        .find(|&n| contains(case, &MAGIC[..n]))
        .unwrap_or(0)
}

impl FuzzSession for MockSession {
    fn backend(&self) -> &str {
        "mock"
    }

    fn run_case(&mut self, case: &[u8]) -> Result<CaseOutcome, SessionError> {
        let case = &case[..case.len().min(MAX_CASE)];
        let mut c = self.counters.get();
        if c.dirty {
            c.dirty_case = true;
        }
        c.cases += 1;
        let violation = contains(case, &TIMEOUT_PATTERN)
            || contains(case, &CRASH_PATTERN)
            || contains(case, &PROTOCOL_PATTERN)
            || magic_prefix(case) == MAGIC.len();
        c.dirty |= violation;
        self.counters.set(c);
        match self.fail.take() {
            Some(Fatal::VmxUnavailable) => {
                return Err(SessionError::VmxUnavailable {
                    backend: "mock".into(),
                    reason: "no VMX in the mock".into(),
                });
            }
            Some(Fatal::Boot) => {
                return Err(SessionError::Boot {
                    backend: "mock".into(),
                    reason: "the mock refused to boot".into(),
                    console: "mock console".into(),
                });
            }
            None => {}
        }
        if contains(case, &TIMEOUT_PATTERN) {
            return Err(SessionError::Timeout {
                backend: "mock".into(),
                timeout: Duration::from_secs(1),
                console: "mock: spinning".into(),
            });
        }
        if contains(case, &CRASH_PATTERN) {
            return Err(SessionError::Crashed {
                backend: "mock".into(),
                reason: "triple fault".into(),
                console: "mock: triple fault".into(),
            });
        }
        if contains(case, &PROTOCOL_PATTERN) {
            return Err(SessionError::Protocol {
                backend: "mock".into(),
                detail: "bad result magic".into(),
            });
        }
        let ops = u16::try_from(case.len().div_ceil(8)).unwrap_or(u16::MAX);
        // One index per op kind seen (the first byte of each 8-byte op,
        // modulo 16), one per magic prefix length.
        let mut hits: Vec<u16> = Vec::new();
        for op in case.chunks(8) {
            let h = (GUEST_MAP_BASE + usize::from(op[0] % 16)) as u16;
            if !hits.contains(&h) {
                hits.push(h);
            }
        }
        let prefix = magic_prefix(case);
        for n in 1..=prefix {
            hits.push(100 + n as u16);
        }
        let violated = prefix == MAGIC.len();
        Ok(CaseOutcome {
            verdict: if violated {
                CaseVerdict::GuestOracle
            } else {
                CaseVerdict::Pass
            },
            ops_total: ops,
            ops_run: ops,
            exits: u32::from(ops) * 2,
            hits,
            message: if violated {
                "mock: planted defect reached (magic OKRN)".into()
            } else {
                String::new()
            },
        })
    }

    fn restart(&mut self) -> Result<(), SessionError> {
        let mut c = self.counters.get();
        c.restarts += 1;
        c.cases = 0;
        c.dirty = false;
        self.counters.set(c);
        Ok(())
    }

    fn console_tail(&self) -> String {
        let c = self.counters.get();
        format!(
            "mock console: {} cases since restart {}",
            c.cases, c.restarts
        )
    }
}
