//! PVH start info (Xen `public/arch-x86/hvm/start_info.h`), the boot
//! information of QEMU's `-kernel` PVH boot and of the KVM harness.

use super::{BootInfo, BootInfoError, Module, Protocol};
use crate::memmap::FirmwareKind;
use okernel::memmap::PhysRange;

/// `hvm_start_info.magic` ("xEn3" with the top bit set).
pub const PVH_MAGIC: u32 = 0x336e_c578;

/// The most bytes a command line may have.
pub const MAX_CMDLINE: usize = 4096;

const START_INFO_SIZE: usize = 56;
const MODLIST_ENTRY_SIZE: usize = 32;
const MEMMAP_ENTRY_SIZE: usize = 24;

/// Read access to physical memory, so the parser runs against a buffer on
/// the host and against identity-mapped RAM in the image.
pub trait PhysMem {
    /// The `len` bytes at physical address `addr`, or `None` when any of
    /// them is not readable memory.
    fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]>;
}

/// The fields of `struct hvm_start_info` okernel uses (version 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StartInfo {
    /// Must be [`PVH_MAGIC`].
    pub magic: u32,
    /// 0 or 1; okernel needs 1 (the memory map).
    pub version: u32,
    /// Number of `hvm_modlist_entry` at `modlist_paddr`.
    pub nr_modules: u32,
    /// Physical address of the module list.
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line, or 0.
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP, or 0 (no ACPI tables).
    pub rsdp_paddr: u64,
    /// Physical address of the `hvm_memmap_table_entry` array.
    pub memmap_paddr: u64,
    /// Number of memory-map entries.
    pub memmap_entries: u32,
}

impl StartInfo {
    /// Encodes the structure as the boot loader lays it out (for tests and
    /// for the KVM harness).
    pub fn to_bytes(&self) -> [u8; START_INFO_SIZE] {
        let mut b = [0u8; START_INFO_SIZE];
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.nr_modules.to_le_bytes());
        b[16..24].copy_from_slice(&self.modlist_paddr.to_le_bytes());
        b[24..32].copy_from_slice(&self.cmdline_paddr.to_le_bytes());
        b[32..40].copy_from_slice(&self.rsdp_paddr.to_le_bytes());
        b[40..48].copy_from_slice(&self.memmap_paddr.to_le_bytes());
        b[48..52].copy_from_slice(&self.memmap_entries.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Self {
        Self {
            magic: le32(b, 0),
            version: le32(b, 4),
            nr_modules: le32(b, 12),
            modlist_paddr: le64(b, 16),
            cmdline_paddr: le64(b, 24),
            rsdp_paddr: le64(b, 32),
            memmap_paddr: le64(b, 40),
            memmap_entries: le32(b, 48),
        }
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

fn read<'m, M: PhysMem + ?Sized>(
    mem: &'m M,
    what: &'static str,
    addr: u64,
    len: usize,
) -> Result<&'m [u8], BootInfoError> {
    mem.bytes(addr, len)
        .ok_or(BootInfoError::Unreadable { what, addr })
}

/// Reads the NUL-terminated string at `addr` (at most [`MAX_CMDLINE`]
/// bytes); address 0 is the empty string.
fn c_string<'m, M: PhysMem + ?Sized>(
    mem: &'m M,
    what: &'static str,
    addr: u64,
) -> Result<&'m str, BootInfoError> {
    if addr == 0 {
        return Ok("");
    }
    for len in 0..MAX_CMDLINE {
        let at = addr
            .checked_add(len as u64)
            .ok_or(BootInfoError::Unreadable { what, addr })?;
        if read(mem, what, at, 1)?[0] == 0 {
            let bytes = read(mem, what, addr, len)?;
            return core::str::from_utf8(bytes).map_err(|_| BootInfoError::BadString(what));
        }
    }
    Err(BootInfoError::BadString(what))
}

