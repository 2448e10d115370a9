//! The hand-off area: what the loader leaves in guest-visible memory for
//! the guest kernel ([`okernel_abi::boot`]): identity page tables for the
//! first 4 GiB, the [`BootInfo`], the guest's memory map and command line.
//!
//! Everything the guest needs at entry lives here, outside the monitor's
//! memory, so the same hand-off works whether the guest is entered
//! directly or in VMX non-root mode, where the monitor's own page tables
//! are not mapped.
//!
//! Layout (offsets from the area's page-aligned base):
//!
//! | offset     | contents                                       |
//! |------------|------------------------------------------------|
//! | `0x0000`   | PML4                                           |
//! | `0x1000`   | PDPT                                           |
//! | `0x2000`   | four page directories (2 MiB pages, 4 GiB)     |
//! | `0x6000`   | [`BootInfo`], then the [`MemoryRegion`] array  |
//! | `0x7000`   | the command line                               |
//!
//! A multiboot ELF32 guest gets instead, at `0x6000`, a multiboot2
//! information structure ([`build_multiboot2`]): command line, memory map,
//! end tag (multiboot2 specification §3.6).

use crate::memmap::{FirmwareKind, MemoryMap};
use okernel::memmap::PhysRange;
use okernel_abi::boot::{self, BOOT_MAGIC, BootInfo, EntryMode, MemoryRegion};

/// Size of the hand-off area.
pub const AREA_SIZE: usize = 0x8000;
const PML4: usize = 0x0000;
const PDPT: usize = 0x1000;
const PD: usize = 0x2000;
const INFO: usize = 0x6000;
const MAP: usize = INFO + core::mem::size_of::<BootInfo>();
const CMDLINE: usize = 0x7000;
/// The most memory-map entries the area holds.
pub const MAX_ENTRIES: usize = (CMDLINE - MAP) / core::mem::size_of::<MemoryRegion>();
/// The longest guest command line the area holds.
pub const MAX_CMDLINE: usize = AREA_SIZE - CMDLINE;

/// Page-table entry bits (SDM Vol. 3A §5.5, "4-Level Paging").
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;

/// A range the guest map marks with a kind other than its firmware kind.
#[derive(Debug, Clone, Copy)]
pub struct Carve {
    /// Where.
    pub range: PhysRange,
    /// What the guest is told lives there.
    pub kind: boot::GuestMemoryKind,
}

/// Why the hand-off could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffError {
    /// The guest command line is longer than [`MAX_CMDLINE`].
    CmdlineTooLong(usize),
    /// The guest memory map needs more than [`MAX_ENTRIES`] entries.
    TooManyRegions,
}

impl core::fmt::Display for HandoffError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HandoffError::CmdlineTooLong(n) => {
                write!(
                    f,
                    "guest command line has {n} bytes (at most {MAX_CMDLINE})"
                )
            }
            HandoffError::TooManyRegions => {
                write!(f, "guest memory map needs more than {MAX_ENTRIES} entries")
            }
        }
    }
}

/// Fills `area` (which the guest will see at physical `base`) and returns
/// the physical addresses of the PML4 (for CR3) and of the [`BootInfo`]
/// (for RDI). On error `area` may be partly written but nothing else is.
pub fn build(
    area: &mut [u8; AREA_SIZE],
    base: u64,
    mode: EntryMode,
    firmware: &MemoryMap,
    carves: &[Carve],
    cmdline: &str,
) -> Result<(u64, u64), HandoffError> {
    if cmdline.len() > MAX_CMDLINE {
        return Err(HandoffError::CmdlineTooLong(cmdline.len()));
    }
    area.fill(0);
    identity_tables(area, base);

    let mut count = 0;
    let mut emit = |region: MemoryRegion| -> Result<(), HandoffError> {
        if count == MAX_ENTRIES {
            return Err(HandoffError::TooManyRegions);
        }
        let at = MAP + count * core::mem::size_of::<MemoryRegion>();
        put(area, at, region.base);
        put(area, at + 8, region.length);
        area[at + 16..at + 20].copy_from_slice(&region.kind.to_le_bytes());
        count += 1;
        Ok(())
    };
    guest_map(firmware, carves, &mut emit)?;

    area[CMDLINE..CMDLINE + cmdline.len()].copy_from_slice(cmdline.as_bytes());
    let info = BootInfo {
        magic: BOOT_MAGIC,
        abi_version: okernel_abi::ABI_VERSION.packed(),
        entry_mode: mode as u32,
        cmdline_addr: if cmdline.is_empty() {
            0
        } else {
            base + CMDLINE as u64
        },
        cmdline_len: cmdline.len() as u64,
        memory_map_addr: base + MAP as u64,
        memory_map_len: count as u64,
    };
    put(area, INFO, info.magic);
    area[INFO + 8..INFO + 12].copy_from_slice(&info.abi_version.to_le_bytes());
    area[INFO + 12..INFO + 16].copy_from_slice(&info.entry_mode.to_le_bytes());
    put(area, INFO + 16, info.cmdline_addr);
    put(area, INFO + 24, info.cmdline_len);
    put(area, INFO + 32, info.memory_map_addr);
    put(area, INFO + 40, info.memory_map_len);
    Ok((base + PML4 as u64, base + INFO as u64))
}

/// The bytes [`identity_tables`] fills.
pub const TABLES_SIZE: usize = INFO;

