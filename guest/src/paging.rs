//! 4-level x86-64 page tables built in a fixed pool of page frames (SDM
//! Vol. 3A §4.5): the demo kernel's identity map and its tasks' user
//! mappings.
//!
//! The pool is one contiguous, page-aligned block of physical memory, so
//! the monitor can protect every page-table page as one `PageTable` region.
//! Tables are identity-mapped: a table's physical address is also the
//! address the kernel writes it through. On the host the pool is a plain
//! array given a made-up base address.
//!
//! Every entry is written with its Accessed bit (and leaves with Dirty)
//! already set: once the pool is read-only in an EPT view, a processor
//! page walk that had to set A/D would itself be an EPT write violation
//! (SDM Vol. 3C §29.3.3.2).

use core::fmt;

/// Present.
pub const PRESENT: u64 = 1 << 0;
/// Writable.
pub const WRITABLE: u64 = 1 << 1;
/// User-accessible.
pub const USER: u64 = 1 << 2;
/// Accessed (set in advance, see the module docs).
pub const ACCESSED: u64 = 1 << 5;
/// Dirty (set in advance on leaves).
pub const DIRTY: u64 = 1 << 6;
/// A 2 MiB page in a page-directory entry.
pub const HUGE: u64 = 1 << 7;
/// The physical-address bits of an entry.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// 4 KiB.
pub const PAGE_4K: u64 = 0x1000;
/// 2 MiB.
pub const PAGE_2M: u64 = 0x20_0000;

/// Why a mapping could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtError {
    /// The pool has no free page left.
    PoolExhausted,
    /// An address is not aligned to the page size.
    Unaligned(u64),
    /// A huge page already covers the address, or an entry is taken.
    Conflict(u64),
    /// A table address is not a page of this pool.
    NotInPool(u64),
}

impl fmt::Display for PtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PtError::PoolExhausted => write!(f, "page-table pool exhausted"),
            PtError::Unaligned(a) => write!(f, "address {a:#x} is not page-aligned"),
            PtError::Conflict(a) => write!(f, "address {a:#x} is already mapped"),
            PtError::NotInPool(a) => write!(f, "table {a:#x} is not in the pool"),
        }
    }
}

/// The size of a leaf mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB, in a page table.
    Size4K,
    /// 2 MiB, in a page directory.
    Size2M,
}

/// What a walk found for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The physical address the virtual address maps to.
    pub phys: u64,
    /// The leaf entry's flags (the non-address bits).
    pub flags: u64,
    /// The physical address of the leaf entry itself.
    pub entry: u64,
    /// The leaf's size.
    pub size: PageSize,
}

/// Page tables being built in a pool of frames.
pub struct Pool<'a> {
    tables: &'a mut [[u64; 512]],
    base: u64,
    used: usize,
}

/// The index of `va` at `level` (4 = PML4 ... 1 = page table).
pub const fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

impl<'a> Pool<'a> {
    /// A pool over `tables`, the first of which is at physical `base`.
    pub fn new(tables: &'a mut [[u64; 512]], base: u64) -> Self {
        Self {
            tables,
            base,
            used: 0,
        }
    }

    /// Pages handed out so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Takes a zeroed table from the pool; returns its physical address.
    pub fn alloc(&mut self) -> Result<u64, PtError> {
        let t = self
            .tables
            .get_mut(self.used)
            .ok_or(PtError::PoolExhausted)?;
        *t = [0; 512];
        self.used += 1;
        Ok(self.base + (self.used as u64 - 1) * PAGE_4K)
    }

    fn slot(&self, table: u64) -> Result<usize, PtError> {
        let i = table.wrapping_sub(self.base) / PAGE_4K;
        if !table.is_multiple_of(PAGE_4K) || table < self.base || i >= self.used as u64 {
            return Err(PtError::NotInPool(table));
        }
        Ok(i as usize)
    }

    /// Reads entry `i` of `table`.
    pub fn entry(&self, table: u64, i: usize) -> Result<u64, PtError> {
        Ok(self.tables[self.slot(table)?][i])
    }

    /// Writes entry `i` of `table`.
    pub fn set_entry(&mut self, table: u64, i: usize, value: u64) -> Result<(), PtError> {
        let s = self.slot(table)?;
        self.tables[s][i] = value;
        Ok(())
    }

    /// The physical address of entry `i` of `table`.
    pub fn entry_addr(table: u64, i: usize) -> u64 {
        table + 8 * i as u64
    }

    /// The next-level table under entry `i` of `table`, created (with
    /// `user` propagated) when absent.
    fn next(&mut self, table: u64, i: usize, user: bool, va: u64) -> Result<u64, PtError> {
        let e = self.entry(table, i)?;
        if e & PRESENT != 0 {
            if e & HUGE != 0 {
                return Err(PtError::Conflict(va));
            }
            if user && e & USER == 0 {
                self.set_entry(table, i, e | USER)?;
            }
            return Ok(e & ADDR_MASK);
        }
        let t = self.alloc()?;
        let u = if user { USER } else { 0 };
        self.set_entry(table, i, t | PRESENT | WRITABLE | ACCESSED | u)?;
        Ok(t)
    }

