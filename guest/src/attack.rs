//! The attack suite as data: every attack, the invariant of DESIGN.md §2
//! it tests, what must happen with protection on and off, and the audit
//! record the monitor must leave — and the rule that judges a run.
//!
//! An attack is *blocked* when the operation faulted, a hypercall returned
//! an error, or the effect is absent when checked; it *succeeded* when the
//! effect is there (the text byte changed, the MSR holds the new value...).
//! A "blocked" means something only next to its negative control: the
//! same attack with `protect=off` (or with no monitor) must succeed.

use okernel_abi::hypercall::Status;
use okernel_abi::policy::AuditKind;

/// How the guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Under okernel, regions registered and locked (`protect=on`).
    Protected,
    /// Under okernel, nothing registered (`protect=off`).
    Unprotected,
    /// Entered directly, no monitor at all (`mode=direct`).
    NoMonitor,
}

impl Mode {
    /// The mode for an entry mode and the `protect=` option.
    pub const fn new(under_monitor: bool, protect: bool) -> Self {
        match (under_monitor, protect) {
            (false, _) => Mode::NoMonitor,
            (true, true) => Mode::Protected,
            (true, false) => Mode::Unprotected,
        }
    }
}

/// What protects against an attack, and so when it must be blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// What the guest registers and locks: blocked only when protected.
    Registration,
    /// The monitor itself (its memory is in no view): blocked whenever
    /// the monitor runs.
    Monitor,
    /// A monitor interface (VMX, hypercalls): blocked whenever the monitor
    /// runs; meaningless without it.
    MonitorOnly,
    /// Needs registered state to exist (a second lock, an overlap): only
    /// run when protected.
    ProtectedOnly,
    /// The return to the trusted context: blocked (diverted to the gate)
    /// when protected, succeeds (the caller keeps running) unprotected;
    /// needs the monitor's `VMCALL`.
    Gate,
}

/// What must happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The attack must be blocked.
    Blocked,
    /// The attack must succeed (a negative control).
    Succeeds,
    /// Not run in this mode.
    NotRun,
}

impl Expect {
    /// The word in check lines.
    pub const fn word(self) -> &'static str {
        match self {
            Expect::Blocked => "blocked",
            Expect::Succeeds => "succeeds",
            Expect::NotRun => "not-run",
        }
    }
}

/// One attack of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attack {
    /// Its name (the check is `attack-<name>`).
    pub name: &'static str,
    /// The invariant of DESIGN.md §2 it tests.
    pub invariant: u8,
    /// What must stop it.
    pub guard: Guard,
    /// The audit record the monitor must write when it blocks it.
    pub audit: Option<AuditKind>,
    /// For refused hypercalls: the status the ABI documents.
    pub status: Option<Status>,
}

impl Attack {
    /// What must happen in `mode`.
    pub const fn expect(&self, mode: Mode) -> Expect {
        match (self.guard, mode) {
            (Guard::Registration, Mode::Protected) => Expect::Blocked,
            (Guard::Registration, _) => Expect::Succeeds,
            (Guard::Monitor, Mode::NoMonitor) => Expect::Succeeds,
            (Guard::MonitorOnly, Mode::NoMonitor) => Expect::NotRun,
            (Guard::Monitor | Guard::MonitorOnly, _) => Expect::Blocked,
            (Guard::ProtectedOnly, Mode::Protected) => Expect::Blocked,
            (Guard::ProtectedOnly, _) => Expect::NotRun,
            (Guard::Gate, Mode::Protected) => Expect::Blocked,
            (Guard::Gate, Mode::Unprotected) => Expect::Succeeds,
            (Guard::Gate, Mode::NoMonitor) => Expect::NotRun,
        }
    }

    /// Whether a blocked attack must also leave an audit record in `mode`.
    pub const fn needs_audit(&self, mode: Mode) -> bool {
        self.audit.is_some() && matches!(mode, Mode::Protected)
    }

    /// Judges a run: `blocked` is what was observed, `audit_found` whether
    /// the expected record was read back (ignored when none is needed).
    pub const fn judge(&self, mode: Mode, blocked: bool, audit_found: bool) -> bool {
        match self.expect(mode) {
            Expect::Blocked => blocked && (audit_found || !self.needs_audit(mode)),
            Expect::Succeeds => !blocked,
            Expect::NotRun => false,
        }
    }
}

const fn reg(name: &'static str, invariant: u8, audit: AuditKind) -> Attack {
    Attack {
        name,
        invariant,
        guard: Guard::Registration,
        audit: Some(audit),
        status: None,
    }
}

/// A row about a switch to the trusted context's gate (invariant 9),
/// audited as a context switch.
const fn gate(name: &'static str) -> Attack {
    Attack {
        guard: Guard::Gate,
        ..reg(name, 9, ContextSwitch)
    }
}

