//! The LibAFL [`Executor`] over a [`FuzzSession`]: one test case per run,
//! the session's coverage indices into the observer map, the session's
//! outcome into an [`ExitKind`], and a report beside every objective.

use libafl::events::ProgressReporter;
use libafl::executors::{Executor, ExitKind, HasObservers};
use libafl::inputs::{BytesInput, HasTargetBytes};
use libafl::observers::StdMapObserver;
use libafl::state::{HasExecutions, Stoppable};
use libafl_bolts::Error;
use libafl_bolts::tuples::RefIndexable;
use okernel_abi::fuzz::{CaseVerdict, MAP_SIZE, MAX_CASE};
use qemu_harness::fuzz::{CaseOutcome, FuzzSession, SessionError};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The coverage map: [`MAP_SIZE`] `u8` entries, 1 where the case hit.
pub type CoverageObserver = StdMapObserver<'static, u8, false>;
/// The executor's observers.
pub type Observers = (CoverageObserver, ());

/// The observer map's name (also the name of LibAFL's coverage statistic).
pub const MAP_NAME: &str = "coverage";

/// How often the executor asks the event manager to report progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What one case did, as the executor judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// Every oracle held.
    Pass,
    /// An oracle was violated, the machine died or the executor sent
    /// garbage: an objective; the session needs a restart.
    Crash,
    /// The case did not finish in time: an objective; restart.
    Timeout,
    /// The session cannot go on (no VMX, no boot, a harness failure): the
    /// campaign ends with this message.
    Fatal(String),
}

/// Classifies a session's answer (the policy of docs/fuzzing.md).
pub fn judge(result: &Result<CaseOutcome, SessionError>) -> Judged {
    match result {
        Ok(o) if o.verdict == CaseVerdict::Pass => Judged::Pass,
        Ok(_) => Judged::Crash,
        Err(SessionError::Timeout { .. }) => Judged::Timeout,
        Err(SessionError::Crashed { .. } | SessionError::Protocol { .. }) => Judged::Crash,
        Err(
            e @ (SessionError::VmxUnavailable { .. }
            | SessionError::Boot { .. }
            | SessionError::Harness(_)),
        ) => Judged::Fatal(e.to_string()),
    }
}

/// A short name for a session answer, for reports.
pub fn verdict_name(result: &Result<CaseOutcome, SessionError>) -> &'static str {
    match result {
        Ok(o) => o.verdict.name(),
        Err(SessionError::Timeout { .. }) => "timeout",
        Err(SessionError::Crashed { .. }) => "machine crashed",
        Err(SessionError::Protocol { .. }) => "protocol error",
        Err(SessionError::VmxUnavailable { .. }) => "VMX unavailable",
        Err(SessionError::Boot { .. }) => "boot failed",
        Err(SessionError::Harness(_)) => "harness error",
    }
}

/// The first line of a session answer's message.
fn first_line(result: &Result<CaseOutcome, SessionError>) -> String {
    let text = match result {
        Ok(o) => o.message.clone(),
        Err(e) => e.to_string(),
    };
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(300).collect()
}

/// Which finding ends a campaign early.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StopOn {
    /// None: the campaign runs its time.
    #[default]
    Never,
    /// The first objective of any kind (`--stop-on-crash`).
    Objective,
    /// The first oracle violation, a [`CaseOutcome`] whose verdict is not
    /// `Pass` (`--stop-on-oracle`); machine crashes, protocol errors and
    /// timeouts are saved and the campaign goes on.
    Oracle,
}

/// When the campaign ends.
#[derive(Debug, Clone, Default)]
pub struct StopRule {
    /// No case starts after this instant.
    pub deadline: Option<Instant>,
    /// Which finding ends it early.
    pub on: StopOn,
    /// A file whose existence ends the campaign (shared by every client
    /// of a multi-core campaign: the first to meet `on` creates it).
    pub stop_file: Option<PathBuf>,
}

/// One finding, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Time from the campaign's start.
    pub after: Duration,
    /// The verdict ([`verdict_name`]).
    pub verdict: String,
    /// The first line of its message.
    pub message: String,
}

