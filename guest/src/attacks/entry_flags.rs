//! Issue 13's flag gap: `container-a` changes not the frame but the flags
//! of an entry the trusted kernel walks too — execute-disable on its
//! mapping of kernel text. `UpdatePageTable` once compared only the frame
//! and page size of an entry that maps protected memory, so the trusted
//! kernel's own text could be made unusable from an untrusted context.
//! And the same effect without touching a single entry the trusted kernel
//! maps text with: `container-a` fills a locked table of its own with an
//! execute-disable mapping of text and moves a link the trusted kernel
//! walks to that table.

use super::cpu::{clear_alias, set_entry_from_a};
use super::memory::peek;
use super::{Obs, Shown, Suite};
use crate::arch::instr::hypercall;
use crate::arch::traps::{Fault, probe};
use crate::arch::{cpu, ops};
use crate::kernel::{self, syscall};
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use guest::layout::{ALIAS_BASE, USER_BASE, alias_va};
use guest::paging::{ACCESSED, ADDR_MASK, DIRTY, PRESENT, Pool, index};
use guest::tasks::CONTAINER_A;
use okernel_abi::hypercall::Call;

/// The alias slot the trusted kernel maps the text page at.
const SLOT: usize = 5;
/// The alias slot of the relink row: empty in the alias page table and
/// in `container-a`'s user page table (which holds entries 0, 1, 2, 4).
const RELINK_SLOT: usize = 6;
/// Execute-disable (bit 63; EFER.NXE is on).
const XD: u64 = 1 << 63;

/// Runs the attacks.
pub fn run(s: &mut Suite<'_>) {
    s.attack("untrusted-xd-on-kernel-text", |_| xd_on_kernel_text());
    s.attack("untrusted-relink-shared-table", |_| relink_shared_table());
}

/// The trusted kernel maps `guest_victim`'s text page read-only at alias
/// slot 5 and runs it there; `container-a` sets XD on that entry
/// (`UpdatePageTable`, then, if that did not take, a direct write); the
/// trusted kernel runs the page through the alias again. Blocked when it
/// still runs. (The identity map's 2 MiB pages would do as well, but the
/// negative controls would then take the whole kernel's text away.)
fn xd_on_kernel_text() -> Obs {
    let victim = cpu::guest_victim as *const () as u64;
    let entry = kernel::layout().spaces.alias_entry(SLOT);
    let va = alias_va(SLOT) + (victim & 0xfff);
    let mapping = (victim & !0xfff) | PRESENT | ACCESSED | DIRTY;
    let map = syscall::set_pte(entry, mapping);
    cpu::invlpg(va);
    let before = probe(ops::call_at, va);
    let (update, write, set) = set_entry_from_a(entry, mapping | XD);
    cpu::invlpg(va);
    let after = probe(ops::call_at, va);
    clear_alias(SLOT);
    let mut obs = Obs::new(
        after == Ok(cpu::VICTIM_RESULT),
        Some(entry),
        format_args!(
            "trusted map: {map:?}, ran {}; update: {update}; pte write: {}; XD set {set}; trusted run after: {}",
            Shown(Some(before)),
            Shown(write),
            Shown(Some(after))
        ),
    );
    // Without the trusted kernel's own run first, a block proves nothing.
    obs.counts = before == Ok(cpu::VICTIM_RESULT);
    obs
}

/// A probe's result in a few characters (the check line holds 160).
struct Short(Option<Result<u64, Fault>>);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => write!(f, "-"),
            Some(Ok(v)) => write!(f, "{v:#x}"),
            Some(Err(e)) => write!(f, "{}", e.name().split(' ').next().unwrap_or("fault")),
        }
    }
}

/// The value [`store`] writes.
static STORE: AtomicU64 = AtomicU64::new(0);

/// Writes [`STORE`]'s value at `addr`.
extern "C" fn store(addr: u64) -> u64 {
    // SAFETY: a page-table entry this row changed, written back to what
    // it held before (run under a probe).
    unsafe { (addr as *mut u64).write_volatile(STORE.load(Ordering::SeqCst)) };
    0
}

