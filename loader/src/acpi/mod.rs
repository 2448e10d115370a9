//! How many processors the firmware lists: the ACPI MADT, found from the
//! RSDP the boot loader copied (multiboot2 ACPI tags).
//!
//! The loader parks every application processor before the guest starts
//! (`smp.rs` in the image) and must know how many to wait for: a
//! processor that did not come up would be left where the guest can
//! start it outside VMX. Only what that count needs is read, each table
//! checked (signature, length inside readable memory, checksum):
//! ACPI 6.5 §5.2.5.3 (RSDP), §5.2.7/§5.2.8 (RSDT/XSDT), §5.2.12 (MADT),
//! §5.2.12.2 (Processor Local APIC), §5.2.12.12 (Processor Local x2APIC).

use crate::bootinfo::PhysMem;

pub mod mcfg;
pub mod sleep;

/// Why the MADT could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// The RSDP's signature, length or checksum is wrong.
    BadRsdp,
    /// A table is not readable, too short, or fails its checksum.
    BadTable(&'static str),
    /// The RSDT/XSDT lists no MADT ("APIC").
    NoMadt,
}

impl core::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AcpiError::BadRsdp => write!(f, "the ACPI RSDP is malformed"),
            AcpiError::BadTable(t) => write!(f, "the ACPI {t} is unreadable or malformed"),
            AcpiError::NoMadt => write!(f, "no ACPI MADT (\"APIC\") is listed"),
        }
    }
}

/// The most processors [`Processors`] holds the APIC IDs of.
pub const MAX_PROCESSORS: usize = 64;

/// The processors the MADT lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processors {
    ids: [u32; MAX_PROCESSORS],
    count: usize,
    /// Enabled processors beyond [`MAX_PROCESSORS`] (their IDs not kept).
    pub more: u32,
    /// Entries that are not enabled: disabled, or online-capable only
    /// (hot-plug slots, usually empty at boot), and the 0xFF placeholder
    /// IDs some firmware lists.
    pub not_enabled: u32,
}

impl Processors {
    /// The APIC IDs of the enabled processors, each once (firmware may
    /// list a processor both as a local APIC and as a local x2APIC).
    pub fn ids(&self) -> &[u32] {
        &self.ids[..self.count]
    }

    /// Enabled processors, the bootstrap processor included.
    pub fn enabled(&self) -> u32 {
        self.count as u32 + self.more
    }

    fn add(&mut self, id: u32) {
        if self.ids().contains(&id) {
            return;
        }
        if self.count < MAX_PROCESSORS {
            self.ids[self.count] = id;
            self.count += 1;
        } else {
            self.more += 1;
        }
    }
}

pub(crate) const SDT_HEADER: usize = 36;
/// The MADT's fixed part: the header, the local APIC address, flags.
const MADT_FIXED: usize = SDT_HEADER + 8;
/// The longest table read (a sanity bound on a firmware length field).
const MAX_TABLE: usize = 1 << 20;

pub(crate) fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | u64::from(u32_at(b, at + 4)) << 32
}

/// The table address in a root-table entry: 4 bytes in the RSDT, 8 in
/// the XSDT (`e` is one entry).
pub fn entry_address(e: &[u8]) -> u64 {
    if e.len() == 8 {
        u64_at(e, 0)
    } else {
        u64::from(u32_at(e, 0))
    }
}

/// The whole table at `addr` (its header's length), checked.
pub fn table<'m>(
    mem: &'m impl PhysMem,
    addr: u64,
    what: &'static str,
) -> Result<&'m [u8], AcpiError> {
    let header = mem
        .bytes(addr, SDT_HEADER)
        .ok_or(AcpiError::BadTable(what))?;
    let len = u32_at(header, 4) as usize;
    if !(SDT_HEADER..=MAX_TABLE).contains(&len) {
        return Err(AcpiError::BadTable(what));
    }
    let bytes = mem.bytes(addr, len).ok_or(AcpiError::BadTable(what))?;
    if !checksum_ok(bytes) {
        return Err(AcpiError::BadTable(what));
    }
    Ok(bytes)
}

