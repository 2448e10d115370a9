//! The driver against the mock session: outcome → exit kind, the map,
//! restarts, saved objectives, and a whole campaign that must find the
//! mock's planted defect.

use crate::campaign::{self, Campaign, Summary};
use crate::executor::{Judged, StopOn, StopRule, VmExecutor, judge};
use crate::mock::{self, Fatal, MockSession};
use libafl::events::{NopEventManager, SimpleEventManager};
use libafl::executors::{Executor, ExitKind, HasObservers};
use libafl::inputs::BytesInput;
use libafl::monitors::NopMonitor;
use okernel_abi::fuzz::{CaseVerdict, GUEST_MAP_BASE, MAP_SIZE};
use qemu_harness::fuzz::{CaseOutcome, SessionError};
use std::time::Duration;

fn executor(crashes: Option<std::path::PathBuf>) -> VmExecutor {
    VmExecutor::new(Box::new(MockSession::new()), crashes, StopRule::default())
}

type State = campaign::State;

fn state() -> State {
    use libafl::feedbacks::ConstFeedback;
    let mut f = ConstFeedback::new(false);
    let mut o = ConstFeedback::new(false);
    libafl::state::StdState::new(
        libafl_bolts::rands::StdRand::with_seed(1),
        campaign::MemCorpus::new(),
        campaign::MemCorpus::new(),
        &mut f,
        &mut o,
    )
    .unwrap()
}

fn run(e: &mut VmExecutor, case: &[u8]) -> Result<ExitKind, libafl_bolts::Error> {
    let mut st = state();
    let mut mgr = NopEventManager::new();
    e.run_target(&mut (), &mut st, &mut mgr, &BytesInput::new(case.to_vec()))
}

fn case_with(pattern: &[u8]) -> Vec<u8> {
    let mut c = vec![0x11u8; 24];
    c[9..9 + pattern.len()].copy_from_slice(pattern);
    c
}

#[test]
fn outcomes_map_to_exit_kinds() {
    let session = MockSession::new();
    let probe = session.probe();
    let mut e = VmExecutor::new(Box::new(session), None, StopRule::default());
    assert_eq!(run(&mut e, &[0u8; 16]).unwrap(), ExitKind::Ok);
    assert_eq!(e.stats.restarts, 0);
    assert_eq!(
        run(&mut e, &case_with(&mock::MAGIC)).unwrap(),
        ExitKind::Crash
    );
    assert_eq!(e.stats.restarts, 1);
    assert_eq!(
        run(&mut e, &case_with(&mock::TIMEOUT_PATTERN)).unwrap(),
        ExitKind::Timeout
    );
    assert_eq!(e.stats.restarts, 2);
    assert_eq!(
        run(&mut e, &case_with(&mock::CRASH_PATTERN)).unwrap(),
        ExitKind::Crash
    );
    assert_eq!(
        run(&mut e, &case_with(&mock::PROTOCOL_PATTERN)).unwrap(),
        ExitKind::Crash
    );
    assert_eq!(e.stats.restarts, 4);
    assert_eq!(e.stats.objectives, 4);
    assert_eq!(e.stats.timeouts, 1);
    assert_eq!(e.stats.execs, 5);
    // Every objective was followed by a restart before the next case.
    assert!(!probe.get().dirty_case);
    assert_eq!(probe.get().restarts, 4);
}

#[test]
fn fatal_errors_end_the_campaign() {
    for fatal in [Fatal::VmxUnavailable, Fatal::Boot] {
        let mut s = MockSession::new();
        s.fail_with(fatal);
        let mut e = VmExecutor::new(Box::new(s), None, StopRule::default());
        let err = run(&mut e, &[0u8; 8]).unwrap_err();
        let msg = e.stats.fatal.clone().unwrap();
        assert!(err.to_string().contains(&msg[..10]), "{err} / {msg}");
        assert!(e.should_stop());
        assert_eq!(e.stats.execs, 0);
    }
    let r: Result<CaseOutcome, SessionError> = Err(SessionError::VmxUnavailable {
        backend: "kvm".into(),
        reason: "VMX unavailable: CPUID.1:ECX.VMX=0".into(),
    });
    match judge(&r) {
        Judged::Fatal(m) => assert!(m.contains("VMX unavailable"), "{m}"),
        j => panic!("{j:?}"),
    }
}

