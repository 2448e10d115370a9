//! The KVM backend's failure paths: each ends in a clear error or a
//! defined report, never a hang or a panic.

mod kvm_common;

use kvm_common::{LOAD, code_spec, file_spec, kvm_here, real_images};
use okernel_abi::result::Outcome;
use qemu_harness::kvm::flat::{code, pvh_elf};
use qemu_harness::kvm::{Kvm, KvmError};
use qemu_harness::{Backend, Expect, GuestModule, HarnessError, Verdict, VmxSupport};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const SHORT: Duration = Duration::from_secs(5);

fn kvm_error(r: Result<qemu_harness::RunReport, HarnessError>) -> KvmError {
    match r {
        Err(HarnessError::Kvm(e)) => e,
        Err(e) => panic!("expected a KVM error, got: {e}"),
        Ok(r) => panic!("expected a KVM error, got a report: {}", r.summary()),
    }
}

#[test]
fn missing_image_and_module_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = code_spec(dir.path(), "missing", code::SPIN, SHORT);
    spec.image = dir.path().join("nope.elf");
    let e = Kvm::new().run(&spec).unwrap_err();
    assert!(
        matches!(
            e,
            HarnessError::Missing {
                what: "okernel image",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("cargo xtask build"), "{e}");

    let mut spec = code_spec(dir.path(), "no-module", code::SPIN, SHORT);
    spec.guest = GuestModule::File(dir.path().join("nope-guest.elf"));
    let e = Kvm::new().run(&spec).unwrap_err();
    assert!(
        matches!(
            e,
            HarnessError::Missing {
                what: "guest module",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn bad_elf_files_are_refused_with_the_reason() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut no_note = pvh_elf(code::SPIN, LOAD);
    no_note[64 + 56] = 6; // the note segment becomes PT_PHDR
    let mut arm = pvh_elf(code::SPIN, LOAD);
    arm[18] = 183; // EM_AARCH64
    let mut elf32 = pvh_elf(code::SPIN, LOAD);
    elf32[4] = 1;
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "not-elf",
            b"MZ this is not an ELF file".to_vec(),
            "not a valid ELF file",
        ),
        ("elf32", elf32, "ELF32"),
        ("no-note", no_note, "no PVH entry note"),
        ("arm", arm, "not x86-64"),
        ("too-high", pvh_elf(code::SPIN, 0x4000_0000), "does not fit"),
        ("in-boot-info", pvh_elf(code::SPIN, 0x6000), "does not fit"),
    ];
    for (name, bytes, want) in cases {
        let spec = file_spec(dir.path(), name, &bytes, SHORT);
        let e = kvm_error(Kvm::new().run(&spec));
        assert!(matches!(e, KvmError::Image { .. }), "{name}: {e}");
        let s = e.to_string();
        assert!(
            s.contains(want) && s.contains(&format!("{name}.elf")),
            "{name}: {s}"
        );
    }
}

#[test]
fn the_xtask_bad_modules_are_refused_as_images() {
    if !kvm_here() {
        return;
    }
    // `cargo xtask build` also makes a corrupt file and an ELF32 copy of
    // the guest; booted as the image they must be refused by the harness.
    let (image, _) = real_images();
    let dir = tempfile::tempdir().unwrap();
    let built = image.parent().unwrap();
    for (file, want) in [("corrupt.bin", "not a valid ELF"), ("elf32.bin", "ELF32")] {
        let path = built.join(file);
        if !path.is_file() {
            eprintln!("{} not built; skipped", path.display());
            continue;
        }
        let mut spec = code_spec(dir.path(), file, code::SPIN, SHORT);
        spec.image = path;
        let e = kvm_error(Kvm::new().run(&spec));
        assert!(e.to_string().contains(want), "{file}: {e}");
    }
}

#[test]
fn a_tight_loop_and_a_halt_with_interrupts_off_end_at_the_timeout() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_millis(400);
    for (name, c, state) in [
        ("spin", code::SPIN, "running"),
        ("halt", code::HALT, "halted with interrupts disabled"),
    ] {
        let spec = code_spec(dir.path(), name, c, timeout);
        let r = Kvm::new().run(&spec).unwrap();
        assert_eq!(Verdict::judge(&r, &Expect::Timeout), Verdict::Ok, "{name}");
        assert!(r.duration >= timeout, "{name}: {:?}", r.duration);
        assert!(
            r.duration < timeout + Duration::from_secs(2),
            "{name}: {:?}",
            r.duration
        );
        assert!(
            r.console.contains(&format!("the vCPU was {state} at RIP")),
            "{name}: {}",
            r.console
        );
    }
}

#[test]
fn a_triple_fault_is_reported_with_the_guest_rip() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (c, div) = code::triple_fault(LOAD);
    let spec = code_spec(dir.path(), "triple", &c, SHORT);
    let start = std::time::Instant::now();
    let e = kvm_error(Kvm::new().run(&spec));
    assert!(
        start.elapsed() < SHORT,
        "ended by the fault, not the watchdog"
    );
    match &e {
        KvmError::TripleFault { rip, cr0, .. } => {
            assert_eq!(*rip, u64::from(LOAD) + div as u64, "{e}");
            assert_eq!(cr0 & 1, 1, "still in protected mode");
        }
        other => panic!("expected a triple fault, got: {other}"),
    }
    assert!(
        e.to_string()
            .contains("triple fault (KVM_EXIT_SHUTDOWN) at RIP 0x100009"),
        "{e}"
    );
}

