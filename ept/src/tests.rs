//! Unit tests of a view's internals (the public API is tested in tests/).

use crate::pool::Pool;
use crate::*;
use frames::{Reservation, TablePtr};

const G: u64 = 1 << 30;

fn caps() -> EptCaps {
    EptCaps::new(EptFeatures::all(), 46).unwrap()
}

#[test]
fn identity_maps_of_512_gib_and_1_tib_take_two_and_three_tables() {
    let pool = Pool::new();
    let mut view = View::new(pool.clone(), caps()).unwrap();
    // One PDPT covers 512 GiB, so this is the floor for 4-level EPT.
    view.identity_map(Gpa(0), 512 * G, Attributes::RAM).unwrap();
    assert_eq!(
        view.usage(),
        TableUsage {
            pml4: 1,
            pdpt: 1,
            pd: 0,
            pt: 0
        }
    );
    view.identity_map(Gpa(512 * G), 512 * G, Attributes::RAM)
        .unwrap();
    assert_eq!(
        view.usage(),
        TableUsage {
            pml4: 1,
            pdpt: 2,
            pd: 0,
            pt: 0
        }
    );
    assert_eq!(pool.live(), 3);
    assert_eq!(view.mappings().count(), 1024);
    assert!(view.mappings().all(|m| m.size == PageSize::Size1G));
}

#[test]
fn a_protected_page_in_a_1g_page_costs_two_tables_until_restored() {
    let pool = Pool::new();
    let mut view = View::new(pool.clone(), caps()).unwrap();
    view.identity_map(Gpa(0), 4 * G, Attributes::RAM).unwrap();
    let before = pool.allocations();
    view.protect(Gpa(G + 0x5000), 4096, Perms::R).unwrap();
    assert_eq!(pool.allocations() - before, 2);
    assert_eq!(
        view.usage(),
        TableUsage {
            pml4: 1,
            pdpt: 1,
            pd: 1,
            pt: 1
        }
    );
    view.protect(Gpa(G + 0x5000), 4096, Perms::RWX).unwrap();
    assert_eq!(view.usage().total(), 2);
    assert_eq!(pool.live(), 2);
    assert_eq!(view.mappings().count(), 4);
}

/// Sets accessed/dirty bits on the leaf that maps `gpa`, as the CPU would.
fn touch(view: &View<Pool>, gpa: u64, bits: EntryFlags) {
    let mut table = view.table(view.root());
    for level in [4u8, 3, 2, 1] {
        let i = addr::index(gpa, level);
        let raw = table.load(i);
        match entry::Slot::of(raw, level) {
            entry::Slot::Table(next) => table = view.table(next),
            entry::Slot::Leaf(_) => return table.store(i, raw | bits.bits()),
            entry::Slot::Empty => panic!("{gpa:#x} is not mapped"),
        }
    }
}

#[test]
fn splits_keep_and_merges_combine_accessed_dirty() {
    let mut view = View::new(Pool::new(), caps()).unwrap();
    view.identity_map(Gpa(0), G, Attributes::RAM).unwrap();
    touch(&view, 0, EntryFlags::ACCESSED | EntryFlags::DIRTY);
    view.protect(Gpa(0x20_3000), 4096, Perms::R).unwrap();
    // Every piece of the split page keeps the flags.
    assert!(view.mappings().all(|m| m.accessed && m.dirty));
    view.protect(Gpa(0x20_3000), 4096, Perms::RWX).unwrap();
    let m: Vec<_> = view.mappings().collect();
    assert_eq!(
        (m.len(), m[0].size, m[0].accessed, m[0].dirty),
        (1, PageSize::Size1G, true, true)
    );

    // Flags on one 4 KiB page survive a merge as flags of the large page.
    view.unmap(Gpa(0), G).unwrap();
    view.identity_map(Gpa(0), 0x20_0000, Attributes::RAM.with_ignore_pat(true))
        .unwrap();
    view.identity_map(Gpa(0x1000), 4096, Attributes::RAM)
        .unwrap();
    touch(&view, 0x7000, EntryFlags::DIRTY);
    view.identity_map(Gpa(0x1000), 4096, Attributes::RAM.with_ignore_pat(true))
        .unwrap();
    let m: Vec<_> = view.mappings().collect();
    assert_eq!(
        (m.len(), m[0].size, m[0].accessed, m[0].dirty),
        (1, PageSize::Size2M, false, true)
    );
}

#[test]
fn reservations_chain_through_their_frames_and_go_back() {
    let mut pool = Pool::new();
    let mut r = Reservation::reserve(&mut pool, &caps(), 5).unwrap();
    assert_eq!((r.len(), pool.live()), (5, 5));
    let a = r.take(&pool).unwrap();
    let b = r.take(&pool).unwrap();
    assert_ne!(a, b);
    // Taken frames come back zeroed (the link word is cleared).
    for f in [a, b] {
        let t = TablePtr::of(&pool, f);
        assert!((0..ENTRIES).all(|i| t.load(i) == 0));
    }
    assert_eq!(r.len(), 3);
    r.release(&mut pool);
    assert_eq!(pool.live(), 2);

    pool.set_budget(Some(3));
    assert!(matches!(
        Reservation::reserve(&mut pool, &caps(), 4),
        Err(Error::OutOfFrames)
    ));
    assert_eq!(pool.live(), 2);
}

#[test]
fn frames_beyond_maxphyaddr_are_refused() {
    // The test pool's frames start at 2^36, all beyond a 36-bit MAXPHYADDR.
    let pool = Pool::new();
    let narrow = EptCaps::new(EptFeatures::all(), 36).unwrap();
    assert!(matches!(
        View::new(pool.clone(), narrow),
        Err(Error::FrameOutOfRange { .. })
    ));
    assert_eq!(pool.live(), 0);
}

#[test]
fn no_change_needs_no_frames() {
    let pool = Pool::new();
    let mut view = View::new(pool.clone(), caps()).unwrap();
    view.identity_map(Gpa(0), 2 * G, Attributes::RAM).unwrap();
    pool.set_budget(Some(0));
    // Already so: no split, no allocation, success.
    view.protect(Gpa(0x1000), 4096, Perms::RWX).unwrap();
    view.identity_map(Gpa(G + 0x3000), 0x5000, Attributes::RAM)
        .unwrap();
    view.unmap(Gpa(4 * G), 4096).unwrap();
    // Unmapping a whole 1 GiB page or protecting it whole needs no table.
    view.protect(Gpa(G), G, Perms::R).unwrap();
    view.unmap(Gpa(0), G).unwrap();
    assert_eq!(view.usage().total(), 2);
    // A split does.
    assert_eq!(
        view.protect(Gpa(G), 4096, Perms::RW),
        Err(Error::OutOfFrames)
    );
}
