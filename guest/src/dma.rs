//! `scenario=dma`: the attack `isa-dma-over-locked-page`. A device that
//! masters the bus writes physical memory without the processor's
//! translation, so EPT does not stand in its way: the guest programs the
//! 8237 ISA DMA controller (channel 2) and the floppy controller to read
//! the first sector of the inserted floppy into a page it first had
//! okernel lock read-only (a `Rodata` region), then looks whether the
//! floppy's bytes are there.
//!
//! Under okernel both controllers' ports are denied (default deny,
//! `okernel::exit::port_table`): every write is dropped and audited, the
//! floppy controller's status reads all ones, no transfer starts, and
//! the page keeps its bytes. The same image with `mode=direct` is the
//! negative control: the sector lands in the page (nothing locks it
//! there, but the transfer is the same one, and under okernel before
//! default deny it landed in the locked page too).
//!
//! The row's machine has a 1.44 MB floppy whose every sector repeats
//! [`PATTERN`] (`xtask/src/e2e/platform.rs`). Intel 8237A data sheet
//! (registers), Intel 82077AA data sheet (§5: the command, execution and
//! result phases; READ DATA, SPECIFY, SENSE INTERRUPT STATUS).

use crate::report::Checks;
use okernel_abi::boot::{EntryMode, GuestMemoryKind, MemoryRegion};
use x86_64::instructions::port::Port;

/// The target page (usable RAM below 16 MiB: ISA DMA's 24-bit reach).
const PAGE: u64 = 0x7000;
/// What every sector of the row's floppy holds, repeated.
pub const PATTERN: &[u8; 16] = b"OKERNEL-DMA-TEST";

/// 8237 (first controller): channel 2 address and count, the single
/// mask, mode and flip-flop registers; channel 2's page register.
const DMA_ADDR2: u16 = 0x04;
const DMA_COUNT2: u16 = 0x05;
const DMA_MASK: u16 = 0x0a;
const DMA_MODE: u16 = 0x0b;
const DMA_FLIPFLOP: u16 = 0x0c;
const DMA_PAGE2: u16 = 0x81;
/// Mode: single transfer, address increment, write to memory, channel 2.
const MODE_WRITE_CH2: u8 = 0x46;

/// Floppy controller: digital output, main status, data FIFO, config
/// control registers.
const FDC_DOR: u16 = 0x3f2;
const FDC_MSR: u16 = 0x3f4;
const FDC_FIFO: u16 = 0x3f5;
const FDC_CCR: u16 = 0x3f7;
/// DOR: drive 0, not in reset, DMA and interrupt enabled, motor 0 on.
const DOR_RUN: u8 = 0x1c;
/// MSR: ready for a transfer (RQM), and its direction (DIO: to the CPU).
const RQM: u8 = 0x80;
const DIO: u8 = 0x40;

fn outb(port: u16, value: u8) {
    // SAFETY: the 8237 and floppy controller registers of this module;
    // the writes program one transfer into PAGE (what the attack is).
    unsafe { Port::<u8>::new(port).write(value) }
}

fn inb(port: u16) -> u8 {
    // SAFETY: reading the floppy controller's status and FIFO.
    unsafe { Port::<u8>::new(port).read() }
}

/// Waits (bounded) until the controller is ready for a byte in direction
/// `to_cpu`; false when it never is (or nothing answers: all ones).
fn ready(to_cpu: bool) -> bool {
    let want = RQM | if to_cpu { DIO } else { 0 };
    (0..2_000_000).any(|_| {
        let msr = inb(FDC_MSR);
        msr != 0xff && msr & (RQM | DIO) == want
    })
}

fn command(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| {
        let ok = ready(false);
        if ok {
            outb(FDC_FIFO, b);
        }
        ok
    })
}

fn result(out: &mut [u8]) -> bool {
    out.iter_mut().all(|b| {
        let ok = ready(true);
        if ok {
            *b = inb(FDC_FIFO);
        }
        ok
    })
}

