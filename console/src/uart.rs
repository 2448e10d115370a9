//! The console's 16550 UART (COM1): a driver of the few registers the
//! console needs (initialisation, sending a byte, draining), and the line
//! settings, which a guest sharing COM1 may change: while the loader or
//! the monitor prints a line of its own ([`crate::set_line_mark`]), the
//! console puts back its own settings — 8 data bits, no parity, no break,
//! its divisor, loopback and autoflow off — and afterwards the guest's. A
//! guest that turned on loopback or changed the word length cannot so
//! hide or garble the monitor's lines.
//!
//! Registers (offsets from the I/O base; PC16550D data sheet, Table II):
//! THR +0 and, with LCR.DLAB set, the divisor latch +0/+1; IER +1; FCR
//! +2; LCR +3; MCR +4; LSR +5. Port I/O goes through the `x86_64` crate
//! (a driver crate would bring its own port I/O and register types for
//! the six registers used here: issue 14, "a lean image").

use x86_64::instructions::port::Port;

const THR: u16 = 0;
const IER: u16 = 1;
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const LCR_DLAB: u8 = 1 << 7;
/// 8 data bits, 1 stop bit, no parity, no break.
const LCR_8N1: u8 = 0x03;
/// MCR bits 3:0 (DTR, RTS, OUT1, OUT2) kept; loopback (4), autoflow
/// (5: a deasserted CTS would stall the monitor) and the vendor bits 7:6
/// (clock prescaler, IrDA on some parts) cleared.
const MCR_LINES: u8 = 0x0f;
/// LSR: the transmit holding register can take a byte.
const LSR_THR_EMPTY: u8 = 1 << 5;
/// LSR: the holding and the shift register are both empty.
const LSR_TRANSMITTER_EMPTY: u8 = 1 << 6;

/// A 16550 UART driven through its I/O ports.
#[derive(Debug)]
pub struct Uart {
    base: u16,
}

impl Uart {
    /// The UART at I/O base `base`.
    ///
    /// # Safety
    ///
    /// `base` must be the I/O base of a 16550 (or of nothing: unclaimed
    /// ports read 0xff and ignore writes) that this image may program.
    pub const unsafe fn new(base: u16) -> Self {
        Self { base }
    }

    fn read(&self, register: u16) -> u8 {
        // SAFETY: `new`'s contract: `base` is a 16550 this image may
        // program. The console reads LCR, MCR and LSR, and +0/+1 only with
        // LCR.DLAB set (the divisor latch, not the receive buffer, so
        // nothing received is consumed): none has a side effect.
        unsafe { Port::<u8>::new(self.base + register).read() }
    }

    fn write(&self, register: u16, value: u8) {
        // SAFETY: `new`'s contract, as in `read`; writes of the UART's
        // registers change how bytes go out on the line, nothing in
        // memory.
        unsafe { Port::<u8>::new(self.base + register).write(value) }
    }

    /// Programs 38400 baud 8N1 (divisor 3), the FIFOs on and cleared
    /// (receive trigger at 14 bytes), DTR, RTS and OUT2, and the
    /// received-data interrupt: the settings of `uart_16550` 0.3's
    /// `init`, which the console used before, in the same order.
    pub fn init(&mut self) {
        self.write(IER, 0x00);
        self.write(LCR, LCR_DLAB);
        self.write(THR, 3);
        self.write(IER, 0);
        self.write(LCR, LCR_8N1);
        self.write(FCR, 0xc7);
        self.write(MCR, 0x0b);
        self.write(IER, 0x01);
    }

    /// Sends `byte` once the transmit holding register is empty. An
    /// absent UART reads 0xff: "empty" at once, so this never blocks.
    pub fn send(&mut self, byte: u8) {
        while self.read(LSR) & LSR_THR_EMPTY == 0 {
            core::hint::spin_loop();
        }
        self.write(THR, byte);
    }

    /// Waits (bounded) until the UART has sent every byte it holds, so a
    /// re-initialisation or the end of the run loses nothing.
    pub fn drain(&mut self) {
        for _ in 0..1_000_000 {
            if self.read(LSR) & LSR_TRANSMITTER_EMPTY != 0 {
                return;
            }
            core::hint::spin_loop();
        }
    }

    /// The divisor the UART has now (the console's own, read once it is
    /// initialised).
    pub fn divisor(&self) -> u16 {
        self.divisor_with(self.read(LCR) & !LCR_DLAB)
    }

    fn divisor_with(&self, lcr: u8) -> u16 {
        self.write(LCR, lcr | LCR_DLAB);
        let d = u16::from_le_bytes([self.read(THR), self.read(IER)]);
        self.write(LCR, lcr);
        d
    }

    /// Writes divisor `d`, then `lcr` (DLAB clear).
    fn set_divisor(&self, lcr: u8, d: u16) {
        self.write(LCR, lcr | LCR_DLAB);
        let [low, high] = d.to_le_bytes();
        self.write(THR, low);
        self.write(IER, high);
        self.write(LCR, lcr);
    }
}

/// The settings of a UART that [`Settings::take`] replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    lcr: u8,
    mcr: u8,
    divisor: u16,
}

impl Settings {
    /// Saves the UART's settings and programs the console's: 8N1,
    /// `divisor`, loopback off. The caller drained the transmitter.
    pub fn take(uart: &Uart, divisor: u16) -> Self {
        let lcr = uart.read(LCR);
        let mcr = uart.read(MCR);
        let saved = Self {
            lcr,
            mcr,
            divisor: uart.divisor_with(lcr),
        };
        uart.set_divisor(LCR_8N1, divisor);
        uart.write(MCR, mcr & MCR_LINES);
        saved
    }

    /// Puts the saved settings back. The caller drained the transmitter.
    pub fn give_back(self, uart: &Uart) {
        uart.set_divisor(self.lcr & !LCR_DLAB, self.divisor);
        uart.write(LCR, self.lcr);
        uart.write(MCR, self.mcr);
    }
}
