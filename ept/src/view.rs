//! A view: one 4-level EPT tree and the allocator its tables come from.

use crate::addr::{GPA_LIMIT, Gpa, Hpa, PhysFrame, page_aligned};
use crate::caps::{EptCaps, EptFeatures};
use crate::entry::{Attributes, Entry, MemoryType, Perms, Slot};
use crate::eptp::Eptp;
use crate::error::Error;
use crate::frames::{FrameAllocator, TablePtr, TableUsage, allocate_checked, free_tree};
use crate::op::Op;
use crate::update::change;

/// One EPT: a PML4 table and everything below it, kept in canonical form
/// (see the crate documentation), and the allocator that owns its frames.
///
/// Every change is all-or-nothing: a method that returns an error has left
/// the tree exactly as it was. After a change that removes or reduces
/// access, or changes a translation, the caller must invalidate cached
/// translations (INVEPT, SDM 29.4.3) before relying on it, on every CPU
/// that uses the view.
pub struct View<A: FrameAllocator> {
    frames: A,
    root: PhysFrame,
    caps: EptCaps,
    usage: TableUsage,
}

impl<A: FrameAllocator> View<A> {
    /// An empty view (one zeroed PML4 table) for a CPU with `caps`.
    pub fn new(mut frames: A, caps: EptCaps) -> Result<Self, Error> {
        let root = allocate_checked(&mut frames, &caps)?;
        Ok(View {
            frames,
            root,
            caps,
            usage: TableUsage {
                pml4: 1,
                ..TableUsage::default()
            },
        })
    }

    /// Maps `[gpa, gpa + len)` to `[hpa, hpa + len)` with `attrs`, replacing
    /// whatever was mapped there, with the largest pages that fit.
    pub fn map(&mut self, gpa: Gpa, hpa: Hpa, len: u64, attrs: Attributes) -> Result<(), Error> {
        let range = gpa_range(gpa, len)?;
        check_hpa_range(hpa, len, &self.caps)?;
        check_perms(attrs.perms, &self.caps)?;
        self.change(
            Op::Map {
                gpa: gpa.0,
                hpa: hpa.0,
                attrs,
            },
            range,
        )
    }

    /// Maps `[start, start + len)` to the same host-physical addresses.
    pub fn identity_map(&mut self, start: Gpa, len: u64, attrs: Attributes) -> Result<(), Error> {
        self.map(start, Hpa(start.0), len, attrs)
    }

    /// Removes every mapping in `[gpa, gpa + len)` (holes are fine).
    pub fn unmap(&mut self, gpa: Gpa, len: u64) -> Result<(), Error> {
        let range = gpa_range(gpa, len)?;
        self.change(Op::Unmap, range)
    }

    /// Gives every mapped page in `[gpa, gpa + len)` the rights `perms`,
    /// keeping its address and memory type; unmapped pages stay unmapped.
    /// [`Perms::NONE`] makes pages not present to the processor but keeps
    /// their mapping, so a later `protect` restores them.
    pub fn protect(&mut self, gpa: Gpa, len: u64, perms: Perms) -> Result<(), Error> {
        let range = gpa_range(gpa, len)?;
        check_perms(perms, &self.caps)?;
        self.change(Op::Protect(perms), range)
    }

    fn change(&mut self, op: Op, range: (u64, u64)) -> Result<(), Error> {
        change(
            &mut self.frames,
            self.root,
            &mut self.usage,
            self.caps,
            op,
            range,
        )
    }

    /// An independent copy of this view whose tables come from `frames`
    /// (for a per-context view). Leaves keep their accessed/dirty flags. On
    /// error the partial copy is freed back to `frames`; `self` is never
    /// changed.
    pub fn try_clone_in<B: FrameAllocator>(&self, frames: B) -> Result<View<B>, Error> {
        let mut copy = View::new(frames, self.caps)?;
        let root = copy.root;
        copy_table(&self.frames, self.root, &mut copy, root, 4)?;
        Ok(copy)
    }

    /// [`try_clone_in`](Self::try_clone_in) with a copy of this view's
    /// allocator handle (for allocators that are handles to a shared pool).
    pub fn try_clone(&self) -> Result<Self, Error>
    where
        A: Clone,
    {
        self.try_clone_in(self.frames.clone())
    }

