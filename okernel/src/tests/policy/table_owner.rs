//! UpdatePageTable, issue 13 class 4: whose table an entry is in (reached
//! from the caller's CR3 through locked page-table pages) and, with the
//! table's level, the rule for links: an empty slot cannot be linked to a
//! table outside the locked page-table pages.

use okernel_abi::policy::RegionKind;

use super::page_table::{entry, locked};
use super::*;
use crate::policy::audit::{AuditAction, AuditKind};
use crate::vmx::fields::GuestNatural;

const P: u64 = 1;
const RW: u64 = 2;
const PS: u64 = 0x80;

/// `UpdatePageTable(at, value)` is refused, audited, and writes nothing.
pub(super) fn refused(v: &mut PVcpu, at: u64, value: u64) {
    let before = (entry(v, at), v.audit.total());
    assert_eq!(
        call(v, Call::UpdatePageTable, [at, value, 0]),
        Status::Refused,
        "{at:#x} <- {value:#x}"
    );
    assert_eq!(entry(v, at), before.0, "nothing written");
    assert_eq!(v.audit.total(), before.1 + 1);
    let rec = v.audit.last().unwrap();
    assert_eq!(
        (rec.kind, rec.gpa, rec.qualification, rec.action),
        (AuditKind::PageTableUpdate, at, value, AuditAction::Refused)
    );
    assert_eq!(rec.context, v.policy.current, "the caller's context");
}

#[test]
fn an_empty_slot_cannot_link_to_a_table_in_ordinary_memory() {
    let mut v = locked();
    enter(&mut v, 1);
    // DATA would be the attacker's table (say, mapping text writable).
    // Empty PML4, PDPT and PD slots: each a link at its level.
    for at in [PML4 + 8 * 300, PDPT + 8 * 7, PD + 8 * 100] {
        assert_eq!(entry(&v, at), 0, "empty");
        refused(&mut v, at, DATA | P | RW);
        refused(&mut v, at, DATA | P);
    }
    // A link to a locked table is fine; so is a read-only 2 MiB page in
    // the PD (a mapping, judged by rules 1-3: writable, the 1 GiB around
    // it would overlap locked text).
    ok(
        &mut v,
        Call::UpdatePageTable,
        [PD + 8 * 100, PT | P | RW, 0],
    );
    ok(
        &mut v,
        Call::UpdatePageTable,
        [PD + 8 * 101, 0x60_0000 | P | PS, 0],
    );
    // A PT entry maps a page: plain RAM writable is allowed.
    ok(
        &mut v,
        Call::UpdatePageTable,
        [PT + 8 * 9, DATA | P | RW, 0],
    );
}

#[test]
fn the_trusted_kernel_is_held_to_the_link_rule_in_its_own_address_space() {
    let mut v = locked();
    refused(&mut v, PD + 8 * 100, DATA | P | RW);
}

#[test]
fn an_untrusted_context_may_not_update_a_table_outside_its_address_space() {
    let mut v = pvcpu();
    // Four tables reached from CR3 plus one locked page nobody links.
    lock(&mut v, PML4, 0x5000, RegionKind::PageTable);
    ok(&mut v, Call::CreateContext, [0; 3]);
    let other = PML4 + 0x4000;
    // The trusted kernel owns every locked table.
    ok(&mut v, Call::UpdatePageTable, [other, DATA | P | RW, 0]);
    enter(&mut v, 1);
    refused(&mut v, other + 8, DATA | P | RW);
    // Nor from an address space of its own making: CR3 at plain RAM.
    v.vmcs.set(GuestNatural::Cr3, DATA);
    refused(&mut v, PT + 8 * 9, DATA | P | RW);
    // Its own tables, as before.
    v.vmcs.set(GuestNatural::Cr3, PML4);
    ok(
        &mut v,
        Call::UpdatePageTable,
        [PT + 8 * 9, DATA | P | RW, 0],
    );
}

#[test]
fn a_cr3_on_another_locked_root_is_that_address_space() {
    // The caller chooses its CR3 (loads do not exit): a root it may load
    // is an address space of locked tables, held to the same rules.
    let mut v = locked();
    enter(&mut v, 1);
    v.vmcs.set(GuestNatural::Cr3, PDPT);
    // Seen from the PDPT as root, the PD is level 3 and the PT level 2:
    // linking an empty PT slot to ordinary memory is refused too.
    refused(&mut v, PT + 8 * 100, DATA | P | RW);
}
