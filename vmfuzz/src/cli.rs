//! The command line: options, the campaign, `--replay`.

use crate::backends::{self, Backend, SessionConfig};
use crate::campaign::{self, Campaign};
use crate::executor::{Judged, StopOn, judge, verdict_name};
use std::path::PathBuf;
use std::time::Duration;

/// The help text.
pub const USAGE: &str = "\
usage: okernel-vmfuzz --image PATH --guest PATH [options]
       okernel-vmfuzz --image PATH --guest PATH --replay FILE [--backend B]

Coverage-guided fuzzing of okernel in a VM (LibAFL): each test case runs in
the in-guest executor of a booted okernel fuzz image; a case that breaks an
oracle, kills the machine or hangs is an objective, saved with a report.

options:
  --backend B        bochs | kvm | auto | mock (default auto: kvm where KVM
                     offers nested VMX, else bochs; mock: a fake session with
                     a planted defect, to test the driver itself)
  --image PATH       the okernel fuzz image (loader built with `fuzz`)
  --guest PATH       the guest kernel ELF
  --loader-args S    extra loader options, e.g. `mode=direct` (no monitor:
                     the negative control)
  --time SECONDS     how long to fuzz (default 60)
  --cores N          fuzzing clients, each with its own VM (default 1: in
                     process; N > 1: LibAFL's Launcher, one process per core)
  --seed N           the RNG seed (default: from the clock); client i uses N+i
  --seeds DIR        seed inputs besides the generated ones
  --out DIR          output: crashes/ (input + .txt report), corpus/, runs/
                     (default vmfuzz-out)
  --stop-on-crash    end the campaign at the first objective
  --stop-on-oracle   end it at the first oracle violation (the executor's or
                     the monitor's verdict); crashes and hangs are saved and
                     the campaign goes on (the planted-defect proof)
  --case-timeout S   the session's limit per case, in seconds (default: the
                     session's own, 2 s on Bochs, 1 s on KVM)
  --bochs-ips N      Bochs' emulated instructions per second (default 2M;
                     with `clock: sync=none` it only sets how many
                     instructions a byte of the UART takes)
  --cpus N           Bochs' processors (default 1; 2..=8: okernel runs
                     with the others joined, every exit on its shared path,
                     and one of them runs the guest beside the executor:
                     a CPUID and a hypercall in a loop, which must still
                     run at the end of every case)
  --empty-cases      send every case empty (no operations): the fixed cost
                     of a case, the baseline of `cargo xtask bench fuzz`
  --broker-port P    the TCP port of the multi-core broker (default: a free
                     one)
  --replay FILE      run exactly this case once and print the outcome: exit
                     0 if it passes, 1 if it violates, 2 on error
  -h, --help         this text

The last line of a campaign is `OKERNEL-FUZZ: {json}` (backend, execs,
execs_per_s, corpus, objectives, first_objective_s, ...). Exit status: 0 no
objective, 1 objectives found, 2 the campaign could not run.";

/// Parsed options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `--backend`.
    pub backend: String,
    /// `--image`.
    pub image: Option<PathBuf>,
    /// `--guest`.
    pub guest: Option<PathBuf>,
    /// `--loader-args`.
    pub loader_args: String,
    /// `--time`.
    pub time: u64,
    /// `--cores`.
    pub cores: usize,
    /// `--seed`.
    pub seed: Option<u64>,
    /// `--seeds`.
    pub seeds: Option<PathBuf>,
    /// `--out`.
    pub out: PathBuf,
    /// `--stop-on-crash` / `--stop-on-oracle`.
    pub stop_on: StopOn,
    /// `--broker-port`.
    pub broker_port: u16,
    /// `--case-timeout`.
    pub case_timeout: Option<u64>,
    /// `--bochs-ips`.
    pub bochs_ips: Option<u64>,
    /// `--cpus`.
    pub cpus: Option<u32>,
    /// `--empty-cases`.
    pub empty_cases: bool,
    /// `--replay`.
    pub replay: Option<PathBuf>,
    /// `--help`.
    pub help: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backend: "auto".into(),
            image: None,
            guest: None,
            loader_args: String::new(),
            time: 60,
            cores: 1,
            seed: None,
            seeds: None,
            out: PathBuf::from("vmfuzz-out"),
            stop_on: StopOn::Never,
            broker_port: 0,
            case_timeout: None,
            bochs_ips: None,
            cpus: None,
            empty_cases: false,
            replay: None,
            help: false,
        }
    }
}

