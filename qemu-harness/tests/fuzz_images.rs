//! Fuzz sessions on the real images (`cargo xtask build`): each test
//! skips, saying why, only when an image or the emulator is missing, and
//! otherwise asserts the exact outcome this host gives.

mod kvm_common;

use kvm_common::{images_dir, kvm_here};
use okernel_abi::fuzz::CaseVerdict;
use qemu_harness::fuzz::{
    BochsOptions, BochsSession, FuzzSession, KvmOptions, KvmSession, SessionError,
};
use qemu_harness::kvm::Kvm;
use qemu_harness::{GuestModule, RunSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The fuzz-feature image (`okernel-fuzz.elf`, where it was built) or
/// else the normal one, and the guest, from `target/okernel` or
/// `OKERNEL_IMAGES_DIR`; `None`, saying why, when missing.
fn images() -> Option<(PathBuf, PathBuf)> {
    let dir = std::env::var_os("OKERNEL_IMAGES_DIR").map_or_else(images_dir, PathBuf::from);
    let fuzz = dir.join("okernel-fuzz.elf");
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
/// ends instead of serving cases is a boot error naming its result. Which
/// of the two watches sees the end first races (the serial link closing,
/// or the result marker on the console): either must name the result,
/// once.
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
            if (reason.contains("the serial link closed before the ready byte")
                || reason.starts_with("the image reported pass"))
                && reason.matches("the image reported pass").count() == 1),
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

/// Real frames through the mailbox: `mode=direct` runs the executor with
/// no monitor (no nested VMX is needed), so its guest-side oracles must
/// flag a write to kernel text that nothing stopped (a negative control).
#[test]
fn kvm_direct_mode_runs_cases_through_the_mailbox() {
    if !kvm_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(spec) = spec(
        dir.path(),
        "kvm-direct",
        "log=info mode=direct",
        "scenario=fuzz transport=mailbox",
    ) else {
        return;
    };
    let mut s = KvmSession::open(Kvm::new(), spec, KvmOptions::default())
        .unwrap_or_else(|e| panic!("{e}{}", rebuild_hint(&e)));
    let empty = s.run_case(b"").unwrap();
    assert_eq!(
        (empty.verdict, empty.ops_total, empty.ops_run),
        (CaseVerdict::Pass, 0, 0)
    );
    let one = s.run_case(&[0; 8]).unwrap();
    assert_eq!(one.ops_total, 1, "{one:?}");
    let text = s.run_case(&[1; 16]).unwrap();
    assert_eq!(text.verdict, CaseVerdict::GuestOracle, "{text:?}");
    assert!(text.message.contains("write text"), "{text:?}");
    assert!(!text.hits.is_empty());
    let again = s.run_case(b"").unwrap();
    assert_eq!(again, empty, "every case starts from the snapshot");
}

/// What to do when the images predate the fuzz executor.
fn rebuild_hint(e: &SessionError) -> &'static str {
    if e.to_string().contains("unknown scenario `fuzz`") {
        "\n(the images predate the fuzz executor: rebuild them with `cargo xtask build`)"
    } else {
        ""
    }
}

/// Cases the executor runs to a frame (the first of them were seen to
/// pass under the monitor): the empty case, one zero operation, and
/// pseudo-random 64-byte cases.
fn sample_cases(n: u32) -> Vec<Vec<u8>> {
    let mut cases = vec![vec![], vec![0; 8]];
    for i in 0..n.saturating_sub(2) {
        cases.push(
            (0..64u32)
                .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i * 977) >> 13) as u8)
                .collect(),
        );
    }
    cases
}

