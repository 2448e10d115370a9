//! UpdatePageTable (the remap defence) and the audit calls.

use okernel_abi::policy::RegionKind;

use super::*;
use crate::hypercall::page_table::{Caller, allowed, mapped_range};
use crate::memmap::Hpa;
use crate::policy::audit::{AuditAction, AuditKind};

const P: u64 = 1;
const RW: u64 = 2;
const PS: u64 = 0x80;

/// Page tables, text, rodata and credentials locked; one protected page.
pub(super) fn locked() -> PVcpu {
    let mut v = pvcpu();
    lock(&mut v, PML4, 0x4000, RegionKind::PageTable);
    lock(&mut v, TEXT, 0x4000, RegionKind::Text);
    lock(&mut v, RODATA, 0x1000, RegionKind::Rodata);
    lock(&mut v, CRED, 0x1000, RegionKind::Credentials);
    ok(&mut v, Call::CreateContext, [0; 3]);
    ok(&mut v, Call::AllocProtectedPage, [1, SECRET, 0]);
    v
}

pub(super) fn entry(v: &PVcpu, at: u64) -> u64 {
    let mut b = [0u8; 8];
    v.memory.phys().copy(Hpa(at), &mut b);
    u64::from_le_bytes(b)
}

/// PT slot 5 maps 0x60_5000 (plain RAM) writable.
const SLOT: u64 = PT + 5 * 8;

#[test]
fn update_page_table_checks_the_entry_address() {
    let mut v = locked();
    assert_eq!(
        call(&mut v, Call::UpdatePageTable, [SLOT + 4, 0, 0]),
        Status::Unaligned
    );
    assert_eq!(
        call(&mut v, Call::UpdatePageTable, [DATA, 0, 0]),
        Status::NotFound
    );
    assert_eq!(
        call(&mut v, Call::UpdatePageTable, [TEXT, 0, 0]),
        Status::NotFound
    );
    let mut w = pvcpu();
    ok(
        &mut w,
        Call::RegisterRegion,
        [PML4, 0x4000, RegionKind::PageTable as u64],
    );
    assert_eq!(
        call(&mut w, Call::UpdatePageTable, [SLOT, 0, 0]),
        Status::NotFound,
        "a page-table region that is not locked"
    );
    assert_eq!(v.audit.total(), 0);
}

#[test]
fn legitimate_updates_are_written_from_any_context() {
    let mut v = locked();
    enter(&mut v, 1);
    // Plain RAM, writable; then unmapped; then read-only text; then that
    // entry with A and D set (the only change an untrusted context may
    // make to it: `entry_flags.rs`).
    for value in [DATA | P | RW, 0, TEXT | P, TEXT | P | 0x60] {
        ok(&mut v, Call::UpdatePageTable, [SLOT, value, 0]);
        assert_eq!(entry(&v, SLOT), value);
    }
    // A link between page tables may be writable.
    ok(&mut v, Call::UpdatePageTable, [PD + 8 * 3, PT | P | RW, 0]);
    assert_eq!(v.audit.total(), 0);
}

#[test]
fn mapping_a_protected_frame_writable_is_refused_and_audited() {
    let mut v = locked();
    enter(&mut v, 1);
    for frame in [TEXT + 0x1000, RODATA, CRED, SECRET, 0x20_0000 & !0xfff] {
        let n = v.audit.total();
        let value = frame | P | RW;
        assert_eq!(
            call(&mut v, Call::UpdatePageTable, [SLOT, value, 0]),
            Status::Refused,
            "{frame:#x}"
        );
        assert_eq!(entry(&v, SLOT), 0x60_5000 | P | RW, "nothing written");
        let rec = *v.audit.last().unwrap();
        assert_eq!(v.audit.total(), n + 1);
        assert_eq!(
            (rec.kind, rec.gpa, rec.qualification, rec.context),
            (AuditKind::PageTableUpdate, SLOT, value, 1)
        );
        assert_eq!(rec.action, AuditAction::Refused);
    }
    // A large page around protected memory, writable: refused.
    assert_eq!(
        call(&mut v, Call::UpdatePageTable, [SLOT, P | RW | PS, 0]),
        Status::Refused
    );
}