    /// The EPTP that makes the processor use this view (SDM 25.6.11).
    pub fn eptp(&self, memory_type: MemoryType, accessed_dirty: bool) -> Result<Eptp, Error> {
        Eptp::new(self.root, memory_type, accessed_dirty, &self.caps)
    }

    /// The PML4 table.
    pub fn root(&self) -> PhysFrame {
        self.root
    }

    /// The capabilities the view was built for.
    pub fn caps(&self) -> EptCaps {
        self.caps
    }

    /// Paging structures in use, by kind.
    pub fn usage(&self) -> TableUsage {
        self.usage
    }

    /// The allocator (shared access only: replacing it would orphan the
    /// tables).
    pub fn frames(&self) -> &A {
        &self.frames
    }

    /// The table in `frame`, which belongs to this view.
    pub(crate) fn table(&self, frame: PhysFrame) -> TablePtr {
        TablePtr::of(&self.frames, frame)
    }
}

impl<A: FrameAllocator> Drop for View<A> {
    fn drop(&mut self) {
        free_tree(&mut self.frames, self.root, 4, &mut self.usage);
    }
}

/// Copies the table `src` (entries at `level`, read through `from`) into the
/// empty table `dst` of `to`, allocating copies of every table below it.
/// Each new table is linked before it is filled, so on error everything
/// allocated so far is reachable from `to` and freed with it.
fn copy_table<A: FrameAllocator + ?Sized, B: FrameAllocator>(
    from: &A,
    src: PhysFrame,
    to: &mut View<B>,
    dst: PhysFrame,
    level: u8,
) -> Result<(), Error> {
    let (src, dst_table) = (TablePtr::of(from, src), to.table(dst));
    for i in 0..crate::addr::ENTRIES {
        let raw = src.load(i);
        match Slot::of(raw, level) {
            Slot::Empty => {}
            Slot::Leaf(_) => dst_table.store(i, raw),
            Slot::Table(child) => {
                let copy = allocate_checked(&mut to.frames, &to.caps)?;
                *to.usage.at(level - 1) += 1;
                dst_table.store(i, Entry::table(copy).raw());
                copy_table(from, child, to, copy, level - 1)?;
            }
        }
    }
    Ok(())
}

/// Checks a guest-physical range and returns it as `(start, end)`.
pub(crate) fn gpa_range(gpa: Gpa, len: u64) -> Result<(u64, u64), Error> {
    let (start, end) = checked_range(gpa.0, len)?;
    if end > GPA_LIMIT {
        return Err(Error::GpaOutOfRange { end });
    }
    Ok((start, end))
}

fn check_hpa_range(hpa: Hpa, len: u64, caps: &EptCaps) -> Result<(), Error> {
    let (_, end) = checked_range(hpa.0, len)?;
    if end > caps.hpa_limit() {
        return Err(Error::HpaOutOfRange {
            end,
            bits: caps.phys_addr_bits(),
        });
    }
    Ok(())
}

fn checked_range(start: u64, len: u64) -> Result<(u64, u64), Error> {
    if !page_aligned(start) {
        return Err(Error::UnalignedAddress { addr: start });
    }
    if !page_aligned(len) {
        return Err(Error::UnalignedLength { len });
    }
    if len == 0 {
        return Err(Error::EmptyRange);
    }
    let end = start
        .checked_add(len)
        .ok_or(Error::Overflow { start, len })?;
    Ok((start, end))
}

/// Refuses rights that would make an entry an EPT misconfiguration on this
/// CPU (SDM 29.3.3.1) or that it cannot express.
pub(crate) fn check_perms(perms: Perms, caps: &EptCaps) -> Result<(), Error> {
    let readable = perms.contains(Perms::READ);
    if perms.contains(Perms::WRITE) && !readable {
        return Err(Error::WriteWithoutRead);
    }
    if perms.contains(Perms::USER_EXECUTE) && !caps.supports(EptFeatures::MODE_BASED_EXECUTE) {
        return Err(Error::UserExecuteUnsupported);
    }
    if !readable
        && perms.intersects(Perms::EXECUTE | Perms::USER_EXECUTE)
        && !caps.supports(EptFeatures::EXECUTE_ONLY)
    {
        return Err(Error::ExecuteOnlyUnsupported);
    }
    Ok(())
}
