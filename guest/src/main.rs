//! The demo guest kernel's entry and scenarios.
#![no_std]
#![no_main]

mod arch;
mod attacks;
mod bar;
mod bench;
mod dma;
mod executor;
mod forge;
mod kernel;
mod monitor_checks;
mod report;
mod sleep;
mod smm;
mod smp;

use core::panic::PanicInfo;
use guest::cmdline::{Options, Scenario};
use log::{LevelFilter, info};
use okernel_abi::boot::{BOOT_MAGIC, BootInfo, EntryMode, GuestMemoryKind, MemoryRegion};
use okernel_abi::result::Outcome;
use okernel_console::println;
use report::end;

/// Called by the entry stub with the loader's hand-off.
#[unsafe(no_mangle)]
extern "C" fn guest_main(boot_info: u64) -> ! {
    okernel_console::init_logger("guest", LevelFilter::Info);
    let sel = arch::tables::init();
    // SAFETY: the boot protocol (okernel_abi::boot) puts a BootInfo at the
    // address in RDI, in memory identity-mapped by the hand-off page tables
    // and owned by the guest; nothing else writes it.
    let bi: BootInfo = unsafe { core::ptr::read(boot_info as *const BootInfo) };
    if bi.magic != BOOT_MAGIC {
        end(
            Outcome::Fail,
            format_args!("guest: bad boot-info magic {:#x}", bi.magic),
        );
    }
    let Some(entry_mode) = EntryMode::from_raw(bi.entry_mode) else {
        end(
            Outcome::Fail,
            format_args!("guest: bad entry mode {}", bi.entry_mode),
        )
    };
    report::set_entry_mode(entry_mode);
    let mode = match entry_mode {
        EntryMode::Direct => "direct (VMX root, no monitor)",
        EntryMode::NonRoot => "VMX non-root under okernel",
    };
    // SAFETY: as above, the command line lies in the hand-off area.
    let cmdline = unsafe { hand_off_str(bi.cmdline_addr, bi.cmdline_len) };
    println!("==============================================");
    println!(" okernel demo guest kernel v{}", env!("CARGO_PKG_VERSION"));
    println!(" entered in {mode}");
    println!("==============================================");
    info!("command line: `{cmdline}`");
    // SAFETY: the memory map lies in the hand-off area, `memory_map_len`
    // entries long.
    let map = unsafe {
        core::slice::from_raw_parts(
            bi.memory_map_addr as *const MemoryRegion,
            bi.memory_map_len as usize,
        )
    };
    let usable: u64 = map
        .iter()
        .filter(|r| r.kind == GuestMemoryKind::Usable as u32)
        .map(|r| r.length)
        .sum();
    // Pages inside the monitor's memory, to attack: one in its image (the
    // first monitor region) and the first frame of its frame pool (the
    // last one: VMXON region, VMCS, EPT tables).
    let mut monitor_regions = map
        .iter()
        .filter(|r| r.kind == GuestMemoryKind::Monitor as u32);
    let monitor = monitor_regions
        .clone()
        .find(|r| r.length >= 0x2000)
        .map(|r| r.base + 0x1000);
    // The pool is a second monitor region; the image is never it.
    let pool = (monitor_regions.clone().count() >= 2)
        .then(|| monitor_regions.next_back().map(|r| r.base))
        .flatten();
    info!(
        "memory map: {} entries, {} KiB usable",
        map.len(),
        usable / 1024
    );

    let opts = match Options::parse(cmdline) {
        Ok(o) => o,
        Err(e) => end(Outcome::Fail, format_args!("{e}")),
    };
    self_test_probes();
    let ram_top = map
        .iter()
        .filter(|r| {
            [
                GuestMemoryKind::Usable,
                GuestMemoryKind::GuestImage,
                GuestMemoryKind::BootData,
            ]
            .iter()
            .any(|&k| k as u32 == r.kind)
        })
        .map(|r| r.base + r.length)
        .max()
        .unwrap_or(0);
    let non_root = entry_mode == EntryMode::NonRoot;
    match opts.scenario {
        Scenario::Boot => {
            let mut checks = report::Checks::default();
            match entry_mode {
                EntryMode::NonRoot => monitor_checks::run(&mut checks, monitor, pool),
                EntryMode::Direct => monitor_checks::negative_controls(&mut checks, monitor),
            }
            checks.finish(entry_mode)
        }
        Scenario::Panic => panic!("scenario `panic` panics on purpose"),
        Scenario::Hang => {
            info!("scenario `hang`: halting with interrupts off");
            okernel_console::halt_forever()
        }
        Scenario::Attacks => {
            let mut checks = report::Checks::default();
            let mode = guest::attack::Mode::new(non_root, opts.protect);
            attacks::run(&mut checks, mode, ram_top, monitor, sel);
            checks.finish(entry_mode)
        }
        Scenario::Fuzz => {
            let mode = guest::attack::Mode::new(non_root, opts.protect);
            let aps = opts.run_aps.then_some(map);
            executor::run(mode, ram_top, monitor, pool, opts.transport, sel, aps)
        }
        Scenario::Sleep => {
            let mut checks = report::Checks::default();
            sleep::run(&mut checks, entry_mode, map);
            checks.finish(entry_mode)
        }
        Scenario::Smm => {
            let mut checks = report::Checks::default();
            smm::run(&mut checks, entry_mode, map);
            checks.finish(entry_mode)
        }
        Scenario::Forge => {
            let mut checks = report::Checks::default();
            forge::run(&mut checks, entry_mode);
            checks.finish(entry_mode)
        }
        Scenario::Dma => {
            let mut checks = report::Checks::default();
            dma::run(&mut checks, entry_mode, map);
            checks.finish(entry_mode)
        }
        Scenario::Bar => {
            let mut checks = report::Checks::default();
            bar::run(&mut checks, entry_mode, map);
            checks.finish(entry_mode)
        }
        Scenario::Smp => {
            let mut checks = report::Checks::default();
            smp::run(&mut checks, entry_mode, map, opts.planted(), (ram_top, sel));
            checks.finish(entry_mode)
        }
        Scenario::Bench => {
            let (Some(target), EntryMode::NonRoot) = (monitor, entry_mode) else {
                end(
                    Outcome::Fail,
                    format_args!("guest: `bench` needs the monitor"),
                )
            };
            bench::run(target, map);
            report::Checks::default().finish(entry_mode)
        }
    }
}

