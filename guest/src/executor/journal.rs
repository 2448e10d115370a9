//! What a case changed that the next case must not see, and its undo: the
//! in-guest half of the reset between cases on Bochs (the monitor's check
//! then verifies the policy state is the baseline again). On KVM the
//! snapshot reset makes it redundant, and it runs anyway.

use super::step::ALIAS_SLOTS;
use super::targets::Targets;
use crate::arch::cpu;
use crate::arch::instr::hypercall;
use crate::kernel;
use guest::layout::alias_va;
use guest::tasks::{CONTAINER_A, secret_pattern};
use okernel_abi::hypercall::{Call, Status};

/// The changes of one case.
#[derive(Debug, Default)]
pub struct Journal {
    /// Alias-window slots (from the executor's first) the case mapped.
    pub alias_dirty: [bool; ALIAS_SLOTS],
    /// Protected pages the case allocated for its context.
    allocated: [Option<u64>; 4],
    /// Whether the case freed its context's own protected page.
    freed_own: bool,
}

impl Journal {
    /// Records a successful AllocProtectedPage / FreeProtectedPage of
    /// `page` by the case's own context.
    pub fn protected_page(&mut self, alloc: bool, page: u64, targets: &mut Targets) {
        let own = kernel::layout().frames[CONTAINER_A].secret;
        if page == own {
            // Freed, then perhaps allocated again: the reset owes the
            // context its page only while it is freed.
            self.freed_own = !alloc;
            targets.own_protected = alloc;
            return;
        }
        if alloc {
            if let Some(slot) = self.allocated.iter_mut().find(|p| p.is_none()) {
                *slot = Some(page);
            }
            if let Some(slot) = targets.extra_protected.iter_mut().find(|p| p.is_none()) {
                *slot = Some(page);
            }
        } else {
            for p in self
                .allocated
                .iter_mut()
                .chain(targets.extra_protected.iter_mut())
            {
                if *p == Some(page) {
                    *p = None;
                }
            }
        }
    }

    /// Undoes the case's changes from the trusted context: frees the pages
    /// it allocated, gives its context back its protected page (pattern
    /// and all), clears the alias slots it mapped. `own` is the case's
    /// context.
    pub fn undo(&mut self, own: u64, targets: &mut Targets) -> Result<(), &'static str> {
        for page in self.allocated.iter_mut().filter_map(Option::take) {
            if hypercall(Call::FreeProtectedPage, [own, page, 0, 0]).status != Ok(Status::Success) {
                return Err("reset: FreeProtectedPage of a page the case allocated failed");
            }
        }
        targets.extra_protected = [None; 2];
        targets.own_protected = true;
        if core::mem::take(&mut self.freed_own) {
            let secret = kernel::layout().frames[CONTAINER_A].secret;
            // SAFETY: the page is free again (no context protects it), so
            // the trusted kernel may write its pattern back.
            unsafe { (secret as *mut u64).write_volatile(secret_pattern(CONTAINER_A)) };
            if hypercall(Call::AllocProtectedPage, [own, secret, 0, 0]).status
                != Ok(Status::Success)
            {
                return Err("reset: AllocProtectedPage of the context's own page failed");
            }
        }
        let spaces = kernel::layout().spaces;
        for (i, dirty) in self.alias_dirty.iter_mut().enumerate() {
            if core::mem::take(dirty) {
                let slot = super::step::ALIAS_SLOT0 + i;
                // SAFETY: an alias-window entry of the executor's own slots;
                // the trusted view maps page tables writable, and clearing
                // the entry only unmaps the slot.
                unsafe { (spaces.alias_entry(slot) as *mut u64).write_volatile(0) };
                cpu::invlpg(alias_va(slot));
            }
        }
        Ok(())
    }
}
