//! The guest's own page tables, walked by the monitor: to find the
//! guest-physical address of a gate (a guest-linear address) and of the
//! memory operand of an emulated SGDT/SIDT/SLDT/STR.
//!
//! Supported: paging off (linear = physical) and 4-level paging (IA-32e
//! mode: CR0.PG, CR4.PAE, EFER.LMA; 1 GiB and 2 MiB pages), SDM Vol. 3A
//! §4.5. 32-bit and PAE paging outside IA-32e mode and 5-level paging
//! (CR4.LA57) are not: such an address does not translate. The walk reads
//! entries through a caller-supplied reader (guest memory as the current
//! EPT view maps it) and sets no accessed/dirty flags.

/// Entry bit 0: present.
pub const PRESENT: u64 = 1 << 0;
use crate::bits::{CR0_PG, CR4_LA57, CR4_PAE, EFER_LMA, EFER_NXE};
use crate::hw::Vmcs;
use crate::memmap::Gpa;
use crate::vmx::error::VmFail;
use crate::vmx::fields::{Guest64, GuestNatural};
/// Entry bit 1: read/write.
pub const WRITABLE: u64 = 1 << 1;
/// Entry bit 2: user/supervisor.
pub const USER: u64 = 1 << 2;
/// Entry bit 5: accessed.
pub const ACCESSED: u64 = 1 << 5;
/// Entry bit 6: dirty (in a page's entry).
pub const DIRTY: u64 = 1 << 6;
/// Entry bit 7: page size (PDPTE, PDE).
pub const PAGE_SIZE: u64 = 1 << 7;
/// Bits 51:12: the physical address of a 4 KiB frame or table.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Entry bit 63: execute disable (with EFER.NXE).
pub const XD: u64 = 1 << 63;

/// The paging state a walk needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagingState {
    /// Guest CR0.
    pub cr0: u64,
    /// Guest CR3.
    pub cr3: u64,
    /// Guest CR4.
    pub cr4: u64,
    /// Guest IA32_EFER.
    pub efer: u64,
}

/// Where a linear address leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The guest-physical address.
    pub gpa: Gpa,
    /// Every level allows writes (R/W = 1 throughout).
    pub writable: bool,
    /// Every level allows user-mode access (U/S = 1 throughout).
    pub user: bool,
    /// No level forbids instruction fetches (XD = 0 throughout, or
    /// EFER.NXE clear).
    pub executable: bool,
    /// The page-table pages the walk read, PML4 first; `None` beyond the
    /// leaf's level and with paging off (a table may sit at GPA 0).
    pub tables: [Option<Gpa>; 4],
    /// The guest-physical address of each entry the walk used, PML4 entry
    /// first; `None` beyond the leaf's level and with paging off. The
    /// processor sets A in each and, for a write, D in the last (SDM Vol.
    /// 3A §4.8).
    pub entries: [Option<Gpa>; 4],
    /// Every entry of the walk has A = 1, so an access through it makes
    /// the processor write no entry for A (SDM Vol. 3A §4.8); true with
    /// paging off.
    pub accessed: bool,
    /// The leaf entry has D = 1, so a write through it makes the
    /// processor write no entry for D; true with paging off.
    pub dirty: bool,
    /// An entry of the walk has a bit set that the processor treats as
    /// reserved (§4.5, Tables 4-14 to 4-19): XD with EFER.NXE clear, PS in
    /// a PML4 entry, bits 20:13 of a 2 MiB or 29:13 of a 1 GiB page entry.
    /// An access through it is a #PF with RSVD on the processor. Address
    /// bits above MAXPHYADDR are not checked (they lead outside RAM).
    pub reserved: bool,
}

impl PagingState {
    /// The guest's paging state as `vmcs` holds it (the real CR0 and CR4,
    /// which its walks use, not the read shadows).
    pub fn of(vmcs: &impl Vmcs) -> Result<Self, VmFail> {
        Ok(Self {
            cr0: vmcs.read(GuestNatural::Cr0)?,
            cr3: vmcs.read(GuestNatural::Cr3)?,
            cr4: vmcs.read(GuestNatural::Cr4)?,
            efer: vmcs.read(Guest64::Efer)?,
        })
    }

