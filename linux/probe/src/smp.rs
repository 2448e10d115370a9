//! `okernel.cpus=N` (the cases that boot Linux on several processors,
//! issue 17): every processor is online and each one runs under the
//! monitor, and the probe moves itself between processors so that the
//! client locks on one and the container's attacks run on another.

use crate::Checks;
use okernel_abi::cpuid::{LEAF_SIGNATURE, is_signature};
use okernel_linux_probe::{Expect, param};

/// How many processors the command line says Linux has (`okernel.cpus`).
pub(crate) fn expected(cmdline: &str) -> Option<usize> {
    param(cmdline, "okernel.cpus")?.parse().ok()
}

/// Runs this process (and the children it starts from now on) on `cpu`
/// only; `Err` with the reason.
#[allow(unsafe_code)]
pub(crate) fn pin(cpu: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data, all-zero is the empty set; CPU_SET
    // writes inside it (it checks `cpu` against the set's size);
    // sched_setaffinity(2) reads the set and changes only this thread's
    // affinity (the probe is single-threaded).
    let r = unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "sched_setaffinity(CPU {cpu}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// The processor this thread runs on now.
#[allow(unsafe_code)]
fn current() -> i32 {
    // SAFETY: sched_getcpu(3) takes no arguments and touches no memory
    // of this process.
    unsafe { libc::sched_getcpu() }
}

/// The row `linux-smp-every-cpu-under-okernel` (under the monitor) or
/// `baseline-smp-every-cpu-online` (without it): `/sys/devices/system/cpu/online`
/// names `n` processors, and on each one, pinned there, CPUID says what
/// the mode expects (VMX hidden and okernel's signature under the
/// monitor). Leaves the probe pinned to processor 0.
pub(crate) fn every_cpu(c: &mut Checks, mode: Expect, n: usize) {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let online = online.trim();
    let want_online = if n == 1 {
        "0".to_string()
    } else {
        format!("0-{}", n - 1)
    };
    let mut ok = online == want_online;
    let mut seen = vec![format!("online {online:?} (want {want_online:?})")];
    for cpu in 0..n {
        if let Err(e) = pin(cpu) {
            ok = false;
            seen.push(e);
            continue;
        }
        let on = current();
        let vmx = core::arch::x86_64::__cpuid(1).ecx & (1 << 5) != 0;
        let sig = core::arch::x86_64::__cpuid(LEAF_SIGNATURE);
        let signature = is_signature(sig.ebx, sig.ecx, sig.edx);
        let as_expected = match mode {
            Expect::Monitor => !vmx && signature,
            Expect::Direct | Expect::Bare => !signature,
        };
        ok &= on == cpu as i32 && as_expected;
        seen.push(format!(
            "CPU {cpu}: ran on {on}, CPUID.1:ECX.VMX={}, okernel signature {}",
            u8::from(vmx),
            if signature { "yes" } else { "no" }
        ));
    }
    if let Err(e) = pin(0) {
        ok = false;
        seen.push(e);
    }
    let name = match mode {
        Expect::Monitor => "linux-smp-every-cpu-under-okernel",
        Expect::Direct | Expect::Bare => "baseline-smp-every-cpu-online",
    };
    c.report(name, 1, ok, &seen.join("; "));
}
