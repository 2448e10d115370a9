//! The demo kernel's address spaces: one kernel space and one per task.
//!
//! | PML4 slot | virtual range                 | what                                     |
//! |-----------|-------------------------------|------------------------------------------|
//! | 0         | `0 .. ram_top`                | identity map of guest RAM, 2 MiB pages, supervisor |
//! | 0         | [`ALIAS_BASE`], 2 MiB         | the alias window: one page table of 4 KiB slots, empty |
//! | 1         | [`USER_BASE`] ..              | the task's user pages (per task)         |
//!
//! Every task's PML4 shares slot 0 with the kernel's, so the kernel runs
//! unchanged on any task's CR3. The kernel identity map is read-write-
//! execute: the attacker of DESIGN.md §2 can edit the kernel's own page
//! tables anyway, so the guest's paging is not what stops it — okernel's
//! EPT views are.

use crate::paging::{PageSize, Pool, PtError, USER, WRITABLE};

/// The first user address (PML4 slot 1).
pub const USER_BASE: u64 = 0x0000_0080_0000_0000;
/// The task's code page (user, read-only).
pub const USER_CODE: u64 = USER_BASE;
/// The task's data page (user, writable).
pub const USER_DATA: u64 = USER_BASE + 0x1000;
/// The task's stack page (user, writable).
pub const USER_STACK: u64 = USER_BASE + 0x2000;
/// The initial user stack pointer (the top of [`USER_STACK`]).
pub const USER_STACK_TOP: u64 = USER_STACK + 0x1000;
/// The task's protected page (user, writable; only its own context's
/// view maps the frame when protection is on).
pub const USER_SECRET: u64 = USER_BASE + 0x4000;

/// The alias window: slot 511 of the kernel's first PDPT (511 GiB).
pub const ALIAS_BASE: u64 = 0x0000_007f_c000_0000;
/// Number of 4 KiB slots in the alias window.
pub const ALIAS_SLOTS: usize = 512;
/// The highest RAM address the identity map can cover.
pub const MAX_RAM_TOP: u64 = ALIAS_BASE;

/// The virtual address of alias slot `slot`.
pub const fn alias_va(slot: usize) -> u64 {
    ALIAS_BASE + (slot as u64) * 0x1000
}

/// The physical frames of one task's user pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskFrames {
    /// The code page.
    pub code: u64,
    /// The data page.
    pub data: u64,
    /// The stack page.
    pub stack: u64,
    /// The protected page.
    pub secret: u64,
}

/// The address spaces as built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spaces<const N: usize> {
    /// The kernel's PML4 (identity map and alias window only).
    pub kernel_root: u64,
    /// Each task's PML4.
    pub task_roots: [u64; N],
    /// The alias window's page table.
    pub alias_pt: u64,
    /// The alias window's page directory (slot 0 links the page table;
    /// the rest are empty).
    pub alias_pd: u64,
}

impl<const N: usize> Spaces<N> {
    /// The physical address of the page-table entry of alias slot `slot`.
    pub fn alias_entry(&self, slot: usize) -> u64 {
        Pool::entry_addr(self.alias_pt, slot)
    }
}

