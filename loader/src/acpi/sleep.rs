//! The platform's sleep and reset controls, as the FADT and the DSDT
//! describe them: what the monitor must mediate so that a guest cannot
//! put the machine to sleep and be resumed by the firmware outside VMX
//! (`docs/threat-model.md`, "ACPI sleep").
//!
//! The loader turns them into the monitor's port rules
//! (`okernel::exit::platform_ports`, `boot.rs`). ACPI 6.5 §5.2.9 (FADT, Table 5.9),
//! §4.8.3.2 (PM1 control: SLP_TYP bits 12:10, SLP_EN bit 13), §7.4.2
//! (`\_Sx` packages), §20.2.5.2 (NameOp 0x08, PackageOp 0x12),
//! §20.2.4 (PkgLength), §5.2.10 (FACS, S4BIOS).

use super::{AcpiError, find_table, table, u32_at, u64_at};
use crate::bootinfo::PhysMem;

/// The FADT's sleep and reset controls and the DSDT's sleep types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SleepControls {
    /// PM1a and PM1b control: I/O ports (SLP_TYP, SLP_EN).
    pub pm1_cnt: [Option<u16>; 2],
    /// PM1a event block: the start of the chipset's ACPI PM I/O block,
    /// whose base a PCI configuration register holds (the loader locks
    /// that register: moved, PM1 control would answer elsewhere).
    pub pm1a_evt: Option<u16>,
    /// A PM1 control block in memory space (not an I/O port): the guest
    /// writes it through EPT, which an I/O bitmap cannot mediate.
    pub pm1_in_memory: bool,
    /// Hardware-reduced ACPI (FADT flag 20): sleep goes through the
    /// SLEEP_CONTROL_REG instead of PM1 control.
    pub hardware_reduced: bool,
    /// SMI_CMD and the value that asks the firmware for S4 (S4BIOS_REQ,
    /// 0: not supported).
    pub smi_cmd: Option<(u16, u8)>,
    /// The SMI_CMD values the FADT gives the OS: ACPI_ENABLE,
    /// ACPI_DISABLE, PSTATE_CNT, CST_CNT (0: not given). The monitor
    /// performs these and refuses every other value.
    pub smi_values: [u8; 4],
    /// The reset register when it is an I/O port, and its reset value
    /// (FADT flag 10, RESET_REG_SUP).
    pub reset: Option<(u16, u8)>,
    /// SLP_TYPa and SLP_TYPb of `\_S3` (suspend to RAM), when the DSDT
    /// names it.
    pub s3: Option<(u8, u8)>,
    /// SLP_TYPa and SLP_TYPb of `\_S5` (soft off).
    pub s5: Option<(u8, u8)>,
    /// The DSDT could not be read (checksum, length, address): no sleep
    /// type is known, and the PM1 rules then refuse every sleep and
    /// power-off rather than none.
    pub dsdt_unreadable: bool,
    /// The other fixed-hardware I/O blocks (ACPI 6.5 §4.8.3), as (first
    /// port, length): PM1a and PM1b event, PM2 control, the PM timer,
    /// GPE0 and GPE1 — the registers an OS's ACPI driver polls and
    /// acknowledges, which the monitor passes to the guest (default deny
    /// would make every PM-timer read an exit).
    pub io_blocks: [Option<(u16, u16)>; 6],
}