#[test]
fn console_exit_port_and_shutdown_port_end_runs() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = code::print(0x3f8, b"hello\r\nOKERNEL-RESULT: fail: on purpose\r\n");
    c.extend(code::exit_with(Outcome::Fail.code()));
    let r = Kvm::new()
        .run(&code_spec(dir.path(), "exit", &c, SHORT))
        .unwrap();
    assert_eq!(
        (r.port, r.outcome()),
        (Some(Outcome::Fail), Some(Outcome::Fail))
    );
    assert_eq!(r.detail(), "on purpose");
    assert!(
        r.console.contains("\nhello\nOKERNEL-RESULT"),
        "{:?}",
        r.console
    );

    let mut c = code::print(0x3f8, b"OKERNEL-RESULT: pass\n");
    c.extend(code::print(0x8900, b"Shutdown"));
    c.extend(code::SPIN);
    let r = Kvm::new()
        .run(&code_spec(dir.path(), "shutdown", &c, SHORT))
        .unwrap();
    assert_eq!(
        (r.port, r.outcome(), r.timed_out),
        (None, Some(Outcome::Pass), false)
    );

    let r = Kvm::new()
        .run(&code_spec(
            dir.path(),
            "bad-byte",
            &code::exit_with(0x77),
            SHORT,
        ))
        .unwrap();
    assert_eq!(r.outcome(), None);
    assert!(
        r.console.contains("unknown outcome byte 0x77"),
        "{}",
        r.console
    );
}

#[test]
fn a_missing_kvm_device_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let kvm = Kvm::with_device(dir.path().join("no-kvm"));
    assert_eq!(kvm.vmx(), VmxSupport::Unavailable);
    let e = kvm_error(kvm.run(&code_spec(dir.path(), "no-dev", code::SPIN, SHORT)));
    assert!(matches!(e, KvmError::NoDevice { .. }), "{e}");
    let s = HarnessError::Kvm(e).to_string();
    assert!(
        s.contains("no-kvm does not exist (no KVM on this host"),
        "{s}"
    );
}

#[test]
fn an_inaccessible_kvm_device_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // The unprivileged thread below must still reach the image and the
    // run directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let node = dir.path().join("kvm-node");
    std::fs::write(&node, b"").unwrap();
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o000)).unwrap();
    let spec = code_spec(dir.path(), "no-perm", code::SPIN, SHORT);
    // Root opens anything: drop the file-system capabilities of this one
    // thread (setfsuid to an unprivileged user clears CAP_DAC_OVERRIDE in
    // its effective set), so the open meets the file's permissions.
    let e = std::thread::spawn(move || {
        // SAFETY: setfsuid changes only the calling thread's file-system
        // identity (the raw syscall is per thread); this thread does
        // nothing else and ends here.
        unsafe { libc::setfsuid(65534) };
        kvm_error(Kvm::with_device(&node).run(&spec))
    })
    .join()
    .unwrap();
    assert!(matches!(e, KvmError::NoPermission { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("is not accessible (add this user to the `kvm` group)"),
        "{e}"
    );
}

#[test]
fn a_device_that_is_not_kvm_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = kvm_error(Kvm::with_device("/dev/null").run(&code_spec(
        dir.path(),
        "null",
        code::SPIN,
        SHORT,
    )));
    assert!(matches!(e, KvmError::NotKvm { .. }), "{e}");
    assert!(
        e.to_string().contains("/dev/null is not a KVM device"),
        "{e}"
    );
}
