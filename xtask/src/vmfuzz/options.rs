//! The options of `cargo xtask fuzz vm | vm-planted` and the driver
//! arguments they become.

use super::*;
use crate::fuzz::{number, option_value};
use std::path::PathBuf;

pub(super) const USAGE: &str = "\
usage: cargo xtask fuzz vm [options]
       cargo xtask fuzz vm-planted [--backend B] [--time T] [--seed S]
       cargo xtask fuzz vm-selftest

fuzz vm: builds the guest, a fuzz okernel image and the LibAFL driver
(vmfuzz/), then fuzzes okernel in a VM: each case runs in the guest's
executor; a case that breaks an oracle, kills the machine or hangs is a
finding, saved to target/vmfuzz/<run>/crashes/ with a .txt report.
  --backend B        bochs | kvm | auto (default auto: kvm where KVM offers
                     nested VMX, else bochs). Without nested VMX, kvm must
                     end with okernel's `VMX unavailable` (asserted)
  --time T           seconds to fuzz (default 60)
  --cores N          fuzzing clients, one VM each (default 1)
  --seed S           the RNG seed (default 1)
  --planted DEFECT   fuzz an image with a planted defect (text-writable,
                     pin-ignored, unlock, gate-bypass): an oracle must fire
                     (the campaign ends at the first oracle violation)
  --no-monitor       the negative control: the loader's `mode=direct` (no
                     monitor); an oracle must fire
  --stop-on-crash    end at the first finding of any kind
  --case-timeout S   the session's limit per case, in seconds
  --bochs-ips N      Bochs' emulated instructions per second (default 2M)
  --cpus N           Bochs' processors (default 1; 2..=8: okernel runs with
                     the others joined, every exit on its shared path, and
                     one of them runs the guest beside the executor)
  --replay FILE      run one saved case once and print its outcome

fuzz vm-planted: the oracles bite in the VM: for each planted defect an
oracle (the executor's or the monitor's) must fire within --time seconds
(default 120), and the clean image must run --time seconds without any
finding.

fuzz vm-selftest: the driver's rustfmt, clippy and tests (against a mock
session), then a mock campaign that must find the mock's planted defect.";

/// Options of `fuzz vm` and `fuzz vm-planted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VmOptions {
    pub(super) backend: String,
    pub(super) time: Option<u64>,
    pub(super) cores: usize,
    pub(super) seed: u64,
    pub(super) planted: Option<String>,
    pub(super) no_monitor: bool,
    pub(super) stop_on_crash: bool,
    pub(super) case_timeout: Option<u64>,
    pub(super) bochs_ips: Option<u64>,
    pub(super) cpus: Option<u32>,
    pub(super) replay: Option<PathBuf>,
}

impl Default for VmOptions {
    fn default() -> Self {
        Self {
            backend: "auto".into(),
            time: None,
            cores: 1,
            seed: 1,
            planted: None,
            no_monitor: false,
            stop_on_crash: false,
            case_timeout: None,
            bochs_ips: None,
            cpus: None,
            replay: None,
        }
    }
}

/// Parses `fuzz vm` (`planted_proof` false) or `fuzz vm-planted` options.
pub(super) fn parse(args: &[String], planted_proof: bool) -> Result<VmOptions, String> {
    let mut o = VmOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| option_value(&mut it, name, USAGE);
        let only_vm = |name: &str| {
            if planted_proof {
                Err(format!(
                    "{name} is not an option of `fuzz vm-planted`\n\n{USAGE}"
                ))
            } else {
                Ok(())
            }
        };
        match a.as_str() {
            "--backend" => {
                let b = value("--backend")?;
                if !["bochs", "kvm", "auto"].contains(&b.as_str()) {
                    return Err(format!(
                        "--backend: unknown backend `{b}` (have: bochs, kvm, auto)"
                    ));
                }
                o.backend = b;
            }
            "--time" => {
                let t = number(value("--time")?, "--time")?;
                if t == 0 {
                    return Err("--time: must be at least 1 second".into());
                }
                o.time = Some(t);
            }
            "--seed" => o.seed = number(value("--seed")?, "--seed")?,
            "--cores" => {
                only_vm("--cores")?;
                let n = number(value("--cores")?, "--cores")?;
                if n == 0 {
                    return Err("--cores: must be at least 1".into());
                }
                o.cores = n as usize;
            }
            "--planted" => {
                only_vm("--planted")?;
                let d = value("--planted")?;
                let full = if d.starts_with("planted-") {
                    d.clone()
                } else {
                    format!("planted-{d}")
                };
                if !DEFECTS.contains(&full.as_str()) {
                    return Err(format!(
                        "--planted: unknown defect `{d}` (have: text-writable, pin-ignored, unlock, gate-bypass)"
                    ));
                }
                o.planted = Some(full);
            }
            "--no-monitor" => {
                only_vm("--no-monitor")?;
                o.no_monitor = true;
            }
            "--stop-on-crash" => {
                only_vm("--stop-on-crash")?;
                o.stop_on_crash = true;
            }
            "--case-timeout" => {
                o.case_timeout = Some(number(value("--case-timeout")?, "--case-timeout")?);
            }
            "--bochs-ips" => {
                let n = number(value("--bochs-ips")?, "--bochs-ips")?;
                if n < 1_000_000 {
                    return Err("--bochs-ips: must be at least 1000000".into());
                }
                o.bochs_ips = Some(n);
            }
            "--cpus" => {
                let n = number(value("--cpus")?, "--cpus")?;
                if !(1..=8).contains(&n) {
                    return Err(format!("--cpus: {n} processors: expected 1 to 8"));
                }
                o.cpus = Some(n as u32);
            }
            "--replay" => {
                only_vm("--replay")?;
                o.replay = Some(PathBuf::from(value("--replay")?));
            }
            other => return Err(format!("unknown option `{other}`\n\n{USAGE}")),
        }
    }
    if o.no_monitor && o.planted.is_some() {
        return Err("--no-monitor and --planted exclude each other".into());
    }
    Ok(o)
}

/// Prints the help text when asked for it.
pub(super) fn help(args: &[String]) -> bool {
    let asked = args.iter().any(|a| a == "-h" || a == "--help");
    if asked {
        println!("{USAGE}");
    }
    asked
}

pub(super) fn common_args(o: &VmOptions, time: u64) -> Vec<String> {
    let mut a = vec![
        "--backend".to_string(),
        o.backend.clone(),
        "--time".into(),
        time.to_string(),
        "--seed".into(),
        o.seed.to_string(),
    ];
    if let Some(t) = o.case_timeout {
        a.extend(["--case-timeout".to_string(), t.to_string()]);
    }
    if let Some(n) = o.bochs_ips {
        a.extend(["--bochs-ips".to_string(), n.to_string()]);
    }
    if let Some(n) = o.cpus {
        a.extend(["--cpus".to_string(), n.to_string()]);
    }
    a
}