/// FADT offsets (ACPI 6.5 Table 5.9).
mod fadt {
    pub const DSDT: usize = 40;
    pub const SMI_CMD: usize = 48;
    pub const PM1A_EVT_BLK: usize = 56;
    pub const ACPI_ENABLE: usize = 52;
    pub const ACPI_DISABLE: usize = 53;
    pub const S4BIOS_REQ: usize = 54;
    pub const PSTATE_CNT: usize = 55;
    pub const CST_CNT: usize = 95;
    pub const PM1A_CNT_BLK: usize = 64;
    pub const PM1B_CNT_BLK: usize = 68;
    pub const PM1B_EVT_BLK: usize = 60;
    pub const PM2_CNT_BLK: usize = 72;
    pub const PM_TMR_BLK: usize = 76;
    pub const GPE0_BLK: usize = 80;
    pub const GPE1_BLK: usize = 84;
    pub const PM1_EVT_LEN: usize = 88;
    pub const PM2_CNT_LEN: usize = 90;
    pub const PM_TMR_LEN: usize = 91;
    pub const GPE0_BLK_LEN: usize = 92;
    pub const GPE1_BLK_LEN: usize = 93;
    pub const FLAGS: usize = 112;
    pub const RESET_REG: usize = 116;
    pub const RESET_VALUE: usize = 128;
    pub const X_DSDT: usize = 140;
    pub const X_PM1A_EVT_BLK: usize = 148;
    pub const X_PM1A_CNT_BLK: usize = 172;
    pub const X_PM1B_CNT_BLK: usize = 184;
    pub const X_PM1B_EVT_BLK: usize = 160;
    pub const X_PM2_CNT_BLK: usize = 196;
    pub const X_PM_TMR_BLK: usize = 208;
    pub const X_GPE0_BLK: usize = 220;
    pub const X_GPE1_BLK: usize = 232;
    /// FADT flags.
    pub const RESET_REG_SUP: u32 = 1 << 10;
    pub const HW_REDUCED_ACPI: u32 = 1 << 20;
}

/// A Generic Address Structure's address space: system I/O.
const SPACE_IO: u8 = 1;
/// System memory.
const SPACE_MEMORY: u8 = 0;

/// The port (or the "in memory" flag) of a GAS at `at`, if the FADT is
/// long enough and it is set.
fn gas(f: &[u8], at: usize) -> Option<(u8, u64)> {
    (f.len() >= at + 12 && u64_at(f, at + 4) != 0).then(|| (f[at], u64_at(f, at + 4)))
}

/// Reads the FADT's controls and the DSDT's `\_S3`/`\_S5` from the tables
/// `rsdp` reaches. No FADT: every field empty (no ACPI power management
/// to mediate).
pub fn sleep_controls(mem: &impl PhysMem, rsdp: &[u8]) -> Result<SleepControls, AcpiError> {
    let mut c = SleepControls::default();
    let Some(f) = find_table(mem, rsdp, b"FACP", "FADT")? else {
        return Ok(c);
    };
    // ACPI 1.0's FADT ends after the flags (116 bytes); the reset
    // register and the extended addresses came later.
    if f.len() < fadt::FLAGS + 4 {
        return Err(AcpiError::BadTable("FADT"));
    }
    let flags = u32_at(f, fadt::FLAGS);
    c.hardware_reduced = flags & fadt::HW_REDUCED_ACPI != 0;
    for (i, (x, legacy)) in [
        (fadt::X_PM1A_CNT_BLK, fadt::PM1A_CNT_BLK),
        (fadt::X_PM1B_CNT_BLK, fadt::PM1B_CNT_BLK),
    ]
    .into_iter()
    .enumerate()
    {
        match gas(f, x) {
            Some((SPACE_IO, port)) => c.pm1_cnt[i] = u16::try_from(port).ok(),
            Some((SPACE_MEMORY, _)) => c.pm1_in_memory = true,
            _ => {
                let port = u32_at(f, legacy);
                c.pm1_cnt[i] = (port != 0).then(|| u16::try_from(port).ok()).flatten();
            }
        }
    }
    c.pm1a_evt = match gas(f, fadt::X_PM1A_EVT_BLK) {
        Some((SPACE_IO, port)) => u16::try_from(port).ok(),
        Some(_) => None,
        None => u16::try_from(u32_at(f, fadt::PM1A_EVT_BLK))
            .ok()
            .filter(|&p| p != 0),
    };
    c.io_blocks = io_blocks(f);
    let smi = u32_at(f, fadt::SMI_CMD);
    if smi != 0 {
        c.smi_cmd = u16::try_from(smi).ok().map(|p| (p, f[fadt::S4BIOS_REQ]));
        c.smi_values = [
            fadt::ACPI_ENABLE,
            fadt::ACPI_DISABLE,
            fadt::PSTATE_CNT,
            fadt::CST_CNT,
        ]
        .map(|at| f[at]);
    }
    if flags & fadt::RESET_REG_SUP != 0
        && f.len() > fadt::RESET_VALUE
        && let Some((SPACE_IO, port)) = gas(f, fadt::RESET_REG)
    {
        c.reset = u16::try_from(port).ok().map(|p| (p, f[fadt::RESET_VALUE]));
    }
    let dsdt = match (f.len() >= fadt::X_DSDT + 8).then(|| u64_at(f, fadt::X_DSDT)) {
        Some(x) if x != 0 => x,
        _ => u64::from(u32_at(f, fadt::DSDT)),
    };
    match table(mem, dsdt, "DSDT") {
        Ok(t) => {
            c.s3 = sleep_type(&t[36..], b"_S3_");
            c.s5 = sleep_type(&t[36..], b"_S5_");
        }
        Err(_) => c.dsdt_unreadable = true,
    }
    Ok(c)
}

