//! The `hvm_start_info` okernel builds for a Linux guest entered at its
//! PVH entry (Xen `public/arch-x86/hvm/start_info.h`, version 1; the
//! register state is in `docs/misc/pvh.pandoc`).
//!
//! Layout of the area (offsets from its page-aligned base):
//!
//! | offset   | contents                                              |
//! |----------|-------------------------------------------------------|
//! | `0x000`  | `struct hvm_start_info` (56 bytes)                    |
//! | `0x040`  | one `struct hvm_modlist_entry`: the initramfs         |
//! | `0x080`  | a copy of the ACPI RSDP, when the boot loader gave one |
//! | `0x100`  | `struct hvm_memmap_table_entry[]` (E820 types)        |
//! | `0x1000` | the kernel command line, NUL-terminated               |
//!
//! The memory map is the firmware's with okernel's memory (image, frame
//! pool) and this area carved out of usable RAM as reserved (E820 type
//! 2): Linux never allocates them, and `/proc/iomem` shows no `System
//! RAM` there. The kernel's own load range and the initramfs stay RAM:
//! Linux reserves them itself (`memblock_reserve` of `_text.._end` and of
//! the initrd in `setup_arch`).

use crate::handoff::{Carve, split_usable};
use crate::memmap::{FirmwareKind, MemoryMap};
use okernel::memmap::PhysRange;
use okernel_abi::boot;

/// `hvm_start_info.magic`.
pub const MAGIC: u32 = 0x336e_c578;
/// Size of the area.
pub const AREA_SIZE: usize = 0x2000;
const MODLIST: usize = 0x40;
const RSDP: usize = 0x80;
/// The longest RSDP copied (ACPI 2.0+: 36 bytes).
pub const MAX_RSDP: usize = 0x40;
const MEMMAP: usize = 0x100;
const MEMMAP_ENTRY: usize = 24;
const CMDLINE: usize = 0x1000;
/// The most memory-map entries the area holds.
pub const MAX_ENTRIES: usize = (CMDLINE - MEMMAP) / MEMMAP_ENTRY;
/// The longest command line (without its NUL): x86 Linux copies at most
/// `COMMAND_LINE_SIZE` (2048, `arch/x86/include/asm/setup.h`) bytes with
/// the NUL and would cut a longer one silently; okernel refuses it.
pub const MAX_CMDLINE: usize = 2047;
const _: () = assert!(CMDLINE + MAX_CMDLINE < AREA_SIZE);

/// E820 memory types (ACPI "System Address Map Interfaces").
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const E820_ACPI: u32 = 3;
const E820_NVS: u32 = 4;
const E820_UNUSABLE: u32 = 5;

/// Why the start info could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartInfoError {
    /// The command line is longer than [`MAX_CMDLINE`].
    CmdlineTooLong(usize),
    /// The memory map needs more than [`MAX_ENTRIES`] entries.
    TooManyRegions,
    /// The RSDP is longer than [`MAX_RSDP`].
    RsdpTooLong(usize),
}

impl core::fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartInfoError::CmdlineTooLong(n) => write!(
                f,
                "kernel command line has {n} bytes (at most {MAX_CMDLINE})"
            ),
            StartInfoError::TooManyRegions => {
                write!(f, "memory map needs more than {MAX_ENTRIES} entries")
            }
            StartInfoError::RsdpTooLong(n) => {
                write!(f, "ACPI RSDP has {n} bytes (at most {MAX_RSDP})")
            }
        }
    }
}

/// What goes into the start info.
#[derive(Debug, Clone, Copy)]
pub struct Contents<'a> {
    /// The firmware memory map.
    pub firmware: &'a MemoryMap,
    /// Ranges of usable RAM Linux must not use (okernel's memory, this
    /// area): reserved in its map unless their kind is
    /// [`boot::GuestMemoryKind::Usable`] or [`boot::GuestMemoryKind::GuestImage`].
    pub carves: &'a [Carve],
    /// The kernel command line.
    pub cmdline: &'a str,
    /// The initramfs.
    pub initrd: PhysRange,
    /// The ACPI RSDP as the boot loader copied it (multiboot2 tags 14/15),
    /// or `None` (Linux then scans the BIOS areas for it).
    pub rsdp: Option<&'a [u8]>,
}