/// Checks that probes catch faults and resume, so a later "blocked" (a
/// probe that faulted) cannot be an artefact of a broken probe.
fn self_test_probes() {
    extern "C" fn ud(_: u64) -> u64 {
        // SAFETY: ud2 raises #UD, which the probe's recovery context
        // catches; nothing else is affected.
        unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
        1
    }
    extern "C" fn ok(v: u64) -> u64 {
        v + 1
    }
    match arch::traps::probe(ud, 0) {
        Err(f) if f.vector == 6 => info!(
            "probe self-test: ud2 caught as {} at {:#x}",
            f.name(),
            f.rip
        ),
        other => end(
            Outcome::Fail,
            format_args!("guest: probe self-test: ud2 gave {other:?}"),
        ),
    }
    if arch::traps::probe(ok, 41) != Ok(42) {
        end(
            Outcome::Fail,
            format_args!("guest: probe self-test: plain call failed"),
        );
    }
}

/// Reads a UTF-8 string from the hand-off area.
///
/// # Safety
///
/// `addr..addr + len` must be readable memory that nothing writes.
unsafe fn hand_off_str(addr: u64, len: u64) -> &'static str {
    if addr == 0 || len == 0 {
        return "";
    }
    // SAFETY: forwarded from the caller.
    let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) };
    core::str::from_utf8(bytes).unwrap_or("<invalid UTF-8>")
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    end(Outcome::Panic, format_args!("guest: {info}"))
}
