//! The KVM fuzz session: the doorbell, I/O completion at the snapshot,
//! mailbox bounds, and a session against a stand-in executor (a few
//! bytes of code that speak the mailbox protocol), then the real image,
//! whose outcome on this host is asserted.

mod kvm_common;

use kvm_common::{LOAD, code_spec, kvm_here};
use okernel_abi::fuzz::{CaseVerdict, MAX_CASE};
use qemu_harness::fuzz::{FuzzSession, KvmOptions, KvmSession, SessionError};
use qemu_harness::kvm::devices::Stop;
use qemu_harness::kvm::flat::code;
use qemu_harness::kvm::{Kvm, KvmError, RunEnd};
use std::time::{Duration, Instant};

const MAILBOX: u32 = 0x20_0000;
const SHORT: Duration = Duration::from_secs(5);

/// Where the stand-in's first `out dx, eax` lies (after a 10-byte store,
/// `mov dx`, `mov eax`).
const FIRST_OUT: u64 = LOAD as u64 + 10 + 4 + 5;

fn options() -> KvmOptions {
    KvmOptions {
        boot_timeout: SHORT,
        case_timeout: Duration::from_millis(300),
    }
}

#[test]
fn the_doorbell_stops_the_run_and_completing_it_moves_past_the_out() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = code_spec(dir.path(), "doorbell", &code::fuzz_echo(MAILBOX), SHORT);
    let mut vm = Kvm::new().boot(&spec).unwrap();
    let end = vm.run(Instant::now() + SHORT).unwrap();
    assert_eq!(end, RunEnd::Stopped(Stop::Doorbell(MAILBOX)));
    let at_exit = vm.regs().unwrap().rip;
    assert!(
        at_exit == FIRST_OUT || at_exit == FIRST_OUT + 1,
        "RIP {at_exit:#x} at the doorbell exit"
    );
    vm.complete_io().unwrap();
    assert_eq!(vm.regs().unwrap().rip, FIRST_OUT + 1, "past `out dx, eax`");
    vm.complete_io().unwrap();
    assert_eq!(
        vm.regs().unwrap().rip,
        FIRST_OUT + 1,
        "completing twice runs nothing"
    );
}

#[test]
fn guest_memory_access_is_bounds_checked() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = code_spec(dir.path(), "bounds", code::SPIN, SHORT);
    let ram = 4usize << 20;
    let mut vm = Kvm::new().with_ram(ram).boot(&spec).unwrap();
    vm.write_guest("test", 0x30_0000, b"mailbox").unwrap();
    assert_eq!(vm.read_guest("test", 0x30_0000, 7).unwrap(), b"mailbox");
    let end = ram as u64;
    vm.write_guest("last byte", end - 1, &[1]).unwrap();
    for (addr, len) in [(end - 2, 4), (end, 1), (u64::MAX, 2), (u64::MAX - 1, 8)] {
        let e = vm.read_guest("the result frame", addr, len).unwrap_err();
        assert!(
            matches!(e, KvmError::OutsideRam { ram: r, .. } if r == ram),
            "{e}"
        );
        assert!(e.to_string().contains("(the result frame)"), "{e}");
        let e = vm.write_guest("the case", addr, &vec![0; len]).unwrap_err();
        assert!(e.to_string().contains("outside guest RAM"), "{e}");
    }
    assert_eq!(vm.read_guest("test", end - 2, 2).unwrap(), [0, 1]);
}

