//! Linux's bzImage through the Linux/x86 boot protocol
//! (`Documentation/arch/x86/boot.rst`, "64-bit Boot Protocol"): the
//! protected-mode kernel is loaded at its `pref_address`, a
//! `struct boot_params` ("zero page") carries the setup header, the
//! command line, the initrd and an E820 map, and the kernel is entered at
//! its 64-bit entry (load address + 0x200) with RSI = the zero page, in
//! long mode with identity page tables covering the kernel, the zero page,
//! the command line and the initrd.
//!
//! Layout of the area (offsets from its page-aligned base):
//!
//! | offset   | contents                                                |
//! |----------|---------------------------------------------------------|
//! | `0x0000` | identity page tables, first 4 GiB ([`handoff::identity_tables`]) |
//! | `0x6000` | `struct boot_params`                                    |
//! | `0x7000` | the command line, NUL-terminated                        |
//! | `0x7c00` | a copy of the ACPI RSDP, when the boot loader gave one  |

use super::start_info::e820_map;
use super::{LinuxError, start_info};
use crate::elf_load::{ImageKind, LoadPlan, Occupied};
use crate::handoff;
use crate::memmap::MemoryMap;
use okernel::memmap::PhysRange;

/// Size of the area.
pub const AREA_SIZE: usize = 0x8000;
const PARAMS: usize = handoff::TABLES_SIZE;
const CMDLINE: usize = 0x7000;
const RSDP: usize = 0x7c00;
/// The longest RSDP copied.
pub const MAX_RSDP: usize = 0x40;

/// Setup-header and zero-page offsets (`arch/x86/include/uapi/asm/bootparam.h`).
const ACPI_RSDP_ADDR: usize = 0x070;
const EXT_RAMDISK_IMAGE: usize = 0x0c0;
const EXT_RAMDISK_SIZE: usize = 0x0c4;
const EXT_CMD_LINE_PTR: usize = 0x0c8;
const E820_ENTRIES: usize = 0x1e8;
const SETUP_SECTS: usize = 0x1f1;
const BOOT_FLAG: usize = 0x1fe;
const JUMP: usize = 0x200;
const HEADER: usize = 0x202;
const VERSION: usize = 0x206;
const TYPE_OF_LOADER: usize = 0x210;
const LOADFLAGS: usize = 0x211;
const CODE32_START: usize = 0x214;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21c;
const CMD_LINE_PTR: usize = 0x228;
const KERNEL_ALIGNMENT: usize = 0x230;
const RELOCATABLE: usize = 0x234;
const XLOADFLAGS: usize = 0x236;
const CMDLINE_SIZE: usize = 0x238;
const PREF_ADDRESS: usize = 0x258;
const INIT_SIZE: usize = 0x260;
const E820_TABLE: usize = 0x2d0;
/// `E820_MAX_ENTRIES_ZEROPAGE`.
pub const MAX_E820: usize = 128;
/// 2.12 introduced `xloadflags` (the 64-bit entry is announced there);
/// 2.14 `acpi_rsdp_addr`.
pub const MIN_VERSION: u16 = 0x020c;
const XLF_KERNEL_64: u16 = 1 << 0;
const LOADED_HIGH: u8 = 1 << 0;
/// The 64-bit entry's offset from the load address (boot.rst: "the
/// kernel's 64-bit entry point is startup_64, at 0x200 from the start").
pub const ENTRY_64: u64 = 0x200;

fn le(b: &[u8], at: usize, n: usize) -> Option<u64> {
    let bytes = b.get(at..at + n)?;
    Some(bytes.iter().rev().fold(0, |v, &x| (v << 8) | u64::from(x)))
}

/// The setup-header fields the loader uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupHeader {
    /// Boot protocol version (0x020f = 2.15).
    pub version: u16,
    /// Where the protected-mode kernel starts in the file.
    pub kernel_offset: usize,
    /// Where the kernel wants to be loaded.
    pub pref_address: u64,
    /// Bytes the kernel needs from its load address to decompress.
    pub init_size: u64,
    /// The longest command line, without the NUL.
    pub cmdline_size: usize,
    /// The header bytes copied into the zero page: `[0x1f1, end)`.
    pub header_end: usize,
}

/// Reads and checks the setup header of a bzImage.
pub fn setup_header(image: &[u8]) -> Result<SetupHeader, LinuxError> {
    let f = |at, n| le(image, at, n).ok_or(LinuxError::BzImageTruncated);
    if f(BOOT_FLAG, 2)? != 0xaa55 || image.get(HEADER..HEADER + 4) != Some(b"HdrS") {
        return Err(LinuxError::BzImageTruncated);
    }
    let version = f(VERSION, 2)? as u16;
    if version < MIN_VERSION {
        return Err(LinuxError::BootProtocolTooOld(version));
    }
    if f(XLOADFLAGS, 2)? as u16 & XLF_KERNEL_64 == 0 {
        return Err(LinuxError::No64BitEntry);
    }
    if f(RELOCATABLE, 1)? == 0 {
        return Err(LinuxError::NotRelocatable);
    }
    let sects = match f(SETUP_SECTS, 1)? {
        0 => 4,
        n => n as usize,
    };
    let h = SetupHeader {
        version,
        kernel_offset: (sects + 1) * 512,
        pref_address: f(PREF_ADDRESS, 8)?,
        init_size: f(INIT_SIZE, 4)?,
        cmdline_size: f(CMDLINE_SIZE, 4)? as usize,
        header_end: (JUMP + 2 + f(JUMP + 1, 1)? as usize).min(E820_TABLE),
    };
    let align = f(KERNEL_ALIGNMENT, 4)?;
    if h.kernel_offset >= image.len()
        || h.header_end > image.len()
        || (align != 0 && !h.pref_address.is_multiple_of(align))
    {
        return Err(LinuxError::BzImageTruncated);
    }
    Ok(h)
}

