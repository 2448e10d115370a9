//! The kernel's lines: one `OKERNEL-CHECK` line per check (the result
//! protocol of [`okernel_abi::result`]), named `conf-<check>`, whose
//! `observed` text is what the differential run compares. Every text is
//! deterministic: no raw time-stamp counter, no address that differs
//! between two boots of the same image.

use core::fmt::{self, Write};
use okernel_abi::result::CHECK_PREFIX;
use okernel_console::println;

/// A small buffer for one observation; longer text is cut.
pub struct Buf {
    bytes: [u8; 200],
    len: usize,
}

impl Buf {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl Write for Buf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // JSON-safe: the observations are ASCII; quotes and backslashes
        // (never written) and control characters become '?'.
        for b in s.bytes() {
            if self.len == self.bytes.len() {
                break;
            }
            self.bytes[self.len] = match b {
                b'"' | b'\\' | 0..0x20 | 0x7f.. => b'?',
                b => b,
            };
            self.len += 1;
        }
        Ok(())
    }
}

/// Counts the checks.
#[derive(Debug, Default)]
pub struct Checks {
    /// Checks that held.
    pub passed: u32,
    /// Checks that did not.
    pub failed: u32,
}

impl Checks {
    /// Prints one check: its name (without the `conf-` prefix), whether
    /// the observation is what the SDM prescribes for this CPU, and the
    /// observation.
    pub fn line(&mut self, name: &str, ok: bool, observed: fmt::Arguments<'_>) {
        let mut buf = name_buf();
        let _ = buf.write_fmt(observed);
        println!(
            "{CHECK_PREFIX}{{\"check\":\"conf-{name}\",\"invariant\":0,\"ok\":{ok},\"observed\":\"{}\"}}",
            buf.as_str()
        );
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }
}

/// An empty buffer for a check's name or text.
pub fn name_buf() -> Buf {
    Buf {
        bytes: [0; 200],
        len: 0,
    }
}

impl Buf {
    /// The text so far.
    pub fn text(&self) -> &str {
        self.as_str()
    }
}
