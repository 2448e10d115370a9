//! The one algorithm behind map, unmap and protect.
//!
//! A change is a function on 4 KiB pages ([`Op`]) applied to a range. The
//! tree is kept in canonical form: every region that can be one leaf (its
//! pages all mapped with equal attributes to one physically contiguous,
//! suitably aligned range, and the CPU allows that page size) *is* one leaf,
//! and no table is empty. The canonical tree of a mapping is unique, and it
//! uses the fewest tables possible.
//!
//! [`change`] runs the same recursive walk twice:
//!
//! 1. **Plan**: read-only. It counts the tables the change will create (a
//!    large page split, or a table for a new partial mapping).
//! 2. Reserve exactly that many frames. If the allocator runs out, the
//!    frames taken so far go back and the change fails with nothing touched.
//! 3. **Apply**: the same walk, now writing entries, taking new tables from
//!    the reservation (it cannot run out: both passes make the same
//!    decisions from the same tree) and freeing the tables that merges and
//!    unmaps make unnecessary.
//!
//! At each entry the walk either keeps it (the change is a no-op there),
//! replaces it with one entry (the change covers the whole region and the
//! result is one leaf or empty), or descends into a table (the existing one,
//! or a new one filled with the split large page) and, on the way back up,
//! merges the table into one entry if its 512 results allow it.

use crate::addr::{ENTRIES, PAGE_SIZE, PhysFrame, index, span};
use crate::caps::EptCaps;
use crate::entry::{Entry, Slot, split_child};
use crate::error::Error;
use crate::frames::{FrameAllocator, Reservation, TablePtr, TableUsage, free_tree};
use crate::merge::{Merge, Out, PLANNED_TABLE};
use crate::op::Op;

/// The table `descend` is working in.
struct Child {
    /// The entry above it, before the change.
    slot: Slot,
    /// The table (`None` for a new table in the plan pass).
    table: Option<TablePtr>,
    /// `true` if the table is new (the split of a leaf, or was empty).
    fresh: bool,
    /// The level of the entry above it.
    level: u8,
    /// The first guest-physical address it maps.
    base: u64,
}

impl Child {
    /// Entry `i` before the change: read from the table, or the piece of
    /// the split page, or empty.
    #[inline]
    fn old(&self, i: usize) -> u64 {
        match (self.slot, self.table) {
            (Slot::Leaf(e), _) => split_child(e, self.level, i),
            (Slot::Table(_), Some(t)) => t.load(i),
            _ => 0,
        }
    }
}

/// One pass of a change over the tree.
struct Pass<'a, A: FrameAllocator + ?Sized> {
    frames: &'a mut A,
    caps: EptCaps,
    op: Op,
    start: u64,
    end: u64,
    /// `None` in the plan pass; the frames for new tables in the apply pass.
    reserved: Option<Reservation>,
    /// Tables created (planned, in the plan pass).
    created: usize,
    usage: &'a mut TableUsage,
    /// `scan[level]`: a table referenced at `level` may be uniform and still
    /// matter for a merge (no leaves at `level`, leaves above it).
    scan: [bool; 5],
}