/// Plans a bzImage's load: its protected-mode kernel at `pref_address`,
/// occupying `init_size` bytes from there (it decompresses in place),
/// in usable RAM clear of `fixed`.
pub fn plan(image: &[u8], ram: &MemoryMap, fixed: &[Occupied]) -> Result<LoadPlan, LinuxError> {
    let h = setup_header(image)?;
    let load = h.pref_address;
    let file = h.kernel_offset..image.len();
    // The 64-bit entry lies 0x200 into the protected-mode kernel: a file
    // that ends before it is no kernel.
    let dest = PhysRange::from_len(load, file.len() as u64)
        .filter(|d| d.len() > ENTRY_64)
        .ok_or(LinuxError::BzImageTruncated)?;
    let extent = PhysRange::from_len(load, h.init_size.max(dest.len()))
        .filter(|r| r.end <= 1 << 32)
        .ok_or(LinuxError::LoadRangeUnusable(dest))?;
    if !ram.is_usable(&extent) {
        return Err(LinuxError::LoadRangeUnusable(extent));
    }
    if let Some(o) = fixed.iter().find(|o| o.range.overlaps(&extent)) {
        return Err(LinuxError::LoadRangeCollides(extent, o.what));
    }
    Ok(LoadPlan::single(
        dest,
        file,
        load + ENTRY_64,
        extent,
        ImageKind::LinuxBzImage,
    ))
}

/// Checks what [`build`] would refuse — a command line longer than the
/// kernel's `cmdline_size`, an RSDP longer than [`MAX_RSDP`] — so the
/// loader refuses before it writes anything.
pub fn check(image: &[u8], cmdline: &str, rsdp: Option<&[u8]>) -> Result<SetupHeader, LinuxError> {
    let h = setup_header(image)?;
    let max = h.cmdline_size.min(RSDP - CMDLINE - 1);
    if cmdline.len() > max {
        return Err(LinuxError::CmdlineTooLong(cmdline.len(), max));
    }
    let n = rsdp.map_or(0, <[u8]>::len);
    if n > MAX_RSDP {
        return Err(LinuxError::StartInfo(
            start_info::StartInfoError::RsdpTooLong(n),
        ));
    }
    Ok(h)
}

/// What goes into the zero page (the same as a PVH start info's).
pub type Contents<'a> = start_info::Contents<'a>;

/// Fills `area` (seen by Linux at physical `base`) for the bzImage
/// `image` loaded as `plan` says; returns the physical addresses of the
/// PML4 (for CR3) and of the zero page (for RSI).
pub fn build(
    area: &mut [u8; AREA_SIZE],
    base: u64,
    image: &[u8],
    plan: &LoadPlan,
    c: &Contents<'_>,
) -> Result<(u64, u64), LinuxError> {
    let h = check(image, c.cmdline, c.rsdp)?;
    let rsdp = c.rsdp.unwrap_or_default();
    area.fill(0);
    handoff::identity_tables(area, base);

    let bp = &mut area[PARAMS..PARAMS + 0x1000];
    bp[SETUP_SECTS..h.header_end].copy_from_slice(&image[SETUP_SECTS..h.header_end]);
    let mut entries = 0;
    e820_map(c.firmware, c.carves, &mut |r, ty| {
        if r.is_empty() {
            return Ok(());
        }
        if entries == MAX_E820 {
            return Err(LinuxError::StartInfo(
                start_info::StartInfoError::TooManyRegions,
            ));
        }
        let at = E820_TABLE + entries * 20;
        put(bp, at, 8, r.start);
        put(bp, at + 8, 8, r.len());
        put(bp, at + 16, 4, u64::from(ty));
        entries += 1;
        Ok(())
    })?;
    bp[E820_ENTRIES] = entries as u8;
    bp[TYPE_OF_LOADER] = 0xff;
    bp[LOADFLAGS] = (bp[LOADFLAGS] | LOADED_HIGH) & LOADED_HIGH;
    let load = plan.segments().next().map_or(0, |s| s.dest.start);
    put(bp, CODE32_START, 4, load);
    let cmdline = base + CMDLINE as u64;
    put(bp, CMD_LINE_PTR, 4, cmdline & 0xffff_ffff);
    put(bp, EXT_CMD_LINE_PTR, 4, cmdline >> 32);
    put(bp, RAMDISK_IMAGE, 4, c.initrd.start & 0xffff_ffff);
    put(bp, EXT_RAMDISK_IMAGE, 4, c.initrd.start >> 32);
    put(bp, RAMDISK_SIZE, 4, c.initrd.len() & 0xffff_ffff);
    put(bp, EXT_RAMDISK_SIZE, 4, c.initrd.len() >> 32);
    if !rsdp.is_empty() {
        put(bp, ACPI_RSDP_ADDR, 8, base + RSDP as u64);
    }
    area[CMDLINE..CMDLINE + c.cmdline.len()].copy_from_slice(c.cmdline.as_bytes());
    area[RSDP..RSDP + rsdp.len()].copy_from_slice(rsdp);
    Ok((base, base + PARAMS as u64))
}

fn put(b: &mut [u8], at: usize, n: usize, v: u64) {
    b[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
}
