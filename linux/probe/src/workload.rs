//! The exit-count workload (`okernel.workload=SECONDS`, run by `cargo
//! xtask bench linux`): what the monitor's locks cost a container host,
//! counted in VM exits, in two phases of SECONDS each, both in a
//! contained process (the attacker's container of [`crate::container`],
//! so the work passes the seccomp filter and the cgroup like any
//! container's):
//!
//! 1. *fork-exec* ([`contained`]): until SECONDS have passed, a pipeline
//!    that forks and execs (`sh -c 'echo | cat | wc'`), a file written
//!    and read back, then a 100 ms sleep — a busy container's mix of
//!    process start-up, system calls, page faults and idle time. The
//!    probe reads the monitor's exit counters (`/proc/okernel-exits`, the
//!    client's) before starting the container and after it has ended, so
//!    every exit of its start-ups is in the count (each `exec` of a
//!    static C library runs CPUID, which exits unconditionally in VMX
//!    non-root operation, SDM Vol. 3C §26.1.2).
//! 2. *steady* ([`steady`]): one long-running contained process that
//!    neither forks nor execs: system calls (`getpid`, `statx`, a file
//!    written and read back), fresh page faults (1 MiB mapped, every
//!    page touched, unmapped), a pipe (4 KiB written and read back) and a
//!    100 ms sleep per iteration. The counters are read after it has
//!    started (it says `ready` and waits) and before it ends (it reports
//!    and waits for its input to close), so its own start-up and exit are
//!    outside the count: what is left is the monitor's cost for a
//!    running container's hot paths.
//!
//! Each phase prints one `OKERNEL-EXITS:` line, told apart by `"phase"`
//! (`"fork-exec"`, `"steady"`).

