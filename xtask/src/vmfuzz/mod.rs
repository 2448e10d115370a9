//! `cargo xtask fuzz vm | vm-planted` and `cargo xtask bench fuzz`: the VM
//! fuzzer (`vmfuzz/`, LibAFL) against a fuzz build of okernel on Bochs or
//! KVM (docs/fuzzing.md, "The VM fuzzer").
//!
//! ```text
//! cargo xtask fuzz vm [--backend B] [--time T] [--cores N] [--seed S]
//!                     [--planted DEFECT] [--no-monitor] [--stop-on-crash]
//!                     [--case-timeout S] [--replay FILE]
//! cargo xtask fuzz vm-planted [--backend B] [--time T] [--seed S]
//! cargo xtask fuzz vm-selftest
//! cargo xtask bench fuzz
//! ```

mod driver;
mod options;

use driver::*;
use options::*;

use crate::images;
use std::path::Path;
use std::process::{Command, Stdio};

/// The planted defects of the VM proof (loader features forwarding
/// okernel's): the host proof's four ([`crate::fuzz::DEFECTS`]), then
/// issue 13's port-I/O, debug-state and self-IPI classes, which live in
/// the fuzz build's one seam (`okernel/src/fuzz/planted.rs`) and need a
/// VM to show.
pub const DEFECTS: [&str; 9] = [
    "planted-text-writable",
    "planted-pin-ignored",
    "planted-unlock",
    "planted-gate-bypass",
    "planted-kbc-output-port",
    "planted-dma-ports-passed",
    "planted-gate-debug-state",
    "planted-gate-if",
    "planted-gate-nmi",
];

/// How long each planted defect may take to be found by the VM fuzzer,
/// by default.
pub const VM_DEFECT_LIMIT_S: u64 = 120;

/// The default campaign length of `fuzz vm`.
pub const VM_DEFAULT_TIME_S: u64 = 60;

/// How long `bench fuzz` runs each backend.
pub const BENCH_TIME_S: u64 = 30;

/// Whether `backend` (after `auto`) is KVM on a host without nested VMX:
/// then a monitor image must end with `VMX unavailable`.
fn kvm_without_vmx(backend: &str) -> bool {
    backend == "kvm" && !qemu_harness::kvm_nested_vmx()
}

