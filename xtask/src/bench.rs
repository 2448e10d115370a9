//! `cargo xtask bench`: the `ept` library benchmark, and the exit
//! round-trip benchmark (`vmx`): the demo guest's `scenario=bench` on every
//! backend with VMX, each figure against the plain loop of the same run.

use crate::images;
use okernel_abi::result::BENCH_PREFIX;
use qemu_harness::{Backend, GuestModule, RunSpec, VmxSupport};
use std::time::Duration;

/// One benchmark line from the guest.
#[derive(Debug, serde::Deserialize)]
struct Line {
    bench: String,
    what: String,
    iterations: u64,
    ticks_per_op: u64,
    baseline_ticks_per_op: u64,
}

/// Runs the exit round-trip benchmark on every backend with VMX.
pub fn vmx() -> Result<bool, String> {
    crate::deps::ensure(&[&crate::deps::BOCHS])?;
    let images = images::build()?;
    let backends: Vec<Box<dyn Backend>> = crate::e2e::backends()
        .into_iter()
        .filter(|p| p.availability.is_available() && p.backend.vmx() == VmxSupport::Available)
        .map(|p| p.backend)
        .collect();
    let mut ok = true;
    for backend in backends {
        // `log=error`: audit records still go to the monitor's ring, but
        // are not printed: printing each over the UART would dominate the
        // EPT-violation figure.
        let spec = RunSpec {
            name: format!("bench-{}", backend.name()),
            image: images.okernel.clone(),
            guest: GuestModule::File(images.guest.clone()),
            cmdline: "log=error".into(),
            guest_cmdline: "scenario=bench".into(),
            timeout: Duration::from_secs(300),
            run_dir: images::root()
                .join("target/runs")
                .join(format!("bench-{}", backend.name())),
            gdb: false,
        };
        eprintln!("xtask: exit round trips on {} ...", backend.name());
        let report = backend.run(&spec).map_err(|e| e.to_string())?;
        let lines: Vec<Line> = report
            .console
            .lines()
            .filter_map(|l| l.split_once(BENCH_PREFIX).map(|(_, j)| j.trim()))
            .map(|j| serde_json::from_str(j).map_err(|e| format!("bad bench line `{j}`: {e}")))
            .collect::<Result<_, _>>()?;
        if lines.is_empty() || report.outcome() != Some(okernel_abi::result::Outcome::Pass) {
            eprintln!(
                "xtask: {}: benchmark run failed: {}",
                backend.name(),
                report.summary()
            );
            ok = false;
            continue;
        }
        let unit = if backend.name() == "bochs" {
            "instructions (Bochs TSC, clock: sync=none)"
        } else {
            "TSC cycles"
        };
        let loop_cost = lines
            .iter()
            .find(|l| l.bench == "loop")
            .map(|l| l.ticks_per_op.max(1))
            .unwrap_or(1);
        println!(
            "\nexit round trips on {} — {unit}; loop = baseline of the same run",
            backend.name()
        );
        println!(
            "{:<16} {:>10} {:>12} {:>9}  what",
            "bench", "per op", "vs loop", "iters"
        );
        for l in &lines {
            let ratio = l.ticks_per_op as f64 / loop_cost as f64;
            println!(
                "{:<16} {:>10} {:>11.1}x {:>9}  {} (baseline subtracted: {}/op)",
                l.bench, l.ticks_per_op, ratio, l.iterations, l.what, l.baseline_ticks_per_op
            );
        }
    }
    Ok(ok)
}
