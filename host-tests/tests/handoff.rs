//! The hand-off area the loader leaves for the guest: page tables, boot
//! information, memory map and command line, decoded back as the guest
//! reads them.

use loader::handoff::{AREA_SIZE, Carve, HandoffError, MAX_CMDLINE, build, build_multiboot2};
use loader::memmap::{FirmwareKind, MemoryMap, PhysRange};
use okernel_abi::boot::{self, BOOT_MAGIC, EntryMode};

const BASE: u64 = 0x20_0000;

fn u64_at(area: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(area[at..at + 8].try_into().unwrap())
}

fn firmware() -> MemoryMap {
    let mut m = MemoryMap::new();
    m.add(0, 0x9_fc00, FirmwareKind::Usable).unwrap();
    m.add(0xf_0000, 0x1_0000, FirmwareKind::Reserved).unwrap();
    m.add(0x10_0000, 0xff0_0000, FirmwareKind::Usable).unwrap();
    m
}

fn carves() -> [Carve; 3] {
    [
        Carve {
            range: PhysRange {
                start: 0x10_0000,
                end: 0x18_0000,
            },
            kind: boot::GuestMemoryKind::Monitor,
        },
        Carve {
            range: PhysRange {
                start: BASE,
                end: BASE + AREA_SIZE as u64,
            },
            kind: boot::GuestMemoryKind::BootData,
        },
        Carve {
            range: PhysRange {
                start: 0x100_0000,
                end: 0x110_0000,
            },
            kind: boot::GuestMemoryKind::GuestImage,
        },
    ]
}

/// Reads the structures back from `area` as the guest would.
fn decode(area: &[u8], info_addr: u64) -> (boot::BootInfo, Vec<(u64, u64, u32)>, String) {
    let at = (info_addr - BASE) as usize;
    let info = boot::BootInfo {
        magic: u64_at(area, at),
        abi_version: u32::from_le_bytes(area[at + 8..at + 12].try_into().unwrap()),
        entry_mode: u32::from_le_bytes(area[at + 12..at + 16].try_into().unwrap()),
        cmdline_addr: u64_at(area, at + 16),
        cmdline_len: u64_at(area, at + 24),
        memory_map_addr: u64_at(area, at + 32),
        memory_map_len: u64_at(area, at + 40),
    };
    let map_at = (info.memory_map_addr - BASE) as usize;
    let map = (0..info.memory_map_len as usize)
        .map(|i| {
            let e = map_at + i * 24;
            (
                u64_at(area, e),
                u64_at(area, e + 8),
                u32::from_le_bytes(area[e + 16..e + 20].try_into().unwrap()),
            )
        })
        .collect();
    let cmdline = if info.cmdline_addr == 0 {
        String::new()
    } else {
        let c = (info.cmdline_addr - BASE) as usize;
        String::from_utf8(area[c..c + info.cmdline_len as usize].to_vec()).unwrap()
    };
    (info, map, cmdline)
}

#[test]
fn the_guest_reads_back_what_the_loader_wrote() {
    let mut area = Box::new([0xaau8; AREA_SIZE]);
    let (cr3, info_addr) = build(
        &mut area,
        BASE,
        EntryMode::NonRoot,
        &firmware(),
        &carves(),
        "scenario=boot",
    )
    .unwrap();
    assert_eq!(cr3, BASE);
    let (info, map, cmdline) = decode(&area[..], info_addr);
    assert_eq!(info.magic, BOOT_MAGIC);
    assert_eq!(info.abi_version, okernel_abi::ABI_VERSION.packed());
    assert_eq!(
        EntryMode::from_raw(info.entry_mode),
        Some(EntryMode::NonRoot)
    );
    assert_eq!(cmdline, "scenario=boot");

    // Sorted, non-overlapping, and every carve appears with its kind.
    let usable = boot::GuestMemoryKind::Usable as u32;
    assert_eq!(
        map,
        vec![
            (0, 0x9_fc00, usable),
            (0xf_0000, 0x1_0000, boot::GuestMemoryKind::Reserved as u32),
            (0x10_0000, 0x8_0000, boot::GuestMemoryKind::Monitor as u32),
            (0x18_0000, 0x8_0000, usable),
            (
                BASE,
                AREA_SIZE as u64,
                boot::GuestMemoryKind::BootData as u32
            ),
            (
                BASE + AREA_SIZE as u64,
                0x100_0000 - BASE - AREA_SIZE as u64,
                usable
            ),
            (
                0x100_0000,
                0x10_0000,
                boot::GuestMemoryKind::GuestImage as u32
            ),
            (0x110_0000, 0x1000_0000 - 0x110_0000, usable),
        ]
    );
}

