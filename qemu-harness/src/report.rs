//! What a run produced, and whether that is what was expected.

use okernel_abi::result::{CHECK_PREFIX, LINE_MARK, MARKER, Outcome};
use std::path::PathBuf;
use std::time::Duration;

/// The monitor's lines in `console`: what follows [`LINE_MARK`] on a line.
/// The guest cannot send the mark, so the text after it up to the end of
/// the line is the loader's or the monitor's, even where a guest line
/// left open runs before it.
fn monitor_lines(console: &str) -> impl Iterator<Item = &str> {
    console
        .lines()
        .filter_map(|l| l.split_once(char::from(LINE_MARK)).map(|(_, rest)| rest))
}

/// The result of one boot.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The backend that ran it.
    pub backend: String,
    /// The run's name.
    pub name: String,
    /// The outcome and detail from the result marker, if one was printed.
    pub marker: Option<(Outcome, String)>,
    /// The outcome from the exit port, where the backend decodes it
    /// (QEMU's `isa-debug-exit` status, the KVM harness's port).
    pub port: Option<Outcome>,
    /// The process exit status, where there was a process.
    pub exit_status: Option<i32>,
    /// Whether the run was killed at its timeout.
    pub timed_out: bool,
    /// Everything the image printed.
    pub console: String,
    /// Where the artifacts are.
    pub run_dir: PathBuf,
    /// Wall time of the run.
    pub duration: Duration,
    /// Where the emulator itself failed without a result: why, in its own
    /// words (the error lines of its log).
    pub emulator_error: Option<String>,
}

impl RunReport {
    /// Builds a report from the console text; finds the result marker:
    /// the first on a line of the monitor's ([`Self::monitor_lines`]),
    /// else the first at all (a Linux guest's `/init` prints its own).
    /// Under okernel a guest cannot start a line with the monitor's mark,
    /// so a result line it forges never wins over the monitor's.
    pub fn from_console(backend: &str, name: &str, console: String, run_dir: PathBuf) -> Self {
        let parse = |l: &str| Outcome::parse_marker(l).map(|(o, d)| (o, d.to_string()));
        // A monitor line counts as the result only when it is the result
        // line itself: others may quote the guest (its Exit reason).
        let marker = monitor_lines(&console)
            .filter(|l| l.starts_with(MARKER))
            .find_map(parse)
            .or_else(|| console.lines().find_map(parse));
        Self {
            backend: backend.to_string(),
            name: name.to_string(),
            marker,
            port: None,
            exit_status: None,
            timed_out: false,
            console,
            run_dir,
            duration: Duration::ZERO,
            emulator_error: None,
        }
    }

    /// The run's outcome: the marker's, cross-checked with the port's.
    /// `None` when the image reported nothing, or the two disagree.
    pub fn outcome(&self) -> Option<Outcome> {
        match (&self.marker, self.port) {
            (Some((m, _)), Some(p)) if *m != p => None,
            (Some((m, _)), _) => Some(*m),
            (None, p) => p,
        }
    }

    /// The marker's detail (reason or message), empty when none.
    pub fn detail(&self) -> &str {
        self.marker.as_ref().map(|(_, d)| d.as_str()).unwrap_or("")
    }

    /// The per-check lines (`OKERNEL-CHECK: {...}`), JSON text each.
    pub fn checks(&self) -> impl Iterator<Item = &str> {
        self.console
            .lines()
            .filter_map(|l| l.split_once(CHECK_PREFIX).map(|(_, j)| j.trim_end()))
    }

    /// The per-check lines, parsed; a line that is not a valid check is
    /// an error naming it (a garbled console must not pass for a check).
    pub fn parsed_checks(&self) -> Result<Vec<Check>, String> {
        self.checks()
            .map(|j| serde_json::from_str(j).map_err(|e| format!("bad check line `{j}`: {e}")))
            .collect()
    }

    /// The lines the loader or the monitor printed (each starts with
    /// [`LINE_MARK`], which is cut off here).
    pub fn monitor_lines(&self) -> impl Iterator<Item = &str> {
        monitor_lines(&self.console)
    }

    /// The last `n` console lines, for failure messages.
    pub fn last_lines(&self, n: usize) -> Vec<&str> {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    /// Describes what happened in a few words.
    pub fn summary(&self) -> String {
        if self.timed_out {
            return format!("timeout after {:.1}s", self.duration.as_secs_f64());
        }
        match (&self.marker, self.port) {
            (Some((m, _)), Some(p)) if *m != p => {
                format!("marker says {} but exit port says {}", m.word(), p.word())
            }
            _ => match self.outcome() {
                Some(o) if self.detail().is_empty() => o.word().to_string(),
                Some(o) => format!("{}: {}", o.word(), self.detail()),
                None => match (&self.emulator_error, self.exit_status) {
                    (Some(why), Some(s)) => format!("the emulator failed (exit status {s}): {why}"),
                    (Some(why), None) => format!("the emulator failed: {why}"),
                    (None, s) => match s {
                        Some(s) => format!("no result reported (exit status {s})"),
                        None => "no result reported".to_string(),
                    },
                },
            },
        }
    }
}

/// One check the image reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Check {
    /// Its name.
    pub check: String,
    /// The invariant of DESIGN.md §2 it supports (0: none).
    pub invariant: u8,
    /// Whether it held.
    pub ok: bool,
    /// What the image observed.
    pub observed: String,
    /// For attack checks: the attack's name.
    #[serde(default)]
    pub attack: Option<String>,
    /// For attack checks: what should happen (`blocked` or `succeeds`).
    #[serde(default)]
    pub expected: Option<String>,
    /// For attack checks: what happened (`blocked` or `succeeded`).
    #[serde(default)]
    pub result: Option<String>,
    /// For attack checks: the audit record found, or why none was needed.
    #[serde(default)]
    pub audit: Option<String>,
}

