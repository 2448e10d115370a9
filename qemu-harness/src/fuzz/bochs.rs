//! The Bochs fuzz session: the image boots from the GRUB ISO (built once
//! per session) on emulated VMX; cases and results travel over COM2,
//! which Bochs connects, as a TCP client, to a listener the session binds
//! on 127.0.0.1 before starting it (in `socket-client` mode Bochs treats
//! the port as unconnected when nobody listens). COM1 stays the console,
//! a file in the run directory.
//!
//! Bochs' UART moves one byte per character time of *emulated* time in
//! each direction (its rx/tx timers: 1e6 / (baud / 10) µs, about 87 µs
//! at 115200 baud), so with `clock: sync=none` a lower `ips` spends fewer
//! emulated instructions, and so less wall time, per byte carried; see
//! [`DEFAULT_FUZZ_IPS`].

use super::frame::Link;
use super::{CaseOutcome, FuzzSession, SessionError, find_marker, last_lines};
use crate::bochs::{Bochs, BochsConfig};
use crate::process::{read_console, spawn_logged};
use crate::{HarnessError, RunSpec};
use okernel_abi::result::Outcome;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The `ips` of the fuzz configuration: 2 M. Measured over the same
/// twelve cases (`bench_bochs_ips` in `tests/fuzz_images.rs`, with
/// TCP_QUICKACK): 1 M 23, 2 M 25, 4 M 15, 8 M 11, 20 M 4 cases/s. At 2 M
/// a byte costs ~32 µs of wall time each way and the executor's own work
/// (~20 ms per case, emulated instructions) dominates, so a lower `ips`
/// gains nothing while emulated time (the PIT, the UART) runs ever faster
/// against the instruction count.
pub const DEFAULT_FUZZ_IPS: u64 = 2_000_000;

/// How long Bochs may take to connect COM2 after it starts.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Console lines in errors.
const TAIL_LINES: usize = 20;

/// How a Bochs session runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BochsOptions {
    /// Emulated instructions per second (`cpu: ips=`).
    pub ips: u64,
    /// From the start of Bochs to the ready byte.
    pub boot_timeout: Duration,
    /// From sending a case to its whole result.
    pub case_timeout: Duration,
    /// Processors (`cpu: count=`): with more than one, okernel runs with
    /// the others joined (waiting for their SIPI under the monitor), so
    /// every exit takes the shared path (the run's lock, the per-processor
    /// frame, the catch-up, the shootdown's marks).
    pub cpus: u32,
}

impl Default for BochsOptions {
    fn default() -> Self {
        Self {
            ips: DEFAULT_FUZZ_IPS,
            boot_timeout: Duration::from_secs(60),
            case_timeout: Duration::from_secs(2),
            cpus: 1,
        }
    }
}

/// A running Bochs whose executor said it is ready.
struct Machine {
    child: Child,
    link: Link,
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SIGKILL: Bochs catches SIGTERM with `display_library: term`. The
        // child may already be gone; either way it is reaped here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fuzz session on Bochs.
pub struct BochsSession {
    spec: RunSpec,
    options: BochsOptions,
    machine: Option<Machine>,
    boots: u32,
}

impl BochsSession {
    /// Builds the ISO for `spec` (its guest command line should hold
    /// `scenario=fuzz transport=com2`) and boots it until the executor is
    /// ready.
    pub fn open(spec: RunSpec, options: BochsOptions) -> Result<Self, SessionError> {
        spec.check_files()?;
        spec.make_run_dir()?;
        Bochs::make_iso(&spec)?;
        let mut session = Self {
            spec,
            options,
            machine: None,
            boots: 0,
        };
        session.boot()?;
        Ok(session)
    }

    /// The options the session runs with.
    pub fn options(&self) -> &BochsOptions {
        &self.options
    }

    /// How many times Bochs was started (1 after [`Self::open`]).
    pub fn boots(&self) -> u32 {
        self.boots
    }

    /// The run directory (bochsrc, console.log, bochs.log, the ISO).
    pub fn run_dir(&self) -> &Path {
        &self.spec.run_dir
    }

    fn console_path(&self) -> PathBuf {
        self.spec.run_dir.join("console.log")
    }

