//! Running an emulator process with a watchdog.

use crate::HarnessError;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a watched process ended.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// The exit status, `None` when killed by a signal.
    pub status: Option<i32>,
    /// Whether the watchdog killed it.
    pub timed_out: bool,
    /// Wall time.
    pub duration: Duration,
}

/// Starts `cmd` with stdin from /dev/null and stdout/stderr to `output`;
/// the command line is saved to `command.txt` beside `output`. The caller
/// owns the child: it must kill (SIGKILL: Bochs ignores SIGTERM) and wait.
pub fn spawn_logged(mut cmd: Command, output: &Path) -> Result<Child, HarnessError> {
    let dir = output.parent().unwrap_or(Path::new("."));
    let line = format!("{cmd:?}\n");
    std::fs::write(dir.join("command.txt"), &line)
        .map_err(HarnessError::io(dir.join("command.txt")))?;
    let out = File::create(output).map_err(HarnessError::io(output))?;
    let err = out.try_clone().map_err(HarnessError::io(output))?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| HarnessError::Spawn { program, source })
}

/// Runs `cmd` as [`spawn_logged`] does, killing it (SIGKILL) after
/// `timeout`.
pub fn run_watched(
    cmd: Command,
    output: &Path,
    timeout: Duration,
) -> Result<Finished, HarnessError> {
    let start = Instant::now();
    let mut child = spawn_logged(cmd, output)?;
    loop {
        if let Some(status) = child.try_wait().map_err(HarnessError::io(output))? {
            return Ok(Finished {
                status: status.code(),
                timed_out: false,
                duration: start.elapsed(),
            });
        }
        if start.elapsed() >= timeout {
            // The child may exit between try_wait and kill; either way it
            // is gone afterwards.
            let _ = child.kill();
            let status = child.wait().map_err(HarnessError::io(output))?;
            return Ok(Finished {
                status: status.code(),
                timed_out: true,
                duration: start.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How a start probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// The program was still running after the grace time (and was then
    /// killed): it starts on this host.
    Alive,
    /// It ended within the grace time.
    Exited {
        /// Its exit status (`None`: killed by a signal).
        status: Option<i32>,
        /// What it printed (stdout and stderr).
        output: String,
    },
}

/// Starts `cmd` as [`run_watched`] does and tells whether it is still
/// running after `grace`: an emulator that cannot start on this host (a
/// bad accelerator, an MSR the host refuses) ends at once with its reason.
pub fn probe_start(cmd: Command, output: &Path, grace: Duration) -> Result<Started, HarnessError> {
    let finished = run_watched(cmd, output, grace)?;
    Ok(if finished.timed_out {
        Started::Alive
    } else {
        Started::Exited {
            status: finished.status,
            output: read_console(output),
        }
    })
}

/// The lines of an emulator's log that say why it failed: those naming an
/// error, a failure or an assertion, at most `n`, else the first `n`
/// non-empty lines; joined with ` | `.
pub fn error_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            [
                "error",
                "fail",
                "panic",
                "assert",
                "cannot",
                "could not",
                "not supported",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .take(n)
        .collect();
    let chosen = if errors.is_empty() {
        lines.into_iter().take(n).collect()
    } else {
        errors
    };
    chosen.join(" | ")
}

/// Reads a console file written by an emulator (lossy: a guest may print
/// anything).
pub fn read_console(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default()
}

/// Whether `program` is on the PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_at_the_timeout_and_keeps_output() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; exec sleep 30"]);
        let f = run_watched(cmd, &out, Duration::from_millis(300)).unwrap();
        assert!(f.timed_out);
        assert!(f.duration < Duration::from_secs(5));
        assert_eq!(read_console(&out), "started\n");
        assert!(dir.path().join("command.txt").is_file());
    }

    #[test]
    fn a_start_probe_tells_alive_from_exited_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("probe.log");
        let mut alive = Command::new("sh");
        alive.args(["-c", "exec sleep 30"]);
        let grace = Duration::from_millis(300);
        assert_eq!(probe_start(alive, &out, grace).unwrap(), Started::Alive);
        let mut dead = Command::new("sh");
        dead.args([
            "-c",
            "echo 'emu: warning: something'; \
             echo 'emu: error: failed to set MSR 0x10a to 0x69' >&2; exit 1",
        ]);
        let Started::Exited { status, output } = probe_start(dead, &out, grace).unwrap() else {
            panic!("the failing program was taken as started");
        };
        assert_eq!(status, Some(1));
        assert_eq!(
            error_lines(&output, 3),
            "emu: error: failed to set MSR 0x10a to 0x69"
        );
        assert_eq!(error_lines("a\n\nb\nc\n", 2), "a | b");
    }

    #[test]
    fn reports_exit_status_and_spawn_failures() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 7"]);
        let f = run_watched(cmd, &out, Duration::from_secs(10)).unwrap();
        assert_eq!((f.status, f.timed_out), (Some(7), false));
        let e = run_watched(
            Command::new("/nonexistent/emu"),
            &out,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("cannot start `/nonexistent/emu`"),
            "{e}"
        );
    }
}
