//! The KVM backend boots the real okernel image (`cargo xtask build`
//! makes it) and reports the image's own outcome, in the mode this host
//! allows.

mod kvm_common;

use kvm_common::{kvm_here, real_spec};
use okernel_abi::result::Outcome;
use qemu_harness::kvm::Kvm;
use qemu_harness::{Backend, Expect, Verdict, VmxSupport, kvm_nested_vmx};
use std::time::Duration;

/// The console line the loader prints just before okernel's VMX checks.
const VMX_CHECK_STARTS: &str = "starting okernel";

#[test]
fn boot_scenario_reports_the_images_outcome_and_the_mode() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = real_spec(dir.path(), "boot", "scenario=boot", Duration::from_secs(20));
    let kvm = Kvm::new();
    let r = kvm.run(&spec).unwrap();
    let nested = kvm_nested_vmx();
    assert_eq!(
        kvm.vmx() == VmxSupport::Available,
        nested,
        "vmx() must follow KVM's nested VMX"
    );

    // The outcome is defined, and the marker and the exit port agree.
    let (marker, _) = r
        .marker
        .clone()
        .expect("the image printed no result marker");
    assert_eq!(r.port, Some(marker), "{}", r.console);
    assert!(
        matches!(marker, Outcome::Pass | Outcome::VmxUnavailable),
        "{}: {}",
        r.summary(),
        r.console
    );
    assert!(!r.timed_out);

    // Every report names its mode on its first line.
    let first = r.console.lines().next().unwrap();
    let want = if nested { "nested VMX" } else { "no VMX" };
    assert!(first.starts_with(&format!("[kvm] mode: {want}")), "{first}");

    // Without nested VMX, once okernel's checks run they must refuse.
    if r.console.contains(VMX_CHECK_STARTS) {
        let want = if nested {
            Expect::pass()
        } else {
            Expect::Outcome(Outcome::VmxUnavailable, "CPUID.1:ECX.VMX=0".into())
        };
        assert_eq!(Verdict::judge(&r, &want), Verdict::Ok, "{}", r.console);
    }

    // The run directory has what the docs promise.
    for f in ["console.log", "debugcon.log", "exits.txt", "command.txt"] {
        assert!(spec.run_dir.join(f).is_file(), "{f} missing");
    }
    let log = std::fs::read_to_string(spec.run_dir.join("console.log")).unwrap();
    assert_eq!(log, r.console);
    let cmd = std::fs::read_to_string(spec.run_dir.join("command.txt")).unwrap();
    assert!(cmd.contains("cmdline: log=info -- scenario=boot"), "{cmd}");
    let debugcon = std::fs::read_to_string(spec.run_dir.join("debugcon.log")).unwrap();
    assert!(debugcon.contains("OKERNEL-RESULT: "), "port 0xE9 copy");
}

#[test]
fn boot_takes_well_under_a_second() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kvm = Kvm::new();
    let mut best = Duration::MAX;
    for i in 0..3 {
        let spec = real_spec(
            dir.path(),
            &format!("boot-{i}"),
            "scenario=boot",
            Duration::from_secs(20),
        );
        let r = kvm.run(&spec).unwrap();
        assert!(r.outcome().is_some(), "{}", r.summary());
        best = best.min(r.duration);
    }
    eprintln!(
        "kvm boot (VM creation, loading, run to the outcome): best of 3 {:.1} ms",
        best.as_secs_f64() * 1e3
    );
    assert!(best < Duration::from_secs(1), "{best:?}");
}

#[test]
fn hang_scenario_times_out_where_the_guest_runs() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_secs(2);
    let spec = real_spec(dir.path(), "hang", "scenario=hang", timeout);
    let r = Kvm::new().run(&spec).unwrap();
    if r.outcome() == Some(Outcome::VmxUnavailable) {
        // Without VMX okernel stops before the guest runs.
        assert!(!kvm_nested_vmx(), "{}", r.console);
        return;
    }
    assert_eq!(
        Verdict::judge(&r, &Expect::Timeout),
        Verdict::Ok,
        "{}",
        r.console
    );
    assert!(r.duration >= timeout && r.duration < timeout * 3);
}

#[test]
fn panic_scenario_or_vmx_unavailable() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = real_spec(
        dir.path(),
        "panic",
        "scenario=panic",
        Duration::from_secs(20),
    );
    let r = Kvm::new().run(&spec).unwrap();
    let want = if r.console.contains(VMX_CHECK_STARTS) && !kvm_nested_vmx() {
        Outcome::VmxUnavailable
    } else {
        Outcome::Panic
    };
    assert_eq!(r.outcome(), Some(want), "{}", r.console);
}

#[test]
fn coalesced_console_writes_keep_the_console_and_save_exits() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exits = |r: &qemu_harness::RunReport| -> u64 {
        let text = std::fs::read_to_string(r.run_dir.join("exits.txt")).unwrap();
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| *k == "io-out" || *k == "io-in")
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .sum()
    };
    let mut runs = Vec::new();
    for on in [false, true] {
        let name = format!("coalesce-{on}");
        let spec = real_spec(dir.path(), &name, "scenario=boot", Duration::from_secs(20));
        let r = Kvm::new().with_coalescing(on).run(&spec).unwrap();
        let cmd = std::fs::read_to_string(spec.run_dir.join("command.txt")).unwrap();
        runs.push((r, cmd));
    }
    let (plain, coalesced) = (&runs[0].0, &runs[1].0);
    assert_eq!(plain.console, coalesced.console);
    assert_eq!(plain.outcome(), coalesced.outcome());
    assert!(runs[0].1.contains("one exit each"));
    if runs[1].1.contains("coalesced (KVM_CAP_COALESCED_PIO)") {
        let (a, b) = (exits(plain), exits(coalesced));
        assert!(b * 2 < a, "port exits: {a} one by one, {b} coalesced");
    }
}