/// The E820 type Linux is told for a firmware region kind.
fn e820(kind: FirmwareKind) -> u32 {
    match kind {
        FirmwareKind::Usable => E820_RAM,
        FirmwareKind::AcpiReclaimable => E820_ACPI,
        FirmwareKind::AcpiNvs => E820_NVS,
        FirmwareKind::Bad => E820_UNUSABLE,
        FirmwareKind::Reserved => E820_RESERVED,
    }
}

/// The E820 map Linux gets: the firmware's regions with their types, and
/// inside usable RAM the `carves` as reserved (type 2) unless their kind
/// is [`boot::GuestMemoryKind::Usable`] or [`boot::GuestMemoryKind::GuestImage`];
/// in address order, as (range, E820 type).
pub fn e820_map<E>(
    firmware: &MemoryMap,
    carves: &[Carve],
    emit: &mut dyn FnMut(PhysRange, u32) -> Result<(), E>,
) -> Result<(), E> {
    for fw in firmware.regions() {
        if fw.kind != FirmwareKind::Usable {
            emit(fw.range, e820(fw.kind))?;
            continue;
        }
        split_usable(fw.range, carves, &mut |r, kind| {
            let ty = match kind {
                boot::GuestMemoryKind::Usable | boot::GuestMemoryKind::GuestImage => E820_RAM,
                _ => E820_RESERVED,
            };
            emit(r, ty)
        })?;
    }
    Ok(())
}

/// Checks what [`build`] would refuse — a command line longer than
/// [`MAX_CMDLINE`], an RSDP longer than [`MAX_RSDP`] — so the loader
/// refuses before it writes anything.
pub fn check(cmdline: &str, rsdp: Option<&[u8]>) -> Result<(), StartInfoError> {
    if cmdline.len() > MAX_CMDLINE {
        return Err(StartInfoError::CmdlineTooLong(cmdline.len()));
    }
    let n = rsdp.map_or(0, <[u8]>::len);
    if n > MAX_RSDP {
        return Err(StartInfoError::RsdpTooLong(n));
    }
    Ok(())
}

/// Fills `area` (which Linux will see at physical `base`) and returns the
/// physical address of the `hvm_start_info` (for EBX).
pub fn build(
    area: &mut [u8; AREA_SIZE],
    base: u64,
    c: &Contents<'_>,
) -> Result<u64, StartInfoError> {
    check(c.cmdline, c.rsdp)?;
    area.fill(0);
    let mut entries = 0;
    let mut emit = |r: PhysRange, ty: u32| -> Result<(), StartInfoError> {
        if r.is_empty() {
            return Ok(());
        }
        if entries == MAX_ENTRIES {
            return Err(StartInfoError::TooManyRegions);
        }
        let at = MEMMAP + entries * MEMMAP_ENTRY;
        put64(area, at, r.start);
        put64(area, at + 8, r.len());
        put32(area, at + 16, ty);
        entries += 1;
        Ok(())
    };
    e820_map(c.firmware, c.carves, &mut emit)?;

    let rsdp = match c.rsdp {
        Some(bytes) if !bytes.is_empty() => {
            area[RSDP..RSDP + bytes.len()].copy_from_slice(bytes);
            base + RSDP as u64
        }
        _ => 0,
    };
    area[CMDLINE..CMDLINE + c.cmdline.len()].copy_from_slice(c.cmdline.as_bytes());

    put64(area, MODLIST, c.initrd.start);
    put64(area, MODLIST + 8, c.initrd.len());

    put32(area, 0, MAGIC);
    put32(area, 4, 1);
    put32(area, 12, 1);
    put64(area, 16, base + MODLIST as u64);
    put64(area, 24, base + CMDLINE as u64);
    put64(area, 32, rsdp);
    put64(area, 40, base + MEMMAP as u64);
    put32(area, 48, entries as u32);
    Ok(base)
}

fn put32(area: &mut [u8], at: usize, v: u32) {
    area[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(area: &mut [u8], at: usize, v: u64) {
    area[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
