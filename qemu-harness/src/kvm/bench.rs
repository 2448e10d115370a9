//! How fast a VM goes back to its snapshot: the figure that bounds the
//! fuzzer's test cases per second.

use super::{Kvm, KvmError, RunEnd, Vm};
use crate::{HarnessError, RunSpec};
use std::time::{Duration, Instant};

/// What [`bench_resets`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ResetBench {
    /// Run + reset cycles measured.
    pub iterations: u32,
    /// The first run, from the PVH entry to the image's outcome (the boot
    /// time, without VM creation and loading).
    pub first_run: Duration,
    /// Creating the VM and loading the image and the module.
    pub setup: Duration,
    /// How every run ended (the same each time, or the bench fails).
    pub end: RunEnd,
    /// Resets per second after a full run (dirty pages copied back).
    pub resets_per_sec: f64,
    /// Pages copied back per reset after a full run, on average.
    pub dirty_pages: f64,
    /// Run + reset cycles per second.
    pub cycles_per_sec: f64,
    /// Resets per second when nothing ran since the last one: the fixed
    /// cost of the register, MSR and interrupt-controller ioctls.
    pub idle_resets_per_sec: f64,
}

impl std::fmt::Display for ResetBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "setup {:.1} ms, first run {:.1} ms ({:?}); over {} cycles: {:.0} resets/s \
             ({:.0} dirty pages each), {:.0} run+reset cycles/s, {:.0} idle resets/s",
            self.setup.as_secs_f64() * 1e3,
            self.first_run.as_secs_f64() * 1e3,
            self.end,
            self.iterations,
            self.resets_per_sec,
            self.dirty_pages,
            self.cycles_per_sec,
            self.idle_resets_per_sec
        )
    }
}

fn per_sec(n: u32, d: Duration) -> f64 {
    f64::from(n) / d.as_secs_f64().max(1e-9)
}

/// Boots `spec` on `kvm`, snapshots it at the PVH entry, runs it to its
/// end, then `iterations` times resets and runs it again, checking that
/// every run ends the same way and prints the same console. Each run gets
/// `spec.timeout`.
pub fn bench_resets(
    kvm: &Kvm,
    spec: &RunSpec,
    iterations: u32,
) -> Result<ResetBench, HarnessError> {
    let iterations = iterations.max(1);
    let t = Instant::now();
    let mut vm = kvm.boot(spec)?;
    let setup = t.elapsed();
    let snap = vm.snapshot()?;

    let t = Instant::now();
    let end = vm.run(Instant::now() + spec.timeout)?;
    let first_run = t.elapsed();
    let console = vm.devices.serial.output.clone();

    let (mut in_reset, mut pages) = (Duration::ZERO, 0usize);
    let cycles = Instant::now();
    for i in 0..iterations {
        let t = Instant::now();
        pages += vm.reset(&snap)?;
        in_reset += t.elapsed();
        let again = vm.run(Instant::now() + spec.timeout)?;
        check_same(&vm, i, &end, &again, &console)?;
    }
    let cycles = cycles.elapsed();

    vm.reset(&snap)?;
    let t = Instant::now();
    for _ in 0..iterations {
        vm.reset(&snap)?;
    }
    let idle = t.elapsed();

    Ok(ResetBench {
        iterations,
        first_run,
        setup,
        end,
        resets_per_sec: per_sec(iterations, in_reset),
        dirty_pages: pages as f64 / f64::from(iterations),
        cycles_per_sec: per_sec(iterations, cycles),
        idle_resets_per_sec: per_sec(iterations, idle),
    })
}

fn check_same(
    vm: &Vm,
    i: u32,
    first: &RunEnd,
    again: &RunEnd,
    console: &[u8],
) -> Result<(), HarnessError> {
    let why = if again != first {
        format!("ended {again:?}, the first run {first:?}")
    } else if vm.devices.serial.output != console {
        "printed another console than the first run".to_string()
    } else {
        return Ok(());
    };
    Err(KvmError::NotReproducible { run: i + 2, why }.into())
}
