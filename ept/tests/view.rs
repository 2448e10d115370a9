//! Scenario tests of the public `View` API.

mod common;

use common::pool::Pool;
use ept::{
    Attributes, EptCaps, EptFeatures, Error, Gpa, Hpa, Mapping, MemoryType, PageSize, Perms,
    TableUsage, View,
};

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const G: u64 = 1 << 30;

fn caps() -> EptCaps {
    EptCaps::new(EptFeatures::all(), 46).unwrap()
}

fn view_with(caps: EptCaps) -> (View<Pool>, Pool) {
    let pool = Pool::new();
    (View::new(pool.clone(), caps).unwrap(), pool)
}

fn leaves(view: &View<Pool>) -> Vec<Mapping> {
    view.mappings().collect()
}

fn sizes(view: &View<Pool>) -> Vec<(u64, PageSize)> {
    view.mappings().map(|m| (m.gpa.0, m.size)).collect()
}

#[test]
fn bad_arguments_are_typed_errors_and_change_nothing() {
    let narrow = caps().without(EptFeatures::EXECUTE_ONLY | EptFeatures::MODE_BASED_EXECUTE);
    let (mut view, pool) = view_with(narrow);
    view.identity_map(Gpa(0), 2 * G, Attributes::RAM).unwrap();
    let before = (leaves(&view), pool.allocations(), view.usage());
    let ram = Attributes::RAM;
    let top = 1u64 << 48;
    let cases: Vec<(Result<(), Error>, Error)> = vec![
        (
            view.map(Gpa(0x1001), Hpa(0), K4, ram),
            Error::UnalignedAddress { addr: 0x1001 },
        ),
        (
            view.map(Gpa(0), Hpa(0x10), K4, ram),
            Error::UnalignedAddress { addr: 0x10 },
        ),
        (
            view.map(Gpa(0), Hpa(0), 0x1800, ram),
            Error::UnalignedLength { len: 0x1800 },
        ),
        (view.map(Gpa(0), Hpa(0), 0, ram), Error::EmptyRange),
        (
            view.unmap(Gpa(u64::MAX - 0xfff), 2 * K4),
            Error::Overflow {
                start: u64::MAX - 0xfff,
                len: 2 * K4,
            },
        ),
        (
            view.protect(Gpa(top - K4), 2 * K4, Perms::R),
            Error::GpaOutOfRange { end: top + K4 },
        ),
        (
            view.map(Gpa(0), Hpa((1 << 46) - K4), 2 * K4, ram),
            Error::HpaOutOfRange {
                end: (1 << 46) + K4,
                bits: 46,
            },
        ),
        (
            view.map(Gpa(0), Hpa(u64::MAX - 0xfff), 2 * K4, ram),
            Error::Overflow {
                start: u64::MAX - 0xfff,
                len: 2 * K4,
            },
        ),
        (
            view.protect(Gpa(0), K4, Perms::WRITE),
            Error::WriteWithoutRead,
        ),
        (
            view.protect(Gpa(0), K4, Perms::WRITE | Perms::EXECUTE),
            Error::WriteWithoutRead,
        ),
        (
            view.protect(Gpa(0), K4, Perms::EXECUTE),
            Error::ExecuteOnlyUnsupported,
        ),
        (
            view.protect(Gpa(0), K4, Perms::RWX | Perms::USER_EXECUTE),
            Error::UserExecuteUnsupported,
        ),
        (view.unmap(Gpa(0), 0), Error::EmptyRange),
        (
            view.protect(Gpa(0x800), K4, Perms::R),
            Error::UnalignedAddress { addr: 0x800 },
        ),
    ];
    for (n, (got, want)) in cases.into_iter().enumerate() {
        assert_eq!(got, Err(want), "case {n}");
    }
    assert_eq!(
        view.translate(Gpa(top)),
        Err(Error::GpaOutOfRange { end: top })
    );
    assert!(view.walk(Gpa(u64::MAX)).is_err());
    assert_eq!(before, (leaves(&view), pool.allocations(), view.usage()));
}

#[test]
fn page_sizes_follow_alignment_and_caps() {
    let len = G + M2 + K4;
    let (mut all, _) = view_with(caps());
    all.identity_map(Gpa(0), len, Attributes::RAM).unwrap();
    assert_eq!(
        sizes(&all),
        [
            (0, PageSize::Size1G),
            (G, PageSize::Size2M),
            (G + M2, PageSize::Size4K)
        ]
    );
    assert_eq!(
        all.usage(),
        TableUsage {
            pml4: 1,
            pdpt: 1,
            pd: 1,
            pt: 1
        }
    );

    let (mut no_1g, _) = view_with(caps().without(EptFeatures::PAGES_1G));
    no_1g.identity_map(Gpa(0), len, Attributes::RAM).unwrap();
    assert_eq!(no_1g.mappings().count(), 512 + 1 + 1);
    assert_eq!(
        no_1g.usage(),
        TableUsage {
            pml4: 1,
            pdpt: 1,
            pd: 2,
            pt: 1
        }
    );

    let (mut small, _) = view_with(caps().without(EptFeatures::PAGES_1G | EptFeatures::PAGES_2M));
    small.identity_map(Gpa(0), 4 * M2, Attributes::RAM).unwrap();
    assert!(small.mappings().all(|m| m.size == PageSize::Size4K));
    assert_eq!(
        small.usage(),
        TableUsage {
            pml4: 1,
            pdpt: 1,
            pd: 1,
            pt: 4
        }
    );

    // An unaligned start gets small pages only until the next boundary.
    let (mut v, _) = view_with(caps());
    v.identity_map(Gpa(M2 - K4), M2 + K4, Attributes::RAM)
        .unwrap();
    assert_eq!(
        sizes(&v),
        [(M2 - K4, PageSize::Size4K), (M2, PageSize::Size2M)]
    );
}

