//! Hypercalls: the guest asks the monitor for a service with `VMCALL`.
//!
//! # Register convention (version 0.1)
//!
//! | register | in                         | out                        |
//! |----------|----------------------------|----------------------------|
//! | RAX      | call number ([`Call`])     | [`Status`] (0 = success)   |
//! | RDI      | argument 0                 | value 0                    |
//! | RSI      | argument 1                 | value 1                    |
//! | RDX      | argument 2                 | unchanged                  |
//! | RCX      | argument 3                 | unchanged                  |
//!
//! All other registers are preserved. `VMCALL` executed at CPL > 0 fails
//! with [`Status::PermissionDenied`] and changes nothing. A call number the
//! monitor does not know fails with [`Status::UnknownCall`].

/// A hypercall number, passed in RAX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u64)]
pub enum Call {
    /// Returns the packed ABI version ([`crate::Version::packed`]) in RDI.
    Version = 0,
    /// Does nothing and succeeds: the round-trip cost of a hypercall.
    Null = 1,
    /// Ends the run with an outcome and, optionally, a reason:
    ///
    /// | register | in |
    /// |----------|----|
    /// | RDI | the [`crate::result::Outcome`] code |
    /// | RSI | guest-physical address of the reason, UTF-8 |
    /// | RDX | its length in bytes: 0 = no reason (RSI is ignored), at most [`EXIT_REASON_MAX`] |
    ///
    /// On success the monitor prints its exit counters and reports the
    /// outcome with the reason (`OKERNEL-RESULT: fail: guest: <reason>`;
    /// without a reason, `guest ended the run (<outcome>)`); it does not
    /// return to the guest. It fails with [`Status::InvalidArgument`], and
    /// the run goes on, when the outcome code is unknown, the length is
    /// above [`EXIT_REASON_MAX`], the bytes are not UTF-8, or any byte of
    /// the reason is not guest RAM that the guest's current EPT view maps
    /// readable (monitor memory, MMIO, reserved or unmapped memory never
    /// is). Control characters in the reason are printed as spaces.
    Exit = 2,
}

impl Call {
    /// Every call of this ABI version, for exhaustive tests.
    pub const ALL: &'static [Call] = &[Call::Version, Call::Null, Call::Exit];

    /// Decodes a call number from RAX.
    pub const fn from_raw(raw: u64) -> Result<Self, Status> {
        Ok(match raw {
            0 => Call::Version,
            1 => Call::Null,
            2 => Call::Exit,
            _ => return Err(Status::UnknownCall),
        })
    }

    /// The call number as it goes in RAX.
    pub const fn raw(self) -> u64 {
        self as u64
    }

    /// A short name for logs and audit records.
    pub const fn name(self) -> &'static str {
        match self {
            Call::Version => "version",
            Call::Null => "null",
            Call::Exit => "exit",
        }
    }
}

/// The longest reason [`Call::Exit`] accepts, in bytes.
pub const EXIT_REASON_MAX: u64 = 128;

/// The status a hypercall returns in RAX. Zero is success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u64)]
pub enum Status {
    /// The call succeeded.
    Success = 0,
    /// The call number is not part of the ABI.
    UnknownCall = 1,
    /// An argument is out of range or malformed.
    InvalidArgument = 2,
    /// The caller is not allowed to make this call (for example CPL > 0).
    PermissionDenied = 3,
}

impl Status {
    /// Decodes RAX after a hypercall; unknown values stay visible as `Err`.
    pub const fn from_raw(raw: u64) -> Result<Self, u64> {
        Ok(match raw {
            0 => Status::Success,
            1 => Status::UnknownCall,
            2 => Status::InvalidArgument,
            3 => Status::PermissionDenied,
            other => return Err(other),
        })
    }

    /// The value as it goes in RAX.
    pub const fn raw(self) -> u64 {
        self as u64
    }

    /// A short name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::UnknownCall => "unknown call",
            Status::InvalidArgument => "invalid argument",
            Status::PermissionDenied => "permission denied",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_round_trips() {
        for &c in Call::ALL {
            assert_eq!(Call::from_raw(c.raw()), Ok(c));
        }
    }

    #[test]
    fn unknown_calls_are_refused() {
        assert_eq!(Call::from_raw(3), Err(Status::UnknownCall));
        assert_eq!(Call::from_raw(u64::MAX), Err(Status::UnknownCall));
    }

    #[test]
    fn status_round_trips() {
        for s in [
            Status::Success,
            Status::UnknownCall,
            Status::InvalidArgument,
            Status::PermissionDenied,
        ] {
            assert_eq!(Status::from_raw(s.raw()), Ok(s));
        }
        assert_eq!(Status::from_raw(99), Err(99));
    }
}
