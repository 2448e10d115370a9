//! Linux as the guest kernel: the ELF vmlinux entered at its PVH entry,
//! or the bzImage through the boot protocol ([`boot_params`]).
//!
//! A first boot module that is an ELF64 x86-64 executable carrying a
//! `XEN_ELFNOTE_PHYS32_ENTRY` note (type 18, owner "Xen", in a `PT_NOTE`
//! segment; Xen `public/elfnote.h`) is a Linux kernel built with
//! `CONFIG_PVH`. It is linked at `0xffffffff8...` but its `PT_LOAD`
//! segments carry their physical load addresses in `p_paddr`; it is
//! entered at the note's physical address in 32-bit protected mode,
//! paging off, EBX = an `hvm_start_info` ([`start_info`]; Xen
//! `docs/misc/pvh.pandoc`, `public/arch-x86/hvm/start_info.h`).
//!
//! The second boot module is the initramfs. GRUB places modules low,
//! right after okernel, where they usually overlap the kernel's load
//! range (Debian's 6.1 kernel loads at 16 MiB–74 MiB). [`layout`] plans,
//! before anything is written, where each module moves to when it lies
//! in the way, and where the start-info area and the monitor's frame pool
//! go; a plan that does not fit is refused with the reason.

pub mod boot_params;
pub mod start_info;

use crate::elf_load::{self, ElfError, ImageKind, LoadPlan, Occupied};
use crate::memmap::MemoryMap;
use core::fmt;
use okernel::memmap::PhysRange;

/// The Xen ELF note that names the PVH 32-bit entry (`public/elfnote.h`).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const PT_NOTE: u32 = 4;

/// The physical PVH entry point of an ELF64 x86-64 `image`, when it has a
/// `XEN_ELFNOTE_PHYS32_ENTRY` note (4- or 8-byte descriptor) in a
/// `PT_NOTE` segment; `None` for anything else.
pub fn pvh_entry(image: &[u8]) -> Option<u64> {
    fn le<const N: usize>(image: &[u8], at: usize) -> Option<[u8; N]> {
        image.get(at..at.checked_add(N)?)?.try_into().ok()
    }
    let u16_at = |at| le::<2>(image, at).map(u16::from_le_bytes);
    let u32_at = |at| le::<4>(image, at).map(u32::from_le_bytes);
    let u64_at = |at| le::<8>(image, at).map(u64::from_le_bytes);
    // ELF64, little-endian, x86-64 (ELF gABI; e_machine 62).
    if image.get(..6)? != b"\x7fELF\x02\x01" || u16_at(18)? != 62 {
        return None;
    }
    let phoff = usize::try_from(u64_at(32)?).ok()?;
    let phentsize = usize::from(u16_at(54)?);
    let phnum = usize::from(u16_at(56)?);
    if phentsize < 56 {
        return None;
    }
    (0..phnum).find_map(|i| {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_NOTE {
            return None;
        }
        let off = usize::try_from(u64_at(ph.checked_add(8)?)?).ok()?;
        let size = usize::try_from(u64_at(ph.checked_add(32)?)?).ok()?;
        let notes = image.get(off..off.checked_add(size)?)?;
        find_phys32_entry(notes)
    })
}