/// Twenty cases over COM2 under the monitor, each answered by a frame:
/// ten, then the same ten again, which must end the same way (the
/// executor's in-guest reset between cases).
#[test]
fn bochs_session_runs_twenty_cases() {
    if !bochs_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(spec) = spec(
        dir.path(),
        "bochs-fuzz",
        "log=info",
        "scenario=fuzz transport=com2",
    ) else {
        return;
    };
    let mut s = BochsSession::open(spec, BochsOptions::default())
        .unwrap_or_else(|e| panic!("{e}{}", rebuild_hint(&e)));
    let start = std::time::Instant::now();
    let cases = sample_cases(10);
    let mut first = Vec::new();
    for round in 0..2 {
        for (i, case) in cases.iter().enumerate() {
            let o = s
                .run_case(case)
                .unwrap_or_else(|e| panic!("round {round}, case {i} ({case:02x?}): {e}"));
            assert_eq!(usize::from(o.ops_total), case.len() / 8, "case {i}: {o:?}");
            assert!(o.ops_run <= o.ops_total, "case {i}: {o:?}");
            assert!(!o.hits.is_empty(), "case {i}: no coverage: {o:?}");
            if round == 0 {
                first.push(o);
            } else {
                let was = &first[i];
                assert_eq!(
                    (o.verdict, o.ops_run, &o.message),
                    (was.verdict, was.ops_run, &was.message),
                    "case {i} ended differently the second time"
                );
            }
        }
    }
    assert_eq!(s.boots(), 1, "no case needed a reboot");
    eprintln!(
        "bochs: {} cases in {:.2}s",
        2 * cases.len(),
        start.elapsed().as_secs_f64()
    );
}

/// `FUZZ_BENCH_IPS=1000000,4000000 cargo test --release -p qemu-harness
/// --test fuzz_images -- --ignored --nocapture`: cases/s on Bochs per
/// `ips` (default 1M, 2M, 4M, 20M), over the passing sample cases.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_bochs_ips() {
    assert!(bochs_here(), "needs bochs");
    let list = std::env::var("FUZZ_BENCH_IPS").unwrap_or("1000000,2000000,4000000,20000000".into());
    let cases = sample_cases(12);
    for ips in list
        .split(',')
        .map(|v| v.trim().parse::<u64>().expect("ips"))
    {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(
            dir.path(),
            "bench",
            "log=info",
            "scenario=fuzz transport=com2",
        )
        .expect("images");
        let t = std::time::Instant::now();
        let options = BochsOptions {
            ips,
            ..Default::default()
        };
        let mut s = BochsSession::open(spec, options).unwrap_or_else(|e| panic!("{e}"));
        let boot = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let rounds = 3;
        for _ in 0..rounds {
            for case in &cases {
                s.run_case(case)
                    .unwrap_or_else(|e| panic!("ips {ips}: {e}"));
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let n = (rounds * cases.len()) as f64;
        eprintln!(
            "bochs ips {ips}: boot {boot:.1}s, {n} cases in {secs:.2}s = {:.1} cases/s ({:.0} ms/case)",
            n / secs,
            secs * 1e3 / n
        );
    }
}

/// `cargo test --release -p qemu-harness --test fuzz_images -- --ignored
/// --nocapture`: cases/s of the executor through the mailbox
/// (`mode=direct`: no monitor here).
#[test]
#[ignore = "benchmark: run with --ignored --nocapture (release build)"]
fn bench_kvm_direct() {
    assert!(kvm_here(), "needs /dev/kvm");
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        "bench",
        "log=info mode=direct",
        "scenario=fuzz transport=mailbox",
    )
    .expect("images");
    let mut s =
        KvmSession::open(Kvm::new(), spec, KvmOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    for (name, case) in [
        ("empty", vec![]),
        ("one op", vec![0u8; 8]),
        ("text write", vec![1u8; 16]),
    ] {
        let n = 500;
        let t = std::time::Instant::now();
        for _ in 0..n {
            s.run_case(&case).unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "kvm mode=direct, case `{name}`: {:.0} cases/s ({:.0} µs/case)",
            f64::from(n) / secs,
            secs * 1e6 / f64::from(n)
        );
    }
}
