//! Where paging-structure frames come from: the [`FrameAllocator`] trait,
//! atomic access to a table, and reservations that make every change
//! all-or-nothing.

use crate::addr::{ENTRIES, PAGE_SIZE, PhysFrame};
use crate::caps::EptCaps;
use crate::entry::Slot;
use crate::error::Error;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

/// A source of zeroed 4 KiB frames for EPT paging structures.
///
/// okernel implements it over its physical frame pool (VMX root mode runs
/// identity mapped, so a frame's pointer is its address); host tests
/// implement it over ordinary heap memory.
///
/// # Safety
///
/// A view reads and writes its tables through the pointers this trait
/// returns, so an implementation must promise, for as long as it lives:
///
/// 1. `allocate_frame` returns a frame that is in use nowhere else (it was
///    never returned before, or was given back with `free_frame` since), and
///    whose 4096 bytes are all zero.
/// 2. For every frame this allocator has ever returned from
///    `allocate_frame`, `table_ptr` returns a pointer to that frame's 4096
///    bytes, 8-byte aligned, valid for reads and writes for as long as the
///    allocator lives (moving the allocator value does not change it); the
///    memory of two distinct frames does not overlap.
/// 3. While a frame is allocated, nothing but the view (and the processor's
///    page walker) accesses its memory; in particular nothing holds a Rust
///    reference to it.
pub unsafe trait FrameAllocator {
    /// A zeroed, 4 KiB-aligned frame, or `None` when out of frames.
    fn allocate_frame(&mut self) -> Option<PhysFrame>;

    /// Takes back a frame the view no longer uses. The frame may still be
    /// cached in the processor's paging-structure caches until the caller
    /// executes INVEPT (SDM 29.4.3): do not hand it to anything a guest can
    /// write before then.
    fn free_frame(&mut self, frame: PhysFrame);

    /// The frame's memory in the current address space.
    fn table_ptr(&self, frame: PhysFrame) -> NonNull<[u64; ENTRIES]>;
}

// SAFETY: every promise is forwarded unchanged to the `A` the reference points
// to, which outlives the reference.
unsafe impl<A: FrameAllocator + ?Sized> FrameAllocator for &mut A {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        (**self).allocate_frame()
    }

    fn free_frame(&mut self, frame: PhysFrame) {
        (**self).free_frame(frame)
    }

    fn table_ptr(&self, frame: PhysFrame) -> NonNull<[u64; ENTRIES]> {
        (**self).table_ptr(frame)
    }
}

/// Entries are loaded with acquire and stored with release ordering: a new
/// table is filled before the entry that references it becomes visible.
/// (On x86 both compile to plain `mov`s.)
#[derive(Clone, Copy)]
pub(crate) struct TablePtr(NonNull<AtomicU64>);

impl TablePtr {
    /// The table in `frame`, which `frames` must have allocated (every frame
    /// of a view's tree was allocated by that view's allocator).
    #[inline]
    pub(crate) fn of<A: FrameAllocator + ?Sized>(frames: &A, frame: PhysFrame) -> Self {
        TablePtr(frames.table_ptr(frame).cast())
    }

    #[inline]
    fn slot(&self, i: usize) -> &AtomicU64 {
        // SAFETY: `FrameAllocator` promise 2 makes the frame's 512 u64s valid
        // and 8-byte aligned for the allocator's lifetime, which spans every
        // use of a `TablePtr` (they live inside one method of the owning
        // view); `i % ENTRIES` stays inside the frame; `AtomicU64` has the
        // layout of `u64` (checked in entry.rs); promise 3 means no
        // non-atomic access races with this one.
        unsafe { self.0.add(i % ENTRIES).as_ref() }
    }

    /// Entry `i`.
    #[inline]
    pub(crate) fn load(self, i: usize) -> u64 {
        self.slot(i).load(Ordering::Acquire)
    }

    /// Sets entry `i` with one 64-bit store.
    #[inline]
    pub(crate) fn store(self, i: usize, value: u64) {
        self.slot(i).store(value, Ordering::Release)
    }
}

