//! QEMU: direct PVH boot of the image (`-kernel`, the guest as `-initrd`),
//! under KVM when `/dev/kvm` is usable, TCG otherwise.
//!
//! QEMU's TCG emulates no VMX, and KVM exposes VMX only where the host's
//! `kvm_intel` has `nested=1`; without it the image must report
//! "VMX unavailable". The outcome byte reaches us through `isa-debug-exit`
//! (exit status `(code << 1) | 1`).

use crate::process::{read_console, run_watched};
use crate::{Backend, GuestModule, HarnessError, RunReport, RunSpec, VmxSupport};
use okernel_abi::result::{EXIT_PORT, Outcome};
use std::process::Command;

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
}

impl Qemu {
    /// A QEMU backend with the given accelerator.
    pub fn new(accel: Accel) -> Self {
        let (name, nested_vmx) = match accel {
            Accel::Kvm => ("qemu-kvm", crate::kvm_nested_vmx()),
            Accel::Tcg => ("qemu-tcg", false),
        };
        Self {
            accel,
            name: name.to_string(),
            nested_vmx,
        }
    }

    /// The command line for `spec`.
    pub fn command(&self, spec: &RunSpec) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        let console = spec.run_dir.join("console.log");
        cmd.args(["-machine", "pc", "-m", "256", "-smp", "1"])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args(["-device"])
            .arg(format!("isa-debug-exit,iobase={EXIT_PORT:#x},iosize=0x04"))
            .arg("-kernel")
            .arg(&spec.image);
        match self.accel {
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => cmd.args(["-accel", "tcg", "-cpu", "max"]),
        };
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
            // QEMU itself failed (bad option, no KVM): keep its words.
            let log = read_console(&spec.run_dir.join("qemu.log"));
            if !log.trim().is_empty() {
                report.console.push_str(&format!("\n[qemu] {}", log.trim()));
            }
        }
        Ok(report)
    }
}