/// Builds the kernel space (identity map of `0..ram_top`, rounded up to
/// 2 MiB) and one space per task in `pool`.
pub fn build<const N: usize>(
    pool: &mut Pool<'_>,
    ram_top: u64,
    tasks: &[TaskFrames; N],
) -> Result<Spaces<N>, PtError> {
    if ram_top > MAX_RAM_TOP {
        return Err(PtError::Conflict(ram_top));
    }
    let kernel_root = pool.alloc()?;
    let top = ram_top.next_multiple_of(crate::paging::PAGE_2M);
    for pa in (0..top).step_by(crate::paging::PAGE_2M as usize) {
        pool.map(kernel_root, pa, pa, PageSize::Size2M, WRITABLE)?;
    }
    // The alias window: an empty page table under its own directory.
    let link = crate::paging::PRESENT | WRITABLE | crate::paging::ACCESSED;
    let pdpt = pool.entry(kernel_root, 0)? & crate::paging::ADDR_MASK;
    let alias_pd = pool.alloc()?;
    let alias_pt = pool.alloc()?;
    pool.set_entry(pdpt, crate::paging::index(ALIAS_BASE, 3), alias_pd | link)?;
    pool.set_entry(
        alias_pd,
        crate::paging::index(ALIAS_BASE, 2),
        alias_pt | link,
    )?;
    let mut task_roots = [0; N];
    for (root, t) in task_roots.iter_mut().zip(tasks) {
        *root = pool.alloc()?;
        pool.share(*root, kernel_root, 0)?;
        let pages = [
            (USER_CODE, t.code, USER),
            (USER_DATA, t.data, USER | WRITABLE),
            (USER_STACK, t.stack, USER | WRITABLE),
            (USER_SECRET, t.secret, USER | WRITABLE),
        ];
        for (va, pa, flags) in pages {
            pool.map(*root, va, pa, PageSize::Size4K, flags)?;
        }
    }
    Ok(Spaces {
        kernel_root,
        task_roots,
        alias_pt,
        alias_pd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paging::{ACCESSED, DIRTY, PRESENT};

    const BASE: u64 = 0x0100_0000;

    fn frames(i: u64) -> TaskFrames {
        TaskFrames {
            code: 0x0200_0000 + i * 0x10000,
            data: 0x0200_1000 + i * 0x10000,
            stack: 0x0200_2000 + i * 0x10000,
            secret: 0x0200_3000 + i * 0x10000,
        }
    }

    #[test]
    fn kernel_identity_map_user_pages_and_alias_window() {
        let mut tables = vec![[0u64; 512]; 24];
        let mut pool = Pool::new(&mut tables, BASE);
        let s = build(&mut pool, 256 << 20, &[frames(0), frames(1)]).unwrap();
        // Identity map, supervisor, writable, A/D preset.
        let t = pool.walk(s.kernel_root, 0x0123_4567).unwrap();
        assert_eq!(t.phys, 0x0123_4567);
        assert_eq!(t.size, PageSize::Size2M);
        assert_eq!(
            t.flags & (USER | WRITABLE | ACCESSED | DIRTY),
            WRITABLE | ACCESSED | DIRTY
        );
        assert_eq!(pool.walk(s.kernel_root, 256 << 20), None);
        // No user pages in the kernel space; each task sees its own.
        assert_eq!(pool.walk(s.kernel_root, USER_DATA), None);
        for (i, &root) in s.task_roots.iter().enumerate() {
            let f = frames(i as u64);
            let d = pool.walk(root, USER_DATA + 8).unwrap();
            assert_eq!(d.phys, f.data + 8);
            assert_eq!(d.flags & (USER | WRITABLE), USER | WRITABLE);
            let c = pool.walk(root, USER_CODE).unwrap();
            assert_eq!((c.phys, c.flags & (USER | WRITABLE)), (f.code, USER));
            assert_eq!(pool.walk(root, USER_SECRET).unwrap().phys, f.secret);
            // The kernel is shared.
            assert_eq!(pool.walk(root, 0x0100_0000).unwrap().phys, 0x0100_0000);
        }
        // The alias window is empty, and its entries are in the alias PT.
        assert_eq!(pool.walk(s.kernel_root, alias_va(3)), None);
        assert_eq!(s.alias_entry(3), s.alias_pt + 24);
        pool.set_entry(s.alias_pt, 3, 0x0200_3000 | PRESENT | WRITABLE)
            .unwrap();
        let a = pool.walk(s.task_roots[1], alias_va(3) + 16).unwrap();
        assert_eq!((a.phys, a.entry), (0x0200_3010, s.alias_entry(3)));
        // Every table is inside the pool.
        assert!(pool.used() <= 24);
        for root in [s.kernel_root, s.alias_pt, s.task_roots[0]] {
            assert!(root >= BASE && root < BASE + pool.used() as u64 * 0x1000);
        }
    }

    #[test]
    fn refuses_ram_over_the_alias_window_and_a_small_pool() {
        let mut tables = vec![[0u64; 512]; 24];
        let mut pool = Pool::new(&mut tables, BASE);
        assert!(build(&mut pool, MAX_RAM_TOP + 1, &[frames(0)]).is_err());
        let mut few = vec![[0u64; 512]; 3];
        let mut pool = Pool::new(&mut few, BASE);
        assert_eq!(
            build(&mut pool, 8 << 20, &[frames(0)]),
            Err(PtError::PoolExhausted)
        );
    }
}
