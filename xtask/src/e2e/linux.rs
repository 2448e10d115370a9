//! The Linux rows of the end-to-end matrix: Debian's kernel booted bare
//! (the baseline), by okernel's loader without the monitor (the negative
//! control) and under the monitor, each on the one backend where it
//! means something, each judged by the `okernel-probe` rows of its
//! `/init`.

use super::{Row, RowState, Said, judge_checks, print_outcome};
use crate::images::Images;
use crate::linux::{self, LinuxImage, Mode};
use qemu_harness::{Availability, Expect, Probed, Verdict};

/// One Linux case.
pub struct LinuxCase {
    /// Its name in the table.
    pub name: &'static str,
    /// With or without okernel.
    pub mode: Mode,
    /// The bzImage by the boot protocol instead of the PVH vmlinux.
    pub bzimage: bool,
    /// The backend it runs on.
    pub backend: &'static str,
    /// More kernel command line (`okernel.client=1`: the probe loads the
    /// client, which locks, and runs the attack suite against it).
    pub extra: &'static str,
    /// The probe rows it must report (each must hold).
    pub required: &'static [&'static str],
    /// Text the console must contain (the monitor's audit records).
    pub console_must_contain: &'static [Said],
    /// Processors (Bochs `cpu: count=`): with more than one, the loader
    /// must park the others, each joins the run and Linux starts it
    /// (`SMP_MONITOR_AUDIT`), and the probe's [`SMP_ROWS`] must hold too
    /// (the command line tells it `okernel.cpus=`).
    pub cpus: u32,
}

/// The Linux cases `cargo xtask test` runs.
pub fn cases() -> Vec<LinuxCase> {
    vec![
        LinuxCase {
            name: "linux-bare",
            mode: Mode::Bare,
            bzimage: false,
            backend: "qemu-tcg",
            extra: "",
            required: BARE_ROWS,
            console_must_contain: &[],
            cpus: 1,
        },
        LinuxCase {
            name: "linux-direct",
            mode: Mode::Direct,
            bzimage: false,
            backend: "bochs",
            extra: "",
            required: DIRECT_ROWS,
            console_must_contain: &[],
            cpus: 1,
        },
        LinuxCase {
            name: "linux-boot",
            mode: Mode::Monitor,
            bzimage: false,
            backend: "bochs",
            extra: "okernel.client=1",
            required: CLIENT_ROWS,
            console_must_contain: CLIENT_AUDIT,
            cpus: 1,
        },
        // On a 2-CPU machine: the bzImage boot path, both processors
        // under the monitor, and the client's whole suite with the
        // container on the processor that did not lock, in one boot (each
        // Linux boot in Bochs costs one to several minutes).
        LinuxCase {
            name: "linux-bzimage-2cpu",
            mode: Mode::Monitor,
            bzimage: true,
            backend: "bochs",
            extra: "okernel.client=1",
            required: CLIENT_ROWS,
            console_must_contain: CLIENT_AUDIT,
            cpus: 2,
        },
    ]
}

/// Linux booted by QEMU itself: the baseline, where every attack of the
/// suite must take effect (the primitive works) and the legitimate work
/// and the "not protected" writes succeed.
const BARE_ROWS: &[&str] = &[
    "linux-user-space",
    "baseline-no-okernel-signature",
    "linux-client-refuses-without-okernel",
    "linux-legit-module-load",
    "linux-legit-container",
    "linux-legit-fork-exec-pipe",
    "linux-legit-sleep",
    "linux-legit-loopback-tcp",
    "linux-static-key-flip",
    "linux-static-call-update",
    "negative-control-text-overwrite-function-bare",
    "negative-control-rodata-sys-call-table-bare",
    "negative-control-ro-after-init-lsm-hook-head-bare",
    "negative-control-idt-entry-bare",
    "negative-control-jump-label-illegal-form-bare",
    "negative-control-static-call-site-redirect-bare",
    "negative-control-static-call-trampoline-redirect-bare",
    "negative-control-cr4-clear-smep-smap-bare",
    "negative-control-cr0-clear-wp-bare",
    "negative-control-msr-lstar-bare",
    "negative-control-msr-efer-clear-sce-bare",
    "baseline-vmcall-faults-without-okernel-bare",
    "not-protected-modprobe-path",
    "not-protected-credentials-uid",
];

