//! `loader::elf_load::plan` (the `elf` crate's parser plus okernel's
//! checks) on any image, against a fixed RAM map and the ranges the loader
//! keeps occupied. Oracles: no panic, and a plan it accepts is safe to
//! copy: every segment in usable RAM, away from occupied ranges and from
//! the other segments, its file bytes inside the image and no longer than
//! its memory, the entry point inside a segment, the extent covering all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loader::elf_load::{MAX_SEGMENTS, Occupied, has_multiboot2_header, plan};
use loader::memmap::{FirmwareKind, MemoryMap, PhysRange};

fn ram() -> MemoryMap {
    let mut m = MemoryMap::new();
    m.add(0, 0x9_fc00, FirmwareKind::Usable).expect("room");
    m.add(0xf_0000, 0x1_0000, FirmwareKind::Reserved)
        .expect("room");
    m.add(0x10_0000, 0x7f0_0000, FirmwareKind::Usable)
        .expect("room");
    m.add(0x1_0000_0000, 0x1000_0000, FirmwareKind::Usable)
        .expect("room");
    m
}

const OCCUPIED: [Occupied; 2] = [
    Occupied {
        what: "the okernel image",
        range: PhysRange {
            start: 0x10_0000,
            end: 0x20_0000,
        },
    },
    Occupied {
        what: "the guest module",
        range: PhysRange {
            start: 0x400_0000,
            end: 0x480_0000,
        },
    },
];

fuzz_target!(|image: &[u8]| {
    let _ = has_multiboot2_header(image);
    let ram = ram();
    match plan(image, &ram, &OCCUPIED) {
        Ok(p) => {
            let segs: Vec<_> = p.segments().collect();
            assert!(!segs.is_empty() && segs.len() <= MAX_SEGMENTS);
            for (i, s) in segs.iter().enumerate() {
                assert!(ram.is_usable(&s.dest), "segment {i} outside RAM");
                assert!(!s.dest.is_empty());
                assert!(OCCUPIED.iter().all(|o| !o.range.overlaps(&s.dest)));
                assert!(s.file.start <= s.file.end && s.file.end <= image.len());
                assert!((s.file.end - s.file.start) as u64 <= s.dest.len());
                assert!(p.extent.contains_range(&s.dest));
                for t in &segs[i + 1..] {
                    assert!(!t.dest.overlaps(&s.dest), "segments overlap");
                }
            }
            let entry = PhysRange {
                start: p.entry,
                end: p.entry + 1,
            };
            assert!(segs.iter().any(|s| s.dest.contains_range(&entry)));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
