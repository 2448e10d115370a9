//! [`ViewMemory`]: guest memory through the EPT views (the trusted view
//! and one per untrusted context, the current one selected), with the
//! memory map's RAM ranges and the monitor's ranges — the
//! [`GuestMemory`] of the run (`crate::vcpu::memory`), and the policy's
//! [`Views`] (`policy::views`). The rules a range must pass are in
//! [`super`].
//!
//! [`GuestMemory`]: crate::vcpu::memory::GuestMemory
//! [`Views`]: crate::policy::views::Views

use ept::{FrameAllocator, Perms, View};
use thiserror::Error;

use super::{MAX_MONITOR_RANGES, MAX_RAM_RANGES, MemoryError, RangeList, VIEW_SLOTS};
use crate::hw::phys::{IDENTITY_MAP_END, PhysMemory};
use crate::memmap::{Gpa, Hpa, MemoryKind, MemoryRange, PhysRange};

/// Guest memory through an EPT view, with the memory map's RAM ranges and
/// the monitor's ranges: the [`GuestMemory`] of the run.
///
/// [`GuestMemory`]: crate::vcpu::memory::GuestMemory
pub struct ViewMemory<A: FrameAllocator, R: PhysMemory> {
    /// Slot 0: the trusted (base) view; slot `n`: untrusted context `n`.
    views: [Option<View<A>>; VIEW_SLOTS],
    /// The slot of the view the guest runs in.
    current: usize,
    /// The end of the highest memory-map entry (page-aligned).
    mapped_end: u64,
    ram: RangeList<MAX_RAM_RANGES>,
    monitor: RangeList<{ MAX_MONITOR_RANGES + 1 }>,
    phys: R,
}

impl<A: FrameAllocator, R: PhysMemory + core::fmt::Debug> core::fmt::Debug for ViewMemory<A, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ViewMemory")
            .field("root", &self.view().root())
            .field("current", &self.current)
            .field("ram", &self.ram.as_slice())
            .field("monitor", &self.monitor.as_slice())
            .field("phys", &self.phys)
            .finish()
    }
}

/// The memory map or monitor list has more entries than [`ViewMemory`]
/// keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("more than {MAX_RAM_RANGES} RAM ranges or {MAX_MONITOR_RANGES} monitor ranges")]
pub struct TooManyRanges;

impl<A: FrameAllocator, R: PhysMemory> ViewMemory<A, R> {
    /// Guest memory through `view` (the view the guest runs in), with the
    /// RAM entries of `memory_map`, and `monitor` plus `pool` excluded.
    pub fn new(
        view: View<A>,
        memory_map: &[MemoryRange],
        monitor: &[PhysRange],
        pool: PhysRange,
        phys: R,
    ) -> Result<Self, TooManyRanges> {
        let mut ram = RangeList::new();
        for m in memory_map.iter().filter(|m| m.kind == MemoryKind::Ram) {
            if !ram.push(m.range) {
                return Err(TooManyRanges);
            }
        }
        let mut excluded = RangeList::new();
        if monitor.len() > MAX_MONITOR_RANGES {
            return Err(TooManyRanges);
        }
        for r in monitor.iter().chain(core::iter::once(&pool)) {
            excluded.push(r.page_aligned_outward());
        }
        let mapped_end = memory_map
            .iter()
            .map(|m| m.range.page_aligned_outward().end)
            .max()
            .unwrap_or(0);
        let mut views = [const { None }; VIEW_SLOTS];
        views[0] = Some(view);
        Ok(Self {
            views,
            current: 0,
            mapped_end,
            ram,
            monitor: excluded,
            phys,
        })
    }

    /// The view the guest runs in.
    pub fn view(&self) -> &View<A> {
        match &self.views[self.current] {
            Some(v) => v,
            // `set_current` only selects live slots and slot 0 is never
            // emptied.
            None => unreachable!("the current view is always live"),
        }
    }

    /// The current view, to change it. After a change that removes or
    /// reduces access the caller must invalidate cached translations
    /// (INVEPT) before the guest runs again.
    pub fn view_mut(&mut self) -> &mut View<A> {
        match &mut self.views[self.current] {
            Some(v) => v,
            None => unreachable!("the current view is always live"),
        }
    }