const fn hostile(name: &'static str, guard: Guard, status: Status) -> Attack {
    Attack {
        name,
        invariant: 11,
        guard,
        audit: None,
        status: Some(status),
    }
}

use AuditKind::{
    ContextSwitch, CrPin, DescriptorTable, EptViolation, Exit, Hypercall, MsrLock, PageTableUpdate,
};

/// Every attack, in the order the suite runs them.
pub const ATTACKS: &[Attack] = &[
    reg("write-text", 2, EptViolation),
    reg("write-rodata", 3, EptViolation),
    reg("exec-data-page", 2, EptViolation),
    reg("write-idt", 3, EptViolation),
    reg("lidt-fake-idt", 4, DescriptorTable),
    reg("write-gdt", 3, EptViolation),
    reg("write-tss", 3, EptViolation),
    reg("write-syscall-table", 3, EptViolation),
    reg("write-credentials", 3, EptViolation),
    reg("clear-cr0-wp", 4, CrPin),
    reg("clear-cr4-smep", 4, CrPin),
    reg("clear-cr4-smap", 4, CrPin),
    reg("write-lstar", 5, MsrLock),
    reg("write-sysenter-eip", 5, MsrLock),
    reg("write-page-table", 7, EptViolation),
    reg("remap-text-writable-alias", 7, PageTableUpdate),
    reg("map-protected-frame-writable", 7, PageTableUpdate),
    reg("read-other-protected-page", 6, EptViolation),
    // The exception frame as a write primitive (and, before issue 13, a
    // monitor stop): RSP on the credential page, then #UD.
    reg("exception-on-read-only-stack", 11, EptViolation),
    reg("write-other-protected-page", 6, EptViolation),
    Attack {
        name: "read-monitor-memory",
        invariant: 1,
        guard: Guard::Monitor,
        audit: Some(EptViolation),
        status: None,
    },
    Attack {
        name: "write-monitor-memory",
        invariant: 1,
        guard: Guard::Monitor,
        audit: Some(EptViolation),
        status: None,
    },
    Attack {
        name: "relocate-apic-over-monitor",
        invariant: 1,
        guard: Guard::Monitor,
        audit: Some(MsrLock),
        status: None,
    },
    Attack {
        name: "relocate-apic-over-protected-page",
        invariant: 6,
        guard: Guard::Monitor,
        audit: Some(MsrLock),
        status: None,
    },
    Attack {
        name: "write-unlisted-msr",
        invariant: 5,
        guard: Guard::Monitor,
        audit: Some(MsrLock),
        status: None,
    },
    Attack {
        name: "read-hidden-msr",
        invariant: 12,
        guard: Guard::Monitor,
        audit: None,
        status: None,
    },
    Attack {
        name: "write-mtrr",
        invariant: 5,
        guard: Guard::Monitor,
        audit: Some(MsrLock),
        status: None,
    },
    Attack {
        name: "write-tsc",
        invariant: 5,
        guard: Guard::Monitor,
        audit: Some(MsrLock),
        status: None,
    },
    Attack {
        name: "disable-a20",
        invariant: 11,
        guard: Guard::Monitor,
        audit: Some(Exit),
        status: None,
    },
    Attack {
        name: "disable-a20-string-io",
        invariant: 11,
        guard: Guard::Monitor,
        audit: Some(Exit),
        status: None,
    },
    Attack {
        name: "reset-via-cf9",
        invariant: 11,
        guard: Guard::MonitorOnly,
        audit: Some(Exit),
        status: None,
    },
    Attack {
        name: "reset-via-keyboard-controller",
        invariant: 11,
        guard: Guard::MonitorOnly,
        audit: Some(Exit),
        status: None,
    },
    Attack {
        name: "vmxon",
        invariant: 12,
        guard: Guard::MonitorOnly,
        audit: None,
        status: None,
    },
    gate("switch-to-trusted-keep-running"),
    gate("gate-single-step"),
    // Issue 13's events at a gate (`attacks/gate_events.rs`): a fixed
    // self-IPI pending across `STI; VMCALL`, and execute breakpoints on
    // the gate and after the VMCALL. No NMI row: see docs/attack-suite.md.
    gate("gate-pending-interrupt"),
    gate("gate-breakpoint"),
    Attack {
        name: "free-other-context-page",
        invariant: 6,
        guard: Guard::ProtectedOnly,
        audit: None,
        status: None,
    },
    Attack {
        name: "untrusted-exit",
        invariant: 11,
        guard: Guard::ProtectedOnly,
        audit: Some(Hypercall),
        status: Some(Status::PermissionDenied),
    },
    // The x2APIC's ICR can send this processor an INIT (the run used to
    // end; bare, it resets the processor: not run without the monitor),
    // SIPI, SMI or NMI; okernel refuses every delivery mode but fixed.
    Attack {
        name: "x2apic-init-to-itself",
        invariant: 11,
        guard: Guard::MonitorOnly,
        audit: Some(MsrLock),
        status: None,
    },
    reg("empty-slot-page-table-link", 7, PageTableUpdate),
    reg("untrusted-xd-on-kernel-text", 7, PageTableUpdate),
    reg("untrusted-relink-shared-table", 7, PageTableUpdate),
    // Without contexts (protect=off) the kernel path is the trusted
    // kernel, which owns every page: nothing is foreign and the table is
    // its own, so these two are meaningless unprotected.
    Attack {
        name: "protect-foreign-page",
        invariant: 6,
        guard: Guard::ProtectedOnly,
        audit: Some(Hypercall),
        status: Some(Status::PermissionDenied),
    },
    Attack {
        name: "protected-page-exhaustion",
        invariant: 11,
        guard: Guard::ProtectedOnly,
        audit: Some(Hypercall),
        status: None,
    },
    hostile("hostile-unaligned", Guard::MonitorOnly, Status::Unaligned),
    hostile("hostile-empty", Guard::MonitorOnly, Status::Empty),
    hostile("hostile-overlap", Guard::ProtectedOnly, Status::Overlap),
    hostile("hostile-out-of-ram", Guard::MonitorOnly, Status::OutOfRam),
    hostile(
        "hostile-monitor-range",
        Guard::MonitorOnly,
        Status::MonitorMemory,
    ),
    hostile(
        "hostile-unknown-call",
        Guard::MonitorOnly,
        Status::UnknownCall,
    ),
    hostile(
        "hostile-bad-context",
        Guard::MonitorOnly,
        Status::BadContext,
    ),
    hostile(
        "hostile-dead-context",
        Guard::MonitorOnly,
        Status::BadContext,
    ),
    hostile("hostile-exhausted", Guard::MonitorOnly, Status::Exhausted),
    Attack {
        invariant: 8,
        ..hostile("hostile-relock", Guard::ProtectedOnly, Status::Locked)
    },
    hostile(
        "hostile-unaligned-pte",
        Guard::ProtectedOnly,
        Status::Unaligned,
    ),
    hostile(
        "hostile-cpl3-vmcall",
        Guard::MonitorOnly,
        Status::PermissionDenied,
    ),
];

