//! Direct PVH boot: the image's `PT_LOAD` segments at their physical
//! addresses, the guest module at the top of RAM, and the PVH start info
//! (Xen `arch-x86/hvm/start_info.h`, version 1) with the memory map, the
//! module list and the command line in low memory, where QEMU and
//! Firecracker put them too.

use super::KvmError;
use super::memory::{GuestRam, PAGE_SIZE};
use elf::ElfBytes;
use elf::abi::{EM_X86_64, PT_LOAD, PT_NOTE};
use elf::endian::AnyEndian;
use loader::bootinfo::{PVH_MAGIC, StartInfo};
use std::path::Path;

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the note whose descriptor is the 32-bit
/// PVH entry point (Xen `public/elfnote.h`).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u64 = 18;
/// Where the boot GDT lies (see [`super::vcpu`]).
pub const GDT_ADDR: u64 = 0x500;
/// Where the `hvm_start_info` lies; EBX points here at entry.
pub const START_INFO_ADDR: u64 = 0x6000;
/// Where the module list (`hvm_modlist_entry`, 32 bytes each) lies.
pub const MODLIST_ADDR: u64 = 0x6040;
/// Where the memory map (`hvm_memmap_table_entry`, 24 bytes each) lies.
pub const MEMMAP_ADDR: u64 = 0x7000;
/// Where the image's command line lies.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// The most bytes of the command line, NUL included (the limit of the
/// loader's PVH parser, `MAX_CMDLINE` in `loader/src/bootinfo/pvh.rs`).
pub const CMDLINE_MAX: usize = 4096;
/// Below this address lie the boot structures above; segments may not.
pub const LOW_RESERVED_END: u64 = CMDLINE_ADDR + CMDLINE_MAX as u64;
/// The end of low RAM (640 KiB); `[LOW_RAM_END, 1 MiB)` is the legacy hole.
pub const LOW_RAM_END: u64 = 0xa_0000;
/// The start of high RAM.
pub const HIGH_RAM_START: u64 = 0x10_0000;

const E820_RAM: u32 = 1;

/// What was loaded, for the run directory and the vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The 32-bit PVH entry point.
    pub entry: u32,
    /// `[start, end)` of each loaded segment.
    pub segments: Vec<(u64, u64)>,
    /// `[start, end)` of the module, if any.
    pub module: Option<(u64, u64)>,
}