/// Walks a note segment (ELF gABI "Note Section": namesz, descsz, type,
/// name and descriptor each padded to 4 bytes).
fn find_phys32_entry(mut notes: &[u8]) -> Option<u64> {
    let pad = |n: usize| n.checked_add(3).map(|n| n & !3);
    while notes.len() >= 12 {
        let word = |at: usize| {
            u32::from_le_bytes([notes[at], notes[at + 1], notes[at + 2], notes[at + 3]])
        };
        let (namesz, descsz, ty) = (word(0) as usize, word(4) as usize, word(8));
        let name_end = 12usize.checked_add(pad(namesz)?)?;
        let desc_end = name_end.checked_add(pad(descsz)?)?;
        let name = notes.get(12..12 + namesz)?;
        let desc = notes.get(name_end..name_end + descsz)?;
        if name == b"Xen\0" && ty == XEN_ELFNOTE_PHYS32_ENTRY {
            return match *desc {
                [a, b, c, d] => Some(u64::from(u32::from_le_bytes([a, b, c, d]))),
                [a, b, c, d, e, f, g, h] => Some(u64::from_le_bytes([a, b, c, d, e, f, g, h])),
                _ => None,
            };
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

/// Whether `image` is a bzImage (the Linux/x86 boot protocol's setup
/// header: `boot_flag` 0xAA55 at 0x1FE, "HdrS" at 0x202;
/// `Documentation/arch/x86/boot.rst`).
pub fn is_bzimage(image: &[u8]) -> bool {
    image.get(0x1fe..0x200) == Some(&[0x55, 0xaa]) && image.get(0x202..0x206) == Some(b"HdrS")
}

/// The holes of `map` below `limit`, widened inward to whole pages: the
/// physical addresses no firmware entry describes, where a PC has its
/// MMIO (the legacy VGA/BIOS hole, PCI BARs, the I/O APIC at 0xFEC00000,
/// the HPET at 0xFED00000, the local APIC at 0xFEE00000). A Linux guest
/// touches them, so the base EPT view maps them uncached.
pub fn mmio_holes(map: &MemoryMap, limit: u64, emit: &mut dyn FnMut(PhysRange)) {
    let mut at = 0;
    for r in map.regions().iter().map(|r| r.range) {
        if r.start > at && at < limit {
            let hole = PhysRange {
                start: at.next_multiple_of(0x1000),
                end: r.start.min(limit) & !0xfff,
            };
            if !hole.is_empty() {
                emit(hole);
            }
        }
        at = at.max(r.end);
    }
    if at < limit {
        let tail = PhysRange {
            start: at.next_multiple_of(0x1000),
            end: limit & !0xfff,
        };
        if !tail.is_empty() {
            emit(tail);
        }
    }
}

/// Why a Linux guest was refused.
#[derive(Debug)]
pub enum LinuxError {
    /// The bzImage's setup header is missing, truncated or inconsistent.
    BzImageTruncated,
    /// The bzImage's boot protocol is older than 2.12 (no `xloadflags`).
    BootProtocolTooOld(u16),
    /// The bzImage has no 64-bit entry (`XLF_KERNEL_64`).
    No64BitEntry,
    /// The bzImage is not relocatable (it would load at 1 MiB, okernel's).
    NotRelocatable,
    /// The kernel's load range is not usable RAM below 4 GiB.
    LoadRangeUnusable(PhysRange),
    /// The kernel's load range overlaps the named thing.
    LoadRangeCollides(PhysRange, &'static str),
    /// The command line is longer than the kernel takes.
    CmdlineTooLong(usize, usize),
    /// The kernel's image was refused.
    Elf(ElfError),
    /// The ELF64 kernel has no `XEN_ELFNOTE_PHYS32_ENTRY` note.
    NoPvhNote,
    /// No second boot module (the initramfs).
    InitrdMissing,
    /// The initramfs overlaps something that cannot move.
    InitrdOverlaps(&'static str),
    /// The PVH entry lies above 4 GiB (it is entered in 32-bit mode).
    EntryAbove4GiB(u64),
    /// Not enough free RAM below 4 GiB for the named thing.
    NoRoom {
        /// What needed room.
        what: &'static str,
        /// How many bytes.
        bytes: u64,
    },
    /// The start info could not be built.
    StartInfo(start_info::StartInfoError),
}

impl fmt::Display for LinuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinuxError::BzImageTruncated => {
                write!(
                    f,
                    "Linux bzImage: setup header missing, truncated or inconsistent"
                )
            }
            LinuxError::BootProtocolTooOld(v) => write!(
                f,
                "Linux bzImage: boot protocol {}.{:02} is too old (need {}.{:02} or later)",
                v >> 8,
                v & 0xff,
                boot_params::MIN_VERSION >> 8,
                boot_params::MIN_VERSION & 0xff
            ),
            LinuxError::No64BitEntry => {
                write!(f, "Linux bzImage has no 64-bit entry (XLF_KERNEL_64 clear)")
            }
            LinuxError::NotRelocatable => write!(
                f,
                "Linux bzImage is not relocatable (it must load at 1 MiB, where okernel lies)"
            ),
            LinuxError::LoadRangeUnusable(r) => {
                write!(
                    f,
                    "Linux kernel load range {r} is not usable RAM below 4 GiB"
                )
            }
            LinuxError::LoadRangeCollides(r, what) => {
                write!(f, "Linux kernel load range {r} would overwrite {what}")
            }
            LinuxError::CmdlineTooLong(n, max) => write!(
                f,
                "Linux kernel command line has {n} bytes (the kernel takes at most {max})"
            ),
            LinuxError::Elf(e) => write!(f, "Linux vmlinux: {e}"),
            LinuxError::NoPvhNote => write!(
                f,
                "Linux vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): \
                 build it with CONFIG_PVH=y"
            ),
            LinuxError::InitrdMissing => write!(
                f,
                "Linux guest: no initramfs: pass it as the second boot module \
                 (GRUB `module2 /boot/initrd.img`)"
            ),
            LinuxError::InitrdOverlaps(what) => {
                write!(f, "Linux guest: the initramfs overlaps {what}")
            }
            LinuxError::EntryAbove4GiB(e) => {
                write!(f, "Linux vmlinux: PVH entry {e:#x} lies above 4 GiB")
            }
            LinuxError::NoRoom { what, bytes } => write!(
                f,
                "Linux guest: memory too small: no {} KiB of free RAM below 4 GiB for {what}",
                bytes.div_ceil(1024)
            ),
            LinuxError::StartInfo(e) => write!(f, "Linux guest: {e}"),
        }
    }
}

/// A module copied elsewhere before the kernel is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// Where it lies now.
    pub from: PhysRange,
    /// Where it goes (same length).
    pub to: PhysRange,
}

/// Where everything of a Linux boot goes, validated as a whole.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The kernel's segments at their physical addresses.
    pub plan: LoadPlan,
    /// The initramfs moved clear of the kernel, first (`None`: it stays).
    pub initrd_move: Option<Move>,
    /// The vmlinux moved clear of the kernel's load range, second.
    pub kernel_move: Option<Move>,
    /// Where the initramfs lies when Linux starts.
    pub initrd: PhysRange,
    /// The hand-over area: the PVH start info ([`start_info::AREA_SIZE`]
    /// bytes) or the bzImage's page tables and zero page
    /// ([`boot_params::AREA_SIZE`]).
    pub area: PhysRange,
    /// The monitor's frame pool.
    pub pool: PhysRange,
}

