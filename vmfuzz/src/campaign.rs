//! The campaign: LibAFL's state, feedback, objective, scheduler and
//! stages around a [`VmExecutor`], in-process (one core) or under LibAFL's
//! [`Launcher`] (one client, and one session, per core).

use crate::executor::{Finding, StopOn, StopRule, VmExecutor};
use crate::ops::{OpKindMutator, OpsGenerator};
use libafl::corpus::{Corpus, InMemoryCorpus};
use libafl::events::{
    EventConfig, EventFirer, EventReceiver, Launcher, LlmpRestartingEventManager, ProgressReporter,
    SendExiting, SimpleEventManager,
};
use libafl::feedback_or_fast;
use libafl::feedbacks::{CrashFeedback, MaxMapFeedback, TimeoutFeedback};
use libafl::inputs::{BytesInput, HasTargetBytes};
use libafl::monitors::Monitor;
use libafl::monitors::stats::ClientStatsManager;
use libafl::mutators::{HavocScheduledMutator, havoc_mutations};
use libafl::schedulers::QueueScheduler;
use libafl::stages::StdMutationalStage;
use libafl::state::{HasCorpus, HasMaxSize, StdState};
use libafl::{Fuzzer, StdFuzzer};
use libafl_bolts::core_affinity::Cores;
use libafl_bolts::rands::StdRand;
use libafl_bolts::shmem::{ShMemProvider, StdShMemProvider};
use libafl_bolts::tuples::{Merge, tuple_list};
use libafl_bolts::{ClientId, Error};
use okernel_abi::fuzz::{MAP_SIZE, MAX_CASE};
pub use qemu_harness::fuzz::summary::{SUMMARY_PREFIX, Summary};
use qemu_harness::fuzz::{FuzzSession, SessionError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The corpus type (in memory; written to `OUT/corpus/` at the end).
pub type MemCorpus = InMemoryCorpus<BytesInput>;
/// The fuzzer's state.
pub type State = StdState<MemCorpus, BytesInput, StdRand, MemCorpus>;

/// Generated cases in the initial corpus (besides the seed directory's).
pub const INITIAL_CASES: usize = 8;

/// How long a multi-core campaign may overrun its time (booting the
/// sessions, the last case, restarts) before the driver gives up on it.
pub const LAUNCH_GRACE: Duration = Duration::from_secs(300);

/// What a campaign needs besides its sessions.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// The backend's name (for progress lines and the summary).
    pub backend: String,
    /// How long to fuzz.
    pub time: Duration,
    /// Fuzzing clients (one session each).
    pub cores: usize,
    /// The RNG seed (client `i` uses `seed + i`).
    pub seed: u64,
    /// Extra seed inputs.
    pub seeds: Option<PathBuf>,
    /// The output directory (`crashes/`, `corpus/`, `clients/`, runs).
    pub out: PathBuf,
    /// Which finding ends the campaign early.
    pub stop_on: StopOn,
    /// The TCP port of the multi-core broker (0: a free one).
    pub broker_port: u16,
}

/// Progress lines on stderr: at most one every [`PROGRESS_EVERY`] (and
/// one at each new objective), in the form `vmfuzz [bochs] 12.0 s  340
/// execs  28.3 exec/s  corpus 15  objectives 0  coverage 57/8192`.
///
/// [`PROGRESS_EVERY`]: crate::executor::PROGRESS_EVERY
pub struct ProgressMonitor {
    backend: String,
    start: Instant,
    last: Option<Instant>,
    objectives: u64,
}

impl std::fmt::Debug for ProgressMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressMonitor")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl ProgressMonitor {
    /// A monitor whose clock starts now.
    pub fn new(backend: &str) -> Self {
        Self {
            backend: backend.to_string(),
            start: Instant::now(),
            last: None,
            objectives: 0,
        }
    }
}

impl Monitor for ProgressMonitor {
    fn display(
        &mut self,
        stats: &mut ClientStatsManager,
        _event: &str,
        _sender: ClientId,
    ) -> Result<(), Error> {
        let coverage = stats
            .edges_coverage()
            .map(|c| format!("{}/{}", c.edges_hit, c.edges_total))
            .unwrap_or_else(|| format!("0/{MAP_SIZE}"));
        let g = stats.global_stats();
        // The executor reports every PROGRESS_EVERY; other events (new
        // corpus entries) come in between and are shown only when due.
        let due = self.last.is_none_or(|l| {
            l.elapsed() + Duration::from_millis(500) >= crate::executor::PROGRESS_EVERY
        });
        if !due && g.objective_size == self.objectives {
            return Ok(());
        }
        self.last = Some(Instant::now());
        self.objectives = g.objective_size;
        let secs = self.start.elapsed().as_secs_f64();
        eprintln!(
            "vmfuzz [{}] {secs:7.1} s  {:>8} execs  {:>7.1} exec/s  corpus {:>5}  objectives {}  coverage {coverage}  clients {}",
            self.backend,
            g.total_execs,
            g.total_execs as f64 / secs.max(0.001),
            g.corpus_size,
            g.objective_size,
            g.client_stats_count,
        );
        Ok(())
    }
}

