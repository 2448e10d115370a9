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

use crate::addr::{ENTRIES, PhysFrame, index, span};
use crate::caps::EptCaps;
use crate::entry::{AD_MASK, ADDR_MASK, Attributes, Entry, Perms, Slot, split_child};
use crate::error::Error;
use crate::frames::{FrameAllocator, Reservation, TablePtr, TableUsage, free_tree};

/// What a change does to every 4 KiB page of its range.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    /// Page `g` maps to `hpa + (g - gpa)` with `attrs`.
    Map {
        gpa: u64,
        hpa: u64,
        attrs: Attributes,
    },
    /// Pages become unmapped.
    Unmap,
    /// Mapped pages get these rights; unmapped pages stay unmapped.
    Protect(Perms),
}

impl Op {
    /// `true` if the change leaves `slot` (the entry for the region at
    /// `base`) exactly as it is.
    fn keeps(&self, slot: Slot, base: u64) -> bool {
        match (self, slot) {
            (Op::Map { gpa, hpa, attrs }, Slot::Leaf(e)) => {
                e.attributes() == *attrs && e.addr().wrapping_sub(base) == hpa.wrapping_sub(*gpa)
            }
            (Op::Unmap | Op::Protect(_), Slot::Empty) => true,
            (Op::Protect(p), Slot::Leaf(e)) => e.perms() == *p,
            _ => false,
        }
    }

    /// The single entry that expresses the change over the whole region at
    /// `base` (entries at `level`), if there is one.
    fn whole(&self, slot: Slot, level: u8, base: u64, caps: &EptCaps) -> Option<u64> {
        match (self, slot) {
            (Op::Map { gpa, hpa, attrs }, _) => {
                // The region lies inside the range, so `base >= gpa`.
                let target = hpa + (base - gpa);
                (caps.leaf_at(level) && target.is_multiple_of(span(level)))
                    .then(|| Entry::leaf(target, *attrs, level).raw())
            }
            (Op::Unmap, _) | (Op::Protect(_), Slot::Empty) => Some(0),
            (Op::Protect(p), Slot::Leaf(e)) if caps.leaf_at(level) => Some(e.with_perms(*p).raw()),
            (Op::Protect(_), Slot::Leaf(_) | Slot::Table(_)) => None,
        }
    }
}

/// What the plan pass returns for a table it would create: any value that
/// reads as a table reference at levels 2..=4.
const PLANNED_TABLE: u64 = Entry::table(PhysFrame::containing(0)).raw();

/// Whether 512 consecutive entries could be one entry one level up.
#[derive(Clone, Copy)]
enum Merge {
    /// Nothing seen yet.
    Start,
    /// All empty so far.
    Empty,
    /// All leaves so far, with equal `bits` outside the address and A/D
    /// fields, entry `i` at `base + i * span`; `ad` accumulates A/D flags.
    Leaf { bits: u64, base: u64, ad: u64 },
    /// Cannot merge.
    Mixed,
}

impl Merge {
    fn push(&mut self, i: usize, raw: u64, level: u8) {
        *self = match (*self, Slot::of(raw, level)) {
            (Merge::Start | Merge::Empty, Slot::Empty) => Merge::Empty,
            (Merge::Start, Slot::Leaf(e)) => match e.addr().checked_sub(i as u64 * span(level)) {
                Some(base) => Merge::Leaf {
                    bits: raw & !(ADDR_MASK | AD_MASK),
                    base,
                    ad: raw & AD_MASK,
                },
                None => Merge::Mixed,
            },
            (Merge::Leaf { bits, base, ad }, Slot::Leaf(e))
                if raw & !(ADDR_MASK | AD_MASK) == bits
                    && Some(e.addr()) == base.checked_add(i as u64 * span(level)) =>
            {
                Merge::Leaf {
                    bits,
                    base,
                    ad: ad | (raw & AD_MASK),
                }
            }
            _ => Merge::Mixed,
        }
    }