#[test]
fn every_verdict_but_pass_is_an_objective() {
    for v in [
        CaseVerdict::GuestOracle,
        CaseVerdict::MonitorOracle,
        CaseVerdict::MonitorDead,
        CaseVerdict::ResetFailed,
    ] {
        let r = Ok(CaseOutcome {
            verdict: v,
            ops_total: 1,
            ops_run: 1,
            exits: 0,
            hits: vec![],
            message: "x".into(),
        });
        assert_eq!(judge(&r), Judged::Crash, "{v:?}");
    }
}

#[test]
fn the_map_holds_this_case_only() {
    let mut e = executor(None);
    // Op kinds 1 and 2, and the magic's first two bytes.
    let case = [1u8, 0, 0, 0, 0, 0, 0, 0, 2, b'O', b'K', 0, 0, 0, 0, 0];
    assert_eq!(run(&mut e, &case).unwrap(), ExitKind::Ok);
    let set = |e: &VmExecutor| -> Vec<usize> {
        let m: &[u8] = &e.observers().0;
        assert_eq!(m.len(), MAP_SIZE);
        m.iter()
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .map(|(i, _)| i)
            .collect()
    };
    assert_eq!(
        set(&e),
        vec![101, 102, GUEST_MAP_BASE + 1, GUEST_MAP_BASE + 2]
    );
    assert_eq!(run(&mut e, &[3u8; 8]).unwrap(), ExitKind::Ok);
    assert_eq!(set(&e), vec![GUEST_MAP_BASE + 3]);
    assert_eq!(e.stats.covered, 5);
}

#[test]
fn objectives_are_saved_with_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = executor(Some(dir.path().join("crashes")));
    let case = case_with(&mock::MAGIC);
    assert_eq!(run(&mut e, &case).unwrap(), ExitKind::Crash);
    let files: Vec<_> = std::fs::read_dir(dir.path().join("crashes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2);
    let input = files.iter().find(|p| p.extension().is_none()).unwrap();
    assert_eq!(std::fs::read(input).unwrap(), case);
    let report = std::fs::read_to_string(input.with_extension("txt")).unwrap();
    assert!(report.starts_with("verdict: guest oracle"), "{report}");
    assert!(report.contains("message: mock: planted defect"), "{report}");
    assert!(report.contains("mock console"), "{report}");
    let name = input.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("crash-"), "{name}");
}

#[test]
fn the_stop_rule_drains_without_running() {
    let mut e = VmExecutor::new(
        Box::new(MockSession::new()),
        None,
        StopRule {
            deadline: Some(std::time::Instant::now()),
            ..StopRule::default()
        },
    );
    let mut st = state();
    let mut mgr = NopEventManager::new();
    let kind = e
        .run_target(&mut (), &mut st, &mut mgr, &BytesInput::new(vec![1; 8]))
        .unwrap();
    assert_eq!(kind, ExitKind::Ok);
    assert_eq!(e.stats.execs, 0);
    assert!(libafl::state::Stoppable::stop_requested(&st));
    let _ = SimpleEventManager::<BytesInput, NopMonitor, State>::new(NopMonitor::new());
}

fn mock_campaign(dir: &std::path::Path, time: u64, stop: bool) -> Summary {
    let c = Campaign {
        backend: "mock".into(),
        time: Duration::from_secs(time),
        cores: 1,
        seed: 1,
        seeds: None,
        out: dir.to_path_buf(),
        stop_on: if stop {
            StopOn::Objective
        } else {
            StopOn::Never
        },
        broker_port: 0,
    };
    let open = |_| Ok(Box::new(MockSession::new()) as Box<dyn qemu_harness::fuzz::FuzzSession>);
    campaign::run(&c, &open).unwrap()
}