/// The FADT's fixed-hardware I/O blocks other than PM1 control (see
/// [`SleepControls::io_blocks`]): each at its extended address when that
/// is an I/O GAS, else at the legacy one, with the legacy length. A
/// block in memory space, of length 0, below port 0x100 (the legacy
/// devices: DMA controllers, the emulators' ports), touching PCI
/// configuration 0xCF8–0xCFF, or running past port 0xFFFF is left out
/// (and so stays denied to the guest).
fn io_blocks(f: &[u8]) -> [Option<(u16, u16)>; 6] {
    use fadt::*;
    let blocks = [
        (X_PM1A_EVT_BLK, PM1A_EVT_BLK, PM1_EVT_LEN),
        (X_PM1B_EVT_BLK, PM1B_EVT_BLK, PM1_EVT_LEN),
        (X_PM2_CNT_BLK, PM2_CNT_BLK, PM2_CNT_LEN),
        (X_PM_TMR_BLK, PM_TMR_BLK, PM_TMR_LEN),
        (X_GPE0_BLK, GPE0_BLK, GPE0_BLK_LEN),
        (X_GPE1_BLK, GPE1_BLK, GPE1_BLK_LEN),
    ];
    blocks.map(|(x, legacy, len_at)| {
        let len = u16::from(f[len_at]);
        let port = match gas(f, x) {
            Some((SPACE_IO, port)) => port,
            Some(_) => return None,
            None => u64::from(u32_at(f, legacy)),
        };
        let end = port + u64::from(len);
        // Fixed hardware lives above the legacy ISA ports and away from
        // PCI configuration: a block that claims those is not passed.
        let sane = port >= 0x100 && end <= 0x1_0000 && (end <= 0xcf8 || port > 0xcff);
        (len != 0 && sane).then_some((port as u16, len))
    })
}

/// The configuration dwords of bus 0 (CONFIG_ADDRESS values, at most
/// two) that hold the ACPI PM I/O base `pm1a_evt`: in a function's
/// device-specific space (0x40–0xFC), an I/O base (bit 0 set) whose
/// address bits 15:7 are the block's — PIIX4's PMBA (function 3 of the
/// south bridge, 0x40) and the ICH/PCH PMBASE/ABASE (0x40 of the LPC or
/// PMC function) look so. `read(address)` reads one dword through
/// configuration mechanism #1 (PCI Local Bus Specification 3.0
/// §3.2.2.3.2).
pub fn pm_base_registers(read: &mut dyn FnMut(u32) -> u32, pm1a_evt: u16) -> [Option<u32>; 2] {
    let mut found = [None; 2];
    let mut n = 0;
    let base = u32::from(pm1a_evt) & 0xff80;
    for device in 0..32u32 {
        for function in 0..8u32 {
            let at = |reg: u32| 0x8000_0000 | device << 11 | function << 8 | reg;
            if read(at(0)) & 0xffff == 0xffff {
                continue;
            }
            for reg in (0x40..0x100).step_by(4) {
                let v = read(at(reg));
                if base != 0 && v & 1 == 1 && v & 0xffff_ff80 == base && n < 2 {
                    found[n] = Some(at(reg));
                    n += 1;
                }
            }
        }
    }
    found
}

