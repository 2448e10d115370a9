//! CALL_BASELINE and CALL_CHECK: each verdict in the documented order,
//! each refusal, and the report's bytes.

use core::mem::{offset_of, size_of};

use ept::Perms;
use okernel_abi::fuzz::{CheckReport, MAX_HITS, MonitorVerdict, PolicyPart};
use okernel_abi::hypercall::Call;
use okernel_abi::policy::RegionKind;

use super::*;
use crate::bits::{CR0_WP, EFER_LMA, EFER_NXE};
use crate::fuzz::baseline::fingerprints;
// [`fixture`] locks IA32_LSTAR (a processor MSR) and IA32_EFER (a VMCS
// guest field).
use crate::memmap::{Gpa, Hpa};
use crate::msrs::{IA32_EFER, IA32_LSTAR};
use crate::policy::views::Views;
use crate::vmx::fields::{Control64, ControlNatural, Guest32, Guest64};

/// A second protected page.
const SECRET2: u64 = SECRET + 0x1000;

/// The text region's id in [`fixture`].
pub const TEXT_ID: u32 = 0;
/// The rodata region's id in [`fixture`].
pub const RODATA_ID: u32 = 1;

/// A locked-down guest: text, rodata, credentials and page tables
/// locked, CR0.WP pinned, LSTAR and EFER locked, context 1 with a
/// protected page; the VMCS EPTP is the trusted view's, as after launch.
pub fn fixture() -> PVcpu {
    let mut v = pvcpu();
    let eptp = Views::eptp(&v.memory, 0).unwrap();
    v.vmcs.set(Control64::Eptp, eptp);
    v.memory
        .phys()
        .write(Hpa(TEXT + 0x10), b"\x55\x48\x89\xe5 text");
    v.memory.phys().write(Hpa(RODATA + 0x800), b"read-only");
    assert_eq!(lock(&mut v, TEXT, 0x4000, RegionKind::Text), TEXT_ID.into());
    assert_eq!(
        lock(&mut v, RODATA, 0x1000, RegionKind::Rodata),
        RODATA_ID.into()
    );
    lock(&mut v, CRED, 0x1000, RegionKind::Credentials);
    lock(&mut v, PML4, 0x4000, RegionKind::PageTable);
    ok(&mut v, Call::PinCr, [0, CR0_WP, 0]);
    v.cpu.set_msr(IA32_LSTAR, 0xffff_8000_0000_1000);
    ok(&mut v, Call::LockMsr, [IA32_LSTAR.into(), 0, 0]);
    ok(&mut v, Call::LockMsr, [IA32_EFER.into(), 0, 0]);
    assert_eq!(ok(&mut v, Call::CreateContext, [0; 3]), 1);
    ok(&mut v, Call::AllocProtectedPage, [1, SECRET, 0]);
    v
}

/// BASELINE, which must succeed; returns RDI (bytes checksummed).
pub fn baseline(v: &mut PVcpu) -> u64 {
    assert_eq!(raw_call(v, CALL_BASELINE, 0), Status::Success);
    v.regs.rdi()
}

/// CHECK into [`REPORT`], which must succeed; returns the report.
pub fn check(v: &mut PVcpu) -> CheckReport {
    assert_eq!(raw_call(v, CALL_CHECK, REPORT), Status::Success);
    report(v)
}

/// The report at [`REPORT`], decoded field by field from its bytes.
pub fn report(v: &PVcpu) -> CheckReport {
    let mut b = [0u8; size_of::<CheckReport>()];
    v.memory.phys().copy(Hpa(REPORT), &mut b);
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let mut hit = [0u16; MAX_HITS];
    let at = offset_of!(CheckReport, hit);
    for (i, h) in hit.iter_mut().enumerate() {
        *h = u16::from_le_bytes([b[at + 2 * i], b[at + 2 * i + 1]]);
    }
    CheckReport {
        verdict: u32_at(offset_of!(CheckReport, verdict)),
        subject: u32_at(offset_of!(CheckReport, subject)),
        expected: u64_at(offset_of!(CheckReport, expected)),
        actual: u64_at(offset_of!(CheckReport, actual)),
        exits: u64_at(offset_of!(CheckReport, exits)),
        hits: u32_at(offset_of!(CheckReport, hits)),
        dropped: u32_at(offset_of!(CheckReport, dropped)),
        audit_total: u64_at(offset_of!(CheckReport, audit_total)),
        hit,
    }
}

