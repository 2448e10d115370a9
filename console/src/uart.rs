//! The UART's line settings, which a guest sharing COM1 may change:
//! while the loader or the monitor prints a line of its own
//! ([`crate::set_line_mark`]), the console puts back its own settings —
//! 8 data bits, no parity, no break, its divisor, loopback and autoflow
//! off — and
//! afterwards the guest's (16550 registers: LCR +3, MCR +4, the divisor
//! latch at +0/+1 with LCR.DLAB set). A guest that turned on loopback or
//! changed the word length cannot so hide or garble the monitor's lines.

use x86_64::instructions::port::Port;

const LCR: u16 = 3;
const MCR: u16 = 4;
const LCR_DLAB: u8 = 1 << 7;
/// 8 data bits, 1 stop bit, no parity, no break.
const LCR_8N1: u8 = 0x03;
/// MCR bits 3:0 (DTR, RTS, OUT1, OUT2) kept; loopback (4), autoflow
/// (5: a deasserted CTS would stall the monitor) and the vendor bits 7:6
/// (clock prescaler, IrDA on some parts) cleared.
const MCR_LINES: u8 = 0x0f;

/// The settings of the UART at `base` that [`Settings::take`] replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    lcr: u8,
    mcr: u8,
    divisor: u16,
}

fn inb(port: u16) -> u8 {
    // SAFETY: reads of the 16550's line control and modem control
    // registers, and of +0/+1 only with LCR.DLAB set (`divisor`): the
    // divisor latch, not the receive buffer, so nothing received is
    // consumed. None has a side effect.
    unsafe { Port::<u8>::new(port).read() }
}

fn outb(port: u16, value: u8) {
    // SAFETY: writes of the same registers: they change how the next
    // bytes go out on the line, nothing in memory.
    unsafe { Port::<u8>::new(port).write(value) }
}

fn divisor(base: u16, lcr: u8) -> u16 {
    outb(base + LCR, lcr | LCR_DLAB);
    let d = u16::from_le_bytes([inb(base), inb(base + 1)]);
    outb(base + LCR, lcr);
    d
}

fn set_divisor(base: u16, lcr: u8, d: u16) {
    outb(base + LCR, lcr | LCR_DLAB);
    outb(base, d as u8);
    outb(base + 1, (d >> 8) as u8);
    outb(base + LCR, lcr);
}

impl Settings {
    /// The divisor the UART at `base` has now (the console's own, read
    /// once it is initialised).
    pub fn divisor_now(base: u16) -> u16 {
        divisor(base, inb(base + LCR) & !LCR_DLAB)
    }

    /// Saves the UART's settings and programs the console's: 8N1,
    /// `divisor`, loopback off. The caller drained the transmitter.
    pub fn take(base: u16, divisor_wanted: u16) -> Self {
        let lcr = inb(base + LCR);
        let mcr = inb(base + MCR);
        let saved = Self {
            lcr,
            mcr,
            divisor: divisor(base, lcr),
        };
        set_divisor(base, LCR_8N1, divisor_wanted);
        outb(base + MCR, mcr & MCR_LINES);
        saved
    }

    /// Puts the saved settings back. The caller drained the transmitter.
    pub fn give_back(self, base: u16) {
        set_divisor(base, self.lcr & !LCR_DLAB, self.divisor);
        outb(base + LCR, self.lcr);
        outb(base + MCR, self.mcr);
    }
}