/// What a run should end with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// This outcome, with a detail containing this text (may be empty).
    Outcome(Outcome, String),
    /// No outcome: the run hangs and is killed at its timeout.
    Timeout,
}

impl Expect {
    /// Expects a pass.
    pub fn pass() -> Self {
        Expect::Outcome(Outcome::Pass, String::new())
    }

    /// A few words for tables.
    pub fn describe(&self) -> String {
        match self {
            Expect::Outcome(o, d) if d.is_empty() => o.word().to_string(),
            Expect::Outcome(o, d) => format!("{} (\"{d}\")", o.word()),
            Expect::Timeout => "timeout".to_string(),
        }
    }
}

/// Whether a run did what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It did.
    Ok,
    /// It did not; the text says how.
    Unexpected(String),
}

impl Verdict {
    /// Judges `report` against `expect`.
    pub fn judge(report: &RunReport, expect: &Expect) -> Self {
        match expect {
            Expect::Timeout if report.timed_out && report.outcome().is_none() => Verdict::Ok,
            Expect::Outcome(o, d)
                if !report.timed_out
                    && report.outcome() == Some(*o)
                    && report.detail().contains(d.as_str()) =>
            {
                Verdict::Ok
            }
            _ => Verdict::Unexpected(format!(
                "expected {}, got {}",
                expect.describe(),
                report.summary()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(console: &str) -> RunReport {
        RunReport::from_console("test", "t", console.to_string(), PathBuf::from("/tmp"))
    }

    #[test]
    fn the_monitors_result_line_wins_over_a_forged_one() {
        // The guest prints a pass first; the monitor's marked line says
        // fail: the monitor's counts.
        let r = report(
            "OKERNEL-RESULT: pass\n\u{1}[INFO  loader] x\n\u{1}OKERNEL-RESULT: fail: guest: 3 checks failed\n",
        );
        assert_eq!(r.outcome(), Some(Outcome::Fail));
        assert_eq!(r.detail(), "guest: 3 checks failed");
        assert_eq!(
            r.monitor_lines().collect::<Vec<_>>(),
            [
                "[INFO  loader] x",
                "OKERNEL-RESULT: fail: guest: 3 checks failed"
            ]
        );
        // No marked result line (Linux's /init, a bare image): the first.
        let r = report("x\nOKERNEL-RESULT: pass\nOKERNEL-RESULT: fail: y\n");
        assert_eq!(r.outcome(), Some(Outcome::Pass));
        // A guest line left open before a monitor line: what follows the
        // mark is still the monitor's.
        let r = report("guest text\u{1}[WARN  loader] audit\n");
        assert_eq!(
            r.monitor_lines().collect::<Vec<_>>(),
            ["[WARN  loader] audit"]
        );
        // A monitor line quoting the guest (its Exit reason) is not the
        // result: the result line is.
        let r = report(
            "\u{1}okernel: guest ended the run (fail): OKERNEL-RESULT: pass\n\u{1}OKERNEL-RESULT: fail: guest: x\n",
        );
        assert_eq!(r.outcome(), Some(Outcome::Fail));
    }

    #[test]
    fn judges_markers_ports_and_timeouts() {
        let pass = report("banner\nOKERNEL-RESULT: pass\n");
        assert_eq!(Verdict::judge(&pass, &Expect::pass()), Verdict::Ok);

        let fail = report("OKERNEL-RESULT: fail: no guest module: pass the guest\n");
        let want = Expect::Outcome(Outcome::Fail, "no guest module".into());
        assert_eq!(Verdict::judge(&fail, &want), Verdict::Ok);
        assert!(matches!(
            Verdict::judge(&fail, &Expect::pass()),
            Verdict::Unexpected(_)
        ));

        let mut disagree = report("OKERNEL-RESULT: pass\n");
        disagree.port = Some(Outcome::Fail);
        assert_eq!(disagree.outcome(), None);
        assert!(disagree.summary().contains("disagree") || disagree.summary().contains("but"));
        assert!(matches!(
            Verdict::judge(&disagree, &Expect::pass()),
            Verdict::Unexpected(_)
        ));

        let mut hung = report("booting\n");
        hung.timed_out = true;
        assert_eq!(Verdict::judge(&hung, &Expect::Timeout), Verdict::Ok);
        assert!(matches!(
            Verdict::judge(&hung, &Expect::pass()),
            Verdict::Unexpected(_)
        ));

        let silent = report("");
        assert!(matches!(
            Verdict::judge(&silent, &Expect::Timeout),
            Verdict::Unexpected(_)
        ));
    }

    #[test]
    fn parses_checks_and_refuses_garbled_ones() {
        let r = report(
            "OKERNEL-CHECK: {\"check\":\"a\",\"invariant\":1,\"ok\":true,\"observed\":\"x\"}\n",
        );
        let c = r.parsed_checks().unwrap();
        assert_eq!(c[0].check, "a");
        assert!(c[0].ok);
        let bad = report("OKERNEL-CHECK: {\"check\":\"a\",\"ok\":tr\n");
        assert!(bad.parsed_checks().is_err());
    }

    #[test]
    fn finds_checks_and_last_lines() {
        let r = report("a\nOKERNEL-CHECK: {\"check\":\"x\",\"ok\":true}\r\nb\nc\n");
        assert_eq!(
            r.checks().collect::<Vec<_>>(),
            vec!["{\"check\":\"x\",\"ok\":true}"]
        );
        assert_eq!(r.last_lines(2), vec!["b", "c"]);
    }
}
