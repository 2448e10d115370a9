//! Facts about the machine the runners run on: the one place that decides
//! what this host's KVM can run. The e2e matrix, the QEMU backend and the
//! VM fuzzer's KVM backend all ask here, and each decision carries the
//! evidence it was made on, for the tables and `cargo xtask doctor`.

use crate::kvm::cpuid::{self, VmxMode};
use crate::{GuestModule, RunSpec, Verdict};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Whether `/dev/kvm` exists and this user may open it read-write.
pub fn kvm_usable() -> bool {
    kvm_problem().is_none()
}

/// Why `/dev/kvm` cannot be used, in words; `None` when it can.
pub fn kvm_problem() -> Option<String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some("/dev/kvm does not exist (no KVM on this host)".to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Some("/dev/kvm is not accessible (add this user to the `kvm` group)".to_string())
        }
        Err(e) => Some(format!("/dev/kvm cannot be opened: {e}")),
    }
}

/// What this host's KVM offers its guests, probed once per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmHost {
    /// Why KVM cannot be used at all; `None` when it can.
    pub problem: Option<String>,
    /// The vendor modules loaded (`kvm_intel`, `kvm_amd`, `kvm_pvm`).
    pub modules: Vec<&'static str>,
    /// Whether guests get VMX, and why (from KVM_GET_SUPPORTED_CPUID and
    /// `kvm_intel`'s `nested`, as the KVM backend decides it for a run).
    pub vmx: Option<VmxMode>,
}

impl KvmHost {
    /// Probes `/dev/kvm`.
    pub fn probe() -> Self {
        let problem = kvm_problem();
        let vmx = problem.is_none().then(|| {
            crate::kvm::Kvm::new().mode().unwrap_or_else(|e| VmxMode {
                nested: false,
                why: format!("KVM_GET_SUPPORTED_CPUID failed: {e}"),
            })
        });
        Self {
            problem,
            modules: cpuid::kvm_modules(),
            vmx,
        }
    }

    /// This host's facts, probed on first use.
    pub fn get() -> &'static KvmHost {
        static HOST: OnceLock<KvmHost> = OnceLock::new();
        HOST.get_or_init(Self::probe)
    }

    /// Whether guests get nested VMX.
    pub fn nested_vmx(&self) -> bool {
        self.vmx.as_ref().is_some_and(|m| m.nested)
    }

    /// One line: usable or not, the modules, the VMX mode with its reason.
    pub fn describe(&self) -> String {
        if let Some(why) = &self.problem {
            return format!("unusable: {why}");
        }
        let modules = if self.modules.is_empty() {
            "no vendor module found in /sys/module".to_string()
        } else {
            self.modules.join(", ")
        };
        let mode = self.vmx.as_ref().map(VmxMode::describe).unwrap_or_default();
        format!("usable ({modules}); {mode}")
    }
}

/// Whether KVM here offers nested VMX to its guests (see [`KvmHost`]).
pub fn kvm_nested_vmx() -> bool {
    KvmHost::get().nested_vmx()
}

/// Whether this host's KVM runs a plain guest's ring-3 code and SYSCALL,
/// decided by running one: the demo guest's attack suite with no monitor
/// (`mode=direct`, `protect=off`: ring-3 tasks, SYSCALL/SYSRET, no VMX
/// needed) on the in-process KVM backend. Bochs and QEMU/TCG run the same
/// case in the e2e matrix, so a fault here that they do not share is the
/// host's. `Ok(evidence)` when it passed, `Err(evidence)` when not.
pub fn kvm_runs_ring3(image: &Path, guest: &Path, run_dir: &Path) -> Result<String, String> {
    static ANSWER: OnceLock<Result<String, String>> = OnceLock::new();
    ANSWER
        .get_or_init(|| probe_ring3(image, guest, run_dir.to_path_buf()))
        .clone()
}

fn probe_ring3(image: &Path, guest: &Path, run_dir: PathBuf) -> Result<String, String> {
    if let Some(why) = kvm_problem() {
        return Err(why);
    }
    let spec = RunSpec {
        name: "probe-kvm-ring3".into(),
        image: image.to_path_buf(),
        guest: GuestModule::File(guest.to_path_buf()),
        cmdline: "log=info mode=direct".into(),
        guest_cmdline: "scenario=attacks protect=off".into(),
        timeout: Duration::from_secs(20),
        run_dir: run_dir.clone(),
        gdb: false,
    };
    let backend = crate::kvm::Kvm::new();
    let report = match crate::Backend::run(&backend, &spec) {
        Ok(r) => r,
        Err(e) => return Err(format!("the probe run failed: {e} ({})", run_dir.display())),
    };
    let syscall = report
        .parsed_checks()
        .ok()
        .and_then(|c| c.into_iter().find(|c| c.check == "legit-syscall-getuid"));
    match (Verdict::judge(&report, &crate::Expect::pass()), syscall) {
        (Verdict::Ok, Some(c)) if c.ok => Ok(format!(
            "a plain guest's ring-3 SYSCALL ran ({}: {})",
            c.check, c.observed
        )),
        (verdict, _) => {
            let why = match verdict {
                Verdict::Unexpected(why) => why,
                Verdict::Ok => "legit-syscall-getuid was not reported as held".into(),
            };
            let tail: Vec<&str> = report.last_lines(3);
            Err(format!(
                "a plain guest (no monitor) with ring-3 tasks did not run: {why}; \
                 last lines: {} (run directory {})",
                tail.join(" | "),
                run_dir.display()
            ))
        }
    }
}
