//! Debian's kernel and busybox from the archive, with apt: the current
//! `linux-image-<abi>-amd64` that `linux-image-amd64` depends on, fetched
//! with `apt-get download` (apt prints its progress) and unpacked with
//! `dpkg-deb` without installing anything. Downloads are cached under
//! `target/linux/debs/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The kernel package `linux-image-amd64` depends on, from `apt-cache
/// depends` output.
pub fn kernel_package(depends: &str) -> Option<String> {
    depends.lines().find_map(|l| {
        let name = l.trim().strip_prefix("Depends: ")?;
        (name.starts_with("linux-image-") && name.ends_with("-amd64")).then(|| name.to_string())
    })
}

fn apt_cache_depends() -> Result<String, String> {
    let out = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .map_err(|e| format!("cannot run apt-cache: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The current kernel package; runs `apt-get update` once (as root) when
/// apt's lists do not know `linux-image-amd64` yet.
pub fn current_kernel() -> Result<String, String> {
    if let Some(p) = kernel_package(&apt_cache_depends()?) {
        return Ok(p);
    }
    if !crate::deps::is_root() {
        return Err(
            "apt's package lists do not know linux-image-amd64: run `sudo apt-get update`".into(),
        );
    }
    eprintln!("xtask: apt's lists do not know linux-image-amd64; running apt-get update");
    run(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )?;
    kernel_package(&apt_cache_depends()?).ok_or_else(|| {
        "apt-cache depends linux-image-amd64 names no linux-image-*-amd64 package".into()
    })
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{what}` failed ({status})"))
    }
}

/// The `.deb` of `package` in `dir`, downloaded there with apt unless
/// already present.
pub fn download(package: &str, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Some(deb) = find_deb(package, dir) {
        return Ok(deb);
    }
    eprintln!(
        "xtask: downloading {package} with apt-get download (cached in {})",
        dir.display()
    );
    run(
        Command::new("apt-get")
            .current_dir(dir)
            .args(["-o", "APT::Sandbox::User=root", "download", package])
            .stdin(Stdio::null()),
        &format!("apt-get download {package}"),
    )?;
    find_deb(package, dir).ok_or_else(|| {
        format!(
            "apt-get download {package} left no .deb in {}",
            dir.display()
        )
    })
}

fn find_deb(package: &str, dir: &Path) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
}

/// A `.deb`'s `Version` field.
pub fn deb_version(deb: &Path) -> Result<String, String> {
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg("Version")
        .output()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    if !out.status.success() {
        return Err(format!("dpkg-deb -f {} Version failed", deb.display()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Unpacks the members of `deb` under `member` (e.g. `./boot`) into
/// `into`, without installing the package.
pub fn extract(deb: &Path, member: &str, into: &Path) -> Result<(), String> {
    std::fs::create_dir_all(into).map_err(|e| format!("{}: {e}", into.display()))?;
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' '{member}'",
        deb.display(),
        into.display()
    );
    run(Command::new("sh").args(["-c", &script]), &script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_kernel_package_in_apt_cache_output() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            kernel_package(out).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(kernel_package("linux-image-amd64\n"), None);
        assert_eq!(
            kernel_package("  Depends: linux-image-6.1.0-57-cloud-arm64\n"),
            None
        );
    }
}