#[test]
fn host_addresses_decide_too() {
    let (mut v, _) = view_with(caps());
    // GPA 2M-aligned but HPA only 4K-aligned: 4 KiB pages throughout.
    v.map(Gpa(0), Hpa(0x1000), 2 * M2, Attributes::RAM).unwrap();
    assert_eq!(v.mappings().count(), 1024);
    assert_eq!(v.usage().pt, 2);
    let t = v.translate(Gpa(M2 + 0x345)).unwrap().unwrap();
    assert_eq!(t.hpa, Hpa(0x1000 + M2 + 0x345));
    // Both 2M-aligned: one 2M page each; a 1G-aligned pair: a 1G page.
    v.map(Gpa(0), Hpa(8 * M2), 2 * M2, Attributes::RAM).unwrap();
    assert_eq!(sizes(&v), [(0, PageSize::Size2M), (M2, PageSize::Size2M)]);
    v.map(Gpa(G), Hpa(5 * G), G, Attributes::RAM).unwrap();
    assert_eq!(
        v.translate(Gpa(G + 7)).unwrap().unwrap().page.size,
        PageSize::Size1G
    );
    assert_eq!(v.usage().total(), 3);
}

#[test]
fn unmapping_frees_tables_down_to_the_root() {
    let (mut v, pool) = view_with(caps());
    v.identity_map(Gpa(511 * G), 2 * G, Attributes::RAM)
        .unwrap();
    assert_eq!(v.usage().pdpt, 2);
    v.unmap(Gpa(511 * G + M2 + K4), K4).unwrap();
    assert_eq!(
        v.usage(),
        TableUsage {
            pml4: 1,
            pdpt: 2,
            pd: 1,
            pt: 1
        }
    );
    assert_eq!(v.translate(Gpa(511 * G + M2 + K4)), Ok(None));
    v.unmap(Gpa(511 * G), G).unwrap();
    assert_eq!(
        v.usage(),
        TableUsage {
            pml4: 1,
            pdpt: 1,
            pd: 0,
            pt: 0
        }
    );
    v.unmap(Gpa(0), 1 << 47).unwrap();
    assert_eq!(
        (v.usage().total(), pool.live(), v.mappings().count()),
        (1, 1, 0)
    );
}

#[test]
fn no_access_keeps_the_mapping_and_restoring_merges() {
    let (mut v, pool) = view_with(caps());
    v.map(Gpa(0), Hpa(4 * G), G, Attributes::RAM.with_ignore_pat(true))
        .unwrap();
    v.protect(Gpa(0x3000), K4, Perms::NONE).unwrap();
    let t = v.translate(Gpa(0x3000)).unwrap().unwrap();
    assert_eq!(
        (t.hpa, t.page.attrs.perms),
        (Hpa(4 * G + 0x3000), Perms::NONE)
    );
    assert!(t.page.attrs.ignore_pat);
    assert_eq!(pool.live(), 4);
    // Protecting holes changes nothing; protecting it all merges 1G again.
    v.protect(Gpa(8 * G), G, Perms::R).unwrap();
    v.protect(Gpa(0), G, Perms::RX).unwrap();
    assert_eq!(sizes(&v), [(0, PageSize::Size1G)]);
    assert_eq!(
        v.translate(Gpa(0x3000)).unwrap().unwrap().page.attrs.perms,
        Perms::RX
    );
    assert_eq!(pool.live(), 2);
}

#[test]
fn mapping_over_a_mapping_replaces_it() {
    let (mut v, _) = view_with(caps());
    v.identity_map(Gpa(0), G, Attributes::RAM).unwrap();
    let uc = Attributes::new(Perms::RW, MemoryType::Uncacheable);
    v.map(Gpa(M2), Hpa(64 * G), K4, uc).unwrap();
    let t = v.translate(Gpa(M2)).unwrap().unwrap();
    assert_eq!((t.hpa, t.page.attrs), (Hpa(64 * G), uc));
    assert_eq!(
        v.translate(Gpa(M2 + K4)).unwrap().unwrap().hpa,
        Hpa(M2 + K4)
    );
    v.identity_map(Gpa(M2), K4, Attributes::RAM).unwrap();
    assert_eq!(v.usage().total(), 2);
}

