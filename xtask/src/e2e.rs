//! End-to-end boots: each case on each available backend, one table.

use crate::images::Images;
use okernel_abi::result::Outcome;
use qemu_harness::bochs::Bochs;
use qemu_harness::kvm::Kvm;
use qemu_harness::qemu::{Accel, Qemu};
use qemu_harness::{Backend, Expect, GuestModule, RunReport, RunSpec, Verdict, VmxSupport};
use std::path::PathBuf;
use std::time::Duration;

/// Which guest module a case boots with.
#[derive(Debug, Clone, Copy)]
pub enum Module {
    /// The demo guest.
    Guest,
    /// The multiboot2 ELF32 test guest.
    Guest32,
    /// None at all.
    Missing,
    /// Bytes that are not an ELF file.
    Corrupt,
    /// The demo guest with its ELF class changed to ELF32.
    Elf32,
}

/// One end-to-end case.
pub struct Case {
    /// Its name.
    pub name: &'static str,
    /// The guest module.
    pub module: Module,
    /// The okernel command line.
    pub cmdline: &'static str,
    /// The guest command line.
    pub guest_cmdline: &'static str,
    /// What must happen.
    pub expect: Expect,
    /// Whether the case waits for a timeout (given a short one).
    pub hangs: bool,
    /// Whether the guest must run for the case to mean anything: on a
    /// backend without VMX the image must stop first with "VMX
    /// unavailable" instead.
    pub needs_vmx: bool,
    /// Checks (`OKERNEL-CHECK` names) that must be reported, and hold, when
    /// the guest runs.
    pub required_checks: &'static [&'static str],
    /// Text the console must contain when the guest runs (audit records).
    pub console_must_contain: &'static [&'static str],
    /// Whether the guest runs ring-3 tasks (SYSCALL/SYSRET).
    pub ring3: bool,
    /// Checks required, in addition, on backends whose CPU has VMX.
    pub required_with_vmx: &'static [&'static str],
}

fn fail(detail: &str) -> Expect {
    Expect::Outcome(Outcome::Fail, detail.into())
}

/// The cases `cargo xtask test` runs on every backend.
pub fn cases() -> Vec<Case> {
    let guest = |name, guest_cmdline, expect| Case {
        name,
        module: Module::Guest,
        cmdline: "log=info",
        guest_cmdline,
        expect,
        hangs: false,
        needs_vmx: true,
        required_checks: &[],
        console_must_contain: &[],
        ring3: false,
        required_with_vmx: &[],
    };
    // Bad input is refused before VMX is even looked at.
    let input = |name, module, cmdline, detail| Case {
        module,
        cmdline,
        needs_vmx: false,
        ..guest(name, "", fail(detail))
    };
    vec![
        Case {
            required_checks: BOOT_CHECKS,
            console_must_contain: BOOT_AUDIT,
            ..guest("boot", "scenario=boot", Expect::pass())
        },
        Case {
            module: Module::Guest32,
            console_must_contain: MB32_LINES,
            ..guest("multiboot32", "mb32 says hello", Expect::pass())
        },
        Case {
            cmdline: "log=info mode=direct",
            needs_vmx: false,
            required_checks: DIRECT_CHECKS,
            required_with_vmx: &["negative-control-vmxon-succeeds-without-okernel"],
            ..guest("direct-negative-control", "scenario=boot", Expect::pass())
        },
        Case {
            required_checks: ATTACKS,
            console_must_contain: ATTACKS_AUDIT,
            ring3: true,
            ..guest("attacks", "scenario=attacks", Expect::pass())
        },
        Case {
            required_checks: ATTACKS_NO_MONITOR,
            ring3: true,
            ..guest(
                "attacks-unlocked",
                "scenario=attacks protect=off",
                Expect::pass(),
            )
        },
        Case {
            cmdline: "log=info mode=direct",
            needs_vmx: false,
            required_checks: ATTACKS_NO_MONITOR,
            ring3: true,
            ..guest(
                "attacks-no-monitor",
                "scenario=attacks protect=off",
                Expect::pass(),
            )
        },
        input(
            "missing-module",
            Module::Missing,
            "log=info",
            "no guest module",
        ),
        input(
            "corrupt-elf",
            Module::Corrupt,
            "log=info",
            "not a valid ELF file",
        ),
        input(
            "bad-elf-class",
            Module::Elf32,
            "log=info",
            "not a valid ELF file",
        ),
        input(
            "bad-option",
            Module::Guest,
            "log=info turbo=on",
            "unknown command-line option `turbo=on`",
        ),
        guest(
            "bad-guest-option",
            "scenario=fly",
            fail("unknown scenario `fly`"),
        ),
        guest(
            "guest-panic",
            "scenario=panic",
            Expect::Outcome(Outcome::Panic, "panics on purpose".into()),
        ),
        Case {
            hangs: true,
            ..guest("guest-hang", "scenario=hang", Expect::Timeout)
        },
    ]
}