/// The attack called `name`.
pub fn by_name(name: &str) -> Option<&'static Attack> {
    ATTACKS.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_invariants_in_range() {
        for (i, a) in ATTACKS.iter().enumerate() {
            assert!((1..=12).contains(&a.invariant), "{}", a.name);
            assert!(ATTACKS[..i].iter().all(|b| b.name != a.name), "{}", a.name);
            assert_eq!(by_name(a.name), Some(a));
        }
        assert_eq!(by_name("nope"), None);
    }

    #[test]
    fn every_registered_protection_has_a_negative_control() {
        for a in ATTACKS {
            if a.expect(Mode::Protected) == Expect::Blocked && a.guard == Guard::Registration {
                assert_eq!(a.expect(Mode::Unprotected), Expect::Succeeds, "{}", a.name);
                assert_eq!(a.expect(Mode::NoMonitor), Expect::Succeeds, "{}", a.name);
            }
        }
        let m = by_name("read-monitor-memory").unwrap();
        assert_eq!(m.expect(Mode::Unprotected), Expect::Blocked);
        assert_eq!(m.expect(Mode::NoMonitor), Expect::Succeeds);
        let v = by_name("vmxon").unwrap();
        assert_eq!(v.expect(Mode::NoMonitor), Expect::NotRun);
    }

    #[test]
    fn the_suite_covers_every_invariant_but_10_with_attacks() {
        // 10 is the audit requirement on every blocked attack.
        for inv in [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12] {
            assert!(
                ATTACKS.iter().any(|a| a.invariant == inv),
                "invariant {inv}"
            );
        }
    }

    #[test]
    fn judging_needs_the_audit_record_when_protected() {
        let a = by_name("write-text").unwrap();
        assert!(a.judge(Mode::Protected, true, true));
        assert!(!a.judge(Mode::Protected, true, false));
        assert!(!a.judge(Mode::Protected, false, true));
        assert!(a.judge(Mode::Unprotected, false, false));
        assert!(!a.judge(Mode::Unprotected, true, false));
        let h = by_name("hostile-empty").unwrap();
        assert!(h.judge(Mode::Unprotected, true, false));
        assert!(!h.judge(Mode::NoMonitor, true, true));
        assert_eq!(Mode::new(false, true), Mode::NoMonitor);
        assert_eq!(Mode::new(true, false), Mode::Unprotected);
    }
}