impl<A: FrameAllocator + ?Sized> Pass<'_, A> {
    fn applying(&self) -> bool {
        self.reserved.is_some()
    }

    fn root(&mut self, root: PhysFrame) {
        let table = TablePtr::of(self.frames, root);
        for i in index(self.start, 4)..=index(self.end - 1, 4) {
            let old = table.load(i);
            let out = self.resolve(old, 4, i as u64 * span(4));
            if self.applying() && out.entry != old {
                table.store(i, out.entry);
            }
            self.retire(out);
        }
    }

    /// The new value of the entry `old` at `level` for the region at `base`.
    fn resolve(&mut self, old: u64, level: u8, base: u64) -> Out {
        if level == 1 {
            return Out::plain(self.op.page(old, base));
        }
        let slot = Slot::of(old, level);
        // A leaf where the CPU allows none is the piece of a split page
        // (say a 2 MiB piece of a 1 GiB page without 2 MiB support): it
        // must become a table, never stay.
        let legal = !matches!(slot, Slot::Leaf(_)) || self.caps.leaf_at(level);
        if legal && self.op.keeps(slot, base) {
            return Out::plain(old);
        }
        if self.start <= base
            && base + span(level) <= self.end
            && let Some(new) = self.op.whole(slot, level, base, &self.caps)
        {
            return match slot {
                Slot::Table(t) => Out::replacing(new, t, level - 1),
                _ => Out::plain(new),
            };
        }
        self.descend(old, slot, level, base)
    }

    /// Applies the change inside the table under `old` (creating it from
    /// the split leaf or empty entry), then merges it if possible.
    fn descend(&mut self, old: u64, slot: Slot, level: u8, base: u64) -> Out {
        let child = level - 1;
        let fresh = !matches!(slot, Slot::Table(_));
        let frame = match slot {
            Slot::Table(t) => Some(t),
            _ => self.new_table(child),
        };
        if self.applying() && frame.is_none() {
            // Unreachable (the plan reserved every frame the apply pass
            // takes); fail closed: the region becomes unmapped.
            debug_assert!(frame.is_some(), "reservation exhausted");
            return Out::plain(0);
        }
        let table = frame.map(|f| TablePtr::of(self.frames, f));
        let first = if self.start > base {
            index(self.start, child)
        } else {
            0
        };
        let last = if self.end < base + span(level) {
            index(self.end - 1, child)
        } else {
            ENTRIES - 1
        };
        // Out-of-range entries of a new table are written (apply) or
        // counted when they need tables of their own (plan).
        let must_fill = fresh
            && (self.applying() || (matches!(slot, Slot::Leaf(_)) && !self.caps.leaf_at(child)));
        let mut merge = Merge::new(level, &self.caps);
        let at = Child {
            slot,
            table,
            fresh,
            level,
            base,
        };
        // The changed entries first: they usually settle the merge check,
        // and then the others need no look unless they must be written.
        if child == 1 {
            // 4 KiB entries: a tight loop, no recursion.
            let write = table.filter(|_| self.applying());
            for i in first..=last {
                let old = at.old(i);
                let new = self.op.page(old, base + i as u64 * PAGE_SIZE);
                if let Some(t) = write
                    && (fresh || new != old)
                {
                    t.store(i, new);
                }
                merge.push(i, new, child);
            }
        } else {
            for i in first..=last {
                let out = self.child(&at, i, true);
                merge.push(i, out.uniform, child);
            }
        }
        match (table, slot) {
            // Fast paths for the two big loops: filling a new table with
            // the pieces of a page, and checking whether an existing table
            // of leaves can merge.
            (Some(t), Slot::Leaf(e)) if self.applying() && self.caps.leaf_at(child) => {
                for i in (0..first).chain(last + 1..ENTRIES) {
                    let piece = split_child(e, level, i);
                    t.store(i, piece);
                    merge.push(i, piece, child);
                }
            }
            (Some(_), Slot::Empty) => {
                // A new, zeroed table: the other entries are empty already,
                // and after one of them more change nothing in the check.
                if let Some(i) = (0..first).chain(last + 1..ENTRIES).next() {
                    merge.push(i, 0, child);
                }
            }
            (Some(t), Slot::Table(_)) if !self.scan[usize::from(child)] => {
                merge.push_table(t, 0..first, child);
                merge.push_table(t, last + 1..ENTRIES, child);
            }
            _ => {
                for i in (0..first).chain(last + 1..ENTRIES) {
                    if !must_fill && matches!(merge, Merge::Mixed) {
                        break;
                    }
                    let out = self.child(&at, i, false);
                    merge.push(i, out.uniform, child);
                }
            }
        }
        let uniform = merge.value(level);
        match (uniform, frame) {
            (Some(v), Some(f)) if v == 0 || self.caps.leaf_at(level) => Out::replacing(v, f, child),
            (Some(v), None) if v == 0 || self.caps.leaf_at(level) => Out::plain(v),
            _ => Out {
                retired: None,
                entry: match frame {
                    Some(f) if fresh => Entry::table(f).raw(),
                    Some(_) => old,
                    None => PLANNED_TABLE,
                },
                uniform: uniform.unwrap_or(PLANNED_TABLE),
            },
        }
    }

    /// Entry `i` of the table being visited by `descend`: its new value
    /// (written in the apply pass) and what it amounts to for the merge.
    fn child(&mut self, at: &Child, i: usize, in_range: bool) -> Out {
        let child = at.level - 1;
        let old = at.old(i);
        // (The common cases are decided here, without a call.)
        let out = if in_range {
            self.resolve(old, child, at.base + i as u64 * span(child))
        } else if at.fresh && old != 0 && !self.caps.leaf_at(child) {
            self.materialize(old, child)
        } else if !at.fresh
            && self.scan[usize::from(child)]
            && matches!(Slot::of(old, child), Slot::Table(_))
        {
            Out {
                uniform: self.uniform(old, child),
                ..Out::plain(old)
            }
        } else {
            Out::plain(old)
        };
        if let Some(t) = at.table
            && self.applying()
            && (at.fresh || out.entry != old)
        {
            t.store(i, out.entry);
        }
        self.retire(out);
        out
    }

    /// Frees the table `out` replaced (apply pass), now that its entry is
    /// stored.
    fn retire(&mut self, out: Out) {
        if let Some((frame, level)) = out.retired {
            self.free(frame, level);
        }
    }

    /// What an unchanged entry at `level` amounts to for a merge (see
    /// [`Out`]). Only a table at a level without leaves, below a level with
    /// them, needs a look inside; a canonical table anywhere else is never
    /// uniform, or its uniformity could not make a leaf anywhere.
    fn uniform(&self, raw: u64, level: u8) -> u64 {
        let Slot::Table(f) = Slot::of(raw, level) else {
            return raw;
        };
        if !self.scan[usize::from(level)] {
            return raw;
        }
        let table = TablePtr::of(self.frames, f);
        let mut merge = Merge::new(level, &self.caps);
        for i in 0..ENTRIES {
            merge.push(i, self.uniform(table.load(i), level - 1), level - 1);
            if matches!(merge, Merge::Mixed) {
                return raw;
            }
        }
        merge.value(level).unwrap_or(raw)
    }

    /// `raw` (a piece of a split page at `level`) as the CPU allows it: a
    /// leaf where leaves of that size are supported, otherwise a table of
    /// smaller pieces.
    fn materialize(&mut self, raw: u64, level: u8) -> Out {
        let Slot::Leaf(e) = Slot::of(raw, level) else {
            return Out::plain(raw);
        };
        if self.caps.leaf_at(level) {
            return Out::plain(raw);
        }
        let frame = self.new_table(level - 1);
        if self.applying() && frame.is_none() {
            return Out::plain(0); // unreachable, see `descend`
        }
        let table = frame.map(|f| TablePtr::of(self.frames, f));
        for i in 0..ENTRIES {
            let piece = self.materialize(split_child(e, level, i), level - 1);
            if let Some(t) = table {
                t.store(i, piece.entry);
            }
        }
        Out {
            uniform: raw,
            ..Out::plain(frame.map_or(PLANNED_TABLE, |f| Entry::table(f).raw()))
        }
    }

    /// A new zeroed table for entries at `level`: counted in the plan pass,
    /// taken from the reservation in the apply pass.
    fn new_table(&mut self, level: u8) -> Option<PhysFrame> {
        self.created += 1;
        let frame = self.reserved.as_mut()?.take(self.frames)?;
        *self.usage.at(level) += 1;
        Some(frame)
    }

    /// Frees a table (entries at `level`) and its subtree, in the apply pass.
    fn free(&mut self, frame: PhysFrame, level: u8) {
        if self.applying() {
            free_tree(self.frames, frame, level, self.usage);
        }
    }
}