/// okernel's loader without the monitor (the negative control): the same
/// suite, every attack taking effect, and the monitor's memory readable.
const DIRECT_ROWS: &[&str] = &[
    "linux-user-space",
    "baseline-no-okernel-signature",
    "linux-client-refuses-without-okernel",
    "negative-control-monitor-readable-without-okernel",
    "linux-legit-module-load",
    "linux-legit-container",
    "linux-legit-fork-exec-pipe",
    "linux-legit-sleep",
    "linux-legit-loopback-tcp",
    "linux-static-key-flip",
    "linux-static-call-update",
    "negative-control-text-overwrite-function-direct",
    "negative-control-rodata-sys-call-table-direct",
    "negative-control-ro-after-init-lsm-hook-head-direct",
    "negative-control-idt-entry-direct",
    "negative-control-jump-label-illegal-form-direct",
    "negative-control-static-call-site-redirect-direct",
    "negative-control-static-call-trampoline-redirect-direct",
    "negative-control-cr4-clear-smep-smap-direct",
    "negative-control-cr0-clear-wp-direct",
    "negative-control-msr-lstar-direct",
    "negative-control-msr-efer-clear-sce-direct",
    "baseline-vmcall-faults-without-okernel-direct",
    "not-protected-modprobe-path",
    "not-protected-credentials-uid",
];

/// Under the monitor with the client's locks: the monitor rows, every
/// attack killed, the hypercalls refused, legitimate work going on, the
/// not-protected writes succeeding.
const CLIENT_ROWS: &[&str] = &[
    "linux-user-space",
    "linux-cpuid-vmx-hidden",
    "linux-cpuid-okernel-signature",
    "linux-monitor-not-system-ram",
    "linux-monitor-unreadable-by-the-kernel",
    "linux-client-locks",
    "linux-client-files-need-cap-syslog",
    "linux-legit-module-load",
    "linux-legit-container",
    "linux-legit-fork-exec-pipe",
    "linux-legit-sleep",
    "linux-legit-loopback-tcp",
    "linux-static-key-flip",
    "linux-static-call-update",
    "attack-text-overwrite-function",
    "attack-rodata-sys-call-table",
    "attack-ro-after-init-lsm-hook-head",
    "attack-idt-entry",
    "attack-jump-label-illegal-form",
    "attack-static-call-site-redirect",
    "attack-static-call-trampoline-redirect",
    "attack-cr4-clear-smep-smap",
    "attack-cr0-clear-wp",
    "attack-msr-lstar",
    "attack-msr-efer-clear-sce",
    "attack-hypercall-relock-refused",
    "not-protected-modprobe-path",
    "not-protected-credentials-uid",
];

/// The audit records the attacks must leave (besides [`SMP_MONITOR_AUDIT`]'s
/// read of okernel's image): writes to locked memory (text, rodata,
/// ro-after-init, the IDT page: the same text for each, so present at
/// least once), the CR4 and CR0 writes, the LSTAR and EFER writes, each
/// answered with an injected #GP.
const CLIENT_AUDIT: &[Said] = &[
    Said::Monitor("\"kind\":\"ept-violation\",\"ctx\":0,\"gpa\":\"0x100000\""),
    Said::Monitor("\"access\":\"R--\",\"allowed\":\"---\""),
    Said::Monitor("\"access\":\"-W-\",\"allowed\":\"R-X\""),
    Said::Monitor("\"kind\":\"cr-write\",\"ctx\":0,\"gpa\":\"0x4\""),
    Said::Monitor("\"kind\":\"cr-write\",\"ctx\":0,\"gpa\":\"0x0\""),
    Said::Monitor("\"kind\":\"msr-write\",\"ctx\":0,\"gpa\":\"0xc0000082\""),
    Said::Monitor("\"kind\":\"msr-write\",\"ctx\":0,\"gpa\":\"0xc0000080\""),
];

