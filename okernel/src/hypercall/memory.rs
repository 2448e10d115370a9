//! Guest memory as a hypercall may read it: the only way the monitor
//! dereferences a guest-supplied address.
//!
//! A range is readable only if every byte of it
//!
//! 1. lies in guest RAM (a [`MemoryKind::Ram`] entry of the memory map —
//!    never reserved or MMIO memory, where a read could have side effects),
//! 2. lies outside monitor memory (the loader's monitor ranges and the
//!    frame pool, widened to pages: invariant 1 even if a memory-map entry
//!    overlaps them),
//! 3. is mapped readable by the current EPT view (walked with the `ept`
//!    crate, page by page), and
//! 4. translates to host-physical memory the monitor can reach (its
//!    identity map: the first 4 GiB, see [`IDENTITY_MAP_END`]).
//!
//! Only then is it copied, from the host-physical addresses the view
//! translates it to (the base view is an identity map).

use ept::{FrameAllocator, Gpa, PAGE_SIZE, Perms, View};
use thiserror::Error;

use crate::launch::config::{MemoryKind, MemoryRange, PhysRange};

/// The end of the monitor's identity map: the loader's page tables map
/// the first 4 GiB virtual = physical, and the monitor runs on them.
pub const IDENTITY_MAP_END: u64 = 1 << 32;

/// Why a guest range cannot be read. The guest sees every one of them as
/// `InvalidArgument`; the monitor logs the reason at debug level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MemoryError {
    /// the range wraps around the address space
    #[error("range {0:#x}+{1:#x} wraps around")]
    Wraps(u64, u64),
    /// part of the range is not guest RAM
    #[error("{0:#x} is not guest RAM")]
    NotRam(u64),
    /// part of the range is monitor memory
    #[error("{0:#x} is monitor memory")]
    Monitor(u64),
    /// the current EPT view does not map part of the range readable
    #[error("{0:#x} is not mapped readable by the EPT view")]
    NotReadable(u64),
    /// the current EPT view does not map part of the range writable
    #[error("{0:#x} is not mapped writable by the EPT view")]
    NotWritable(u64),
    /// part of the range translates beyond the monitor's identity map
    #[error("{0:#x} is beyond the monitor's identity map")]
    Unreachable(u64),
}

/// Guest-physical memory, as a hypercall may read it.
pub trait GuestMemory {
    /// Copies `[gpa, gpa + buf.len())` into `buf` if every byte is
    /// readable under the rules of this module; otherwise copies nothing
    /// and says why.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Copies `bytes` to `[gpa, gpa + bytes.len())` if every byte is
    /// guest RAM outside monitor memory that the current view maps
    /// *writable* (and reachable); otherwise writes nothing and says why.
    fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        let _ = bytes;
        Err(MemoryError::NotRam(gpa))
    }

    /// Whether [`GuestMemory::write`] of `len` bytes at `gpa` would
    /// succeed.
    fn check_writable(&self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        let _ = len;
        Err(MemoryError::NotRam(gpa))
    }

    /// The EPT views and the memory map, for the protection policy; `None`
    /// for a memory without views (no policy calls are possible).
    fn views(&mut self) -> Option<&mut dyn crate::policy::views::Views> {
        None
    }

    /// [`GuestMemory::views`], to look only.
    fn views_ref(&self) -> Option<&dyn crate::policy::views::Views> {
        None
    }
}

/// No guest memory at all: every non-empty read is refused. For virtual
/// CPUs that never read guest memory (most host tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoGuestMemory;

impl GuestMemory for NoGuestMemory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if buf.is_empty() {
            Ok(())
        } else {
            Err(MemoryError::NotRam(gpa))
        }
    }
}

/// Host-physical memory the monitor can read.
pub trait PhysMemory {
    /// Copies `[hpa, hpa + buf.len())` into `buf`. Callers pass only
    /// ranges below [`IDENTITY_MAP_END`] that are guest RAM.
    fn copy(&self, hpa: u64, buf: &mut [u8]);

    /// Copies `bytes` to `[hpa, hpa + bytes.len())`. Callers pass only
    /// ranges below [`IDENTITY_MAP_END`] that are guest RAM outside
    /// monitor memory.
    fn write(&self, hpa: u64, bytes: &[u8]);
}

/// The monitor's identity map of the first 4 GiB.
#[derive(Debug)]
pub struct IdentityMap {
    _private: (),
}

impl IdentityMap {
    /// A handle to the identity map.
    ///
    /// # Safety
    /// The current page tables must map `[0, IDENTITY_MAP_END)` readable
    /// with virtual = physical for as long as the handle is used (the
    /// loader's tables, documented in `LaunchConfig`).
    pub unsafe fn new() -> Self {
        Self { _private: () }
    }
}

