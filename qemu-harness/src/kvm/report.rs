//! The run directory of a KVM run, and the turn of a [`RunEnd`] into a
//! [`RunReport`] (the image ended the run, or the watchdog did) or a
//! [`KvmError`] (the guest CPU failed: triple fault, entry failure).

use super::boot::{Loaded, START_INFO_ADDR};
use super::cpuid::VmxMode;
use super::devices::Stop;
use super::error::{entry_failure_hint, internal_error_hint};
use super::vcpu::RFLAGS_IF;
use super::{Kvm, KvmError, RunEnd, Vm};
use crate::{GuestModule, HarnessError, RunReport, RunSpec};
use okernel_abi::result::{EXIT_PORT, Outcome};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// The first console line: which backend, which mode.
pub fn header(mode: &VmxMode) -> String {
    format!("[kvm] mode: {}\n", mode.describe())
}

/// What `command.txt` holds: the configuration of an in-process run (there
/// is no command line to show).
pub fn config_text(
    kvm: &Kvm,
    spec: &RunSpec,
    mode: &VmxMode,
    loaded: &Loaded,
    cmdline: &str,
    coalesced: bool,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "backend: kvm (in-process; no emulator command line)");
    let _ = writeln!(s, "device: {}", kvm.device.display());
    let _ = writeln!(s, "mode: {}", mode.describe());
    let modules = super::cpuid::kvm_modules();
    let _ = writeln!(
        s,
        "kvm modules: {}",
        if modules.is_empty() {
            "none found in /sys/module".to_string()
        } else {
            modules.join(", ")
        }
    );
    let _ = writeln!(s, "ram: {} MiB", kvm.ram >> 20);
    let _ = writeln!(
        s,
        "console writes (COM1 THR, port 0xE9): {}",
        if coalesced {
            "coalesced (KVM_CAP_COALESCED_PIO)"
        } else {
            "one exit each"
        }
    );
    let _ = writeln!(s, "image: {}", spec.image.display());
    let _ = writeln!(s, "pvh entry: {:#x}", loaded.entry);
    for (start, end) in &loaded.segments {
        let _ = writeln!(s, "segment: [{start:#x}, {end:#x})");
    }
    match (&spec.guest, loaded.module) {
        (GuestModule::File(p), Some((start, end))) => {
            let _ = writeln!(s, "module: {} at [{start:#x}, {end:#x})", p.display());
        }
        _ => {
            let _ = writeln!(s, "module: none");
        }
    }
    let _ = writeln!(s, "cmdline: {cmdline}");
    let _ = writeln!(s, "start info: {START_INFO_ADDR:#x} (EBX at entry)");
    let _ = writeln!(s, "timeout: {:.1}s", spec.timeout.as_secs_f64());
    if spec.gdb {
        let _ = writeln!(
            s,
            "gdb: not supported by the kvm backend (use `cargo xtask qemu --gdb`)"
        );
    }
    s
}

fn write(dir: &Path, name: &str, text: &[u8]) -> Result<(), HarnessError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(HarnessError::io(path))
}

/// Writes the run directory and judges `end`.
pub fn finish(
    spec: &RunSpec,
    vm: &mut Vm,
    end: RunEnd,
    duration: Duration,
) -> Result<RunReport, HarnessError> {
    let mut console = header(&vm.mode);
    console.push_str(&String::from_utf8_lossy(&vm.devices.serial.output).replace('\r', ""));
    let regs = vm.regs()?;
    let sregs = vm.sregs()?;
    let note = match &end {
        RunEnd::Stopped(Stop::ExitPort(b)) if Outcome::from_code(*b).is_none() => Some(format!(
            "unknown outcome byte {b:#04x} written to port {EXIT_PORT:#x}"
        )),
        RunEnd::Stopped(_) => None,
        RunEnd::TimedOut => {
            let how = if vm.halted()? && regs.rflags & RFLAGS_IF == 0 {
                "halted with interrupts disabled"
            } else if vm.halted()? {
                "halted"
            } else {
                "running"
            };
            Some(format!(
                "watchdog: no outcome after {:.1}s; the vCPU was {how} at RIP {:#x}",
                duration.as_secs_f64(),
                regs.rip
            ))
        }
        other => Some(format!("{other:?} at RIP {:#x}", regs.rip)),
    };
    if let Some(n) = &note {
        if !console.ends_with('\n') {
            console.push('\n');
        }
        let _ = writeln!(console, "[kvm] {n}");
    }
    let dir = &spec.run_dir;
    write(dir, "console.log", console.as_bytes())?;
    write(dir, "debugcon.log", &vm.devices.debugcon)?;
    write(dir, "exits.txt", vm.devices.counters_text().as_bytes())?;

    let run_dir = dir.clone();
    let err = match end {
        RunEnd::Stopped(stop) => {
            let mut report = RunReport::from_console("kvm", &spec.name, console, run_dir);
            report.duration = duration;
            if let Stop::ExitPort(b) = stop {
                report.port = Outcome::from_code(b);
            }
            return Ok(report);
        }
        RunEnd::TimedOut => {
            let mut report = RunReport::from_console("kvm", &spec.name, console, run_dir);
            report.duration = duration;
            report.timed_out = true;
            return Ok(report);
        }
        RunEnd::TripleFault => {
            let lines: Vec<&str> = console.lines().collect();
            let last = lines[lines.len().saturating_sub(10)..].join("\n");
            KvmError::TripleFault {
                rip: regs.rip,
                cr0: sregs.cr0,
                run_dir,
                last_lines: last,
            }
        }
        RunEnd::FailEntry { reason, cpu } => KvmError::EntryFailed {
            reason,
            basic: reason & 0xffff,
            hint: entry_failure_hint(reason & 0xffff),
            cpu,
            rip: regs.rip,
            run_dir,
        },
        RunEnd::Internal { suberror } => KvmError::Internal {
            suberror,
            hint: internal_error_hint(suberror),
            rip: regs.rip,
            run_dir,
        },
        RunEnd::Unexpected(exit) => KvmError::UnexpectedExit {
            exit,
            rip: regs.rip,
            run_dir,
        },
    };
    Err(err.into())
}