#[test]
fn page_tables_identity_map_four_gib_with_2m_pages() {
    let mut area = Box::new([0u8; AREA_SIZE]);
    let (cr3, _) = build(&mut area, BASE, EntryMode::Direct, &firmware(), &[], "").unwrap();
    let pml4e = u64_at(&area[..], (cr3 - BASE) as usize);
    assert_eq!(pml4e & 0x3, 0x3, "present + writable");
    let pdpt = (pml4e & !0xfff) - BASE;
    for gib in 0..4u64 {
        let pdpte = u64_at(&area[..], (pdpt + gib * 8) as usize);
        let pd = (pdpte & !0xfff) - BASE;
        for (i, addr) in [(0u64, 0u64), (511, 511)] {
            let pde = u64_at(&area[..], (pd + i * 8) as usize);
            assert_eq!(pde & !0xfff, (gib << 30) | (addr << 21));
            assert_eq!(pde & 0x83, 0x83, "present + writable + 2 MiB page");
        }
    }
    assert_eq!(
        u64_at(&area[..], (pdpt + 4 * 8) as usize),
        0,
        "nothing above 4 GiB"
    );
}

#[test]
fn refuses_what_does_not_fit() {
    let mut area = Box::new([0u8; AREA_SIZE]);
    let long = "x".repeat(MAX_CMDLINE + 1);
    assert_eq!(
        build(&mut area, BASE, EntryMode::Direct, &firmware(), &[], &long),
        Err(HandoffError::CmdlineTooLong(MAX_CMDLINE + 1))
    );
    let mut many = MemoryMap::new();
    for i in 0..64u64 {
        many.add(i * 0x10_0000, 0x8_0000, FirmwareKind::Usable)
            .unwrap();
    }
    let splitting: Vec<Carve> = (0..64u64)
        .map(|i| Carve {
            range: PhysRange {
                start: i * 0x10_0000 + 0x1000,
                end: i * 0x10_0000 + 0x2000,
            },
            kind: boot::GuestMemoryKind::Monitor,
        })
        .collect();
    assert_eq!(
        build(&mut area, BASE, EntryMode::Direct, &many, &splitting, ""),
        Err(HandoffError::TooManyRegions)
    );
}

#[test]
fn multiboot2_information_parses_back_with_the_guest_view_of_memory() {
    // 8-aligned backing store, as a multiboot2 structure requires.
    let mut backing = vec![0u64; AREA_SIZE / 8];
    // SAFETY: the Vec holds AREA_SIZE bytes, suitably aligned for u8.
    let area: &mut [u8; AREA_SIZE] =
        unsafe { &mut *(backing.as_mut_ptr() as *mut [u8; AREA_SIZE]) };
    let mbi = build_multiboot2(area, BASE, &firmware(), &carves(), "hello mb32").unwrap();
    let offset = (mbi - BASE) as usize;
    let ptr = area[offset..].as_ptr();
    // SAFETY: `ptr` points at the structure just built, 8-aligned, inside
    // `backing`, which outlives the parse and is not written meanwhile.
    let info = unsafe { loader::bootinfo::parse_multiboot2(ptr.cast()) }.unwrap();
    assert_eq!(info.cmdline, "hello mb32");
    let regions: Vec<(u64, u64, FirmwareKind)> = info
        .memory
        .regions()
        .iter()
        .map(|r| (r.range.start, r.range.len(), r.kind))
        .collect();
    assert_eq!(regions[0], (0, 0x9_fc00, FirmwareKind::Usable));
    assert!(
        regions.contains(&(0x10_0000, 0x8_0000, FirmwareKind::Reserved)),
        "monitor is reserved: {regions:?}"
    );
    assert!(
        regions.contains(&(BASE, AREA_SIZE as u64, FirmwareKind::Reserved)),
        "hand-off is reserved"
    );
    assert!(regions.contains(&(0x110_0000, 0x1000_0000 - 0x110_0000, FirmwareKind::Usable)));
    let _ = &backing;
}

#[test]
fn multiboot2_information_refuses_what_does_not_fit() {
    let mut area = Box::new([0u8; AREA_SIZE]);
    let long = "x".repeat(AREA_SIZE);
    assert!(matches!(
        build_multiboot2(&mut area, BASE, &firmware(), &[], &long),
        Err(HandoffError::CmdlineTooLong(_))
    ));
}