/// Builds a session for one client (`client` counts from 0).
pub type SessionFactory<'a> = &'a dyn Fn(usize) -> Result<Box<dyn FuzzSession>, SessionError>;

/// Runs the campaign; the summary says what it found (and `fatal` why it
/// could not go on).
pub fn run(c: &Campaign, open: SessionFactory<'_>) -> Result<Summary, String> {
    let crashes = c.out.join("crashes");
    for d in [&c.out, &crashes] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let stop_file = c.out.join(".stop");
    let _ = std::fs::remove_file(&stop_file);
    if c.cores <= 1 {
        let mut mgr = SimpleEventManager::new(ProgressMonitor::new(&c.backend));
        let start = Instant::now();
        let mut s = client(c, open, 0, None, &mut mgr)?;
        s.elapsed_s = start.elapsed().as_secs_f64();
        s.execs_per_s = s.execs as f64 / s.elapsed_s.max(0.001);
        return Ok(s);
    }
    launch(c, open)
}

/// One client's campaign on `mgr`.
fn client<EM>(
    c: &Campaign,
    open: SessionFactory<'_>,
    index: usize,
    state: Option<State>,
    mgr: &mut EM,
) -> Result<Summary, String>
where
    EM: EventFirer<BytesInput, State>
        + EventReceiver<BytesInput, State>
        + ProgressReporter<State>
        + SendExiting,
{
    let lib = |e: Error| format!("libafl: {e}");
    let start = Instant::now();
    let stop = StopRule {
        deadline: Some(start + c.time),
        on: c.stop_on,
        stop_file: Some(c.out.join(".stop")),
    };
    let mut summary = Summary {
        backend: c.backend.clone(),
        cores: c.cores.max(1) as u64,
        ..Summary::default()
    };
    let session = match open(index) {
        Ok(s) => s,
        Err(e) => {
            summary.fatal = Some(e.to_string());
            return Ok(summary);
        }
    };
    let mut executor = VmExecutor::started_at(start, session, Some(c.out.join("crashes")), stop);
    let mut feedback = MaxMapFeedback::new(executor.observer());
    let mut objective = feedback_or_fast!(CrashFeedback::new(), TimeoutFeedback::new());
    let mut state = match state {
        Some(s) => s,
        None => StdState::new(
            StdRand::with_seed(c.seed.wrapping_add(index as u64)),
            MemCorpus::new(),
            MemCorpus::new(),
            &mut feedback,
            &mut objective,
        )
        .map_err(lib)?,
    };
    state.set_max_size(MAX_CASE);
    let mut fuzzer = StdFuzzer::new(QueueScheduler::new(), feedback, objective);

    let result = (|| -> Result<(), Error> {
        if state.must_load_initial_inputs() {
            if let Some(dir) = &c.seeds {
                state.load_initial_inputs_forced(
                    &mut fuzzer,
                    &mut executor,
                    mgr,
                    std::slice::from_ref(dir),
                )?;
            }
            state.generate_initial_inputs_forced(
                &mut fuzzer,
                &mut executor,
                &mut OpsGenerator,
                mgr,
                INITIAL_CASES,
            )?;
        }
        let mutator = HavocScheduledMutator::new(
            havoc_mutations().merge(tuple_list!(OpKindMutator, OpKindMutator)),
        );
        let mut stages = tuple_list!(StdMutationalStage::new(mutator));
        while !executor.should_stop() {
            fuzzer.fuzz_one(&mut stages, &mut executor, &mut state, mgr)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) | Err(Error::ShuttingDown) => {}
        Err(e) if executor.stats.fatal.is_none() => executor.stats.fatal = Some(lib(e)),
        Err(_) => {}
    }
    let _ = mgr.report_progress(&mut state);
    let st = &executor.stats;
    summary.execs = st.execs;
    summary.objectives = st.objectives;
    summary.timeouts = st.timeouts;
    summary.restarts = st.restarts;
    summary.coverage = st.covered as u64;
    let secs = |f: &Option<Finding>| f.as_ref().map(|f| f.after.as_secs_f64());
    summary.first_objective_s = secs(&st.first_objective);
    summary.first_report.clone_from(&st.first_report);
    summary.first_verdict = st.first_objective.as_ref().map(|f| f.verdict.clone());
    summary.first_message = st.first_objective.as_ref().map(|f| f.message.clone());
    summary.oracles = st.oracles;
    summary.first_oracle_s = secs(&st.first_oracle);
    summary.oracle_verdict = st.first_oracle.as_ref().map(|f| f.verdict.clone());
    summary.oracle_message = st.first_oracle.as_ref().map(|f| f.message.clone());
    summary.fatal.clone_from(&st.fatal);
    summary.corpus = state.corpus().count() as u64;
    summary.elapsed_s = start.elapsed().as_secs_f64();
    summary.execs_per_s = summary.execs as f64 / summary.elapsed_s.max(0.001);
    save_corpus(&state, &c.out.join("corpus"));
    Ok(summary)
}

/// Writes the corpus's inputs to `dir` (a seed directory for the next
/// campaign).
fn save_corpus(state: &State, dir: &Path) {
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let corpus = state.corpus();
    for id in corpus.ids() {
        if let Ok(tc) = corpus.get(id)
            && let Some(input) = tc.borrow().input()
        {
            let bytes = input.target_bytes();
            let name = libafl::inputs::Input::generate_name(input, Some(id));
            let _ = std::fs::write(dir.join(name), &*bytes);
        }
    }
}

/// A TCP port on the loopback that nobody listens on now (the broker's:
/// two campaigns on one machine must not share a broker).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port for the broker: {e}"))
}

