//! The VM fuzz driver's summary: the one JSON line (`OKERNEL-FUZZ: {...}`)
//! a campaign ends with, written by `vmfuzz` and read by `cargo xtask fuzz
//! vm`, so both sides share one definition.

use serde::{Deserialize, Serialize};

/// The line prefix of the final summary.
pub const SUMMARY_PREFIX: &str = "OKERNEL-FUZZ: ";

/// The campaign's result: the JSON of the [`SUMMARY_PREFIX`] line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// The backend.
    pub backend: String,
    /// Cases run on the sessions.
    pub execs: u64,
    /// Cases per second, over the campaign.
    pub execs_per_s: f64,
    /// Corpus entries at the end (the largest client's).
    pub corpus: u64,
    /// Objectives found (all clients).
    pub objectives: u64,
    /// Seconds to the first objective (the earliest client's).
    pub first_objective_s: Option<f64>,
    /// Map entries ever hit (the best client's), of [`okernel_abi::fuzz::MAP_SIZE`].
    pub coverage: u64,
    /// Objectives that were timeouts.
    pub timeouts: u64,
    /// Session restarts.
    pub restarts: u64,
    /// Seconds the campaign ran.
    pub elapsed_s: f64,
    /// Clients.
    pub cores: u64,
    /// The first objective's verdict (`guest oracle`, `monitor oracle`,
    /// `machine crashed`, `timeout`, ...).
    pub first_verdict: Option<String>,
    /// The first line of the first objective's message.
    pub first_message: Option<String>,
    /// Objectives that were oracle violations (not crashes or timeouts).
    pub oracles: u64,
    /// Seconds to the first oracle violation.
    pub first_oracle_s: Option<f64>,
    /// The first oracle violation's verdict.
    pub oracle_verdict: Option<String>,
    /// The first line of its message.
    pub oracle_message: Option<String>,
    /// The first objective's report (its first line is the verdict).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_report: Option<String>,
    /// Why the campaign could not go on (then the exit status is 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fatal: Option<String>,
}

impl Summary {
    /// Parses a summary line (`None` for any other line).
    pub fn parse(line: &str) -> Option<Result<Summary, String>> {
        let json = line.strip_prefix(SUMMARY_PREFIX)?;
        Some(serde_json::from_str(json).map_err(|e| format!("bad summary line `{line}`: {e}")))
    }

    /// The summary line (without the first objective's report).
    pub fn line(&self) -> String {
        let mut short = self.clone();
        short.first_report = None;
        format!(
            "{SUMMARY_PREFIX}{}",
            serde_json::to_string(&short).unwrap_or_default()
        )
    }

    /// Adds another client's summary (a multi-core campaign's total).
    pub fn merge(&mut self, o: &Summary) {
        self.execs += o.execs;
        self.corpus = self.corpus.max(o.corpus);
        self.objectives += o.objectives;
        self.timeouts += o.timeouts;
        self.restarts += o.restarts;
        self.coverage = self.coverage.max(o.coverage);
        self.elapsed_s = self.elapsed_s.max(o.elapsed_s);
        self.oracles += o.oracles;
        if let Some(t) = o.first_oracle_s
            && self.first_oracle_s.is_none_or(|s| t < s)
        {
            self.first_oracle_s = Some(t);
            self.oracle_verdict.clone_from(&o.oracle_verdict);
            self.oracle_message.clone_from(&o.oracle_message);
        }
        if let Some(t) = o.first_objective_s
            && self.first_objective_s.is_none_or(|s| t < s)
        {
            self.first_objective_s = Some(t);
            self.first_report.clone_from(&o.first_report);
            self.first_verdict.clone_from(&o.first_verdict);
            self.first_message.clone_from(&o.first_message);
        }
        if self.fatal.is_none() {
            self.fatal.clone_from(&o.fatal);
        }
    }
}
