//! The console every okernel bare-metal image shares: bytes go to the COM1
//! 16550 UART and to port 0xE9 (Bochs' `port_e9_hack`, QEMU's `debugcon`,
//! the KVM harness), through the `log` facade or [`print!`]/[`println!`];
//! and [`report`], which ends a run with the run-result protocol of
//! [`okernel_abi::result`].
//!
//! Port I/O goes through the `x86_64` crate, the 16550 driver is the
//! crate's own (`uart.rs`); this crate has no inline asm.
#![cfg_attr(not(test), no_std)]

mod logger;
mod report;
pub mod traps;
mod uart;

pub use logger::init_logger;
pub use report::{halt_forever, report};

use core::fmt::{self, Write};
use okernel_abi::result::LINE_MARK;
use spin::Mutex;
use x86_64::instructions::port::Port;

/// The I/O base of COM1.
pub const COM1: u16 = 0x3f8;
/// Bochs' and QEMU's debug console port.
pub const DEBUG_PORT: u16 = 0xe9;

/// The console: COM1 and the debug port, written together.
pub struct Console {
    serial: uart::Uart,
    debug: Port<u8>,
    /// Whether bytes go to the debug port too ([`set_debug_port`]).
    mirror: bool,
    /// Whether each line starts with [`LINE_MARK`] ([`set_line_mark`]).
    mark: bool,
    /// Whether the next byte starts a line.
    line_start: bool,
    /// The guest's UART settings while a marked line is printed.
    taken: Option<uart::Settings>,
    /// The console's own divisor (read after its initialisation).
    divisor: u16,
    initialised: bool,
}

impl Console {
    const fn new() -> Self {
        Self {
            // SAFETY: COM1 (0x3f8) is the standard PC serial port on every
            // backend okernel runs on, and the console is its one driver in
            // each image; when no UART is present the ports read 0xff,
            // which the driver treats as "transmitter empty", so writing
            // never blocks.
            serial: unsafe { uart::Uart::new(COM1) },
            debug: Port::new(DEBUG_PORT),
            mirror: true,
            mark: false,
            line_start: true,
            taken: None,
            divisor: 0,
            initialised: false,
        }
    }

    /// Initialises the UART once (the previous image, the loader before
    /// the guest, may still be transmitting through it).
    fn init_once(&mut self) {
        if !self.initialised {
            self.drain();
            self.serial.init();
            self.divisor = self.serial.divisor();
            self.initialised = true;
        }
    }

    /// Waits (bounded) until the UART has sent every byte it holds, so a
    /// re-initialisation or the end of the run loses nothing. An absent
    /// UART reads 0xff: "empty" at once.
    pub fn drain(&mut self) {
        self.serial.drain();
    }

    fn put(&mut self, byte: u8) {
        self.init_once();
        self.serial.send(byte);
        if self.mirror {
            // SAFETY: port 0xE9 is a write-only debug port with no side
            // effect beyond printing the byte (or nothing, where no device
            // listens).
            unsafe { self.debug.write(byte) };
        }
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if self.mark && self.line_start {
                // A marked line goes out with the console's own line
                // settings, whatever a guest left (`uart`).
                self.init_once();
                self.drain();
                self.taken = Some(uart::Settings::take(&self.serial, self.divisor));
                self.put(LINE_MARK);
            }
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
            self.line_start = b == b'\n';
            if self.line_start
                && let Some(saved) = self.taken.take()
            {
                self.drain();
                saved.give_back(&self.serial);
            }
        }
        Ok(())
    }
}

/// The one console of this image.
pub static CONSOLE: Mutex<Console> = Mutex::new(Console::new());

/// Whether the console also writes port 0xE9 (on at start). An image
/// that runs under okernel turns it off: okernel denies the guest that
/// port (the monitor's own channel), and every byte would be an exit and
/// an audit record.
pub fn set_debug_port(on: bool) {
    x86_64::instructions::interrupts::without_interrupts(|| CONSOLE.lock().mirror = on);
}

/// Whether every line starts with [`LINE_MARK`] (off at start). The
/// loader, and so the monitor, turn it on: the lines that carry it are
/// theirs (`okernel_abi::result::LINE_MARK`).
pub fn set_line_mark(on: bool) {
    x86_64::instructions::interrupts::without_interrupts(|| CONSOLE.lock().mark = on);
}

/// Frees the console if the code an exception interrupted held it, so
/// that the exception's report (the last thing this image prints) does
/// not wait for it forever: a stack overflow inside a `log!` call, the
/// likeliest place for one, faults with the lock held, and a panic inside
/// one (a `Display` that panics) panics with it held.
///
/// With other processors running (issue 17) the holder may be another
/// processor in the middle of a line: the lock is then first waited for,
/// for at most [`BREAK_PATIENCE_TSC`] (a line of 300 characters at the
/// console's 38400 baud takes about 80 ms), so that the report does not come out interleaved with
/// that line character by character, which would garble its result mark.
///
/// # Safety
/// Called only on the path to [`report`] from an exception or panic
/// handler that never returns: a holder that has not released the lock
/// within the patience is taken to have been interrupted for good (this
/// processor's own interrupted code, or a processor stuck in the middle of
/// a line); the machine is stopping.
pub unsafe fn break_lock() {
    let start = tsc();
    while CONSOLE.is_locked() && tsc().wrapping_sub(start) < BREAK_PATIENCE_TSC {
        core::hint::spin_loop();
    }
    if CONSOLE.is_locked() {
        // SAFETY: the caller's contract: the holder was interrupted for
        // good, so nothing uses the console's state concurrently; a line
        // it left half-written is ended by `report`'s first newline.
        unsafe { CONSOLE.force_unlock() };
    }
}

/// How long [`break_lock`] waits for another processor to finish its
/// line, in TSC ticks (about 90 ms at 3 GHz; a fault with this
/// processor's own line under way waits it out once, on the way to the
/// end of the run).
pub const BREAK_PATIENCE_TSC: u64 = 1 << 28;

fn tsc() -> u64 {
    // SAFETY: RDTSC reads a counter and touches no memory; the console
    // runs at CPL0, where CR4.TSD does not apply.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Runs `f` holding the console's lock, interrupts off: a guest byte the
/// monitor writes to the UART for the guest goes out between the
/// monitor's lines, never inside one another processor is printing
/// (whose line mark it would otherwise share).
pub fn with_lock<R>(f: impl FnOnce() -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let _console = CONSOLE.lock();
        f()
    })
}

/// Writes formatted text to the console (used by the macros).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        // A failed write has nowhere to be reported; the console is best
        // effort by design.
        let _ = CONSOLE.lock().write_fmt(args);
    });
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::write_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
