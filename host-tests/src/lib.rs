//! Host tests of okernel's `no_std` crates live in `tests/`; this library
//! holds the builders they share.

/// A loadable segment for [`elf64`]: (physical = virtual address, file
/// bytes, memory size).
pub type SegmentSpec<'a> = (u64, &'a [u8], u64);

/// ELF header fields [`elf64_with`] lets a test change.
#[derive(Debug, Clone, Copy)]
pub struct ElfHeader {
    /// `e_ident[EI_CLASS]`: 2 = ELF64.
    pub class: u8,
    /// `e_ident[EI_DATA]`: 1 = little-endian.
    pub data: u8,
    /// `e_type`: 2 = ET_EXEC.
    pub e_type: u16,
    /// `e_machine`: 62 = x86-64.
    pub machine: u16,
    /// `e_entry`.
    pub entry: u64,
}

impl ElfHeader {
    /// A valid x86-64 executable header entering at `entry`.
    pub fn x86_64(entry: u64) -> Self {
        Self {
            class: 2,
            data: 1,
            e_type: 2,
            machine: 62,
            entry,
        }
    }
}

/// Builds a minimal ELF64 executable whose `PT_LOAD` segments are
/// `segments`, identity-linked.
pub fn elf64(entry: u64, segments: &[SegmentSpec<'_>]) -> Vec<u8> {
    elf64_with(ElfHeader::x86_64(entry), segments)
}

/// Like [`elf64`], with a chosen header.
pub fn elf64_with(h: ElfHeader, segments: &[SegmentSpec<'_>]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let mut data_off = EHDR + PHDR * segments.len();
    let mut out = vec![0u8; data_off];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = h.class;
    out[5] = h.data;
    out[6] = 1; // EI_VERSION
    out[16..18].copy_from_slice(&h.e_type.to_le_bytes());
    out[18..20].copy_from_slice(&h.machine.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..32].copy_from_slice(&h.entry.to_le_bytes());
    out[32..40].copy_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    out[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes()); // e_ehsize
    out[54..56].copy_from_slice(&(PHDR as u16).to_le_bytes()); // e_phentsize
    out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes()); // e_phnum
    for (i, &(addr, bytes, memsz)) in segments.iter().enumerate() {
        let ph = &mut out[EHDR + i * PHDR..EHDR + (i + 1) * PHDR];
        ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        ph[8..16].copy_from_slice(&(data_off as u64).to_le_bytes());
        ph[16..24].copy_from_slice(&addr.to_le_bytes());
        ph[24..32].copy_from_slice(&addr.to_le_bytes());
        ph[32..40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        ph[40..48].copy_from_slice(&memsz.to_le_bytes());
        ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
        data_off += bytes.len();
    }
    for &(_, bytes, _) in segments {
        out.extend_from_slice(bytes);
    }
    out
}

/// Offset of program header `i`'s field at `field` (for corrupting one).
pub fn phdr_field(i: usize, field: usize) -> usize {
    64 + 56 * i + field
}

/// A valid multiboot2 header (magic, arch 0, length 24, checksum, end tag).
pub fn multiboot2_header() -> Vec<u8> {
    let magic: u32 = 0xE852_50D6;
    let len: u32 = 24;
    let sum = 0u32.wrapping_sub(magic.wrapping_add(len));
    let mut h = Vec::new();
    for w in [magic, 0, len, sum] {
        h.extend_from_slice(&w.to_le_bytes());
    }
    h.extend_from_slice(&[0, 0, 0, 0, 8, 0, 0, 0]); // end tag
    h
}

/// Builds a minimal ELF32 i386 executable with one identity-linked
/// `PT_LOAD` segment holding `bytes` at `addr` (memory size `memsz`).
pub fn elf32(entry: u32, addr: u32, bytes: &[u8], memsz: u32, machine: u16) -> Vec<u8> {
    const EHDR: usize = 52;
    const PHDR: usize = 32;
    // Data 8-aligned in the file, as a linker would place a multiboot2
    // header (the header search looks at 8-byte boundaries only).
    let data_off = (EHDR + PHDR).next_multiple_of(8) as u32;
    let mut out = vec![0u8; data_off as usize];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 1; // ELFCLASS32
    out[5] = 1; // little-endian
    out[6] = 1;
    out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out[18..20].copy_from_slice(&machine.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..28].copy_from_slice(&entry.to_le_bytes());
    out[28..32].copy_from_slice(&(EHDR as u32).to_le_bytes()); // e_phoff
    out[40..42].copy_from_slice(&(EHDR as u16).to_le_bytes());
    out[42..44].copy_from_slice(&(PHDR as u16).to_le_bytes());
    out[44..46].copy_from_slice(&1u16.to_le_bytes());
    let ph = &mut out[EHDR..EHDR + PHDR];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[4..8].copy_from_slice(&data_off.to_le_bytes());
    ph[8..12].copy_from_slice(&addr.to_le_bytes());
    ph[12..16].copy_from_slice(&addr.to_le_bytes());
    ph[16..20].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    ph[20..24].copy_from_slice(&memsz.to_le_bytes());
    ph[24..28].copy_from_slice(&7u32.to_le_bytes());
    ph[28..32].copy_from_slice(&0x1000u32.to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

/// Fixtures of the Linux loader tests (`tests/linux_*.rs`).
pub mod linux {
    use loader::elf_load::Occupied;
    use loader::memmap::{FirmwareKind, MemoryMap, PhysRange};

    /// Where okernel's image lies in these tests.
    pub const OKERNEL: Occupied = Occupied {
        what: "the okernel image",
        range: PhysRange {
            start: 0x10_0000,
            end: 0x15_0000,
        },
    };

    /// The range `[start, end)`.
    pub fn r(start: u64, end: u64) -> PhysRange {
        PhysRange { start, end }
    }

    /// A PC-like map of `mib` MiB: low RAM, the BIOS area reserved, RAM
    /// from 1 MiB, the last 64 KiB ACPI tables.
    pub fn ram(mib: u64) -> MemoryMap {
        let mut m = MemoryMap::new();
        m.add(0, 0x9_f000, FirmwareKind::Usable).unwrap();
        m.add(0xf_0000, 0x1_0000, FirmwareKind::Reserved).unwrap();
        m.add(0x10_0000, (mib << 20) - 0x11_0000, FirmwareKind::Usable)
            .unwrap();
        m.add(
            (mib << 20) - 0x1_0000,
            0x1_0000,
            FirmwareKind::AcpiReclaimable,
        )
        .unwrap();
        m
    }
}
