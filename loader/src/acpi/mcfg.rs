//! PCI Express memory-mapped configuration (ECAM): the windows the ACPI
//! MCFG table names (PCI Firmware Specification 3.2 §4.1.2: 16-byte
//! allocation entries after a 44-byte header — base address, segment,
//! start and end bus; bus `b`'s space is at base + `b` << 20).
//!
//! Through ECAM the guest writes PCI configuration as memory, around
//! everything the monitor judges at ports 0xCFC–0xCFF (`okernel::exit::
//! pci`, the locked PM base and SMRAM control): so the loader takes the
//! windows out of every EPT view (as monitor ranges) and removes MCFG
//! from the RSDT and XSDT, so that the guest's OS finds no ECAM and uses
//! configuration mechanism #1, which the monitor mediates. The cost: no
//! extended configuration space (offsets 0x100–0xFFF) for the guest.

use super::{AcpiError, SDT_HEADER, find_table, u64_at};
use crate::bootinfo::PhysMem;

/// The most ECAM windows kept (one per segment group; PCs have one).
pub const MAX_WINDOWS: usize = 4;
/// Where MCFG's allocation entries start, and their size.
const ENTRIES: usize = SDT_HEADER + 8;
const ENTRY: usize = 16;

/// The ECAM windows of the MCFG reached from `rsdp`, as physical
/// [start, end) ranges (none without an MCFG). More than [`MAX_WINDOWS`],
/// an entry whose end bus is below its start bus, or a window past
/// 2^48: a malformed MCFG.
pub fn windows(
    mem: &impl PhysMem,
    rsdp: &[u8],
) -> Result<[Option<(u64, u64)>; MAX_WINDOWS], AcpiError> {
    let mut out = [None; MAX_WINDOWS];
    let Some(t) = find_table(mem, rsdp, b"MCFG", "MCFG")? else {
        return Ok(out);
    };
    if t.len() < ENTRIES || !(t.len() - ENTRIES).is_multiple_of(ENTRY) {
        return Err(AcpiError::BadTable("MCFG"));
    }
    let entries = t[ENTRIES..].chunks_exact(ENTRY);
    if entries.len() > MAX_WINDOWS {
        return Err(AcpiError::BadTable("MCFG"));
    }
    for (slot, e) in out.iter_mut().zip(entries) {
        let (base, start, end) = (u64_at(e, 0), u64::from(e[10]), u64::from(e[11]));
        // Bus `start`'s space and beyond; the guest-physical space ends
        // at 2^48 (4-level EPT).
        let from = base.checked_add(start << 20);
        let to = base.checked_add((end + 1) << 20);
        match (from, to) {
            (Some(from), Some(to)) if end >= start && to <= 1 << 48 => *slot = Some((from, to)),
            _ => return Err(AcpiError::BadTable("MCFG")),
        }
    }
    Ok(out)
}

/// The root tables `rsdp` names, each checked as `find_table` checks
/// them (signature, bounded length, checksum), with its entry size: the
/// RSDT (4), and from ACPI 2.0 the XSDT (8) when the RSDP's extended
/// part is valid. Only these may be edited.
pub fn roots(mem: &impl PhysMem, rsdp: &[u8]) -> [Option<(u64, usize)>; 2] {
    let checked = |addr: u64, sig: &[u8; 4], what| {
        super::table(mem, addr, what)
            .ok()
            .filter(|t| &t[..4] == sig)
            .map(|_| addr)
    };
    let mut out = [None; 2];
    if rsdp.len() < 20 || &rsdp[..8] != b"RSD PTR " || !super::checksum_ok(&rsdp[..20]) {
        return out;
    }
    let rsdt = u64::from(super::u32_at(rsdp, 16));
    out[0] = checked(rsdt, b"RSDT", "RSDT").map(|a| (a, 4));
    let xsdt = rsdp[15] >= 2 && rsdp.len() >= 36 && {
        let len = super::u32_at(rsdp, 20) as usize;
        (36..=rsdp.len()).contains(&len) && super::checksum_ok(&rsdp[..len])
    };
    if xsdt {
        out[1] = checked(u64_at(rsdp, 24), b"XSDT", "XSDT").map(|a| (a, 8));
    }
    out
}

