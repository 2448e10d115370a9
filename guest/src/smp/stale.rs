//! `race-stale-mapping` (invariant 3: a page-table update on one
//! processor while another uses the old mapping). The processor that
//! updates an entry and then locks the frame it used to map cannot rely
//! on the others dropping their cached translation of it: on bare metal
//! that is the kernel's own TLB shootdown. Under okernel the lock itself
//! must not return while another processor can still write the frame
//! through a translation it cached: its shootdown (`docs/smp.md`) takes
//! every other processor out of the guest, and each drops its cached
//! translations (INVEPT, SDM Vol. 3C §29.4.3.1) before it enters again.
//!
//! The BSP maps [`ALIAS_SLOT`]'s 2 MiB of the alias window through a page
//! table of its own at `start_up::PT_LOW` (under okernel a locked
//! page-table region, linked with `UpdatePageTable`), whose entry 0 maps
//! the page at `start_up::STALE_TARGET` writable, writes it once through
//! that address (its TLB now holds the translation) and then writes a
//! count through it in a loop. One other processor (`start_up::STALE`,
//! real mode), once it sees the loop's writes in the page, points entry 0
//! at `start_up::STALE_NEW` (`UpdatePageTable` under okernel, a store
//! without a monitor), locks the old page read-only (`RegisterRegion` as
//! `Rodata`, `LockRegion`), reads it the moment the lock returned and
//! again after a watch. Blocked = the page did not change after the lock
//! returned. Under okernel the row also needs evidence that the race was
//! run: the page changed after the update returned (the BSP wrote it
//! through its old translation) and again while the lock was in flight
//! (so the lock had to end that translation), and the BSP's writes after
//! the lock reached the new page (it walked the updated entry).
//! Negative controls: without a monitor nothing locks the page and the
//! BSP writes on through its old translation (nothing invalidates it);
//! under the monitor built without its shootdown
//! (`smp-race-no-shootdown`) the BSP writes on until its next exit.
//!
//! What the row cannot show in Bochs: Bochs drops every cached
//! translation at every VM exit and entry, so a catch-up that left out
//! its INVEPT would pass here too. What it shows is the wait: a lock made
//! by another processor (from real mode) does not return while the BSP
//! still runs on a translation from before it. The INVEPT of the catch-up
//! is host-tested (`okernel/src/tests/policy/smp.rs`).

use super::setup::{Failed, call};
use super::start_up::{
    self, GO_AT, Marks, NEW_PTE_AT, NO_SWITCH, PT_LOW, PTE_AT, STALE_NEW, STALE_TARGET, StaleMarks,
};
use super::{WAIT, modes, ticks};
use crate::arch::{cpu, traps};
use crate::report::{Buf, Checks};
use core::sync::atomic::{AtomicU64, Ordering};
use guest::layout::ALIAS_BASE;
use guest::paging::{ACCESSED, DIRTY, PRESENT, Pool, WRITABLE};
use okernel_abi::boot::EntryMode;
use okernel_abi::hypercall::Call;
use okernel_abi::policy::RegionKind;

/// The alias page directory's entry the row links its table into (slot 0
/// links the alias window's own table; the rest are empty in this
/// scenario).
const ALIAS_SLOT: usize = 2;
/// Where the BSP writes: entry 0 of the row's table.
const VA: u64 = ALIAS_BASE + ALIAS_SLOT as u64 * 0x20_0000;

/// The code page, for [`write_loop`] (a bare function run by a probe).
static CODE_PAGE: AtomicU64 = AtomicU64::new(0);

/// What the row saw.
pub struct Stale {
    /// The table linked (under okernel: locked and linked by
    /// `UpdatePageTable`), or the step that failed.
    setup: Result<(), Failed>,
    /// The BSP's loop: the last count it wrote, or the fault that ended
    /// it.
    writes: Result<u64, traps::Fault>,
    /// What the other processor left.
    marks: StaleMarks,
    /// The new page's first dword at the end.
    new_page: u32,
}

/// Links the row's table into the alias page directory: under okernel a
/// locked page-table region, linked with `UpdatePageTable`; without a
/// monitor by a store.
fn link(entry: EntryMode, table: u64) -> Result<(), Failed> {
    let pde = Pool::entry_addr(crate::kernel::layout().spaces.alias_pd, ALIAS_SLOT);
    let value = table | PRESENT | WRITABLE | ACCESSED;
    if entry == EntryMode::NonRoot {
        let id = call(
            "the table",
            Call::RegisterRegion,
            [table, 4096, RegionKind::PageTable as u64, 0],
        )?;
        call("the table", Call::LockRegion, [id, 0, 0, 0])?;
        call("the link", Call::UpdatePageTable, [pde, value, 0, 0])?;
    } else {
        // SAFETY: an empty entry of the kernel's alias page directory,
        // identity-mapped kernel memory; linking a table of zeroes but one
        // entry maps only the row's page.
        unsafe { (pde as *mut u64).write_volatile(value) };
    }
    cpu::invlpg(VA);
    Ok(())
}

/// The BSP's loop: writes a count through [`VA`] until the other
/// processor is done (or [`WAIT`] passed); the last count.
extern "C" fn write_loop(first: u64) -> u64 {
    let page = CODE_PAGE.load(Ordering::SeqCst);
    let t = ticks();
    let mut n = first;
    while !Marks::stale_done(page) && ticks().wrapping_sub(t) < WAIT {
        n += 1;
        // SAFETY: VA maps the row's page (or, once the other processor
        // updated the entry and this processor walked again, the new
        // one): usable RAM below 1 MiB that nothing else uses.
        unsafe { (VA as *mut u32).write_volatile(n as u32) };
    }
    n
}