/// The `boot` case: the demo guest's checks, the main job's run.
pub fn boot_case() -> Case {
    cases().swap_remove(0)
}

/// The in-guest proofs of the VMX core (issue 4) the `boot` case must show.
const BOOT_CHECKS: &[&str] = &[
    "cpuid-vmx-hidden",
    "cpuid-okernel-signature",
    "cpuid-okernel-version",
    "hypercall-version",
    "hypercall-null",
    "hypercall-unknown-refused",
    "hypercall-exit-bad-outcome-refused",
    "vmxon-faults-ud",
    "vmx-msr-hidden",
    "cr4-vmxe-hidden",
    "control-own-memory-read-write",
    "monitor-read-denied",
    "monitor-write-denied",
    "monitor-pool-read-denied",
    "monitor-pool-write-denied",
];

/// The audit records the monitor-memory attacks must leave, and the exit
/// counters the monitor prints at the end.
const BOOT_AUDIT: &[&str] = &[
    "ept-violation ctx=0 gpa=0x101000 gva=0x101000 access=R-- allowed=---",
    "ept-violation ctx=0 gpa=0x101000 gva=0x101000 access=-W- allowed=---",
    "action=inject-#GP",
    "okernel: exits ept-violation                4",
    "okernel: exits vmxon                        1",
];

/// The negative controls of `mode=direct` (no monitor): the attacks that
/// okernel denies in `boot` succeed.
const DIRECT_CHECKS: &[&str] = &[
    "negative-control-monitor-read-succeeds-without-okernel",
    "negative-control-monitor-write-succeeds-without-okernel",
];

/// The attack suite (issue 6), each attack from an untrusted task's kernel
/// path with the guest's regions registered and locked: every one must be
/// reported, and be blocked with its audit record (the guest checks the
/// record through AuditCount/AuditRead); legitimate operations must work.
const ATTACKS: &[&str] = &[
    "attack-write-text",
    "attack-write-rodata",
    "attack-exec-data-page",
    "attack-write-idt",
    "attack-write-gdt",
    "attack-write-tss",
    "attack-lidt-fake-idt",
    "attack-clear-cr0-wp",
    "attack-clear-cr4-smep",
    "attack-clear-cr4-smap",
    "attack-write-lstar",
    "attack-write-sysenter-eip",
    "attack-write-page-table",
    "attack-remap-text-writable-alias",
    "attack-map-protected-frame-writable",
    "attack-read-other-protected-page",
    "attack-write-other-protected-page",
    "attack-free-other-context-page",
    "attack-write-credentials",
    "attack-write-syscall-table",
    "attack-read-monitor-memory",
    "attack-write-monitor-memory",
    "attack-vmxon",
    "attack-hostile-unaligned",
    "attack-hostile-empty",
    "attack-hostile-overlap",
    "attack-hostile-out-of-ram",
    "attack-hostile-monitor-range",
    "attack-hostile-unknown-call",
    "attack-hostile-bad-context",
    "attack-hostile-dead-context",
    "attack-hostile-exhausted",
    "attack-hostile-relock",
    "attack-hostile-unaligned-pte",
    "attack-hostile-cpl3-vmcall",
    "attack-switch-to-trusted-keep-running",
    "legit-syscall-getuid",
    "legit-own-protected-page",
];

/// The audit trail the protected attack run must leave: JSON records of
/// each kind of violation.
const ATTACKS_AUDIT: &[&str] = &[
    "OKERNEL-AUDIT: {\"seq\":",
    "\"kind\":\"ept-violation\"",
    "\"kind\":\"cr-write\"",
    "\"kind\":\"msr-write\"",
    "\"kind\":\"descriptor-table\"",
    "\"kind\":\"page-table-update\"",
    "\"kind\":\"context-switch\"",
];

/// The attack suite's negative control: with no monitor at all
/// (`mode=direct`) and no registration (`protect=off`), every attack on
/// the guest's own kernel succeeds (the guest verifies each effect, then
/// undoes it) and legitimate operations work. A sample of the names the
/// run must report; every reported check must hold.
const ATTACKS_NO_MONITOR: &[&str] = &[
    "attack-write-text",
    "attack-write-rodata",
    "attack-exec-data-page",
    "attack-write-idt",
    "attack-lidt-fake-idt",
    "attack-write-credentials",
    "attack-write-page-table",
    "attack-remap-text-writable-alias",
    "attack-map-protected-frame-writable",
    "attack-read-other-protected-page",
    "attack-clear-cr0-wp",
    "attack-write-lstar",
    "legit-syscall-getuid",
];

