//! The few devices the image talks to, as port I/O handlers:
//!
//! - COM1 (0x3f8..0x3ff): enough of a 16550 for a polled transmitter. The
//!   line-status register always says "transmitter empty" (0x60); DLAB,
//!   LCR, MCR, IER and the scratch register keep what was written; bytes
//!   written to THR with DLAB clear are the console. (vm-superio's 16550
//!   would want an interrupt trigger and an input stream for a device that
//!   is only ever written; these eight registers are all the image uses.)
//! - Port 0xE9 (Bochs' and QEMU's debug console): kept separately, since
//!   the image writes every console byte to both.
//! - [`EXIT_PORT`]: the outcome byte ends the run, like QEMU's
//!   `isa-debug-exit`.
//! - [`BOCHS_SHUTDOWN_PORT`]: `Shutdown` ends the run, like Bochs.
//! - [`DOORBELL_PORT`]: a 4-byte `out` (the fuzz executor's mailbox
//!   address, [`okernel_abi::fuzz`]) stops the run for the host to serve
//!   the mailbox; a write of another width is counted and ignored.
//!
//! Every other port reads as all ones and ignores writes (no device), and
//! is counted, as is every exit, for `exits.txt` in the run directory.

use okernel_abi::fuzz::DOORBELL_PORT;
use okernel_abi::result::{BOCHS_SHUTDOWN_PORT, EXIT_PORT};
use std::collections::BTreeMap;

/// COM1's I/O base.
pub const COM1: u16 = 0x3f8;
/// The debug-console port.
pub const DEBUG_PORT: u16 = 0xe9;
/// LSR: transmitter holding register empty | transmitter empty.
pub const LSR_IDLE: u8 = 0x60;
const LCR_DLAB: u8 = 0x80;

/// Why the devices ended the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The image wrote this byte to [`EXIT_PORT`].
    ExitPort(u8),
    /// The image wrote `Shutdown` to [`BOCHS_SHUTDOWN_PORT`].
    Shutdown,
    /// The fuzz executor wrote this mailbox address to [`DOORBELL_PORT`]
    /// (`out dx, eax`). The `out` is complete only after the next KVM_RUN
    /// ([`super::Vm::complete_io`]).
    Doorbell(u32),
}

/// The polled 16550 at COM1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Serial {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fcr: u8,
    /// Every byte transmitted.
    pub output: Vec<u8>,
}

impl Serial {
    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    /// A write to register `offset` (0..8).
    pub fn write(&mut self, offset: u16, value: u8) {
        match (offset, self.dlab()) {
            (0, false) => self.output.push(value),
            (0, true) => self.dll = value,
            (1, false) => self.ier = value & 0x0f,
            (1, true) => self.dlm = value,
            (2, _) => self.fcr = value,
            (3, _) => self.lcr = value,
            (4, _) => self.mcr = value & 0x1f,
            (7, _) => self.scr = value,
            _ => {} // LSR and MSR are read-only
        }
    }

    /// A read of register `offset` (0..8).
    pub fn read(&self, offset: u16) -> u8 {
        match (offset, self.dlab()) {
            (0, false) => 0, // no input
            (0, true) => self.dll,
            (1, false) => self.ier,
            (1, true) => self.dlm,
            // No interrupt pending; FIFOs enabled when FCR bit 0 is set.
            (2, _) => 0x01 | if self.fcr & 1 != 0 { 0xc0 } else { 0 },
            (3, _) => self.lcr,
            (4, _) => self.mcr,
            (5, _) => LSR_IDLE,
            (6, _) => 0xb0, // DCD, DSR, CTS
            _ => self.scr,
        }
    }
}

/// The devices of one VM.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    /// COM1.
    pub serial: Serial,
    /// Bytes written to port 0xE9.
    pub debugcon: Vec<u8>,
    shutdown: Vec<u8>,
    /// Exits and accesses to unknown ports, by kind.
    pub counters: BTreeMap<String, u64>,
}

impl Devices {
    /// Counts one event of `kind`.
    pub fn count(&mut self, kind: &str) {
        *self.counters.entry(kind.to_string()).or_default() += 1;
    }

    /// An `out` of `data` to `port` (an exit).
    pub fn io_out(&mut self, port: u16, data: &[u8]) -> Option<Stop> {
        self.count("io-out");
        self.write_port(port, data)
    }