/// How many paging structures of each kind a view uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TableUsage {
    /// PML4 tables (always 1).
    pub pml4: usize,
    /// Page-directory-pointer tables.
    pub pdpt: usize,
    /// Page directories.
    pub pd: usize,
    /// Page tables.
    pub pt: usize,
}

impl TableUsage {
    /// All paging structures.
    pub const fn total(&self) -> usize {
        self.pml4
            .saturating_add(self.pdpt)
            .saturating_add(self.pd)
            .saturating_add(self.pt)
    }

    /// Bytes of table memory (4 KiB per structure).
    pub const fn bytes(&self) -> u64 {
        (self.total() as u64).saturating_mul(PAGE_SIZE)
    }

    /// The counter for tables whose entries are at `level` (4 = PML4).
    pub(crate) fn at(&mut self, level: u8) -> &mut usize {
        match level {
            4 => &mut self.pml4,
            3 => &mut self.pdpt,
            2 => &mut self.pd,
            _ => &mut self.pt,
        }
    }
}

/// One frame from `frames`, checked to lie below MAXPHYADDR (a table above
/// it would make the referencing entry set reserved bits).
pub(crate) fn allocate_checked<A: FrameAllocator + ?Sized>(
    frames: &mut A,
    caps: &EptCaps,
) -> Result<PhysFrame, Error> {
    let frame = frames.allocate_frame().ok_or(Error::OutOfFrames)?;
    if frame.addr() >= caps.hpa_limit() {
        frames.free_frame(frame);
        return Err(Error::FrameOutOfRange { addr: frame.addr() });
    }
    Ok(frame)
}

/// Frees the table in `frame` (entries at `level`) and every table below it.
pub(crate) fn free_tree<A: FrameAllocator + ?Sized>(
    frames: &mut A,
    frame: PhysFrame,
    level: u8,
    usage: &mut TableUsage,
) {
    if level > 1 {
        let table = TablePtr::of(frames, frame);
        for i in 0..ENTRIES {
            if let Slot::Table(child) = Slot::of(table.load(i), level) {
                free_tree(frames, child, level - 1, usage);
            }
        }
    }
    frames.free_frame(frame);
    *usage.at(level) -= 1;
}

/// Frames taken from the allocator before a change starts, chained through
/// their first word (`next | 1`, 0 ends the chain) so a reservation of any
/// size needs no memory of its own.
pub(crate) struct Reservation {
    head: Option<PhysFrame>,
    len: usize,
}

impl Reservation {
    /// Takes `count` frames from `frames`, or none at all.
    pub(crate) fn reserve<A: FrameAllocator + ?Sized>(
        frames: &mut A,
        caps: &EptCaps,
        count: usize,
    ) -> Result<Self, Error> {
        let mut r = Reservation { head: None, len: 0 };
        while r.len < count {
            match allocate_checked(frames, caps) {
                Ok(frame) => {
                    let link = r.head.map_or(0, |next| next.addr() | 1);
                    TablePtr::of(frames, frame).store(0, link);
                    r.head = Some(frame);
                    r.len += 1;
                }
                Err(e) => {
                    r.release(frames);
                    return Err(e);
                }
            }
        }
        Ok(r)
    }

    /// A zeroed reserved frame.
    pub(crate) fn take<A: FrameAllocator + ?Sized>(&mut self, frames: &A) -> Option<PhysFrame> {
        let frame = self.head?;
        let table = TablePtr::of(frames, frame);
        let link = table.load(0);
        table.store(0, 0);
        self.head = (link & 1 != 0).then(|| PhysFrame::containing(link));
        self.len -= 1;
        Some(frame)
    }

    /// Frames not taken.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Gives every frame not taken back to `frames`.
    pub(crate) fn release<A: FrameAllocator + ?Sized>(mut self, frames: &mut A) {
        while let Some(frame) = self.take(frames) {
            frames.free_frame(frame);
        }
    }
}
