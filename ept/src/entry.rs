//! Typed EPT paging-structure entries.
//!
//! Formats: SDM Vol. 3C, 29.3.2 "EPT Translation Mechanism", Tables 29-1
//! (PML4E), 29-2 (PDPTE mapping a 1 GiB page), 29-3 (PDPTE referencing a page
//! directory), 29-4 (PDE mapping a 2 MiB page), 29-5 (PDE referencing a page
//! table) and 29-6 (PTE mapping a 4 KiB page).

use crate::addr::{PhysFrame, span};
use bitflags::bitflags;
use core::sync::atomic::AtomicU64;

bitflags! {
    /// Access rights of an EPT entry (bits 0, 1, 2 and 10).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct Perms: u64 {
        /// Reads allowed (bit 0).
        const READ = 1 << 0;
        /// Writes allowed (bit 1).
        const WRITE = 1 << 1;
        /// Instruction fetches allowed (bit 2); with mode-based execute
        /// control, fetches from supervisor-mode linear addresses only.
        const EXECUTE = 1 << 2;
        /// Instruction fetches from user-mode linear addresses allowed (bit
        /// 10); meaningful only with mode-based execute control for EPT
        /// (SDM 29.3.2), ignored otherwise.
        const USER_EXECUTE = 1 << 10;
    }
}

impl Perms {
    /// No access: an entry with these rights is not present (SDM 29.3.2).
    pub const NONE: Perms = Perms::empty();
    /// Read-only.
    pub const R: Perms = Perms::READ;
    /// Read and write.
    pub const RW: Perms = Perms::READ.union(Perms::WRITE);
    /// Read and (supervisor) execute.
    pub const RX: Perms = Perms::READ.union(Perms::EXECUTE);
    /// Read, write and (supervisor) execute.
    pub const RWX: Perms = Perms::RW.union(Perms::EXECUTE);
}

bitflags! {
    /// The single-bit fields of an EPT entry. The memory type (bits 5:3) and
    /// the address (bits 51:12) are read with [`Entry::memory_type`] and
    /// [`Entry::addr`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct EntryFlags: u64 {
        /// Read access (bit 0).
        const READ = 1 << 0;
        /// Write access (bit 1).
        const WRITE = 1 << 1;
        /// Execute access (bit 2).
        const EXECUTE = 1 << 2;
        /// Ignore PAT memory type (bit 6, leaves only, SDM 29.3.7).
        const IGNORE_PAT = 1 << 6;
        /// The entry maps a page (bit 7 of a PDPTE or PDE).
        const LARGE_PAGE = 1 << 7;
        /// Accessed (bit 8, with EPTP bit 6 set, SDM 29.3.5).
        const ACCESSED = 1 << 8;
        /// Dirty (bit 9, leaves only, with EPTP bit 6 set, SDM 29.3.5).
        const DIRTY = 1 << 9;
        /// User-mode execute access (bit 10, mode-based execute control).
        const USER_EXECUTE = 1 << 10;
        /// Bit 11, ignored by the processor: this crate sets it on every leaf
        /// it writes, so a mapping with no access rights (not present to the
        /// processor) keeps its address and memory type and differs from an
        /// empty entry.
        const SOFTWARE_MAPPED = 1 << 11;
        /// Suppress #VE (bit 63; SDM 26.5, "Virtualization Exceptions"):
        /// EPT violations on this page cause VM exits even when
        /// EPT-violation #VE is enabled.
        const SUPPRESS_VE = 1 << 63;
    }
}

/// A memory type for a leaf entry (bits 5:3) or for the EPT paging
/// structures (EPTP bits 2:0). Values 2, 3 and 7 are reserved (SDM 29.3.7;
/// a leaf carrying one is an EPT misconfiguration, 29.3.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MemoryType {
    /// Uncacheable (UC).
    Uncacheable = 0,
    /// Write combining (WC).
    WriteCombining = 1,
    /// Write through (WT).
    WriteThrough = 4,
    /// Write protected (WP).
    WriteProtected = 5,
    /// Write back (WB).
    WriteBack = 6,
}

impl MemoryType {
    /// Every memory type, for exhaustive tests.
    pub const ALL: [MemoryType; 5] = [
        MemoryType::Uncacheable,
        MemoryType::WriteCombining,
        MemoryType::WriteThrough,
        MemoryType::WriteProtected,
        MemoryType::WriteBack,
    ];

    /// Decodes a 3-bit memory-type field; `None` for a reserved value.
    #[inline]
    pub const fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(MemoryType::Uncacheable),
            1 => Some(MemoryType::WriteCombining),
            4 => Some(MemoryType::WriteThrough),
            5 => Some(MemoryType::WriteProtected),
            6 => Some(MemoryType::WriteBack),
            _ => None,
        }
    }

    /// The 3-bit encoding.
    #[inline]
    pub const fn bits(self) -> u8 {
        self as u8
    }
}