    /// Maps `va` to `pa` (one page of `size`) under the PML4 at `root`,
    /// with `flags` (PRESENT, ACCESSED, DIRTY and HUGE are added).
    pub fn map(
        &mut self,
        root: u64,
        va: u64,
        pa: u64,
        size: PageSize,
        flags: u64,
    ) -> Result<(), PtError> {
        let align = match size {
            PageSize::Size4K => PAGE_4K,
            PageSize::Size2M => PAGE_2M,
        };
        if !va.is_multiple_of(align) {
            return Err(PtError::Unaligned(va));
        }
        if !pa.is_multiple_of(align) {
            return Err(PtError::Unaligned(pa));
        }
        let user = flags & USER != 0;
        let pdpt = self.next(root, index(va, 4), user, va)?;
        let pd = self.next(pdpt, index(va, 3), user, va)?;
        let (table, i, huge) = match size {
            PageSize::Size2M => (pd, index(va, 2), HUGE),
            PageSize::Size4K => (self.next(pd, index(va, 2), user, va)?, index(va, 1), 0),
        };
        if self.entry(table, i)? & PRESENT != 0 {
            return Err(PtError::Conflict(va));
        }
        self.set_entry(table, i, pa | flags | huge | PRESENT | ACCESSED | DIRTY)
    }

    /// Makes entry `i` of `root` point at the same table as entry `i` of
    /// `from` (shares a whole PML4 slot, as every task shares the kernel).
    pub fn share(&mut self, root: u64, from: u64, i: usize) -> Result<(), PtError> {
        let e = self.entry(from, i)?;
        self.set_entry(root, i, e)
    }

    /// Walks `va` under `root`.
    pub fn walk(&self, root: u64, va: u64) -> Option<Translation> {
        let mut table = root;
        for level in (1..=4).rev() {
            let i = index(va, level);
            let e = self.entry(table, i).ok()?;
            if e & PRESENT == 0 {
                return None;
            }
            if level == 1 || (level == 2 && e & HUGE != 0) {
                let (size, mask) = if level == 1 {
                    (PageSize::Size4K, PAGE_4K - 1)
                } else {
                    (PageSize::Size2M, PAGE_2M - 1)
                };
                return Some(Translation {
                    phys: (e & ADDR_MASK & !mask) | (va & mask),
                    flags: e & !ADDR_MASK,
                    entry: Self::entry_addr(table, i),
                    size,
                });
            }
            table = e & ADDR_MASK;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x40_0000;

    #[test]
    fn maps_and_walks_both_sizes() {
        let mut tables = vec![[0u64; 512]; 8];
        let mut pool = Pool::new(&mut tables, BASE);
        let root = pool.alloc().unwrap();
        pool.map(root, 0x20_0000, 0x60_0000, PageSize::Size2M, WRITABLE)
            .unwrap();
        pool.map(root, 0x80_0000_1000, 0x7000, PageSize::Size4K, USER)
            .unwrap();
        let t = pool.walk(root, 0x20_1234).unwrap();
        assert_eq!((t.phys, t.size), (0x60_1234, PageSize::Size2M));
        assert_eq!(t.flags, PRESENT | WRITABLE | ACCESSED | DIRTY | HUGE);
        let u = pool.walk(root, 0x80_0000_1008).unwrap();
        assert_eq!((u.phys, u.size), (0x7008, PageSize::Size4K));
        assert_eq!(u.flags, PRESENT | USER | ACCESSED | DIRTY);
        // The user leaf's parents carry USER; the kernel's do not.
        let pml4_user = pool.entry(root, 1).unwrap();
        let pml4_kernel = pool.entry(root, 0).unwrap();
        assert_ne!(pml4_user & USER, 0);
        assert_eq!(pml4_kernel & USER, 0);
        assert_ne!(pml4_kernel & ACCESSED, 0);
        assert_eq!(pool.walk(root, 0x40_0000), None);
        assert_eq!(pool.used(), 6);
    }

    #[test]
    fn refuses_unaligned_conflicts_foreign_tables_and_exhaustion() {
        let mut tables = vec![[0u64; 512]; 4];
        let mut pool = Pool::new(&mut tables, BASE);
        let root = pool.alloc().unwrap();
        assert_eq!(
            pool.map(root, 0x1000, 0, PageSize::Size2M, 0),
            Err(PtError::Unaligned(0x1000))
        );
        assert_eq!(
            pool.map(root, 0, 0x1001, PageSize::Size4K, 0),
            Err(PtError::Unaligned(0x1001))
        );
        pool.map(root, 0, 0, PageSize::Size2M, 0).unwrap();
        assert_eq!(
            pool.map(root, 0, 0, PageSize::Size2M, 0),
            Err(PtError::Conflict(0))
        );
        // A 4 KiB page under a 2 MiB one.
        assert_eq!(
            pool.map(root, 0x1000, 0, PageSize::Size4K, 0),
            Err(PtError::Conflict(0x1000))
        );
        assert_eq!(
            pool.entry(BASE + 0x8000, 0),
            Err(PtError::NotInPool(BASE + 0x8000))
        );
        assert_eq!(pool.entry(BASE + 8, 0), Err(PtError::NotInPool(BASE + 8)));
        // Root, PDPT, PD used; one left: a 4 KiB page elsewhere needs two.
        assert_eq!(
            pool.map(root, 0x80_0000_0000, 0, PageSize::Size4K, 0),
            Err(PtError::PoolExhausted)
        );
        assert_eq!(
            PtError::PoolExhausted.to_string(),
            "page-table pool exhausted"
        );
    }

    #[test]
    fn indices_follow_the_sdm_split() {
        let va = 0x0000_7f80_4020_3000;
        assert_eq!(index(va, 4), 0xff);
        assert_eq!(index(va, 3), 0x1);
        assert_eq!(index(va, 2), 0x1);
        assert_eq!(index(va, 1), 0x3);
    }
}
