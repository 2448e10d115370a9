//! The Debian packages each step needs: checked before use, installed when
//! running as root with apt (saying what and why), otherwise the exact
//! command is printed and the step stops.

use std::process::Command;

/// The packages a backend or step needs, with the reason.
pub struct Need {
    /// Why they are needed.
    pub why: &'static str,
    /// Debian package names.
    pub packages: &'static [&'static str],
}

/// QEMU direct boot.
pub const QEMU: Need = Need {
    why: "QEMU runs the image with -kernel (PVH)",
    packages: &["qemu-system-x86"],
};

/// Bochs from a GRUB ISO.
pub const BOCHS: Need = Need {
    why: "Bochs emulates VMX and boots the image from a GRUB ISO",
    packages: &[
        "bochs",
        "bochs-term",
        "bochsbios",
        "vgabios",
        "grub-pc-bin",
        "grub-common",
        "xorriso",
        "mtools",
    ],
};

/// The multiboot2 ELF32 test guest.
pub const BINUTILS: Need = Need {
    why: "as/ld assemble the 32-bit multiboot test guest; objcopy strips the demo guest module",
    packages: &["binutils"],
};

/// The host fuzzers (libFuzzer's C++ runtime, built by `cc`).
pub const FUZZER: Need = Need {
    why: "the host fuzzers link libFuzzer's C++ runtime",
    packages: &["g++"],
};

/// The Linux client module (`make` and the kernel's own compiler).
pub const MODULE: Need = Need {
    why: "the Linux client module builds with kbuild and Debian's kernel compiler",
    packages: &["make", "gcc-12"],
};

/// Every need, for `cargo xtask doctor`.
pub const ALL: [&Need; 5] = [&BOCHS, &QEMU, &BINUTILS, &FUZZER, &MODULE];

/// Bootable ISO only.
pub const ISO: Need = Need {
    why: "grub-mkrescue builds the GRUB ISO",
    packages: &["grub-pc-bin", "grub-common", "xorriso", "mtools"],
};

/// Whether the Debian package `pkg` is installed.
pub fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Whether xtask runs as root (and so may install packages with apt).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Makes sure every package of `needs` is installed.
pub fn ensure(needs: &[&Need]) -> Result<(), String> {
    if !crate::on_path("dpkg-query") {
        // Not Debian: we cannot check packages; the tools' own errors will
        // name what is missing.
        return Ok(());
    }
    let mut missing: Vec<&str> = Vec::new();
    let mut why: Vec<&str> = Vec::new();
    for need in needs {
        let m: Vec<&str> = need
            .packages
            .iter()
            .copied()
            .filter(|p| !installed(p))
            .collect();
        if !m.is_empty() {
            why.push(need.why);
            missing.extend(
                m.into_iter()
                    .filter(|p| !missing.contains(p))
                    .collect::<Vec<_>>(),
            );
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    let command = format!("apt-get update && apt-get install -y --no-install-recommends {list}");
    if !is_root() || !crate::on_path("apt-get") {
        return Err(format!(
            "missing Debian packages: {list}\n  needed because: {}\n  install them with: sudo sh -c '{command}'",
            why.join("; ")
        ));
    }
    eprintln!("xtask: installing {list} ({})", why.join("; "));
    let ok = Command::new("sh")
        .args(["-c", &format!("{command} >/tmp/xtask-apt.log 2>&1")])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(format!("`{command}` failed; see /tmp/xtask-apt.log"))
    }
}