/// Counters of one executor.
#[derive(Debug, Clone)]
pub struct ExecStats {
    /// When the campaign (this client) started.
    pub started: Instant,
    /// Cases actually run on the session.
    pub execs: u64,
    /// Objectives (violations, crashes, protocol errors, timeouts).
    pub objectives: u64,
    /// Of those, timeouts.
    pub timeouts: u64,
    /// Session restarts.
    pub restarts: u64,
    /// Of those, oracle violations (the executor or the monitor said so).
    pub oracles: u64,
    /// The first objective.
    pub first_objective: Option<Finding>,
    /// The first objective's report.
    pub first_report: Option<String>,
    /// The first oracle violation.
    pub first_oracle: Option<Finding>,
    /// Map entries ever hit.
    pub covered: usize,
    /// The fatal error that ended the campaign.
    pub fatal: Option<String>,
}

impl ExecStats {
    fn new(started: Instant) -> Self {
        Self {
            started,
            execs: 0,
            objectives: 0,
            timeouts: 0,
            restarts: 0,
            oracles: 0,
            first_objective: None,
            first_report: None,
            first_oracle: None,
            covered: 0,
            fatal: None,
        }
    }
}

/// The executor.
pub struct VmExecutor {
    session: Box<dyn FuzzSession>,
    observers: Observers,
    crashes: Option<PathBuf>,
    stop: StopRule,
    ever: Vec<bool>,
    last_progress: Instant,
    /// Counters.
    pub stats: ExecStats,
}

impl std::fmt::Debug for VmExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmExecutor")
            .field("backend", &self.session.backend())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl VmExecutor {
    /// An executor over `session`; objectives (input and report) go to
    /// `crashes` when given.
    pub fn new(session: Box<dyn FuzzSession>, crashes: Option<PathBuf>, stop: StopRule) -> Self {
        Self::started_at(Instant::now(), session, crashes, stop)
    }

    /// [`Self::new`] for a campaign that started at `started` (times to
    /// objectives count from there, the sessions' boot included).
    pub fn started_at(
        started: Instant,
        session: Box<dyn FuzzSession>,
        crashes: Option<PathBuf>,
        stop: StopRule,
    ) -> Self {
        let observer = StdMapObserver::owned(MAP_NAME, vec![0u8; MAP_SIZE]);
        Self {
            session,
            observers: (observer, ()),
            crashes,
            stop,
            ever: vec![false; MAP_SIZE],
            last_progress: Instant::now(),
            stats: ExecStats::new(started),
        }
    }

    /// The coverage observer (for the feedback).
    pub fn observer(&self) -> &CoverageObserver {
        &self.observers.0
    }

    /// The session (tests look at the mock through it).
    pub fn session(&self) -> &dyn FuzzSession {
        self.session.as_ref()
    }

    /// Whether the stop rule says the campaign is over.
    pub fn should_stop(&self) -> bool {
        if self.stats.fatal.is_some() {
            return true;
        }
        if self.stop.deadline.is_some_and(|d| Instant::now() >= d) {
            return true;
        }
        let met = match self.stop.on {
            StopOn::Never => false,
            StopOn::Objective => self.stats.objectives > 0,
            StopOn::Oracle => self.stats.oracles > 0,
        };
        if met {
            return true;
        }
        self.stop.stop_file.as_deref().is_some_and(Path::exists)
    }

    /// Runs `case` on the session and judges it: fills the map, counts,
    /// saves an objective, restarts the session after one. The map is
    /// cleared first.
    pub fn run_case(&mut self, case: &[u8]) -> Judged {
        let case = &case[..case.len().min(MAX_CASE)];
        let map = &mut self.observers.0;
        map.fill(0);
        let result = self.session.run_case(case);
        let judged = judge(&result);
        if let Judged::Fatal(msg) = &judged {
            self.stats.fatal = Some(msg.clone());
            return judged;
        }
        self.stats.execs += 1;
        if let Ok(outcome) = &result {
            for &h in &outcome.hits {
                let i = usize::from(h);
                if i < MAP_SIZE {
                    map[i] = 1;
                    if !self.ever[i] {
                        self.ever[i] = true;
                        self.stats.covered += 1;
                    }
                }
            }
        }
        if judged != Judged::Pass {
            self.stats.objectives += 1;
            if judged == Judged::Timeout {
                self.stats.timeouts += 1;
            }
            let report = self.report(case, &result, &judged);
            let finding = Finding {
                after: self.stats.started.elapsed(),
                verdict: verdict_name(&result).to_string(),
                message: first_line(&result),
            };
            if self.stats.first_objective.is_none() {
                self.stats.first_objective = Some(finding.clone());
                self.stats.first_report = Some(report.clone());
            }
            if result.is_ok() {
                self.stats.oracles += 1;
                if self.stats.first_oracle.is_none() {
                    self.stats.first_oracle = Some(finding);
                }
            }
            self.save(case, &judged, &report);
            if self.stop.on != StopOn::Never
                && self.should_stop()
                && let Some(f) = &self.stop.stop_file
            {
                let _ = std::fs::write(f, b"stop: the finding the campaign waited for\n");
            }
            self.stats.restarts += 1;
            if let Err(e) = self.session.restart() {
                let msg = format!("restarting the session after an objective failed: {e}");
                self.stats.fatal = Some(msg.clone());
                return Judged::Fatal(msg);
            }
        }
        judged
    }

    /// The sidecar text of an objective.
    fn report(
        &self,
        case: &[u8],
        result: &Result<CaseOutcome, SessionError>,
        judged: &Judged,
    ) -> String {
        let mut s = String::new();
        let kind = if *judged == Judged::Timeout {
            "timeout"
        } else {
            "crash"
        };
        let _ = writeln!(s, "verdict: {}", verdict_name(result));
        let _ = writeln!(s, "exit kind: {kind}");
        let _ = writeln!(s, "backend: {}", self.session.backend());
        let _ = writeln!(
            s,
            "found after: {:.1} s, {} execs",
            self.stats.started.elapsed().as_secs_f64(),
            self.stats.execs
        );
        match result {
            Ok(o) => {
                let _ = writeln!(
                    s,
                    "ops: {} of {} run, {} exits, {} hits",
                    o.ops_run,
                    o.ops_total,
                    o.exits,
                    o.hits.len()
                );
                let _ = writeln!(s, "message: {}", o.message);
                let _ = writeln!(s, "--- console (last lines) ---");
                let _ = writeln!(s, "{}", self.session.console_tail());
            }
            Err(e) => {
                let _ = writeln!(s, "message: {e}");
            }
        }
        let _ = writeln!(
            s,
            "--- case: {} bytes, one 8-byte op a line ---",
            case.len()
        );
        for op in case.chunks(8) {
            let hex: Vec<String> = op.iter().map(|b| format!("{b:02x}")).collect();
            let _ = writeln!(s, "{}", hex.join(" "));
        }
        s
    }

    fn save(&self, case: &[u8], judged: &Judged, report: &str) {
        let Some(dir) = &self.crashes else { return };
        let mut h = std::hash::DefaultHasher::new();
        case.hash(&mut h);
        let kind = if *judged == Judged::Timeout {
            "timeout"
        } else {
            "crash"
        };
        let name = format!("{kind}-{:016x}", h.finish());
        let saved = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(dir.join(&name), case))
            .and_then(|()| std::fs::write(dir.join(format!("{name}.txt")), report));
        match saved {
            Ok(()) => eprintln!(
                "vmfuzz: objective ({}) saved to {}",
                report.lines().next().unwrap_or_default(),
                dir.join(&name).display()
            ),
            Err(e) => eprintln!(
                "vmfuzz: cannot save the objective in {}: {e}",
                dir.display()
            ),
        }
    }
}