/// See `Pass::scan`.
fn scan_levels(caps: &EptCaps) -> [bool; 5] {
    let mut scan = [false; 5];
    for (level, s) in scan.iter_mut().enumerate().skip(1) {
        let level = level as u8;
        *s = !caps.leaf_at(level) && (level + 1..4).any(|up| caps.leaf_at(up));
    }
    scan
}

/// Applies `op` to the pages of `[start, end)` (validated, page aligned,
/// non-empty, below 2^48) in the tree rooted at `root`: completely, or not
/// at all when frames run out.
pub(crate) fn change<A: FrameAllocator + ?Sized>(
    frames: &mut A,
    root: PhysFrame,
    usage: &mut TableUsage,
    caps: EptCaps,
    op: Op,
    (start, end): (u64, u64),
) -> Result<(), Error> {
    let mut plan = Pass {
        frames: &mut *frames,
        caps,
        op,
        start,
        end,
        reserved: None,
        created: 0,
        usage: &mut *usage,
        scan: scan_levels(&caps),
    };
    plan.root(root);
    let needed = plan.created;
    let reserved = Reservation::reserve(frames, &caps, needed)?;
    let mut apply = Pass {
        frames: &mut *frames,
        caps,
        op,
        start,
        end,
        reserved: Some(reserved),
        created: 0,
        usage,
        scan: scan_levels(&caps),
    };
    apply.root(root);
    debug_assert_eq!(apply.created, needed);
    if let Some(left) = apply.reserved.take() {
        debug_assert_eq!(left.len(), 0);
        left.release(frames);
    }
    Ok(())
}