/// Writes, at the start of `area` (seen at physical `base`, 4 KiB
/// aligned), page tables that identity-map the first 4 GiB with 2 MiB
/// pages (SDM Vol. 3A §5.5): a PML4, a PDPT and four page directories,
/// [`TABLES_SIZE`] bytes; the PML4 is at `base`.
pub fn identity_tables(area: &mut [u8], base: u64) {
    put(area, PML4, (base + PDPT as u64) | PRESENT | WRITABLE);
    for i in 0..4 {
        put(
            area,
            PDPT + i * 8,
            (base + (PD + i * 0x1000) as u64) | PRESENT | WRITABLE,
        );
    }
    for i in 0..2048u64 {
        put(
            area,
            PD + i as usize * 8,
            (i << 21) | PRESENT | WRITABLE | HUGE,
        );
    }
}

fn put(area: &mut [u8], at: usize, v: u64) {
    area[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The guest's view of memory: firmware usable RAM minus the carved
/// ranges, the carved ranges with their kinds, everything else reserved;
/// sorted and non-overlapping.
pub fn guest_map(
    firmware: &MemoryMap,
    carves: &[Carve],
    emit: &mut dyn FnMut(MemoryRegion) -> Result<(), HandoffError>,
) -> Result<(), HandoffError> {
    let region = |range: PhysRange, kind: boot::GuestMemoryKind| MemoryRegion {
        base: range.start,
        length: range.len(),
        kind: kind as u32,
        reserved: 0,
    };
    for fw in firmware.regions() {
        if fw.kind != FirmwareKind::Usable {
            emit(region(fw.range, boot::GuestMemoryKind::Reserved))?;
            continue;
        }
        split_usable(fw.range, carves, &mut |r, kind| emit(region(r, kind)))?;
    }
    Ok(())
}

/// Walks the usable range `usable` in address order, emitting its free
/// pieces as [`boot::GuestMemoryKind::Usable`] and the parts of `carves` that
/// fall inside it with their kinds.
pub fn split_usable<E>(
    usable: PhysRange,
    carves: &[Carve],
    emit: &mut dyn FnMut(PhysRange, boot::GuestMemoryKind) -> Result<(), E>,
) -> Result<(), E> {
    let mut at = usable.start;
    while at < usable.end {
        let next = carves
            .iter()
            .filter(|c| c.range.end > at && c.range.start < usable.end)
            .min_by_key(|c| c.range.start);
        let (end, kind) = match next {
            Some(c) if c.range.start <= at => (c.range.end.min(usable.end), c.kind),
            Some(c) => (c.range.start, boot::GuestMemoryKind::Usable),
            None => (usable.end, boot::GuestMemoryKind::Usable),
        };
        emit(PhysRange { start: at, end }, kind)?;
        at = end;
    }
    Ok(())
}

/// Multiboot2 tag types (multiboot2 specification §3.6).
const MB2_TAG_END: u32 = 0;
const MB2_TAG_CMDLINE: u32 = 1;
const MB2_TAG_MMAP: u32 = 6;
/// Multiboot2 memory-map types: 1 available, 2 reserved.
const MB2_AVAILABLE: u32 = 1;
const MB2_RESERVED: u32 = 2;
const MB2_MMAP_ENTRY: usize = 24;

/// Fills the information part of `area` with a multiboot2 information
/// structure for a guest the monitor enters in 32-bit protected mode, and
/// returns its physical address (for EBX). The memory map is the guest's
/// view ([`guest_map`]): usable RAM is "available", everything else —
/// the monitor and the hand-off included — "reserved".
pub fn build_multiboot2(
    area: &mut [u8; AREA_SIZE],
    base: u64,
    firmware: &MemoryMap,
    carves: &[Carve],
    cmdline: &str,
) -> Result<u64, HandoffError> {
    let room = AREA_SIZE - INFO;
    // Header, command-line tag, memory-map tag header, end tag.
    let fixed = 8 + align8(8 + cmdline.len() + 1) + 16 + 8;
    if fixed > room {
        return Err(HandoffError::CmdlineTooLong(cmdline.len()));
    }
    let info = &mut area[INFO..];
    info.fill(0);
    let mut at = 8;
    let put32 =
        |info: &mut [u8], at: usize, v: u32| info[at..at + 4].copy_from_slice(&v.to_le_bytes());

    put32(info, at, MB2_TAG_CMDLINE);
    put32(info, at + 4, (8 + cmdline.len() + 1) as u32);
    info[at + 8..at + 8 + cmdline.len()].copy_from_slice(cmdline.as_bytes());
    at += align8(8 + cmdline.len() + 1);

    let mmap = at;
    put32(info, mmap, MB2_TAG_MMAP);
    put32(info, mmap + 8, MB2_MMAP_ENTRY as u32);
    at += 16;
    let limit = room - 8;
    let mut emit = |region: MemoryRegion| -> Result<(), HandoffError> {
        if at + MB2_MMAP_ENTRY > limit {
            return Err(HandoffError::TooManyRegions);
        }
        put(info, at, region.base);
        put(info, at + 8, region.length);
        let ty = if region.kind == boot::GuestMemoryKind::Usable as u32 {
            MB2_AVAILABLE
        } else {
            MB2_RESERVED
        };
        put32(info, at + 16, ty);
        at += MB2_MMAP_ENTRY;
        Ok(())
    };
    guest_map(firmware, carves, &mut emit)?;
    put32(info, mmap + 4, (at - mmap) as u32);

    put32(info, at, MB2_TAG_END);
    put32(info, at + 4, 8);
    at += 8;
    put32(info, 0, at as u32);
    Ok(base + INFO as u64)
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}
