//! Which machine runs the cases: the backend choice and the sessions of
//! qemu-harness.

use crate::mock::MockSession;
use qemu_harness::fuzz::{
    BochsOptions, BochsSession, CaseOutcome, FuzzSession, KvmOptions, KvmSession, SessionError,
};
use qemu_harness::kvm::Kvm;
use std::path::PathBuf;
use std::time::Duration;

/// A backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Bochs: emulated VMX, works everywhere.
    Bochs,
    /// The in-process KVM harness: needs nested VMX to run the monitor.
    Kvm,
    /// The fake session of [`crate::mock`] (a self-test of the driver).
    Mock,
}

impl Backend {
    /// The backend's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bochs => "bochs",
            Self::Kvm => "kvm",
            Self::Mock => "mock",
        }
    }
}

/// Resolves `--backend` (`bochs`, `kvm`, `mock` or `auto`) to a backend
/// and the reason it was chosen.
pub fn choose(requested: &str) -> Result<(Backend, String), String> {
    match requested {
        "bochs" => Ok((Backend::Bochs, "asked for".into())),
        "kvm" => Ok((Backend::Kvm, "asked for".into())),
        "mock" => Ok((Backend::Mock, "asked for (driver self-test)".into())),
        "auto" => {
            // The harness's one decision of what this KVM runs, with its
            // evidence.
            let host = qemu_harness::KvmHost::get();
            let backend = if host.nested_vmx() {
                Backend::Kvm
            } else {
                Backend::Bochs
            };
            Ok((backend, format!("auto: KVM {}", host.describe())))
        }
        other => Err(format!(
            "--backend: unknown backend `{other}` (have: bochs, kvm, auto, mock)"
        )),
    }
}

/// What a session boots.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The okernel fuzz image.
    pub image: PathBuf,
    /// The guest ELF.
    pub guest: PathBuf,
    /// Extra loader options (`mode=direct`).
    pub loader_args: String,
    /// Where each session keeps its run files (`<dir>/<backend>-<n>`).
    pub run_dir: PathBuf,
    /// The session's limit per case (none: the session's default).
    pub case_timeout: Option<Duration>,
    /// Bochs' `cpu: ips=` (none: [`qemu_harness::fuzz::DEFAULT_FUZZ_IPS`]).
    pub bochs_ips: Option<u64>,
    /// Bochs' processors (`cpu: count=`; none: one).
    pub bochs_cpus: Option<u32>,
    /// Send every case empty ([`EmptyCases`]): the benchmark's baseline.
    pub empty_cases: bool,
}

/// A session that sends every case as zero bytes: no operation runs, but
/// everything else a case costs does (the transport both ways, the switch
/// into the untrusted context and back, the reset, the monitor's check,
/// the driver). `cargo xtask bench fuzz` measures it in the same run as
/// the real campaign, as the baseline its rate is compared with.
pub struct EmptyCases(pub Box<dyn FuzzSession>);

impl FuzzSession for EmptyCases {
    fn backend(&self) -> &str {
        self.0.backend()
    }

    fn run_case(&mut self, _case: &[u8]) -> Result<CaseOutcome, SessionError> {
        self.0.run_case(&[])
    }

    fn restart(&mut self) -> Result<(), SessionError> {
        self.0.restart()
    }

    fn console_tail(&self) -> String {
        self.0.console_tail()
    }
}

/// The image's command line for a fuzz session: quiet logging (audit
/// records still go to the ring) plus the extra loader options.
pub fn image_cmdline(loader_args: &str) -> String {
    let extra = loader_args.trim();
    if extra.is_empty() {
        "log=error".into()
    } else {
        format!("log=error {extra}")
    }
}

/// The guest's command line for a fuzz session on `backend`: the
/// executor, the transport the backend's session speaks, and with more
/// than one processor (`cpus`) another one running beside the executor
/// (`aps=run`).
pub fn guest_cmdline(backend: Backend, cpus: Option<u32>) -> String {
    let base = match backend {
        Backend::Kvm => "scenario=fuzz transport=mailbox",
        _ => "scenario=fuzz transport=com2",
    };
    // Only Bochs runs several processors (xtask checks they joined).
    if backend == Backend::Bochs && cpus.is_some_and(|n| n > 1) {
        format!("{base} aps=run")
    } else {
        base.to_string()
    }
}

/// Boots a session of `backend` for client `index`.
pub fn open(
    backend: Backend,
    cfg: &SessionConfig,
    index: usize,
) -> Result<Box<dyn FuzzSession>, SessionError> {
    let session = open_backend(backend, cfg, index)?;
    Ok(if cfg.empty_cases {
        Box::new(EmptyCases(session))
    } else {
        session
    })
}

fn open_backend(
    backend: Backend,
    cfg: &SessionConfig,
    index: usize,
) -> Result<Box<dyn FuzzSession>, SessionError> {
    if backend == Backend::Mock {
        return Ok(Box::new(MockSession::new()));
    }
    let missing = |what: &'static str, path: &PathBuf| {
        SessionError::Harness(qemu_harness::HarnessError::Missing {
            what,
            path: path.clone(),
        })
    };
    if !cfg.image.is_file() {
        return Err(missing("okernel fuzz image", &cfg.image));
    }
    if !cfg.guest.is_file() {
        return Err(missing("guest kernel", &cfg.guest));
    }
    let spec = qemu_harness::RunSpec {
        name: format!("fuzz-{}-{index}", backend.name()),
        image: cfg.image.clone(),
        guest: qemu_harness::GuestModule::File(cfg.guest.clone()),
        cmdline: image_cmdline(&cfg.loader_args),
        guest_cmdline: guest_cmdline(backend, cfg.bochs_cpus),
        timeout: Duration::from_secs(120),
        run_dir: cfg.run_dir.join(format!("{}-{index}", backend.name())),
        gdb: false,
    };
    Ok(match backend {
        Backend::Bochs => {
            let mut options = BochsOptions::default();
            if let Some(t) = cfg.case_timeout {
                options.case_timeout = t;
            }
            if let Some(ips) = cfg.bochs_ips {
                options.ips = ips;
            }
            if let Some(cpus) = cfg.bochs_cpus {
                options.cpus = cpus;
            }
            Box::new(BochsSession::open(spec, options)?)
        }
        Backend::Kvm => {
            if let Some(why) = qemu_harness::kvm_problem() {
                return Err(SessionError::Harness(qemu_harness::HarnessError::Tool {
                    command: "kvm fuzz session".into(),
                    detail: why,
                }));
            }
            let mut options = KvmOptions::default();
            if let Some(t) = cfg.case_timeout {
                options.case_timeout = t;
            }
            Box::new(KvmSession::open(Kvm::new(), spec, options)?)
        }
        Backend::Mock => Box::new(MockSession::new()),
    })
}