impl Layout {
    /// Where the vmlinux bytes are read from when the segments are copied.
    pub fn kernel_source(&self, module: PhysRange) -> PhysRange {
        self.kernel_move.map_or(module, |m| m.to)
    }
}

/// Checks, before anything is written, what the start info (PVH) or the
/// zero page (bzImage) of `plan` would refuse: the command line's length,
/// the RSDP's.
pub fn check_handover(
    image: &[u8],
    plan: &LoadPlan,
    cmdline: &str,
    rsdp: Option<&[u8]>,
) -> Result<(), LinuxError> {
    match plan.kind {
        ImageKind::LinuxBzImage => boot_params::check(image, cmdline, rsdp).map(|_| ()),
        _ => start_info::check(cmdline, rsdp).map_err(LinuxError::StartInfo),
    }
}

/// Plans a Linux boot: `image` (the vmlinux or bzImage, at `kernel` in memory) and
/// the initramfs at `initrd`, in `ram`, away from `fixed` (okernel's image,
/// the boot information); a `pool_bytes` frame pool is placed too.
pub fn layout(
    image: &[u8],
    kernel: PhysRange,
    initrd: PhysRange,
    ram: &MemoryMap,
    fixed: &[Occupied],
    pool_bytes: u64,
) -> Result<Layout, LinuxError> {
    if let Some(o) = fixed.iter().find(|o| o.range.overlaps(&initrd)) {
        return Err(LinuxError::InitrdOverlaps(o.what));
    }
    if initrd.overlaps(&kernel) {
        return Err(LinuxError::InitrdOverlaps("the kernel module"));
    }
    let (plan, area_size) = if is_bzimage(image) {
        (
            boot_params::plan(image, ram, fixed)?,
            boot_params::AREA_SIZE,
        )
    } else {
        let entry = pvh_entry(image).ok_or(LinuxError::NoPvhNote)?;
        if entry > u64::from(u32::MAX) {
            return Err(LinuxError::EntryAbove4GiB(entry));
        }
        let plan = elf_load::plan_physical(image, ram, fixed, entry).map_err(LinuxError::Elf)?;
        (plan, start_info::AREA_SIZE)
    };

    const MAX_AVOID: usize = 16;
    let mut avoid = [PhysRange::new(0, 0); MAX_AVOID];
    let mut n = 0;
    for r in fixed
        .iter()
        .map(|o| o.range)
        .chain([plan.extent, kernel, initrd])
        .take(MAX_AVOID - 4)
    {
        avoid[n] = r;
        n += 1;
    }
    let mut place = |what: &'static str, bytes: u64| -> Result<PhysRange, LinuxError> {
        let r = ram
            .find_free(bytes, 0x1000, 1 << 20, &avoid[..n])
            .filter(|r| r.end <= 1 << 32)
            .ok_or(LinuxError::NoRoom { what, bytes })?;
        avoid[n] = r;
        n += 1;
        Ok(r)
    };
    let initrd_move = match initrd.overlaps(&plan.extent) {
        true => Some(Move {
            from: initrd,
            to: place("the initramfs moved clear of the kernel", initrd.len())?,
        }),
        false => None,
    };
    let kernel_move = match kernel.overlaps(&plan.extent) {
        true => Some(Move {
            from: kernel,
            to: place("the vmlinux moved clear of its load range", kernel.len())?,
        }),
        false => None,
    };
    let area = place("the start info or zero page", area_size as u64)?;
    let pool = place("the monitor's frame pool", pool_bytes)?;
    Ok(Layout {
        initrd: initrd_move.map_or(initrd, |m| m.to),
        plan,
        initrd_move,
        kernel_move,
        area,
        pool,
    })
}
