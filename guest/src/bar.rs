//! `scenario=bar`: the attack `pci-bar-over-locked-page`. A PCI device
//! decodes its memory BARs wherever software puts them, and the chipset
//! sends every physical access in that range to the device — the
//! processor's, through whatever EPT allows, and the monitor's own. The
//! guest has okernel lock a page read-only (a `Rodata` region), then
//! moves a device's BAR over the page: if the move takes, the locked page
//! reads what the device answers — on this device 0xFF while its frame
//! buffer is off, and whatever the guest drew into it once on (which the
//! row's text-only display cannot show) — and so would the monitor, were
//! the page its own.
//!
//! The row's machine has Bochs' PCI VGA adapter (`slot1=pcivga`, vendor
//! 0x1234, device 0x1111): BAR 0 is its 16 MiB linear frame buffer.
//! Under okernel the BAR write at 0xCFC is refused (a memory BAR may not
//! decode over RAM — any RAM: the rule would refuse it over an unlocked
//! page too — `okernel::exit::pci`), dropped and audited, and the page
//! keeps its bytes. With `mode=direct` (no monitor) the move takes:
//! the negative control. PCI Local Bus Specification 3.0 §6.2.5.1 (BARs).

use crate::report::Checks;
use okernel_abi::boot::{EntryMode, GuestMemoryKind, MemoryRegion};
use x86_64::instructions::port::Port;

/// The 16 MiB-aligned window the BAR is moved to (its size) and the
/// locked page at its start: usable RAM the demo guest does not use.
const WINDOW: u64 = 0x0c00_0000;
const WINDOW_SIZE: u64 = 16 << 20;
/// What the page holds.
const RAM_PATTERN: &[u8; 16] = b"OKERNEL-RAM-PAGE";

/// PCI configuration mechanism #1 (PCI 3.0 §3.2.2.3.2).
const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
/// Bochs' PCI VGA adapter.
const VGA_ID: u32 = 0x1111_1234;
/// Configuration register BAR 0.
const BAR0: u8 = 0x10;

fn config_address(dev: u32, reg: u8) -> u32 {
    0x8000_0000 | dev << 11 | u32::from(reg)
}

fn config_read(dev: u32, reg: u8) -> u32 {
    // SAFETY: PCI configuration reads of bus 0.
    unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(config_address(dev, reg));
        Port::<u32>::new(CONFIG_DATA).read()
    }
}

fn config_write(dev: u32, reg: u8, value: u32) {
    // SAFETY: the attack's BAR moves (and their undoing) on the VGA
    // adapter; nothing but the page under test lies in the window.
    unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(config_address(dev, reg));
        Port::<u32>::new(CONFIG_DATA).write(value);
    }
}

/// Fills the 16 bytes at `at` with `pattern`.
fn fill(at: u64, pattern: &[u8; 16]) {
    for (i, &b) in pattern.iter().enumerate() {
        // SAFETY: `at` is the page under test: usable RAM (checked) that
        // nothing else uses, identity-mapped by the hand-off tables.
        unsafe { core::ptr::write_volatile((at + i as u64) as *mut u8, b) };
    }
}

/// What the 16 bytes at `at` hold.
fn peek(at: u64) -> [u8; 16] {
    // SAFETY: as for `fill`; reads only.
    core::array::from_fn(|i| unsafe { core::ptr::read_volatile((at + i as u64) as *const u8) })
}

/// Runs the attack and reports it.
pub fn run(checks: &mut Checks, entry: EntryMode, map: &[MemoryRegion]) {
    let name = "attack-pci-bar-over-locked-page";
    let usable = map.iter().any(|r| {
        r.kind == GuestMemoryKind::Usable as u32
            && r.base <= WINDOW
            && WINDOW + WINDOW_SIZE <= r.base + r.length
    });
    let Some(dev) = (0..32).find(|&d| config_read(d, 0) == VGA_ID) else {
        return checks.check(
            name,
            1,
            false,
            format_args!("no Bochs PCI VGA adapter (1234:1111) on bus 0"),
        );
    };
    if !usable {
        return checks.check(
            name,
            1,
            false,
            format_args!("[{WINDOW:#x}, +16 MiB) is not usable RAM"),
        );
    }
    let bar = config_read(dev, BAR0);
    fill(WINDOW, RAM_PATTERN);
    let monitor = entry == EntryMode::NonRoot;
    // Under okernel: lock the page read-only first (VMCALL is #UD bare).
    let locked = monitor.then(|| crate::attacks::audit::lock_page_read_only(WINDOW));
    let before = monitor
        .then(crate::attacks::audit::count)
        .and_then(Result::ok);
    // The attack: BAR 0 over the locked page's window.
    config_write(dev, BAR0, WINDOW as u32);
    let moved = config_read(dev, BAR0);
    // A processor decodes every access afresh; Bochs' TLB caches where a
    // page's bytes live, so drop the page's entry first.
    crate::arch::cpu::invlpg(WINDOW);
    let seen = peek(WINDOW);
    // Undo: BAR 0 back where the firmware put it.
    config_write(dev, BAR0, bar);
    crate::arch::cpu::invlpg(WINDOW);
    let after = monitor
        .then(crate::attacks::audit::count)
        .and_then(Result::ok);
    let restored = peek(WINDOW) == *RAM_PATTERN && config_read(dev, BAR0) == bar;
    let audited = before
        .zip(after)
        .is_some_and(|(b, a)| crate::attacks::audit::has_port_exit(b, a, CONFIG_DATA));
    let changed = seen != *RAM_PATTERN;
    // The BAR reads back what the device decodes: moved bare, its own
    // value under okernel (the write dropped).
    let ok = match entry {
        EntryMode::NonRoot => {
            locked == Some(true) && !changed && audited && restored && moved == bar
        }
        EntryMode::Direct => changed && restored && u64::from(moved & !0xf) == WINDOW,
    };
    checks.attack(
        "pci-bar-over-locked-page",
        1,
        ok,
        format_args!(
            "page {WINDOW:#x} locked: {}; VGA {dev} BAR 0 {bar:#x} := {WINDOW:#x}, reads {moved:#x}; page reads {:02x?}; restored {restored}",
            match locked {
                Some(true) => "yes",
                Some(false) => "REFUSED",
                None => "no monitor",
            },
            &seen[..4],
        ),
        match entry {
            EntryMode::NonRoot => "protected",
            EntryMode::Direct => "no-monitor",
        },
        match entry {
            EntryMode::NonRoot => "blocked",
            EntryMode::Direct => "succeeded",
        },
        !changed,
        format_args!(
            "{} new audit records, the BAR write {}",
            before
                .zip(after)
                .map_or(-1, |(b, a)| a.saturating_sub(b) as i64),
            if audited { "among them" } else { "not among them" }
        ),
    );
}