/// What the multiboot2 ELF32 guest must print: each of its checks, and
/// the monitor's exit counters after its Exit hypercall.
const MB32_LINES: &[&str] = &[
    "multiboot32 guest: protected mode, paging off",
    "multiboot32 guest: EAX = multiboot2 magic",
    "multiboot32 guest: EBX = multiboot2 info with memory map, command line `mb32 says hello`",
    "multiboot32 guest: CPUID shows okernel, hides VMX",
    "multiboot32 guest: all checks passed",
    "okernel: exits vmcall                       1",
];

/// What `case` must end with on a backend with or without VMX.
pub fn expectation(case: &Case, vmx: VmxSupport) -> Expect {
    match vmx {
        VmxSupport::Unavailable if case.needs_vmx => {
            Expect::Outcome(Outcome::VmxUnavailable, "CPUID.1:ECX.VMX=0".into())
        }
        _ => case.expect.clone(),
    }
}

/// Judges a run of `case`: the outcome and, where the guest ran, that
/// every check held, the required checks were reported and the console
/// shows the required records.
pub fn judge(case: &Case, vmx: VmxSupport, report: &RunReport) -> Verdict {
    let verdict = Verdict::judge(report, &expectation(case, vmx));
    let guest_ran = vmx == VmxSupport::Available || !case.needs_vmx;
    if verdict != Verdict::Ok || !guest_ran {
        return verdict;
    }
    let checks = match report.parsed_checks() {
        Ok(c) => c,
        Err(e) => return Verdict::Unexpected(e),
    };
    if let Some(bad) = checks.iter().find(|c| !c.ok) {
        return Verdict::Unexpected(format!("check `{}` failed: {}", bad.check, bad.observed));
    }
    let with_vmx: &[&str] = match vmx {
        VmxSupport::Available => case.required_with_vmx,
        VmxSupport::Unavailable => &[],
    };
    for name in case.required_checks.iter().chain(with_vmx) {
        if !checks.iter().any(|c| c.check == *name) {
            return Verdict::Unexpected(format!("check `{name}` was not reported"));
        }
    }
    for text in case.console_must_contain {
        if !report.console.contains(text) {
            return Verdict::Unexpected(format!("console lacks `{text}`"));
        }
    }
    Verdict::Ok
}

/// Writes the derived bad modules next to the images.
pub fn bad_modules(images: &Images) -> Result<(PathBuf, PathBuf), String> {
    let corrupt = images.dir.join("corrupt.bin");
    // Deterministic noise that starts like nothing in particular.
    let noise: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&corrupt, noise).map_err(|e| format!("{}: {e}", corrupt.display()))?;
    let elf32 = images.dir.join("elf32.bin");
    let mut bytes =
        std::fs::read(&images.guest).map_err(|e| format!("{}: {e}", images.guest.display()))?;
    bytes[4] = 1; // EI_CLASS = ELFCLASS32
    std::fs::write(&elf32, bytes).map_err(|e| format!("{}: {e}", elf32.display()))?;
    Ok((corrupt, elf32))
}

/// The backends available here, best first for the main job.
pub fn backends() -> Vec<Box<dyn Backend>> {
    let mut v: Vec<Box<dyn Backend>> = Vec::new();
    let kvm = qemu_harness::kvm_usable();
    if kvm && qemu_harness::kvm_nested_vmx() {
        v.push(Box::new(Kvm::new()));
        v.push(Box::new(Qemu::new(Accel::Kvm)));
        v.push(Box::new(Bochs));
    } else {
        v.push(Box::new(Bochs));
        if kvm {
            v.push(Box::new(Kvm::new()));
            v.push(Box::new(Qemu::new(Accel::Kvm)));
        }
    }
    v.push(Box::new(Qemu::new(Accel::Tcg)));
    v
}

/// The run spec of `case` on `backend`.
pub fn spec(images: &Images, bad: &(PathBuf, PathBuf), case: &Case, backend: &str) -> RunSpec {
    let guest = match case.module {
        Module::Guest => GuestModule::File(images.guest.clone()),
        Module::Guest32 => GuestModule::File(images.guest32.clone()),
        Module::Missing => GuestModule::None,
        Module::Corrupt => GuestModule::File(bad.0.clone()),
        Module::Elf32 => GuestModule::File(bad.1.clone()),
    };
    let timeout = match (case.hangs, backend) {
        (true, "bochs") => Duration::from_secs(25),
        (true, "kvm") => Duration::from_secs(3),
        (true, _) => Duration::from_secs(5),
        (false, "bochs") => Duration::from_secs(120),
        (false, _) => Duration::from_secs(60),
    };
    RunSpec {
        name: case.name.to_string(),
        image: images.okernel.clone(),
        guest,
        cmdline: case.cmdline.to_string(),
        guest_cmdline: case.guest_cmdline.to_string(),
        timeout,
        run_dir: crate::images::root()
            .join("target/runs")
            .join(format!("{}-{backend}", case.name)),
        gdb: false,
    }
}

