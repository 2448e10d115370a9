//! The base EPT view (invariant 1): guest RAM identity-mapped write-back,
//! firmware-reserved and MMIO ranges identity-mapped uncacheable, and the
//! monitor's memory — the ranges the loader lists plus the whole frame pool
//! (VMXON region, VMCS, MSR bitmap, host stack, the EPT tables themselves)
//! — not mapped at all. Gaps in the memory map stay unmapped.

use core::ptr::NonNull;

use ept::{Attributes, EptCaps, FrameAllocator, Gpa, MemoryType, Perms, PhysFrame, View};

use super::frames::FramePool;
use crate::memmap::{MemoryKind, MemoryRange, PhysRange};

/// A handle to the monitor's frame pool, as the `ept` crate's frame
/// source: every view (the trusted one and each context's) holds one, and
/// all draw from the same pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolFrames(NonNull<FramePool>);

impl PoolFrames {
    /// A handle to the pool at `pool`.
    ///
    /// # Safety
    /// `pool` must point to a `FramePool` that stays valid, at that
    /// address, for as long as any handle is used, and that nothing but
    /// these handles uses. Handles must not be used concurrently (the
    /// monitor runs one CPU with interrupts off; exits do not nest).
    pub unsafe fn new(pool: NonNull<FramePool>) -> Self {
        Self(pool)
    }

    /// The pool.
    pub fn pool(&self) -> &FramePool {
        // SAFETY: `new`'s contract: valid, and not used concurrently, so
        // no `&mut` from another handle is live.
        unsafe { self.0.as_ref() }
    }

    fn pool_mut(&mut self) -> &mut FramePool {
        // SAFETY: as in `pool`; the borrow ends before any other handle
        // can be used (no handle method calls another).
        unsafe { self.0.as_mut() }
    }
}

// SAFETY: `FramePool` hands out each frame once until it is freed, zeroes
// it (promise 1); frames are identity-mapped pool memory, so the address is
// a valid, page-aligned pointer for the pool's lifetime, independent of
// where a handle is moved (promise 2); pool frames given to the views are
// used by nothing else in the monitor (promise 3, `FramePool::new`); a
// frame freed by one view's handle may be handed to another view only as
// a table, never to the guest (the pool feeds monitor structures only).
unsafe impl FrameAllocator for PoolFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        self.pool_mut().allocate().and_then(PhysFrame::new)
    }

    fn free_frame(&mut self, frame: PhysFrame) {
        self.pool_mut().free(frame.addr());
    }

    fn table_ptr(&self, frame: PhysFrame) -> NonNull<[u64; 512]> {
        FramePool::table_ptr(frame.addr())
    }
}

impl crate::policy::views::SharedFrames for PoolFrames {
    fn available(&self) -> u64 {
        self.pool().available()
    }
}

/// How the base view maps a kind of memory.
pub const fn attributes(kind: MemoryKind) -> Attributes {
    match kind {
        MemoryKind::Ram => Attributes::RAM,
        MemoryKind::Reserved => Attributes::new(Perms::RWX, MemoryType::Uncacheable),
        MemoryKind::Mmio => Attributes::new(Perms::RW, MemoryType::Uncacheable),
    }
}

/// Builds the base view over `frames`: maps `memory_map` (widened to page
/// boundaries; later entries win where they overlap), then unmaps every
/// range in `monitor` and `pool` (widened to page boundaries), last, so no
/// memory-map entry can re-expose monitor memory.
pub fn build_base_view<A: FrameAllocator>(
    frames: A,
    caps: EptCaps,
    memory_map: &[MemoryRange],
    monitor: &[PhysRange],
    pool: PhysRange,
) -> Result<View<A>, ept::Error> {
    let mut view = View::new(frames, caps)?;
    for m in memory_map {
        let r = m.range.page_aligned_outward();
        if !r.is_empty() {
            view.identity_map(Gpa(r.start), r.len(), attributes(m.kind))?;
        }
    }
    for r in monitor.iter().chain(core::iter::once(&pool)) {
        let r = r.page_aligned_outward();
        if !r.is_empty() {
            view.unmap(Gpa(r.start), r.len())?;
        }
    }
    Ok(view)
}