    /// The view of slot `slot`, if live.
    pub fn slot(&self, slot: usize) -> Option<&View<A>> {
        self.views.get(slot).and_then(Option::as_ref)
    }

    /// The view of slot `slot`, if live, to change it.
    pub fn slot_mut(&mut self, slot: usize) -> Option<&mut View<A>> {
        self.views.get_mut(slot).and_then(Option::as_mut)
    }

    /// Puts `view` in slot `slot` (1.. only: slot 0 is the base view);
    /// returns it back if the slot is taken or out of range.
    pub fn insert(&mut self, slot: usize, view: View<A>) -> Result<(), View<A>> {
        match self.views.get_mut(slot) {
            Some(s @ None) if slot != 0 => {
                *s = Some(view);
                Ok(())
            }
            _ => Err(view),
        }
    }

    /// Takes the view out of slot `slot` (never slot 0 or the current
    /// one).
    pub fn remove(&mut self, slot: usize) -> Option<View<A>> {
        if slot == 0 || slot == self.current {
            return None;
        }
        self.views.get_mut(slot).and_then(Option::take)
    }

    /// The slot of the current view.
    pub fn current_slot(&self) -> usize {
        self.current
    }

    /// Makes slot `slot` current; `false` (and nothing changed) if it is
    /// not live.
    pub fn set_current_slot(&mut self, slot: usize) -> bool {
        if self.slot(slot).is_some() {
            self.current = slot;
            true
        } else {
            false
        }
    }

    /// The end of the highest memory-map entry, page-aligned.
    pub fn mapped_end(&self) -> u64 {
        self.mapped_end
    }

    /// The RAM ranges of the memory map.
    pub fn ram(&self) -> &[PhysRange] {
        self.ram.as_slice()
    }

    /// The monitor's ranges, page-aligned outward, the frame pool last.
    pub fn monitor(&self) -> &[PhysRange] {
        self.monitor.as_slice()
    }

    /// The physical memory reads go to. Writes to guest RAM go through
    /// `Views::write_phys` (which calls [`Self::write_hpa`]) or
    /// [`Self::write`] (`GuestMemory::write`), the two paths a fuzz build's tracking
    /// decorator logs (`crate::fuzz::tracked`); writing through this
    /// handle bypasses the log.
    pub fn phys(&self) -> &R {
        &self.phys
    }

    /// Writes `bytes` to physical `[hpa, hpa + len)`, which the caller
    /// checked is guest RAM outside monitor memory.
    pub fn write_hpa(&mut self, hpa: Hpa, bytes: &[u8]) {
        self.phys.write(hpa, bytes);
    }

    /// Checks rules 1 and 2 (guest RAM, not monitor memory) for
    /// `[gpa, gpa + len)`, monitor memory first: a range that touches it
    /// is `Monitor` even where the memory map does not call it RAM.
    pub fn check_ram(&self, gpa: Gpa, len: u64) -> Result<(), MemoryError> {
        let end = gpa.checked_add(len).ok_or(MemoryError::Wraps(gpa.0, len))?;
        let range = PhysRange {
            start: gpa.0,
            end: end.0,
        };
        if let Some(m) = self.monitor.as_slice().iter().find(|m| m.overlaps(&range)) {
            return Err(MemoryError::Monitor(gpa.0.max(m.start)));
        }
        self.covered_by_ram(gpa, end)?;
        if end.0 > IDENTITY_MAP_END {
            return Err(MemoryError::Unreachable(IDENTITY_MAP_END.max(gpa.0)));
        }
        Ok(())
    }

    /// Whether `[gpa, end)` is covered by RAM ranges (adjacent ones may
    /// share the range); the error names the first byte that is not RAM.
    fn covered_by_ram(&self, gpa: Gpa, end: Gpa) -> Result<(), MemoryError> {
        let mut at = gpa;
        while at < end {
            let r = self
                .ram
                .as_slice()
                .iter()
                .find(|r| r.contains(at.0))
                .ok_or(MemoryError::NotRam(at.0))?;
            at = Gpa(r.end);
        }
        Ok(())
    }