/// Runs the row with the code page at `page`; `kernel`: what
/// `super::setup::kernel` returned.
pub fn run(entry: EntryMode, kernel: Result<(), Failed>, page: u64) -> Stale {
    let target = page + u64::from(STALE_TARGET);
    let new = page + u64::from(STALE_NEW);
    let table = page + u64::from(PT_LOW);
    for p in [target, new, table] {
        // SAFETY: the row's pages, usable RAM below 1 MiB (checked by
        // `super::run`), identity-mapped, used by nothing else; the other
        // processors do not touch them before GO.
        unsafe { core::ptr::write_bytes(p as *mut u8, 0, 4096) };
    }
    // SAFETY: as above: entry 0 of the row's table maps the row's page
    // (A and D set: no walk writes the table).
    unsafe { (table as *mut u64).write_volatile(target | PRESENT | WRITABLE | ACCESSED | DIRTY) };
    let setup = kernel.and_then(|()| link(entry, table));
    let monitor = entry == EntryMode::NonRoot;
    start_up::post(page, PTE_AT, table as u32);
    start_up::post(
        page,
        NEW_PTE_AT,
        (new | PRESENT | WRITABLE | ACCESSED | DIRTY) as u32,
    );
    let writes = if setup.is_ok() {
        CODE_PAGE.store(page, Ordering::SeqCst);
        // SAFETY: as in `write_loop`; this write puts the translation in
        // the TLB.
        unsafe { (VA as *mut u32).write_volatile(1) };
        start_up::post(page, GO_AT, if monitor { 1 } else { NO_SWITCH });
        traps::probe(write_loop, 1)
    } else {
        // Nothing mapped: the other processor, once it sees the page
        // written, updates the entry of the unlinked table (a store) and
        // goes on.
        // SAFETY: the row's page, as above.
        unsafe { (target as *mut u32).write_volatile(2) };
        start_up::post(page, GO_AT, NO_SWITCH);
        Ok(0)
    };
    let t = ticks();
    while !Marks::stale_done(page) && ticks().wrapping_sub(t) < WAIT {
        core::hint::spin_loop();
    }
    Stale {
        setup,
        writes,
        marks: Marks::read(page).stale,
        // SAFETY: the new page, as above; reads only.
        new_page: unsafe { (new as *const u32).read_volatile() },
    }
}

/// `race-stale-mapping`; `no_shootdown`: the monitor is the
/// `planted-no-shootdown` build, where the race must succeed.
pub fn report(checks: &mut Checks, entry: EntryMode, no_shootdown: bool, stale: &Stale) {
    let (mode, expected) = match entry {
        EntryMode::NonRoot if no_shootdown => ("planted-no-shootdown", "succeeded"),
        _ => modes(entry),
    };
    let m = &stale.marks;
    let [after_update, before_lock] = m.reads;
    // Under okernel: the BSP wrote the page after the update returned
    // (through its old translation: the entry maps the new page), and
    // again while the lock was in flight, so that the lock had to end
    // that translation before returning (its shootdown). A BSP that left
    // the old translation before the lock (an exit of its own, which in
    // Bochs drops every cached translation) would make "blocked" prove
    // nothing: the row then fails as inconclusive.
    let stale_after_update = before_lock > after_update;
    let live_at_lock = m.at_return > before_lock;
    // Blocked: no write landed in the page after the lock returned.
    let blocked = m.after == m.at_return;
    let ok = stale.setup.is_ok()
        && m.done
        && stale.writes.is_ok()
        && match entry {
            EntryMode::NonRoot if no_shootdown => {
                m.statuses == [0; 3] && stale_after_update && !blocked
            }
            EntryMode::NonRoot => {
                m.statuses == [0; 3]
                    && stale_after_update
                    && live_at_lock
                    && blocked
                    && stale.new_page > m.at_return
            }
            EntryMode::Direct => m.at_return > 1 && !blocked,
        };
    // One line of at most 160 bytes (`Buf`).
    let mut setup = Buf::new();
    match &stale.setup {
        Ok(()) if entry == EntryMode::NonRoot => setup.set(format_args!(
            "calls {}/{}/{}; after update {after_update:#x}, before lock {before_lock:#x}",
            m.statuses[0], m.statuses[1], m.statuses[2]
        )),
        Ok(()) => setup.set(format_args!("no monitor: the update a store")),
        Err(e) => setup.set(format_args!("SETUP FAILED: {e}")),
    }
    let mut writes = Buf::new();
    match stale.writes {
        Ok(n) => writes.set(format_args!("#{n}")),
        Err(f) => writes.set(format_args!("{} at {:#x}", f.name(), f.rip)),
    }
    checks.attack(
        "race-stale-mapping",
        3,
        ok,
        format_args!(
            "{}, at return {:#x}, later {:#x}: {}; new page {:#x}; loop {}",
            setup.as_str(),
            m.at_return,
            m.after,
            if blocked {
                "no write after"
            } else {
                "WROTE after"
            },
            stale.new_page,
            writes.as_str(),
        ),
        mode,
        expected,
        blocked,
        format_args!(
            "{}",
            if entry == EntryMode::NonRoot {
                "none expected: after the shootdown the BSP walked to the new page"
            } else {
                "none (no monitor)"
            }
        ),
    );
}
