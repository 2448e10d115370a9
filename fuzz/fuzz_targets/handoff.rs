//! `loader::handoff::build` and `build_multiboot2`: the guest's boot data
//! from a firmware memory map, carved ranges and a command line (the
//! command line comes from the boot loader, so it is hostile input; the
//! area's base is the loader's own choice, a page below 4 GiB).
//!
//! Oracles: no panic; `build` writes a `BootInfo` whose memory map lies in
//! the area and, for a firmware map without overlaps, is sorted, disjoint
//! and covers exactly the firmware's bytes; `build_multiboot2` writes an
//! information structure that the `multiboot2` crate (through okernel's
//! own `parse_multiboot2`) reads back to the same memory map and command
//! line.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use loader::bootinfo::parse_multiboot2;
use loader::handoff::{
    AREA_SIZE, Carve, MAX_CMDLINE, MAX_ENTRIES, build, build_multiboot2, guest_map,
};
use loader::memmap::{FirmwareKind, MemoryMap, PhysRange};
use okernel_abi::boot::{self, BOOT_MAGIC, EntryMode, MemoryRegion};
use okernel_fuzz::aligned_copy;

#[derive(Debug, Arbitrary)]
struct Input {
    base_page: u32,
    non_root: bool,
    /// Firmware entries: base, length, E820 type.
    firmware: Vec<(u32, u32, u8)>,
    /// Carves: start, end, kind.
    carves: Vec<(u32, u32, u8)>,
    cmdline: String,
}

const KINDS: [boot::GuestMemoryKind; 5] = [
    boot::GuestMemoryKind::Usable,
    boot::GuestMemoryKind::Reserved,
    boot::GuestMemoryKind::Monitor,
    boot::GuestMemoryKind::GuestImage,
    boot::GuestMemoryKind::BootData,
];

fn u64_at(area: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(area[at..at + 8].try_into().expect("8 bytes"))
}

/// Scales a 32-bit fuzz value to a page-granular address below 16 GiB.
fn addr(v: u32) -> u64 {
    u64::from(v) << 2
}

fuzz_target!(|input: Input| {
    let mut firmware = MemoryMap::new();
    for &(base, len, ty) in input.firmware.iter().take(80) {
        let _ = firmware.add(addr(base), addr(len), FirmwareKind::from_e820(ty.into()));
    }
    let carves: Vec<Carve> = input
        .carves
        .iter()
        .take(16)
        .map(|&(s, e, k)| Carve {
            range: PhysRange {
                start: addr(s),
                end: addr(e),
            },
            kind: KINDS[usize::from(k) % KINDS.len()],
        })
        .collect();
    let base = u64::from(input.base_page % (1 << 20)) << 12;
    let mode = if input.non_root {
        EntryMode::NonRoot
    } else {
        EntryMode::Direct
    };
    let cmdline = input.cmdline.as_str();

    // The reference: what guest_map emits.
    let mut want: Vec<MemoryRegion> = Vec::new();
    let mapped = guest_map(&firmware, &carves, &mut |r| {
        want.push(r);
        Ok(())
    });
    assert!(mapped.is_ok(), "guest_map without a limit failed");
    let fw = firmware.regions();
    let disjoint = fw.windows(2).all(|w| w[0].range.end <= w[1].range.start);
    if disjoint {
        for w in want.windows(2) {
            assert!(
                w[0].base + w[0].length <= w[1].base,
                "guest map not sorted/disjoint: {w:x?}"
            );
        }
        let total: u64 = want.iter().map(|r| r.length).sum();
        let fw_total: u64 = fw.iter().map(|r| r.range.len()).sum();
        assert_eq!(total, fw_total, "guest map does not cover the firmware map");
        assert!(want.iter().all(|r| r.length > 0), "empty guest-map entry");
    }

    let mut area = Box::new([0u8; AREA_SIZE]);
    match build(&mut area, base, mode, &firmware, &carves, cmdline) {
        Ok((cr3, info)) => {
            assert!(cmdline.len() <= MAX_CMDLINE && want.len() <= MAX_ENTRIES);
            assert_eq!(cr3, base);
            let at = (info - base) as usize;
            assert!(at + 48 <= AREA_SIZE);
            assert_eq!(u64_at(&area[..], at), BOOT_MAGIC);
            let map_at = (u64_at(&area[..], at + 32) - base) as usize;
            let count = u64_at(&area[..], at + 40) as usize;
            assert_eq!(count, want.len());
            assert!(map_at + count * 24 <= AREA_SIZE);
            for (i, r) in want.iter().enumerate() {
                let e = map_at + i * 24;
                assert_eq!(
                    (u64_at(&area[..], e), u64_at(&area[..], e + 8)),
                    (r.base, r.length)
                );
            }
            let len = u64_at(&area[..], at + 24) as usize;
            assert_eq!(len, cmdline.len());
            if len > 0 {
                let c = (u64_at(&area[..], at + 16) - base) as usize;
                assert_eq!(&area[c..c + len], cmdline.as_bytes());
            }
        }
        Err(e) => assert!(
            cmdline.len() > MAX_CMDLINE || want.len() > MAX_ENTRIES,
            "build: {e}"
        ),
    }

    let mut area = Box::new([0u8; AREA_SIZE]);
    if let Ok(info) = build_multiboot2(&mut area, base, &firmware, &carves, cmdline) {
        let at = (info - base) as usize;
        let words = aligned_copy(&area[at..]);
        let total = u32::from_le_bytes(area[at..at + 4].try_into().expect("4 bytes")) as usize;
        assert!(total <= AREA_SIZE - at, "multiboot2 info overruns the area");
        // SAFETY: `words` is 8-aligned, holds the whole rest of the area,
        // and so the `total` bytes the header announces (checked above);
        // it is not changed or freed while `parsed` lives.
        let parsed = unsafe { parse_multiboot2(words.as_ptr().cast()) };
        match parsed {
            Ok(back) => {
                if !cmdline.contains('\0') {
                    assert_eq!(back.cmdline, cmdline, "command line does not round-trip");
                }
                let regions = back.memory.regions();
                let usable = |r: &MemoryRegion| r.kind == boot::GuestMemoryKind::Usable as u32;
                if regions.len() == want.iter().filter(|r| r.length > 0).count() {
                    let mut sorted: Vec<_> = want.iter().filter(|r| r.length > 0).collect();
                    sorted.sort_by_key(|r| r.base);
                    for (got, w) in regions.iter().zip(sorted) {
                        assert_eq!(got.range.start, w.base);
                        assert_eq!(got.range.len(), w.length);
                        assert_eq!(got.kind == FirmwareKind::Usable, usable(w));
                    }
                }
            }
            Err(e) => {
                let why = e.to_string();
                assert!(
                    !why.contains("multiboot2 information"),
                    "okernel's own multiboot2 information does not parse: {why}"
                );
            }
        }
    }
});
