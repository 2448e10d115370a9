//! Deciding whether the 512 entries of a table can be one entry one level
//! up (the merge rule), and what a region amounts to for that decision.
//!
//! 512 entries merge into a leaf at `level` when they are all leaves with
//! equal attributes (rights, memory type, ignore-PAT, suppress-#VE) mapping
//! one physically contiguous range that starts aligned to the leaf's size,
//! and the CPU allows leaves at `level`; their accessed/dirty flags are
//! ORed into the leaf. 512 empty entries merge into an empty entry.

use crate::addr::{PhysFrame, span};
use crate::caps::EptCaps;
use crate::entry::{AD_MASK, ADDR_MASK, Entry, Slot};
use crate::frames::TablePtr;

/// What the plan pass returns for a table it would create: any value that
/// reads as a table reference at levels 2..=4.
pub(crate) const PLANNED_TABLE: u64 = Entry::table(PhysFrame::containing(0)).raw();

/// Whether 512 consecutive entries could be one entry one level up. The
/// entries can be pushed in any order.
#[derive(Clone, Copy)]
pub(crate) enum Merge {
    /// Nothing seen yet; `leaves`: a uniform run of leaves could become a
    /// leaf at this level or above (otherwise only emptiness matters).
    Start { leaves: bool },
    /// All empty so far.
    Empty,
    /// All leaves so far: entry `i` is `bits | (base + i * span)` plus
    /// accessed/dirty flags, which `ad` accumulates.
    Leaf { bits: u64, base: u64, ad: u64 },
    /// Cannot merge.
    Mixed,
}

impl Merge {
    /// A check for the entries of the table under an entry at `level`.
    pub(crate) fn new(level: u8, caps: &EptCaps) -> Self {
        Merge::Start {
            leaves: (level..4).any(|up| caps.leaf_at(up)),
        }
    }

    /// Adds entry `i` (at `level`) of the table.
    #[inline]
    pub(crate) fn push(&mut self, i: usize, raw: u64, level: u8) {
        let offset = i as u64 * span(level);
        *self = match *self {
            Merge::Mixed => return,
            Merge::Leaf { bits, base, ad } => {
                if raw & !AD_MASK == bits | base.wrapping_add(offset) {
                    Merge::Leaf {
                        bits,
                        base,
                        ad: ad | (raw & AD_MASK),
                    }
                } else {
                    Merge::Mixed
                }
            }
            Merge::Start { .. } | Merge::Empty if raw == 0 => Merge::Empty,
            Merge::Empty => Merge::Mixed,
            Merge::Start { leaves } => match (Slot::of(raw, level), leaves) {
                (Slot::Leaf(e), true) => match e.addr().checked_sub(offset) {
                    Some(base) => Merge::Leaf {
                        bits: raw & !(ADDR_MASK | AD_MASK),
                        base,
                        ad: raw & AD_MASK,
                    },
                    None => Merge::Mixed,
                },
                _ => Merge::Mixed,
            },
        }
    }

    /// Adds entries `range` (at `level`) of `table`, stopping as soon as
    /// the merge is impossible; a tight loop once a run of leaves started.
    #[inline]
    pub(crate) fn push_table(
        &mut self,
        table: TablePtr,
        range: core::ops::Range<usize>,
        level: u8,
    ) {
        let step = span(level);
        for i in range {
            match *self {
                Merge::Mixed => return,
                Merge::Leaf { bits, base, ad } => {
                    let raw = table.load(i);
                    let expect = bits | base.wrapping_add(i as u64 * step);
                    *self = if raw & !AD_MASK == expect {
                        Merge::Leaf {
                            bits,
                            base,
                            ad: ad | (raw & AD_MASK),
                        }
                    } else {
                        Merge::Mixed
                    };
                }
                _ => self.push(i, table.load(i), level),
            }
        }
    }

    /// The one leaf (or empty entry) at `level` equal to the 512 entries,
    /// if there is one, whether or not the CPU allows leaves there.
    pub(crate) fn value(self, level: u8) -> Option<u64> {
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
pub(crate) struct Out {
    /// The new entry.
    pub(crate) entry: u64,
    /// What it amounts to for a merge.
    pub(crate) uniform: u64,
    /// A table (and the level of its entries) that the old entry referenced
    /// and the new one does not: it is freed only after the new entry has
    /// been stored, so the live tree never points at a freed frame.
    pub(crate) retired: Option<(PhysFrame, u8)>,
}

impl Out {
    /// A leaf or empty entry.
    #[inline]
    pub(crate) const fn plain(raw: u64) -> Self {
        Out {
            entry: raw,
            uniform: raw,
            retired: None,
        }
    }

    /// A leaf or empty entry that replaces the table `frame` (entries at
    /// `level`).
    #[inline]
    pub(crate) const fn replacing(raw: u64, frame: PhysFrame, level: u8) -> Self {
        Out {
            retired: Some((frame, level)),
            ..Out::plain(raw)
        }
    }
}
