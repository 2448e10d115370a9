//! Reading a view: translate one address, list the entries of one walk,
//! iterate every leaf mapping.

use crate::addr::{ENTRIES, GPA_LIMIT, Gpa, Hpa, PageSize, index, span};
use crate::entry::{Attributes, Entry, EntryFlags, Slot};
use crate::error::Error;
use crate::frames::{FrameAllocator, TablePtr};
use crate::view::View;

/// One leaf mapping: a 4 KiB, 2 MiB or 1 GiB page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// First guest-physical address of the page.
    pub gpa: Gpa,
    /// First host-physical address of the page.
    pub hpa: Hpa,
    /// The page size (and so the level of the leaf entry).
    pub size: PageSize,
    /// Rights and memory type. With [`Perms::NONE`](crate::Perms::NONE) the
    /// page is not present to the processor.
    pub attrs: Attributes,
    /// The accessed flag (set by the processor, SDM 29.3.5).
    pub accessed: bool,
    /// The dirty flag (set by the processor, SDM 29.3.5).
    pub dirty: bool,
}

impl Mapping {
    fn of(e: Entry, gpa: u64, level: u8) -> Option<Self> {
        let flags = e.flags();
        Some(Mapping {
            gpa: Gpa(gpa),
            hpa: Hpa(e.addr()),
            size: PageSize::from_level(level)?,
            attrs: e.attributes(),
            accessed: flags.contains(EntryFlags::ACCESSED),
            dirty: flags.contains(EntryFlags::DIRTY),
        })
    }

    /// The host-physical address `gpa` translates to, if it is in the page.
    pub fn translate(&self, gpa: Gpa) -> Option<Hpa> {
        let offset = gpa.0.checked_sub(self.gpa.0)?;
        if offset >= self.size.bytes() {
            return None;
        }
        self.hpa.0.checked_add(offset).map(Hpa)
    }
}

/// The result of translating one guest-physical address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Translation {
    /// The host-physical address.
    pub hpa: Hpa,
    /// The page that maps it.
    pub page: Mapping,
}

/// The entries one translation reads, from the PML4E down to the last entry
/// it reaches (a leaf, or an empty entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkPath {
    entries: [Entry; 4],
    len: usize,
}

impl WalkPath {
    /// `(level, entry)` pairs, level 4 (PML4E) first.
    pub fn iter(&self) -> impl Iterator<Item = (u8, Entry)> + '_ {
        self.entries[..self.len]
            .iter()
            .zip([4u8, 3, 2, 1])
            .map(|(e, level)| (level, *e))
    }

    /// The last entry read and its level.
    pub fn last(&self) -> (u8, Entry) {
        let i = self.len.saturating_sub(1);
        (4 - i as u8, self.entries[i])
    }
}

impl<A: FrameAllocator> View<A> {
    /// The entries a translation of `gpa` reads.
    pub fn walk(&self, gpa: Gpa) -> Result<WalkPath, Error> {
        if gpa.0 >= GPA_LIMIT {
            return Err(Error::GpaOutOfRange { end: gpa.0 });
        }
        let mut path = WalkPath {
            entries: [Entry::default(); 4],
            len: 0,
        };
        let mut table = self.table(self.root());
        for (slot, level) in path.entries.iter_mut().zip([4u8, 3, 2, 1]) {
            let raw = table.load(index(gpa.0, level));
            *slot = Entry::from_raw(raw);
            path.len += 1;
            match Slot::of(raw, level) {
                Slot::Table(next) => table = self.table(next),
                Slot::Empty | Slot::Leaf(_) => break,
            }
        }
        Ok(path)
    }

    /// Translates `gpa`: `None` if nothing maps it.
    pub fn translate(&self, gpa: Gpa) -> Result<Option<Translation>, Error> {
        let (level, entry) = self.walk(gpa)?.last();
        Ok(match Slot::of(entry.raw(), level) {
            Slot::Leaf(e) => {
                let page_gpa = gpa.0 & !(span(level) - 1);
                Mapping::of(e, page_gpa, level).map(|page| Translation {
                    hpa: Hpa(page.hpa.0 + (gpa.0 - page_gpa)),
                    page,
                })
            }
            Slot::Empty | Slot::Table(_) => None,
        })
    }

    /// Every leaf mapping, in increasing guest-physical order.
    pub fn mappings(&self) -> Mappings<'_, A> {
        Mappings {
            view: self,
            stack: [(self.table(self.root()), 0, 0); 4],
            depth: 1,
        }
    }
}

/// Iterator over the leaf mappings of a view; see [`View::mappings`].
pub struct Mappings<'a, A: FrameAllocator> {
    view: &'a View<A>,
    /// Per open table, level 4 first: (table, its first GPA, next index).
    stack: [(TablePtr, u64, usize); 4],
    depth: usize,
}

impl<A: FrameAllocator> Iterator for Mappings<'_, A> {
    type Item = Mapping;

    fn next(&mut self) -> Option<Mapping> {
        while let Some(top) = self.depth.checked_sub(1) {
            let level = 4 - top as u8;
            let (table, base, next) = &mut self.stack[top];
            if *next == ENTRIES {
                self.depth -= 1;
                continue;
            }
            let gpa = *base + *next as u64 * span(level);
            let raw = table.load(*next);
            *next += 1;
            match Slot::of(raw, level) {
                Slot::Empty => {}
                Slot::Leaf(e) => return Mapping::of(e, gpa, level),
                Slot::Table(child) => {
                    if let Some(below) = self.stack.get_mut(top + 1) {
                        *below = (self.view.table(child), gpa, 0);
                        self.depth += 1;
                    }
                }
            }
        }
        None
    }
}
