//! What the KVM tests share: run specs for the real image and for tiny
//! PVH images built in the test, and the KVM precondition.

#![allow(dead_code)] // each test file uses a subset

use qemu_harness::kvm::flat::pvh_elf;
use qemu_harness::{GuestModule, RunSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where tiny images are loaded (1 MiB, like the real image).
pub const LOAD: u32 = 0x10_0000;

/// The images `cargo xtask build` makes, in the workspace's target dir.
pub fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu-harness lies in the workspace")
        .join("target/okernel")
}

/// The real image and guest; panics with what to do when missing.
pub fn real_images() -> (PathBuf, PathBuf) {
    let dir = images_dir();
    let (image, guest) = (dir.join("okernel.elf"), dir.join("guest.elf"));
    for p in [&image, &guest] {
        assert!(
            p.is_file(),
            "{} is missing: build the images first with `cargo xtask build` \
             (`cargo xtask test` and `cargo xtask ci` do)",
            p.display()
        );
    }
    (image, guest)
}

/// Whether KVM is usable here; prints why not.
pub fn kvm_here() -> bool {
    match qemu_harness::kvm_problem() {
        None => true,
        Some(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

/// A spec that boots the real image with `guest_cmdline`.
pub fn real_spec(dir: &Path, name: &str, guest_cmdline: &str, timeout: Duration) -> RunSpec {
    let (image, guest) = real_images();
    RunSpec {
        name: name.into(),
        image,
        guest: GuestModule::File(guest),
        cmdline: "log=info".into(),
        guest_cmdline: guest_cmdline.into(),
        timeout,
        run_dir: dir.join(name),
        gdb: false,
    }
}

/// A spec that boots `image_bytes` (written to `dir`) with no module.
pub fn file_spec(dir: &Path, name: &str, image_bytes: &[u8], timeout: Duration) -> RunSpec {
    let image = dir.join(format!("{name}.elf"));
    std::fs::write(&image, image_bytes).unwrap();
    RunSpec {
        name: name.into(),
        image,
        guest: GuestModule::None,
        cmdline: String::new(),
        guest_cmdline: String::new(),
        timeout,
        run_dir: dir.join(name),
        gdb: false,
    }
}

/// A spec that boots `code` loaded and entered at [`LOAD`].
pub fn code_spec(dir: &Path, name: &str, code: &[u8], timeout: Duration) -> RunSpec {
    file_spec(dir, name, &pvh_elf(code, LOAD), timeout)
}
