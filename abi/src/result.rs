//! The run-result protocol: how an okernel image tells its runner how the
//! run ended, the same way on every backend.
//!
//! The image does two things, in this order:
//!
//! 1. It prints one marker line on the console (COM1 and port 0xE9):
//!    `OKERNEL-RESULT: pass`, `OKERNEL-RESULT: fail: <reason>`,
//!    `OKERNEL-RESULT: panic: <message>` or
//!    `OKERNEL-RESULT: vmx-unavailable: <reason>`.
//! 2. It writes the [`Outcome`] code as one byte to [`EXIT_PORT`]. QEMU's
//!    `isa-debug-exit` device (iobase 0xf4) turns it into the process exit
//!    status `(code << 1) | 1`; the KVM harness sees it as an I/O exit. On
//!    Bochs the port does nothing, so the image then writes `Shutdown` to
//!    [`BOCHS_SHUTDOWN_PORT`] and the runner judges the run by the marker.
//!
//! Checks within a run are reported as lines starting with [`CHECK_PREFIX`]
//! followed by one JSON object (`{"check":"...","ok":true,...}`).

/// The I/O port the outcome byte is written to.
pub const EXIT_PORT: u16 = 0xf4;
/// Bochs' shutdown port: writing the bytes of `Shutdown` ends the emulation.
pub const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;
/// The prefix of the result line.
pub const MARKER: &str = "OKERNEL-RESULT: ";
/// The byte (SOH) that starts every console line the loader and the
/// monitor print: under okernel the guest cannot send it (the monitor
/// drops it from the guest's writes to COM1's transmitter), so a line
/// that starts with it is the monitor's, and a runner prefers such a
/// result line to any other ([`Outcome::parse_marker`] finds both).
pub const LINE_MARK: u8 = 0x01;
/// The prefix of a per-check result line.
pub const CHECK_PREFIX: &str = "OKERNEL-CHECK: ";
/// The prefix of a benchmark result line (one JSON object).
pub const BENCH_PREFIX: &str = "OKERNEL-BENCH: ";
/// The prefix of an exit-count line (one JSON object: the monitor's exits
/// over a workload, from `ExitCount`; `cargo xtask bench linux`).
pub const EXITS_PREFIX: &str = "OKERNEL-EXITS: ";

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Outcome {
    /// Everything the run checked held.
    Pass = 0x10,
    /// A check failed, or the image refused its input.
    Fail = 0x11,
    /// The image panicked or took an unexpected exception.
    Panic = 0x12,
    /// The CPU (or the hypervisor below) offers no usable VMX.
    VmxUnavailable = 0x13,
}

impl Outcome {
    /// Every outcome, for exhaustive tests.
    pub const ALL: [Outcome; 4] = [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Panic,
        Outcome::VmxUnavailable,
    ];

    /// The word used in the marker line.
    pub const fn word(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Panic => "panic",
            Outcome::VmxUnavailable => "vmx-unavailable",
        }
    }

    /// The byte written to [`EXIT_PORT`].
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Decodes a byte written to [`EXIT_PORT`].
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0x10 => Some(Outcome::Pass),
            0x11 => Some(Outcome::Fail),
            0x12 => Some(Outcome::Panic),
            0x13 => Some(Outcome::VmxUnavailable),
            _ => None,
        }
    }

    /// Decodes the exit status of a QEMU process whose image wrote to
    /// `isa-debug-exit` (`status = (code << 1) | 1`).
    pub const fn from_qemu_status(status: i32) -> Option<Self> {
        if status & 1 == 0 || status < 0 || status > 0x1ff {
            return None;
        }
        Self::from_code((status >> 1) as u8)
    }

    /// Parses a console line. Returns the outcome and its detail (the
    /// reason or message after `word: `; empty for `pass`).
    pub fn parse_marker(line: &str) -> Option<(Self, &str)> {
        let idx = line.find(MARKER)?;
        let rest = line[idx + MARKER.len()..].trim_end();
        Self::ALL.into_iter().find_map(|o| {
            let tail = rest.strip_prefix(o.word())?;
            if tail.is_empty() {
                Some((o, ""))
            } else {
                tail.strip_prefix(": ").map(|d| (o, d))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_code(o.code()), Some(o));
            assert_eq!(
                Outcome::from_qemu_status(((o.code() as i32) << 1) | 1),
                Some(o)
            );
        }
        assert_eq!(Outcome::from_code(0), None);
        assert_eq!(Outcome::from_qemu_status(0), None);
        assert_eq!(Outcome::from_qemu_status(1), None);
    }

    #[test]
    fn markers_parse() {
        assert_eq!(
            Outcome::parse_marker("OKERNEL-RESULT: pass\r"),
            Some((Outcome::Pass, ""))
        );
        assert_eq!(
            Outcome::parse_marker("[x] OKERNEL-RESULT: vmx-unavailable: CPUID.1:ECX.VMX=0"),
            Some((Outcome::VmxUnavailable, "CPUID.1:ECX.VMX=0"))
        );
        assert_eq!(
            Outcome::parse_marker("OKERNEL-RESULT: fail: no guest module"),
            Some((Outcome::Fail, "no guest module"))
        );
        assert_eq!(Outcome::parse_marker("OKERNEL-RESULT: passed"), None);
        assert_eq!(Outcome::parse_marker("nothing here"), None);
    }
}
