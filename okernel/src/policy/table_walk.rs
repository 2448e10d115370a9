//! Whose table a page-table entry belongs to, and at which level: the
//! search `UpdatePageTable` makes before it judges an entry (issue 13,
//! class 4).
//!
//! A table belongs to an address space when the guest's page tables reach
//! it from that address space's root (CR3) through *locked* page-table
//! pages only: tables the untrusted views map read-only, whose every
//! change went through the validated call. The search answers with the
//! table's level in 4-level paging (SDM Vol. 3A §4.5: 4 = PML4, 3 = PDPT,
//! 2 = PD, 1 = PT) — what the monitor needs to tell a link to a
//! lower-level table from a mapping of a page, which one entry alone does
//! not say.
//!
//! The search goes depth first, at most four levels deep, and reads at most
//! [`MAX_TABLES`] tables: a guest can link many entries to one table, and
//! an exit must not take unbounded time (invariant 11); a larger address
//! space is `TooLarge`.

use super::guest_paging::{ADDR_MASK, PAGE_SIZE, PRESENT};
use crate::memmap::Gpa;

/// The most tables one search reads.
pub const MAX_TABLES: usize = 64;

/// What the search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The table is at this level (4 = the root).
    Level(u8),
    /// The root does not reach the table through locked tables.
    NotReachable,
    /// The search read [`MAX_TABLES`] tables without finding it.
    TooLarge,
}

/// Finds the level of table `table` (a 4 KiB-aligned guest-physical
/// address) under root `root` (CR3's bits 51:12). `is_table(gpa)` says
/// whether a frame is a locked page-table page; `read(gpa)` reads one
/// entry (None: unreadable, taken as not present).
pub fn find(
    root: u64,
    table: Gpa,
    is_table: &dyn Fn(Gpa) -> bool,
    read: &dyn Fn(Gpa) -> Option<u64>,
) -> Found {
    let root = Gpa(root & ADDR_MASK);
    if !is_table(root) {
        return Found::NotReachable;
    }
    let mut budget = MAX_TABLES;
    match search(
        root,
        4,
        Gpa(table.0 & ADDR_MASK),
        is_table,
        read,
        &mut budget,
    ) {
        Some(level) => Found::Level(level),
        None if budget == 0 => Found::TooLarge,
        None => Found::NotReachable,
    }
}

fn search(
    at: Gpa,
    level: u8,
    table: Gpa,
    is_table: &dyn Fn(Gpa) -> bool,
    read: &dyn Fn(Gpa) -> Option<u64>,
    budget: &mut usize,
) -> Option<u8> {
    if at == table {
        return Some(level);
    }
    if level == 1 || *budget == 0 {
        return None;
    }
    *budget -= 1;
    for i in 0..512u64 {
        let Some(e) = read(at + 8 * i) else { continue };
        let next = Gpa(e & ADDR_MASK);
        if e & PRESENT == 0 || e & PAGE_SIZE != 0 || !is_table(next) {
            continue;
        }
        if let Some(l) = search(next, level - 1, table, is_table, read, budget) {
            return Some(l);
        }
        if *budget == 0 {
            return None;
        }
    }
    None
}

/// Whether an entry at `level` with value `e` is a link to a lower-level
/// table rather than a mapping of a page: every present entry of a PML4,
/// and a present PDPT or PD entry without PS (SDM Vol. 3A §4.5, Tables
/// 4-15 to 4-19; PS in a PML4 entry is reserved, so it counts as a link).
pub const fn is_link(level: u8, e: u64) -> bool {
    e & PRESENT != 0 && (level == 4 || (level > 1 && e & PAGE_SIZE == 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const T: u64 = PRESENT | 2;

    /// PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000; 0x5000 is a
    /// table nobody links; 0x9000 is plain RAM.
    fn tables() -> HashMap<u64, u64> {
        HashMap::from([
            (0x1000, 0x2000 | T),
            (0x2000 + 8 * 511, 0x3000 | T),
            (0x3000 + 8 * 3, 0x4000 | T),
            (0x3000, 0x20_0000 | T | PAGE_SIZE),
            (0x1000 + 8, 0x9000 | T),
        ])
    }

    fn run(root: u64, table: u64, mem: &HashMap<u64, u64>) -> Found {
        let is_table = |a: Gpa| (0x1000..0x6000).contains(&a.0);
        let read = |a: Gpa| Some(mem.get(&a.0).copied().unwrap_or(0));
        find(root, Gpa(table), &is_table, &read)
    }

    #[test]
    fn levels_are_found_through_locked_tables_only() {
        let m = tables();
        assert_eq!(run(0x1000, 0x1000, &m), Found::Level(4));
        assert_eq!(run(0x1000, 0x2000, &m), Found::Level(3));
        assert_eq!(run(0x1000, 0x3000, &m), Found::Level(2));
        assert_eq!(run(0x1000, 0x4000, &m), Found::Level(1));
        assert_eq!(run(0x1000, 0x5000, &m), Found::NotReachable);
        assert_eq!(run(0x1000, 0x9000, &m), Found::NotReachable, "not a table");
        assert_eq!(
            run(0x9000, 0x9000, &m),
            Found::NotReachable,
            "root not locked"
        );
        assert_eq!(run(0x2000, 0x4000, &m), Found::Level(2), "another root");
    }

    #[test]
    fn a_dag_of_shared_tables_is_bounded() {
        // Every PML4 entry links the PDPT, every PDPT entry the PD, every
        // PD entry the PT: 512^3 paths, MAX_TABLES reads.
        let mut m = HashMap::new();
        for i in 0..512u64 {
            m.insert(0x1000 + 8 * i, 0x2000 | T);
            m.insert(0x2000 + 8 * i, 0x3000 | T);
            m.insert(0x3000 + 8 * i, 0x4000 | T);
        }
        assert_eq!(run(0x1000, 0x5000, &m), Found::TooLarge);
        assert_eq!(run(0x1000, 0x4000, &m), Found::Level(1));
    }

    #[test]
    fn links_and_mappings() {
        assert!(is_link(4, 0x2000 | T));
        assert!(is_link(4, 0x2000 | T | PAGE_SIZE));
        assert!(is_link(3, 0x2000 | T));
        assert!(!is_link(3, 0x4000_0000 | T | PAGE_SIZE));
        assert!(is_link(2, 0x2000 | T));
        assert!(!is_link(1, 0x2000 | T));
        assert!(!is_link(4, 0x2000), "not present");
    }
}
