//! Validating a guest kernel image and planning where its segments go,
//! before a single byte is copied: a bad image is refused with a message
//! naming the cause and memory is left untouched.
//!
//! Two kinds of image are accepted, both statically linked at their load
//! address (`ET_EXEC`, identity-linked):
//! - ELF64 x86-64: entered in 64-bit mode with the okernel hand-off
//!   (`okernel_abi::boot`);
//! - ELF32 i386 carrying a multiboot2 header in its first 32 KiB
//!   (multiboot2 specification §3.1): entered in 32-bit protected mode
//!   with paging off, EAX = magic, EBX = multiboot2 information.
//!
//! A third kind, Linux's ELF vmlinux, is linked high and loaded at its
//! segments' *physical* addresses ([`plan_physical`], used by
//! [`crate::linux`]).

use crate::memmap::MemoryMap;
use core::fmt;
use elf::ElfBytes;
use elf::abi::{EM_386, EM_X86_64, ET_EXEC, PT_LOAD};
use elf::endian::LittleEndian;
use elf::file::Class;
use okernel::memmap::PhysRange;

/// The most loadable segments a guest image may have.
pub const MAX_SEGMENTS: usize = 16;

/// One segment to load: copy `file` bytes of the image to `dest.start`,
/// then zero the rest of `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Where the segment goes (physical; the guest is identity-linked).
    pub dest: PhysRange,
    /// The bytes of the image to copy there.
    pub file: core::ops::Range<usize>,
}

/// A validated image, ready to be copied.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    segments: [Option<Segment>; MAX_SEGMENTS],
    /// The entry point.
    pub entry: u64,
    /// From the lowest to the highest byte any segment occupies.
    pub extent: PhysRange,
    /// How the image wants to be entered.
    pub kind: ImageKind,
}

/// How a guest image is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// ELF64 x86-64: 64-bit mode, okernel hand-off.
    Elf64,
    /// ELF32 i386 with a multiboot2 header: 32-bit protected mode.
    Multiboot32,
    /// Linux's ELF vmlinux: loaded at `p_paddr`, entered at its PVH entry
    /// in 32-bit protected mode with EBX = `hvm_start_info`.
    LinuxPvh,
    /// Linux's bzImage: its protected-mode code loaded at
    /// `pref_address`, entered at its 64-bit entry with RSI = the
    /// `boot_params` (Linux/x86 boot protocol).
    LinuxBzImage,
}

impl LoadPlan {
    /// A plan of one segment: `file` bytes of the image copied to `dest`,
    /// entered at `entry`; `extent` is what the image occupies once
    /// running (at least `dest`: a bzImage decompresses in place).
    pub fn single(
        dest: PhysRange,
        file: core::ops::Range<usize>,
        entry: u64,
        extent: PhysRange,
        kind: ImageKind,
    ) -> Self {
        let mut segments: [Option<Segment>; MAX_SEGMENTS] = Default::default();
        segments[0] = Some(Segment { dest, file });
        Self {
            segments,
            entry,
            extent,
            kind,
        }
    }

    /// The segments, in image order.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().flatten()
    }
}

/// A range the guest must not be loaded over, with a name for messages.
#[derive(Debug, Clone, Copy)]
pub struct Occupied {
    /// What lives there ("the okernel image", "the guest module", ...).
    pub what: &'static str,
    /// Where.
    pub range: PhysRange,
}