#[test]
fn remapping_an_entry_that_maps_a_protected_frame_is_refused() {
    let mut v = locked();
    ok(&mut v, Call::UpdatePageTable, [SLOT, TEXT | P, 0]);
    enter(&mut v, 1);
    for value in [
        DATA | P,
        DATA | P | RW,
        0,
        (TEXT + 0x1000) | P,
        TEXT | P | PS,
    ] {
        assert_eq!(
            call(&mut v, Call::UpdatePageTable, [SLOT, value, 0]),
            Status::Refused,
            "{value:#x}"
        );
        assert_eq!(entry(&v, SLOT), TEXT | P);
    }
    // The identity map's 2 MiB entries cover text: they stay as they are.
    assert_eq!(
        call(
            &mut v,
            Call::UpdatePageTable,
            [PD + 8, DATA | P | RW | PS, 0]
        ),
        Status::Refused
    );
    // A link to a page table may only become another link.
    assert_eq!(
        call(
            &mut v,
            Call::UpdatePageTable,
            [PD + 8 * 3, DATA | P | RW, 0]
        ),
        Status::Refused
    );
    assert_eq!(
        call(&mut v, Call::UpdatePageTable, [PD + 8 * 3, 0, 0]),
        Status::Refused
    );
    // Another page table: the trusted context's to choose; from this
    // untrusted context a link does not move (entry_flags.rs).
    assert_eq!(
        call(
            &mut v,
            Call::UpdatePageTable,
            [PD + 8 * 3, PML4 | P | RW, 0]
        ),
        Status::Refused
    );
}

#[test]
fn the_rules_judge_entries_by_what_they_could_map() {
    assert_eq!(mapped_range(DATA), None);
    assert_eq!(mapped_range(DATA | P), Some(PhysRange::new(DATA, 0x1000)));
    assert_eq!(
        mapped_range(DATA | P | PS),
        Some(PhysRange::new(0, 1 << 30))
    );
    let v = locked();
    assert!(allowed(&v.policy, Caller::Untrusted, 0, DATA | P | RW));
    assert!(!allowed(&v.policy, Caller::Untrusted, 0, SECRET | P | RW));
    assert!(
        allowed(&v.policy, Caller::Untrusted, 0, SECRET | P),
        "read-only: the EPT hides it anyway"
    );
    assert!(
        allowed(&v.policy, Caller::Untrusted, 0, PT | P | RW),
        "page-table frames are exempt"
    );
}

#[test]
fn audit_count_and_read_copy_records_into_writable_guest_ram() {
    let mut v = locked();
    enter(&mut v, 1);
    assert_eq!(
        call(&mut v, Call::UpdatePageTable, [SLOT, TEXT | P | RW, 0]),
        Status::Refused
    );
    assert_eq!(ok(&mut v, Call::AuditCount, [0; 3]), 1);
    let buf = DATA + 0x100;
    ok(&mut v, Call::AuditRead, [0, buf, 0]);
    let mut b = [0u8; 64];
    v.memory.phys().copy(Hpa(buf), &mut b);
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    assert_eq!(word(0), 0, "sequence");
    assert_eq!(
        u32::from_le_bytes(b[8..12].try_into().unwrap()),
        5,
        "kind: page-table update"
    );
    assert_eq!(
        u32::from_le_bytes(b[12..16].try_into().unwrap()),
        4,
        "action: refused"
    );
    assert_eq!(
        (word(16), word(24), word(32)),
        (1, SLOT, 0),
        "context, gpa, gva"
    );
    assert_eq!(
        (word(40), word(48), word(56)),
        (2, RIP, TEXT | P | RW),
        "access W, rip, value"
    );
    for (args, status) in [
        ([1, buf], Status::NotFound),
        ([u64::MAX, buf], Status::NotFound),
        ([0, 0x40_0000], Status::MonitorMemory),
        ([0, 0x9_f000], Status::OutOfRam),
        ([0, RODATA], Status::InvalidArgument),
        ([0, PT], Status::InvalidArgument),
        ([0, TEXT - 0x20], Status::InvalidArgument),
    ] {
        assert_eq!(
            call(&mut v, Call::AuditRead, [args[0], args[1], 0]),
            status,
            "{args:x?}"
        );
    }
    for at in [RODATA, TEXT - 0x20] {
        let mut after = [0u8; 64];
        v.memory.phys().copy(Hpa(at), &mut after);
        assert_eq!(after, [0; 64], "nothing written at {at:#x}");
    }
}

#[test]
fn audit_records_print_as_text_and_json_lines() {
    let mut v = locked();
    enter(&mut v, 1);
    assert_eq!(
        call(&mut v, Call::UpdatePageTable, [SLOT, SECRET | P | RW, 0]),
        Status::Refused
    );
    let rec = *v.audit.last().unwrap();
    assert_eq!(
        rec.json().to_string(),
        format!(
            "{{\"seq\":0,\"kind\":\"page-table-update\",\"ctx\":1,\"gpa\":\"{SLOT:#x}\",\"gva\":null,\
             \"access\":\"-W-\",\"allowed\":\"---\",\"rip\":\"{RIP:#x}\",\"cr3\":\"{:#x}\",\
             \"qual\":\"{:#x}\",\"action\":\"refused\"}}",
            PML4,
            SECRET | P | RW
        )
    );
    let line = format!("audit #0 page-table-update ctx=1 gpa={SLOT:#x} gva=- access=-W-");
    assert!(rec.to_string().starts_with(&line), "{rec}");
}
