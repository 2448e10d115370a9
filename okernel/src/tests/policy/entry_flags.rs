//! UpdatePageTable, issue 13's flag gap: from an untrusted context an
//! entry that maps a protected frame (rule 2) or links to a page table
//! (rule 3) keeps every bit but A and D (set only) — and a link's frame.
//! The trusted context keeps its freedom over its own tables.

use super::gates::with_gate;
use super::page_table::{entry, locked};
use super::table_owner::refused;
use super::*;
use crate::bits::EFER_NXE;
use crate::hypercall::page_table::{Caller, allowed};
use crate::policy::guest_paging::{USER, XD};
use crate::vmx::fields::Guest64;

const P: u64 = 1;
const RW: u64 = 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 0x80;
const G: u64 = 1 << 8;
/// Bit 9, which the processor ignores (software's).
const AVL: u64 = 1 << 9;
/// Protection key 1 (bits 62:59).
const PK1: u64 = 1 << 59;

/// PT slot 5: the trusted kernel's read-only mapping of a text page.
const SLOT: u64 = PT + 5 * 8;
const TEXT_PTE: u64 = (TEXT + 0x1000) | P | A;
/// The PD entry linking the page table (a table both views walk).
const LINK: u64 = PD + 8 * 3;
const LINK_PDE: u64 = PT | P | RW;

/// Locked, with [`SLOT`] mapping text (written by the trusted kernel),
/// running in untrusted context 1.
fn untrusted() -> PVcpu {
    let mut v = locked();
    ok(&mut v, Call::UpdatePageTable, [SLOT, TEXT_PTE, 0]);
    enter(&mut v, 1);
    v
}

/// The changes of a text mapping issue 13 found open: each would make
/// the trusted kernel's own text unusable (user, execute-disable,
/// uncached, ...) or change a bit the monitor cannot judge.
const TEXT_CHANGES: [(u64, &str); 10] = [
    (TEXT_PTE | XD, "XD set"),
    (TEXT_PTE | USER, "U/S set"),
    (TEXT_PTE | PCD, "PCD set"),
    (TEXT_PTE | PWT, "PWT set"),
    (TEXT_PTE | G, "G set"),
    (TEXT_PTE | PS, "PAT set"),
    (TEXT_PTE | PK1, "protection key"),
    (TEXT_PTE | AVL, "an ignored bit"),
    (TEXT_PTE & !A, "A cleared"),
    (TEXT_PTE & !P, "not present"),
];

#[test]
fn an_untrusted_context_may_not_change_the_flags_of_a_text_mapping() {
    let mut v = untrusted();
    for (value, what) in TEXT_CHANGES {
        let n = v.audit.total();
        refused(&mut v, SLOT, value);
        assert_eq!(v.audit.total(), n + 1, "{what}");
        assert_eq!(entry(&v, SLOT), TEXT_PTE, "{what}: nothing written");
    }
    // R/W set: rule 1 already (a writable mapping of text).
    refused(&mut v, SLOT, TEXT_PTE | RW);
}

#[test]
fn an_untrusted_context_may_not_change_the_flags_of_a_link_even_relinking() {
    let mut v = untrusted();
    for value in [
        LINK_PDE | XD,
        LINK_PDE | USER,
        LINK_PDE & !RW,
        LINK_PDE | PCD,
        LINK_PDE | PWT,
        LINK_PDE | AVL,
        PML4 | P | RW | USER,
        PML4 | P | RW | XD,
        PML4 | P,
    ] {
        refused(&mut v, LINK, value);
    }
    // The PML4's link to the PDPT, which holds the kernel's half.
    refused(&mut v, PML4, PDPT | P | RW | XD);
    refused(&mut v, PML4, PDPT | P | RW | USER);
}

#[test]
fn an_untrusted_context_may_set_accessed_and_dirty() {
    let mut v = untrusted();
    for value in [TEXT_PTE, TEXT_PTE | D, TEXT_PTE | D | A] {
        ok(&mut v, Call::UpdatePageTable, [SLOT, value, 0]);
        assert_eq!(entry(&v, SLOT), value);
    }
    refused(&mut v, SLOT, TEXT_PTE);
    for value in [LINK_PDE | A, LINK_PDE | A | D] {
        ok(&mut v, Call::UpdatePageTable, [LINK, value, 0]);
        assert_eq!(entry(&v, LINK), value);
    }
    refused(&mut v, LINK, LINK_PDE);
    assert_eq!(v.audit.total(), 2);
}