/// The LibAFL loop is live: coverage guidance climbs the mock's magic
/// one byte at a time (blind, a 4-byte magic needs ~2^32 tries per
/// offset; the campaign runs ~10^5 cases a second at most).
#[test]
fn a_campaign_finds_the_planted_defect() {
    let dir = tempfile::tempdir().unwrap();
    let s = mock_campaign(dir.path(), 60, true);
    assert!(s.fatal.is_none(), "{s:?}");
    assert!(s.objectives >= 1, "not found: {s:?}");
    let t = s.first_objective_s.unwrap();
    assert!(t < 60.0, "{s:?}");
    assert!(
        s.corpus >= 4,
        "the magic's prefixes should be in the corpus: {s:?}"
    );
    assert!(
        s.first_report
            .as_deref()
            .is_some_and(|r| r.contains("planted defect")),
        "{s:?}"
    );
    let crashes = std::fs::read_dir(dir.path().join("crashes"))
        .unwrap()
        .count();
    assert!(crashes >= 2, "input and report");
    // The summary line is what xtask parses.
    let line = s.line();
    let json = line.strip_prefix(campaign::SUMMARY_PREFIX).unwrap();
    let back: Summary = serde_json::from_str(json).unwrap();
    assert_eq!(back.objectives, s.objectives);
    assert!(back.first_report.is_none());
}

#[test]
fn a_fatal_session_ends_the_campaign_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let c = Campaign {
        backend: "mock".into(),
        time: Duration::from_secs(30),
        cores: 1,
        seed: 1,
        seeds: None,
        out: dir.path().to_path_buf(),
        stop_on: StopOn::Never,
        broker_port: 0,
    };
    let open = |_| {
        let mut s = MockSession::new();
        s.fail_with(Fatal::VmxUnavailable);
        Ok(Box::new(s) as Box<dyn qemu_harness::fuzz::FuzzSession>)
    };
    let start = std::time::Instant::now();
    let s = campaign::run(&c, &open).unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(
        s.fatal
            .as_deref()
            .is_some_and(|f| f.contains("VMX unavailable")),
        "{s:?}"
    );
    let open_fails = |_| -> Result<Box<dyn qemu_harness::fuzz::FuzzSession>, SessionError> {
        Err(SessionError::VmxUnavailable {
            backend: "kvm".into(),
            reason: "VMX unavailable: no VMX".into(),
        })
    };
    let s = campaign::run(&c, &open_fails).unwrap();
    assert!(
        s.fatal
            .as_deref()
            .is_some_and(|f| f.contains("VMX unavailable"))
    );
}

#[test]
fn stop_on_oracle_waits_for_a_verdict() {
    let mut e = VmExecutor::new(
        Box::new(MockSession::new()),
        None,
        StopRule {
            on: StopOn::Oracle,
            ..StopRule::default()
        },
    );
    assert_eq!(
        run(&mut e, &case_with(&mock::CRASH_PATTERN)).unwrap(),
        ExitKind::Crash
    );
    assert!(!e.should_stop(), "a machine crash is not an oracle verdict");
    assert_eq!((e.stats.objectives, e.stats.oracles), (1, 0));
    assert_eq!(
        run(&mut e, &case_with(&mock::MAGIC)).unwrap(),
        ExitKind::Crash
    );
    assert!(e.should_stop());
    assert_eq!((e.stats.objectives, e.stats.oracles), (2, 1));
    let first = e.stats.first_objective.clone().unwrap();
    let oracle = e.stats.first_oracle.clone().unwrap();
    assert_eq!(first.verdict, "machine crashed");
    assert_eq!(oracle.verdict, "guest oracle");
    assert!(oracle.after >= first.after);
}

#[test]
fn the_benchmark_baseline_sends_every_case_empty() {
    use crate::backends::EmptyCases;
    use qemu_harness::fuzz::FuzzSession;
    let mut plain = MockSession::new();
    let magic = plain.run_case(&mock::MAGIC).expect("a case");
    assert_ne!(magic.verdict, CaseVerdict::Pass, "the mock's defect");
    let mut empty = EmptyCases(Box::new(MockSession::new()));
    let o = empty.run_case(&mock::MAGIC).expect("a case");
    let e = MockSession::new().run_case(&[]).expect("a case");
    assert_eq!(
        o.verdict,
        CaseVerdict::Pass,
        "sent empty: no defect reached"
    );
    assert_eq!((o.ops_total, &o.hits), (e.ops_total, &e.hits));
    assert_eq!(empty.backend(), "mock");
}
