//! `cargo xtask fuzz`: builds and runs the host fuzz targets of `fuzz/`
//! (libFuzzer through `libfuzzer-sys`, sanitizer coverage switched on with
//! stable `-C` flags; see docs/fuzzing.md).
//!
//! ```text
//! cargo xtask fuzz host [--target T] [--time SECONDS] [--seed N] [--runs N]
//! cargo xtask fuzz --replay FILE --target T
//! cargo xtask fuzz planted-defects [--time SECONDS] [--seed N]
//! ```
//!
//! `planted-defects` builds the fuzz crate once per deliberate policy
//! defect of [`DEFECTS`] (a cargo feature of okernel, off everywhere else)
//! and runs the `policy` target with a fixed seed for a bounded time: it
//! fails unless every defect is found by a crash whose message names the
//! oracle it violates.
//!
//! `host` runs every target (or one) for a bounded time each with a
//! progress line, saves crashing inputs to `fuzz/artifacts/<target>/`, and
//! fails if any target crashed; without `--target` it then proves the
//! coverage guidance is live: the `planted` target's defect must be found
//! within [`PLANTED_LIMIT_S`] seconds. New corpus entries go to the build
//! directory; the seeds in `fuzz/corpus/<target>/` are read, never
//! written. `--replay` runs one input once through its target.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The targets of a host campaign, in the order they run.
pub const TARGETS: [&str; 14] = [
    "hypercall",
    "hypercall_decode",
    "exit",
    "deliver",
    "policy",
    "qualification",
    "ept_ops",
    "elf_plan",
    "pvh",
    "linux_layout",
    "multiboot2",
    "cmdline",
    "handoff",
    "planted",
];

/// The deliberate policy defects (okernel and okernel-fuzz features) and
/// the oracle message that must find each.
pub const DEFECTS: [(&str, &str); 4] = [
    ("planted-text-writable", "oracle: view:"),
    ("planted-pin-ignored", "oracle: pin:"),
    ("planted-unlock", "oracle: lock:"),
    ("planted-gate-bypass", "oracle: gate:"),
];

/// How long each planted policy defect may take to be found.
pub const DEFECT_LIMIT_S: u64 = 60;

/// How long the planted defect may take to be found.
pub const PLANTED_LIMIT_S: u64 = 60;

/// The instrumentation: sanitizer coverage (inline 8-bit counters, PC
/// table, comparison tracing) as libFuzzer expects it, through stable
/// flags, plus debug assertions and overflow checks so arithmetic bugs
/// panic. `--cfg fuzzing` is what cargo-fuzz sets.
pub const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cdebug-assertions -Coverflow-checks --cfg fuzzing";

/// The host triple the targets build for: giving it explicitly keeps the
/// flags off build scripts and proc macros.
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

