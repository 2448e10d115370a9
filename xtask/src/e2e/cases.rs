//! The end-to-end cases: what each boots and what it must show, on a
//! backend with VMX and on one without.

use super::Said;
use okernel_abi::result::Outcome;
use qemu_harness::{Expect, VmxSupport};

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
    pub console_must_contain: &'static [Said],
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
    "canonical-boundary-gp",
    "control-own-memory-read-write",
    "monitor-read-denied",
    "monitor-write-denied",
    "monitor-pool-read-denied",
    "monitor-pool-write-denied",
];

/// The audit records the monitor-memory attacks must leave, and the exit
/// counters the monitor prints at the end.
const BOOT_AUDIT: &[Said] = &[
    Said::Monitor(
        "\"kind\":\"ept-violation\",\"ctx\":0,\"gpa\":\"0x101000\",\"gva\":\"0x101000\",\"access\":\"R--\",\"allowed\":\"---\"",
    ),
    Said::Monitor(
        "\"kind\":\"ept-violation\",\"ctx\":0,\"gpa\":\"0x101000\",\"gva\":\"0x101000\",\"access\":\"-W-\",\"allowed\":\"---\"",
    ),
    Said::Monitor("\"action\":\"inject-#GP\""),
    Said::Monitor("okernel: exits ept-violation                4"),
    Said::Monitor("okernel: exits vmxon                        1"),
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
    "attack-relocate-apic-over-monitor",
    "attack-relocate-apic-over-protected-page",
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
    "attack-gate-single-step",
    "attack-gate-pending-interrupt",
    "attack-gate-breakpoint",
    "attack-untrusted-exit",
    "attack-exception-on-read-only-stack",
    "attack-empty-slot-page-table-link",
    "attack-untrusted-xd-on-kernel-text",
    "attack-untrusted-relink-shared-table",
    "attack-protect-foreign-page",
    "attack-protected-page-exhaustion",
    "attack-write-unlisted-msr",
    "attack-read-hidden-msr",
    "attack-write-mtrr",
    "attack-write-tsc",
    "attack-disable-a20",
    "attack-disable-a20-string-io",
    "attack-reset-via-cf9",
    "attack-reset-via-keyboard-controller",
    "attack-x2apic-init-to-itself",
    "legit-syscall-getuid",
    "legit-own-protected-page",
];

/// The audit trail the protected attack run must leave: JSON records of
/// each kind of violation.
const ATTACKS_AUDIT: &[Said] = &[
    Said::Monitor("OKERNEL-AUDIT: {\"seq\":"),
    Said::Monitor("\"kind\":\"ept-violation\""),
    Said::Monitor("\"kind\":\"cr-write\""),
    Said::Monitor("\"kind\":\"msr-write\""),
    Said::Monitor("\"kind\":\"descriptor-table\""),
    Said::Monitor("\"kind\":\"page-table-update\""),
    Said::Monitor("\"kind\":\"context-switch\""),
    Said::Monitor("\"kind\":\"hypercall\""),
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
    "attack-untrusted-xd-on-kernel-text",
    "attack-untrusted-relink-shared-table",
    "attack-read-other-protected-page",
    "attack-clear-cr0-wp",
    "attack-write-lstar",
    "attack-relocate-apic-over-monitor",
    "attack-relocate-apic-over-protected-page",
    "attack-write-mtrr",
    "legit-syscall-getuid",
];

/// What the multiboot2 ELF32 guest must print: each of its checks, and
/// the monitor's exit counters after its Exit hypercall.
const MB32_LINES: &[Said] = &[
    Said::Guest("multiboot32 guest: protected mode, paging off"),
    Said::Guest("multiboot32 guest: EAX = multiboot2 magic"),
    Said::Guest(
        "multiboot32 guest: EBX = multiboot2 info with memory map, command line `mb32 says hello`",
    ),
    Said::Guest("multiboot32 guest: CPUID shows okernel, hides VMX"),
    Said::Guest("multiboot32 guest: task switch refused with #GP(0) at the JMP, RF set"),
    Said::Guest("multiboot32 guest: all checks passed"),
    Said::Monitor("okernel: exits task-switch                  1"),
    Said::Monitor("okernel: exits vmcall                       1"),
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
