//! Building the images and the LibAFL driver, running it, and reading its
//! summary line.

use crate::images;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use qemu_harness::fuzz::summary::Summary;

/// Parses a summary line (`None` for any other line).
pub(super) fn summary_of(line: &str) -> Option<Result<Summary, String>> {
    Summary::parse(line)
}

/// The built pieces a campaign needs.
pub(super) struct Built {
    pub(super) driver: PathBuf,
    pub(super) guest: PathBuf,
}

/// Builds the guest (with the normal images), the driver and the fuzz
/// images for `variants` (`None`: the clean fuzz image).
pub(super) fn build(variants: &[Option<&str>]) -> Result<(Built, Vec<PathBuf>), String> {
    crate::deps::ensure(&[&crate::deps::BOCHS])?;
    let normal = images::build()?;
    let mut paths = Vec::new();
    for v in variants {
        paths.push(images::build_fuzz_image(*v)?);
    }
    let driver = build_driver()?;
    Ok((
        Built {
            driver,
            guest: normal.guest,
        },
        paths,
    ))
}

/// The driver's own target directory: `$OKERNEL_VMFUZZ_TARGET_DIR`, else
/// `vmfuzz/` under `$CARGO_TARGET_DIR`, else `target/vmfuzz-build`.
pub(super) fn driver_target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("OKERNEL_VMFUZZ_TARGET_DIR") {
        return PathBuf::from(d);
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d).join("vmfuzz"),
        None => images::root().join("target/vmfuzz-build"),
    }
}

/// Builds `okernel-vmfuzz` (release, its own lock file and target
/// directory) and returns the binary.
pub(super) fn build_driver() -> Result<PathBuf, String> {
    let dir = driver_target_dir();
    eprintln!(
        "xtask: building the VM fuzz driver (vmfuzz/, LibAFL) in {}",
        dir.display()
    );
    if !vmfuzz_cargo(&["build", "--release", "--manifest-path", "vmfuzz/Cargo.toml"])? {
        return Err("building the VM fuzz driver failed (see the compiler output above)".into());
    }
    Ok(dir.join("release/okernel-vmfuzz"))
}

/// Runs `cargo ARGS` on the driver's crate in its own target directory,
/// without the workspace's RUSTFLAGS; returns whether it succeeded.
pub(super) fn vmfuzz_cargo(args: &[&str]) -> Result<bool, String> {
    Command::new(env!("CARGO"))
        .current_dir(images::root())
        .args(args)
        .env("CARGO_TARGET_DIR", driver_target_dir())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .map(|s| s.success())
        .map_err(|e| format!("cannot run cargo: {e}"))
}

/// One run of the driver.
pub(super) struct Run {
    pub(super) summary: Summary,
    pub(super) out: PathBuf,
}

/// Runs the driver with `args` plus the image, guest and output
/// directory; its progress (stderr) passes through, its summary is
/// parsed.
pub(super) fn drive(
    built: &Built,
    image: &Path,
    name: &str,
    args: &[String],
) -> Result<Run, String> {
    let out = images::root().join("target/vmfuzz").join(name);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut cmd = Command::new(&built.driver);
    cmd.arg("--image")
        .arg(image)
        .arg("--guest")
        .arg(&built.guest)
        .arg("--out")
        .arg(&out)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!(
        "xtask: {} {}",
        built.driver.display(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", built.driver.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut summary = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading the driver's output: {e}"))?;
        println!("{line}");
        if let Some(s) = summary_of(&line) {
            summary = Some(s?);
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the driver: {e}"))?;
    let summary = summary.ok_or_else(|| {
        format!("the VM fuzz driver ended ({status}) without a summary line (see above)")
    })?;
    Ok(Run { summary, out })
}

/// Keeps a clean run's findings where no later run deletes them:
/// `target/vmfuzz/findings/<name>-<unix time>/`.
pub(super) fn keep_findings(run: &Run, name: &str) -> Option<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let to = images::root()
        .join("target/vmfuzz/findings")
        .join(format!("{name}-{stamp}"));
    std::fs::create_dir_all(&to).ok()?;
    for e in std::fs::read_dir(run.out.join("crashes")).ok()?.flatten() {
        let _ = std::fs::copy(e.path(), to.join(e.file_name()));
    }
    Some(to)
}

/// A one-line account of a run's first finding.
pub(super) fn describe(s: &Summary) -> String {
    format!(
        "{} after {:.1} s ({} execs in the run): {}",
        s.first_verdict.as_deref().unwrap_or("?"),
        s.first_objective_s.unwrap_or(0.0),
        s.execs,
        s.first_message.as_deref().unwrap_or("")
    )
}