const USAGE: &str = "\
usage: cargo xtask fuzz host [--target T] [--time SECONDS] [--seed N] [--runs N]
       cargo xtask fuzz --replay FILE --target T
       cargo xtask fuzz planted-defects [--time SECONDS] [--seed N]
       cargo xtask fuzz vm [--backend B] [--time T] [--cores N] [--seed S] [--planted D]
                           [--no-monitor] [--stop-on-crash] [--replay FILE]
       cargo xtask fuzz --backend B [...]  (the same as `fuzz vm --backend B [...]`)
       cargo xtask fuzz vm-planted [--backend B] [--time T] [--seed S]
       cargo xtask fuzz vm-selftest
       (`cargo xtask fuzz vm --help` for the VM fuzzer's options)

targets: hypercall exit deliver policy qualification ept_ops elf_plan pvh linux_layout
         multiboot2 cmdline handoff planted (the coverage-guidance proof)";

/// Options of `cargo xtask fuzz`.
#[derive(Debug, Default)]
struct Options {
    host: bool,
    defects: bool,
    target: Option<String>,
    time: Option<u64>,
    seed: Option<u64>,
    runs: Option<u64>,
    replay: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| option_value(&mut it, name, USAGE);
        match a.as_str() {
            "host" => o.host = true,
            "planted-defects" => o.defects = true,
            "--target" => o.target = Some(value("--target")?),
            "--time" => o.time = Some(number(value("--time")?, "--time")?),
            "--seed" => o.seed = Some(number(value("--seed")?, "--seed")?),
            "--runs" => o.runs = Some(number(value("--runs")?, "--runs")?),
            "--replay" => o.replay = Some(PathBuf::from(value("--replay")?)),
            other => return Err(format!("unexpected argument `{other}`\n\n{USAGE}")),
        }
    }
    if let Some(t) = &o.target
        && !TARGETS.contains(&t.as_str())
    {
        return Err(format!("unknown fuzz target `{t}`\n\n{USAGE}"));
    }
    if o.defects {
        return if o.host || o.replay.is_some() || o.target.is_some() {
            Err(USAGE.to_string())
        } else {
            Ok(o)
        };
    }
    if o.host == o.replay.is_some() {
        return Err(USAGE.to_string());
    }
    if o.replay.is_some() && o.target.is_none() {
        return Err(format!("--replay needs --target\n\n{USAGE}"));
    }
    Ok(o)
}