    fn boot(&mut self) -> Result<(), SessionError> {
        self.machine = None; // kills the previous Bochs first
        let dir = self.spec.run_dir.clone();
        let console = self.console_path();
        // A stale console must not be read as this boot's.
        let _ = std::fs::remove_file(&console);
        let listener = TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("127.0.0.1:0"))?;
        let addr = listener
            .local_addr()
            .map_err(HarnessError::io("127.0.0.1:0"))?;
        let config = BochsConfig {
            ips: self.options.ips,
            com2_socket: Some(addr.to_string()),
            cpus: self.options.cpus,
            ..BochsConfig::default()
        };
        let cmd = Bochs::command(&dir, &config)?;
        let mut child = spawn_logged(cmd, &dir.join("bochs.stdout"))?;
        self.boots += 1;
        let start = Instant::now();
        let stream = match accept(&listener, &mut child, start + CONNECT_TIMEOUT) {
            Ok(s) => s,
            Err(reason) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(self.boot_failure(reason));
            }
        };
        let link = Link::new(stream).map_err(HarnessError::io(addr.to_string()))?;
        let mut machine = Machine { child, link };
        let deadline = start + self.options.boot_timeout;
        let Machine { child, link } = &mut machine;
        let waited = link.wait_ready(deadline, &mut || watch(child, &console));
        match waited {
            Ok(()) => {
                self.machine = Some(machine);
                Ok(())
            }
            Err(w) => {
                drop(machine);
                let timeout = self.options.boot_timeout;
                match w.into_boot_error("bochs", timeout, String::new()) {
                    SessionError::Boot { reason, .. } => Err(self.boot_failure(reason)),
                    other => Err(other),
                }
            }
        }
    }

    /// The error for a boot that ended with `reason` (Bochs is gone):
    /// okernel's VMX-unavailable marker wins over the reason.
    fn boot_failure(&self, reason: String) -> SessionError {
        let text = read_console(&self.console_path());
        match find_marker(&text) {
            Some((Outcome::VmxUnavailable, detail)) => SessionError::VmxUnavailable {
                backend: "bochs".into(),
                reason: detail,
            },
            marker => SessionError::Boot {
                backend: "bochs".into(),
                reason: match marker {
                    // The watcher may have stopped the boot on the marker
                    // itself; then the reason names it already.
                    Some((o, d)) if !reason.contains("the image reported") => {
                        format!("{reason}; the image reported {}: {d}", o.word())
                    }
                    _ => reason,
                },
                console: self.tail_with_log(&text),
            },
        }
    }

    /// The console's last lines and, when Bochs said why it stopped, the
    /// last lines of its log.
    fn tail_with_log(&self, console: &str) -> String {
        let log = read_console(&self.spec.run_dir.join("bochs.log"));
        let notable: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("PANIC") || l.contains("ERROR") || l.contains("com2"))
            .collect();
        let mut out = last_lines(console, TAIL_LINES);
        if !notable.is_empty() {
            out.push_str("\n--- bochs.log (errors) ---\n");
            out.push_str(&notable[notable.len().saturating_sub(10)..].join("\n"));
        }
        out
    }
}

impl FuzzSession for BochsSession {
    fn backend(&self) -> &str {
        "bochs"
    }

    /// Runs one case; boots first when the previous case left no machine
    /// (a timeout, a crash or a protocol error kill it).
    fn run_case(&mut self, case: &[u8]) -> Result<CaseOutcome, SessionError> {
        if self.machine.is_none() {
            self.boot()?;
        }
        let console = self.console_path();
        let timeout = self.options.case_timeout;
        let Some(Machine { child, link }) = self.machine.as_mut() else {
            unreachable!("booted above");
        };
        let deadline = Instant::now() + timeout;
        let got = link
            .send_case(case)
            .and_then(|()| link.recv_result(deadline, &mut || watch(child, &console)));
        match got.map(|bytes| super::frame::decode_outcome("bochs", &bytes)) {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => {
                self.machine = None;
                Err(e)
            }
            Err(w) => {
                self.machine = None; // kill before reading the console
                let text = read_console(&console);
                let tail = self.tail_with_log(&text);
                Err(match w.into_case_error("bochs", timeout, tail) {
                    // The link closes when Bochs exits: say why it did.
                    SessionError::Crashed {
                        backend,
                        reason,
                        console,
                    } => SessionError::Crashed {
                        backend,
                        reason: match find_marker(&text) {
                            Some((o, d)) if !reason.contains("the image reported") => {
                                format!("{reason}; the image reported {}: {d}", o.word())
                            }
                            _ => reason,
                        },
                        console,
                    },
                    other => other,
                })
            }
        }
    }

    fn restart(&mut self) -> Result<(), SessionError> {
        self.boot()
    }

    fn console_tail(&self) -> String {
        last_lines(&read_console(&self.console_path()), TAIL_LINES)
    }
}

/// Accepts Bochs' COM2 connection; fails with the reason when Bochs exits
/// first or `deadline` passes.
fn accept(
    listener: &TcpListener,
    child: &mut Child,
    deadline: Instant,
) -> Result<std::net::TcpStream, String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot poll the COM2 listener: {e}"))?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(|e| format!("COM2 socket: {e}"))?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("accepting Bochs' COM2 connection failed: {e}")),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "Bochs exited ({status}) before connecting COM2 (see bochs.log)"
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "Bochs did not connect COM2 within {CONNECT_TIMEOUT:?} (see bochs.log)"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the machine stopped: Bochs exited, or the image printed its
/// run-result marker (the executor is not supposed to end the run).
fn watch(child: &mut Child, console: &Path) -> Option<String> {
    if let Ok(Some(status)) = child.try_wait() {
        let text = read_console(console);
        return Some(match find_marker(&text) {
            Some((o, d)) => format!(
                "Bochs exited ({status}) after the image reported {}: {d}",
                o.word()
            ),
            None => format!("Bochs exited ({status})"),
        });
    }
    let text = read_console(console);
    find_marker(&text).map(|(o, d)| format!("the image reported {}: {d}", o.word()))
}
