//! The KVM fuzz session: the image boots in-process ([`crate::kvm`]);
//! the executor (guest command line `scenario=fuzz transport=mailbox`)
//! announces its 8 KiB mailbox ([`okernel_abi::fuzz::mailbox`]) by
//! writing its guest-physical address to [`DOORBELL_PORT`], first with an
//! empty result (ready), then after every case with the result frame in
//! the mailbox.
//!
//! At the first doorbell the session completes the `out` (so RIP is past
//! it: [`Vm::complete_io`]) and takes a [`Snapshot`]. Every case then
//! starts from that snapshot: reset (dirty pages only), write the case
//! into the mailbox, run to the next doorbell, decode the frame. The
//! executor resumes after its `out` and reads the case, so every case
//! runs against the same machine state.

use super::frame::decode_outcome;
use super::{CaseOutcome, FuzzSession, SessionError, find_marker, last_lines};
use crate::kvm::devices::Stop;
use crate::kvm::{Kvm, RunEnd, Snapshot, Vm};
use crate::{HarnessError, RunSpec};
use okernel_abi::fuzz::{DOORBELL_PORT, MAX_CASE, MAX_RESULT, mailbox};
use okernel_abi::result::{EXIT_PORT, Outcome};
use std::time::{Duration, Instant};

/// Console lines in errors.
const TAIL_LINES: usize = 20;

/// How a KVM session runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmOptions {
    /// From the PVH entry to the first doorbell.
    pub boot_timeout: Duration,
    /// From the reset to the case's doorbell.
    pub case_timeout: Duration,
}

impl Default for KvmOptions {
    fn default() -> Self {
        Self {
            boot_timeout: Duration::from_secs(30),
            case_timeout: Duration::from_secs(1),
        }
    }
}

/// A booted VM at its ready doorbell.
struct Ready {
    vm: Vm,
    snap: Snapshot,
    mailbox: u64,
}

/// A fuzz session on KVM.
pub struct KvmSession {
    kvm: Kvm,
    spec: RunSpec,
    options: KvmOptions,
    ready: Ready,
    cases: u64,
}

impl KvmSession {
    /// Boots `spec` on `kvm` until the executor's first doorbell and
    /// snapshots it there. `spec.cmdline` holds the image's options
    /// (`mode=direct` runs the executor with no monitor: a negative
    /// control).
    pub fn open(kvm: Kvm, spec: RunSpec, options: KvmOptions) -> Result<Self, SessionError> {
        let ready = boot(&kvm, &spec, options.boot_timeout)?;
        Ok(Self {
            kvm,
            spec,
            options,
            ready,
            cases: 0,
        })
    }

    /// The guest-physical address of the executor's mailbox.
    pub fn mailbox(&self) -> u64 {
        self.ready.mailbox
    }

    /// The options the session runs with.
    pub fn options(&self) -> &KvmOptions {
        &self.options
    }

    /// Cases run since the last boot.
    pub fn cases(&self) -> u64 {
        self.cases
    }

    /// The VM (for tests and diagnostics: registers, exit counters).
    pub fn vm(&self) -> &Vm {
        &self.ready.vm
    }

    fn crashed(&self, reason: String) -> SessionError {
        SessionError::Crashed {
            backend: "kvm".into(),
            reason,
            console: self.console_tail(),
        }
    }
}

impl FuzzSession for KvmSession {
    fn backend(&self) -> &str {
        "kvm"
    }

    fn run_case(&mut self, case: &[u8]) -> Result<CaseOutcome, SessionError> {
        let case = &case[..case.len().min(MAX_CASE)];
        let Ready { vm, snap, mailbox } = &mut self.ready;
        let mb = *mailbox;
        vm.reset(snap).map_err(HarnessError::from)?;
        // The harness's own writes are not in the dirty log: put the case
        // page back as the snapshot has it, then write the case.
        let page = mb as usize..mb as usize + mailbox::RESULT_LEN;
        vm.write_guest("the mailbox's case page", mb, &snap.memory()[page])
            .map_err(HarnessError::from)?;
        let mut head = (case.len() as u32).to_le_bytes().to_vec();
        head.resize(mailbox::CASE, 0);
        head.extend_from_slice(case);
        vm.write_guest("the case", mb + mailbox::CASE_LEN as u64, &head)
            .map_err(HarnessError::from)?;
        self.cases += 1;
        let timeout = self.options.case_timeout;
        let end = vm
            .run(Instant::now() + timeout)
            .map_err(HarnessError::from)?;
        match end {
            RunEnd::Stopped(Stop::Doorbell(addr)) if u64::from(addr) == mb => {
                let bytes = read_result(vm, mb)?;
                vm.complete_io().map_err(HarnessError::from)?;
                decode_outcome("kvm", &bytes)
            }
            RunEnd::Stopped(Stop::Doorbell(addr)) => Err(SessionError::Protocol {
                backend: "kvm".into(),
                detail: format!("doorbell with mailbox {addr:#x}, the executor announced {mb:#x}"),
            }),
            RunEnd::TimedOut => {
                let vm = &self.ready.vm;
                let rip = vm.regs().map(|r| r.rip).unwrap_or(0);
                let how = if vm.halted().unwrap_or(false) {
                    "halted"
                } else {
                    "running"
                };
                Err(SessionError::Timeout {
                    backend: "kvm".into(),
                    timeout,
                    console: format!(
                        "{}\n[kvm] the vCPU was {how} at RIP {rip:#x}",
                        self.console_tail()
                    ),
                })
            }
            other => {
                let reason = describe(&self.ready.vm, &other);
                if let RunEnd::Stopped(_) = other {
                    // An `out` ended the run: finish it before the next
                    // reset so no half-done I/O outlives the state.
                    self.ready.vm.complete_io().map_err(HarnessError::from)?;
                }
                Err(self.crashed(reason))
            }
        }
    }