/// The verdict and subject of a report.
pub fn verdict(r: &CheckReport) -> (MonitorVerdict, u32) {
    (MonitorVerdict::from_raw(r.verdict).unwrap(), r.subject)
}

#[test]
fn baseline_then_check_is_intact_and_rebaselining_accepts_changes() {
    let mut v = fixture();
    assert_eq!(baseline(&mut v), 0x4000 + 0x1000 + 0x1000 + 0x4000);
    let r = check(&mut v);
    assert_eq!(verdict(&r), (MonitorVerdict::Intact, 0));
    assert_eq!((r.expected, r.actual), (0, 0));
    // A legitimate change (through the monitor's write path, which the
    // incremental check follows), then a new baseline: intact again.
    Views::write_phys(&mut v.memory, Gpa(RODATA + 0x800), b"X").unwrap();
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::RegionChanged);
    baseline(&mut v);
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::Intact);
}

#[test]
fn a_changed_locked_byte_is_region_changed_naming_the_region() {
    let mut v = fixture();
    baseline(&mut v);
    v.memory.phys().write(Hpa(RODATA + 0xfff), b"!");
    let r = check(&mut v);
    assert_eq!(verdict(&r), (MonitorVerdict::RegionChanged, RODATA_ID));
    assert_ne!(r.expected, r.actual);
    // Unlocked memory may change: DATA is in no region.
    let mut v = fixture();
    baseline(&mut v);
    v.memory.phys().write(Hpa(DATA), b"!");
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::Intact);
}

#[test]
fn a_cleared_lock_is_region_unlocked_before_any_byte_change() {
    let mut v = fixture();
    baseline(&mut v);
    v.memory.phys().write(Hpa(RODATA + 0x800), b"Y");
    v.policy.regions[TEXT_ID as usize].as_mut().unwrap().locked = false;
    let r = check(&mut v);
    assert_eq!(verdict(&r), (MonitorVerdict::RegionUnlocked, TEXT_ID));
}

#[test]
fn a_cleared_pinned_bit_in_the_guest_cr0_is_cr_pin_lost() {
    let mut v = fixture();
    baseline(&mut v);
    let cr0 = v.vmcs.get(GuestNatural::Cr0) & !CR0_WP;
    v.vmcs.set(GuestNatural::Cr0, cr0);
    let r = check(&mut v);
    assert_eq!(verdict(&r), (MonitorVerdict::CrPinLost, 0));
    assert_eq!((r.expected, r.actual), (CR0_WP, cr0));
}

#[test]
fn a_changed_locked_msr_is_msr_changed() {
    let mut v = fixture();
    baseline(&mut v);
    v.cpu.set_msr(IA32_LSTAR, 0xffff_8000_dead_0000);
    let r = check(&mut v);
    assert_eq!(verdict(&r), (MonitorVerdict::MsrChanged, IA32_LSTAR));
    assert_eq!(
        (r.expected, r.actual),
        (0xffff_8000_0000_1000, 0xffff_8000_dead_0000)
    );
    // EFER lives in the VMCS; LMA is the processor's and does not count.
    let mut v = fixture();
    baseline(&mut v);
    let efer = v.vmcs.get(Guest64::Efer);
    v.vmcs.set(Guest64::Efer, efer ^ EFER_LMA);
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::Intact);
    v.vmcs.set(Guest64::Efer, efer ^ EFER_NXE);
    assert_eq!(
        verdict(&check(&mut v)),
        (MonitorVerdict::MsrChanged, IA32_EFER)
    );
}

