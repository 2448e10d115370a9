//! The typed arguments of a [`super::Request`]: each holds a value the
//! decoder checked, and can only be made through a constructor that
//! checks it (so a handler never sees an unchecked one).

use core::num::NonZeroU64;

use crate::hypercall::{EXIT_REASON_MAX, EXIT_REASON_SLOTS, Status};
use crate::policy::{MAX_CONTEXTS, PatchFormat};

/// The size of a page the policy calls work in.
pub const PAGE_SIZE: u64 = 4096;

/// Whether `linear` is canonical for 4-level paging: bits 63:47 all equal
/// (SDM Vol. 1 §3.3.7.1).
pub const fn is_canonical(linear: u64) -> bool {
    (((linear as i64) << 16) >> 16) as u64 == linear
}

/// A guest-physical range of whole 4 KiB pages (`RegisterRegion`): the
/// base aligned, the length a non-zero multiple of 4 KiB, base + length
/// below 2^64 (as `check_ram` of the monitor wants it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pages {
    base: u64,
    len: u64,
}

impl Pages {
    /// Checks `base` and `len` in the ABI's order: `Unaligned` for a base
    /// off a page, `Empty` for no length, `Unaligned` for a length off a
    /// page, `OutOfRam` unless `base + len < 2^64` (a range that wraps or
    /// ends at 2^64: no guest RAM does).
    pub const fn new(base: u64, len: u64) -> Result<Self, Status> {
        if !base.is_multiple_of(PAGE_SIZE) {
            return Err(Status::Unaligned);
        }
        if len == 0 {
            return Err(Status::Empty);
        }
        if !len.is_multiple_of(PAGE_SIZE) {
            return Err(Status::Unaligned);
        }
        if base.checked_add(len).is_none() {
            return Err(Status::OutOfRam);
        }
        Ok(Self { base, len })
    }

    /// The first byte.
    pub const fn base(self) -> u64 {
        self.base
    }

    /// The length in bytes.
    pub const fn len(self) -> u64 {
        self.len
    }

    /// Never: a range of pages has at least one (for clippy's
    /// `len_without_is_empty`).
    pub const fn is_empty(self) -> bool {
        false
    }
}

/// A context id: 0 (the trusted context) to [`MAX_CONTEXTS`]. Whether it
/// is live is the monitor's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Context(u16);

impl Context {
    /// The trusted context.
    pub const TRUSTED: Self = Self(0);

    /// The id `raw`, if some context could have it.
    pub const fn new(raw: u64) -> Option<Self> {
        if raw <= MAX_CONTEXTS as u64 {
            Some(Self(raw as u16))
        } else {
            None
        }
    }

    /// The id as the monitor's view slot.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The id as it goes in a register.
    pub const fn raw(self) -> u64 {
        self.0 as u64
    }
}

/// The reason `Exit` gives: 1 to [`EXIT_REASON_MAX`] bytes at a
/// guest-physical address, `gpa + len < 2^64`. Whether they are
/// readable guest RAM and UTF-8 is for the monitor to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReasonBytes {
    gpa: u64,
    len: u8,
}

impl ReasonBytes {
    /// The `len` bytes at `gpa`; `None` for 0, above the maximum, or a
    /// range with `gpa + len` not below 2^64 (`Exit` answers
    /// `InvalidArgument` for each).
    pub const fn new(gpa: u64, len: u64) -> Option<Self> {
        if len == 0 || len > EXIT_REASON_MAX || gpa.checked_add(len).is_none() {
            return None;
        }
        Some(Self {
            gpa,
            len: len as u8,
        })
    }

    /// Where the reason starts.
    pub const fn gpa(self) -> u64 {
        self.gpa
    }

    /// Its length in bytes (1 to [`EXIT_REASON_MAX`]).
    pub const fn len(self) -> u64 {
        self.len as u64
    }

    /// Never: a reason has at least one byte.
    pub const fn is_empty(self) -> bool {
        false
    }
}

/// A gate's stack pointer (`RegisterGate`, ABI 1.1): non-zero,
/// canonical and 16-byte aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GateStack(NonZeroU64);

impl GateStack {
    /// `Ok(None)` for 0 (keep the caller's RSP), `Err` for a value no
    /// stack may have.
    pub const fn new(raw: u64) -> Result<Option<Self>, Status> {
        if !is_canonical(raw) || !raw.is_multiple_of(16) {
            return Err(Status::InvalidArgument);
        }
        Ok(match NonZeroU64::new(raw) {
            Some(v) => Some(Self(v)),
            None => None,
        })
    }