    /// Checks `[gpa, gpa + len)` against the rules of this module.
    pub fn check(&self, gpa: Gpa, len: u64) -> Result<(), MemoryError> {
        let end = gpa.checked_add(len).ok_or(MemoryError::Wraps(gpa.0, len))?;
        // 1. RAM: covered by RAM ranges (adjacent ones may share the range).
        self.covered_by_ram(gpa, end)?;
        // 2. Not monitor memory.
        let range = PhysRange {
            start: gpa.0,
            end: end.0,
        };
        if let Some(m) = self.monitor.as_slice().iter().find(|m| m.overlaps(&range)) {
            return Err(MemoryError::Monitor(gpa.0.max(m.start)));
        }
        // 3 and 4, page by page.
        self.for_each_page(gpa, end, Perms::READ, |_, _, _| {})
    }

    /// Walks the view for every page of `[gpa, end)`, checking that it is
    /// mapped readable and reachable, and calls `f(offset, hpa, len)` for
    /// each piece (`offset` from `gpa`) as it goes.
    fn for_each_page(
        &self,
        gpa: Gpa,
        end: Gpa,
        need: Perms,
        mut f: impl FnMut(usize, Hpa, usize),
    ) -> Result<(), MemoryError> {
        let mut at = gpa;
        while at < end {
            let piece_end = at.page_end().min(end);
            let t = match self.view().translate(at) {
                Ok(Some(t)) if t.page.attrs.perms.contains(need) => t,
                _ if need.contains(Perms::WRITE) => return Err(MemoryError::NotWritable(at.0)),
                _ => return Err(MemoryError::NotReadable(at.0)),
            };
            let hpa_end = t.hpa.checked_add(piece_end - at);
            if hpa_end.is_none_or(|e| e.0 > IDENTITY_MAP_END) {
                return Err(MemoryError::Unreachable(at.0));
            }
            // The host-physical side too: every view maps guest RAM to the
            // same address (rule 2 was checked on the guest-physical one),
            // but `hw::phys` trusts what it is given, so a view that ever
            // led into monitor memory stops here.
            let hpa_range = PhysRange {
                start: t.hpa.0,
                end: t.hpa.0 + (piece_end - at),
            };
            if self
                .monitor
                .as_slice()
                .iter()
                .any(|m| m.overlaps(&hpa_range))
            {
                return Err(MemoryError::Monitor(t.hpa.0));
            }
            f((at - gpa) as usize, t.hpa, (piece_end - at) as usize);
            at = piece_end;
        }
        Ok(())
    }

    /// Copies `[gpa, gpa + buf.len())` into `buf` if every byte is
    /// readable under the rules of [`super`]; otherwise copies nothing and
    /// says why.
    pub fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        // Everything is checked before the first byte is copied.
        self.check(gpa, len)?;
        self.for_each_page(gpa, gpa + len, Perms::READ, |offset, hpa, piece| {
            self.phys.copy(hpa, &mut buf[offset..offset + piece]);
        })
    }

    /// Whether [`Self::write`] of `len` bytes at `gpa` would succeed.
    pub fn check_writable(&self, gpa: Gpa, len: u64) -> Result<(), MemoryError> {
        self.check(gpa, len)?;
        self.for_each_page(gpa, gpa + len, Perms::RW, |_, _, _| {})
    }

    /// Copies `bytes` to `[gpa, gpa + bytes.len())` if every byte is guest
    /// RAM outside monitor memory that the current view maps *writable*
    /// (and reachable); otherwise writes nothing and says why.
    pub fn write(&mut self, gpa: Gpa, bytes: &[u8]) -> Result<(), MemoryError> {
        let len = bytes.len() as u64;
        // Every page writable before the first byte is written.
        self.check_writable(gpa, len)?;
        self.for_each_page(gpa, gpa + len, Perms::RW, |offset, hpa, piece| {
            self.phys.write(hpa, &bytes[offset..offset + piece]);
        })
    }
}
