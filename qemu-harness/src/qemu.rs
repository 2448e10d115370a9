//! QEMU: direct PVH boot of the image (`-kernel`, the guest as `-initrd`),
//! under KVM when `/dev/kvm` is usable, TCG otherwise.
//!
//! QEMU's TCG emulates no VMX, and KVM exposes VMX only where the host's
//! `kvm_intel` has `nested=1`; without it the image must report
//! "VMX unavailable". Whether QEMU starts at all on this host is probed
//! first ([`Qemu::probe`]), and known host quirks get their work-around.
//! The outcome byte reaches us through `isa-debug-exit`
//! (exit status `(code << 1) | 1`).

use crate::process::{Started, error_lines, probe_start, read_console, run_watched};
use crate::{Availability, Backend, GuestModule, HarnessError, RunReport, RunSpec, VmxSupport};
use okernel_abi::result::{EXIT_PORT, Outcome};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm` (`-cpu host`).
    Kvm,
    /// Software emulation (no VMX).
    Tcg,
}

/// The QEMU backend.
#[derive(Debug, Clone)]
pub struct Qemu {
    accel: Accel,
    name: String,
    nested_vmx: bool,
    program: PathBuf,
    cpu: String,
    machine: &'static str,
}

/// The QEMU program the backend runs unless told otherwise.
pub const PROGRAM: &str = "qemu-system-x86_64";

/// How long a probe waits: QEMU that can start on this host is still
/// running its firmware by then; one that cannot has exited with its
/// reason within milliseconds.
pub const PROBE_GRACE: Duration = Duration::from_millis(1500);

/// A host quirk with a safe work-around: when QEMU fails with `symptom`
/// in its log under `-cpu host`, `-cpu <cpu>` is used instead.
struct Quirk {
    symptom: &'static str,
    cpu: &'static str,
    why: &'static str,
}

/// The known quirks of `-cpu host`, tried in order.
const KVM_QUIRKS: &[Quirk] = &[Quirk {
    symptom: "MSR 0x10a",
    cpu: "host,-arch-capabilities",
    why: "this host's KVM refuses QEMU's value of IA32_ARCH_CAPABILITIES (MSR 0x10a); \
          the guest does without the MSR, which okernel does not use",
}];

impl Qemu {
    /// A QEMU backend with the given accelerator (`-cpu host` for KVM,
    /// `-cpu max` for TCG; see [`Qemu::probe`] for the work-arounds).
    pub fn new(accel: Accel) -> Self {
        let (name, nested_vmx, cpu) = match accel {
            Accel::Kvm => ("qemu-kvm", crate::kvm_nested_vmx(), "host"),
            Accel::Tcg => ("qemu-tcg", false, "max"),
        };
        Self {
            accel,
            name: name.to_string(),
            nested_vmx,
            program: PathBuf::from(PROGRAM),
            cpu: cpu.to_string(),
            machine: "pc",
        }
    }

    /// The same backend on another QEMU machine type (`-machine`; `pc`
    /// unless told otherwise): `q35` has PCI Express configuration space
    /// (an ACPI MCFG), which the ECAM row needs.
    pub fn with_machine(mut self, machine: &'static str) -> Self {
        self.machine = machine;
        self
    }

    /// The same backend running another QEMU binary (tests use a fake).
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// The `-cpu` model runs use.
    pub fn cpu(&self) -> &str {
        &self.cpu
    }

    /// The probe's command line: the machine of a run with `-cpu cpu`,
    /// the firmware and no kernel.
    fn probe_command(&self, cpu: &str) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(["-machine", "pc", "-m", "256", "-smp", "1", "-nodefaults"])
            .args(["-display", "none", "-monitor", "none", "-serial", "none"])
            .args(["-no-reboot", "-accel", self.accel_name(), "-cpu", cpu]);
        cmd
    }

    fn accel_name(&self) -> &'static str {
        match self.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// Whether QEMU starts on this host with this accelerator: it boots
    /// the firmware for [`PROBE_GRACE`] in `dir`. Where `-cpu host` fails
    /// with a known quirk's symptom, the work-around is tried and, if it
    /// starts, kept for every run (the command line of each run is in its
    /// `command.txt`). Returns the backend as runs must use it and the
    /// decision with its evidence.
    pub fn probe(mut self, dir: &Path) -> (Self, Availability) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            let why = format!("cannot create {}: {e}", dir.display());
            return (self, Availability::Unavailable(why));
        }
        let first = match self.start(dir, &self.cpu.clone()) {
            Ok(()) => {
                let evidence = format!("starts with -cpu {}", self.cpu);
                return (self, Availability::Available(evidence));
            }
            Err(why) => why,
        };
        if self.accel == Accel::Kvm
            && let Some(q) = KVM_QUIRKS.iter().find(|q| first.contains(q.symptom))
        {
            return match self.start(dir, q.cpu) {
                Ok(()) => {
                    let evidence = format!(
                        "-cpu {} fails ({first}); runs use -cpu {}: {}",
                        self.cpu, q.cpu, q.why
                    );
                    self.cpu = q.cpu.to_string();
                    (self, Availability::Available(evidence))
                }
                Err(second) => {
                    let why = format!(
                        "-cpu {} fails ({first}), and so does the work-around -cpu {} ({second})",
                        self.cpu, q.cpu
                    );
                    (self, Availability::Unavailable(why))
                }
            };
        }
        (self, Availability::Unavailable(first))
    }

    /// One start probe with `-cpu cpu`; `Err` holds QEMU's own words.
    fn start(&self, dir: &Path, cpu: &str) -> Result<(), String> {
        let log = dir.join(format!("probe-{}.log", cpu.replace(',', "_")));
        match probe_start(self.probe_command(cpu), &log, PROBE_GRACE) {
            Ok(Started::Alive) => Ok(()),
            Ok(Started::Exited { status, output }) => {
                let status = status.map_or("a signal".to_string(), |s| format!("status {s}"));
                let words = error_lines(&output, 3);
                Err(if words.is_empty() {
                    format!("{} exited at once with {status}", self.program.display())
                } else {
                    format!("{words} (exit {status})")
                })
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The command line for `spec`.
    pub fn command(&self, spec: &RunSpec) -> Command {
        let mut cmd = Command::new(&self.program);
        let console = spec.run_dir.join("console.log");
        let ram = spec.guest.ram_mib().to_string();
        cmd.args(["-machine", self.machine, "-m", &ram, "-smp", "1"])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args(["-device"])
            .arg(format!("isa-debug-exit,iobase={EXIT_PORT:#x},iosize=0x01"))
            .arg("-kernel")
            .arg(&spec.image);
        cmd.args(["-accel", self.accel_name(), "-cpu", &self.cpu]);
        if let GuestModule::File(guest) = &spec.guest {
            cmd.arg("-initrd").arg(guest);
        }
        let mut append = spec.cmdline.clone();
        if !spec.guest_cmdline.is_empty() {
            append = format!("{append} -- {}", spec.guest_cmdline);
        }
        if !append.is_empty() {
            cmd.arg("-append").arg(append.trim());
        }
        if spec.gdb {
            cmd.args(["-s", "-S"]);
        }
        cmd
    }
}

impl Backend for Qemu {
    fn name(&self) -> &str {
        &self.name
    }

    fn vmx(&self) -> VmxSupport {
        if self.nested_vmx {
            VmxSupport::Available
        } else {
            VmxSupport::Unavailable
        }
    }

    fn run(&self, spec: &RunSpec) -> Result<RunReport, HarnessError> {
        if let GuestModule::Linux { .. } = spec.guest {
            // `-kernel` PVH boot hands over a single module (`-initrd`).
            return Err(HarnessError::Tool {
                command: "qemu -kernel".into(),
                detail: "QEMU's PVH boot passes one boot module, and okernel with Linux \
                         needs two (kernel, initramfs): boot it from GRUB (Bochs); for the \
                         bare baseline pass the kernel itself as the image"
                    .into(),
            });
        }
        spec.check_files()?;
        spec.make_run_dir()?;
        let finished = run_watched(
            self.command(spec),
            &spec.run_dir.join("qemu.log"),
            spec.timeout,
        )?;
        let console = read_console(&spec.run_dir.join("console.log"));
        let mut report =
            RunReport::from_console(&self.name, &spec.name, console, spec.run_dir.clone());
        report.exit_status = finished.status;
        report.timed_out = finished.timed_out;
        report.duration = finished.duration;
        report.port = finished.status.and_then(Outcome::from_qemu_status);
        let qemu_failed = matches!((report.port, finished.status), (None, Some(s)) if s != 0);
        if qemu_failed {
            // QEMU itself failed (bad option, no KVM, an MSR the host
            // refuses): keep its words, and say them in the summary.
            let log = read_console(&spec.run_dir.join("qemu.log"));
            if !log.trim().is_empty() {
                report.console.push_str(&format!("\n[qemu] {}", log.trim()));
                report.emulator_error = Some(error_lines(&log, 3));
            }
        }
        Ok(report)
    }
}