/// The multi-core campaign: LibAFL's [`Launcher`] forks one client per
/// core (each with its own session) around an LLMP broker that shares new
/// corpus entries; each client writes its summary to `OUT/clients/`.
fn launch(c: &Campaign, open: SessionFactory<'_>) -> Result<Summary, String> {
    let clients = c.out.join("clients");
    let _ = std::fs::remove_dir_all(&clients);
    std::fs::create_dir_all(&clients).map_err(|e| format!("{}: {e}", clients.display()))?;
    let shmem = StdShMemProvider::new().map_err(|e| format!("shared memory: {e}"))?;
    let ids: Vec<usize> = (0..c.cores).collect();
    let cores = Cores::from(ids);
    let start = Instant::now();
    let run_client = |state: Option<State>,
                      mut mgr: LlmpRestartingEventManager<
        (),
        BytesInput,
        State,
        <StdShMemProvider as ShMemProvider>::ShMem,
        StdShMemProvider,
    >,
                      desc: libafl::events::ClientDescription| {
        let index = desc.id().saturating_sub(1);
        let summary = client(c, open, index, state, &mut mgr).map_err(Error::illegal_state)?;
        let path = clients.join(format!("client-{index}.json"));
        std::fs::write(&path, serde_json::to_string(&summary).unwrap_or_default())
            .map_err(|e| Error::illegal_state(format!("{}: {e}", path.display())))?;
        mgr.send_exiting()?;
        Err(Error::shutting_down())
    };
    // The launcher forks: the clients (and their respawners) come back
    // here too when they end, and must leave without a summary of their own.
    let parent = std::process::id();
    let watchdog = c.time + LAUNCH_GRACE;
    std::thread::spawn(move || {
        std::thread::sleep(watchdog);
        eprintln!(
            "okernel-vmfuzz: error: the multi-core campaign did not end within {} s of its time (a client died?)",
            LAUNCH_GRACE.as_secs()
        );
        std::process::exit(2);
    });
    let port = match c.broker_port {
        0 => free_port()?,
        p => p,
    };
    let launched = Launcher::builder()
        .shmem_provider(shmem)
        .configuration(EventConfig::from_name("okernel-vmfuzz"))
        .monitor(ProgressMonitor::new(&c.backend))
        .run_client(run_client)
        .cores(&cores)
        .broker_port(port)
        .build()
        .launch();
    if std::process::id() != parent {
        std::process::exit(0);
    }
    match launched {
        Ok(()) | Err(Error::ShuttingDown) => {}
        Err(e) => return Err(format!("libafl launcher: {e}")),
    }
    let mut total = Summary {
        backend: c.backend.clone(),
        cores: c.cores as u64,
        ..Summary::default()
    };
    let mut seen = 0;
    for i in 0..c.cores {
        let path = clients.join(format!("client-{i}.json"));
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(s) = serde_json::from_str::<Summary>(&text)
        {
            total.merge(&s);
            seen += 1;
        }
    }
    if seen < c.cores && total.fatal.is_none() {
        total.fatal = Some(format!(
            "only {seen} of {} clients reported a summary (see {})",
            c.cores,
            clients.display()
        ));
    }
    total.elapsed_s = total.elapsed_s.max(start.elapsed().as_secs_f64());
    total.execs_per_s = total.execs as f64 / total.elapsed_s.max(0.001);
    Ok(total)
}