/// `cargo xtask fuzz vm ARGS`.
pub fn vm(args: &[String]) -> Result<bool, String> {
    if help(args) {
        return Ok(true);
    }
    let o = parse(args, false)?;
    let (built, images) = build(&[o.planted.as_deref()])?;
    let image = &images[0];
    let variant = match (&o.planted, o.no_monitor) {
        (Some(d), _) => d.clone(),
        (None, true) => "no-monitor".into(),
        (None, false) => "clean".into(),
    };
    let name = format!("{variant}-{}", o.backend);
    if o.backend != "bochs" {
        // The harness's one decision of what this KVM runs.
        println!(
            "fuzz vm: KVM on this host: {}",
            qemu_harness::KvmHost::get().describe()
        );
    }
    let mut args = common_args(&o, o.time.unwrap_or(VM_DEFAULT_TIME_S));
    args.extend(["--cores".into(), o.cores.to_string()]);
    if o.no_monitor {
        args.extend(["--loader-args".into(), "mode=direct".into()]);
    }
    if o.no_monitor || o.planted.is_some() {
        args.push("--stop-on-oracle".into());
    } else if o.stop_on_crash {
        args.push("--stop-on-crash".into());
    }
    if let Some(file) = &o.replay {
        return replay(&built, image, &o, file);
    }
    if let Some(cpus) = o.cpus.filter(|&n| n > 1) {
        joins(&built, image, &o.backend, cpus)?;
    }
    let run = drive(&built, image, &name, &args)?;
    let s = &run.summary;
    // What this run must show.
    if let Some(fatal) = &s.fatal {
        if kvm_without_vmx(&s.backend) && !o.no_monitor && fatal.contains("VMX unavailable") {
            println!(
                "fuzz vm: kvm: no nested VMX on this host, and okernel says so as it must: {}",
                fatal.lines().next().unwrap_or_default()
            );
            println!(
                "fuzz vm: kvm: no campaign ran (use --backend bochs, or a host with nested VMX)"
            );
            return Ok(true);
        }
        return Err(format!("fuzz vm: the campaign could not run: {fatal}"));
    }
    if kvm_without_vmx(&s.backend) && !o.no_monitor {
        println!(
            "fuzz vm: kvm: a monitor image ran cases on a host without nested VMX: expected `VMX unavailable`"
        );
        return Ok(false);
    }
    let found = describe(s);
    let expect_finding = o.no_monitor || o.planted.is_some();
    if expect_finding {
        if s.oracles > 0 {
            println!(
                "fuzz vm: {variant}: an oracle fired, as it must: {} after {:.1} s: {}",
                s.oracle_verdict.as_deref().unwrap_or("?"),
                s.first_oracle_s.unwrap_or(0.0),
                s.oracle_message.as_deref().unwrap_or("")
            );
            if s.objectives > s.oracles {
                println!(
                    "fuzz vm: {variant}: also {} other findings: {found}",
                    s.objectives - s.oracles
                );
            }
            Ok(true)
        } else {
            println!(
                "fuzz vm: {variant}: no oracle fired in {} execs ({:.0} s){}",
                s.execs,
                o.time.unwrap_or(VM_DEFAULT_TIME_S),
                if s.objectives > 0 {
                    format!("; other findings: {found}")
                } else {
                    String::new()
                }
            );
            Ok(false)
        }
    } else if s.objectives > 0 {
        let kept = keep_findings(&run, &name);
        println!("fuzz vm: FINDING on the clean image: {found}");
        if let Some(k) = kept {
            println!(
                "fuzz vm: kept in {} (reproduce: cargo xtask fuzz vm --backend {} --replay FILE)",
                k.display(),
                s.backend
            );
        }
        Ok(false)
    } else {
        println!(
            "fuzz vm: clean: {} execs at {:.1}/s on {}, corpus {}, coverage {}: no finding",
            s.execs, s.execs_per_s, s.backend, s.corpus, s.coverage
        );
        Ok(true)
    }
}

/// With `--cpus N`, before the campaign: the same fuzz image on a Bochs
/// of `cpus` processors, booted once with the monitor's log at `info`
/// (the campaign's is `error`), must say that the other processors
/// joined the run — else the campaign would fuzz one processor while
/// claiming several.
fn joins(built: &Built, image: &Path, backend: &str, cpus: u32) -> Result<(), String> {
    if backend != "bochs" {
        return Err(format!(
            "fuzz vm: --cpus {cpus}: only the bochs backend runs several processors"
        ));
    }
    let name = format!("fuzz-joins-{cpus}cpu");
    let spec = qemu_harness::RunSpec {
        name: name.clone(),
        image: image.to_path_buf(),
        guest: qemu_harness::GuestModule::File(built.guest.clone()),
        cmdline: "log=info".into(),
        guest_cmdline: "scenario=boot".into(),
        timeout: std::time::Duration::from_secs(120),
        run_dir: images::root().join("target/runs").join(&name),
        gdb: false,
    };
    let config = qemu_harness::bochs::BochsConfig {
        model: qemu_harness::bochs::DEFAULT_MODEL,
        cpus,
        ..Default::default()
    };
    let report =
        qemu_harness::bochs::Bochs::run_config(&spec, config).map_err(|e| e.to_string())?;
    let want = format!("okernel: {} application processor(s) joined", cpus - 1);
    match report.monitor_lines().find(|l| l.contains(&want)) {
        Some(line) => {
            println!(
                "fuzz vm: {cpus} processors: the fuzz image says `{}`",
                line.trim()
            );
            Ok(())
        }
        None => Err(format!(
            "fuzz vm: --cpus {cpus}: the fuzz image did not say `{want}` ({}; console in {})",
            report.summary(),
            spec.run_dir.display()
        )),
    }
}