use crate::{Checks, read};
use okernel_abi::hypercall::EXIT_REASON_SLOTS;
use okernel_abi::result::EXITS_PREFIX;
use okernel_linux_probe::ExitCounts;
use std::io::{BufRead, Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The basic exit reason of VMCALL (SDM Vol. 3D Appendix C).
const VMCALL: u16 = 18;

/// What the steady process maps and touches per iteration: 1 MiB, far
/// above any allocator's threshold, so every page is a fresh fault.
const STEADY_MAP: usize = 1 << 20;

/// What it sends through its pipe per iteration.
const STEADY_PIPE: usize = 4096;

/// The namespaces of every contained process (busybox `unshare`).
const UNSHARE: [&str; 7] = ["-m", "-u", "-i", "-n", "-p", "-f", "--"];

/// Inside the container: the fork/exec loop. Prints `iterations N`.
pub fn contained(seconds: &str) -> ExitCode {
    let Ok(seconds) = seconds.parse::<u64>() else {
        eprintln!("--workload={seconds}: not a number of seconds");
        return ExitCode::from(2);
    };
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0u64;
    while Instant::now() < end {
        let piped = Command::new("sh")
            .args(["-c", "echo okernel | cat | wc -c"])
            .output();
        let file = std::fs::write("/tmp/workload", n.to_le_bytes())
            .and_then(|()| std::fs::read("/tmp/workload"));
        if !piped.is_ok_and(|o| o.status.success()) || file.is_err() {
            eprintln!("workload iteration {n} failed");
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(100));
        n += 1;
    }
    println!("iterations {n}");
    ExitCode::SUCCESS
}

/// Inside the container: the steady loop, no fork or exec. Says `ready`,
/// waits for a line on stdin, runs SECONDS, says `iterations N
/// page-faults M` (M: this process's minor faults over the loop), then
/// waits for stdin to close so the probe can read the counters first.
pub fn steady(seconds: &str) -> ExitCode {
    let Ok(seconds) = seconds.parse::<u64>() else {
        eprintln!("--steady={seconds}: not a number of seconds");
        return ExitCode::from(2);
    };
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    if say("ready").is_err() || stdin.read_line(&mut line).is_err() || line.trim() != "go" {
        eprintln!("steady: no `go` from the probe (got {line:?})");
        return ExitCode::FAILURE;
    }
    let faults = minor_faults();
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0u64;
    while Instant::now() < end {
        if let Err(e) = steady_iteration(n) {
            eprintln!("steady iteration {n} failed: {e}");
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(100));
        n += 1;
    }
    let faults = minor_faults().zip(faults).map(|(a, b)| a.saturating_sub(b));
    let faults = faults.map_or("?".to_string(), |f| f.to_string());
    if say(&format!("iterations {n} page-faults {faults}")).is_err() {
        return ExitCode::FAILURE;
    }
    // Until the probe closes stdin (EOF) after its last read.
    let _ = std::io::copy(&mut stdin, &mut std::io::sink());
    ExitCode::SUCCESS
}

/// One line to the probe, flushed (stdout is a pipe).
fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// One iteration of the steady loop: system calls, fresh page faults and
/// a pipe round trip.
fn steady_iteration(n: u64) -> std::io::Result<()> {
    // System calls: getpid, a file written, stat'ed and read back.
    let pid = std::process::id();
    let bytes = [n.to_le_bytes(), u64::from(pid).to_le_bytes()].concat();
    std::fs::write("/tmp/steady", &bytes)?;
    let len = std::fs::metadata("/tmp/steady")?.len();
    let back = std::fs::read("/tmp/steady")?;
    if back != bytes || len != bytes.len() as u64 {
        return Err(std::io::Error::other("file read back differs"));
    }
    // Fresh page faults: a new anonymous mapping, every page written.
    let mut map = Mapping::new(STEADY_MAP)?;
    let page = 4096;
    for (i, p) in map.bytes().chunks_mut(page).enumerate() {
        p[0] = (i as u8).wrapping_add(n as u8);
    }
    let sum = map
        .bytes()
        .chunks(page)
        .fold(0u64, |s, p| s + u64::from(p[0]));
    std::hint::black_box(sum);
    drop(map);
    // A pipe: 4 KiB written and read back (less than its buffer, so one
    // thread does both).
    let (mut r, mut w) = std::io::pipe()?;
    let sent: Vec<u8> = (0..STEADY_PIPE).map(|i| (i as u8) ^ (n as u8)).collect();
    w.write_all(&sent)?;
    drop(w);
    let mut got = Vec::with_capacity(STEADY_PIPE);
    r.read_to_end(&mut got)?;
    if got != sent {
        return Err(std::io::Error::other("pipe read back differs"));
    }
    Ok(())
}

/// This process's minor page faults so far (`/proc/self/stat` field 10).
fn minor_faults() -> Option<u64> {
    let stat = read("/proc/self/stat");
    // Fields after the command's closing parenthesis start at field 3.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(10 - 3)?.parse().ok()
}

/// An anonymous private mapping, unmapped when dropped (not through the
/// allocator: glibc keeps freed memory of this size for reuse once its
/// mmap threshold has adapted, and the next iteration would not fault).
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    #[allow(unsafe_code)]
    fn new(len: usize) -> std::io::Result<Self> {
        // SAFETY: an anonymous private mapping at an address of the
        // kernel's choice replaces nothing; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    #[allow(unsafe_code)]
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live read-write mapping of `len` bytes owned
        // by `self` (unmapped only in drop), and the borrow of `self`
        // keeps the slice unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping `new` made, and no
        // slice of it outlives `self`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Both phases: the rows `linux-workload` and `linux-workload-steady`
/// and, where the client shows the monitor's counters, one exit-count
/// line each.
pub fn run(c: &mut Checks, seconds: u64) {
    fork_exec(c, seconds);
    steady_phase(c, seconds);
}

/// The counters' difference, less the reads' own VMCALLs: each read
/// makes EXIT_REASON_SLOTS VMCALLs; two reads add that many between the
/// samples.
fn counted(before: &str, after: &str) -> Option<(ExitCounts, ExitCounts)> {
    let (b, a) = (ExitCounts::parse(before)?, ExitCounts::parse(after)?);
    Some((a.since(&b, VMCALL, EXIT_REASON_SLOTS), b))
}

/// The fork/exec phase (see the module doc).
fn fork_exec(c: &mut Checks, seconds: u64) {
    let before = read("/proc/okernel-exits");
    let start = Instant::now();
    let out = Command::new("unshare")
        .args(UNSHARE)
        .arg(std::env::current_exe().unwrap_or_default())
        .args(["--contained", &format!("--workload={seconds}")])
        .output();
    let elapsed = start.elapsed();
    let after = read("/proc/okernel-exits");
    let said = match &out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Err(e) => format!("unshare: {e}"),
    };
    let iterations = said
        .strip_prefix("iterations ")
        .and_then(|n| n.parse::<u64>().ok());
    c.report(
        "linux-workload",
        0,
        out.as_ref().is_ok_and(|o| o.status.success()) && iterations.is_some_and(|n| n > 0),
        &format!("{seconds} s in the container: {said}"),
    );
    if let (Some((d, b)), Some(n)) = (counted(&before, &after), iterations) {
        // Before the workload: everything since the launch (Linux's boot,
        // the client's locks, the probe's legitimate rows); the first
        // read's own calls up to each sample are in it (19 VMCALLs, 1 in
        // the total).
        let boot = b.since(&ExitCounts::default(), VMCALL, 0);
        c.lines.push(format!(
            "{EXITS_PREFIX}{{\"phase\":\"fork-exec\",\"workload\":\"container: fork/exec pipeline, file write/read, 100 ms sleep\",\"seconds\":{seconds},\"elapsed_ms\":{},\"iterations\":{n},{},\"before\":{{{}}}}}",
            elapsed.as_millis(),
            d.json(),
            boot.json()
        ));
    }
}

/// What the steady process said at the end: (iterations, page faults).
fn steady_said(line: &str) -> Option<(u64, Option<u64>)> {
    let mut w = line.split_whitespace();
    match (w.next()?, w.next()?, w.next()?, w.next()?, w.next()) {
        ("iterations", n, "page-faults", f, None) => Some((n.parse().ok()?, f.parse().ok())),
        _ => None,
    }
}

/// The steady phase (see the module doc).
fn steady_phase(c: &mut Checks, seconds: u64) {
    let child = Command::new("unshare")
        .args(UNSHARE)
        .arg(std::env::current_exe().unwrap_or_default())
        .args(["--contained", &format!("--steady={seconds}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(ch) => ch,
        Err(e) => return c.report("linux-workload-steady", 0, false, &format!("unshare: {e}")),
    };
    let (Some(mut input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return c.report("linux-workload-steady", 0, false, "no pipes to the child");
    };
    let mut output = std::io::BufReader::new(output);
    let mut ready = String::new();
    let _ = output.read_line(&mut ready);
    let mut samples = None;
    let mut said = String::new();
    if ready.trim() == "ready" {
        let before = read("/proc/okernel-exits");
        let start = Instant::now();
        if writeln!(input, "go").and_then(|()| input.flush()).is_ok() {
            let _ = output.read_line(&mut said);
        }
        let elapsed = start.elapsed();
        let after = read("/proc/okernel-exits");
        samples = Some((before, after, elapsed));
    } else {
        said = format!("no `ready` from the child (got {ready:?})");
    }
    drop(input);
    let status = child.wait_with_output();
    let said = said.trim();
    let parsed = steady_said(said);
    let ok = status.as_ref().is_ok_and(|o| o.status.success()) && parsed.is_some_and(|p| p.0 > 0);
    let err = status
        .as_ref()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_else(|e| e.to_string());
    c.report(
        "linux-workload-steady",
        0,
        ok,
        &format!(
            "{seconds} s in the container, no fork/exec: {said}{}{err}",
            if err.is_empty() { "" } else { "; " }
        ),
    );
    let Some((before, after, elapsed)) = samples else {
        return;
    };
    if let (Some((d, _)), Some((n, faults))) = (counted(&before, &after), parsed) {
        let faults = faults.map_or("null".to_string(), |f| f.to_string());
        c.lines.push(format!(
            "{EXITS_PREFIX}{{\"phase\":\"steady\",\"workload\":\"one container process, no fork/exec: getpid, file write/stat/read, 1 MiB mapped and touched, 4 KiB through a pipe, 100 ms sleep\",\"seconds\":{seconds},\"elapsed_ms\":{},\"iterations\":{n},\"page_faults\":{faults},{}}}",
            elapsed.as_millis(),
            d.json()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_steady_process_said() {
        assert_eq!(
            steady_said("iterations 98 page-faults 25200"),
            Some((98, Some(25_200)))
        );
        assert_eq!(steady_said("iterations 98 page-faults ?"), Some((98, None)));
        assert_eq!(steady_said("iterations 98"), None);
        assert_eq!(steady_said("iterations x page-faults 1"), None);
        assert_eq!(steady_said(""), None);
    }

    #[test]
    fn one_steady_iteration_runs_here() {
        let before = minor_faults().unwrap();
        steady_iteration(7).unwrap();
        // Every page of the fresh mapping faulted in.
        assert!(minor_faults().unwrap() - before >= (STEADY_MAP / 4096) as u64);
    }
}
