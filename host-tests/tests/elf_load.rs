//! The guest-image validator refuses every malformed image with a named
//! cause, and plans good ones exactly.

use host_tests::{ElfHeader, elf32, elf64, elf64_with, multiboot2_header, phdr_field};
use loader::elf_load::{ElfError, ImageKind, Occupied, has_multiboot2_header, plan};
use loader::memmap::{FirmwareKind, MemoryMap, PhysRange};

fn ram() -> MemoryMap {
    let mut m = MemoryMap::new();
    m.add(0, 0x9_f000, FirmwareKind::Usable).unwrap();
    m.add(0x10_0000, 0xff0_0000, FirmwareKind::Usable).unwrap();
    m
}

const GUEST: u64 = 0x100_0000;
const MODULE: Occupied = Occupied {
    what: "the guest module",
    range: PhysRange {
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
        PhysRange {
            start: GUEST,
            end: GUEST + 0x4000
        }
    );
    let segs: Vec<_> = p.segments().collect();
    assert_eq!(segs.len(), 2);
    assert_eq!(
        segs[0].dest,
        PhysRange {
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
            "not a valid ELF file",
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

#[test]
fn accepts_a_multiboot2_elf32_image() {
    let mut code = multiboot2_header();
    code.extend_from_slice(&[0xf4; 8]);
    let image = elf32(0x180_0018, 0x180_0000, &code, 0x2000, 3);
    let p = plan(&image, &ram(), &[]).unwrap();
    assert_eq!(p.kind, ImageKind::Multiboot32);
    assert_eq!(p.entry, 0x180_0018);
    assert_eq!(
        p.extent,
        PhysRange {
            start: 0x180_0000,
            end: 0x180_2000
        }
    );
    assert_eq!(plan(&good(), &ram(), &[]).unwrap().kind, ImageKind::Elf64);
}

#[test]
fn refuses_elf32_without_a_valid_multiboot2_header_or_for_another_machine() {
    let plain = elf32(0x180_0000, 0x180_0000, &[0xf4; 32], 0x1000, 3);
    assert!(matches!(
        plan(&plain, &ram(), &[]),
        Err(ElfError::Elf32WithoutMultiboot2)
    ));

    let mut bad_sum = multiboot2_header();
    bad_sum[12] ^= 1;
    let image = elf32(0x180_0000, 0x180_0000, &bad_sum, 0x1000, 3);
    assert!(matches!(
        plan(&image, &ram(), &[]),
        Err(ElfError::Elf32WithoutMultiboot2)
    ));

    let arm = elf32(0x180_0000, 0x180_0000, &multiboot2_header(), 0x1000, 40);
    assert!(matches!(
        plan(&arm, &ram(), &[]),
        Err(ElfError::WrongMachine(40))
    ));
}

#[test]
fn multiboot2_header_search_follows_the_specification() {
    let h = multiboot2_header();
    assert!(has_multiboot2_header(&h));
    // 8-byte aligned only.
    let mut shifted = vec![0u8; 4];
    shifted.extend_from_slice(&h);
    assert!(!has_multiboot2_header(&shifted));
    // Within the first 32 KiB only.
    let mut late = vec![0u8; 32 * 1024];
    late.extend_from_slice(&h);
    assert!(!has_multiboot2_header(&late));
    // A header whose length runs past the file.
    assert!(!has_multiboot2_header(&h[..20]));
}
