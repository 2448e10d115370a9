//! Legitimate work after the lock (issue 16): what a container host does
//! all day must go on under the monitor. Each is a row in every mode
//! (without okernel, the baseline).

use crate::Checks;
use std::process::Command;

/// Runs `script` with busybox `sh -c`; its stdout, or why not.
fn sh(script: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .map_err(|e| format!("sh: {e}"))?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(said)
    } else {
        Err(format!(
            "{}: {said} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn row(c: &mut Checks, name: &str, script: &str, want: &str) {
    let got = sh(script);
    let ok = got.as_deref() == Ok(want);
    c.report(
        name,
        0,
        ok,
        &format!("sh -c '{script}': {got:?} (want {want:?})"),
    );
}

/// The attacker's container starts: new namespaces, its cgroup, no
/// capabilities, `no_new_privs`, the seccomp filter installed (the
/// kernel JIT-compiles it) and refusing `init_module` with its `ENOSYS`.
fn container(c: &mut Checks) {
    let own_pid_ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let out = Command::new("unshare")
        .args(["-m", "-u", "-i", "-n", "-p", "-f", "--"])
        .arg(std::env::current_exe().unwrap_or_default())
        .args(["--contained", "--status"])
        .output();
    let said = match &out {
        Ok(o) => format!(
            "{} {}",
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        )
        .trim()
        .to_string(),
        Err(e) => format!("unshare: {e}"),
    };
    let ok = out.as_ref().is_ok_and(|o| o.status.success())
        && said.starts_with("pid 1 ")
        && !own_pid_ns.is_empty()
        && !said.contains(&own_pid_ns)
        && said.contains("Seccomp 2 ")
        && said.contains("NoNewPrivs 1 ")
        && said.contains("CapEff 0000000000000000 ")
        && said.contains("CapBnd 0000000000000000 ")
        && said.contains("/okernel-attacker")
        && said.ends_with("init_module -1 errno 38");
    c.report(
        "linux-legit-container",
        0,
        ok,
        &format!("outside: {own_pid_ns}; inside: {said}"),
    );
}

/// The rows.
pub fn run(c: &mut Checks) {
    container(c);
    row(
        c,
        "linux-legit-fork-exec-pipe",
        "echo okernel | cat | grep -c okernel",
        "1",
    );
    row(
        c,
        "linux-legit-sleep",
        "usleep 100000 && echo slept",
        "slept",
    );
    // TCP over loopback (busybox nc has no UDP): a listener in the
    // background, one line to it, then what it got.
    row(
        c,
        "linux-legit-loopback-tcp",
        "ip link set lo up && (nc -l -p 7777 > /tmp/tcp &) && usleep 200000 && \
         echo segment | nc -w 1 127.0.0.1 7777; usleep 200000; cat /tmp/tcp",
        "segment",
    );
}
