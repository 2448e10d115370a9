//! The reason a guest may give with its Exit hypercall: a UTF-8 string in
//! guest RAM, read through [`GuestMemory`] and validated before the run
//! ends with it.

use core::fmt;

use okernel_abi::hypercall::EXIT_REASON_MAX;

use super::memory::GuestMemory;
use crate::mem::MemoryError;
use crate::memmap::Gpa;

/// The longest reason, in bytes.
pub const MAX: usize = EXIT_REASON_MAX as usize;

/// Why an Exit reason was refused (the guest gets `InvalidArgument` and
/// the run goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReasonError {
    /// the length is above the ABI's maximum
    #[error("reason of {0} bytes is longer than {MAX}")]
    TooLong(u64),
    /// the range cannot be read
    #[error("reason unreadable: {0}")]
    Memory(#[from] MemoryError),
    /// the bytes are not UTF-8
    #[error("reason is not UTF-8 (valid up to byte {0})")]
    NotUtf8(usize),
}

/// A validated reason (possibly empty: none given).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GuestReason {
    buf: [u8; MAX],
    len: u8,
}

impl Default for GuestReason {
    fn default() -> Self {
        Self::none()
    }
}

impl GuestReason {
    /// No reason.
    pub const fn none() -> Self {
        Self {
            buf: [0; MAX],
            len: 0,
        }
    }

    /// Reads and validates the `len` bytes at guest-physical `gpa`; a
    /// length of 0 is no reason (and `gpa` is not looked at).
    pub fn read(memory: &impl GuestMemory, gpa: Gpa, len: u64) -> Result<Self, ReasonError> {
        let mut reason = Self::none();
        if len == 0 {
            return Ok(reason);
        }
        let n = match usize::try_from(len) {
            Ok(n) if n <= MAX => n,
            _ => return Err(ReasonError::TooLong(len)),
        };
        memory.read(gpa, &mut reason.buf[..n])?;
        core::str::from_utf8(&reason.buf[..n])
            .map_err(|e| ReasonError::NotUtf8(e.valid_up_to()))?;
        reason.len = n as u8;
        Ok(reason)
    }

    /// The text (validated UTF-8).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }

    /// Whether no reason was given.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for GuestReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The text with control characters shown as spaces, so that a reason
/// cannot break the one-line result marker or drive a terminal.
impl fmt::Display for GuestReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for c in self.as_str().chars() {
            f.write_char(if c.is_control() { ' ' } else { c })?;
        }
        Ok(())
    }
}