/// On several processors: the loader parked the others, each joined the
/// run, the APIC page was write-trapped while Linux could start them, and
/// Linux's SIPI started one under the monitor (`docs/smp.md`). Linux
/// sends its INIT-SIPI-SIPI through the xAPIC page: the trap completes the
/// INIT without sending it (Bochs 2.7 would re-deliver an INIT that
/// reached a processor in VMX non-root at every VM entry, and Linux gave
/// up on that processor before the trap, `exit::xapic`).
const SMP_MONITOR_AUDIT: &[Said] = &[
    Said::Monitor("1 application processor(s) parked in VMX root (the MADT lists 2 processors"),
    Said::Monitor("okernel: 1 application processor(s) joined"),
    Said::Monitor("okernel: the xAPIC page at 0xfee00000 is write-trapped"),
    Said::Monitor("okernel: SIPI: processor starts at"),
];

/// The probe rows of a case on several processors with the client
/// (`linux/probe/src/smp.rs`).
const SMP_ROWS: &[&str] = &[
    "linux-smp-every-cpu-under-okernel",
    "linux-smp-attacks-on-another-cpu",
];

/// Runs the Linux cases on the backends `backends` found available.
pub fn run(images: &Images, linux: &LinuxImage, backends: &[Probed]) -> Vec<Row> {
    let cases = cases();
    let mut rows = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let progress = format!(
            "[linux {}/{}] {:<9} {:<17}",
            i + 1,
            cases.len(),
            case.backend,
            case.name
        );
        let available = match backends.iter().find(|p| p.backend.name() == case.backend) {
            None => Err(format!("no {} backend was probed", case.backend)),
            Some(p) => match &p.availability {
                Availability::Unavailable(why) => Err(format!("backend unavailable: {why}")),
                Availability::Available(_) => Ok(p),
            },
        };
        let state = match available {
            Ok(p) => {
                eprint!("{progress} ");
                let name = format!("{}-{}", case.name, case.backend);
                // With several processors Bochs does not skip idle time and
                // Linux would trust CPUID's TSC rate: give it the emulated
                // one (docs/linux.md).
                let extra = if case.cpus > 1 {
                    format!(
                        "{} okernel.cpus={} tsc_early_khz={}",
                        case.extra,
                        case.cpus,
                        qemu_harness::bochs::IPS / 1000
                    )
                } else {
                    case.extra.to_string()
                };
                let smp = qemu_harness::bochs::BochsModel {
                    model: qemu_harness::bochs::DEFAULT_MODEL,
                    cpus: case.cpus,
                };
                let backend: &dyn qemu_harness::Backend = if case.cpus > 1 {
                    &smp
                } else {
                    p.backend.as_ref()
                };
                let result =
                    linux::spec(images, linux, case.mode, case.bzimage, extra.trim(), &name)
                        .and_then(|mut spec| {
                            spec.timeout = linux::smp_timeout(spec.timeout, case.cpus);
                            linux::boot(backend, &spec, linux)
                        })
                        .map(|r| {
                            let (also, console) = if case.cpus > 1 {
                                let mut console = case.console_must_contain.to_vec();
                                console.extend_from_slice(SMP_MONITOR_AUDIT);
                                (SMP_ROWS, console)
                            } else {
                                (&[][..], case.console_must_contain.to_vec())
                            };
                            let v = match Verdict::judge(&r, &Expect::pass()) {
                                Verdict::Ok => judge_checks(&r, case.required, also, &console),
                                bad => bad,
                            };
                            (r, v)
                        });
                print_outcome(&result);
                RowState::Ran(result)
            }
            Err(why) => {
                eprintln!("{progress} UNAVAILABLE ON THIS HOST: {why}");
                RowState::Unavailable(why)
            }
        };
        rows.push(Row {
            case: case.name,
            backend: case.backend.to_string(),
            expected: "pass, every probe row ok".into(),
            state,
        });
    }
    rows
}