    /// Whether the guest is in IA-32e mode with 4-level paging (the one
    /// paging mode the walk supports).
    pub const fn long_mode(&self) -> bool {
        self.cr0 & CR0_PG != 0
            && self.cr4 & CR4_PAE != 0
            && self.efer & EFER_LMA != 0
            && self.cr4 & CR4_LA57 == 0
    }
}

/// Why a linear address does not translate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkError {
    /// Not canonical, or a paging mode the walker does not support.
    Unsupported,
    /// An entry on the way is not present (or unreadable): the address at
    /// which the walk stopped.
    NotPresent(Gpa),
}

/// Translates `linear` under `state`, reading 8-byte entries with
/// `read(gpa)` (`None`: the entry cannot be read, the walk fails).
pub fn translate(
    state: PagingState,
    linear: u64,
    mut read: impl FnMut(Gpa) -> Option<u64>,
) -> Result<Mapping, WalkError> {
    if state.cr0 & CR0_PG == 0 {
        return Ok(Mapping {
            gpa: Gpa(linear & 0xffff_ffff),
            writable: true,
            user: true,
            executable: true,
            tables: [None; 4],
            entries: [None; 4],
            accessed: true,
            dirty: true,
            reserved: false,
        });
    }
    if state.cr4 & CR4_PAE == 0 || state.efer & EFER_LMA == 0 || state.cr4 & CR4_LA57 != 0 {
        return Err(WalkError::Unsupported);
    }
    if ((linear as i64) << 16 >> 16) as u64 != linear {
        return Err(WalkError::Unsupported);
    }
    let mut table = Gpa(state.cr3 & ADDR_MASK);
    let mut writable = true;
    let mut user = true;
    let mut executable = true;
    let mut accessed = true;
    let mut reserved = false;
    let mut tables = [None; 4];
    let mut entries = [None; 4];
    let nxe = state.efer & EFER_NXE != 0;
    // Levels 4 (PML4) to 1 (PT); bits 47:39, 38:30, 29:21, 20:12.
    for level in (1..=4u32).rev() {
        let shift = 12 + 9 * (level - 1);
        let index = (linear >> shift) & 0x1ff;
        tables[(4 - level) as usize] = Some(table);
        let entry_addr = table + index * 8;
        entries[(4 - level) as usize] = Some(entry_addr);
        let entry = read(entry_addr).ok_or(WalkError::NotPresent(entry_addr))?;
        if entry & PRESENT == 0 {
            return Err(WalkError::NotPresent(entry_addr));
        }
        writable &= entry & WRITABLE != 0;
        user &= entry & USER != 0;
        executable &= !nxe || entry & XD == 0;
        accessed &= entry & ACCESSED != 0;
        reserved |= !nxe && entry & XD != 0 || level == 4 && entry & PAGE_SIZE != 0;
        let leaf = level == 1 || ((level == 2 || level == 3) && entry & PAGE_SIZE != 0);
        if leaf {
            let page_mask = (1u64 << shift) - 1;
            // Bits 12 (PAT) .. the page's own offset bits are reserved in a
            // large-page entry but bit 12 itself.
            reserved |= level > 1 && entry & page_mask & !0x1fff != 0;
            let base = entry & ADDR_MASK & !page_mask;
            return Ok(Mapping {
                gpa: Gpa(base | (linear & page_mask)),
                writable,
                user,
                executable,
                tables,
                entries,
                accessed,
                dirty: entry & DIRTY != 0,
                reserved,
            });
        }
        table = Gpa(entry & ADDR_MASK);
    }
    Err(WalkError::Unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bits::{CR0_PE, EFER_LME};
    use std::collections::HashMap;

    const LONG: PagingState = PagingState {
        cr0: CR0_PG | CR0_PE,
        cr3: 0x1000,
        cr4: CR4_PAE,
        efer: EFER_LMA | EFER_LME,
    };

    fn gpas(entries: [Option<u64>; 4]) -> [Option<Gpa>; 4] {
        entries.map(|e| e.map(Gpa))
    }

    fn tables() -> HashMap<u64, u64> {
        let mut m = HashMap::new();
        // PML4[0] -> 0x2000 (PDPT); PDPT[0] -> 0x3000 (PD); PD[1] = 2 MiB
        // page at 0x40_0000, writable, supervisor; PD[2] -> PT 0x4000;
        // PT[3] = 4 KiB page 0x9000, read-only user. PDPT[1] = 1 GiB page.
        m.insert(0x1000, 0x2000 | PRESENT | WRITABLE | USER);
        m.insert(0x2000, 0x3000 | PRESENT | WRITABLE | USER);
        m.insert(0x2008, 0x4000_0000 | PRESENT | PAGE_SIZE);
        m.insert(0x3008, 0x40_0000 | PRESENT | WRITABLE | PAGE_SIZE);
        m.insert(0x3010, 0x4000 | PRESENT | WRITABLE | USER);
        m.insert(0x4018, 0x9000 | PRESENT | USER);
        m
    }

    #[test]
    fn walks_4k_2m_and_1g_pages_with_their_rights() {
        let t = tables();
        let read = |a: Gpa| t.get(&a.0).copied().or(Some(0));
        let m = translate(LONG, 0x20_0000 + 0x1234, read).unwrap();
        assert_eq!(
            m,
            Mapping {
                gpa: Gpa(0x40_1234),
                writable: true,
                user: false,
                executable: true,
                tables: gpas([Some(0x1000), Some(0x2000), Some(0x3000), None]),
                entries: gpas([Some(0x1000), Some(0x2000), Some(0x3008), None]),
                accessed: false,
                dirty: false,
                reserved: false,
            }
        );
        let m = translate(LONG, 0x40_3010, read).unwrap();
        assert_eq!(
            m,
            Mapping {
                gpa: Gpa(0x9010),
                writable: false,
                user: true,
                executable: true,
                tables: gpas([Some(0x1000), Some(0x2000), Some(0x3000), Some(0x4000)]),
                entries: gpas([Some(0x1000), Some(0x2000), Some(0x3010), Some(0x4018)]),
                accessed: false,
                dirty: false,
                reserved: false,
            }
        );
        let m = translate(LONG, 0x4123_4567, read).unwrap();
        assert_eq!(m.gpa, Gpa(0x4123_4567));
        assert!(!m.writable);
        assert_eq!(
            m.tables,
            gpas([Some(0x1000), Some(0x2000), None, None]),
            "a 1 GiB page"
        );
        assert_eq!(m.entries, gpas([Some(0x1000), Some(0x2008), None, None]));
    }

    #[test]
    fn execute_disable_counts_only_with_efer_nxe() {
        let mut t = tables();
        t.insert(0x3008, 0x40_0000 | PRESENT | PAGE_SIZE | XD);
        let read = |a: Gpa| t.get(&a.0).copied().or(Some(0));
        let nxe = PagingState {
            efer: LONG.efer | EFER_NXE,
            ..LONG
        };
        assert!(!translate(nxe, 0x20_0000, read).unwrap().executable);
        assert!(translate(LONG, 0x20_0000, read).unwrap().executable);
        assert!(LONG.long_mode());
        assert!(!PagingState { cr0: 1, ..LONG }.long_mode());
    }

    #[test]
    fn missing_entries_modes_and_non_canonical_addresses_do_not_translate() {
        let t = tables();
        let read = |a: Gpa| t.get(&a.0).copied().or(Some(0));
        assert_eq!(
            translate(LONG, 0x40_4000, read),
            Err(WalkError::NotPresent(Gpa(0x4020)))
        );
        assert_eq!(
            translate(LONG, 0x8000_0000_0000, read),
            Err(WalkError::Unsupported)
        );
        assert_eq!(
            translate(LONG, 0x1000, |_| None),
            Err(WalkError::NotPresent(Gpa(0x1000)))
        );
        let pae32 = PagingState { efer: 0, ..LONG };
        assert_eq!(translate(pae32, 0x1000, read), Err(WalkError::Unsupported));
        let off = PagingState { cr0: 1, ..LONG };
        assert_eq!(
            translate(off, 0x1_2345_6789, read).unwrap().gpa,
            Gpa(0x2345_6789)
        );
    }
}