    /// The stack pointer.
    pub const fn get(self) -> u64 {
        self.0.get()
    }
}

/// A gate's page tables (`RegisterGate`, ABI 1.4): a non-zero CR3 with no
/// bits set but the root's address (51:12) and PWT/PCD (SDM Vol. 3A §4.5,
/// Table 4-12: no PCID, no "no flush" bit 63). Whether the root lies in a
/// locked page-table region is the monitor's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GateCr3(NonZeroU64);

impl GateCr3 {
    /// The bits of CR3 that hold the root's address (51:12).
    pub const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
    /// The flags a gate's CR3 may have: PWT (3) and PCD (4).
    pub const FLAGS: u64 = (1 << 3) | (1 << 4);

    /// `Ok(None)` for 0 (keep the caller's CR3), `Err` for stray bits.
    pub const fn new(raw: u64) -> Result<Option<Self>, Status> {
        if raw & !(Self::ADDRESS | Self::FLAGS) != 0 {
            return Err(Status::InvalidArgument);
        }
        Ok(match NonZeroU64::new(raw) {
            Some(v) => Some(Self(v)),
            None => None,
        })
    }

    /// The value as it is loaded into CR3.
    pub const fn get(self) -> u64 {
        self.0.get()
    }

    /// The root table's guest-physical address.
    pub const fn root(self) -> u64 {
        self.0.get() & Self::ADDRESS
    }
}

/// A canonical guest-linear address (SDM Vol. 1 §3.3.7.1): a gate's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Canonical(u64);

impl Canonical {
    /// `linear`, if it is canonical.
    pub const fn new(linear: u64) -> Option<Self> {
        if is_canonical(linear) {
            Some(Self(linear))
        } else {
            None
        }
    }

    /// The address.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// The guest-physical address of an 8-byte page-table entry: 8-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryAddr(u64);

impl EntryAddr {
    /// `gpa`, if it is 8-aligned.
    pub const fn new(gpa: u64) -> Option<Self> {
        if gpa.is_multiple_of(8) {
            Some(Self(gpa))
        } else {
            None
        }
    }

    /// The address.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// A patch-site table (`RegisterPatchSites`, ABI 1.2): a guest-linear
/// address, 8-aligned, and a length that is a non-zero multiple of its
/// format's entry size. Where it lies, and how many entries the monitor
/// still takes, is the monitor's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PatchTable {
    va: u64,
    len: u64,
    format: PatchFormat,
}

impl PatchTable {
    /// Checks the table in the ABI's order: `InvalidArgument` for an
    /// unknown format, `Empty` for no length, `Unaligned` for a length
    /// off the entry size or an address off 8.
    pub const fn new(va: u64, len: u64, format: u64) -> Result<Self, Status> {
        let Some(format) = PatchFormat::from_raw(format) else {
            return Err(Status::InvalidArgument);
        };
        if len == 0 {
            return Err(Status::Empty);
        }
        if !len.is_multiple_of(format.entry_size()) || !va.is_multiple_of(8) {
            return Err(Status::Unaligned);
        }
        Ok(Self { va, len, format })
    }

    /// The table's guest-linear address.
    pub const fn va(self) -> u64 {
        self.va
    }

    /// Its length in bytes.
    pub const fn len(self) -> u64 {
        self.len
    }

    /// Never: a table has at least one entry.
    pub const fn is_empty(self) -> bool {
        false
    }

    /// The entries' format.
    pub const fn format(self) -> PatchFormat {
        self.format
    }

    /// How many entries it holds.
    pub const fn entries(self) -> u64 {
        self.len / self.format.entry_size()
    }
}

/// A basic exit reason `ExitCount` answers for (SDM Vol. 3D Appendix C):
/// below [`EXIT_REASON_SLOTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitReasonSlot(u16);

impl ExitReasonSlot {
    /// `raw`, if the monitor counts that reason.
    pub const fn new(raw: u64) -> Option<Self> {
        if raw < EXIT_REASON_SLOTS {
            Some(Self(raw as u16))
        } else {
            None
        }
    }

    /// The basic exit reason.
    pub const fn get(self) -> u16 {
        self.0
    }
}
