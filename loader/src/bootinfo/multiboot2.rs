//! Multiboot2 boot information (multiboot2 specification §3.6), parsed with
//! the `multiboot2` crate.

use super::{BootInfo, BootInfoError, Module, Protocol};
use crate::memmap::FirmwareKind;
use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};
use okernel::memmap::PhysRange;

/// The value a multiboot2 loader leaves in EAX.
pub const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;

/// Parses the multiboot2 information structure at `ptr`.
///
/// # Safety
///
/// `ptr` must point to memory readable for at least 8 bytes, and for the
/// whole `total_size` those bytes announce; it must stay unchanged for `'a`.
pub unsafe fn parse_multiboot2<'a>(
    ptr: *const BootInformationHeader,
) -> Result<BootInfo<'a>, BootInfoError> {
    // SAFETY: forwarded from the caller: the structure is readable and
    // immutable for 'a. `load` validates size, alignment and the tag list.
    let mbi: BootInformation<'a> = unsafe { BootInformation::load(ptr) }
        .map_err(|e| BootInfoError::Multiboot2(load_error_name(&e)))?;
    // SAFETY: `load` checked that `total_size` bytes at the start address
    // are the structure, which the caller guarantees readable and
    // unchanged for 'a.
    let bytes: &'a [u8] =
        unsafe { core::slice::from_raw_parts(mbi.start_address() as *const u8, mbi.total_size()) };
    // The crate asserts (panics) on tags too small for their type or with
    // an unexpected entry size; refuse those first.
    check_tag_layouts(bytes).map_err(BootInfoError::Multiboot2)?;
    let mut info = BootInfo::new(Protocol::Multiboot2);
    info.info_ranges[0] = PhysRange::from_len(mbi.start_address() as u64, mbi.total_size() as u64);

    let mmap = mbi.memory_map_tag().ok_or(BootInfoError::NoMemoryMap)?;
    for area in mmap.memory_areas() {
        let kind = match area.typ() {
            MemoryAreaType::Available => FirmwareKind::Usable,
            MemoryAreaType::AcpiAvailable => FirmwareKind::AcpiReclaimable,
            MemoryAreaType::ReservedHibernate => FirmwareKind::AcpiNvs,
            MemoryAreaType::Defective => FirmwareKind::Bad,
            _ => FirmwareKind::Reserved,
        };
        info.memory.add(area.start_address(), area.size(), kind)?;
    }
    info.memory.require_usable()?;

    if let Some(tag) = mbi.command_line_tag() {
        let cmdline = tag
            .cmdline()
            .map_err(|_| BootInfoError::BadString("the command line"))?;
        // SAFETY: the tag lies inside the structure, which the caller
        // guarantees readable and unchanged for 'a.
        info.cmdline = unsafe { extend(cmdline) };
    }
    info.rsdp = acpi_rsdp(bytes);
    for (index, tag) in mbi.module_tags().enumerate() {
        let cmdline = tag
            .cmdline()
            .map_err(|_| BootInfoError::BadString("a module command line"))?;
        // SAFETY: as for the command line above.
        let cmdline = unsafe { extend(cmdline) };
        let (start, end) = (tag.start_address() as u64, tag.end_address() as u64);
        if end <= start {
            return Err(BootInfoError::EmptyModule { index });
        }
        info.push_module(Module {
            range: PhysRange { start, end },
            cmdline,
        })?;
    }
    Ok(info)
}

/// Tag types this loader reads (multiboot2 specification §3.6).
const TAG_END: u32 = 0;
const TAG_CMDLINE: u32 = 1;
const TAG_MODULE: u32 = 3;
const TAG_MMAP: u32 = 6;
/// The size of one memory-map entry this loader accepts.
const MMAP_ENTRY: u32 = 24;

