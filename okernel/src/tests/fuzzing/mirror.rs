//! The audit mirror: the page `CALL_BASELINE` registers holds the record
//! total and the newest record after every exit that audited, is left
//! alone by exits that did not, and a bad page is refused with nothing
//! recorded.

use core::mem::size_of;

use okernel_abi::fuzz::AuditMirror;
use okernel_abi::hypercall::Call;
use okernel_abi::policy::{AuditKind, AuditRecord};

use super::checks::fixture;
use super::*;
use crate::memmap::Hpa;

/// The executor's mirror page in these tests (ordinary RAM).
const MIRROR: u64 = DATA + 0x3000;

/// The mirror at `page`, decoded from its bytes.
fn mirror(v: &PVcpu, page: u64) -> AuditMirror {
    let mut b = [0u8; size_of::<AuditMirror>()];
    v.memory.phys().copy(Hpa(page), &mut b);
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    AuditMirror {
        total: u64_at(0),
        newest: AuditRecord {
            sequence: u64_at(8),
            kind: u32_at(16),
            action: u32_at(20),
            context: u64_at(24),
            gpa: u64_at(32),
            gva: u64_at(40),
            access: u64_at(48),
            rip: u64_at(56),
            qualification: u64_at(64),
        },
    }
}

/// What the mirror must hold now: the ring's total and newest record.
fn expected(v: &PVcpu) -> AuditMirror {
    AuditMirror {
        total: v.audit.total(),
        newest: v.audit.last().map(|r| r.to_abi()).unwrap_or_default(),
    }
}

#[test]
fn the_mirror_holds_the_total_and_newest_record_after_every_audited_exit() {
    let mut v = fixture();
    assert_eq!(raw_call(&mut v, CALL_BASELINE, MIRROR), Status::Success);
    assert_eq!(mirror(&v, MIRROR), expected(&v), "written at the baseline");
    let before = v.audit.total();
    for (i, gpa) in [TEXT + 0x10, RODATA + 0x800, TEXT + 0x3ff8]
        .into_iter()
        .enumerate()
    {
        ept_write(&mut v, gpa);
        let m = mirror(&v, MIRROR);
        assert_eq!(m.total, before + i as u64 + 1, "one record per denial");
        assert_eq!(m, expected(&v));
        assert_eq!(m.newest.kind, AuditKind::EptViolation as u32);
        assert_eq!(m.newest.gpa, gpa);
    }
    let r = super::checks::check(&mut v);
    assert_eq!(r.audit_total, mirror(&v, MIRROR).total, "the report agrees");
}

#[test]
fn exits_that_audit_nothing_leave_the_page_alone() {
    let mut v = fixture();
    assert_eq!(raw_call(&mut v, CALL_BASELINE, MIRROR), Status::Success);
    v.memory.phys().write(Hpa(MIRROR), &[0xee; 8]);
    assert_eq!(raw_call(&mut v, Call::Null.raw(), 0), Status::Success);
    assert_eq!(raw_call(&mut v, Call::Version.raw(), 0), Status::Success);
    assert_eq!(mirror(&v, MIRROR).total, u64::from_le_bytes([0xee; 8]));
    ept_write(&mut v, TEXT);
    assert_eq!(mirror(&v, MIRROR), expected(&v), "rewritten whole");
}

#[test]
fn without_a_mirror_page_nothing_is_written() {
    let mut v = fixture();
    assert_eq!(raw_call(&mut v, CALL_BASELINE, 0), Status::Success);
    ept_write(&mut v, TEXT);
    assert_eq!(mirror(&v, MIRROR), AuditMirror::default());
}

#[test]
fn a_bad_mirror_page_is_refused_and_no_baseline_recorded() {
    let mut v = fixture();
    let monitor = MONITOR[0].start;
    for page in [MIRROR + 8, monitor, 1 << 50] {
        assert_eq!(
            raw_call(&mut v, CALL_BASELINE, page),
            Status::InvalidArgument,
            "{page:#x}"
        );
        assert_eq!(
            raw_call(&mut v, CALL_CHECK, super::REPORT),
            Status::NotFound,
            "{page:#x}: no baseline was recorded"
        );
    }
    ept_write(&mut v, TEXT);
    assert_eq!(mirror(&v, MIRROR), AuditMirror::default());
}
