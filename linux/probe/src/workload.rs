//! The exit-count workload (`okernel.workload=SECONDS`, run by `cargo
//! xtask bench linux`): what the monitor's locks cost a container host,
//! counted in VM exits. A contained process (the attacker's container of
//! [`crate::container`], so the work passes the seccomp filter and the
//! cgroup like any container's) runs, until SECONDS have passed: a
//! pipeline that forks and execs (`sh -c 'echo | cat | wc'`), a file
//! written and read back, then a 100 ms sleep — a busy container's mix of
//! process start-up, system calls, page faults and idle time. The probe
//! reads the monitor's exit counters (`/proc/okernel-exits`, the
//! client's) before and after and prints the difference.

use crate::{Checks, read};
use okernel_abi::hypercall::EXIT_REASON_SLOTS;
use okernel_abi::result::EXITS_PREFIX;
use okernel_linux_probe::ExitCounts;
use std::process::Command;
use std::time::{Duration, Instant};

/// The basic exit reason of VMCALL (SDM Vol. 3D Appendix C).
const VMCALL: u16 = 18;

/// Inside the container: the loop. Prints `iterations N`.
pub fn contained(seconds: &str) -> std::process::ExitCode {
    let Ok(seconds) = seconds.parse::<u64>() else {
        eprintln!("--workload={seconds}: not a number of seconds");
        return std::process::ExitCode::from(2);
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
            return std::process::ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(100));
        n += 1;
    }
    println!("iterations {n}");
    std::process::ExitCode::SUCCESS
}

/// The row `linux-workload` and, where the client shows the monitor's
/// counters, the exit-count line.
pub fn run(c: &mut Checks, seconds: u64) {
    let before = read("/proc/okernel-exits");
    let out = Command::new("unshare")
        .args(["-m", "-u", "-i", "-n", "-p", "-f", "--"])
        .arg(std::env::current_exe().unwrap_or_default())
        .args(["--contained", &format!("--workload={seconds}")])
        .output();
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
    if let (Some(b), Some(a), Some(n)) = (
        ExitCounts::parse(&before),
        ExitCounts::parse(&after),
        iterations,
    ) {
        // Each read makes EXIT_REASON_SLOTS VMCALLs; two reads add that
        // many between the samples.
        let d = a.since(&b, VMCALL, EXIT_REASON_SLOTS);
        // Before the workload: everything since the launch (Linux's boot,
        // the client's locks, the probe's legitimate rows); the first
        // read's own calls up to each sample are in it (19 VMCALLs, 1 in
        // the total).
        let boot = b.since(&ExitCounts::default(), VMCALL, 0);
        c.lines.push(format!(
            "{EXITS_PREFIX}{{\"workload\":\"container: fork/exec pipeline, file write/read, 100 ms sleep\",\"seconds\":{seconds},\"iterations\":{n},{},\"before\":{{{}}}}}",
            d.json(),
            boot.json()
        ));
    }
}
