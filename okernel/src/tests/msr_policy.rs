//! The default-deny MSR policy (issue 13): the whole MSR space walked
//! through the base bitmap and the RDMSR/WRMSR handlers on the fake VMCS
//! and CPU, each index checked against its class in
//! [`crate::exit::msr_table`].

use super::exits_cpuid_msr::wrmsr;
use super::*;
use crate::exit::msr_shared;
use crate::exit::msr_table::configure_base;
use crate::exit::msr_table::{self, Mediator, Read, TABLE, Write};
use crate::hypercall::locks;
use crate::policy::audit::{AuditAction, AuditKind};
use crate::vmx::msr_bitmap::{MsrAccess, MsrBitmap};
use crate::vmx::regs::Gpr;

/// Both bitmap ranges, and samples of the space outside them (which
/// always exits).
fn msr_space() -> impl Iterator<Item = u32> {
    (0..=0x1fff)
        .chain(0xc000_0000..=0xc000_1fff)
        .chain(0x2000..=0x20ff)
        .chain(0x4000_0000..=0x4000_00ff)
        .chain(0x4b56_4d00..=0x4b56_4d10)
        .chain(0xc000_2000..=0xc000_20ff)
        .chain(0xc001_0000..=0xc001_02ff)
        .chain([0x1_0000, 0x8000_0000, 0xbfff_ffff, 0xffff_ffff])
}

const fn in_bitmap(m: u32) -> bool {
    matches!(m, 0..=0x1fff | 0xc000_0000..=0xc000_1fff)
}

#[test]
fn the_table_is_sorted_and_each_row_has_a_reason() {
    for w in TABLE.windows(2) {
        assert!(
            w[0].last < w[1].first,
            "{:#x} overlaps or is unsorted",
            w[1].first
        );
    }
    for r in TABLE {
        assert!(r.first <= r.last && !r.why.is_empty(), "{:#x}", r.first);
        // Pass-through is only possible inside the bitmap ranges.
        if r.read == Read::Pass || matches!(r.write, Write::Pass | Write::Lockable) {
            assert!(in_bitmap(r.first) && in_bitmap(r.last), "{:#x}", r.first);
        }
    }
}

#[test]
fn mediated_and_lockable_rows_match_their_handlers() {
    for m in msr_space() {
        let (_, write) = msr_table::classify(m);
        assert_eq!(
            write == Write::Mediated(Mediator::Shared),
            msr_shared::judges(m) && m != crate::msrs::IA32_SMM_MONITOR_CTL,
            "{m:#x}"
        );
        assert_eq!(
            write == Write::Mediated(Mediator::Apic),
            m == crate::msrs::IA32_APIC_BASE || crate::msrs::is_x2apic(m),
            "{m:#x}"
        );
        // Every MSR the policy can lock is passed through until then.
        assert_eq!(write == Write::Lockable, locks::lockable(m, true), "{m:#x}");
    }
}

#[test]
fn the_whole_msr_space_follows_the_table() {
    let mut page = [0u8; 4096];
    configure_base(&mut page);
    let bitmap = MsrBitmap::wrap(&mut page);
    let mut v = vcpu();
    v.cpu.set_msr(msrs::IA32_FEATURE_CONTROL, 0x5);
    let (mut faults, mut denials, mut passes) = (0, 0, 0);
    for m in msr_space() {
        let (read, write) = msr_table::classify(m);
        // The bitmap: an access exits unless its class passes it.
        assert_eq!(
            bitmap.exits(m, MsrAccess::Read),
            read != Read::Pass,
            "RDMSR {m:#x} ({read:?})"
        );
        assert_eq!(
            bitmap.exits(m, MsrAccess::Write),
            !matches!(write, Write::Pass | Write::Lockable),
            "WRMSR {m:#x} ({write:?})"
        );
        // The handlers, for each access that exits.
        let audits = v.audit.total();
        match read {
            Read::Pass => passes += 1,
            Read::Emulated => {
                v.regs.set(Gpr::Rcx, m.into());
                let r = run(&mut v, ExitReason::Rdmsr, 0, 2);
                assert_advanced(&v, r, 2);
                v.vmcs.set(GuestNatural::Rip, RIP);
            }
            Read::Fault => {
                v.regs.set(Gpr::Rcx, m.into());
                let r = run(&mut v, ExitReason::Rdmsr, 0, 2);
                assert_injected(&v, r, GP);
                assert_eq!(v.audit.total(), audits, "RDMSR {m:#x}: no audit");
                faults += 1;
            }
        }
        match write {
            Write::Pass | Write::Lockable => passes += 1,
            // Judged by their handlers (tests in exits_apic and
            // exits_msr_shared).
            Write::Mediated(_) => {}
            Write::Fault => {
                let r = wrmsr(&mut v, m, 0x1234);
                assert_injected(&v, r, GP);
                assert_eq!(v.audit.total(), audits, "WRMSR {m:#x}: no audit");
            }
            Write::Deny => {
                let r = wrmsr(&mut v, m, 0x5_0000_0001);
                assert_injected(&v, r, GP);
                let rec = v.audit.last().copied().unwrap();
                assert_eq!(v.audit.total(), audits + 1, "WRMSR {m:#x}: audited");
                assert_eq!(rec.kind, AuditKind::MsrLock);
                assert_eq!(rec.gpa, u64::from(m));
                assert_eq!(rec.qualification, 0x5_0000_0001);
                assert_eq!(rec.action, AuditAction::InjectGp);
                denials += 1;
            }
        }
        assert_eq!(v.cpu.msr_writes, 0, "{m:#x}: the monitor wrote no MSR");
    }
    // The walk covered the space: most of it is denied.
    assert!(denials > 16_000 && faults > 16_000, "{denials} {faults}");
    assert!(passes > 100, "{passes}");
}

#[test]
fn hidden_and_unlisted_msrs_differ_only_in_the_audit() {
    // A hidden MSR (VMX capability) and an unlisted one (microcode
    // update trigger) both fault; only the unlisted write is audited.
    let mut v = vcpu();
    let r = wrmsr(&mut v, msrs::IA32_VMX_BASIC, 1);
    assert_injected(&v, r, GP);
    assert!(v.audit.is_empty());
    let r = wrmsr(&mut v, 0x79, 0x10_0000);
    assert_injected(&v, r, GP);
    assert_eq!(v.audit.last().map(|r| r.gpa), Some(0x79));
    assert_eq!(msr_table::classify(0x79), (Read::Fault, Write::Deny));
}
