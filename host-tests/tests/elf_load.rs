//! The guest-image validator refuses every malformed image with a named
//! cause, and plans good ones exactly.

use host_tests::{ElfHeader, elf64, elf64_with, phdr_field};
use loader::elf_load::{ElfError, Occupied, plan};
use loader::memmap::{MemoryMap, Range, RegionKind};

fn ram() -> MemoryMap {
    let mut m = MemoryMap::new();
    m.add(0, 0x9_f000, RegionKind::Usable).unwrap();
    m.add(0x10_0000, 0xff0_0000, RegionKind::Usable).unwrap();
    m
}

const GUEST: u64 = 0x100_0000;
const MODULE: Occupied = Occupied {
    what: "the guest module",
    range: Range {
        start: 0x20_0000,
        end: 0x30_0000,
    },
};

fn good() -> Vec<u8> {
    elf64(
        GUEST,
        &[
            (GUEST, &[0x90; 100], 0x1000),
            (GUEST + 0x1000, &[1, 2, 3], 0x3000),
        ],
    )
}

#[test]
fn plans_a_good_image() {
    let image = good();
    let p = plan(&image, &ram(), &[MODULE]).unwrap();
    assert_eq!(p.entry, GUEST);
    assert_eq!(
        p.extent,
        Range {
            start: GUEST,
            end: GUEST + 0x4000
        }
    );
    let segs: Vec<_> = p.segments().collect();
    assert_eq!(segs.len(), 2);
    assert_eq!(
        segs[0].dest,
        Range {
            start: GUEST,
            end: GUEST + 0x1000
        }
    );
    assert_eq!(&image[segs[0].file.clone()], &[0x90; 100]);
    assert_eq!(&image[segs[1].file.clone()], &[1, 2, 3]);
}

#[test]
fn refuses_files_that_are_not_elf() {
    for bytes in [
        &b""[..],
        b"\x7fEL",
        b"MZ\x90\x00 this is not an ELF file at all, no sir",
    ] {
        let e = plan(bytes, &ram(), &[]).unwrap_err();
        assert!(matches!(e, ElfError::NotElf(_)), "{e}");
    }
    let mut truncated = good();
    truncated.truncate(70);
    assert!(matches!(
        plan(&truncated, &ram(), &[]),
        Err(ElfError::NotElf(_))
    ));
}

#[test]
fn refuses_wrong_class_endianness_machine_and_type() {
    let seg: &[(u64, &[u8], u64)] = &[(GUEST, &[0x90], 0x1000)];
    let cases = [
        (
            ElfHeader {
                class: 1,
                ..ElfHeader::x86_64(GUEST)
            },
            "ELF32",
        ),
        (
            ElfHeader {
                data: 2,
                ..ElfHeader::x86_64(GUEST)
            },
            "big-endian",
        ),
        (
            ElfHeader {
                machine: 3,
                ..ElfHeader::x86_64(GUEST)
            },
            "machine 3",
        ),
        (
            ElfHeader {
                e_type: 3,
                ..ElfHeader::x86_64(GUEST)
            },
            "type 3",
        ),
    ];
    for (h, words) in cases {
        let e = plan(&elf64_with(h, seg), &ram(), &[]).unwrap_err();
        assert!(e.to_string().contains(words), "{e}");
    }
}

#[test]
fn refuses_bad_segments() {
    assert!(matches!(
        plan(&elf64(GUEST, &[]), &ram(), &[]),
        Err(ElfError::NoLoadableSegments)
    ));

    let overlap = elf64(
        GUEST,
        &[(GUEST, &[0], 0x2000), (GUEST + 0x1000, &[0], 0x1000)],
    );
    assert!(matches!(
        plan(&overlap, &ram(), &[]),
        Err(ElfError::Overlap(0, 1))
    ));

    let outside = elf64(0x1000_0000, &[(0x1000_0000, &[0], 0x1000)]);
    assert!(matches!(
        plan(&outside, &ram(), &[]),
        Err(ElfError::OutsideRam(0, _))
    ));

    let hole = elf64(0x9_e000, &[(0x9_e000, &[0], 0x2000)]);
    assert!(matches!(
        plan(&hole, &ram(), &[]),
        Err(ElfError::OutsideRam(0, _))
    ));

    let onto_module = elf64(0x20_0000, &[(0x20_0000, &[0], 0x1000)]);
    let e = plan(&onto_module, &ram(), &[MODULE]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "guest segment 0 at [0x000200000, 0x000201000) would overwrite the guest module"
    );

    let mut beyond_file = good();
    beyond_file[phdr_field(1, 32)..phdr_field(1, 40)].copy_from_slice(&0x10_0000u64.to_le_bytes());
    assert!(matches!(
        plan(&beyond_file, &ram(), &[]),
        Err(ElfError::BadSegmentSize(1) | ElfError::SegmentOutsideFile(1))
    ));

    let mut huge_offset = good();
    huge_offset[phdr_field(0, 8)..phdr_field(0, 16)].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        plan(&huge_offset, &ram(), &[]),
        Err(ElfError::SegmentOutsideFile(0))
    ));

    let mut wraps = good();
    wraps[phdr_field(0, 40)..phdr_field(0, 48)].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        plan(&wraps, &ram(), &[]),
        Err(ElfError::BadSegmentSize(0))
    ));

    let mut not_identity = good();
    not_identity[phdr_field(0, 16)..phdr_field(0, 24)]
        .copy_from_slice(&0xffff_8000_0000_0000u64.to_le_bytes());
    assert!(matches!(
        plan(&not_identity, &ram(), &[]),
        Err(ElfError::NotIdentityLinked { index: 0, .. })
    ));
}

#[test]
fn refuses_an_entry_point_outside_every_segment() {
    let image = elf64(GUEST + 0x5000, &[(GUEST, &[0x90], 0x1000)]);
    assert!(
        matches!(plan(&image, &ram(), &[]), Err(ElfError::EntryOutside(e)) if e == GUEST + 0x5000)
    );
}
