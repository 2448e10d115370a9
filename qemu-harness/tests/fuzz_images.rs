//! Fuzz sessions on the real images (`cargo xtask build`): each test
//! skips, saying why, only when an image or the emulator is missing, and
//! otherwise asserts the exact outcome this host gives.

mod kvm_common;

use kvm_common::{images_dir, kvm_here};
use qemu_harness::fuzz::{
    BochsOptions, BochsSession, FuzzSession, KvmOptions, KvmSession, SessionError,
};
use qemu_harness::kvm::Kvm;
use qemu_harness::{GuestModule, RunSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The fuzz-feature image, where it was built (`OKERNEL_FUZZ_IMAGE`
/// overrides), else the normal one (the transport is the guest's), and
/// the guest; `None`, saying why, when missing.
fn images() -> Option<(PathBuf, PathBuf)> {
    let dir = images_dir();
    let fuzz = std::env::var_os("OKERNEL_FUZZ_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("okernel-fuzz.elf"));
    let image = if fuzz.is_file() {
        fuzz
    } else {
        dir.join("okernel.elf")
    };
    let guest = dir.join("guest.elf");
    for p in [&image, &guest] {
        if !p.is_file() {
            eprintln!(
                "skipped: {} is missing (build the images with `cargo xtask build`)",
                p.display()
            );
            return None;
        }
    }
    Some((image, guest))
}

fn spec(dir: &Path, name: &str, cmdline: &str, guest_cmdline: &str) -> Option<RunSpec> {
    let (image, guest) = images()?;
    Some(RunSpec {
        name: name.into(),
        image,
        guest: GuestModule::File(guest),
        cmdline: cmdline.into(),
        guest_cmdline: guest_cmdline.into(),
        timeout: Duration::from_secs(60),
        run_dir: dir.join(name),
        gdb: false,
    })
}

#[test]
fn kvm_session_reports_vmx_unavailable_without_nested_vmx() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(spec) = spec(
        dir.path(),
        "kvm-fuzz",
        "log=info",
        "scenario=fuzz transport=mailbox",
    ) else {
        return;
    };
    let opened = KvmSession::open(Kvm::new(), spec, KvmOptions::default());
    if qemu_harness::kvm_nested_vmx() {
        let mut s = opened.unwrap_or_else(|e| panic!("nested VMX here, yet: {e}"));
        s.run_case(b"").unwrap();
        return;
    }
    match opened {
        Err(SessionError::VmxUnavailable { backend, reason }) => {
            assert_eq!(backend, "kvm");
            assert!(!reason.is_empty(), "okernel names the reason");
            eprintln!("as expected on this host: VMX unavailable: {reason}");
        }
        Err(e) => panic!("expected VMX unavailable (no nested VMX here), got: {e}"),
        Ok(_) => panic!("expected VMX unavailable (no nested VMX here), got a ready session"),
    }
}

fn bochs_here() -> bool {
    let ok =
        qemu_harness::process::on_path("bochs") && qemu_harness::process::on_path("grub-mkrescue");
    if !ok {
        eprintln!("skipped: bochs or grub-mkrescue is not installed");
    }
    ok
}

/// Bochs connects COM2 to the session's listener at start; an image that
/// ends instead of serving cases is a boot error naming its result.
#[test]
fn bochs_connects_com2_and_a_run_that_ends_is_a_boot_error() {
    if !bochs_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(spec) = spec(dir.path(), "bochs-boot", "log=info", "scenario=boot") else {
        return;
    };
    let run_dir = spec.run_dir.clone();
    let e = BochsSession::open(spec, BochsOptions::default())
        .err()
        .expect("scenario=boot serves no cases");
    assert!(
        matches!(&e, SessionError::Boot { reason, .. }
            if reason.contains("the serial link closed before the ready byte")
                && reason.contains("the image reported pass")),
        "{e}"
    );
    let log = std::fs::read_to_string(run_dir.join("bochs.log")).unwrap();
    assert!(
        log.contains("com2 - inet client") && log.contains("mode: socket-client"),
        "Bochs' log shows the COM2 connection:\n{log}"
    );
    let rc = std::fs::read_to_string(run_dir.join("bochsrc")).unwrap();
    assert!(
        rc.contains("com2: enabled=1, mode=socket-client, dev=127.0.0.1:"),
        "{rc}"
    );
}