/// Parses the PVH start info at `addr`.
pub fn parse_pvh<M: PhysMem + ?Sized>(mem: &M, addr: u64) -> Result<BootInfo<'_>, BootInfoError> {
    let si = StartInfo::from_bytes(read(mem, "the PVH start info", addr, START_INFO_SIZE)?);
    if si.magic != PVH_MAGIC {
        return Err(BootInfoError::BadPvhMagic(si.magic));
    }
    if si.version < 1 {
        return Err(BootInfoError::PvhNoMemoryMap(si.version));
    }
    let mut info = BootInfo::new(Protocol::Pvh);
    info.info_ranges[0] = PhysRange::from_len(addr, START_INFO_SIZE as u64);

    let entries = si.memmap_entries as usize;
    if entries == 0 {
        return Err(BootInfoError::NoMemoryMap);
    }
    let map = read(
        mem,
        "the PVH memory map",
        si.memmap_paddr,
        entries.saturating_mul(MEMMAP_ENTRY_SIZE),
    )?;
    for e in map.chunks_exact(MEMMAP_ENTRY_SIZE) {
        info.memory
            .add(le64(e, 0), le64(e, 8), FirmwareKind::from_e820(le32(e, 16)))?;
    }
    info.memory.require_usable()?;

    info.cmdline = c_string(mem, "the command line", si.cmdline_paddr)?;
    // The RSDP itself (20 bytes; 36 from revision 2 on), for the MADT
    // (the other processors) and a Linux guest; the ACPI parser checks
    // it.
    if si.rsdp_paddr != 0 {
        let v1 = read(mem, "the ACPI RSDP", si.rsdp_paddr, 20)?;
        info.rsdp = Some(if v1[15] >= 2 {
            read(mem, "the ACPI RSDP", si.rsdp_paddr, 36)?
        } else {
            v1
        });
    }
    let count = si.nr_modules as usize;
    if count > super::MAX_MODULES {
        return Err(BootInfoError::TooManyModules);
    }
    if count == 0 {
        // Loaders leave `modlist_paddr` 0 when there is no module.
        return Ok(info);
    }
    let list = read(
        mem,
        "the PVH module list",
        si.modlist_paddr,
        count * MODLIST_ENTRY_SIZE,
    )?;
    info.info_ranges[1] = PhysRange::from_len(si.modlist_paddr, list.len() as u64);
    for (index, e) in list.chunks_exact(MODLIST_ENTRY_SIZE).enumerate() {
        let (start, size) = (le64(e, 0), le64(e, 8));
        let range = PhysRange::from_len(start, size).ok_or(BootInfoError::EmptyModule { index })?;
        let cmdline = c_string(mem, "a module command line", le64(e, 16))?;
        info.push_module(Module { range, cmdline })?;
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Physical memory backed by a buffer that starts at address 0.
    struct Buf(Vec<u8>);

    impl PhysMem for Buf {
        fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
            let start = usize::try_from(addr).ok()?;
            self.0.get(start..start.checked_add(len)?)
        }
    }

    impl Buf {
        fn put(&mut self, at: u64, bytes: &[u8]) {
            self.0[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        }
    }

    const INFO: u64 = 0x1000;

    fn memory(si: StartInfo) -> Buf {
        let mut m = Buf(vec![0; 0x4000]);
        m.put(INFO, &si.to_bytes());
        let mut map = Vec::new();
        for (base, len, ty) in [
            (0u64, 0x9_fc00u64, 1u32),
            (0x10_0000, 0x7f0_0000, 1),
            (0xfee0_0000, 0x1000, 2),
        ] {
            map.extend_from_slice(&base.to_le_bytes());
            map.extend_from_slice(&len.to_le_bytes());
            map.extend_from_slice(&ty.to_le_bytes());
            map.extend_from_slice(&0u32.to_le_bytes());
        }
        m.put(0x2000, &map);
        let mut module = Vec::new();
        module.extend_from_slice(&0x20_0000u64.to_le_bytes());
        module.extend_from_slice(&0x1_0000u64.to_le_bytes());
        module.extend_from_slice(&0x3100u64.to_le_bytes());
        module.extend_from_slice(&0u64.to_le_bytes());
        m.put(0x3000, &module);
        m.put(0x3100, b"scenario=boot\0");
        m.put(0x3200, b"log=info\0");
        m
    }

    fn good() -> StartInfo {
        StartInfo {
            magic: PVH_MAGIC,
            version: 1,
            nr_modules: 1,
            modlist_paddr: 0x3000,
            cmdline_paddr: 0x3200,
            rsdp_paddr: 0,
            memmap_paddr: 0x2000,
            memmap_entries: 3,
        }
    }

    #[test]
    fn parses_a_complete_start_info() {
        let m = memory(good());
        let info = parse_pvh(&m, INFO).unwrap();
        assert_eq!(info.protocol, Protocol::Pvh);
        assert_eq!(info.cmdline, "log=info");
        assert_eq!(info.memory.regions().len(), 3);
        let modules: Vec<_> = info.modules().collect();
        assert_eq!(modules.len(), 1);
        assert_eq!(
            modules[0].range,
            PhysRange {
                start: 0x20_0000,
                end: 0x21_0000
            }
        );
        assert_eq!(modules[0].cmdline, "scenario=boot");
    }

    #[test]
    fn the_rsdp_is_passed_on_whole_for_its_revision_and_none_without_one() {
        assert_eq!(parse_pvh(&memory(good()), INFO).unwrap().rsdp, None);
        for (revision, len) in [(0u8, 20usize), (2, 36)] {
            let mut m = memory(StartInfo {
                rsdp_paddr: 0x3800,
                ..good()
            });
            let mut rsdp = *b"RSD PTR \0\0\0\0\0\0\0\0";
            rsdp[15] = revision;
            m.put(0x3800, &rsdp);
            let info = parse_pvh(&m, INFO).unwrap();
            assert_eq!(info.rsdp.map(<[u8]>::len), Some(len));
            assert_eq!(&info.rsdp.unwrap()[..8], b"RSD PTR ");
        }
        // One that runs past readable memory is refused by name.
        let m = memory(StartInfo {
            rsdp_paddr: 0x3ff8,
            ..good()
        });
        assert!(matches!(
            parse_pvh(&m, INFO),
            Err(BootInfoError::Unreadable {
                what: "the ACPI RSDP",
                ..
            })
        ));
    }

    #[test]
    fn no_modules_needs_no_module_list() {
        let m = memory(StartInfo {
            nr_modules: 0,
            modlist_paddr: 0,
            ..good()
        });
        let info = parse_pvh(&m, INFO).unwrap();
        assert_eq!(info.modules().count(), 0);
        let m = memory(StartInfo {
            modlist_paddr: 0x3ff0,
            ..good()
        });
        assert!(matches!(
            parse_pvh(&m, INFO),
            Err(BootInfoError::Unreadable {
                what: "the PVH module list",
                ..
            })
        ));
    }

    #[test]
    fn refuses_each_malformed_field() {
        let cases: [(StartInfo, BootInfoError); 6] = [
            (
                StartInfo {
                    magic: 0xdead,
                    ..good()
                },
                BootInfoError::BadPvhMagic(0xdead),
            ),
            (
                StartInfo {
                    version: 0,
                    ..good()
                },
                BootInfoError::PvhNoMemoryMap(0),
            ),
            (
                StartInfo {
                    memmap_entries: 0,
                    ..good()
                },
                BootInfoError::NoMemoryMap,
            ),
            (
                StartInfo {
                    memmap_paddr: 0x3ff0,
                    ..good()
                },
                BootInfoError::Unreadable {
                    what: "the PVH memory map",
                    addr: 0x3ff0,
                },
            ),
            (
                StartInfo {
                    nr_modules: 9,
                    ..good()
                },
                BootInfoError::TooManyModules,
            ),
            (
                StartInfo {
                    cmdline_paddr: 0x9_0000,
                    ..good()
                },
                BootInfoError::Unreadable {
                    what: "the command line",
                    addr: 0x9_0000,
                },
            ),
        ];
        for (si, want) in cases {
            assert_eq!(parse_pvh(&memory(si), INFO).unwrap_err(), want, "{si:?}");
        }
    }

    #[test]
    fn refuses_truncated_start_info_and_unterminated_strings() {
        let m = memory(good());
        assert!(matches!(
            parse_pvh(&m, 0x4000 - 20),
            Err(BootInfoError::Unreadable {
                what: "the PVH start info",
                ..
            })
        ));
        let mut m = memory(good());
        m.put(0x3200, &[b'x'; 0xe00]);
        assert!(matches!(
            parse_pvh(&m, INFO),
            Err(BootInfoError::Unreadable { .. })
        ));
        let mut m = memory(good());
        m.put(0x3200, &[0xff, 0xfe, 0]);
        assert_eq!(
            parse_pvh(&m, INFO).unwrap_err(),
            BootInfoError::BadString("the command line")
        );
    }
}
