//! Guest memory as a hypercall may read it: the only way the monitor
//! dereferences a guest-supplied address.
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
//!    identity map: the first 4 GiB, see [`IDENTITY_MAP_END`]).
//!
//! Only then is it copied, from the host-physical addresses the view
//! translates it to (the base view is an identity map).
//!
//! [`MemoryKind::Ram`]: crate::launch::config::MemoryKind::Ram

use thiserror::Error;

use crate::launch::config::PhysRange;

/// The end of the monitor's identity map: the loader's page tables map
/// the first 4 GiB virtual = physical, and the monitor runs on them.
pub const IDENTITY_MAP_END: u64 = 1 << 32;

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

/// Guest-physical memory, as a hypercall may read it, and the exit hooks
/// that come with it (`crate::exit::hooks`: none for the memories of
/// this module).
pub trait GuestMemory: crate::exit::hooks::ExitHooks {
    /// Copies `[gpa, gpa + buf.len())` into `buf` if every byte is
    /// readable under the rules of this module; otherwise copies nothing
    /// and says why.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Copies `bytes` to `[gpa, gpa + bytes.len())` if every byte is
    /// guest RAM outside monitor memory that the current view maps
    /// *writable* (and reachable); otherwise writes nothing and says why.
    fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        let _ = bytes;
        Err(MemoryError::NotRam(gpa))
    }

    /// Whether [`GuestMemory::write`] of `len` bytes at `gpa` would
    /// succeed.
    fn check_writable(&self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        let _ = len;
        Err(MemoryError::NotRam(gpa))
    }

    /// The EPT views and the memory map, for the protection policy; `None`
    /// for a memory without views (no policy calls are possible).
    fn views(&mut self) -> Option<&mut dyn crate::policy::views::Views> {
        None
    }

    /// [`GuestMemory::views`], to look only.
    fn views_ref(&self) -> Option<&dyn crate::policy::views::Views> {
        None
    }
}

/// No guest memory at all: every non-empty read is refused. For virtual
/// CPUs that never read guest memory (most host tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoGuestMemory;

impl crate::exit::hooks::ExitHooks for NoGuestMemory {
    type State = ();
}

impl GuestMemory for NoGuestMemory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if buf.is_empty() {
            Ok(())
        } else {
            Err(MemoryError::NotRam(gpa))
        }
    }
}

/// Host-physical memory the monitor can read.
pub trait PhysMemory {
    /// Copies `[hpa, hpa + buf.len())` into `buf`. Callers pass only
    /// ranges below [`IDENTITY_MAP_END`] that are guest RAM.
    fn copy(&self, hpa: u64, buf: &mut [u8]);

    /// Copies `bytes` to `[hpa, hpa + bytes.len())`. Callers pass only
    /// ranges below [`IDENTITY_MAP_END`] that are guest RAM outside
    /// monitor memory.
    fn write(&self, hpa: u64, bytes: &[u8]);

    /// Hands `f` the bytes of `[hpa, hpa + len)` in order, as one or more
    /// consecutive slices, without a copy where the memory can be read
    /// in place. Callers pass only ranges below [`IDENTITY_MAP_END`] that
    /// are guest RAM. By default, 4 KiB at a time through [`Self::copy`].
    fn read_with(&self, hpa: u64, len: u64, f: &mut dyn FnMut(&[u8])) {
        let mut buf = [0u8; 4096];
        let (mut at, end) = (hpa, hpa + len);
        while at < end {
            let n = (end - at).min(4096) as usize;
            self.copy(at, &mut buf[..n]);
            f(&buf[..n]);
            at += n as u64;
        }
    }
}

/// The monitor's identity map of the first 4 GiB.
#[derive(Debug)]
pub struct IdentityMap {
    _private: (),
}

impl IdentityMap {
    /// A handle to the identity map.
    ///
    /// # Safety
    /// The current page tables must map `[0, IDENTITY_MAP_END)` readable
    /// with virtual = physical for as long as the handle is used (the
    /// loader's tables, documented in `LaunchConfig`).
    pub unsafe fn new() -> Self {
        Self { _private: () }
    }
}

impl PhysMemory for IdentityMap {
    fn copy(&self, hpa: u64, buf: &mut [u8]) {
        debug_assert!(hpa.saturating_add(buf.len() as u64) <= IDENTITY_MAP_END);
        let src = core::ptr::with_exposed_provenance::<u8>(hpa as usize);
        // SAFETY: `IdentityMap::new`'s contract maps the range readable at
        // this address (callers stay below IDENTITY_MAP_END); it is guest
        // RAM, not monitor memory, so no Rust reference aliases it, and the
        // guest is stopped while the monitor runs (one CPU), so nothing
        // writes it during the copy.
        unsafe { core::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
    }

    /// In place, but for page 0, which is copied (address 0 is a null
    /// pointer to Rust, and no slice may start there).
    fn read_with(&self, hpa: u64, len: u64, f: &mut dyn FnMut(&[u8])) {
        debug_assert!(hpa.saturating_add(len) <= IDENTITY_MAP_END);
        let (mut at, end) = (hpa, hpa + len);
        if at == 0 && end > 0 {
            let mut buf = [0u8; 4096];
            let n = end.min(4096) as usize;
            self.copy(0, &mut buf[..n]);
            f(&buf[..n]);
            at = n as u64;
        }
        if at < end {
            let src = core::ptr::with_exposed_provenance::<u8>(at as usize);
            // SAFETY: as in `copy`: the identity map makes the range
            // readable at this address (callers stay below
            // IDENTITY_MAP_END, so the length fits an isize), and `src` is
            // not null (`at` > 0); it is guest RAM, not monitor memory, so
            // no `&mut` of the monitor aliases it, and the guest is
            // stopped while the monitor runs (one CPU), so nothing writes
            // it while `f` holds the slice (`f` cannot keep it).
            let bytes = unsafe { core::slice::from_raw_parts(src, (end - at) as usize) };
            f(bytes);
        }
    }

    fn write(&self, hpa: u64, bytes: &[u8]) {
        debug_assert!(hpa.saturating_add(bytes.len() as u64) <= IDENTITY_MAP_END);
        let dst = core::ptr::with_exposed_provenance_mut::<u8>(hpa as usize);
        // SAFETY: as in `copy`: the identity map makes the range writable
        // at this address (the loader maps the first 4 GiB writable); it
        // is guest RAM, never monitor memory, so no Rust reference of the
        // monitor aliases it, and the guest is stopped during the copy.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
    }
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

pub use super::view_memory::{TooManyRanges, ViewMemory};
