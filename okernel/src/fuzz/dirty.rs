//! What lets `CALL_CHECK` be incremental: a **views generation** and a
//! **monitor write log**, both kept by the fuzz build's decorator of the
//! guest memory ([`super::tracked::Tracked`], around the `ViewMemory` that
//! owns the EPT views and makes the monitor's writes to guest RAM), so
//! the production memory has neither.
//!
//! - The generation counts every chance to change an EPT view or the set
//!   of views: it is bumped by every `Views::protect` (every policy
//!   apply), every `Views::create` that made a view and every
//!   `Views::destroy` of a slot that may hold one. The wrapped memory is a
//!   private field of `Tracked` reached mutably only through those
//!   methods, so a new mutating path cannot skip the bump. Switching the
//!   current view does not bump it: the view scan covers every live view
//!   whichever runs, and the check compares the running context every
//!   time.
//! - The write log records the 4 KiB pages of every monitor write to
//!   guest RAM (`Views::write_phys` and `GuestMemory::write`, the only two
//!   ways `ViewMemory` writes its physical memory): UpdatePageTable,
//!   AuditRead, the zeroing of freed protected pages, emulated descriptor
//!   stores, the check's own report. [`WRITE_LOG_PAGES`] distinct pages
//!   at most; beyond that it is *overflowed*, which the check reads as
//!   "any page may have changed".
//!
//! The assumption the incremental check rests on (docs/hypercall-abi.md):
//! guest RAM changes only by guest writes through the EPT views or by the
//! monitor's writes through these two paths.

use crate::memmap::{Hpa, PhysRange};

/// The most distinct pages the write log keeps between two checks.
pub const WRITE_LOG_PAGES: usize = 32;

/// The views generation and the monitor write log (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirty {
    generation: u64,
    pages: [u64; WRITE_LOG_PAGES],
    len: usize,
    overflowed: bool,
}

impl Default for Dirty {
    fn default() -> Self {
        Self::new()
    }
}

impl Dirty {
    /// Generation 0, nothing written.
    pub const fn new() -> Self {
        Self {
            generation: 0,
            pages: [0; WRITE_LOG_PAGES],
            len: 0,
            overflowed: false,
        }
    }

    /// The views generation.
    pub const fn generation(&self) -> u64 {
        self.generation
    }

    /// A view or the set of views may change.
    pub fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// The monitor writes `[addr, addr + len)` of guest RAM (host-physical).
    pub fn record(&mut self, addr: Hpa, len: u64) {
        if len == 0 {
            return;
        }
        let last = addr.0.saturating_add(len - 1) >> 12;
        for page in addr.0 >> 12..=last {
            if self.overflowed {
                return;
            }
            if self.pages[..self.len].contains(&page) {
                continue;
            }
            match self.pages.get_mut(self.len) {
                Some(slot) => {
                    *slot = page;
                    self.len += 1;
                }
                None => self.overflowed = true,
            }
        }
    }

    /// Whether the log lost pages: any page may have been written.
    pub const fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Whether a logged page overlaps `range` (always, once overflowed).
    pub fn written(&self, range: PhysRange) -> bool {
        self.overflowed
            || self.pages[..self.len].iter().any(|&p| {
                let start = p << 12;
                start < range.end && range.start < start + 4096
            })
    }

    /// Empties the log (the generation stays).
    pub fn clear_log(&mut self) {
        self.len = 0;
        self.overflowed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_logged_once_and_overflow_means_everything() {
        let mut d = Dirty::new();
        d.record(Hpa(0x1ff8), 16);
        d.record(Hpa(0x1000), 1);
        assert!(d.written(PhysRange::new(0x1000, 1)));
        assert!(d.written(PhysRange::new(0x2fff, 1)));
        assert!(!d.written(PhysRange::new(0x3000, 0x1000)));
        assert!(!d.written(PhysRange::new(0, 0x1000)));
        d.record(Hpa(0x10_0000), (WRITE_LOG_PAGES as u64 - 2) * 4096);
        assert!(!d.overflowed(), "exactly full");
        d.record(Hpa(0x9000), 1);
        assert!(d.overflowed() && d.written(PhysRange::new(0x5000, 1)));
        d.clear_log();
        assert!(!d.overflowed() && !d.written(PhysRange::new(0x1000, 1)));
        d.bump();
        assert_eq!(d.generation(), 1);
    }
}