/// `cargo xtask fuzz ARGS`: `Ok(true)` when every target ran clean (and
/// the planted defect was found), `Ok(false)` on a finding.
pub fn fuzz(args: &[String]) -> Result<bool, String> {
    match args.first().map(String::as_str) {
        Some("vm") => return crate::vmfuzz::vm(&args[1..]),
        Some("vm-planted") => return crate::vmfuzz::vm_planted(&args[1..]),
        Some("vm-selftest") => return crate::vmfuzz::selftest(&args[1..]),
        // `cargo xtask fuzz --backend B ...` (the issue's spelling) is the
        // VM fuzzer.
        _ if args.iter().any(|a| a == "--backend") => return crate::vmfuzz::vm(args),
        _ => {}
    }
    let o = parse(args)?;
    crate::deps::ensure(&[&crate::deps::FUZZER])?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("xtask has no parent directory")?
        .to_path_buf();
    let build_dir = std::env::var_os("OKERNEL_FUZZ_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("fuzz/target"));
    if o.defects {
        return planted_defects(&root, &build_dir, &o);
    }
    build(&root, &build_dir, o.target.as_deref(), None)?;
    let bin = |t: &str| build_dir.join(TRIPLE).join("release").join(t);

    if let Some(file) = &o.replay {
        let t = o.target.as_deref().unwrap_or_default();
        println!("fuzz: replaying {} through {t}", file.display());
        let status = Command::new(bin(t))
            .arg(file)
            .status()
            .map_err(|e| format!("cannot run {t}: {e}"))?;
        if status.success() {
            println!("fuzz: {t} ran the input cleanly");
        } else {
            println!("fuzz: {t} crashed on the input (reproduced)");
        }
        return Ok(status.success());
    }

    let time = o.time.unwrap_or(10);
    let seed = o.seed.unwrap_or(1);
    let chosen: Vec<&str> = match &o.target {
        Some(t) => vec![t.as_str()],
        None => TARGETS.to_vec(),
    };
    let mut clean = true;
    for t in chosen {
        let planted = t == "planted";
        let artifacts = if planted {
            build_dir.join("artifacts").join(t)
        } else {
            root.join("fuzz/artifacts").join(t)
        };
        let limit = if planted && o.target.is_none() {
            Limit::Time(PLANTED_LIMIT_S)
        } else {
            o.runs.map_or(Limit::Time(time), Limit::Runs)
        };
        let run = campaign(
            &bin(t),
            t,
            &build_dir.join("corpus").join(t),
            &root.join("fuzz/corpus").join(t),
            &artifacts,
            seed,
            limit,
        )?;
        match (planted, &run.crash) {
            (false, None) => {}
            (false, Some(path)) => {
                clean = false;
                println!("fuzz: {t}: FOUND a crash, saved to {}", path.display());
                println!(
                    "fuzz: reproduce: cargo xtask fuzz --replay {} --target {t}",
                    path.display()
                );
                for line in &run.tail {
                    println!("    {line}");
                }
            }
            (true, Some(_)) => println!(
                "fuzz: planted: defect found after {:.1} s, {} execs: coverage guidance works",
                run.elapsed.as_secs_f64(),
                run.execs
            ),
            (true, None) => {
                clean = false;
                println!("fuzz: planted: defect NOT found: is the coverage instrumentation off?");
            }
        }
    }
    Ok(clean)
}

/// `cargo xtask fuzz planted-defects`: every defect of [`DEFECTS`] must
/// be found by the `policy` target, by its oracle, within the time limit.
fn planted_defects(root: &Path, build_dir: &Path, o: &Options) -> Result<bool, String> {
    let time = o.time.unwrap_or(DEFECT_LIMIT_S);
    let seed = o.seed.unwrap_or(1);
    let mut all = true;
    for (feature, oracle) in DEFECTS {
        // A build directory of their own (the dependencies build once),
        // so the normal build's `policy` binary stays the clean one.
        let defects = build_dir.join("defects");
        build(root, &defects, Some("policy"), Some(feature))?;
        let bin = defects.join(TRIPLE).join("release").join("policy");
        let dir = defects.join(feature);
        // A fresh corpus each time: the proof starts from nothing.
        let work = dir.join("corpus-run");
        let _ = std::fs::remove_dir_all(&work);
        let run = campaign(
            &bin,
            "policy",
            &work,
            &root.join("fuzz/corpus/policy"),
            &dir.join("artifacts"),
            seed,
            Limit::Time(time),
        )?;
        let named = run.panic.iter().any(|l| l.contains(oracle));
        match (&run.crash, named) {
            (Some(_), true) => println!(
                "fuzz: {feature}: found after {:.1} s, {} execs, by `{oracle}`",
                run.elapsed.as_secs_f64(),
                run.execs
            ),
            (Some(p), false) => {
                all = false;
                println!(
                    "fuzz: {feature}: crashed ({}) but not by `{oracle}`:",
                    p.display()
                );
                for line in run.panic.iter().chain(&run.tail) {
                    println!("    {line}");
                }
            }
            (None, _) => {
                all = false;
                println!("fuzz: {feature}: NOT found in {time} s");
            }
        }
    }
    Ok(all)
}

fn build(
    root: &Path,
    build_dir: &Path,
    target: Option<&str>,
    feature: Option<&str>,
) -> Result<(), String> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root)
        .args(["build", "--release", "--manifest-path", "fuzz/Cargo.toml"])
        .args(["--target", TRIPLE])
        .env("CARGO_TARGET_DIR", build_dir)
        .env("RUSTFLAGS", RUSTFLAGS)
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    match target {
        Some(t) => cmd.args(["--bin", t]),
        None => cmd.arg("--bins"),
    };
    if let Some(f) = feature {
        cmd.args(["--features", f]);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("building the fuzz targets failed".into())
    }
}

/// How long a campaign runs.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Time(u64),
    Runs(u64),
}

/// What one campaign did.
struct Run {
    execs: u64,
    elapsed: Duration,
    crash: Option<PathBuf>,
    /// The last lines libFuzzer and the target printed (the panic).
    tail: Vec<String>,
    /// The panic message: the "panicked at" line and the one after it.
    panic: Vec<String>,
}