fn replay(built: &Built, image: &Path, o: &VmOptions, file: &Path) -> Result<bool, String> {
    let mut cmd = Command::new(&built.driver);
    cmd.arg("--image")
        .arg(image)
        .arg("--guest")
        .arg(&built.guest)
        .args(["--backend", &o.backend])
        .arg("--out")
        .arg(images::root().join("target/vmfuzz/replay"))
        .arg("--replay")
        .arg(file);
    if o.no_monitor {
        cmd.args(["--loader-args", "mode=direct"]);
    }
    if let Some(t) = o.case_timeout {
        cmd.args(["--case-timeout", &t.to_string()]);
    }
    if let Some(n) = o.bochs_ips {
        cmd.args(["--bochs-ips", &n.to_string()]);
    }
    if let Some(n) = o.cpus {
        cmd.args(["--cpus", &n.to_string()]);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", built.driver.display()))?;
    match status.code() {
        Some(0) => {
            println!("fuzz vm: the case passes");
            Ok(true)
        }
        Some(1) => {
            println!("fuzz vm: the case violates (reproduced)");
            Ok(false)
        }
        _ => Err(format!("the replay could not run ({status})")),
    }
}

/// `cargo xtask fuzz vm-planted ARGS`: each planted defect must be found
/// within the limit; the clean image must run as long without a finding.
pub fn vm_planted(args: &[String]) -> Result<bool, String> {
    if help(args) {
        return Ok(true);
    }
    let o = parse(args, true)?;
    let limit = o.time.unwrap_or(VM_DEFECT_LIMIT_S);
    let mut variants: Vec<Option<&str>> = DEFECTS.iter().map(|d| Some(*d)).collect();
    variants.push(None);
    let (built, images) = build(&variants)?;
    let mut rows = Vec::new();
    let mut all = true;
    for (v, image) in variants.iter().zip(&images) {
        let label = v.unwrap_or("clean");
        let mut args = common_args(&o, limit);
        if v.is_some() {
            args.push("--stop-on-oracle".into());
        }
        let run = drive(&built, image, &format!("{label}-{}", o.backend), &args)?;
        let s = &run.summary;
        if let Some(f) = &s.fatal {
            return Err(format!(
                "fuzz vm-planted: {label}: the campaign could not run: {f}"
            ));
        }
        let found = s.first_oracle_s.is_some_and(|t| t <= limit as f64);
        let ok = if v.is_some() {
            found
        } else {
            s.objectives == 0
        };
        if !ok && v.is_none() {
            let kept = keep_findings(&run, label);
            println!(
                "fuzz vm-planted: FINDING on the clean image (a real bug): {}",
                describe(s)
            );
            if let Some(k) = kept {
                println!("fuzz vm-planted: kept in {}", k.display());
            }
        }
        all &= ok;
        rows.push((label.to_string(), s.clone(), ok));
    }
    println!(
        "\nVM planted-defect proof on {}, seed {}, limit {limit} s",
        rows.first().map_or("?", |r| r.1.backend.as_str()),
        o.seed
    );
    println!(
        "{:<24} {:<6} {:>9} {:>8} {:>8}  first finding",
        "image", "", "found (s)", "execs", "exec/s"
    );
    for (label, s, ok) in &rows {
        let t = s
            .first_oracle_s
            .map_or("-".to_string(), |t| format!("{t:.1}"));
        let what = match (&s.oracle_verdict, &s.oracle_message) {
            (Some(v), Some(m)) => format!("{v}: {}", m.chars().take(90).collect::<String>()),
            _ => "no oracle fired".into(),
        };
        let what = if s.objectives > s.oracles {
            format!(
                "{what} (+{} crash/hang findings, first: {})",
                s.objectives - s.oracles,
                s.first_verdict.as_deref().unwrap_or("?")
            )
        } else {
            what
        };
        println!(
            "{label:<24} {:<6} {t:>9} {:>8} {:>8.1}  {what}",
            if *ok { "ok" } else { "FAIL" },
            s.execs,
            s.execs_per_s
        );
    }
    Ok(all)
}

/// `cargo xtask fuzz vm-selftest`: the driver's own checks — rustfmt,
/// clippy `-D warnings` and its tests (the executor against a mock
/// session), then a campaign through its command line on the mock backend
/// that must find the mock's planted defect (the LibAFL loop is live).
pub fn selftest(args: &[String]) -> Result<bool, String> {
    if let Some(a) = args.first() {
        return Err(format!("unexpected argument `{a}` for `fuzz vm-selftest`"));
    }
    let steps: [&[&str]; 3] = [
        &["fmt", "--manifest-path", "vmfuzz/Cargo.toml", "--check"],
        &[
            "clippy",
            "--release",
            "--all-targets",
            "--manifest-path",
            "vmfuzz/Cargo.toml",
            "--",
            "-D",
            "warnings",
        ],
        &["test", "--release", "--manifest-path", "vmfuzz/Cargo.toml"],
    ];
    for step in steps {
        eprintln!("xtask: cargo {}", step.join(" "));
        if !vmfuzz_cargo(step)? {
            return Err(format!("`cargo {}` failed", step.join(" ")));
        }
    }
    let driver = build_driver()?;
    let mut all = true;
    // In-process, then under LibAFL's Launcher (two forked clients and a
    // broker).
    for cores in ["1", "2"] {
        let out = images::root().join(format!("target/vmfuzz/selftest-mock-{cores}"));
        let _ = std::fs::remove_dir_all(&out);
        let output = Command::new(&driver)
            .args(["--backend", "mock", "--time", "30", "--seed", "1"])
            .args(["--stop-on-oracle", "--cores", cores])
            .arg("--out")
            .arg(&out)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", driver.display()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let summary = text
            .lines()
            .find_map(summary_of)
            .ok_or("the mock campaign printed no summary line")??;
        match summary.first_oracle_s {
            Some(t) if output.status.code() == Some(1) => println!(
                "fuzz vm-selftest: {cores} core(s): the mock's planted defect was found after {t:.1} s, {} execs: the LibAFL loop is live",
                summary.execs
            ),
            _ => {
                all = false;
                println!(
                    "fuzz vm-selftest: {cores} core(s): the mock's planted defect was NOT found ({}; exit {})",
                    text.trim(),
                    output.status
                );
            }
        }
    }
    Ok(all)
}

/// `cargo xtask bench fuzz`: cases per second of the clean fuzz image on
/// each backend that can run it (KVM only with nested VMX; otherwise the
/// reason is printed), and the ratio to a baseline measured in the same
/// run: the same loop with every case sent empty (`--empty-cases`), the
/// fixed cost of a case (transport, switches, reset, check, driver).
pub fn bench() -> Result<bool, String> {
    let (built, images) = build(&[None])?;
    let mut rows = Vec::new();
    let mut ok = true;
    for backend in ["bochs", "kvm"] {
        let host = qemu_harness::KvmHost::get();
        if backend == "kvm" && !host.nested_vmx() {
            let why = format!("KVM {}", host.describe());
            rows.push((backend, None, None, format!("not measured: {why}")));
            continue;
        }
        let o = VmOptions {
            backend: backend.into(),
            ..VmOptions::default()
        };
        // The baseline, in the same run: every case sent empty, so no
        // operation runs but everything else a case costs does.
        let mut empty_args = common_args(&o, BENCH_TIME_S);
        empty_args.push("--empty-cases".into());
        let empty = drive(
            &built,
            &images[0],
            &format!("bench-{backend}-empty"),
            &empty_args,
        )?
        .summary;
        let run = drive(
            &built,
            &images[0],
            &format!("bench-{backend}"),
            &common_args(&o, BENCH_TIME_S),
        )?;
        let s = run.summary;
        let note = match (s.fatal.as_ref().or(empty.fatal.as_ref()), s.objectives) {
            (Some(f), _) => {
                ok = false;
                format!("failed: {}", f.lines().next().unwrap_or_default())
            }
            (None, 0) => format!("corpus {}, coverage {}", s.corpus, s.coverage),
            (None, n) => format!(
                "corpus {}, coverage {}; {n} findings (their restarts are in the rate)",
                s.corpus, s.coverage
            ),
        };
        rows.push((backend, Some(s), Some(empty), note));
    }
    println!(
        "\nVM fuzzing throughput, clean fuzz image, seed 1, {BENCH_TIME_S} s each, 1 core; \
         baseline: the same loop with every case empty"
    );
    println!(
        "{:<8} {:>8} {:>9} {:>14} {:>8}  notes",
        "backend", "execs", "exec/s", "empty exec/s", "ratio"
    );
    for (b, s, empty, note) in rows {
        match (s, empty) {
            (Some(s), Some(e)) => println!(
                "{b:<8} {:>8} {:>9.1} {:>14.1} {:>7.2}x  {note}",
                s.execs,
                s.execs_per_s,
                e.execs_per_s,
                s.execs_per_s / e.execs_per_s.max(f64::MIN_POSITIVE)
            ),
            _ => println!(
                "{b:<8} {:>8} {:>9} {:>14} {:>8}  {note}",
                "-", "-", "-", "-"
            ),
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_vm_options() {
        let o = parse(
            &args("--backend bochs --time 5 --seed 3 --cores 2 --planted unlock"),
            false,
        )
        .unwrap();
        assert_eq!(o.backend, "bochs");
        assert_eq!((o.time, o.seed, o.cores), (Some(5), 3, 2));
        assert_eq!(o.planted.as_deref(), Some("planted-unlock"));
        let o = parse(&args("--no-monitor --replay x"), false).unwrap();
        assert!(o.no_monitor);
        assert_eq!(o.replay, Some(PathBuf::from("x")));
        assert_eq!(parse(&[], false).unwrap(), VmOptions::default());
    }

    #[test]
    fn bad_options_name_the_option() {
        for (a, want) in [
            ("--backend qemu", "--backend"),
            ("--time x", "--time"),
            ("--time 0", "--time"),
            ("--cores 0", "--cores"),
            ("--planted nope", "--planted"),
            ("--seed", "--seed needs a value"),
            ("--frobnicate", "`--frobnicate`"),
            ("--planted unlock --no-monitor", "--no-monitor"),
        ] {
            let e = parse(&args(a), false).unwrap_err();
            assert!(e.contains(want), "{a}: {e}");
        }
        let e = parse(&args("--cores 2"), true).unwrap_err();
        assert!(
            e.contains("--cores is not an option of `fuzz vm-planted`"),
            "{e}"
        );
        assert!(parse(&args("--backend kvm --time 30 --seed 2"), true).is_ok());
    }

    #[test]
    fn reads_the_summary_line() {
        let l = r#"OKERNEL-FUZZ: {"backend":"bochs","execs":12,"execs_per_s":2.5,"corpus":3,"objectives":1,"first_objective_s":4.5,"coverage":40,"timeouts":0,"restarts":1,"elapsed_s":5.0,"cores":1,"first_verdict":"monitor oracle","first_message":"locked region changed"}"#;
        let s = summary_of(l).unwrap().unwrap();
        assert_eq!((s.execs, s.objectives, s.coverage), (12, 1, 40));
        assert_eq!(s.first_objective_s, Some(4.5));
        assert_eq!(s.first_verdict.as_deref(), Some("monitor oracle"));
        assert!(summary_of("vmfuzz [bochs] 1.0 s").is_none());
        assert!(summary_of("OKERNEL-FUZZ: {").unwrap().is_err());
        let l = r#"OKERNEL-FUZZ: {"backend":"kvm","execs":0,"execs_per_s":0.0,"corpus":0,"objectives":0,"first_objective_s":null,"fatal":"VMX unavailable on kvm"}"#;
        let s = summary_of(l).unwrap().unwrap();
        assert!(s.fatal.unwrap().contains("VMX unavailable"));
    }
}