    /// A write of `data` to `port`, whether it exited or was coalesced.
    pub fn write_port(&mut self, port: u16, data: &[u8]) -> Option<Stop> {
        let byte = data.first().copied().unwrap_or(0);
        match port {
            COM1..=0x3ff => self.serial.write(port - COM1, byte),
            DEBUG_PORT => self.debugcon.extend_from_slice(data),
            EXIT_PORT => return Some(Stop::ExitPort(byte)),
            DOORBELL_PORT => match <[u8; 4]>::try_from(data) {
                Ok(addr) => return Some(Stop::Doorbell(u32::from_le_bytes(addr))),
                Err(_) => self.count(&format!(
                    "io-out doorbell of {} bytes (ignored)",
                    data.len()
                )),
            },
            BOCHS_SHUTDOWN_PORT => {
                self.shutdown.extend_from_slice(data);
                if self.shutdown.ends_with(b"Shutdown") {
                    return Some(Stop::Shutdown);
                }
            }
            _ => self.count(&format!("io-out unknown port {port:#x}")),
        }
        None
    }

    /// An `in` from `port` into `data`.
    pub fn io_in(&mut self, port: u16, data: &mut [u8]) {
        self.count("io-in");
        let value = match port {
            COM1..=0x3ff => self.serial.read(port - COM1),
            _ => {
                self.count(&format!("io-in unknown port {port:#x}"));
                0xff
            }
        };
        data.fill(value);
    }

    /// The counters, one `kind: count` line each.
    pub fn counters_text(&self) -> String {
        self.counters
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use okernel_abi::result::Outcome;

    /// What the console's UART driver (`console/src/uart.rs`) writes at
    /// `init` and `send`.
    fn init_and_send(d: &mut Devices, text: &[u8]) {
        for (reg, v) in [(1, 0x00), (3, 0x80), (0, 0x03), (1, 0x00), (3, 0x03)] {
            assert_eq!(d.io_out(COM1 + reg, &[v]), None);
        }
        for (reg, v) in [(2, 0xc7), (4, 0x0b), (1, 0x01)] {
            d.io_out(COM1 + reg, &[v]);
        }
        for &b in text {
            let mut lsr = [0];
            d.io_in(COM1 + 5, &mut lsr);
            assert_eq!(lsr[0] & 0x20, 0x20, "transmitter empty");
            d.io_out(COM1, &[b]);
            d.io_out(DEBUG_PORT, &[b]);
        }
    }

    #[test]
    fn the_console_is_what_thr_received_with_dlab_clear() {
        let mut d = Devices::default();
        init_and_send(&mut d, b"hi\r\n");
        assert_eq!(d.serial.output, b"hi\r\n", "divisor bytes are not output");
        assert_eq!(d.debugcon, b"hi\r\n");
        assert_eq!((d.serial.dll, d.serial.dlm, d.serial.lcr), (3, 0, 3));
        let mut b = [0];
        d.io_in(COM1 + 2, &mut b);
        assert_eq!(b[0], 0xc1, "no interrupt pending, FIFOs on");
        d.io_out(COM1 + 7, &[0x5a]);
        d.io_in(COM1 + 7, &mut b);
        assert_eq!(b[0], 0x5a, "scratch register keeps its value");
    }

    #[test]
    fn exit_and_shutdown_ports_stop_the_run() {
        let mut d = Devices::default();
        let pass = Outcome::Pass.code();
        assert_eq!(d.io_out(EXIT_PORT, &[pass]), Some(Stop::ExitPort(pass)));
        let mut stop = None;
        for &b in b"Shutdown" {
            stop = d.io_out(BOCHS_SHUTDOWN_PORT, &[b]);
        }
        assert_eq!(stop, Some(Stop::Shutdown));
    }

    #[test]
    fn a_four_byte_doorbell_stops_the_run_with_the_address() {
        let mut d = Devices::default();
        let addr = 0x0020_1000u32;
        assert_eq!(
            d.io_out(DOORBELL_PORT, &addr.to_le_bytes()),
            Some(Stop::Doorbell(addr))
        );
        assert_eq!(
            d.io_out(DOORBELL_PORT, &[1]),
            None,
            "`out dx, al` is no doorbell"
        );
        assert_eq!(d.io_out(DOORBELL_PORT, &[1, 2]), None);
        let text = d.counters_text();
        assert!(
            text.contains("io-out doorbell of 1 bytes (ignored): 1"),
            "{text}"
        );
        assert!(
            text.contains("io-out doorbell of 2 bytes (ignored): 1"),
            "{text}"
        );
    }

    #[test]
    fn unknown_ports_read_all_ones_and_are_counted() {
        let mut d = Devices::default();
        let mut b = [0; 2];
        d.io_in(0x71, &mut b);
        assert_eq!(b, [0xff, 0xff]);
        d.io_out(0x80, &[1]);
        let text = d.counters_text();
        assert!(text.contains("io-in unknown port 0x71: 1"), "{text}");
        assert!(text.contains("io-out unknown port 0x80: 1"), "{text}");
    }
}
