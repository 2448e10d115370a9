//! Building the bootable images: the okernel loader image, the demo
//! guest kernel and the conformance kernel, for `x86_64-unknown-none`,
//! copied to `target/okernel/`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target the bare-metal crates build for.
pub const TARGET: &str = "x86_64-unknown-none";

/// The built images.
pub struct Images {
    /// The okernel image (loader ELF with multiboot2 header + PVH note).
    pub okernel: PathBuf,
    /// The demo guest kernel.
    pub guest: PathBuf,
    /// The multiboot2 ELF32 test guest (`guest/mb32`).
    pub guest32: PathBuf,
    /// The conformance kernel (`conformance/`, issue 18).
    pub conformance: PathBuf,
    /// Where they and derived files live.
    pub dir: PathBuf,
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Builds both images (release profile: Bochs runs are 5x faster).
pub fn build() -> Result<Images, String> {
    let root = root();
    eprintln!("xtask: building okernel and the demo guest for {TARGET}");
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "--release", "--target", TARGET])
        .args([
            "-p",
            "loader",
            "-p",
            "guest",
            "-p",
            "conformance",
            "--features",
            "loader/image,guest/image,conformance/image",
        ])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building the images failed (see the compiler output above)".into());
    }
    let built = built_dir();
    let dir = root.join("target/okernel");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let images = Images {
        okernel: dir.join("okernel.elf"),
        guest: dir.join("guest.elf"),
        guest32: dir.join("guest32.elf"),
        conformance: dir.join("conformance.elf"),
        dir,
    };
    for (from, to) in [
        ("okernel-loader", &images.okernel),
        ("okernel-conformance", &images.conformance),
    ] {
        install(&built.join(from), to)?;
    }
    install_guest_module(&built.join("okernel-guest"), &images.guest)?;
    build_guest32(&root, &images)?;
    eprintln!(
        "xtask: built {}, {} and {}",
        images.okernel.display(),
        images.guest.display(),
        images.guest32.display()
    );
    Ok(images)
}

/// Where cargo puts the release binaries for [`TARGET`]: cargo honours
/// CARGO_TARGET_DIR, so must we when picking up its output.
fn built_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join(TARGET)
        .join("release")
}

/// Builds a fuzz image: the loader with `fuzz` (okernel's coverage map
/// and oracle calls) and, for the planted-defect proof, one deliberate
/// defect (`planted-unlock`, ...), installed as
/// `target/okernel/okernel-fuzz.elf` or `okernel-fuzz-<defect>.elf`.
/// Each variant has a path of its own; cargo keeps each feature set's
/// objects, so switching between variants only relinks.
pub fn build_fuzz_image(planted: Option<&str>) -> Result<PathBuf, String> {
    let mut features = "loader/image,loader/fuzz".to_string();
    if let Some(d) = planted {
        features.push_str(",loader/");
        features.push_str(d);
    }
    let name = match planted {
        Some(d) => format!("okernel-fuzz-{d}.elf"),
        None => "okernel-fuzz.elf".to_string(),
    };
    build_loader("the fuzz image", &features, &name)
}

/// Builds the loader with one deliberate defect of a platform row's
/// negative control (`planted-no-shootdown`, `e2e::platform`), installed
/// as `target/okernel/okernel-<defect>.elf`.
pub fn build_planted_image(defect: &str) -> Result<PathBuf, String> {
    let features = format!("loader/image,loader/{defect}");
    build_loader(
        "the planted-defect image",
        &features,
        &format!("okernel-{defect}.elf"),
    )
}

/// Builds the loader with `features` and installs it as
/// `target/okernel/<name>`.
fn build_loader(what: &str, features: &str, name: &str) -> Result<PathBuf, String> {
    let root = root();
    eprintln!("xtask: building {what} ({features})");
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "--release", "--target", TARGET, "-p", "loader"])
        .args(["--features", features])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building {what} ({features}) failed (see the compiler output above)"
        ));
    }
    let dir = root.join("target/okernel");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let to = dir.join(name);
    install(&built_dir().join("okernel-loader"), &to)?;
    Ok(to)
}

/// Assembles and links the multiboot2 ELF32 test guest with binutils
/// (stable Rust has no bare-metal 32-bit x86 target).
fn build_guest32(root: &Path, images: &Images) -> Result<(), String> {
    crate::deps::ensure(&[&crate::deps::BINUTILS])?;
    let src = root.join("guest/mb32");
    let obj = images.dir.join("guest32.o");
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    run(Command::new("as")
        .arg("--32")
        .arg(src.join("mb32.S"))
        .arg("-o")
        .arg(&obj))?;
    run(Command::new("ld")
        .args(["-m", "elf_i386", "--no-warn-rwx-segments", "-T"])
        .arg(src.join("link.ld"))
        .arg(&obj)
        .arg("-o")
        .arg(images.guest32.with_extension("tmp")))?;
    std::fs::rename(images.guest32.with_extension("tmp"), &images.guest32)
        .map_err(|e| format!("installing {}: {e}", images.guest32.display()))
}

/// Copies `from` to `to` atomically (a copy beside `to`, then a rename), so
/// a run that reads `to` meanwhile never sees a half-written image.
/// Installs the demo guest without its debug sections (`objcopy
/// --strip-debug`; symbols kept): GRUB loads it whole as a module, below
/// the guest's own load address (16 MiB), and with its 3.4 MiB of DWARF
/// the module came within a few KiB of it — the fuzz image, a little
/// larger, then failed every boot with `guest segment 0 ... would
/// overwrite the guest module`. The build directory keeps the
/// unstripped file for a debugger.
fn install_guest_module(from: &Path, to: &Path) -> Result<(), String> {
    crate::deps::ensure(&[&crate::deps::BINUTILS])?;
    let tmp = to.with_extension("tmp");
    let out = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(from)
        .arg(&tmp)
        .output()
        .map_err(|e| format!("cannot run objcopy: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "objcopy --strip-debug {}: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::rename(&tmp, to).map_err(|e| format!("installing {}: {e}", to.display()))
}

fn install(from: &Path, to: &Path) -> Result<(), String> {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).map_err(|e| format!("copying {}: {e}", from.display()))?;
    std::fs::rename(&tmp, to).map_err(|e| format!("installing {}: {e}", to.display()))
}