fn refuse(path: &Path, reason: impl Into<String>) -> KvmError {
    KvmError::Image {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Loads the image `bytes` (read from `path`) into `ram`: every `PT_LOAD`
/// segment at its `p_paddr`, the bss zeroed. Returns the PVH entry point
/// and the segments' ranges.
pub fn load_image(
    ram: &mut GuestRam,
    path: &Path,
    bytes: &[u8],
) -> Result<(u32, Vec<(u64, u64)>), KvmError> {
    // The class first: an ELF32 header parsed as such is valid, but its
    // fields are not where an ELF64 loader looks.
    if bytes.starts_with(b"\x7fELF") && bytes.get(4) == Some(&1) {
        return Err(refuse(
            path,
            "is an ELF32 file; okernel images are ELF64 (x86-64) with a PVH note",
        ));
    }
    let file = ElfBytes::<AnyEndian>::minimal_parse(bytes)
        .map_err(|e| refuse(path, format!("not a valid ELF file: {e}")))?;
    if file.ehdr.e_machine != EM_X86_64 {
        return Err(refuse(
            path,
            format!(
                "ELF machine {} is not x86-64 ({EM_X86_64})",
                file.ehdr.e_machine
            ),
        ));
    }
    let phdrs = file
        .segments()
        .ok_or_else(|| refuse(path, "the ELF file has no program headers"))?;
    let mut entry = None;
    let mut segments = Vec::new();
    for ph in phdrs.iter() {
        match ph.p_type {
            PT_NOTE => {
                let notes = file
                    .segment_data_as_notes(&ph)
                    .map_err(|e| refuse(path, format!("malformed note segment: {e}")))?;
                for note in notes {
                    if let elf::note::Note::Unknown(n) = note
                        && n.n_type == XEN_ELFNOTE_PHYS32_ENTRY
                        && n.name_str().is_ok_and(|name| name == "Xen")
                        && n.desc.len() >= 4
                    {
                        let d = n.desc;
                        entry = Some(u32::from_le_bytes([d[0], d[1], d[2], d[3]]));
                    }
                }
            }
            PT_LOAD if ph.p_memsz > 0 => {
                let data = file
                    .segment_data(&ph)
                    .map_err(|e| refuse(path, format!("segment outside the file: {e}")))?;
                let end = ph.p_paddr.checked_add(ph.p_memsz).filter(|&end| {
                    ph.p_filesz <= ph.p_memsz
                        && ph.p_paddr >= LOW_RESERVED_END
                        && end <= ram.len() as u64
                        && !(ph.p_paddr < HIGH_RAM_START && end > LOW_RAM_END)
                });
                let Some(end) = end else {
                    return Err(refuse(
                        path,
                        format!(
                            "segment [{:#x}, +{:#x}) does not fit guest RAM [{LOW_RESERVED_END:#x}, {:#x}) \
                             outside the legacy hole",
                            ph.p_paddr,
                            ph.p_memsz,
                            ram.len()
                        ),
                    ));
                };
                ram.write(ph.p_paddr, data);
                let bss = usize::try_from(ph.p_memsz - ph.p_filesz).unwrap_or(usize::MAX);
                ram.write(ph.p_paddr + ph.p_filesz, &vec![0; bss]);
                segments.push((ph.p_paddr, end));
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(refuse(path, "the ELF file has no loadable segment"));
    }
    let entry = entry.ok_or_else(|| {
        refuse(
            path,
            "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, \"Xen\" type 18): \
             the KVM harness boots PVH images only",
        )
    })?;
    Ok((entry, segments))
}

/// Places `module` page-aligned at the top of RAM, above every segment.
pub fn load_module(
    ram: &mut GuestRam,
    path: &Path,
    module: &[u8],
    segments: &[(u64, u64)],
) -> Result<(u64, u64), KvmError> {
    let top = ram.len() as u64;
    let highest = segments.iter().map(|s| s.1).max().unwrap_or(HIGH_RAM_START);
    let start = top
        .checked_sub(module.len() as u64)
        .map(|s| s & !(PAGE_SIZE as u64 - 1))
        .filter(|&s| s >= highest && !module.is_empty());
    let Some(start) = start else {
        return Err(refuse(
            path,
            format!(
                "guest module of {} bytes does not fit between the image's end {highest:#x} \
                 and the top of guest RAM {top:#x} (or is empty)",
                module.len()
            ),
        ));
    };
    ram.write(start, module);
    Ok((start, start + module.len() as u64))
}

/// The memory map: RAM below 640 KiB, the legacy hole, RAM from 1 MiB to
/// the top. Entries are `(base, length, e820 type)`.
pub fn memory_map(ram_len: u64) -> [(u64, u64, u32); 2] {
    [
        (0, LOW_RAM_END, E820_RAM),
        (HIGH_RAM_START, ram_len - HIGH_RAM_START, E820_RAM),
    ]
}

/// Writes the start info, the memory map, the module list and the command
/// line. Returns the start info's address (EBX at entry).
pub fn write_start_info(
    ram: &mut GuestRam,
    cmdline: &str,
    module: Option<(u64, u64)>,
) -> Result<u64, KvmError> {
    if cmdline.len() >= CMDLINE_MAX || cmdline.contains('\0') {
        return Err(KvmError::Image {
            path: "command line".into(),
            reason: format!(
                "{} bytes (at most {} without NUL bytes)",
                cmdline.len(),
                CMDLINE_MAX - 1
            ),
        });
    }
    let mut c = cmdline.as_bytes().to_vec();
    c.push(0);
    ram.write(CMDLINE_ADDR, &c);
    let map = memory_map(ram.len() as u64);
    let mut m = Vec::new();
    for (base, len, ty) in map {
        m.extend_from_slice(&base.to_le_bytes());
        m.extend_from_slice(&len.to_le_bytes());
        m.extend_from_slice(&ty.to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
    }
    ram.write(MEMMAP_ADDR, &m);
    if let Some((start, end)) = module {
        let mut e = Vec::new();
        e.extend_from_slice(&start.to_le_bytes());
        e.extend_from_slice(&(end - start).to_le_bytes());
        e.extend_from_slice(&[0; 16]); // no module command line, reserved
        ram.write(MODLIST_ADDR, &e);
    }
    let info = StartInfo {
        magic: PVH_MAGIC,
        version: 1,
        nr_modules: u32::from(module.is_some()),
        modlist_paddr: if module.is_some() { MODLIST_ADDR } else { 0 },
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: 0,
        memmap_paddr: MEMMAP_ADDR,
        memmap_entries: map.len() as u32,
    };
    ram.write(START_INFO_ADDR, &info.to_bytes());
    Ok(START_INFO_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::flat::{code, pvh_elf};
    use loader::bootinfo::{Protocol, parse_pvh};

    #[test]
    fn the_loader_parses_the_start_info_we_write() {
        let mut ram = GuestRam::new(32 << 20).unwrap();
        let image = pvh_elf(code::SPIN, 0x10_0000);
        let (entry, segments) = load_image(&mut ram, Path::new("t.elf"), &image).unwrap();
        assert_eq!(
            (entry, segments.clone()),
            (0x10_0000, vec![(0x10_0000, 0x10_0002)])
        );
        assert_eq!(ram.get(0x10_0000, 2), Some(code::SPIN));
        let module = load_module(&mut ram, Path::new("m"), &[7; 5000], &segments).unwrap();
        assert_eq!(module, ((32 << 20) - 0x2000, (32 << 20) - 0x2000 + 5000));
        let at = write_start_info(&mut ram, "log=info -- scenario=boot", Some(module)).unwrap();

        let info = parse_pvh(&ram, at).unwrap();
        assert_eq!(info.protocol, Protocol::Pvh);
        assert_eq!(info.cmdline, "log=info -- scenario=boot");
        let regions: Vec<_> = info
            .memory
            .regions()
            .iter()
            .map(|r| (r.range.start, r.range.end))
            .collect();
        assert_eq!(regions, vec![(0, LOW_RAM_END), (HIGH_RAM_START, 32 << 20)]);
        let modules: Vec<_> = info.modules().collect();
        assert_eq!(modules.len(), 1);
        assert_eq!(
            (modules[0].range.start, modules[0].range.end),
            module,
            "module range"
        );
        assert_eq!(modules[0].cmdline, "");
    }

    #[test]
    fn a_module_that_does_not_fit_and_an_overlong_cmdline_are_refused() {
        let mut ram = GuestRam::new(4 << 20).unwrap();
        let segs = [(0x10_0000, 0x30_0000)];
        let e = load_module(&mut ram, Path::new("m"), &[1; 0x20_0000], &segs).unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
        let e = write_start_info(&mut ram, &"x".repeat(CMDLINE_MAX), None).unwrap_err();
        assert!(e.to_string().contains("at most 4095"), "{e}");
    }
}