/// Why a guest image was refused.
#[derive(Debug)]
pub enum ElfError {
    /// The module is not an ELF file (or its headers are truncated).
    NotElf(elf::ParseError),
    /// The module is ELF32 but has no valid multiboot2 header.
    Elf32WithoutMultiboot2,
    /// The module is big-endian.
    BigEndian,
    /// The module is built for another machine.
    WrongMachine(u16),
    /// The module is not an executable (`ET_EXEC`).
    NotExecutable(u16),
    /// The module has no loadable segment.
    NoLoadableSegments,
    /// The module has more loadable segments than okernel supports.
    TooManySegments,
    /// A segment's file bytes lie outside the module.
    SegmentOutsideFile(usize),
    /// A segment has more file bytes than memory bytes, or wraps around.
    BadSegmentSize(usize),
    /// A segment's virtual and physical addresses differ.
    NotIdentityLinked {
        /// The segment.
        index: usize,
        /// Its virtual address.
        vaddr: u64,
        /// Its physical address.
        paddr: u64,
    },
    /// Two segments overlap.
    Overlap(usize, usize),
    /// A segment lies (partly) outside usable RAM.
    OutsideRam(usize, PhysRange),
    /// A segment would overwrite something in use.
    Collides {
        /// The segment.
        index: usize,
        /// Its destination.
        range: PhysRange,
        /// What it would overwrite.
        what: &'static str,
    },
    /// The entry point lies in no segment.
    EntryOutside(u64),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::NotElf(e) => write!(f, "guest module is not a valid ELF file: {e}"),
            ElfError::Elf32WithoutMultiboot2 => write!(
                f,
                "guest module is ELF32 without a valid multiboot2 header in its first 32 KiB"
            ),
            ElfError::BigEndian => write!(f, "guest module is big-endian, not x86-64"),
            ElfError::WrongMachine(m) => {
                write!(
                    f,
                    "guest module is for ELF machine {m}, not x86-64 ({EM_X86_64})"
                )
            }
            ElfError::NotExecutable(t) => {
                write!(
                    f,
                    "guest module is ELF type {t}, not an executable (ET_EXEC)"
                )
            }
            ElfError::NoLoadableSegments => write!(f, "guest module has no loadable segment"),
            ElfError::TooManySegments => {
                write!(
                    f,
                    "guest module has more than {MAX_SEGMENTS} loadable segments"
                )
            }
            ElfError::SegmentOutsideFile(i) => {
                write!(f, "guest segment {i}: file bytes lie outside the module")
            }
            ElfError::BadSegmentSize(i) => {
                write!(
                    f,
                    "guest segment {i}: file size exceeds memory size or wraps"
                )
            }
            ElfError::NotIdentityLinked {
                index,
                vaddr,
                paddr,
            } => write!(
                f,
                "guest segment {index}: vaddr {vaddr:#x} != paddr {paddr:#x} (the guest must be identity-linked, or be a Linux vmlinux with a PVH entry note, XEN_ELFNOTE_PHYS32_ENTRY)"
            ),
            ElfError::Overlap(a, b) => write!(f, "guest segments {a} and {b} overlap"),
            ElfError::OutsideRam(i, r) => {
                write!(f, "guest segment {i} at {r} lies outside usable RAM")
            }
            ElfError::Collides { index, range, what } => {
                write!(f, "guest segment {index} at {range} would overwrite {what}")
            }
            ElfError::EntryOutside(e) => write!(f, "guest entry point {e:#x} lies in no segment"),
        }
    }
}

/// Validates `image` and plans its load into `ram`, away from `occupied`.
pub fn plan(image: &[u8], ram: &MemoryMap, occupied: &[Occupied]) -> Result<LoadPlan, ElfError> {
    let file = parse(image)?;
    let ehdr = &file.ehdr;
    let (kind, machine) = match ehdr.class {
        Class::ELF64 => (ImageKind::Elf64, EM_X86_64),
        Class::ELF32 => (ImageKind::Multiboot32, EM_386),
    };
    if ehdr.e_machine != machine {
        return Err(ElfError::WrongMachine(ehdr.e_machine));
    }
    if kind == ImageKind::Multiboot32 && !has_multiboot2_header(image) {
        return Err(ElfError::Elf32WithoutMultiboot2);
    }
    plan_segments(image, &file, ram, occupied, kind, ehdr.e_entry)
}

/// Validates an ELF64 x86-64 `image` and plans its load at its segments'
/// physical addresses (`p_paddr`; the virtual ones are ignored), entered
/// at the physical address `entry` (Linux's vmlinux and its PVH entry).
pub fn plan_physical(
    image: &[u8],
    ram: &MemoryMap,
    occupied: &[Occupied],
    entry: u64,
) -> Result<LoadPlan, ElfError> {
    let file = parse(image)?;
    if file.ehdr.class != Class::ELF64 || file.ehdr.e_machine != EM_X86_64 {
        return Err(ElfError::WrongMachine(file.ehdr.e_machine));
    }
    plan_segments(image, &file, ram, occupied, ImageKind::LinuxPvh, entry)
}