/// Removes from the root table `root` (the RSDT, `entry` 4, or the XSDT,
/// `entry` 8), in place, every entry for which `drop(address)` holds:
/// later entries move down, the length shrinks and the checksum is made
/// right again. Returns how many were removed (0: `root` unchanged).
pub fn remove_entries(root: &mut [u8], entry: usize, drop: impl Fn(u64) -> bool) -> usize {
    let len = (super::u32_at(root, 4) as usize).min(root.len());
    if len < SDT_HEADER || !matches!(entry, 4 | 8) {
        return 0;
    }
    let mut kept = SDT_HEADER;
    let mut at = SDT_HEADER;
    while at + entry <= len {
        if !drop(super::entry_address(&root[at..at + entry])) {
            root.copy_within(at..at + entry, kept);
            kept += entry;
        }
        at += entry;
    }
    let removed = (at - kept) / entry;
    if removed == 0 {
        return 0;
    }
    root[kept..len].fill(0);
    root[4..8].copy_from_slice(&(kept as u32).to_le_bytes());
    root[9] = 0;
    let sum = root[..kept].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    root[9] = 0u8.wrapping_sub(sum);
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::checksum_ok;
    use crate::acpi::tests::{Mem, rsdp_v1, sdt};

    fn mcfg(entries: &[(u64, u8, u8)]) -> Vec<u8> {
        let mut body = vec![0u8; 8];
        for &(base, start, end) in entries {
            body.extend_from_slice(&base.to_le_bytes());
            body.extend_from_slice(&[0, 0, start, end, 0, 0, 0, 0]);
        }
        sdt(b"MCFG", &body)
    }

    fn machine(mcfg: Vec<u8>) -> Mem {
        let rsdt = sdt(
            b"RSDT",
            &[0x2000u32.to_le_bytes(), 0x3000u32.to_le_bytes()].concat(),
        );
        Mem(vec![
            (0x1000, rsdt),
            (0x2000, sdt(b"FACP", &[0; 8])),
            (0x3000, mcfg),
        ])
    }

    #[test]
    fn reads_the_windows_of_each_segment() {
        // QEMU q35: 256 buses at 0xB000_0000; a second group, buses 8-15.
        let m = machine(mcfg(&[(0xb000_0000, 0, 255), (0xe000_0000, 8, 15)]));
        let w = windows(&m, &rsdp_v1(0x1000)).unwrap();
        assert_eq!(
            w,
            [
                Some((0xb000_0000, 0xc000_0000)),
                Some((0xe080_0000, 0xe100_0000)),
                None,
                None
            ]
        );
        // No MCFG: none.
        let m = Mem(vec![
            (0x1000, sdt(b"RSDT", &0x2000u32.to_le_bytes())),
            (0x2000, sdt(b"FACP", &[0; 8])),
        ]);
        assert_eq!(windows(&m, &rsdp_v1(0x1000)).unwrap(), [None; 4]);
    }

    #[test]
    fn only_checked_root_tables_are_named() {
        let m = machine(mcfg(&[(0xb000_0000, 0, 255)]));
        assert_eq!(roots(&m, &rsdp_v1(0x1000)), [Some((0x1000, 4)), None]);
        // A root table with a bad checksum, or another signature: none.
        let mut bad = sdt(b"RSDT", &0x3000u32.to_le_bytes());
        bad[9] ^= 1;
        let m = Mem(vec![(0x1000, bad)]);
        assert_eq!(roots(&m, &rsdp_v1(0x1000)), [None, None]);
        let m = Mem(vec![(0x1000, sdt(b"FACP", &[0; 8]))]);
        assert_eq!(roots(&m, &rsdp_v1(0x1000)), [None, None]);
    }

    #[test]
    fn a_malformed_mcfg_is_refused() {
        for bad in [
            mcfg(&[(0xb000_0000, 9, 8)]),
            mcfg(&[(u64::MAX - 0xfff, 0, 0)]),
            mcfg(&[(u64::MAX - 0xfff, 2, 3)]),
            mcfg(&[(1 << 48, 0, 0)]),
            mcfg(&[(0, 0, 0); 5]),
            {
                let mut t = mcfg(&[(0xb000_0000, 0, 1)]);
                t.truncate(t.len() - 4);
                let n = t.len() as u32;
                t[4..8].copy_from_slice(&n.to_le_bytes());
                t[9] = 0;
                let s = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
                t[9] = 0u8.wrapping_sub(s);
                t
            },
        ] {
            assert_eq!(
                windows(&machine(bad), &rsdp_v1(0x1000)),
                Err(AcpiError::BadTable("MCFG"))
            );
        }
    }

    #[test]
    fn removing_an_entry_keeps_the_root_table_valid() {
        // RSDT: FADT, MCFG, HPET; remove MCFG.
        let mut rsdt = sdt(
            b"RSDT",
            &[0x2000u32, 0x3000, 0x4000]
                .iter()
                .flat_map(|a| a.to_le_bytes())
                .collect::<Vec<_>>(),
        );
        assert_eq!(remove_entries(&mut rsdt, 4, |a| a == 0x3000), 1);
        assert_eq!(super::super::u32_at(&rsdt, 4), 44);
        assert_eq!(super::super::u32_at(&rsdt, 36), 0x2000);
        assert_eq!(super::super::u32_at(&rsdt, 40), 0x4000);
        assert!(checksum_ok(&rsdt[..44]));
        // Nothing to remove: unchanged.
        let before = rsdt.clone();
        assert_eq!(remove_entries(&mut rsdt, 4, |a| a == 0x3000), 0);
        assert_eq!(rsdt, before);
        // XSDT entries are 8 bytes.
        let mut xsdt = sdt(
            b"XSDT",
            &[0x2000u64, 0x1_0000_3000]
                .iter()
                .flat_map(|a| a.to_le_bytes())
                .collect::<Vec<_>>(),
        );
        assert_eq!(remove_entries(&mut xsdt, 8, |a| a == 0x1_0000_3000), 1);
        assert_eq!(super::super::u32_at(&xsdt, 4), 44);
        assert!(checksum_ok(&xsdt[..44]));
    }
}
