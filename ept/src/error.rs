//! The crate's error type.
//!
//! Every fallible operation returns [`Error`]; its `Display` text is the
//! variant's doc line (one string, written once, by the `messages!` macro
//! below), so the documentation and the message cannot drift apart.

use core::fmt;

/// Declares an error enum whose doc lines are also its `Display` messages.
///
/// Each variant is written `#[doc = "message with {field}"] Name { field: T }`
/// (or without fields); the message is a format string over the fields.
macro_rules! messages {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                #[doc = $msg:literal]
                $variant:ident $({ $($field:ident : $ty:ty),* $(,)? })?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $(
                #[doc = $msg]
                $variant $({ $(
                    #[allow(missing_docs)]
                    $field: $ty
                ),* })?,
            )*
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(
                        #[allow(unused_variables)]
                        $name::$variant $({ $($field),* })? => {
                            fmt::write(&mut SkipLeadingSpace(f, false), format_args!($msg))
                        }
                    )*
                }
            }
        }
    };
}

/// Writes through to a formatter, dropping the space that a `///` doc
/// comment puts before its text.
struct SkipLeadingSpace<'a, 'b>(&'a mut fmt::Formatter<'b>, bool);

impl fmt::Write for SkipLeadingSpace<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let s = if self.1 {
            s
        } else {
            s.strip_prefix(' ').unwrap_or(s)
        };
        self.1 |= !s.is_empty();
        self.0.write_str(s)
    }
}

messages! {
    /// Why an EPT operation, a capability set, an EPTP or an exit
    /// qualification was refused. An operation that returns an error has
    /// changed nothing.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum Error {
        /// address {addr:#x} is not 4 KiB aligned
        UnalignedAddress { addr: u64 },
        /// length {len:#x} is not a multiple of 4 KiB
        UnalignedLength { len: u64 },
        /// the range is empty
        EmptyRange,
        /// the range starting at {start:#x} with length {len:#x} overflows 64 bits
        Overflow { start: u64, len: u64 },
        /// guest-physical range ends at {end:#x}, beyond the 2^48 reach of a 4-level EPT
        GpaOutOfRange { end: u64 },
        /// host-physical address {end:#x} is beyond MAXPHYADDR ({bits} bits)
        HpaOutOfRange { end: u64, bits: u8 },
        /// write permission without read permission is an EPT misconfiguration (SDM 29.3.3.1)
        WriteWithoutRead,
        /// execute-only permissions need the execute-only EPT capability (SDM A.10)
        ExecuteOnlyUnsupported,
        /// user-mode execute permission needs mode-based execute control for EPT
        UserExecuteUnsupported,
        /// the CPU cannot use memory type {value} for EPT paging structures (SDM 25.6.11)
        EptpMemoryTypeUnsupported { value: u8 },
        /// the CPU does not support EPT accessed and dirty flags (SDM 29.3.5)
        AccessedDirtyUnsupported,
        /// the CPU does not support a 4-level EPT page walk (SDM A.10)
        PageWalk4Unsupported,
        /// MAXPHYADDR of {bits} bits is outside 36..=52
        PhysAddrBits { bits: u8 },
        /// EPTP {raw:#x} is malformed: {reason}
        MalformedEptp { raw: u64, reason: &'static str },
        /// out of table frames; the view is unchanged
        OutOfFrames,
        /// the frame allocator returned frame {addr:#x}, beyond MAXPHYADDR
        FrameOutOfRange { addr: u64 },
        /// reserved bits {bits:#x} are set in the EPT-violation exit qualification (SDM Table 28-7)
        ReservedQualificationBits { bits: u64 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn display_is_the_doc_line_with_fields() {
        assert_eq!(
            Error::UnalignedAddress { addr: 0x1234 }.to_string(),
            "address 0x1234 is not 4 KiB aligned"
        );
        assert_eq!(
            Error::HpaOutOfRange {
                end: 1 << 40,
                bits: 39
            }
            .to_string(),
            "host-physical address 0x10000000000 is beyond MAXPHYADDR (39 bits)"
        );
        assert_eq!(
            Error::OutOfFrames.to_string(),
            "out of table frames; the view is unchanged"
        );
    }
}