fn campaign(
    bin: &Path,
    target: &str,
    work: &Path,
    seeds: &Path,
    artifacts: &Path,
    seed: u64,
    limit: Limit,
) -> Result<Run, String> {
    for d in [work, artifacts] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let mut cmd = Command::new(bin);
    cmd.arg(work);
    if seeds.is_dir() {
        cmd.arg(seeds);
    }
    cmd.arg(format!("-seed={seed}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match limit {
        Limit::Time(s) => cmd.arg(format!("-max_total_time={s}")),
        Limit::Runs(n) => cmd.arg(format!("-runs={n}")),
    };
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (mut execs, mut corpus, mut crash) = (0u64, 0u64, None);
    let mut tail: Vec<String> = Vec::new();
    let mut panic: Vec<String> = Vec::new();
    let mut last = Instant::now();
    for line in BufReader::new(stderr).lines() {
        let line = line.map_err(|e| format!("reading {target}'s output: {e}"))?;
        if let Some(n) = line
            .strip_prefix('#')
            .and_then(|r| r.split_whitespace().next())
        {
            execs = n.parse().unwrap_or(execs);
        }
        if let Some(c) = field(&line, "corp:") {
            corpus = c
                .split('/')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(corpus);
        }
        if let Some(n) = field(&line, "stat::number_of_executed_units:") {
            execs = n.parse().unwrap_or(execs);
        }
        if let Some(p) = line.split("Test unit written to ").nth(1) {
            crash = Some(PathBuf::from(p.trim()));
        }
        if line.contains("panicked at") || panic.len() == 1 {
            panic.push(line.clone());
        }
        tail.push(line);
        if tail.len() > 40 {
            tail.remove(0);
        }
        if last.elapsed() >= Duration::from_secs(2) {
            last = Instant::now();
            progress(target, start.elapsed(), execs, corpus, crash.is_some());
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {target}: {e}"))?;
    let elapsed = start.elapsed();
    progress(target, elapsed, execs, corpus, crash.is_some());
    if !status.success() && crash.is_none() {
        crash = Some(artifacts.to_path_buf());
    }
    Ok(Run {
        execs,
        elapsed,
        crash,
        tail,
        panic,
    })
}

/// The value after option `name` (the next argument), or an error that
/// names the option, followed by `usage`.
pub fn option_value<'a>(
    it: &mut impl Iterator<Item = &'a String>,
    name: &str,
    usage: &str,
) -> Result<String, String> {
    it.next()
        .cloned()
        .ok_or_else(|| format!("{name} needs a value\n\n{usage}"))
}

/// `s` as the number option `name` takes, or an error naming the option.
pub fn number(s: String, name: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("{name}: `{s}` is not a number"))
}

/// The word after `key` in a libFuzzer status line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(key).nth(1)?.split_whitespace().next()
}

fn progress(target: &str, elapsed: Duration, execs: u64, corpus: u64, crashed: bool) {
    let secs = elapsed.as_secs_f64().max(0.001);
    println!(
        "fuzz {target:>13}: {secs:6.1} s  {execs:>10} execs  {:>9.0} exec/s  corpus {corpus:>5}  crashes {}",
        execs as f64 / secs,
        u8::from(crashed)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_host_and_replay() {
        let o = parse(&args("host --target pvh --time 5 --seed 3")).unwrap();
        assert!(o.host);
        assert_eq!(
            (o.target.as_deref(), o.time, o.seed),
            (Some("pvh"), Some(5), Some(3))
        );
        let o = parse(&args("--replay x --target exit")).unwrap();
        assert_eq!(o.replay, Some(PathBuf::from("x")));
        assert!(parse(&args("--replay x")).is_err());
        assert!(parse(&args("host --target nope")).is_err());
        assert!(parse(&args("")).is_err());
        let o = parse(&args("planted-defects --time 30")).unwrap();
        assert!(o.defects && o.time == Some(30));
        assert!(parse(&args("planted-defects --target exit")).is_err());
    }

    #[test]
    fn reads_libfuzzer_lines() {
        let l = "#131072\tpulse  cov: 599 ft: 1244 corp: 217/19Kb lim: 469 exec/s: 6898";
        assert_eq!(field(l, "corp:"), Some("217/19Kb"));
        assert_eq!(field(l, "exec/s:"), Some("6898"));
    }
}
