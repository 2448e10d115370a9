//! `loader::linux::layout` (Linux's vmlinux by its PVH note or a bzImage
//! by its setup header) on any image, then the start info or zero page
//! for a plan it accepts. Oracles: no panic, and an accepted plan is safe
//! to carry out: every segment in usable RAM below 4 GiB, clear of the
//! fixed ranges (a bzImage's whole decompression range too); each moved
//! module, the area and the pool in usable RAM below 4 GiB, clear of the
//! load range, the fixed ranges, the modules' original places and each
//! other; the entry inside a segment; a hand-over that passes
//! `check_handover` builds. A refusal has a message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loader::elf_load::{ImageKind, Occupied};
use loader::handoff::Carve;
use loader::linux::{self, boot_params, layout, start_info};
use loader::memmap::{FirmwareKind, MemoryMap, PhysRange};
use okernel_abi::boot::GuestMemoryKind as Kind;

/// The map Bochs' BIOS gives GRUB with 512 MiB (what the e2e Linux runs
/// see).
fn ram() -> MemoryMap {
    let mut m = MemoryMap::new();
    for (base, len, kind) in [
        (0, 0x9_f000, FirmwareKind::Usable),
        (0x9_f000, 0x1000, FirmwareKind::Reserved),
        (0xe_8000, 0x1_8000, FirmwareKind::Reserved),
        (0x10_0000, 0x1fef_0000, FirmwareKind::Usable),
        (0x1fff_0000, 0x1_0000, FirmwareKind::AcpiReclaimable),
        (0xfffc_0000, 0x4_0000, FirmwareKind::Reserved),
    ] {
        m.add(base, len, kind).expect("room");
    }
    m
}

const FIXED: [Occupied; 2] = [
    Occupied {
        what: "the okernel image",
        range: PhysRange {
            start: 0x10_0000,
            end: 0x20_0000,
        },
    },
    Occupied {
        what: "the boot information",
        range: PhysRange {
            start: 0x20_0000,
            end: 0x20_1000,
        },
    },
];

const POOL: u64 = 0x40_0000;

fuzz_target!(|input: &[u8]| {
    // The first byte places the modules: low (inside a kernel's usual
    // load range, as GRUB does) or high.
    let Some((&place, image)) = input.split_first() else {
        return;
    };
    let base = if place & 1 == 0 {
        0x30_0000
    } else {
        0x500_0000
    };
    let kernel = PhysRange {
        start: base,
        end: base + image.len() as u64,
    };
    let start = kernel.end.next_multiple_of(0x1000);
    let initrd = PhysRange {
        start,
        end: start + 0x1000 + u64::from(place) * 0x1_0000,
    };
    let ram = ram();
    let l = match layout(image, kernel, initrd, &ram, &FIXED, POOL) {
        Ok(l) => l,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let below_4g = |r: &PhysRange| r.end <= 1 << 32;
    let extent = l.plan.extent;
    let usable = |r: &PhysRange| ram.is_usable(r) && below_4g(r);
    for seg in l.plan.segments() {
        assert!(
            usable(&seg.dest) && extent.contains_range(&seg.dest),
            "segment"
        );
        assert!(FIXED.iter().all(|f| !f.range.overlaps(&seg.dest)));
    }
    if l.plan.kind == ImageKind::LinuxBzImage {
        // It decompresses in place: the whole range is its.
        assert!(usable(&extent), "load range");
        assert!(FIXED.iter().all(|f| !f.range.overlaps(&extent)));
    }
    let entry = PhysRange {
        start: l.plan.entry,
        end: l.plan.entry + 1,
    };
    assert!(l.plan.segments().any(|seg| seg.dest.contains_range(&entry)));
    let mut placed = vec![l.area, l.pool];
    placed.extend(l.initrd_move.map(|m| m.to));
    placed.extend(l.kernel_move.map(|m| m.to));
    for (i, p) in placed.iter().enumerate() {
        assert!(ram.is_usable(p) && below_4g(p) && !p.is_empty(), "{p}");
        assert!(!p.overlaps(&extent) && !p.overlaps(&kernel) && !p.overlaps(&initrd));
        assert!(FIXED.iter().all(|f| !f.range.overlaps(p)));
        assert!(placed[i + 1..].iter().all(|q| !q.overlaps(p)));
    }
    for m in [l.initrd_move, l.kernel_move].into_iter().flatten() {
        assert_eq!(m.from.len(), m.to.len());
    }
    assert!(!l.initrd.overlaps(&extent));

    // What the hand-over would refuse is refused before anything is
    // written; past that check, building it must succeed.
    let cmdline = "console=ttyS0";
    if linux::check_handover(image, &l.plan, cmdline, None).is_err() {
        return;
    }
    let carves = [
        Carve {
            range: FIXED[0].range,
            kind: Kind::Monitor,
        },
        Carve {
            range: l.area,
            kind: Kind::BootData,
        },
    ];
    let c = start_info::Contents {
        firmware: &ram,
        carves: &carves,
        cmdline,
        initrd: l.initrd,
        rsdp: None,
    };
    if l.area.len() == boot_params::AREA_SIZE as u64 {
        let mut area = vec![0u8; boot_params::AREA_SIZE];
        let area: &mut [u8; boot_params::AREA_SIZE] = area.as_mut_slice().try_into().expect("size");
        boot_params::build(area, l.area.start, image, &l.plan, &c).expect("zero page");
    } else {
        let mut area = vec![0u8; start_info::AREA_SIZE];
        let area: &mut [u8; start_info::AREA_SIZE] = area.as_mut_slice().try_into().expect("size");
        start_info::build(area, l.area.start, &c).expect("start info");
    }
});