fn parse(image: &[u8]) -> Result<ElfBytes<'_, LittleEndian>, ElfError> {
    ElfBytes::<LittleEndian>::minimal_parse(image).map_err(|e| match e {
        elf::ParseError::UnsupportedElfEndianness(_) => ElfError::BigEndian,
        e => ElfError::NotElf(e),
    })
}

fn plan_segments(
    image: &[u8],
    file: &ElfBytes<'_, LittleEndian>,
    ram: &MemoryMap,
    occupied: &[Occupied],
    kind: ImageKind,
    entry: u64,
) -> Result<LoadPlan, ElfError> {
    if file.ehdr.e_type != ET_EXEC {
        return Err(ElfError::NotExecutable(file.ehdr.e_type));
    }
    let phdrs = file.segments().ok_or(ElfError::NoLoadableSegments)?;

    let mut plan = LoadPlan {
        segments: Default::default(),
        entry,
        extent: PhysRange {
            start: u64::MAX,
            end: 0,
        },
        kind,
    };
    let mut count = 0;
    for (index, ph) in phdrs.iter().filter(|p| p.p_type == PT_LOAD).enumerate() {
        if ph.p_memsz == 0 {
            continue;
        }
        if count == MAX_SEGMENTS {
            return Err(ElfError::TooManySegments);
        }
        if kind != ImageKind::LinuxPvh && ph.p_vaddr != ph.p_paddr {
            return Err(ElfError::NotIdentityLinked {
                index,
                vaddr: ph.p_vaddr,
                paddr: ph.p_paddr,
            });
        }
        let dest = match PhysRange::from_len(ph.p_paddr, ph.p_memsz) {
            Some(r) if ph.p_filesz <= ph.p_memsz => r,
            _ => return Err(ElfError::BadSegmentSize(index)),
        };
        let file_range = usize::try_from(ph.p_offset)
            .ok()
            .zip(usize::try_from(ph.p_filesz).ok())
            .and_then(|(o, n)| Some(o..o.checked_add(n)?))
            .filter(|r| r.end <= image.len())
            .ok_or(ElfError::SegmentOutsideFile(index))?;
        if !ram.is_usable(&dest) {
            return Err(ElfError::OutsideRam(index, dest));
        }
        if let Some(o) = occupied.iter().find(|o| o.range.overlaps(&dest)) {
            return Err(ElfError::Collides {
                index,
                range: dest,
                what: o.what,
            });
        }
        for (other, seg) in plan.segments().enumerate() {
            if seg.dest.overlaps(&dest) {
                return Err(ElfError::Overlap(other, index));
            }
        }
        plan.extent.start = plan.extent.start.min(dest.start);
        plan.extent.end = plan.extent.end.max(dest.end);
        plan.segments[count] = Some(Segment {
            dest,
            file: file_range,
        });
        count += 1;
    }
    if count == 0 {
        return Err(ElfError::NoLoadableSegments);
    }
    if !plan.segments().any(|s| s.dest.contains(plan.entry)) {
        return Err(ElfError::EntryOutside(plan.entry));
    }
    Ok(plan)
}

/// The multiboot2 header magic (multiboot2 specification §3.1.1).
const MULTIBOOT2_HEADER_MAGIC: u32 = 0xE852_50D6;
/// Where the header must lie: 64-bit aligned, in the first 32 KiB.
const MULTIBOOT2_SEARCH: usize = 32 * 1024;

/// Whether `image` carries a valid multiboot2 header: magic, architecture
/// 0 (i386), a header length of at least 16 that fits the file, and a
/// checksum that makes the first four fields sum to zero.
pub fn has_multiboot2_header(image: &[u8]) -> bool {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?))
    };
    (0..image.len().min(MULTIBOOT2_SEARCH))
        .step_by(8)
        .any(|at| {
            let (Some(magic), Some(arch), Some(len), Some(sum)) =
                (word(at), word(at + 4), word(at + 8), word(at + 12))
            else {
                return false;
            };
            magic == MULTIBOOT2_HEADER_MAGIC
                && arch == 0
                && len >= 16
                && at + len as usize <= image.len()
                && magic.wrapping_add(arch).wrapping_add(len).wrapping_add(sum) == 0
        })
}