    /// Boots a fresh VM (each case already starts from the snapshot; this
    /// also rebuilds the snapshot itself).
    fn restart(&mut self) -> Result<(), SessionError> {
        self.ready = boot(&self.kvm, &self.spec, self.options.boot_timeout)?;
        self.cases = 0;
        Ok(())
    }

    fn console_tail(&self) -> String {
        let out = String::from_utf8_lossy(&self.ready.vm.devices.serial.output).replace('\r', "");
        last_lines(&out, TAIL_LINES)
    }
}

/// Boots `spec` and runs it to the ready doorbell; snapshots there.
fn boot(kvm: &Kvm, spec: &RunSpec, timeout: Duration) -> Result<Ready, SessionError> {
    let mut vm = kvm.boot(spec)?;
    let end = vm
        .run(Instant::now() + timeout)
        .map_err(HarnessError::from)?;
    let console = String::from_utf8_lossy(&vm.devices.serial.output).replace('\r', "");
    let fail = |reason: String| SessionError::Boot {
        backend: "kvm".into(),
        reason,
        console: last_lines(&console, TAIL_LINES),
    };
    let addr = match end {
        RunEnd::Stopped(Stop::Doorbell(addr)) => u64::from(addr),
        RunEnd::TimedOut => {
            return Err(fail(format!(
                "no doorbell (port {DOORBELL_PORT:#x}) within {timeout:?}"
            )));
        }
        other => {
            return Err(match find_marker(&console) {
                Some((Outcome::VmxUnavailable, reason)) => SessionError::VmxUnavailable {
                    backend: "kvm".into(),
                    reason,
                },
                Some((o, d)) => fail(format!("the image reported {}: {d}", o.word())),
                None => fail(describe(&vm, &other)),
            });
        }
    };
    let ram = vm.ram.len() as u64;
    if addr % 4096 != 0 || addr + mailbox::SIZE as u64 > ram {
        return Err(fail(format!(
            "the executor's mailbox {addr:#x} is not a 4 KiB-aligned 8 KiB block of guest RAM \
             (RAM ends at {ram:#x})"
        )));
    }
    let len = read_u32(&vm, addr + mailbox::RESULT_LEN as u64)?;
    if len != 0 {
        return Err(fail(format!(
            "the first doorbell carries a {len}-byte result (expected 0: ready)"
        )));
    }
    vm.complete_io().map_err(HarnessError::from)?;
    let snap = vm.snapshot().map_err(HarnessError::from)?;
    Ok(Ready {
        vm,
        snap,
        mailbox: addr,
    })
}

fn read_u32(vm: &Vm, addr: u64) -> Result<u32, SessionError> {
    let b = vm
        .read_guest("the mailbox's result length", addr, 4)
        .map_err(HarnessError::from)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The result frame in the mailbox at `mb`.
fn read_result(vm: &Vm, mb: u64) -> Result<Vec<u8>, SessionError> {
    let len = read_u32(vm, mb + mailbox::RESULT_LEN as u64)? as usize;
    let room = mailbox::SIZE - mailbox::RESULT;
    if len > MAX_RESULT.min(room) {
        return Err(SessionError::Protocol {
            backend: "kvm".into(),
            detail: format!(
                "result frame of {len} bytes, above the limit of {}",
                MAX_RESULT.min(room)
            ),
        });
    }
    let bytes = vm
        .read_guest("the result frame", mb + mailbox::RESULT as u64, len)
        .map_err(HarnessError::from)?;
    Ok(bytes.to_vec())
}

/// A run end that is not a doorbell, in words (with RIP where it helps).
fn describe(vm: &Vm, end: &RunEnd) -> String {
    let rip = vm.regs().map(|r| r.rip).unwrap_or(0);
    let console = String::from_utf8_lossy(&vm.devices.serial.output).replace('\r', "");
    let marker = console
        .lines()
        .rev()
        .find_map(|l| Outcome::parse_marker(l).map(|(o, d)| format!("{}: {d}", o.word())));
    let what = match end {
        RunEnd::Stopped(Stop::ExitPort(b)) => {
            format!("the image wrote {b:#04x} to port {EXIT_PORT:#x}")
        }
        RunEnd::Stopped(Stop::Shutdown) => "the image shut the machine down".to_string(),
        RunEnd::Stopped(Stop::Doorbell(a)) => format!("doorbell {a:#x}"),
        RunEnd::TimedOut => "timed out".to_string(),
        RunEnd::TripleFault => format!("triple fault (KVM_EXIT_SHUTDOWN) at RIP {rip:#x}"),
        RunEnd::FailEntry { reason, cpu } => {
            format!("VM entry failed (reason {reason:#x}, CPU {cpu}) at RIP {rip:#x}")
        }
        RunEnd::Internal { suberror } => {
            format!("KVM internal error {suberror} at RIP {rip:#x}")
        }
        RunEnd::Unexpected(exit) => format!("unexpected exit {exit} at RIP {rip:#x}"),
    };
    match marker {
        Some(m) => format!("{what}; the image reported {m}"),
        None => what,
    }
}