/// Puts `value` back into page-table entry `entry` from the trusted
/// kernel: a plain store in its view, `UpdatePageTable` if that faults.
fn restore(entry: u64, value: u64) {
    if peek(entry) == Some(value) {
        return;
    }
    STORE.store(value, Ordering::SeqCst);
    if probe(store, entry).is_err() {
        hypercall(Call::UpdatePageTable, [entry, value, 0, 0]);
    }
}

/// The page table that maps `container-a`'s user pages (PML4 slot 1 of
/// its address space), found by walking its tables.
fn user_page_table_of_a() -> Option<u64> {
    let mut table = kernel::layout().spaces.task_roots[CONTAINER_A];
    for level in [4, 3, 2] {
        let e = peek(Pool::entry_addr(table, index(USER_BASE, level)))?;
        if e & PRESENT == 0 {
            return None;
        }
        table = e & ADDR_MASK;
    }
    Some(table)
}

/// The review's bypass of the flag rule (session 10): the trusted kernel
/// maps `guest_victim`'s text page read-only at alias slot 6 and runs it
/// there. `container-a` fills slot 6 of its *own* user page table (a
/// locked table its address space reaches; empty there, so an
/// execute-disable mapping of text is allowed) with an XD mapping of that
/// page, then moves the alias page directory's link — the shared entry
/// the trusted kernel's walk of the alias window goes through — from the
/// alias page table to its user page table (`UpdatePageTable`, then, if
/// that did not take, a direct write). The trusted kernel runs the page
/// through the alias again. Blocked when the link did not move and the
/// page still runs. Every entry is written back by the trusted kernel.
fn relink_shared_table() -> Obs {
    let victim = cpu::guest_victim as *const () as u64;
    let spaces = kernel::layout().spaces;
    let entry = spaces.alias_entry(RELINK_SLOT);
    let va = alias_va(RELINK_SLOT) + (victim & 0xfff);
    let mapping = (victim & !0xfff) | PRESENT | ACCESSED | DIRTY;
    let mapped = syscall::set_pte(entry, mapping).is_ok();
    cpu::invlpg(va);
    let before = probe(ops::call_at, va);
    // The shared link: the alias directory's entry for the window.
    let link = Pool::entry_addr(spaces.alias_pd, index(ALIAS_BASE, 2));
    let old_link = peek(link).unwrap_or(0);
    let user_pt = user_page_table_of_a();
    let (own, own_old) = match user_pt {
        Some(t) => {
            let e = Pool::entry_addr(t, RELINK_SLOT);
            (e, peek(e))
        }
        None => (0, None),
    };
    let mut fill = ("not tried", None, false);
    let mut relink = ("not tried", None, false);
    let mut after = before;
    if let (Some(t), Some(0)) = (user_pt, own_old) {
        // Step 1: container-a's own table gets an XD mapping of the text.
        fill = set_entry_from_a(own, mapping | XD);
        // Step 2: the trusted kernel's link moves to that table, its
        // flags unchanged.
        relink = set_entry_from_a(link, (old_link & !ADDR_MASK) | t);
        cpu::invlpg(va);
        after = probe(ops::call_at, va);
    }
    let moved = relink.2;
    restore(link, old_link);
    if let Some(v) = own_old {
        restore(own, v);
    }
    clear_alias(RELINK_SLOT);
    let restored = peek(link) == Some(old_link) && (own_old.is_none() || peek(own) == own_old);
    let mut obs = Obs::new(
        !moved && after == Ok(cpu::VICTIM_RESULT),
        Some(link),
        format_args!(
            "ran {}; own PT[{RELINK_SLOT}] = XD text: {} (set {}); PD link -> own PT: {}, write {}, moved {moved}; ran after {}",
            Short(Some(before)),
            fill.0,
            fill.2,
            relink.0,
            Short(relink.1),
            Short(Some(after))
        ),
    );
    // Without the trusted kernel's own run first, and an empty slot in
    // container-a's table to fill, a block proves nothing; and the rows
    // after this one need the entries as they were.
    obs.counts = restored && mapped && before == Ok(cpu::VICTIM_RESULT) && own_old == Some(0);
    obs
}
