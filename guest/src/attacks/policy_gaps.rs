//! Issue 13, class 4: what the policy calls let an untrusted context do
//! beyond its own memory — link an empty page-table slot to a table of
//! its own making, take another context's page as its protected page,
//! and fill the monitor's protected-page table.

use super::cpu::{hypercall_from_a, status_name};
use super::memory::peek;
use super::{Obs, Shown, Suite};
use crate::arch::traps::probe;
use crate::arch::{cpu, instr};
use crate::kernel::{self, ATTACKER_TABLE, SPARE, SPARE_PAGES};
use guest::layout::ALIAS_BASE;
use guest::paging::{ACCESSED, DIRTY, PRESENT, WRITABLE};
use guest::tasks::{CONTAINER_A, CONTAINER_B, vuln};
use okernel_abi::hypercall::{Call, Status};

/// The alias directory's slot the attack links (slot 0 holds the alias
/// window's page table; the others are empty).
const PD_SLOT: u64 = 1;

/// Runs the attacks.
pub fn run(s: &mut Suite<'_>) {
    s.attack("empty-slot-page-table-link", |_| empty_slot_link());
    s.attack("protect-foreign-page", |_| protect_foreign_page());
    s.attack("protected-page-exhaustion", |_| exhaustion());
}

/// `container-a` writes a page table in ordinary memory whose first entry
/// maps kernel text writable, links the empty slot 1 of the alias page
/// directory to it (through `UpdatePageTable`, then, if refused, by
/// writing the entry), and patches `guest_victim` through the 2 MiB it
/// then maps.
fn empty_slot_link() -> Obs {
    let victim = cpu::guest_victim as *const () as u64;
    let table = ATTACKER_TABLE.addr();
    let first = (victim & !0xfff) | PRESENT | WRITABLE | ACCESSED | DIRTY;
    // The table is ordinary memory: any kernel path writes it.
    kernel::vuln(CONTAINER_A, vuln::WRITE, table, first);
    let entry = kernel::layout().spaces.alias_pd + 8 * PD_SLOT;
    let link = table | PRESENT | WRITABLE | ACCESSED;
    let update = status_name(hypercall_from_a(Call::UpdatePageTable, [entry, link, 0, 0]));
    let mut write = None;
    if peek(entry) != Some(link) {
        write = kernel::vuln(CONTAINER_A, vuln::WRITE, entry, link).0;
    }
    let linked = peek(entry) == Some(link);
    let va = ALIAS_BASE + PD_SLOT * 0x20_0000 + (victim & 0xfff);
    let mut via = None;
    let mut patched = false;
    if linked {
        cpu::invlpg(va);
        let orig = peek(victim).unwrap_or(0);
        via = kernel::vuln(CONTAINER_A, vuln::WRITE, va, cpu::VICTIM_PATCH).0;
        patched = probe(cpu::call_victim, 0) == Ok(cpu::VICTIM_PATCHED_RESULT);
        if patched {
            kernel::vuln(CONTAINER_A, vuln::WRITE, va, orig);
        }
        // Unlinked by the trusted kernel (a plain store in its view).
        let _ = probe(instr::write_zero, entry);
        cpu::invlpg(va);
    }
    Obs::new(
        !patched,
        Some(entry),
        format_args!(
            "update: {update}; pde write: {}; linked {linked}; alias write: {}; text patched {patched}",
            Shown(write),
            Shown(via)
        ),
    )
}

/// `container-a` asks to protect `container-b`'s data page for its own
/// context: the page would vanish from every other view, container-b's
/// included.
fn protect_foreign_page() -> Obs {
    let a = kernel::context(CONTAINER_A);
    let data_b = kernel::layout().frames[CONTAINER_B].data;
    let r = hypercall_from_a(Call::AllocProtectedPage, [a, data_b, 0, 0]);
    let taken = r == Some(Ok(Status::Success.raw()));
    if taken {
        // Given back at once (the owner may free its page).
        hypercall_from_a(Call::FreeProtectedPage, [a, data_b, 0, 0]);
    }
    let mut obs = Obs::new(
        !taken,
        None,
        format_args!(
            "AllocProtectedPage(ctx {a}, container-b's data {data_b:#x}): {}",
            status_name(r)
        ),
    );
    obs.counts = taken || r == Some(Ok(Status::PermissionDenied.raw()));
    obs
}

/// `container-a` protects ordinary pages for its own context until the
/// monitor refuses; then the trusted kernel tries to give `container-b`
/// one page. Succeeded when container-b cannot get it (the table is full).
fn exhaustion() -> Obs {
    let a = kernel::context(CONTAINER_A);
    let b = kernel::context(CONTAINER_B);
    let page = |i: usize| SPARE_PAGES.addr() + (i as u64) * 0x1000;
    let mut got = 0;
    let mut last = None;
    while got < SPARE - 1 {
        last = hypercall_from_a(Call::AllocProtectedPage, [a, page(got), 0, 0]);
        if last != Some(Ok(Status::Success.raw())) {
            break;
        }
        got += 1;
    }
    let spare = page(SPARE - 1);
    let for_b = instr::hypercall(Call::AllocProtectedPage, [b, spare, 0, 0]);
    let b_served = for_b.status == Ok(Status::Success);
    if b_served {
        instr::hypercall(Call::FreeProtectedPage, [b, spare, 0, 0]);
    }
    for i in 0..got {
        instr::hypercall(Call::FreeProtectedPage, [a, page(i), 0, 0]);
    }
    Obs::new(
        b_served,
        None,
        format_args!(
            "container-a protected {got} pages, then {}; container-b's page: {}",
            status_name(last),
            for_b.status.map_or("undefined status", Status::name)
        ),
    )
}