/// What a leaf mapping grants: access rights and memory typing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// Access rights.
    pub perms: Perms,
    /// EPT memory type (bits 5:3).
    pub memory_type: MemoryType,
    /// Ignore the guest's PAT (bit 6): the EPT memory type alone applies.
    pub ignore_pat: bool,
    /// Suppress #VE (bit 63).
    pub suppress_ve: bool,
}

impl Attributes {
    /// `perms` with `memory_type`, the guest PAT honoured, #VE not suppressed.
    pub const fn new(perms: Perms, memory_type: MemoryType) -> Self {
        Attributes {
            perms,
            memory_type,
            ignore_pat: false,
            suppress_ve: false,
        }
    }

    /// Read/write/execute write-back memory: ordinary RAM.
    pub const RAM: Attributes = Attributes::new(Perms::RWX, MemoryType::WriteBack);

    /// The same attributes with `ignore_pat` set to `on`.
    pub const fn with_ignore_pat(mut self, on: bool) -> Self {
        self.ignore_pat = on;
        self
    }

    /// The same attributes with `suppress_ve` set to `on`.
    pub const fn with_suppress_ve(mut self, on: bool) -> Self {
        self.suppress_ve = on;
        self
    }
}

/// Mask of the address field, bits 51:12.
pub(crate) const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const MEMORY_TYPE_SHIFT: u32 = 3;
const MEMORY_TYPE_MASK: u64 = 0b111 << MEMORY_TYPE_SHIFT;
const PERM_MASK: u64 = Perms::all().bits();
/// Rights of an entry that references a paging structure: everything, so
/// the leaf alone decides (SDM 29.3.2: rights are the AND along the walk).
const TABLE_RIGHTS: u64 = PERM_MASK;
/// Hardware-maintained bits that do not make two leaves different.
pub(crate) const AD_MASK: u64 = EntryFlags::ACCESSED.bits() | EntryFlags::DIRTY.bits();

/// One raw 64-bit EPT entry, as stored in a paging structure.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Entry(u64);

// The hardware format: 8-byte entries, 512 to a 4 KiB structure, and the
// atomic view of an entry has the same layout.
const _: () = assert!(core::mem::size_of::<Entry>() == 8);
const _: () = assert!(core::mem::size_of::<[Entry; 512]>() == 4096);
const _: () = assert!(core::mem::size_of::<AtomicU64>() == 8);
const _: () = assert!(core::mem::align_of::<AtomicU64>() == core::mem::align_of::<u64>());

impl Entry {
    /// The entry with this raw value.
    #[inline]
    pub const fn from_raw(raw: u64) -> Self {
        Entry(raw)
    }

    /// The raw value.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The single-bit fields.
    #[inline]
    pub const fn flags(self) -> EntryFlags {
        EntryFlags::from_bits_truncate(self.0)
    }

    /// The access rights (bits 0, 1, 2 and 10).
    #[inline]
    pub const fn perms(self) -> Perms {
        Perms::from_bits_truncate(self.0)
    }

    /// The address field (bits 51:12): a page or the next paging structure.
    #[inline]
    pub const fn addr(self) -> u64 {
        self.0 & ADDR_MASK
    }

    /// The raw memory-type field (bits 5:3).
    #[inline]
    pub const fn memory_type_bits(self) -> u8 {
        ((self.0 & MEMORY_TYPE_MASK) >> MEMORY_TYPE_SHIFT) as u8
    }

    /// The memory type, `None` if the field holds a reserved value.
    #[inline]
    pub const fn memory_type(self) -> Option<MemoryType> {
        MemoryType::from_bits(self.memory_type_bits())
    }

    /// An entry that references the paging structure in `frame`.
    #[inline]
    pub const fn table(frame: PhysFrame) -> Self {
        Entry(frame.addr() | TABLE_RIGHTS)
    }

    /// A leaf at `level` (1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB) mapping `hpa`.
    /// `hpa` is masked to bits 51:12; the caller keeps it page aligned.
    #[inline]
    pub const fn leaf(hpa: u64, attrs: Attributes, level: u8) -> Self {
        let mut raw = (hpa & ADDR_MASK)
            | attrs.perms.bits()
            | ((attrs.memory_type.bits() as u64) << MEMORY_TYPE_SHIFT)
            | EntryFlags::SOFTWARE_MAPPED.bits();
        if attrs.ignore_pat {
            raw |= EntryFlags::IGNORE_PAT.bits();
        }
        if attrs.suppress_ve {
            raw |= EntryFlags::SUPPRESS_VE.bits();
        }
        if level > 1 {
            raw |= EntryFlags::LARGE_PAGE.bits();
        }
        Entry(raw)
    }

