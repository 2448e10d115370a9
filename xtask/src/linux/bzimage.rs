//! The ELF vmlinux inside a bzImage: the setup header says where the
//! compressed payload is (Linux/x86 boot protocol, `Documentation/arch/
//! x86/boot.rst`: `setup_sects` at 0x1f1, `HdrS` at 0x202, the protocol
//! version at 0x206, `payload_offset`/`payload_length` at 0x248/0x24c
//! from 2.08 on, relative to the protected-mode code that starts after
//! the `setup_sects + 1` real-mode sectors). Debian compresses it with XZ
//! (with the x86 BCJ filter), which `liblzma` decodes.

use std::io::Read;

/// What the setup header of a bzImage says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupHeader {
    /// The boot protocol version (`0x020f` is 2.15).
    pub version: u16,
    /// Where the compressed payload starts in the file.
    pub payload_start: usize,
    /// Its length.
    pub payload_len: usize,
}

/// Why a file is not a bzImage we can unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BzError {
    /// Shorter than a setup header.
    TooShort,
    /// No `HdrS` signature at 0x202.
    NoHeader,
    /// A protocol older than 2.08 has no payload fields.
    TooOld(u16),
    /// The payload lies outside the file.
    PayloadOutside,
    /// The payload is not XZ.
    NotXz,
    /// XZ decoding failed.
    Xz(String),
    /// The payload is not an ELF64 x86-64 file.
    NotElf,
}

impl std::fmt::Display for BzError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BzError::TooShort => write!(f, "too short for a Linux setup header"),
            BzError::NoHeader => write!(f, "no `HdrS` setup header signature at 0x202"),
            BzError::TooOld(v) => write!(
                f,
                "boot protocol {}.{:02} is older than 2.08 (no payload fields)",
                v >> 8,
                v & 0xff
            ),
            BzError::PayloadOutside => write!(f, "the payload lies outside the file"),
            BzError::NotXz => write!(f, "the payload is not XZ-compressed"),
            BzError::Xz(e) => write!(f, "XZ decoding failed: {e}"),
            BzError::NotElf => write!(f, "the payload is not an ELF64 x86-64 file"),
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Reads the setup header of `image`.
pub fn setup_header(image: &[u8]) -> Result<SetupHeader, BzError> {
    if image.len() < 0x250 {
        return Err(BzError::TooShort);
    }
    if &image[0x202..0x206] != b"HdrS" {
        return Err(BzError::NoHeader);
    }
    let version = u16_at(image, 0x206);
    if version < 0x0208 {
        return Err(BzError::TooOld(version));
    }
    // setup_sects of 0 means 4 (boot.rst).
    let sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let pm_start = (sects + 1) * 512;
    let payload_start = pm_start + u32_at(image, 0x248) as usize;
    let payload_len = u32_at(image, 0x24c) as usize;
    if payload_start
        .checked_add(payload_len)
        .is_none_or(|end| end > image.len())
    {
        return Err(BzError::PayloadOutside);
    }
    Ok(SetupHeader {
        version,
        payload_start,
        payload_len,
    })
}

/// The uncompressed ELF vmlinux inside `image`.
pub fn vmlinux(image: &[u8]) -> Result<Vec<u8>, BzError> {
    let h = setup_header(image)?;
    let payload = &image[h.payload_start..h.payload_start + h.payload_len];
    if !payload.starts_with(b"\xfd7zXZ\0") {
        return Err(BzError::NotXz);
    }
    let mut out = Vec::with_capacity(payload.len() * 8);
    liblzma::read::XzDecoder::new(payload)
        .read_to_end(&mut out)
        .map_err(|e| BzError::Xz(e.to_string()))?;
    // ELFCLASS64, little-endian, EM_X86_64.
    if out.len() < 64
        || &out[..4] != b"\x7fELF"
        || out[4] != 2
        || out[5] != 1
        || u16_at(&out, 18) != 62
    {
        return Err(BzError::NotElf);
    }
    Ok(out)
}

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH entry point note.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// The PVH entry point a vmlinux names in its `Xen` notes, if any.
pub fn pvh_entry(elf: &[u8]) -> Option<u32> {
    let file = elf::ElfBytes::<elf::endian::LittleEndian>::minimal_parse(elf).ok()?;
    let segments = file.segments()?;
    for ph in segments.iter().filter(|p| p.p_type == elf::abi::PT_NOTE) {
        let Ok(notes) = file.segment_data_as_notes(&ph) else {
            continue;
        };
        for note in notes {
            if let elf::note::Note::Unknown(n) = note
                && n.name.strip_suffix(b"\0").unwrap_or(n.name) == b"Xen"
                && n.n_type == u64::from(XEN_ELFNOTE_PHYS32_ENTRY)
                && n.desc.len() >= 4
            {
                return Some(u32_at(n.desc, 0));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A bzImage-shaped file: `sects` setup sectors, then a payload.
    fn bz(version: u16, sects: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; (usize::from(sects) + 1) * 512];
        f[0x1f1] = sects;
        f[0x202..0x206].copy_from_slice(b"HdrS");
        f[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        f[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        f[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(&[0u8; 16]);
        f.extend_from_slice(payload);
        f
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn finds_and_unpacks_the_payload() {
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[18] = 62;
        let image = bz(0x020f, 3, &xz(&elf));
        let h = setup_header(&image).unwrap();
        assert_eq!(h.version, 0x020f);
        assert_eq!(h.payload_start, 4 * 512 + 16);
        assert_eq!(vmlinux(&image).unwrap(), elf);
    }

    #[test]
    fn refuses_what_it_cannot_unpack_naming_why() {
        assert_eq!(setup_header(&[0; 16]), Err(BzError::TooShort));
        assert_eq!(setup_header(&[0; 0x400]), Err(BzError::NoHeader));
        assert_eq!(
            setup_header(&bz(0x0206, 1, b"x")),
            Err(BzError::TooOld(0x0206))
        );
        let mut cut = bz(0x020f, 1, b"payload");
        cut.truncate(cut.len() - 2);
        assert_eq!(setup_header(&cut), Err(BzError::PayloadOutside));
        assert_eq!(vmlinux(&bz(0x020f, 1, b"gzip?")), Err(BzError::NotXz));
        let not_elf = bz(
            0x020f,
            1,
            &xz(b"plain text, not an ELF file at all.............................."),
        );
        assert_eq!(vmlinux(&not_elf), Err(BzError::NotElf));
        assert!(BzError::TooOld(0x0206).to_string().contains("2.06"));
    }
}