/// The first two elements of the package named `name` (`Name(\_Sx,
/// Package(){a, b, ...})`), found by its encoding in `aml`: NameOp, an
/// optional root prefix, the name, PackageOp, PkgLength, NumElements,
/// then each element a Zero, One, Ones or BytePrefix constant.
pub fn sleep_type(aml: &[u8], name: &[u8; 4]) -> Option<(u8, u8)> {
    let at = (1..aml.len().saturating_sub(4)).find(|&i| {
        &aml[i..i + 4] == name
            && (aml[i - 1] == 0x08 || (aml[i - 1] == b'\\' && i >= 2 && aml[i - 2] == 0x08))
            && aml.get(i + 4) == Some(&0x12)
    })?;
    let lead = *aml.get(at + 5)?;
    // PkgLength: bits 7:6 of the lead byte count the bytes that follow.
    let mut i = at + 6 + usize::from(lead >> 6);
    i += 1; // NumElements
    let mut element = || -> Option<u8> {
        let (v, len) = match *aml.get(i)? {
            0x00 => (0, 1),
            0x01 => (1, 1),
            0xff => (0xff, 1),
            0x0a => (*aml.get(i + 1)?, 2),
            _ => return None,
        };
        i += len;
        Some(v)
    };
    Some((element()?, element()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::tests::{Mem, rsdp_v1, sdt};

    /// AML as a DSDT encodes `Name(\_S3, Package(2){One, One})` and
    /// `Name(_S5, Package(4){0x07, Zero, Zero, Zero})`.
    fn aml() -> Vec<u8> {
        let mut a = vec![0x10, 0x05, b'_', b'S', b'B', b'_']; // a Scope to skip
        a.extend_from_slice(&[
            0x08, b'\\', b'_', b'S', b'3', b'_', 0x12, 0x06, 0x02, 0x01, 0x01,
        ]);
        a.extend_from_slice(&[
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x07, 0x04, 0x0a, 0x07, 0x00,
        ]);
        a.extend_from_slice(&[0x00, 0x00]);
        a
    }

    fn gas_io(port: u64) -> Vec<u8> {
        let mut g = vec![SPACE_IO, 16, 0, 2];
        g.extend_from_slice(&port.to_le_bytes());
        g
    }

    fn fadt_body(x_pm1a: Option<Vec<u8>>) -> Vec<u8> {
        // The FADT without its 36-byte header: offsets below minus 36.
        let mut b = vec![0u8; 244 - 36];
        let put32 = |b: &mut Vec<u8>, at: usize, v: u32| {
            b[at - 36..at - 32].copy_from_slice(&v.to_le_bytes());
        };
        put32(&mut b, fadt::DSDT, 0x5000);
        put32(&mut b, fadt::SMI_CMD, 0xb2);
        b[fadt::S4BIOS_REQ - 36] = 0xf2;
        b[fadt::ACPI_ENABLE - 36] = 0xf1;
        b[fadt::ACPI_DISABLE - 36] = 0xf0;
        put32(&mut b, fadt::PM1A_CNT_BLK, 0xb004);
        put32(&mut b, fadt::PM1A_EVT_BLK, 0xb000);
        put32(&mut b, fadt::FLAGS, fadt::RESET_REG_SUP);
        b[fadt::RESET_REG - 36..fadt::RESET_REG - 24].copy_from_slice(&gas_io(0xcf9));
        b[fadt::RESET_VALUE - 36] = 0x06;
        if let Some(g) = x_pm1a {
            b[fadt::X_PM1A_CNT_BLK - 36..fadt::X_PM1A_CNT_BLK - 24].copy_from_slice(&g);
        }
        b
    }

    fn machine(fadt: Vec<u8>) -> Mem {
        let rsdt = sdt(b"RSDT", &0x4000u32.to_le_bytes());
        Mem(vec![
            (0x1000, rsdt),
            (0x4000, sdt(b"FACP", &fadt)),
            (0x5000, sdt(b"DSDT", &aml())),
        ])
    }

    #[test]
    fn reads_the_pm1_ports_smi_reset_and_sleep_types() {
        let c = sleep_controls(&machine(fadt_body(None)), &rsdp_v1(0x1000)).unwrap();
        assert_eq!(c.pm1_cnt, [Some(0xb004), None]);
        assert_eq!(c.pm1a_evt, Some(0xb000));
        assert!(!c.pm1_in_memory && !c.hardware_reduced);
        assert_eq!(c.smi_cmd, Some((0xb2, 0xf2)));
        assert_eq!(c.smi_values, [0xf1, 0xf0, 0, 0]);
        assert_eq!(c.reset, Some((0xcf9, 0x06)));
        assert_eq!(c.s3, Some((1, 1)));
        assert_eq!(c.s5, Some((7, 0)));
        // The extended block wins over the legacy one; one in memory is
        // flagged (an I/O bitmap cannot mediate it).
        let c = sleep_controls(&machine(fadt_body(Some(gas_io(0x404)))), &rsdp_v1(0x1000));
        assert_eq!(c.unwrap().pm1_cnt[0], Some(0x404));
        let mut mem = gas_io(0xfed0_0004);
        mem[0] = SPACE_MEMORY;
        let c = sleep_controls(&machine(fadt_body(Some(mem))), &rsdp_v1(0x1000)).unwrap();
        assert!(c.pm1_in_memory);
    }

    #[test]
    fn the_fixed_hardware_blocks_are_read_with_their_lengths() {
        // Bochs' PIIX4: PM1 event 0xB000+4, PM timer 0xB008+4, GPE0
        // 0xAFE0+4; no PM1b, PM2 or GPE1 (length 0).
        let mut b = fadt_body(None);
        let put32 = |b: &mut Vec<u8>, at: usize, v: u32| {
            b[at - 36..at - 32].copy_from_slice(&v.to_le_bytes());
        };
        put32(&mut b, fadt::PM_TMR_BLK, 0xb008);
        put32(&mut b, fadt::GPE0_BLK, 0xafe0);
        put32(&mut b, fadt::GPE1_BLK, 0xafe8);
        b[fadt::PM1_EVT_LEN - 36] = 4;
        b[fadt::PM_TMR_LEN - 36] = 4;
        b[fadt::GPE0_BLK_LEN - 36] = 4;
        let c = sleep_controls(&machine(b.clone()), &rsdp_v1(0x1000)).unwrap();
        assert_eq!(
            c.io_blocks,
            [
                Some((0xb000, 4)),
                None,
                None,
                Some((0xb008, 4)),
                Some((0xafe0, 4)),
                None
            ]
        );
        // The extended timer in I/O space wins; one in memory space, or
        // one running past 0xFFFF, is left out.
        b[fadt::X_PM_TMR_BLK - 36..fadt::X_PM_TMR_BLK - 24].copy_from_slice(&gas_io(0x608));
        put32(&mut b, fadt::GPE0_BLK, 0xfffe);
        let c = sleep_controls(&machine(b.clone()), &rsdp_v1(0x1000)).unwrap();
        assert_eq!(c.io_blocks[3], Some((0x608, 4)));
        assert_eq!(c.io_blocks[4], None);
        // A block over the DMA controller or PCI configuration: left out.
        for bad in [0x8u32, 0xcf6] {
            put32(&mut b, fadt::GPE0_BLK, bad);
            let c = sleep_controls(&machine(b.clone()), &rsdp_v1(0x1000)).unwrap();
            assert_eq!(c.io_blocks[4], None, "{bad:#x}");
        }
        let mut mem = gas_io(0xfed0_0008);
        mem[0] = SPACE_MEMORY;
        b[fadt::X_PM_TMR_BLK - 36..fadt::X_PM_TMR_BLK - 24].copy_from_slice(&mem);
        let c = sleep_controls(&machine(b), &rsdp_v1(0x1000)).unwrap();
        assert_eq!(c.io_blocks[3], None);
    }

    #[test]
    fn sleep_types_need_the_name_op_and_a_package_of_constants() {
        assert_eq!(sleep_type(&aml(), b"_S4_"), None);
        // The name inside a string or a method body, not a Name(): none.
        assert_eq!(sleep_type(b"\x0d_S5_\x12\x04\x02\x00\x00", b"_S5_"), None);
        // A package of something else than constants.
        assert_eq!(sleep_type(b"\x08_S5_\x12\x05\x02\x70\x00", b"_S5_"), None);
        // Cut short.
        assert_eq!(sleep_type(b"\x08_S5_\x12\x05\x02\x0a", b"_S5_"), None);
        // A two-byte PkgLength.
        assert_eq!(
            sleep_type(b"\x08_S5_\x12\x40\x00\x02\x0a\x05\x01", b"_S5_"),
            Some((5, 1))
        );
    }

    #[test]
    fn an_acpi_1_fadt_has_the_pm1_ports_and_no_reset_register() {
        let mut short = fadt_body(None);
        short.truncate(116 - 36);
        let c = sleep_controls(&machine(short), &rsdp_v1(0x1000)).unwrap();
        assert_eq!(c.pm1_cnt, [Some(0xb004), None]);
        assert_eq!((c.reset, c.s5), (None, Some((7, 0))));
    }

    #[test]
    fn the_pm_base_register_is_found_where_its_value_names_the_block() {
        // Bus 0: a host bridge (0:0.0) and PIIX4's power management
        // (0:1.3) with PMBA = 0xB001 at 0x40, and 0xB000 (no I/O bit)
        // at 0x50, which is not a base; no other function.
        let mut read = |a: u32| -> u32 {
            match a {
                0x8000_0000 => 0x1237_8086,
                0x8000_0b00 => 0x7113_8086,
                0x8000_0b40 => 0xb001,
                0x8000_0b50 => 0xb000,
                a if a & 0xff == 0 => 0xffff_ffff,
                _ => 0,
            }
        };
        assert_eq!(
            pm_base_registers(&mut read, 0xb000),
            [Some(0x8000_0b40), None]
        );
        assert_eq!(pm_base_registers(&mut read, 0x1800), [None, None]);
        assert_eq!(pm_base_registers(&mut read, 0), [None, None]);
    }

    #[test]
    fn a_bad_dsdt_keeps_the_pm1_ports_and_knows_no_sleep_type() {
        let mut m = machine(fadt_body(None));
        m.0[2].1[40] ^= 0xff; // the DSDT's checksum no longer holds
        let c = sleep_controls(&m, &rsdp_v1(0x1000)).unwrap();
        assert_eq!(c.pm1_cnt, [Some(0xb004), None]);
        assert!(c.dsdt_unreadable);
        assert_eq!((c.s3, c.s5), (None, None));
    }

    #[test]
    fn no_fadt_is_no_controls_and_a_short_one_is_refused() {
        let mut m = machine(fadt_body(None));
        m.0.retain(|(a, _)| *a != 0x4000);
        m.0[0].1 = sdt(b"RSDT", &[]);
        assert_eq!(
            sleep_controls(&m, &rsdp_v1(0x1000)),
            Ok(SleepControls::default())
        );
        let m = machine(vec![0; 40]);
        assert_eq!(
            sleep_controls(&m, &rsdp_v1(0x1000)),
            Err(AcpiError::BadTable("FADT"))
        );
    }
}
