//! Addresses, frames, page sizes and the geometry of a 4-level EPT.
//!
//! A 4-level EPT translates 48-bit guest-physical addresses: bits 47:39 index
//! the PML4 table, 38:30 the PDPT, 29:21 the page directory and 20:12 the
//! page table (SDM Vol. 3C, 29.3.2 "EPT Translation Mechanism").

use core::fmt;

/// Size of a 4 KiB page and of every EPT paging structure.
pub const PAGE_SIZE: u64 = 4096;
/// Number of entries in one EPT paging structure.
pub const ENTRIES: usize = 512;
/// The guest-physical reach of a 4-level EPT: addresses below 2^48.
pub const GPA_LIMIT: u64 = 1 << 48;

/// A guest-physical address (the input of an EPT translation).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Gpa(pub u64);

/// A host-physical address (the output of an EPT translation).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hpa(pub u64);

/// Arithmetic and page geometry shared by [`Gpa`] and [`Hpa`], after
/// rust-osdev `x86_64`'s `PhysAddr`: adding a byte count gives an address
/// of the same kind (overflow as for `u64`), and the distance between two
/// addresses of one kind is a byte count.
macro_rules! address_ops {
    ($t:ident) => {
        impl $t {
            /// `self + bytes`, or `None` if that wraps around.
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(a) => Some($t(a)),
                    None => None,
                }
            }

            /// The start of the 4 KiB page that holds the address.
            pub const fn page_base(self) -> Self {
                $t(self.0 & !(PAGE_SIZE - 1))
            }

            /// The start of the next 4 KiB page (the end of the page that
            /// holds the address), or the top of the address space from
            /// its last page.
            pub const fn page_end(self) -> Self {
                $t((self.0 / PAGE_SIZE + 1).saturating_mul(PAGE_SIZE))
            }

            /// The address's offset in its 4 KiB page.
            pub const fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
            }
        }

        impl core::ops::Add<u64> for $t {
            type Output = $t;
            fn add(self, bytes: u64) -> $t {
                $t(self.0 + bytes)
            }
        }

        impl core::ops::AddAssign<u64> for $t {
            fn add_assign(&mut self, bytes: u64) {
                self.0 += bytes;
            }
        }

        impl core::ops::Sub for $t {
            type Output = u64;
            fn sub(self, base: $t) -> u64 {
                self.0 - base.0
            }
        }

        impl fmt::LowerHex for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address_ops!(Gpa);
address_ops!(Hpa);

impl fmt::Debug for Gpa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gpa({:#x})", self.0)
    }
}

impl fmt::Debug for Hpa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hpa({:#x})", self.0)
    }
}

/// A 4 KiB-aligned host-physical frame that holds one EPT paging structure.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysFrame(u64);

impl PhysFrame {
    /// The frame starting at `addr`, or `None` if `addr` is not 4 KiB aligned.
    pub const fn new(addr: u64) -> Option<Self> {
        if addr.is_multiple_of(PAGE_SIZE) {
            Some(PhysFrame(addr))
        } else {
            None
        }
    }

    /// The frame that contains `addr` (its low 12 bits dropped).
    pub const fn containing(addr: u64) -> Self {
        PhysFrame(addr & !(PAGE_SIZE - 1))
    }

    /// The frame's host-physical start address.
    pub const fn addr(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for PhysFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysFrame({:#x})", self.0)
    }
}

/// The size of a page mapped by one leaf entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB, mapped by an EPT PTE (SDM Table 29-6).
    Size4K,
    /// 2 MiB, mapped by an EPT PDE with bit 7 set (SDM Table 29-4).
    Size2M,
    /// 1 GiB, mapped by an EPT PDPTE with bit 7 set (SDM Table 29-2).
    Size1G,
}

impl PageSize {
    /// The page size in bytes.
    pub const fn bytes(self) -> u64 {
        span(self.level())
    }

    /// The level of the entry that maps a page of this size (1 = PTE,
    /// 2 = PDE, 3 = PDPTE).
    pub const fn level(self) -> u8 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }

    /// The page size of a leaf at `level`, if a leaf can exist there.
    pub const fn from_level(level: u8) -> Option<Self> {
        match level {
            1 => Some(PageSize::Size4K),
            2 => Some(PageSize::Size2M),
            3 => Some(PageSize::Size1G),
            _ => None,
        }
    }
}

/// Bytes of guest-physical space one entry at `level` (1..=4) covers.
#[inline]
pub(crate) const fn span(level: u8) -> u64 {
    1 << (12 + 9 * (level as u32 - 1))
}

/// The index of `gpa` in the paging structure at `level` (1..=4).
#[inline]
pub(crate) const fn index(gpa: u64, level: u8) -> usize {
    ((gpa >> (12 + 9 * (level as u32 - 1))) as usize) % ENTRIES
}

/// `true` if `value` is a multiple of 4 KiB.
pub(crate) const fn page_aligned(value: u64) -> bool {
    value.is_multiple_of(PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry() {
        assert_eq!(span(1), 4096);
        assert_eq!(span(2), 2 << 20);
        assert_eq!(span(3), 1 << 30);
        assert_eq!(span(4), 512 << 30);
        assert_eq!(PageSize::Size2M.bytes(), 2 << 20);
        let gpa = (3u64 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0x123;
        assert_eq!(
            [index(gpa, 4), index(gpa, 3), index(gpa, 2), index(gpa, 1)],
            [3, 5, 7, 9]
        );
        for size in [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G] {
            assert_eq!(PageSize::from_level(size.level()), Some(size));
        }
        assert_eq!(PageSize::from_level(4), None);
    }

    #[test]
    fn address_arithmetic_keeps_the_kind() {
        let a = Gpa(0x1ff8);
        assert_eq!(a + 8, Gpa(0x2000));
        assert_eq!(Gpa(0x2010) - a, 0x18);
        assert_eq!(a.page_base(), Gpa(0x1000));
        assert_eq!(a.page_offset(), 0xff8);
        assert_eq!(a.page_end(), Gpa(0x2000));
        assert_eq!(Gpa(0x2000).page_end(), Gpa(0x3000));
        assert_eq!(Gpa(u64::MAX).page_end(), Gpa(u64::MAX));
        assert_eq!(Hpa(u64::MAX).checked_add(1), None);
        assert_eq!(Hpa(1).checked_add(1), Some(Hpa(2)));
        assert_eq!(format!("{:#x}", Hpa(0x30)), "0x30");
    }

    #[test]
    fn frames_must_be_aligned() {
        assert_eq!(PhysFrame::new(0x5000).map(PhysFrame::addr), Some(0x5000));
        assert_eq!(PhysFrame::new(0x5008), None);
    }
}
