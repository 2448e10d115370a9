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

/// The rows.
pub fn run(c: &mut Checks) {
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