/// Parses the arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        fn number<T: std::str::FromStr>(name: &str, s: String) -> Result<T, String> {
            s.parse::<T>()
                .map_err(|_| format!("{name}: `{s}` is not a valid number"))
        }
        match name {
            "--backend" => o.backend = value()?,
            "--image" => o.image = Some(value()?.into()),
            "--guest" => o.guest = Some(value()?.into()),
            "--loader-args" => o.loader_args = value()?,
            "--time" => o.time = number(name, value()?)?,
            "--cores" => o.cores = number(name, value()?)?,
            "--seed" => o.seed = Some(number(name, value()?)?),
            "--seeds" => o.seeds = Some(value()?.into()),
            "--out" => o.out = value()?.into(),
            "--broker-port" => o.broker_port = number(name, value()?)?,
            "--case-timeout" => o.case_timeout = Some(number(name, value()?)?),
            "--bochs-ips" => o.bochs_ips = Some(number(name, value()?)?),
            "--cpus" => {
                let n: u32 = number(name, value()?)?;
                if !(1..=8).contains(&n) {
                    return Err(format!("{name}: {n} processors: expected 1 to 8"));
                }
                o.cpus = Some(n);
            }
            "--replay" => o.replay = Some(value()?.into()),
            "--empty-cases" if inline.is_none() => o.empty_cases = true,
            "--stop-on-crash" if inline.is_none() => o.stop_on = StopOn::Objective,
            "--stop-on-oracle" if inline.is_none() => o.stop_on = StopOn::Oracle,
            "-h" | "--help" => o.help = true,
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if o.cores == 0 {
        return Err("--cores: must be at least 1".into());
    }
    if o.time == 0 && o.replay.is_none() {
        return Err("--time: must be at least 1 second".into());
    }
    Ok(o)
}

/// Runs the command line; returns the exit status.
pub fn main(args: &[String]) -> u8 {
    let o = match parse(args) {
        Ok(o) if o.help => {
            println!("{USAGE}");
            return 0;
        }
        Ok(o) => o,
        Err(e) => {
            eprintln!("okernel-vmfuzz: error: {e}\n\n{USAGE}");
            return 2;
        }
    };
    match run(&o) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("okernel-vmfuzz: error: {e}");
            2
        }
    }
}

fn run(o: &Options) -> Result<u8, String> {
    let (backend, why) = backends::choose(&o.backend)?;
    eprintln!("vmfuzz: backend {} ({why})", backend.name());
    let need = |p: &Option<PathBuf>, name: &str| match (p, backend) {
        (Some(p), _) => Ok(p.clone()),
        (None, Backend::Mock) => Ok(PathBuf::new()),
        (None, _) => Err(format!(
            "{name} is required for the {} backend",
            backend.name()
        )),
    };
    let cfg = SessionConfig {
        image: need(&o.image, "--image")?,
        guest: need(&o.guest, "--guest")?,
        loader_args: o.loader_args.clone(),
        run_dir: o.out.join("runs"),
        case_timeout: o.case_timeout.map(Duration::from_secs),
        bochs_ips: o.bochs_ips,
        bochs_cpus: o.cpus,
        empty_cases: o.empty_cases,
    };
    if let Some(file) = &o.replay {
        return replay(backend, &cfg, file);
    }
    let seed = o.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    if let Some(dir) = &o.seeds
        && !dir.is_dir()
    {
        return Err(format!("--seeds: {} is not a directory", dir.display()));
    }
    eprintln!(
        "vmfuzz: {} s, {} core(s), seed {seed}, output in {}{}",
        o.time,
        o.cores,
        o.out.display(),
        if o.loader_args.is_empty() {
            String::new()
        } else {
            format!(", loader options `{}`", o.loader_args)
        }
    );
    let c = Campaign {
        backend: backend.name().into(),
        time: Duration::from_secs(o.time),
        cores: o.cores,
        seed,
        seeds: o.seeds.clone(),
        out: o.out.clone(),
        stop_on: o.stop_on,
        broker_port: o.broker_port,
    };
    let open = |i: usize| backends::open(backend, &cfg, i);
    let summary = campaign::run(&c, &open)?;
    if let Some(report) = &summary.first_report {
        eprintln!(
            "vmfuzz: first objective after {:.1} s:",
            summary.first_objective_s.unwrap_or(0.0)
        );
        for line in report.lines().take(40) {
            eprintln!("    {line}");
        }
        eprintln!(
            "vmfuzz: objectives are in {} (replay one with --replay FILE)",
            o.out.join("crashes").display()
        );
    }
    if let Some(f) = &summary.fatal {
        eprintln!("okernel-vmfuzz: error: the campaign could not go on: {f}");
    }
    println!("{}", summary.line());
    Ok(if summary.fatal.is_some() {
        2
    } else if summary.objectives > 0 {
        1
    } else {
        0
    })
}

/// `--replay FILE`: one case, its outcome printed.
fn replay(backend: Backend, cfg: &SessionConfig, file: &PathBuf) -> Result<u8, String> {
    let case = std::fs::read(file).map_err(|e| format!("--replay: {}: {e}", file.display()))?;
    let mut session = backends::open(backend, cfg, 0).map_err(|e| e.to_string())?;
    let result = session.run_case(&case);
    println!(
        "replay: {} ({} bytes) on {}",
        file.display(),
        case.len(),
        backend.name()
    );
    println!("verdict: {}", verdict_name(&result));
    match &result {
        Ok(o) => {
            println!("message: {}", o.message);
            println!("ops run: {} of {}", o.ops_run, o.ops_total);
            println!("exits: {}", o.exits);
            println!("hits: {}", o.hits.len());
        }
        Err(e) => println!("message: {e}"),
    }
    Ok(match judge(&result) {
        Judged::Pass => 0,
        Judged::Crash | Judged::Timeout => {
            if result.is_ok() {
                println!("--- console (last lines) ---\n{}", session.console_tail());
            }
            1
        }
        Judged::Fatal(_) => 2,
    })
}
