//! Guest-physical memory as the monitor may touch it on the guest's
//! behalf: the only way it dereferences a guest-supplied address.
//!
//! A range is readable only if every byte of it
//!
//! 1. lies in guest RAM (a [`MemoryKind::Ram`] entry of the memory map —
//!    never reserved or MMIO memory, where a read could have side effects),
//! 2. lies outside monitor memory (the loader's monitor ranges and the
//!    frame pool, widened to pages: invariant 1 even if a memory-map entry
//!    overlaps them),
//! 3. is mapped readable by the current EPT view (walked with the `ept`
//!    crate, page by page), and
//! 4. translates to host-physical memory the monitor can reach (its
//!    identity map: the first 4 GiB, see
//!    [`IDENTITY_MAP_END`](crate::hw::phys::IDENTITY_MAP_END)).
//!
//! Only then is it copied, from the host-physical addresses the view
//! translates it to (the base view is an identity map).
//!
//! A layer of its own, above `hw` and below the policy (issue 14): the
//! policy's `Views` are implemented over [`ViewMemory`], and the
//! virtual CPU's `GuestMemory` (`crate::vcpu::memory`) reads through it.
//!
//! [`MemoryKind::Ram`]: crate::memmap::MemoryKind::Ram

// Safe code only above the hardware layers (`hw`, `arch`, `launch`):
// issue 14, DESIGN.md §6.
#![forbid(unsafe_code)]

pub mod view_memory;

use thiserror::Error;

use crate::memmap::PhysRange;

/// Why a guest range cannot be read. The guest sees every one of them as
/// `InvalidArgument`; the monitor logs the reason at debug level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MemoryError {
    /// the range wraps around the address space
    #[error("range {0:#x}+{1:#x} wraps around")]
    Wraps(u64, u64),
    /// part of the range is not guest RAM
    #[error("{0:#x} is not guest RAM")]
    NotRam(u64),
    /// part of the range is monitor memory
    #[error("{0:#x} is monitor memory")]
    Monitor(u64),
    /// the current EPT view does not map part of the range readable
    #[error("{0:#x} is not mapped readable by the EPT view")]
    NotReadable(u64),
    /// the current EPT view does not map part of the range writable
    #[error("{0:#x} is not mapped writable by the EPT view")]
    NotWritable(u64),
    /// part of the range translates beyond the monitor's identity map
    #[error("{0:#x} is beyond the monitor's identity map")]
    Unreachable(u64),
}

/// A fixed-capacity list of physical ranges.
#[derive(Debug, Clone, Copy)]
pub struct RangeList<const N: usize> {
    ranges: [PhysRange; N],
    len: usize,
}

impl<const N: usize> RangeList<N> {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            ranges: [PhysRange { start: 0, end: 0 }; N],
            len: 0,
        }
    }

    /// Adds a range; `false` (and nothing added) when the list is full.
    pub fn push(&mut self, r: PhysRange) -> bool {
        match self.ranges.get_mut(self.len) {
            Some(slot) => {
                *slot = r;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The ranges.
    pub fn as_slice(&self) -> &[PhysRange] {
        &self.ranges[..self.len]
    }
}

impl<const N: usize> Default for RangeList<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The views a [`ViewMemory`] holds: the trusted one and one per
/// untrusted context.
pub const VIEW_SLOTS: usize = okernel_abi::policy::MAX_CONTEXTS + 1;

/// How many RAM ranges of the memory map [`ViewMemory`] keeps.
pub const MAX_RAM_RANGES: usize = 64;
/// How many monitor ranges (besides the frame pool) it keeps.
pub const MAX_MONITOR_RANGES: usize = 8;

pub use self::view_memory::{TooManyRanges, ViewMemory};
