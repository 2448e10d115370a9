//! Issue 13's flag gap: `container-a` changes not the frame but the flags
//! of an entry the trusted kernel walks too — execute-disable on its
//! mapping of kernel text. `UpdatePageTable` once compared only the frame
//! and page size of an entry that maps protected memory, so the trusted
//! kernel's own text could be made unusable from an untrusted context.

use super::cpu::{clear_alias, set_entry_from_a};
use super::{Obs, Shown, Suite};
use crate::arch::traps::probe;
use crate::arch::{cpu, ops};
use crate::kernel::{self, syscall};
use guest::layout::alias_va;
use guest::paging::{ACCESSED, DIRTY, PRESENT};

/// The alias slot the trusted kernel maps the text page at.
const SLOT: usize = 5;
/// Execute-disable (bit 63; EFER.NXE is on).
const XD: u64 = 1 << 63;

/// Runs the attack.
pub fn run(s: &mut Suite<'_>) {
    s.attack("untrusted-xd-on-kernel-text", |_| xd_on_kernel_text());
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
