//! A change as a function on 4 KiB pages, and how it acts on one entry.

use crate::addr::span;
use crate::caps::EptCaps;
use crate::entry::{AD_MASK, Attributes, Entry, Perms, Slot};

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
    pub(crate) fn keeps(&self, slot: Slot, base: u64) -> bool {
        match (self, slot) {
            (Op::Map { gpa, hpa, attrs }, Slot::Leaf(e)) => {
                e.attributes() == *attrs && e.addr().wrapping_sub(base) == hpa.wrapping_sub(*gpa)
            }
            (Op::Unmap | Op::Protect(_), Slot::Empty) => true,
            (Op::Protect(p), Slot::Leaf(e)) => e.perms() == *p,
            _ => false,
        }
    }

    /// The new value of the 4 KiB entry `old` for the page at `gpa` (inside
    /// the range). A mapping that stays the same keeps its A/D flags.
    #[inline]
    pub(crate) fn page(&self, old: u64, gpa: u64) -> u64 {
        match self {
            Op::Map {
                gpa: first,
                hpa,
                attrs,
            } => {
                let new = Entry::leaf(hpa + (gpa - first), *attrs, 1).raw();
                if old & !AD_MASK == new { old } else { new }
            }
            Op::Unmap => 0,
            Op::Protect(_) if old == 0 => 0,
            Op::Protect(p) => Entry::from_raw(old).with_perms(*p).raw(),
        }
    }

    /// The single entry that expresses the change over the whole region at
    /// `base` (entries at `level`), if there is one.
    pub(crate) fn whole(&self, slot: Slot, level: u8, base: u64, caps: &EptCaps) -> Option<u64> {
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