/// Checks the layout of every tag this loader reads, so the crate's own
/// accessors — which assert rather than fail on a malformed tag — never
/// see one: each tag lies inside the structure, 8-aligned, at least its
/// header long; a module tag holds its two addresses; a memory-map tag
/// holds its header, an entry size of 24 and whole entries.
pub fn check_tag_layouts(bytes: &[u8]) -> Result<(), &'static str> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let mut at = 8;
    loop {
        let (ty, size) = match (word(at), word(at + 4)) {
            (Some(t), Some(s)) => (t, s as usize),
            _ => return Err("a tag runs past the end of the structure"),
        };
        let end = at.checked_add(size).filter(|&e| e <= bytes.len());
        let Some(end) = end.filter(|_| size >= 8) else {
            return Err("a tag is shorter than its header or runs past the end");
        };
        match ty {
            // The crate ends its walks only at a type-0 tag of size 8 (its
            // `load` requires one); any other type-0 tag is walked past.
            TAG_END if size == 8 => return Ok(()),
            TAG_CMDLINE if size < 9 => return Err("a command-line tag has no string"),
            TAG_MODULE if size < 17 => return Err("a module tag is too short"),
            TAG_MMAP => {
                if size < 16 {
                    return Err("the memory-map tag is too short");
                }
                if word(at + 8) != Some(MMAP_ENTRY) {
                    return Err("the memory-map entry size is not 24");
                }
                if (size - 16) % MMAP_ENTRY as usize != 0 {
                    return Err("the memory-map tag holds a partial entry");
                }
            }
            _ => {}
        }
        at = end.next_multiple_of(8);
    }
}

/// ACPI RSDP tags: a copy of the RSDP (multiboot2 specification §3.6.15,
/// §3.6.16): 14 the ACPI 1.0 one, 15 the ACPI 2.0+ one.
const TAG_ACPI_OLD: u32 = 14;
const TAG_ACPI_NEW: u32 = 15;

/// The RSDP copy of the multiboot2 structure `bytes` (already checked by
/// `check_tag_layouts`): the ACPI 2.0+ tag's when present, else the
/// ACPI 1.0 tag's; `None` without either.
pub fn acpi_rsdp(bytes: &[u8]) -> Option<&[u8]> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let (mut old, mut new) = (None, None);
    let mut at = 8;
    while let (Some(ty), Some(size)) = (word(at), word(at + 4)) {
        let size = size as usize;
        if ty == TAG_END || size < 8 {
            break;
        }
        let body = bytes.get(at + 8..at.checked_add(size)?);
        match ty {
            TAG_ACPI_OLD => old = body,
            TAG_ACPI_NEW => new = body,
            _ => {}
        }
        at = at.checked_add(size)?.next_multiple_of(8);
    }
    new.or(old).filter(|b| !b.is_empty())
}

/// Gives a string inside the structure the structure's lifetime `'a` (the
/// crate ties it to the `BootInformation` wrapper, a local here).
///
/// # Safety
///
/// `s` must point into memory readable and unchanged for `'a`.
unsafe fn extend<'a>(s: &str) -> &'a str {
    // SAFETY: forwarded from the caller.
    unsafe { &*(s as *const str) }
}