/// Why `case` cannot run on `backend` on this host, if it cannot. Such a
/// row is reported as skipped with this reason, never as passed.
pub fn skip_reason(case: &Case, backend: &dyn Backend) -> Option<&'static str> {
    let kvm_backend = matches!(backend.name(), "kvm" | "qemu-kvm");
    let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
    // Where the image stops at "VMX unavailable" the guest never reaches
    // ring 3, and that outcome is still checked.
    let guest_runs = !case.needs_vmx || backend.vmx() == VmxSupport::Available;
    (case.ring3 && guest_runs && kvm_backend && pvm).then_some(
        "this host's KVM is kvm_pvm, which faults a plain guest's first SYSCALL \
         (CPL-3 fetch of the syscall entry); Bochs and QEMU/TCG run the case",
    )
}

/// One row of the results table.
pub struct Row {
    /// The case.
    pub case: &'static str,
    /// The backend.
    pub backend: String,
    /// What was expected.
    pub expected: String,
    /// What happened (or why the run could not happen).
    pub result: Result<(RunReport, Verdict), String>,
    /// Why the row was not run here (see [`skip_reason`]).
    pub skipped: Option<&'static str>,
}

impl Row {
    /// Whether the row is as expected.
    pub fn ok(&self) -> bool {
        matches!(self.result, Ok((_, Verdict::Ok)))
    }
}

/// Runs every case on every backend, printing progress.
pub fn run_matrix(images: &Images, backends: &[Box<dyn Backend>]) -> Result<Vec<Row>, String> {
    let bad = bad_modules(images)?;
    let cases = cases();
    let total = cases.len() * backends.len();
    let mut rows = Vec::new();
    for backend in backends {
        for case in &cases {
            if let Some(why) = skip_reason(case, backend.as_ref()) {
                eprintln!(
                    "[{:>2}/{total}] {:<9} {:<17} SKIPPED: {why}",
                    rows.len() + 1,
                    backend.name(),
                    case.name
                );
                rows.push(Row {
                    case: case.name,
                    backend: backend.name().to_string(),
                    expected: expectation(case, backend.vmx()).describe(),
                    result: Err(why.to_string()),
                    skipped: Some(why),
                });
                continue;
            }
            let spec = spec(images, &bad, case, backend.name());
            eprint!(
                "[{:>2}/{total}] {:<9} {:<17} ",
                rows.len() + 1,
                backend.name(),
                case.name
            );
            let result = backend
                .run(&spec)
                .map(|r| {
                    let v = judge(case, backend.vmx(), &r);
                    (r, v)
                })
                .map_err(|e| e.to_string());
            match &result {
                Ok((r, Verdict::Ok)) => {
                    eprintln!("ok ({:.1}s) {}", r.duration.as_secs_f64(), r.summary())
                }
                Ok((r, Verdict::Unexpected(why))) => {
                    eprintln!(
                        "UNEXPECTED: {why}\n    run directory: {}",
                        r.run_dir.display()
                    );
                    for l in r.last_lines(12) {
                        eprintln!("    | {l}");
                    }
                }
                Err(e) => eprintln!("ERROR: {e}"),
            }
            rows.push(Row {
                case: case.name,
                backend: backend.name().to_string(),
                expected: expectation(case, backend.vmx()).describe(),
                result,
                skipped: None,
            });
        }
    }
    Ok(rows)
}

/// Prints the results table and the closing count line.
pub fn print_table(rows: &[Row]) -> bool {
    println!();
    println!(
        "{:<18} {:<9} {:<44} {:<6} observed",
        "case", "backend", "expected", ""
    );
    println!("{}", "-".repeat(110));
    for r in rows {
        let observed = match (&r.result, r.skipped) {
            (_, Some(why)) => format!("not run: {why}"),
            (Ok((rep, _)), None) => rep.summary(),
            (Err(e), None) => format!("harness error: {e}"),
        };
        let mark = match (r.ok(), r.skipped) {
            (_, Some(_)) => "skip",
            (true, None) => "ok",
            (false, None) => "FAIL",
        };
        println!(
            "{:<18} {:<9} {:<44} {:<6} {}",
            r.case,
            r.backend,
            r.expected,
            mark,
            truncate(&observed, 80)
        );
    }
    let passed = rows.iter().filter(|r| r.ok()).count();
    let skipped = rows.iter().filter(|r| r.skipped.is_some()).count();
    let failed = rows.len() - passed - skipped;
    println!();
    println!("e2e: {passed} passed, {failed} failed, {skipped} skipped");
    failed == 0
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}