#[test]
fn a_view_granting_more_than_the_policy_is_too_permissive() {
    let mut v = fixture();
    baseline(&mut v);
    Views::protect(&mut v.memory, 1, Gpa(TEXT + 0x2000), 0x1000, Perms::RWX).unwrap();
    let r = check(&mut v);
    assert_eq!(verdict(&r), (MonitorVerdict::ViewTooPermissive, 1));
    assert_eq!(r.expected, TEXT + 0x2000);
    assert_eq!(r.actual, Perms::RWX.bits());
    // Context 1's protected page mapped in the trusted view.
    let mut v = fixture();
    baseline(&mut v);
    Views::protect(&mut v.memory, 0, Gpa(SECRET), 0x1000, Perms::R).unwrap();
    let r = check(&mut v);
    assert_eq!(verdict(&r), (MonitorVerdict::ViewTooPermissive, 0));
    assert_eq!(r.expected, SECRET);
}

#[test]
fn policy_changes_name_their_part() {
    type Change = fn(&mut PVcpu);
    let changes: [(Change, PolicyPart); 6] = [
        (
            |v| {
                ok(v, Call::RegisterRegion, [DATA, 0x1000, 2]);
            },
            PolicyPart::Regions,
        ),
        (
            |v| {
                let m = v.vmcs.get(ControlNatural::Cr0GuestHostMask);
                v.vmcs.set(ControlNatural::Cr0GuestHostMask, m & !CR0_WP);
            },
            PolicyPart::Pins,
        ),
        (|v| v.policy.msrs[0] = None, PolicyPart::Msrs),
        (
            |v| {
                ok(v, Call::LockDescriptorTables, [0; 3]);
            },
            PolicyPart::DescriptorTables,
        ),
        (
            |v| {
                ok(v, Call::CreateContext, [0; 3]);
            },
            PolicyPart::Contexts,
        ),
        (
            |v| {
                ok(v, Call::AllocProtectedPage, [1, SECRET2, 0]);
            },
            PolicyPart::ProtectedPages,
        ),
    ];
    for (change, part) in changes {
        let mut v = fixture();
        baseline(&mut v);
        change(&mut v);
        let r = check(&mut v);
        assert_eq!(verdict(&r), (MonitorVerdict::PolicyChanged, part as u32));
        assert_ne!(r.expected, r.actual);
    }
    let mut v = fixture();
    baseline(&mut v);
    ok(&mut v, Call::RegisterGate, [TEXT + 0x40, 0, 0]);
    assert_eq!(
        verdict(&check(&mut v)),
        (MonitorVerdict::PolicyChanged, PolicyPart::Gates as u32)
    );
}

#[test]
fn the_guest_running_in_another_view_is_current_changed() {
    let mut v = fixture();
    baseline(&mut v);
    let eptp = Views::eptp(&v.memory, 1).unwrap();
    v.vmcs.set(Control64::Eptp, eptp);
    let r = check(&mut v);
    assert_eq!(
        verdict(&r),
        (MonitorVerdict::PolicyChanged, PolicyPart::Current as u32)
    );
    assert_eq!((r.expected, r.actual), (0, 1));
    // The views running context 1 while the policy says 0: the report
    // still goes to the page as the trusted view maps it.
    let mut v = fixture();
    baseline(&mut v);
    assert!(Views::set_current(&mut v.memory, 1));
    let r = check(&mut v);
    assert_eq!(
        verdict(&r),
        (MonitorVerdict::PolicyChanged, PolicyPart::Current as u32)
    );
    assert_eq!(r.actual, 1);
    assert_eq!(
        raw_call(&mut v, CALL_CHECK, SECRET),
        Status::InvalidArgument,
        "context 1's protected page is not writable in the trusted view"
    );
}

