//! `cargo xtask`: build, boot and test okernel.
//!
//! Run `cargo xtask help` for the commands.

mod attacks;
mod bench;
mod deps;
mod doctor;
mod e2e;
mod fuzz;
mod images;
mod linux;
mod tcb;
mod toolchain;
mod vmfuzz;

use qemu_harness::bochs::Bochs;
use qemu_harness::qemu::{Accel, Qemu};
use qemu_harness::{Availability, Backend, GuestModule, RunReport, RunSpec, Verdict};
use std::process::{Command, ExitCode};
use std::time::Duration;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build                      build the okernel image and the demo guest
  iso                        build a GRUB ISO (target/okernel/okernel.iso)
  bochs [GUEST-ARGS..]       boot in Bochs (emulated VMX) from the GRUB ISO
  kvm [GUEST-ARGS..]         boot in the KVM harness (in-process, PVH; nested
                             VMX where the host's KVM offers it)
  qemu [--tcg] [--gdb] [GUEST-ARGS..]
                             boot in QEMU with -kernel (KVM when usable)
  linux-image                fetch Debian's kernel (apt), unpack the vmlinux,
                             build the test initramfs (target/linux/)
  linux [--direct|--bare] [--bzimage] [--client] [--cpu MODEL] [--cpus N]
                             boot Debian's kernel under okernel in Bochs
                             (--direct: no monitor; --bare: QEMU/TCG, no okernel)
  run                        the main job: boot the demo guest on every
                             available backend and show the results
  test                       host tests + every boot case on every backend
  conformance                the differential conformance case alone: the
                             conformance kernel bare and under okernel in
                             Bochs, every line compared (part of `test`)
  platform [ROW...]          the platform attack rows alone (part of `test`; with
                             names, the rows starting with them): the demo guest
                             starts another processor (2- and 4-CPU Bochs), puts
                             the machine to sleep, has a device DMA over a locked
                             page, forges the monitor's console lines, runs its
                             own SMM handler and moves a PCI BAR over a locked
                             page, bare and under okernel (which must park,
                             refuse, deny, drop); and ECAM kept from the guest on
                             QEMU's q35
  lint                       rustfmt --check, clippy -D warnings (host and
                             bare-metal target, the fuzz crate), rustdoc -D warnings
  ci                         `lint`, `test`, then the bounded fuzz campaigns
                             (host, VM) and the planted-defect proofs
  fuzz host [--target T] [--time S] [--seed N]
                             coverage-guided host fuzzing (libFuzzer)
  fuzz planted-defects [--time S] [--seed N]
                             each planted monitor defect must be found
  fuzz --replay FILE --target T
                             reproduce one saved input exactly
  fuzz vm [--backend B] [--time S] [--cores N] [--seed N] [--planted D]
          [--no-monitor] [--stop-on-crash] [--replay FILE]
                             coverage-guided fuzzing of okernel in a VM (LibAFL;
                             Bochs, or KVM with nested VMX); `fuzz vm --help`
  fuzz vm-planted [--backend B] [--time S] [--seed N]
                             each planted defect must be found in the VM, and
                             the clean image must run clean as long
  fuzz vm-selftest           the VM driver's lints and tests, and a campaign on
                             its mock backend that must find the mock's defect
  bench [ept] [vmx] [kvm] [fuzz] [linux]
                             benchmarks (ratios against a same-run baseline;
                             fuzz: VM fuzzing cases per second per backend;
                             linux: Debian's kernel boot under okernel vs
                             mode=direct)
  tcb                        the production image's trusted computing base:
                             code lines per crate and okernel module, the
                             dependency list, .text and .rodata sizes
  doctor                     what this machine has (toolchain, packages, KVM)
                             and which backends run here, with the evidence
  help                       this text

GUEST-ARGS is the demo guest's command line, e.g. `scenario=panic`.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("help", &[][..]),
    };
    // Everything but `help` and `doctor` builds: the pinned target and components
    // first (rustup adds them to an installed toolchain only on request).
    if !matches!(cmd, "help" | "--help" | "-h" | "doctor")
        && let Err(e) = toolchain::ensure()
    {
        eprintln!("xtask: error: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cmd {
        "build" => no_args(rest).and_then(|_| images::build().map(|_| true)),
        "iso" => no_args(rest).and_then(|_| iso()),
        "bochs" => single(&Bochs, rest),
        "kvm" => kvm(rest),
        "qemu" => qemu(rest),
        "run" => no_args(rest).and_then(|_| run()),
        "test" => no_args(rest).and_then(|_| test()),
        "lint" => no_args(rest).and_then(|_| lint()),
        "conformance" => no_args(rest).and_then(|_| conformance()),
        "platform" => platform(rest),
        "ci" => no_args(rest).and_then(|_| Ok(lint()? && test()? && ci_fuzz()?)),
        "bench" => bench(rest),
        "tcb" => no_args(rest).and_then(|_| tcb::tcb()),
        "doctor" => no_args(rest).and_then(|_| doctor::doctor()),
        "linux-image" => no_args(rest).and_then(|_| linux::linux_image()),
        "linux" => linux::linux(rest),
        "fuzz" => fuzz::fuzz(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(true)
        }
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn no_args(rest: &[String]) -> Result<(), String> {
    match rest.first() {
        None => Ok(()),
        Some(a) => Err(format!("unexpected argument `{a}`\n\n{USAGE}")),
    }
}

/// Whether `program` is on the PATH.
pub fn on_path(program: &str) -> bool {
    qemu_harness::process::on_path(program)
}

fn boot_spec(images: &images::Images, name: &str, guest_args: &[String], gdb: bool) -> RunSpec {
    let guest_cmdline = if guest_args.is_empty() {
        "scenario=boot".to_string()
    } else {
        guest_args.join(" ")
    };
    RunSpec {
        name: name.to_string(),
        image: images.okernel.clone(),
        guest: GuestModule::File(images.guest.clone()),
        cmdline: "log=info".into(),
        guest_cmdline,
        timeout: if gdb {
            Duration::from_secs(24 * 3600)
        } else {
            Duration::from_secs(120)
        },
        run_dir: images::root().join("target/runs").join(name),
        gdb,
    }
}

/// Boots once on `backend`, printing the console; true on pass.
fn single(backend: &dyn Backend, guest_args: &[String]) -> Result<bool, String> {
    need_for(backend.name())?;
    let images = images::build()?;
    let spec = boot_spec(&images, backend.name(), guest_args, false);
    let report = boot_and_show(backend, &spec)?;
    Ok(judged_as_main_job(backend, &report, guest_args.is_empty()))
}

/// Prints the protection checks a run reported, as a table.
pub fn print_checks(backend: &str, report: &RunReport) {
    match report.parsed_checks() {
        Ok(checks) if checks.is_empty() => {
            println!("{backend}: no checks ran ({})", report.summary());
        }
        Ok(checks) => {
            println!("\n{backend}: protection checks");
            println!("{:<36} {:<9} {:<6} observed", "check", "invariant", "");
            for c in checks {
                let inv = if c.invariant == 0 {
                    "-".to_string()
                } else {
                    c.invariant.to_string()
                };
                let mark = if c.ok { "ok" } else { "FAIL" };
                println!("{:<36} {:<9} {:<6} {}", c.check, inv, mark, c.observed);
            }
        }
        Err(e) => println!("{backend}: {e}"),
    }
}

/// Whether a single boot did what the main job expects on `backend`: the
/// `boot` case's outcome (pass, or "VMX unavailable" where there is no
/// VMX) and, for the default scenario, all of its checks.
fn judged_as_main_job(backend: &dyn Backend, report: &RunReport, default_scenario: bool) -> bool {
    let case = e2e::boot_case();
    let verdict = if default_scenario {
        e2e::judge(&case, backend.vmx(), report)
    } else {
        Verdict::judge(report, &e2e::expectation(&case, backend.vmx()))
    };
    if let Verdict::Unexpected(why) = &verdict {
        eprintln!("xtask: {}: {why}", backend.name());
    }
    verdict == Verdict::Ok
}

fn need_for(backend: &str) -> Result<(), String> {
    match backend {
        "bochs" => deps::ensure(&[&deps::BOCHS]),
        "kvm" => Ok(()),
        _ => deps::ensure(&[&deps::QEMU]),
    }
}

fn boot_and_show(backend: &dyn Backend, spec: &RunSpec) -> Result<RunReport, String> {
    eprintln!(
        "xtask: booting on {} ({}), timeout {}s, artifacts in {}",
        backend.name(),
        match backend.vmx() {
            qemu_harness::VmxSupport::Available => "VMX available",
            qemu_harness::VmxSupport::Unavailable => "no VMX",
        },
        spec.timeout.as_secs(),
        spec.run_dir.display()
    );
    let report = backend.run(spec).map_err(|e| e.to_string())?;
    show_console(backend.name(), &report);
    Ok(report)
}

/// Prints a run's console between two rules, the second with its outcome.
pub fn show_console(backend: &str, report: &RunReport) {
    println!("----- console ({backend}) -----");
    print!("{}", report.console);
    println!(
        "----- {backend}: {} in {:.1}s -----",
        report.summary(),
        report.duration.as_secs_f64()
    );
}

fn qemu(rest: &[String]) -> Result<bool, String> {
    let mut accel = if qemu_harness::kvm_usable() {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    let mut gdb = false;
    let mut guest_args = Vec::new();
    for a in rest {
        match a.as_str() {
            "--tcg" => accel = Accel::Tcg,
            "--gdb" => gdb = true,
            s if s.starts_with("--") => {
                return Err(format!("unknown option `{s}` for `qemu`\n\n{USAGE}"));
            }
            s => guest_args.push(s.to_string()),
        }
    }
    if accel == Accel::Tcg
        && let Some(why) = qemu_harness::kvm_problem()
    {
        eprintln!("xtask: using TCG: {why}");
    }
    deps::ensure(&[&deps::QEMU])?;
    let probe_dir = images::root().join("target/runs/probe").join(match accel {
        Accel::Kvm => "qemu-kvm",
        Accel::Tcg => "qemu-tcg",
    });
    let (backend, availability) = Qemu::new(accel).probe(&probe_dir);
    match availability {
        Availability::Available(evidence) => eprintln!("xtask: QEMU {evidence}"),
        Availability::Unavailable(why) => {
            return Err(format!("QEMU is unavailable on this host: {why}"));
        }
    }
    let images = images::build()?;
    let spec = boot_spec(&images, backend.name(), &guest_args, gdb);
    if gdb {
        eprintln!(
            "xtask: QEMU waits for a debugger: gdb {} -ex 'target remote :1234'",
            images.okernel.display()
        );
    }
    let report = boot_and_show(&backend, &spec)?;
    Ok(judged_as_main_job(&backend, &report, guest_args.is_empty()))
}

fn kvm(rest: &[String]) -> Result<bool, String> {
    if let Some(why) = qemu_harness::kvm_problem() {
        return Err(format!("the KVM harness needs /dev/kvm: {why}"));
    }
    single(&qemu_harness::kvm::Kvm::new(), rest)
}

/// `test`'s conformance case alone (`docs/vmx-core.md`, "What a guest
/// can observe of okernel and why").
fn conformance() -> Result<bool, String> {
    let images = images::build()?;
    rows_alone(
        &e2e::conformance::run(&images, &e2e::backends()),
        "the conformance case",
    )
}

/// `test`'s platform attack rows alone (`docs/threat-model.md`,
/// invariant 1); with names, only the rows whose name starts with one of
/// them (`ecam-q35` is the ECAM row).
fn platform(names: &[String]) -> Result<bool, String> {
    let chosen = |row: &str| names.is_empty() || names.iter().any(|n| row.starts_with(n.as_str()));
    let cases: Vec<_> = e2e::platform::cases()
        .into_iter()
        .filter(|c| chosen(c.name))
        .collect();
    if cases.is_empty() && !chosen("ecam-q35") {
        return Err(format!(
            "no platform row starts with {}",
            names.join(" or ")
        ));
    }
    let images = images::build()?;
    let backends = e2e::backends();
    let mut rows = e2e::platform::run(&images, &backends, &cases);
    if chosen("ecam-q35") {
        rows.extend(e2e::ecam::run(&images, &backends));
    }
    rows_alone(&rows, "the platform rows")
}

/// Prints `rows` as `test` does; true when every row ran (Bochs was
/// there) and none failed.
fn rows_alone(rows: &[e2e::Row], what: &str) -> Result<bool, String> {
    let ok = e2e::print_table(rows);
    let ran = rows
        .iter()
        .all(|r| matches!(r.state, e2e::RowState::Ran(_)));
    if !ran {
        eprintln!("xtask: FAILED: {what} did not run (Bochs unavailable)");
    }
    Ok(ok && ran)
}

fn iso() -> Result<bool, String> {
    deps::ensure(&[&deps::ISO])?;
    let images = images::build()?;
    let mut spec = boot_spec(&images, "iso", &[], false);
    spec.run_dir = images.dir.clone();
    Bochs::make_iso(&spec).map_err(|e| e.to_string())?;
    println!("{}", images.dir.join("okernel.iso").display());
    Ok(true)
}

/// The main job: the demo guest on every available backend, then Debian's
/// kernel (`docs/linux.md`). It passes
/// only if every available backend gave the expected outcome and the VMX
/// backend (Bochs) was among them; a backend unavailable on this host is
/// listed with its reason.
fn run() -> Result<bool, String> {
    deps::ensure(&[&deps::BOCHS, &deps::QEMU])?;
    let images = images::build()?;
    let backends = e2e::backends();
    let mut all = true;
    if let Err(why) = e2e::vmx_backend_ran(&backends) {
        eprintln!("xtask: {why}");
        all = false;
    }
    let mut summary = Vec::new();
    for probed in &backends {
        let backend = probed.backend.as_ref();
        if let Availability::Unavailable(why) = &probed.availability {
            summary.push((backend.name().to_string(), why.clone(), "unavail"));
            continue;
        }
        let spec = boot_spec(&images, &format!("run-{}", backend.name()), &[], false);
        let report = boot_and_show(backend, &spec)?;
        let ok = judged_as_main_job(backend, &report, true);
        print_checks(backend.name(), &report);
        all &= ok;
        summary.push((
            backend.name().to_string(),
            report.summary(),
            if ok { "ok" } else { "FAIL" },
        ));
    }
    if let Some(probed) = backends.iter().find(|p| {
        p.availability.is_available() && p.backend.vmx() == qemu_harness::VmxSupport::Available
    }) {
        all &= attacks::table(probed.backend.as_ref(), &images)?;
    } else {
        println!("\nattack table: no backend with VMX here, so no protected run");
    }
    // The attacks on the machine around the monitor (other processors,
    // ACPI sleep), each without and with okernel; then Debian's kernel:
    // each Linux case on its backend, its probe's rows.
    let platform = e2e::platform::run(&images, &backends, &e2e::platform::cases());
    let linux = linux::image()?;
    for row in platform
        .iter()
        .chain(&e2e::linux::run(&images, &linux, &backends))
    {
        let name = format!("{} ({})", row.case, row.backend);
        match &row.state {
            e2e::RowState::Ran(Ok((report, verdict))) => {
                print_checks(&name, report);
                let ok = *verdict == Verdict::Ok;
                if let Verdict::Unexpected(why) = verdict {
                    eprintln!("xtask: {name}: {why}");
                }
                all &= ok;
                summary.push((name, report.summary(), if ok { "ok" } else { "FAIL" }));
            }
            e2e::RowState::Ran(Err(e)) => {
                all = false;
                summary.push((name, e.clone(), "FAIL"));
            }
            e2e::RowState::Unavailable(why) => summary.push((name, why.clone(), "unavail")),
        }
    }
    println!();
    println!("{:<22} {:<7} outcome", "backend", "");
    for (b, s, mark) in &summary {
        let s = if *mark == "unavail" {
            format!("unavailable on this host: {s}")
        } else {
            s.clone()
        };
        println!("{b:<22} {mark:<7} {s}");
    }
    Ok(all)
}

fn cargo(args: &[&str]) -> Result<bool, String> {
    eprintln!("xtask: cargo {}", args.join(" "));
    Command::new(env!("CARGO"))
        .current_dir(images::root())
        .args(args)
        .status()
        .map(|s| s.success())
        .map_err(|e| format!("cannot run cargo: {e}"))
}

/// Host tests, then every boot case on every available backend.
fn test() -> Result<bool, String> {
    deps::ensure(&[&deps::BOCHS, &deps::QEMU])?;
    // The images first: some host tests (the KVM harness's, the fuzz
    // sessions') boot them, the fuzz image included.
    let images = images::build()?;
    images::build_fuzz_image(None)?;
    let host_ok = cargo(&["test", "--workspace"])?;
    // The monitor's fuzz build (coverage, the oracle calls, the audit
    // mirror, the views watch) has its own tests, which no workspace
    // member's features turn on.
    let fuzz_ok = cargo(&["test", "-p", "okernel", "--lib", "--features", "fake,fuzz"])?;
    // The fuzz crate is a workspace of its own: its unit tests (the
    // targets' fakes and oracles) run here too (until session 13 nothing
    // ran them, and one failed unnoticed for three sessions).
    let fuzz_crate_ok = cargo(&["test", "--manifest-path", "fuzz/Cargo.toml", "--lib"])?;
    let host_ok = host_ok && fuzz_ok && fuzz_crate_ok;
    let backends = e2e::backends();
    let linux = linux::image()?;
    let mut rows = e2e::run_matrix(&images, &backends)?;
    rows.extend(e2e::linux::run(&images, &linux, &backends));
    let mut e2e_ok = e2e::print_table(&rows);
    if let Err(why) = e2e::vmx_backend_ran(&backends) {
        eprintln!("xtask: FAILED: {why}");
        e2e_ok = false;
    }
    if !host_ok {
        eprintln!("xtask: host tests FAILED (see above)");
    }
    Ok(host_ok && e2e_ok)
}

/// The bounded campaigns CI runs: every host target, fixed seed; then the
/// proof that the oracles bite (each planted defect must be found); then
/// the VM fuzzer's (driver self-test, a Bochs campaign, the planted proof
/// in the VM, the KVM outcomes), as `.ci/run` does.
fn ci_fuzz() -> Result<bool, String> {
    let steps: [&[&str]; 7] = [
        &["host", "--time", "10", "--seed", "1"],
        &["planted-defects", "--time", "120", "--seed", "1"],
        &["vm-selftest"],
        &[
            "vm",
            "--backend",
            "bochs",
            "--time",
            "60",
            "--seed",
            "1",
            "--cores",
            "2",
        ],
        &[
            "vm-planted",
            "--backend",
            "bochs",
            "--time",
            "60",
            "--seed",
            "1",
        ],
        &["vm", "--backend", "kvm", "--time", "10", "--seed", "1"],
        &[
            "vm",
            "--backend",
            "kvm",
            "--no-monitor",
            "--time",
            "60",
            "--seed",
            "1",
        ],
    ];
    for step in steps {
        let args: Vec<String> = step.iter().map(|s| s.to_string()).collect();
        if !fuzz::fuzz(&args)? {
            eprintln!("xtask: `cargo xtask fuzz {}` failed", step.join(" "));
            return Ok(false);
        }
    }
    Ok(true)
}

fn lint() -> Result<bool, String> {
    // Every clippy run denies warnings (`-- -D warnings` is appended).
    let clippy: [&[&str]; 6] = [
        &["--workspace", "--all-targets"],
        &[
            "--target",
            images::TARGET,
            "-p",
            "loader",
            "-p",
            "guest",
            "-p",
            "okernel",
            "-p",
            "ept",
            "-p",
            "conformance",
            "--features",
            "loader/image,guest/image,conformance/image",
        ],
        // The fuzz build of the monitor (coverage, the oracle calls) and a
        // fuzz image, which the workspace lint does not enable.
        &["-p", "okernel", "--all-targets", "--features", "fake,fuzz"],
        &[
            "--target",
            images::TARGET,
            "-p",
            "loader",
            "--features",
            "loader/image,loader/fuzz",
        ],
        // The SMP race row's negative control (`e2e::platform`).
        &[
            "-p",
            "okernel",
            "--lib",
            "--features",
            "planted-no-shootdown",
        ],
        // The SMP view-switch row's negative control.
        &[
            "-p",
            "okernel",
            "--lib",
            "--features",
            "planted-shared-context",
        ],
    ];
    // The host fuzz targets are a workspace of their own (fuzz/), linked
    // with libFuzzer's C++ runtime; linted in a target directory of their
    // own so the instrumented builds are not invalidated.
    deps::ensure(&[&deps::FUZZER])?;
    let fuzz: &[&str] = &[
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--all-targets",
        "--target-dir",
        "fuzz/target/lint",
    ];
    // Each planted defect alone (the VM proof builds them one at a time,
    // and a defect's cfg can leave code unused in the others' builds).
    let planted: Vec<String> = vmfuzz::DEFECTS
        .iter()
        .map(|d| format!("fake,fuzz,{d}"))
        .collect();
    let planted: Vec<[&str; 5]> = planted
        .iter()
        .map(|f| ["-p", "okernel", "--lib", "--features", f.as_str()])
        .collect();
    let mut steps: Vec<Vec<&str>> = vec![vec!["fmt", "--all", "--check"]];
    steps.extend(
        clippy
            .iter()
            .copied()
            .chain([fuzz])
            .chain(planted.iter().map(|a| &a[..]))
            .map(|args| [&["clippy"][..], args, &["--", "-D", "warnings"]].concat()),
    );
    for step in &steps {
        if !cargo(step)? {
            return Err(format!("`cargo {}` failed", step.join(" ")));
        }
    }
    // rustdoc with warnings denied: a broken intra-doc link fails.
    let doc = ["doc", "--workspace", "--no-deps"];
    eprintln!(
        "xtask: RUSTDOCFLAGS=\"-D warnings\" cargo {}",
        doc.join(" ")
    );
    let ok = Command::new(env!("CARGO"))
        .current_dir(images::root())
        .args(doc)
        .env("RUSTDOCFLAGS", "-D warnings")
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?
        .success();
    if !ok {
        return Err(format!(
            "`cargo {}` failed (rustdoc warnings are errors)",
            doc.join(" ")
        ));
    }
    Ok(true)
}

fn bench(rest: &[String]) -> Result<bool, String> {
    let which: Vec<&str> = if rest.is_empty() {
        vec!["ept", "vmx"]
    } else {
        rest.iter().map(String::as_str).collect()
    };
    let mut ok = true;
    for b in which {
        ok &= match b {
            "ept" => cargo(&["bench", "-p", "ept", "--bench", "ept"])?,
            "vmx" => bench::vmx()?,
            "kvm" => {
                images::build()?;
                cargo(&[
                    "run",
                    "--release",
                    "-p",
                    "qemu-harness",
                    "--bin",
                    "kvm-bench",
                    "--",
                    "--iterations",
                    "100",
                ])?
            }
            "fuzz" => vmfuzz::bench()?,
            "linux" => bench::linux()?,
            other => {
                return Err(format!(
                    "unknown benchmark `{other}` (have: ept, vmx, kvm, fuzz, linux)"
                ));
            }
        };
    }
    Ok(ok)
}
