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
