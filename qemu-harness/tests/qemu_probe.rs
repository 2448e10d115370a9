//! The QEMU backend's probe against fake emulators: one that cannot start
//! on this host is *unavailable* with its own words, a known quirk gets
//! its work-around, and an emulator that starts but then misbehaves is
//! still a failure of the run.

use qemu_harness::qemu::{Accel, Qemu};
use qemu_harness::{Availability, Backend, Expect, GuestModule, RunSpec, Verdict};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes an executable shell script `name` with `body` into `dir`.
fn fake(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

const MSR_FAILURE: &str = "echo 'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69' >&2; \
     echo 'qemu-system-x86_64: ../target/i386/kvm/kvm.c:3001: kvm_buf_set_msrs: Assertion failed.' >&2; \
     exit 134";

#[test]
fn an_emulator_that_cannot_start_is_unavailable_in_its_own_words() {
    let dir = tempfile::tempdir().unwrap();
    let emu = fake(dir.path(), "qemu", MSR_FAILURE);
    let (_, a) = Qemu::new(Accel::Kvm)
        .with_program(&emu)
        .probe(&dir.path().join("probe"));
    let Availability::Unavailable(why) = a else {
        panic!("taken as available: {a:?}");
    };
    assert!(why.contains("failed to set MSR 0x10a to 0x69"), "{why}");
    assert!(
        why.contains("work-around -cpu host,-arch-capabilities"),
        "the work-around was tried and named: {why}"
    );

    let emu = fake(
        dir.path(),
        "nokvm",
        "echo 'Could not access KVM kernel module: No such file or directory' >&2; \
         echo 'qemu-system-x86_64: failed to initialize kvm: No such file or directory' >&2; exit 1",
    );
    let (_, a) = Qemu::new(Accel::Kvm)
        .with_program(&emu)
        .probe(&dir.path().join("probe2"));
    let why = a.evidence();
    assert!(!a.is_available());
    assert!(why.contains("failed to initialize kvm"), "{why}");
    assert!(!why.contains("work-around"), "no quirk matches: {why}");

    let (_, a) = Qemu::new(Accel::Tcg)
        .with_program(dir.path().join("absent"))
        .probe(&dir.path().join("probe3"));
    assert!(
        a.evidence().contains("cannot start"),
        "a missing program is named: {a:?}"
    );
}

#[test]
fn the_arch_capabilities_quirk_gets_its_work_around_and_it_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    // Fails like QEMU 7.2 on an AMD host's paravirtual KVM under plain
    // `-cpu host`; starts (runs its firmware) otherwise.
    let emu = fake(
        dir.path(),
        "qemu",
        &format!(
            "case \" $* \" in *' -cpu host '*) {MSR_FAILURE};; esac\n\
             case \" $* \" in *' -kernel '*) exit 3;; esac\nexec sleep 30"
        ),
    );
    let (qemu, a) = Qemu::new(Accel::Kvm)
        .with_program(&emu)
        .probe(&dir.path().join("probe"));
    let Availability::Available(evidence) = &a else {
        panic!("work-around not applied: {a:?}");
    };
    assert_eq!(qemu.cpu(), "host,-arch-capabilities");
    assert!(evidence.contains("MSR 0x10a"), "{evidence}");
    let spec = spec(dir.path(), "quirk");
    let line = format!("{:?}", qemu.command(&spec));
    assert!(
        line.contains("\"-cpu\" \"host,-arch-capabilities\""),
        "{line}"
    );
    // The run records its exact command line in the run directory.
    let report = qemu.run(&spec).unwrap();
    let recorded = std::fs::read_to_string(spec.run_dir.join("command.txt")).unwrap();
    assert!(recorded.contains("host,-arch-capabilities"), "{recorded}");
    // This fake exits 3 under -kernel: started, then misbehaved.
    assert!(matches!(
        Verdict::judge(&report, &Expect::pass()),
        Verdict::Unexpected(_)
    ));
}

#[test]
fn an_emulator_that_starts_and_then_misbehaves_still_fails() {
    let dir = tempfile::tempdir().unwrap();
    let emu = fake(
        dir.path(),
        "qemu",
        "case \" $* \" in *' -kernel '*) \
           echo 'qemu-system-x86_64: -kernel: error loading the image' >&2; exit 1;; \
         esac\nexec sleep 30",
    );
    let (qemu, a) = Qemu::new(Accel::Tcg)
        .with_program(&emu)
        .probe(&dir.path().join("probe"));
    assert!(a.is_available(), "{a:?}");
    let spec = spec(dir.path(), "misbehaves");
    let report = qemu.run(&spec).unwrap();
    let summary = report.summary();
    assert!(
        summary.contains("the emulator failed") && summary.contains("error loading the image"),
        "the summary gives QEMU's words, not `no result reported`: {summary}"
    );
    assert!(matches!(
        Verdict::judge(&report, &Expect::pass()),
        Verdict::Unexpected(_)
    ));

    // Silent and successful is no result either.
    let emu = fake(
        dir.path(),
        "silent",
        "case \" $* \" in *' -kernel '*) exit 0;; esac\nexec sleep 30",
    );
    let (qemu, _) = Qemu::new(Accel::Tcg)
        .with_program(&emu)
        .probe(&dir.path().join("probe2"));
    let report = qemu.run(&spec).unwrap();
    assert!(
        report.summary().starts_with("no result reported"),
        "{}",
        report.summary()
    );
    assert!(matches!(
        Verdict::judge(&report, &Expect::pass()),
        Verdict::Unexpected(_)
    ));
}

fn spec(dir: &Path, name: &str) -> RunSpec {
    let image = dir.join("okernel.elf");
    std::fs::write(&image, b"not really").unwrap();
    RunSpec {
        name: name.into(),
        image,
        guest: GuestModule::None,
        cmdline: "log=info".into(),
        guest_cmdline: String::new(),
        timeout: Duration::from_secs(10),
        run_dir: dir.join("runs").join(name),
        gdb: false,
    }
}
