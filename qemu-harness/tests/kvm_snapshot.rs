//! Snapshot and reset: after a run that dirtied memory, registers and an
//! MSR, a reset brings back exactly the snapshot's state, and the next run
//! repeats the first.

mod kvm_common;

use kvm_common::{code_spec, kvm_here, real_images, real_spec};
use okernel_abi::result::Outcome;
use qemu_harness::kvm::devices::Stop;
use qemu_harness::kvm::flat::code;
use qemu_harness::kvm::memory::PAGE_SIZE;
use qemu_harness::kvm::snapshot::VcpuState;
use qemu_harness::kvm::{Kvm, RunEnd, bench_resets};
use std::time::{Duration, Instant};

const SYSENTER_CS: u32 = 0x174;
const DIRTY_AT: u32 = 0x40_0000;
const DIRTY_PAGES: u32 = 16;

fn msr(s: &VcpuState, index: u32) -> u64 {
    s.msrs
        .iter()
        .find(|(i, _)| *i == index)
        .expect("MSR kept")
        .1
}

#[test]
fn reset_restores_registers_msrs_and_memory() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pass = Outcome::Pass.code();
    let c = code::dirty(DIRTY_AT, DIRTY_PAGES, pass);
    let spec = code_spec(dir.path(), "dirty", &c, Duration::from_secs(5));
    let mut vm = Kvm::new().boot(&spec).unwrap();
    let snap = vm.snapshot().unwrap();
    let before = vm.vcpu_state().unwrap();
    assert_eq!(msr(&before, SYSENTER_CS), 0);

    let end = vm.run(Instant::now() + spec.timeout).unwrap();
    assert_eq!(end, RunEnd::Stopped(Stop::ExitPort(pass)));
    let after = vm.vcpu_state().unwrap();
    assert_eq!(after.regs.rbx, 0x0123_4567);
    assert_eq!(after.regs.rsi, 0x89ab_cdef);
    assert_eq!(msr(&after, SYSENTER_CS), 0x10);
    let page = DIRTY_AT as usize;
    assert_eq!(vm.ram.as_slice()[page..page + 4], [0x5a; 4]);
    assert_ne!(vm.ram.as_slice(), snap.memory());

    let copied = vm.reset(&snap).unwrap();
    assert!(copied >= DIRTY_PAGES as usize, "{copied} pages copied back");
    assert!(
        copied < DIRTY_PAGES as usize + 8,
        "only dirty pages: {copied}"
    );
    let restored = vm.vcpu_state().unwrap();
    assert_eq!(restored, before);
    assert!(
        vm.ram.as_slice() == snap.memory(),
        "memory equals the snapshot"
    );
    assert!(
        vm.dirty_pages().unwrap().is_empty(),
        "the reset wrote nothing"
    );

    // And the machine runs again from the entry to the same end.
    let end = vm.run(Instant::now() + spec.timeout).unwrap();
    assert_eq!(end, RunEnd::Stopped(Stop::ExitPort(pass)));
    assert_eq!(msr(&vm.vcpu_state().unwrap(), SYSENTER_CS), 0x10);
}

#[test]
fn the_real_image_repeats_itself_after_a_reset() {
    if !kvm_here() {
        return;
    }
    real_images();
    let dir = tempfile::tempdir().unwrap();
    let spec = real_spec(
        dir.path(),
        "repeat",
        "scenario=boot",
        Duration::from_secs(20),
    );
    let mut vm = Kvm::new().boot(&spec).unwrap();
    let snap = vm.snapshot().unwrap();
    let before = vm.vcpu_state().unwrap();
    let first = vm.run(Instant::now() + spec.timeout).unwrap();
    let console = vm.devices.serial.output.clone();
    assert!(
        matches!(first, RunEnd::Stopped(Stop::ExitPort(_))),
        "{first:?}"
    );
    assert!(!console.is_empty());

    let copied = vm.reset(&snap).unwrap();
    assert!(copied > 0);
    assert!(vm.devices.serial.output.is_empty(), "devices reset too");
    assert_eq!(vm.vcpu_state().unwrap(), before);
    let differing = vm
        .ram
        .as_slice()
        .chunks(PAGE_SIZE)
        .zip(snap.memory().chunks(PAGE_SIZE))
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 0, "pages differing from the snapshot");

    let again = vm.run(Instant::now() + spec.timeout).unwrap();
    assert_eq!(again, first);
    assert_eq!(
        String::from_utf8_lossy(&vm.devices.serial.output),
        String::from_utf8_lossy(&console)
    );
}

#[test]
fn bench_resets_checks_every_run_repeats() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = code::dirty(DIRTY_AT, DIRTY_PAGES, Outcome::Pass.code());
    let spec = code_spec(dir.path(), "bench", &c, Duration::from_secs(5));
    let b = bench_resets(&Kvm::new(), &spec, 20).unwrap();
    assert_eq!(b.iterations, 20);
    assert!(b.dirty_pages >= f64::from(DIRTY_PAGES), "{b}");
    assert!(b.resets_per_sec > 0.0 && b.idle_resets_per_sec > 0.0, "{b}");
}

/// `cargo test --release -p qemu-harness --test kvm_snapshot -- --ignored
/// --nocapture`: boot time and resets/s of the real image.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture (release build)"]
fn bench_real_image() {
    assert!(kvm_here(), "needs /dev/kvm");
    let dir = tempfile::tempdir().unwrap();
    let spec = real_spec(
        dir.path(),
        "bench",
        "scenario=boot",
        Duration::from_secs(20),
    );
    let b = bench_resets(&Kvm::new(), &spec, 200).unwrap();
    println!("kvm reset bench (okernel image, scenario=boot): {b}");
    let c = code::dirty(DIRTY_AT, DIRTY_PAGES, Outcome::Pass.code());
    let spec = code_spec(dir.path(), "bench-tiny", &c, Duration::from_secs(5));
    let b = bench_resets(&Kvm::new(), &spec, 2000).unwrap();
    println!("kvm reset bench (tiny image, {DIRTY_PAGES} pages dirtied): {b}");
}