/// The table with signature `sig` that the RSDT or XSDT of `rsdp` (a
/// copy of the RSDP, as the multiboot2 ACPI tags hold it) lists, checked;
/// `None` when none is listed.
pub fn find_table<'m>(
    mem: &'m impl PhysMem,
    rsdp: &[u8],
    sig: &[u8; 4],
    what: &'static str,
) -> Result<Option<&'m [u8]>, AcpiError> {
    if rsdp.len() < 20 || &rsdp[..8] != b"RSD PTR " || !checksum_ok(&rsdp[..20]) {
        return Err(AcpiError::BadRsdp);
    }
    // Revision 2 and later: the XSDT (64-bit entries), its own length and
    // extended checksum.
    let xsdt = rsdp[15] >= 2 && rsdp.len() >= 36 && {
        let len = u32_at(rsdp, 20) as usize;
        (36..=rsdp.len()).contains(&len) && checksum_ok(&rsdp[..len]) && u64_at(rsdp, 24) != 0
    };
    let (root, entry, root_name) = if xsdt {
        (u64_at(rsdp, 24), 8, "XSDT")
    } else {
        (u64::from(u32_at(rsdp, 16)), 4, "RSDT")
    };
    let root = table(mem, root, root_name)?;
    root[SDT_HEADER..]
        .chunks_exact(entry)
        .map(entry_address)
        .find(|&addr| mem.bytes(addr, 4).is_some_and(|s| s == sig))
        .map(|addr| table(mem, addr, what))
        .transpose()
}