    /// The one leaf (or empty entry) at `level` equal to the 512 entries,
    /// if there is one, whether or not the CPU allows leaves there.
    fn value(self, level: u8) -> Option<u64> {
        match self {
            Merge::Empty => Some(0),
            Merge::Leaf { bits, base, ad } if base.is_multiple_of(span(level)) => {
                let attrs = Entry::from_raw(bits).attributes();
                Some(Entry::leaf(base, attrs, level).raw() | ad)
            }
            _ => None,
        }
    }
}

/// The new entry for a region, and what the region amounts to for a merge
/// one level up: the entry itself for a leaf or empty entry; for a table,
/// the leaf it would be if the CPU allowed leaves at its level (so a PD of
/// uniform PTs can become a 1 GiB page on a CPU without 2 MiB pages), or
/// [`PLANNED_TABLE`] when its region is not uniform.
#[derive(Clone, Copy)]
struct Out {
    entry: u64,
    uniform: u64,
}

impl Out {
    /// A leaf or empty entry.
    const fn plain(raw: u64) -> Self {
        Out {
            entry: raw,
            uniform: raw,
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
}

impl<A: FrameAllocator + ?Sized> Pass<'_, A> {
    fn applying(&self) -> bool {
        self.reserved.is_some()
    }

    fn root(&mut self, root: PhysFrame) {
        let table = TablePtr::of(self.frames, root);
        for i in index(self.start, 4)..=index(self.end - 1, 4) {
            let old = table.load(i);
            let new = self.resolve(old, 4, i as u64 * span(4)).entry;
            if self.applying() && new != old {
                table.store(i, new);
            }
        }
    }

    /// The new value of the entry `old` at `level` for the region at `base`.
    fn resolve(&mut self, old: u64, level: u8, base: u64) -> Out {
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
            if let Slot::Table(t) = slot {
                self.free(t, level - 1);
            }
            return Out::plain(new);
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
        let mut merge = Merge::Start;
        for i in 0..ENTRIES {
            let in_range = (first..=last).contains(&i);
            if !in_range && !must_fill && matches!(merge, Merge::Mixed) {
                continue;
            }
            let old_i = match (slot, table) {
                (Slot::Leaf(e), _) => split_child(e, level, i),
                (Slot::Table(_), Some(t)) => t.load(i),
                _ => 0,
            };
            let out = if in_range {
                self.resolve(old_i, child, base + i as u64 * span(child))
            } else if fresh {
                self.materialize(old_i, child)
            } else {
                Out {
                    entry: old_i,
                    uniform: self.uniform(old_i, child),
                }
            };
            if let Some(t) = table
                && self.applying()
                && (fresh || out.entry != old_i)
            {
                t.store(i, out.entry);
            }
            merge.push(i, out.uniform, child);
        }
        let uniform = merge.value(level);
        match (uniform, frame) {
            (Some(v), Some(f)) if v == 0 || self.caps.leaf_at(level) => {
                self.free(f, child);
                Out::plain(v)
            }
            (Some(v), None) if v == 0 || self.caps.leaf_at(level) => Out::plain(v),
            _ => Out {
                entry: match frame {
                    Some(f) if fresh => Entry::table(f).raw(),
                    Some(_) => old,
                    None => PLANNED_TABLE,
                },
                uniform: uniform.unwrap_or(PLANNED_TABLE),
            },
        }
    }

    /// What an unchanged entry at `level` amounts to for a merge (see
    /// [`Out`]). Only a table at a level without leaves needs a look
    /// inside; a canonical table anywhere else is never uniform.
    fn uniform(&self, raw: u64, level: u8) -> u64 {
        let Slot::Table(f) = Slot::of(raw, level) else {
            return raw;
        };
        if self.caps.leaf_at(level) {
            return raw;
        }
        let table = TablePtr::of(self.frames, f);
        let mut merge = Merge::Start;
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
            entry: frame.map_or(PLANNED_TABLE, |f| Entry::table(f).raw()),
            uniform: raw,
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
    };
    apply.root(root);
    debug_assert_eq!(apply.created, needed);
    if let Some(left) = apply.reserved.take() {
        debug_assert_eq!(left.len(), 0);
        left.release(frames);
    }
    Ok(())
}