    /// The attributes of a leaf entry. A reserved memory type (never written
    /// by this crate) reads as uncacheable.
    #[inline]
    pub const fn attributes(self) -> Attributes {
        let flags = self.flags();
        Attributes {
            perms: self.perms(),
            memory_type: match self.memory_type() {
                Some(mt) => mt,
                None => MemoryType::Uncacheable,
            },
            ignore_pat: flags.contains(EntryFlags::IGNORE_PAT),
            suppress_ve: flags.contains(EntryFlags::SUPPRESS_VE),
        }
    }

    /// The same leaf with its rights replaced by `perms`.
    #[inline]
    pub(crate) const fn with_perms(self, perms: Perms) -> Self {
        Entry((self.0 & !PERM_MASK) | perms.bits())
    }
}

impl core::fmt::Debug for Entry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Entry({:#x})", self.0)
    }
}

/// How this crate reads one entry of its own tree at `level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// All zero: nothing mapped.
    Empty,
    /// A mapping (possibly with no rights, see `SOFTWARE_MAPPED`).
    Leaf(Entry),
    /// A reference to the next paging structure.
    Table(PhysFrame),
}

impl Slot {
    /// Classifies a raw entry of this crate's tree at `level` (1..=4).
    pub(crate) const fn of(raw: u64, level: u8) -> Slot {
        let e = Entry(raw);
        if raw == 0 {
            Slot::Empty
        } else if level == 1 || (level < 4 && e.flags().contains(EntryFlags::LARGE_PAGE)) {
            Slot::Leaf(e)
        } else {
            Slot::Table(PhysFrame::containing(raw & ADDR_MASK))
        }
    }
}

/// Child `i` of a leaf at `level` split into 512 leaves at `level - 1`:
/// the same attributes and A/D flags, the matching slice of the page.
#[inline]
pub(crate) const fn split_child(leaf: Entry, level: u8, i: usize) -> u64 {
    let child = level - 1;
    let mut raw = leaf.raw() & !ADDR_MASK;
    if child == 1 {
        raw &= !EntryFlags::LARGE_PAGE.bits();
    }
    raw | ((leaf.addr() + i as u64 * span(child)) & ADDR_MASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_round_trips() {
        for mt in MemoryType::ALL {
            for level in 1..=3 {
                let attrs = Attributes::new(Perms::RX | Perms::USER_EXECUTE, mt)
                    .with_ignore_pat(level == 2)
                    .with_suppress_ve(level == 3);
                let e = Entry::leaf(0x4000_0000, attrs, level);
                assert_eq!(e.attributes(), attrs);
                assert_eq!(e.addr(), 0x4000_0000);
                assert_eq!(e.flags().contains(EntryFlags::LARGE_PAGE), level > 1);
                assert_eq!(Slot::of(e.raw(), level), Slot::Leaf(e));
            }
        }
    }

    #[test]
    fn bit_positions_follow_the_sdm() {
        let e = Entry::leaf(0x20_0000, Attributes::RAM.with_ignore_pat(true), 2);
        // RWX = 0b111, WB = 6 << 3, IPAT = bit 6, large = bit 7, bit 11.
        assert_eq!(
            e.raw(),
            0x20_0000 | 0b111 | (6 << 3) | (1 << 6) | (1 << 7) | (1 << 11)
        );
        let sve = Entry::leaf(0, Attributes::RAM.with_suppress_ve(true), 1);
        assert_eq!(sve.raw() >> 63, 1);
        assert_eq!(MemoryType::from_bits(2), None);
        assert_eq!(MemoryType::from_bits(7), None);
        assert_eq!(MemoryType::WriteBack.bits(), 6);
    }

    #[test]
    fn no_access_leaf_is_not_empty() {
        let e = Entry::leaf(0, Attributes::new(Perms::NONE, MemoryType::Uncacheable), 1);
        assert_ne!(e.raw(), 0);
        assert_eq!(e.perms(), Perms::NONE);
        assert_eq!(Slot::of(e.raw(), 1), Slot::Leaf(e));
        assert_eq!(Slot::of(0, 1), Slot::Empty);
    }

    #[test]
    fn tables_and_splits() {
        let f = PhysFrame::new(0x7000).unwrap();
        let t = Entry::table(f);
        assert_eq!(Slot::of(t.raw(), 4), Slot::Table(f));
        assert_eq!(Slot::of(t.raw(), 2), Slot::Table(f));
        let big = Entry::from_raw(Entry::leaf(1 << 30, Attributes::RAM, 3).raw() | AD_MASK);
        let child = Entry::from_raw(split_child(big, 3, 5));
        assert_eq!(child.addr(), (1 << 30) + 5 * (2 << 20));
        assert_eq!(child.attributes(), Attributes::RAM);
        assert!(
            child
                .flags()
                .contains(EntryFlags::LARGE_PAGE | EntryFlags::DIRTY)
        );
        let small = Entry::from_raw(split_child(child, 2, 511));
        assert!(!small.flags().contains(EntryFlags::LARGE_PAGE));
        assert_eq!(small.addr(), child.addr() + 511 * 4096);
        assert_eq!(big.with_perms(Perms::R).perms(), Perms::R);
    }
}