/// Counts the processors of the MADT reached from `rsdp` (a copy of the
/// RSDP, as the multiboot2 ACPI tags hold it).
pub fn processors(mem: &impl PhysMem, rsdp: &[u8]) -> Result<Processors, AcpiError> {
    let madt = find_table(mem, rsdp, b"APIC", "MADT")?.ok_or(AcpiError::NoMadt)?;
    if madt.len() < MADT_FIXED {
        return Err(AcpiError::BadTable("MADT"));
    }
    let mut found = Processors {
        ids: [0; MAX_PROCESSORS],
        count: 0,
        more: 0,
        not_enabled: 0,
    };
    let mut at = MADT_FIXED;
    while at + 2 <= madt.len() {
        let (kind, len) = (madt[at], madt[at + 1] as usize);
        if len < 2 || at + len > madt.len() {
            return Err(AcpiError::BadTable("MADT"));
        }
        // (APIC ID, flags) of a Processor Local APIC (8-bit ID) or
        // Processor Local x2APIC entry, and the ID that means "none".
        let entry = match (kind, len) {
            (0, 8..) => Some((u32::from(madt[at + 3]), u32_at(madt, at + 4), 0xff)),
            (9, 16..) => Some((u32_at(madt, at + 4), u32_at(madt, at + 8), u32::MAX)),
            (0 | 9, _) => return Err(AcpiError::BadTable("MADT")),
            _ => None,
        };
        match entry {
            // Flags bit 0: enabled.
            Some((id, flags, none)) if flags & 1 != 0 && id != none => found.add(id),
            Some(_) => found.not_enabled += 1,
            None => {}
        }
        at += len;
    }
    Ok(found)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Memory made of tables at fixed addresses.
    pub(crate) struct Mem(pub(crate) Vec<(u64, Vec<u8>)>);

    impl PhysMem for Mem {
        fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
            self.0.iter().find_map(|(base, b)| {
                let off = usize::try_from(addr.checked_sub(*base)?).ok()?;
                b.get(off..off.checked_add(len)?)
            })
        }
    }

    fn fix_checksum(b: &mut [u8], at: usize, len: usize) {
        b[at] = 0;
        let sum = b[..len].iter().fold(0u8, |a, x| a.wrapping_add(*x));
        b[at] = 0u8.wrapping_sub(sum);
    }

    pub(crate) fn sdt(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = sig.to_vec();
        t.extend_from_slice(&((SDT_HEADER + body.len()) as u32).to_le_bytes());
        t.resize(SDT_HEADER, 0);
        t.extend_from_slice(body);
        let len = t.len();
        fix_checksum(&mut t, 9, len);
        t
    }

    fn lapic(id: u8, flags: u32) -> Vec<u8> {
        let mut e = vec![0, 8, id, id];
        e.extend_from_slice(&flags.to_le_bytes());
        e
    }

    fn x2apic(id: u32, flags: u32) -> Vec<u8> {
        let mut e = vec![9, 16, 0, 0];
        e.extend_from_slice(&id.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&id.to_le_bytes());
        e
    }

    fn madt(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![0, 0, 0xe0, 0xfe, 1, 0, 0, 0];
        // An I/O APIC entry, which is not a processor.
        body.extend_from_slice(&[1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]);
        for e in entries {
            body.extend_from_slice(e);
        }
        sdt(b"APIC", &body)
    }

    pub(crate) fn rsdp_v1(rsdt: u32) -> Vec<u8> {
        let mut r = b"RSD PTR ".to_vec();
        r.extend_from_slice(&[0; 7]);
        r.push(0);
        r.extend_from_slice(&rsdt.to_le_bytes());
        fix_checksum(&mut r, 8, 20);
        r
    }

    fn rsdp_v2(xsdt: u64) -> Vec<u8> {
        let mut r = rsdp_v1(0);
        r[15] = 2;
        fix_checksum(&mut r, 8, 20);
        r.extend_from_slice(&36u32.to_le_bytes());
        r.extend_from_slice(&xsdt.to_le_bytes());
        r.extend_from_slice(&[0; 4]);
        fix_checksum(&mut r, 32, 36);
        r
    }

    fn machine(madt_bytes: Vec<u8>) -> Mem {
        let fadt = sdt(b"FACP", &[0; 8]);
        let rsdt = sdt(
            b"RSDT",
            &[0x2000u32.to_le_bytes(), 0x3000u32.to_le_bytes()].concat(),
        );
        let xsdt = sdt(
            b"XSDT",
            &[0x2000u64.to_le_bytes(), 0x3000u64.to_le_bytes()].concat(),
        );
        Mem(vec![
            (0x1000, rsdt),
            (0x1800, xsdt),
            (0x2000, fadt),
            (0x3000, madt_bytes),
        ])
    }

    #[test]
    fn counts_enabled_processors_once_each_by_apic_id_through_rsdt_and_xsdt() {
        // Enabled 0, 1 and 300 (1 listed twice, as local APIC and as
        // x2APIC); a hot-plug slot (online-capable only), a disabled
        // entry and a 0xFF placeholder are not waited for.
        let mem = machine(madt(&[
            lapic(0, 1),
            lapic(1, 1),
            lapic(2, 2),
            lapic(3, 0),
            lapic(0xff, 1),
            x2apic(300, 1),
            x2apic(1, 1),
        ]));
        for rsdp in [rsdp_v1(0x1000), rsdp_v2(0x1800)] {
            let p = processors(&mem, &rsdp).unwrap();
            assert_eq!(p.ids(), &[0, 1, 300]);
            assert_eq!((p.enabled(), p.not_enabled, p.more), (3, 3, 0));
        }
        // More than the table holds: counted, not kept.
        let many: Vec<Vec<u8>> = (0..70).map(|i| x2apic(i, 1)).collect();
        let p = processors(&machine(madt(&many)), &rsdp_v1(0x1000)).unwrap();
        assert_eq!(
            (p.ids().len(), p.more, p.enabled()),
            (MAX_PROCESSORS, 6, 70)
        );
    }

    #[test]
    fn malformed_tables_are_refused_by_name() {
        let good = madt(&[lapic(0, 1)]);
        assert_eq!(
            processors(&machine(good.clone()), b"RSD PTR"),
            Err(AcpiError::BadRsdp)
        );
        let mut bad_rsdp = rsdp_v1(0x1000);
        bad_rsdp[9] ^= 1;
        assert_eq!(
            processors(&machine(good.clone()), &bad_rsdp),
            Err(AcpiError::BadRsdp)
        );
        // A MADT whose checksum is wrong.
        let mut sum = good.clone();
        sum[SDT_HEADER] ^= 1;
        assert_eq!(
            processors(&machine(sum), &rsdp_v1(0x1000)),
            Err(AcpiError::BadTable("MADT"))
        );
        // An entry that runs past the table, and one of length 0.
        for entry in [vec![0, 40, 0, 0, 1, 0, 0, 0], vec![5, 0]] {
            let m = madt(&[entry]);
            assert_eq!(
                processors(&machine(m), &rsdp_v1(0x1000)),
                Err(AcpiError::BadTable("MADT"))
            );
        }
        // A local APIC entry too short for its flags.
        let m = madt(&[vec![0, 4, 0, 0]]);
        assert_eq!(
            processors(&machine(m), &rsdp_v1(0x1000)),
            Err(AcpiError::BadTable("MADT"))
        );
        // A root table that points nowhere readable, and no MADT at all.
        assert_eq!(
            processors(&machine(good.clone()), &rsdp_v1(0x9000)),
            Err(AcpiError::BadTable("RSDT"))
        );
        let mut no_madt = machine(good);
        no_madt.0.pop();
        assert_eq!(
            processors(&no_madt, &rsdp_v1(0x1000)),
            Err(AcpiError::NoMadt)
        );
    }
}