#[test]
fn a_freed_and_reallocated_protected_page_fingerprints_the_same() {
    let mut v = fixture();
    ok(&mut v, Call::AllocProtectedPage, [1, SECRET2, 0]);
    let slots = |v: &PVcpu| {
        v.policy
            .pages
            .iter()
            .map(|p| p.map(|p| p.gpa))
            .collect::<Vec<_>>()
    };
    let before = slots(&v);
    let views = |v: &mut PVcpu| {
        let PVcpu {
            policy,
            memory,
            vmcs,
            ..
        } = v;
        fingerprints(policy, &*memory, &*vmcs).unwrap()
    };
    let fp = views(&mut v);
    baseline(&mut v);
    ok(&mut v, Call::FreeProtectedPage, [1, SECRET, 0]);
    assert_ne!(views(&mut v), fp, "one page fewer");
    ok(&mut v, Call::FreeProtectedPage, [1, SECRET2, 0]);
    ok(&mut v, Call::AllocProtectedPage, [1, SECRET2, 0]);
    ok(&mut v, Call::AllocProtectedPage, [1, SECRET, 0]);
    assert_ne!(slots(&v), before, "the pages changed slots");
    assert_eq!(views(&mut v), fp);
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::Intact);
}

#[test]
fn untrusted_callers_are_denied_and_nothing_is_cleared() {
    let mut v = fixture();
    baseline(&mut v);
    ok(&mut v, Call::Version, [0; 3]);
    let exits = v.hooks.coverage.exits();
    let hits = v.hooks.coverage.hits().len();
    assert!(hits > 0);
    // CPL 3 in the trusted context.
    let ss = v.vmcs.get(Guest32::SsAccessRights);
    v.vmcs.set(Guest32::SsAccessRights, ss | (3 << 5));
    for number in [CALL_BASELINE, CALL_CHECK] {
        assert_eq!(raw_call(&mut v, number, REPORT), Status::PermissionDenied);
    }
    v.vmcs.set(Guest32::SsAccessRights, ss);
    // CPL 0 in untrusted context 1.
    enter(&mut v, 1);
    for number in [CALL_BASELINE, CALL_CHECK] {
        assert_eq!(raw_call(&mut v, number, REPORT), Status::PermissionDenied);
    }
    assert_eq!(v.hooks.coverage.exits(), exits + 5, "counted, not cleared");
    assert!(v.hooks.coverage.hits().len() > hits);
    assert_eq!(v.hooks.checks, 0);
    let mut page = [0u8; 8];
    v.memory.phys().copy(Hpa(REPORT), &mut page);
    assert_eq!(page, [0; 8], "no report written");
}

#[test]
fn a_bad_report_page_is_an_invalid_argument_and_nothing_is_cleared() {
    let mut v = fixture();
    baseline(&mut v);
    let exits = v.hooks.coverage.exits();
    let pages = [
        REPORT + 8,  // unaligned
        0x40_0000,   // monitor image
        POOL.start,  // frame pool
        0x9_f000,    // reserved
        0xfee0_0000, // MMIO
        0x900_0000,  // beyond RAM
        TEXT,        // not writable in the trusted view
    ];
    for page in pages {
        assert_eq!(
            raw_call(&mut v, CALL_CHECK, page),
            Status::InvalidArgument,
            "{page:#x}"
        );
    }
    assert_eq!(v.hooks.coverage.exits(), exits + pages.len() as u64);
    assert_eq!(v.hooks.checks, 0);
    // A locked page-table page is writable in the trusted view.
    assert_eq!(raw_call(&mut v, CALL_CHECK, PT), Status::Success);
}

#[test]
fn a_check_before_any_baseline_is_not_found() {
    let mut v = fixture();
    assert_eq!(raw_call(&mut v, CALL_CHECK, REPORT), Status::NotFound);
    assert_eq!(v.hooks.checks, 0);
    baseline(&mut v);
    assert_eq!(raw_call(&mut v, CALL_CHECK, REPORT), Status::Success);
}