impl HasObservers for VmExecutor {
    type Observers = Observers;

    fn observers(&self) -> RefIndexable<&Self::Observers, Self::Observers> {
        RefIndexable::from(&self.observers)
    }

    fn observers_mut(&mut self) -> RefIndexable<&mut Self::Observers, Self::Observers> {
        RefIndexable::from(&mut self.observers)
    }
}

impl<EM, S, Z> Executor<EM, BytesInput, S, Z> for VmExecutor
where
    EM: ProgressReporter<S>,
    S: Stoppable + HasExecutions,
{
    fn run_target(
        &mut self,
        _fuzzer: &mut Z,
        state: &mut S,
        mgr: &mut EM,
        input: &BytesInput,
    ) -> Result<ExitKind, Error> {
        if self.should_stop() {
            // Drain the rest of the current stage without running: the
            // fuzzer stops at the end of it.
            self.observers.0.fill(0);
            state.request_stop();
            return Ok(ExitKind::Ok);
        }
        let bytes = input.target_bytes();
        let judged = self.run_case(&bytes);
        if !matches!(judged, Judged::Fatal(_)) {
            *state.executions_mut() += 1;
        }
        if self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = Instant::now();
            mgr.report_progress(state)?;
        }
        match judged {
            Judged::Pass => Ok(ExitKind::Ok),
            Judged::Crash => Ok(ExitKind::Crash),
            Judged::Timeout => Ok(ExitKind::Timeout),
            Judged::Fatal(msg) => {
                state.request_stop();
                Err(Error::illegal_state(msg))
            }
        }
    }
}