#[test]
fn clones_are_independent() {
    let (mut a, pool) = view_with(caps());
    a.identity_map(Gpa(0), 4 * G, Attributes::RAM).unwrap();
    a.protect(Gpa(0x5000), K4, Perms::R).unwrap();
    let mut b = a.try_clone().unwrap();
    assert_eq!(leaves(&a), leaves(&b));
    assert_eq!(pool.live(), 2 * a.usage().total());
    assert_ne!(a.root(), b.root());
    b.protect(Gpa(0x5000), K4, Perms::RWX).unwrap();
    b.unmap(Gpa(G), G).unwrap();
    assert_eq!(
        a.translate(Gpa(0x5000)).unwrap().unwrap().page.attrs.perms,
        Perms::R
    );
    assert!(a.translate(Gpa(G)).unwrap().is_some());
    assert!(b.translate(Gpa(G)).unwrap().is_none());
    // Into another allocator.
    let other = Pool::new();
    let c = a.try_clone_in(other.clone()).unwrap();
    assert_eq!(leaves(&a), leaves(&c));
    assert_eq!(other.live(), a.usage().total());
    drop((a, b));
    assert_eq!(pool.live(), 0);
    drop(c);
    assert_eq!(other.live(), 0);
}

#[test]
fn walks_show_every_entry_and_are_never_misconfigured() {
    let (mut v, _) = view_with(caps());
    v.identity_map(Gpa(0), G, Attributes::RAM).unwrap();
    v.protect(Gpa(0x7000), K4, Perms::EXECUTE | Perms::USER_EXECUTE)
        .unwrap();
    let path = v.walk(Gpa(0x7abc)).unwrap();
    let levels: Vec<u8> = path.iter().map(|(l, _)| l).collect();
    assert_eq!(levels, [4, 3, 2, 1]);
    assert_eq!(path.last().1.perms(), Perms::EXECUTE | Perms::USER_EXECUTE);
    assert_eq!(path.misconfiguration(&v.caps(), true), None);
    let shallow = v.walk(Gpa(5 * G)).unwrap();
    assert_eq!(shallow.iter().count(), 2); // PML4E, then an empty PDPTE
    assert_eq!(v.walk(Gpa(M2 * 3)).unwrap().iter().count(), 3); // ends at a 2M leaf
}

#[test]
fn eptp_names_the_root() {
    let (v, _) = view_with(caps());
    let eptp = v.eptp(MemoryType::WriteBack, true).unwrap();
    assert_eq!(eptp.root(), v.root());
    assert_eq!(eptp.raw() & 0xfff, 6 | (3 << 3) | (1 << 6));
    let (v, _) = view_with(caps().without(EptFeatures::ACCESSED_DIRTY));
    assert_eq!(
        v.eptp(MemoryType::WriteBack, true),
        Err(Error::AccessedDirtyUnsupported)
    );
}

#[test]
fn without_2m_pages_a_split_1g_page_uses_page_tables_and_merges_back() {
    // Found by the fuzzer: 1 GiB pages but no 2 MiB pages. A split must
    // not leave 2 MiB leaves behind, and a PD of uniform PTs must still
    // merge into one 1 GiB page.
    let (mut v, pool) = view_with(caps().without(EptFeatures::PAGES_2M));
    v.identity_map(Gpa(0), G, Attributes::RAM).unwrap();
    v.protect(Gpa(3 * M2 + K4), K4, Perms::R).unwrap();
    assert_eq!(
        v.usage(),
        TableUsage {
            pml4: 1,
            pdpt: 1,
            pd: 1,
            pt: 512
        }
    );
    assert!(v.mappings().all(|m| m.size == PageSize::Size4K));
    v.protect(Gpa(0), G, Perms::RX).unwrap();
    assert_eq!(sizes(&v), [(0, PageSize::Size1G)]);
    assert_eq!(pool.live(), 2);
}

#[test]
fn mapping_helpers_never_overflow() {
    let m = Mapping {
        gpa: Gpa(0x1000),
        hpa: Hpa(u64::MAX - 0xfff),
        size: PageSize::Size4K,
        attrs: Attributes::RAM,
        accessed: false,
        dirty: false,
    };
    assert_eq!(m.translate(Gpa(0x1000)), Some(Hpa(u64::MAX - 0xfff)));
    assert_eq!(m.translate(Gpa(0x1fff)), Some(Hpa(u64::MAX)));
    assert_eq!(m.translate(Gpa(0x2000)), None);
    assert_eq!(m.translate(Gpa(0xfff)), None);
    let huge = TableUsage {
        pml4: usize::MAX,
        pdpt: 1,
        pd: 1,
        pt: 1,
    };
    assert_eq!((huge.total(), huge.bytes()), (usize::MAX, u64::MAX));
}