fn load_error_name(e: &multiboot2::LoadError) -> &'static str {
    match e {
        multiboot2::LoadError::NoEndTag => "missing end tag (truncated?)",
        multiboot2::LoadError::Memory(_) => "bad size or alignment (truncated?)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiboot2::{Builder, CommandLineTag, MemoryArea, MemoryMapTag, ModuleTag};
    use multiboot2_common::MaybeDynSized;

    fn build(modules: &[(u32, u32, &str)], with_mmap: bool) -> Vec<u8> {
        let mut b = Builder::new().cmdline(CommandLineTag::new("log=debug"));
        if with_mmap {
            b = b.mmap(MemoryMapTag::new(&[
                MemoryArea::new(0, 0x9_fc00, MemoryAreaType::Available),
                MemoryArea::new(0x10_0000, 0x7ee_0000, MemoryAreaType::Available),
                MemoryArea::new(0xfffc_0000, 0x4_0000, MemoryAreaType::Reserved),
            ]));
        }
        for &(s, e, c) in modules {
            b = b.add_module(ModuleTag::new(s, e, c));
        }
        b.build().as_bytes().to_vec()
    }

    fn parse(bytes: &[u8]) -> Result<BootInfo<'static>, BootInfoError> {
        let mut aligned = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `aligned` has at least `bytes.len()` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), aligned.as_mut_ptr().cast(), bytes.len())
        };
        let leaked: &'static [u64] = Box::leak(aligned.into_boxed_slice());
        // SAFETY: `leaked` is 8-aligned, immutable and holds the structure.
        unsafe { parse_multiboot2(leaked.as_ptr().cast()) }
    }

    #[test]
    fn parses_memory_map_modules_and_command_line() {
        let info = parse(&build(&[(0x20_0000, 0x28_0000, "scenario=boot")], true)).unwrap();
        assert_eq!(info.protocol, Protocol::Multiboot2);
        assert_eq!(info.cmdline, "log=debug");
        assert_eq!(info.memory.regions().len(), 3);
        assert_eq!(info.memory.top_of_ram(), 0x7fe_0000);
        let m: Vec<_> = info.modules().collect();
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[0].range,
            PhysRange {
                start: 0x20_0000,
                end: 0x28_0000
            }
        );
        assert_eq!(m[0].cmdline, "scenario=boot");
    }

    #[test]
    fn refuses_missing_memory_map_and_empty_modules() {
        assert_eq!(
            parse(&build(&[], false)).unwrap_err(),
            BootInfoError::NoMemoryMap
        );
        // The builder refuses empty modules, so patch the end address.
        let mut bytes = build(&[(0x20_0000, 0x20_1000, "")], true);
        let mut pattern = 0x20_0000u32.to_le_bytes().to_vec();
        pattern.extend_from_slice(&0x20_1000u32.to_le_bytes());
        let at = bytes.windows(8).position(|w| w == pattern).unwrap();
        bytes[at + 4..at + 8].copy_from_slice(&0x20_0000u32.to_le_bytes());
        assert_eq!(
            parse(&bytes).unwrap_err(),
            BootInfoError::EmptyModule { index: 0 }
        );
    }

    #[test]
    fn refuses_malformed_memory_map_tags_found_by_the_fuzzer() {
        // fuzz/findings/multiboot2-mmap-tag-too-small: a memory-map tag of
        // size 8 made the crate panic ("source is too small to be cast").
        let too_small: [u8; 24] = [
            0x18, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0,
        ];
        assert_eq!(
            parse(&too_small).unwrap_err(),
            BootInfoError::Multiboot2("the memory-map tag is too short")
        );
        // fuzz/findings/multiboot2-mmap-entry-size: entry size 32 made the
        // crate panic (assert_eq!(entry_size, 24)).
        let mut entry32 = build(&[], true);
        let at = entry32
            .windows(8)
            .position(|w| w[..4] == 6u32.to_le_bytes())
            .unwrap();
        entry32[at + 8..at + 12].copy_from_slice(&32u32.to_le_bytes());
        assert_eq!(
            parse(&entry32).unwrap_err(),
            BootInfoError::Multiboot2("the memory-map entry size is not 24")
        );
        for file in [
            "multiboot2-mmap-tag-too-small",
            "multiboot2-mmap-entry-size",
            "multiboot2-mmap-behind-false-end",
        ] {
            let path = format!("{}/../fuzz/findings/{file}", env!("CARGO_MANIFEST_DIR"));
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                matches!(parse(&bytes), Err(BootInfoError::Multiboot2(_))),
                "{file}"
            );
        }
    }

    #[test]
    fn refuses_truncated_structures() {
        let bytes = build(&[(0x20_0000, 0x28_0000, "x")], true);
        // Cut the structure short but keep its announced size: the end tag
        // is gone.
        let mut cut = bytes.clone();
        let half = (cut.len() / 2) & !7;
        cut.truncate(half);
        cut.extend_from_slice(&[0u8; 8]);
        let len = cut.len() as u32;
        cut[..4].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(parse(&cut), Err(BootInfoError::Multiboot2(_))));
        // A size smaller than the header itself.
        let mut tiny = bytes;
        tiny[..4].copy_from_slice(&4u32.to_le_bytes());
        assert!(matches!(parse(&tiny), Err(BootInfoError::Multiboot2(_))));
    }
}