#[test]
fn a_session_runs_cases_from_its_snapshot() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = code_spec(dir.path(), "echo", &code::fuzz_echo(MAILBOX), SHORT);
    let mut s = KvmSession::open(Kvm::new(), spec, options()).unwrap();
    assert_eq!(s.mailbox(), u64::from(MAILBOX));
    assert_eq!(s.backend(), "kvm");
    for case in [
        &b"\x03abc"[..],
        &[9u8; 100][..],
        b"",
        &[1u8; MAX_CASE + 50][..],
    ] {
        let o = s.run_case(case).unwrap();
        assert_eq!(o.verdict, CaseVerdict::Pass);
        assert_eq!(
            usize::from(o.ops_total),
            case.len().min(MAX_CASE),
            "case length arrived"
        );
        let first = case.first().copied().unwrap_or(0);
        assert_eq!(o.ops_run, u16::from(first), "case bytes arrived");
        assert!(o.hits.is_empty() && o.message.is_empty());
    }

    // A case that hangs: a timeout on time, and the next case runs.
    let start = Instant::now();
    let e = s.run_case(&[0xee]).unwrap_err();
    assert!(matches!(e, SessionError::Timeout { .. }), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(s.run_case(&[5, 5]).unwrap().ops_run, 5);

    // A case that ends the machine: crashed, with the reason.
    let e = s.run_case(&[0xdd]).unwrap_err();
    assert!(
        matches!(&e, SessionError::Crashed { reason, .. } if reason.contains("wrote 0x12 to port 0xf4")),
        "{e}"
    );
    assert_eq!(s.run_case(&[6]).unwrap().ops_run, 6);

    s.restart().unwrap();
    assert_eq!(s.cases(), 0);
    assert_eq!(s.run_case(&[7, 7, 7]).unwrap().ops_total, 3);
}

#[test]
fn a_bad_mailbox_or_no_doorbell_fails_the_boot() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = code_spec(
        dir.path(),
        "misaligned",
        &code::fuzz_echo(MAILBOX + 0x800),
        SHORT,
    );
    let e = KvmSession::open(Kvm::new(), spec, options()).err().unwrap();
    assert!(
        matches!(&e, SessionError::Boot { reason, .. } if reason.contains("4 KiB-aligned")),
        "{e}"
    );
    let ram = 4u32 << 20;
    let spec = code_spec(dir.path(), "outside", &code::fuzz_echo(ram - 4096), SHORT);
    let e = KvmSession::open(Kvm::new().with_ram(ram as usize), spec, options())
        .err()
        .unwrap();
    assert!(
        matches!(&e, SessionError::Boot { reason, .. } if reason.contains("RAM ends at 0x400000")),
        "{e}"
    );
    let spec = code_spec(dir.path(), "silent", code::HALT, SHORT);
    let quick = KvmOptions {
        boot_timeout: Duration::from_millis(200),
        ..options()
    };
    let e = KvmSession::open(Kvm::new(), spec, quick).err().unwrap();
    assert!(
        matches!(&e, SessionError::Boot { reason, .. } if reason.contains("no doorbell (port 0xf5)")),
        "{e}"
    );
    let spec = code_spec(dir.path(), "panics", &code::exit_with(0x12), SHORT);
    let e = KvmSession::open(Kvm::new(), spec, options()).err().unwrap();
    assert!(
        matches!(&e, SessionError::Boot { reason, .. } if reason.contains("wrote 0x12")),
        "{e}"
    );
}

/// `cargo test --release -p qemu-harness --test fuzz_kvm -- --ignored
/// --nocapture`: the session's own cost per case (reset, mailbox, run to
/// the doorbell) against the stand-in executor, which does almost
/// nothing.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture (release build)"]
fn bench_session_overhead() {
    assert!(kvm_here(), "needs /dev/kvm");
    let dir = tempfile::tempdir().unwrap();
    let spec = code_spec(dir.path(), "bench", &code::fuzz_echo(MAILBOX), SHORT);
    let mut s = KvmSession::open(Kvm::new(), spec, options()).unwrap();
    let n = 20_000;
    let case = [1u8; 64];
    let start = Instant::now();
    for _ in 0..n {
        assert_eq!(s.run_case(&case).unwrap().ops_run, 1);
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "kvm session, stand-in executor: {n} cases in {secs:.2}s = {:.0} cases/s ({:.1} µs/case)",
        f64::from(n) / secs,
        secs * 1e6 / f64::from(n)
    );
}