impl PhysMemory for IdentityMap {
    fn copy(&self, hpa: u64, buf: &mut [u8]) {
        debug_assert!(hpa.saturating_add(buf.len() as u64) <= IDENTITY_MAP_END);
        let src = core::ptr::with_exposed_provenance::<u8>(hpa as usize);
        // SAFETY: `IdentityMap::new`'s contract maps the range readable at
        // this address (callers stay below IDENTITY_MAP_END); it is guest
        // RAM, not monitor memory, so no Rust reference aliases it, and the
        // guest is stopped while the monitor runs (one CPU), so nothing
        // writes it during the copy.
        unsafe { core::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
    }

    fn write(&self, hpa: u64, bytes: &[u8]) {
        debug_assert!(hpa.saturating_add(bytes.len() as u64) <= IDENTITY_MAP_END);
        let dst = core::ptr::with_exposed_provenance_mut::<u8>(hpa as usize);
        // SAFETY: as in `copy`: the identity map makes the range writable
        // at this address (the loader maps the first 4 GiB writable); it
        // is guest RAM, never monitor memory, so no Rust reference of the
        // monitor aliases it, and the guest is stopped during the copy.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
    }
}

/// A fixed-capacity list of physical ranges.
#[derive(Debug, Clone, Copy)]
pub struct RangeList<const N: usize> {
    ranges: [PhysRange; N],
    len: usize,
}

impl<const N: usize> RangeList<N> {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            ranges: [PhysRange { start: 0, end: 0 }; N],
            len: 0,
        }
    }

    /// Adds a range; `false` (and nothing added) when the list is full.
    pub fn push(&mut self, r: PhysRange) -> bool {
        match self.ranges.get_mut(self.len) {
            Some(slot) => {
                *slot = r;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The ranges.
    pub fn as_slice(&self) -> &[PhysRange] {
        &self.ranges[..self.len]
    }
}

impl<const N: usize> Default for RangeList<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The views a [`ViewMemory`] holds: the trusted one and one per
/// untrusted context.
pub const VIEW_SLOTS: usize = okernel_abi::policy::MAX_CONTEXTS + 1;

/// How many RAM ranges of the memory map [`ViewMemory`] keeps.
pub const MAX_RAM_RANGES: usize = 64;
/// How many monitor ranges (besides the frame pool) it keeps.
pub const MAX_MONITOR_RANGES: usize = 8;

/// Guest memory through an EPT view, with the memory map's RAM ranges and
/// the monitor's ranges: the [`GuestMemory`] of the run.
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

    /// The physical memory reads go to.
    pub fn phys(&self) -> &R {
        &self.phys
    }

    /// Checks rules 1 and 2 (guest RAM, not monitor memory) for
    /// `[gpa, gpa + len)`, monitor memory first: a range that touches it
    /// is `Monitor` even where the memory map does not call it RAM.
    pub fn check_ram(&self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        let end = gpa.checked_add(len).ok_or(MemoryError::Wraps(gpa, len))?;
        let range = PhysRange { start: gpa, end };
        if let Some(m) = self.monitor.as_slice().iter().find(|m| m.overlaps(&range)) {
            return Err(MemoryError::Monitor(gpa.max(m.start)));
        }
        let mut at = gpa;
        while at < end {
            let r = self
                .ram
                .as_slice()
                .iter()
                .find(|r| r.contains(at))
                .ok_or(MemoryError::NotRam(at))?;
            at = r.end;
        }
        if end > IDENTITY_MAP_END {
            return Err(MemoryError::Unreachable(IDENTITY_MAP_END.max(gpa)));
        }
        Ok(())
    }

    /// Checks `[gpa, gpa + len)` against the rules of this module.
    pub fn check(&self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        let end = gpa.checked_add(len).ok_or(MemoryError::Wraps(gpa, len))?;
        // 1. RAM: covered by RAM ranges (adjacent ones may share the range).
        let mut at = gpa;
        while at < end {
            let r = self
                .ram
                .as_slice()
                .iter()
                .find(|r| r.contains(at))
                .ok_or(MemoryError::NotRam(at))?;
            at = r.end;
        }
        // 2. Not monitor memory.
        let range = PhysRange { start: gpa, end };
        if let Some(m) = self.monitor.as_slice().iter().find(|m| m.overlaps(&range)) {
            return Err(MemoryError::Monitor(gpa.max(m.start)));
        }
        // 3 and 4, page by page.
        self.for_each_page(gpa, end, Perms::READ, |_, _, _| {})
    }

    /// Walks the view for every page of `[gpa, end)`, checking that it is
    /// mapped readable and reachable, and calls `f(offset, hpa, len)` for
    /// each piece (`offset` from `gpa`) as it goes.
    fn for_each_page(
        &self,
        gpa: u64,
        end: u64,
        need: Perms,
        mut f: impl FnMut(usize, u64, usize),
    ) -> Result<(), MemoryError> {
        let mut at = gpa;
        while at < end {
            let piece_end = ((at / PAGE_SIZE) + 1).saturating_mul(PAGE_SIZE).min(end);
            let t = match self.view().translate(Gpa(at)) {
                Ok(Some(t)) if t.page.attrs.perms.contains(need) => t,
                _ if need.contains(Perms::WRITE) => return Err(MemoryError::NotWritable(at)),
                _ => return Err(MemoryError::NotReadable(at)),
            };
            let hpa_end = t.hpa.0.checked_add(piece_end - at);
            if hpa_end.is_none_or(|e| e > IDENTITY_MAP_END) {
                return Err(MemoryError::Unreachable(at));
            }
            f((at - gpa) as usize, t.hpa.0, (piece_end - at) as usize);
            at = piece_end;
        }
        Ok(())
    }
}

impl<A: crate::policy::views::SharedFrames, R: PhysMemory> GuestMemory for ViewMemory<A, R> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        // Everything is checked before the first byte is copied.
        self.check(gpa, len)?;
        self.for_each_page(gpa, gpa + len, Perms::READ, |offset, hpa, piece| {
            self.phys.copy(hpa, &mut buf[offset..offset + piece]);
        })
    }

    fn check_writable(&self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        self.check(gpa, len)?;
        self.for_each_page(gpa, gpa + len, Perms::RW, |_, _, _| {})
    }

    fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        let len = bytes.len() as u64;
        // Every page writable before the first byte is written.
        self.check_writable(gpa, len)?;
        self.for_each_page(gpa, gpa + len, Perms::RW, |offset, hpa, piece| {
            self.phys.write(hpa, &bytes[offset..offset + piece]);
        })
    }

    fn views(&mut self) -> Option<&mut dyn crate::policy::views::Views> {
        Some(self)
    }

    fn views_ref(&self) -> Option<&dyn crate::policy::views::Views> {
        Some(self)
    }
}
