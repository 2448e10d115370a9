//! Typed VMCS field encodings (SDM Vol. 3D Appendix B "Field Encoding in
//! VMCS"; encoding layout in Vol. 3C §25.11.2 "VMREAD, VMWRITE, and
//! Encodings of VMCS Fields").
//!
//! One enum per width and type, as in Appendix B (B.1.1 .. B.4.4). Each enum
//! implements [`Field`], which fixes the Rust type of the value. A
//! compile-time check (see `vmcs_group!`) asserts that every encoding's
//! width bits (14:13) and type bits (11:10) match the enum it is listed in,
//! and that it names the full (not the high) half of a 64-bit field.

/// The width of a VMCS field: bits 14:13 of the encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Width {
    /// 16-bit.
    Bits16 = 0,
    /// 64-bit.
    Bits64 = 1,
    /// 32-bit.
    Bits32 = 2,
    /// Natural width (64 bits on processors that support Intel 64).
    Natural = 3,
}

impl Width {
    /// The width named by an encoding.
    pub const fn of(encoding: u32) -> Self {
        match (encoding >> 13) & 3 {
            0 => Width::Bits16,
            1 => Width::Bits64,
            2 => Width::Bits32,
            _ => Width::Natural,
        }
    }
}

/// The type of a VMCS field: bits 11:10 of the encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// VM-execution, VM-exit and VM-entry control fields.
    Control = 0,
    /// VM-exit information (read-only) fields.
    ReadOnly = 1,
    /// Guest-state fields.
    Guest = 2,
    /// Host-state fields.
    Host = 3,
}

impl Kind {
    /// The type named by an encoding.
    pub const fn of(encoding: u32) -> Self {
        match (encoding >> 10) & 3 {
            0 => Kind::Control,
            1 => Kind::ReadOnly,
            2 => Kind::Guest,
            _ => Kind::Host,
        }
    }
}

/// A value that fits a VMCS field of some width.
pub trait FieldValue: Copy {
    /// Widens to the 64-bit register VMREAD/VMWRITE use.
    fn to_u64(self) -> u64;
    /// Narrows from the 64-bit register VMREAD returns.
    fn from_u64(v: u64) -> Self;
}

impl FieldValue for u16 {
    fn to_u64(self) -> u64 {
        u64::from(self)
    }
    fn from_u64(v: u64) -> Self {
        v as u16
    }
}

impl FieldValue for u32 {
    fn to_u64(self) -> u64 {
        u64::from(self)
    }
    fn from_u64(v: u64) -> Self {
        v as u32
    }
}

impl FieldValue for u64 {
    fn to_u64(self) -> u64 {
        self
    }
    fn from_u64(v: u64) -> Self {
        v
    }
}

/// A typed VMCS field.
pub trait Field: Copy {
    /// The Rust type of the field's value.
    type Value: FieldValue;
    /// The width every encoding of this group has.
    const WIDTH: Width;
    /// The type every encoding of this group has.
    const KIND: Kind;
    /// The 32-bit encoding given to VMREAD/VMWRITE.
    fn encoding(self) -> u32;
    /// The field's name, for dumps.
    fn name(self) -> &'static str;
}

/// Defines one group of VMCS fields and checks its encodings at compile
/// time.
macro_rules! vmcs_group {
    (
        $(#[$m:meta])*
        $name:ident: $value:ty, $width:ident, $kind:ident {
            $( $(#[$vm:meta])* $var:ident = $enc:literal, )*
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum $name {
            $( $(#[$vm])* $var = $enc, )*
        }

        impl $name {
            /// Every field of this group, in encoding order.
            pub const ALL: &'static [Self] = &[$(Self::$var),*];
        }

        impl Field for $name {
            type Value = $value;
            const WIDTH: Width = Width::$width;
            const KIND: Kind = Kind::$kind;
            fn encoding(self) -> u32 {
                self as u32
            }
            fn name(self) -> &'static str {
                match self {
                    $(Self::$var => stringify!($var),)*
                }
            }
        }

        const _: () = {
            let mut i = 0;
            while i < $name::ALL.len() {
                let enc = $name::ALL[i] as u32;
                assert!(Width::of(enc) as u32 == Width::$width as u32, "VMCS encoding width bits do not match its group");
                assert!(Kind::of(enc) as u32 == Kind::$kind as u32, "VMCS encoding type bits do not match its group");
                assert!(enc & 1 == 0, "VMCS encoding names the high half of a 64-bit field");
                assert!(enc & 0xffff_9000 == 0, "VMCS encoding has reserved bits set");
                i += 1;
            }
        };
    };
}

pub(crate) use vmcs_group;

/// Whether `encoding` is one of the fields listed in this module.
pub fn is_known(encoding: u32) -> bool {
    fn has<F: Field>(all: &[F], e: u32) -> bool {
        all.iter().any(|f| f.encoding() == e)
    }
    use super::fields_list::*;
    has(Control16::ALL, encoding)
        || has(Guest16::ALL, encoding)
        || has(Host16::ALL, encoding)
        || has(Control64::ALL, encoding)
        || has(ReadOnly64::ALL, encoding)
        || has(Guest64::ALL, encoding)
        || has(Host64::ALL, encoding)
        || has(Control32::ALL, encoding)
        || has(ReadOnly32::ALL, encoding)
        || has(Guest32::ALL, encoding)
        || has(Host32::ALL, encoding)
        || has(ControlNatural::ALL, encoding)
        || has(ReadOnlyNatural::ALL, encoding)
        || has(GuestNatural::ALL, encoding)
        || has(HostNatural::ALL, encoding)
}

pub use super::fields_list::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_and_kind_decode() {
        assert_eq!(Width::of(0x6c16), Width::Natural);
        assert_eq!(Kind::of(0x6c16), Kind::Host);
        assert_eq!(Width::of(0x2400), Width::Bits64);
        assert_eq!(Kind::of(0x2400), Kind::ReadOnly);
        assert_eq!(Width::of(0x4402), Width::Bits32);
        assert_eq!(Width::of(0x0800), Width::Bits16);
        assert_eq!(Kind::of(0x0800), Kind::Guest);
    }

    #[test]
    fn groups_report_their_width_and_names() {
        assert_eq!(<Guest16 as Field>::WIDTH, Width::Bits16);
        assert_eq!(<ReadOnly32 as Field>::KIND, Kind::ReadOnly);
        assert_eq!(GuestNatural::Rip.name(), "Rip");
        assert_eq!(HostNatural::Rip.encoding(), 0x6c16);
        assert!(is_known(0x681e));
        assert!(!is_known(0x681f));
        assert!(!is_known(0x7fff));
    }
}