#[test]
fn the_trusted_context_may_still_change_the_flags_of_its_tables() {
    let mut v = locked();
    ok(&mut v, Call::UpdatePageTable, [SLOT, TEXT_PTE, 0]);
    for (value, what) in TEXT_CHANGES {
        if value & P == 0 || value & PS != 0 {
            continue; // rule 2 holds for everyone: no unmap, same size
        }
        assert_eq!(
            call(&mut v, Call::UpdatePageTable, [SLOT, value, 0]),
            Status::Success,
            "{what}"
        );
        assert_eq!(entry(&v, SLOT), value);
    }
    for value in [LINK_PDE | XD, LINK_PDE | USER, PML4 | P, LINK_PDE] {
        ok(&mut v, Call::UpdatePageTable, [LINK, value, 0]);
    }
    assert_eq!(v.audit.total(), 0);
}

#[test]
fn the_rules_take_the_callers_trust() {
    let v = locked();
    let p = &v.policy;
    for caller in [Caller::Trusted, Caller::Untrusted] {
        assert!(allowed(p, caller, TEXT_PTE, TEXT_PTE | D), "{caller:?}");
        assert!(!allowed(p, caller, TEXT_PTE, 0), "{caller:?}");
        assert!(!allowed(p, caller, LINK_PDE, DATA | P), "{caller:?}");
    }
    assert!(allowed(p, Caller::Trusted, TEXT_PTE, TEXT_PTE | XD));
    assert!(!allowed(p, Caller::Untrusted, TEXT_PTE, TEXT_PTE | XD));
    assert!(allowed(p, Caller::Trusted, LINK_PDE, LINK_PDE | USER));
    assert!(!allowed(p, Caller::Untrusted, LINK_PDE, LINK_PDE | USER));
    // Plain RAM: the rules do not look at its flags.
    let data = DATA | P | RW;
    assert!(allowed(p, Caller::Untrusted, data, data | XD | USER));
    assert_eq!(Caller::of(0), Caller::Trusted);
    assert_eq!(Caller::of(3), Caller::Untrusted);
}

#[test]
fn an_untrusted_context_cannot_make_a_gate_unusable() {
    // The 2 MiB identity-map page around the gate, made read-only and
    // execute-disable: same frame, same size, so rule 2 once let it
    // through, and the gate was refused from then on (a stop of the
    // context would halt the virtual CPU).
    let (mut v, g) = with_gate(0x0077_f000);
    v.vmcs
        .set(Guest64::Efer, v.vmcs.get(Guest64::Efer) | EFER_NXE);
    let pde = PD + 8 * (TEXT >> 21);
    let old = entry(&v, pde);
    assert_eq!(old, TEXT | P | RW | PS);
    for value in [TEXT | P | PS | XD, TEXT | P | PS | USER] {
        refused(&mut v, pde, value);
    }
    assert_eq!(
        call(&mut v, Call::SwitchContext, [0, g, 0]),
        Status::Success
    );
    assert_eq!(v.policy.current, 0, "the gate was entered");
}

/// The review of the flag rule's first version: an untrusted context
/// fills a locked table of its own (an empty slot may take a read-only or
/// execute-disable mapping of text, and RAM it writes) and then moves a
/// link the trusted kernel walks to it — the trusted kernel's text
/// becomes execute-disable and its read-only data the attacker's RAM
/// without a single refused entry. A link does not move from an untrusted
/// context.
#[test]
fn an_untrusted_context_cannot_move_a_shared_link_to_a_table_it_filled() {
    /// The untrusted process's own page table (locked, like every table).
    const PT2: u64 = 0x10_5000;
    let mut v = locked();
    lock(
        &mut v,
        PT2,
        0x1000,
        okernel_abi::policy::RegionKind::PageTable,
    );
    let efer = v.vmcs.get(Guest64::Efer);
    v.vmcs.set(Guest64::Efer, efer | EFER_NXE);
    // The trusted kernel maps text and rodata through the shared PD[3].
    ok(&mut v, Call::UpdatePageTable, [PT + 5 * 8, TEXT_PTE, 0]);
    ok(
        &mut v,
        Call::UpdatePageTable,
        [PT + 6 * 8, RODATA | P | A, 0],
    );
    enter(&mut v, 1);
    // Untrusted: its own table, reachable through an empty slot, filled.
    ok(
        &mut v,
        Call::UpdatePageTable,
        [PD + 8 * 100, PT2 | P | RW, 0],
    );
    ok(
        &mut v,
        Call::UpdatePageTable,
        [PT2 + 5 * 8, TEXT_PTE | XD, 0],
    );
    ok(
        &mut v,
        Call::UpdatePageTable,
        [PT2 + 6 * 8, DATA | P | A, 0],
    );
    // The direct changes are refused, and so is the move.
    refused(&mut v, PT + 5 * 8, TEXT_PTE | XD);
    refused(&mut v, PT + 6 * 8, DATA | P | A);
    refused(&mut v, LINK, PT2 | P | RW);
    assert_eq!(
        entry(&v, LINK),
        LINK_PDE,
        "the trusted kernel's walk is unchanged"
    );
}
