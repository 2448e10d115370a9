//! `kvm-bench`: boot time and resets per second of the KVM backend.
//!
//! ```text
//! cargo run --release -p qemu-harness --bin kvm-bench -- [--iterations N] [--dir DIR] [GUEST-ARGS..]
//! ```
//!
//! Boots `DIR/okernel.elf` with `DIR/guest.elf` (default: the workspace's
//! `target/okernel`, built by `cargo xtask build`) with the guest command
//! line GUEST-ARGS (default `scenario=boot`), snapshots it at the PVH
//! entry, and runs it N times (default 200) with a reset before each run.

use qemu_harness::kvm::{Kvm, bench_resets};
use qemu_harness::{Backend, GuestModule, RunSpec};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let mut iterations = 200;
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/okernel");
    let mut guest_args = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iterations" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => iterations = n,
                None => return usage("--iterations needs a number"),
            },
            "--dir" => match args.next() {
                Some(d) => dir = PathBuf::from(d),
                None => return usage("--dir needs a directory"),
            },
            s if s.starts_with("--") => return usage(&format!("unknown option `{s}`")),
            s => guest_args.push(s.to_string()),
        }
    }
    if guest_args.is_empty() {
        guest_args.push("scenario=boot".to_string());
    }
    let spec = RunSpec {
        name: "kvm-bench".into(),
        image: dir.join("okernel.elf"),
        guest: GuestModule::File(dir.join("guest.elf")),
        cmdline: "log=info".into(),
        guest_cmdline: guest_args.join(" "),
        timeout: Duration::from_secs(10),
        run_dir: std::env::temp_dir().join("okernel-kvm-bench"),
        gdb: false,
    };
    let kvm = Kvm::new();
    let t = Instant::now();
    let report = match kvm.run(&spec) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kvm-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "one boot (Backend::run: VM creation, loading, run to the outcome): {:.1} ms, {}",
        t.elapsed().as_secs_f64() * 1e3,
        report.summary()
    );
    match bench_resets(&kvm, &spec, iterations) {
        Ok(b) => {
            println!("{b}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kvm-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("kvm-bench: {why}\nusage: kvm-bench [--iterations N] [--dir DIR] [GUEST-ARGS..]");
    ExitCode::FAILURE
}