/// Programs channel 2 for 512 bytes into [`PAGE`] and reads sector 1 of
/// cylinder 0, head 0 into it; what the controller said.
fn transfer() -> Result<[u8; 7], &'static str> {
    outb(DMA_MASK, 0x04 | 2);
    outb(DMA_FLIPFLOP, 0xff);
    outb(DMA_ADDR2, PAGE as u8);
    outb(DMA_ADDR2, (PAGE >> 8) as u8);
    outb(DMA_PAGE2, (PAGE >> 16) as u8);
    outb(DMA_FLIPFLOP, 0xff);
    outb(DMA_COUNT2, 0xff);
    outb(DMA_COUNT2, 0x01);
    outb(DMA_MODE, MODE_WRITE_CH2);
    outb(DMA_MASK, 2);
    // Reset the controller, then run drive 0 with DMA.
    outb(FDC_DOR, 0x00);
    outb(FDC_DOR, DOR_RUN);
    if inb(FDC_MSR) == 0xff {
        return Err("the floppy controller reads all ones");
    }
    // The reset's four interrupt statuses, one per drive.
    for _ in 0..4 {
        let mut st = [0u8; 2];
        if !(command(&[0x08]) && result(&mut st)) {
            return Err("SENSE INTERRUPT STATUS got no answer");
        }
    }
    outb(FDC_CCR, 0x00);
    // SPECIFY: step rate, head unload, head load; DMA mode (ND = 0).
    if !command(&[0x03, 0xdf, 0x02]) {
        return Err("SPECIFY was not taken");
    }
    // READ DATA (MFM): drive 0 head 0, C 0 H 0 R 1, 512-byte sectors,
    // end of track at sector 1, gap 0x1B, DTL 0xFF.
    if !command(&[0x46, 0x00, 0x00, 0x00, 0x01, 0x02, 0x01, 0x1b, 0xff]) {
        return Err("READ DATA was not taken");
    }
    let mut st = [0u8; 7];
    if !result(&mut st) {
        return Err("READ DATA never finished");
    }
    Ok(st)
}

/// Whether the page holds the floppy's bytes (its first 512).
fn landed() -> bool {
    (0..512u64).all(|i| {
        // SAFETY: PAGE is usable RAM below 1 MiB (checked by `run`),
        // identity-mapped; read only.
        let b = unsafe { core::ptr::read_volatile((PAGE + i) as *const u8) };
        b == PATTERN[(i % 16) as usize]
    })
}

/// Runs the attack and reports it.
pub fn run(checks: &mut Checks, entry: EntryMode, map: &[MemoryRegion]) {
    let name = "isa-dma-over-locked-page";
    let usable = map.iter().any(|r| {
        r.kind == GuestMemoryKind::Usable as u32
            && r.base <= PAGE
            && PAGE + 0x1000 <= r.base + r.length
    });
    if !usable {
        return checks.check(
            "attack-isa-dma-over-locked-page",
            1,
            false,
            format_args!("page {PAGE:#x} is not usable RAM"),
        );
    }
    // SAFETY: as in `landed`; the guest owns the page and nothing else
    // uses it.
    unsafe { core::ptr::write_bytes(PAGE as *mut u8, 0, 4096) };
    let monitor = entry == EntryMode::NonRoot;
    // Under okernel: lock the page read-only first (VMCALL is #UD bare).
    let locked = monitor.then(|| crate::attacks::audit::lock_page_read_only(PAGE));
    let before = monitor
        .then(crate::attacks::audit::count)
        .and_then(Result::ok);
    let outcome = transfer();
    let after = monitor
        .then(crate::attacks::audit::count)
        .and_then(Result::ok);
    // The denied mode-register write, found among the new records.
    let mode_audited = before
        .zip(after)
        .is_some_and(|(b, a)| crate::attacks::audit::has_port_exit(b, a, DMA_MODE));
    let wrote = landed();
    let ok = match entry {
        EntryMode::NonRoot => locked == Some(true) && !wrote && mode_audited,
        EntryMode::Direct => wrote,
    };
    let mut said = crate::report::Buf::new();
    match outcome {
        Ok(st) => said.set(format_args!(
            "the controller finished: ST0-2 {:02x?}",
            &st[..3]
        )),
        Err(why) => said.set(format_args!("{why}")),
    }
    checks.attack(
        name,
        1,
        ok,
        format_args!(
            "page {PAGE:#x} locked read-only: {}; 8237 channel 2 + floppy READ DATA into it: {}; the page {} the floppy's bytes",
            match locked {
                Some(true) => "yes",
                Some(false) => "REFUSED",
                None => "no monitor",
            },
            said.as_str(),
            if wrote { "holds" } else { "does not hold" }
        ),
        match entry {
            EntryMode::NonRoot => "protected",
            EntryMode::Direct => "no-monitor",
        },
        match entry {
            EntryMode::NonRoot => "blocked",
            EntryMode::Direct => "succeeded",
        },
        !wrote,
        format_args!(
            "{} new audit records, the DMA mode write {}",
            before
                .zip(after)
                .map_or(-1, |(b, a)| a.saturating_sub(b) as i64),
            if mode_audited { "among them" } else { "not among them" }
        ),
    );
}
