//! Host-physical memory as the monitor reaches it: the [`PhysMemory`]
//! trait (the views' copies go through it, so they run on the host against
//! a fake memory) and its one real implementation, the loader's identity
//! map of the first 4 GiB ([`IdentityMap`]) — the only raw-pointer access
//! to guest memory in the monitor.

use crate::memmap::Hpa;

/// The end of the monitor's identity map: the loader's page tables map
/// the first 4 GiB virtual = physical, and the monitor runs on them.
pub const IDENTITY_MAP_END: u64 = 1 << 32;

/// Host-physical memory the monitor can read.
pub trait PhysMemory {
    /// Copies `[hpa, hpa + buf.len())` into `buf`. Callers pass only
    /// ranges below [`IDENTITY_MAP_END`] that are guest RAM.
    fn copy(&self, hpa: Hpa, buf: &mut [u8]);

    /// Copies `bytes` to `[hpa, hpa + bytes.len())`. Callers pass only
    /// ranges below [`IDENTITY_MAP_END`] that are guest RAM outside
    /// monitor memory.
    fn write(&self, hpa: Hpa, bytes: &[u8]);

    /// Hands `f` the bytes of `[hpa, hpa + len)` in order, as one or more
    /// consecutive slices, without a copy where the memory can be read
    /// in place. Callers pass only ranges below [`IDENTITY_MAP_END`] that
    /// are guest RAM. By default, 4 KiB at a time through [`Self::copy`].
    fn read_with(&self, hpa: Hpa, len: u64, f: &mut dyn FnMut(&[u8])) {
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
    fn copy(&self, hpa: Hpa, buf: &mut [u8]) {
        let hpa = hpa.0;
        debug_assert!(hpa.saturating_add(buf.len() as u64) <= IDENTITY_MAP_END);
        // SAFETY: `IdentityMap::new`'s contract maps the range readable at
        // this address (callers stay below IDENTITY_MAP_END); it is guest
        // RAM, not monitor memory, so no Rust reference aliases it, and the
        // guest is stopped while the monitor runs (one CPU), so nothing
        // writes it during the copy; `buf` is ours. Physical page 0 is
        // passed as a number to the instruction, never as a Rust pointer.
        unsafe { crate::arch::phys::copy(buf.as_mut_ptr() as usize, hpa as usize, buf.len()) };
    }

    /// In place, but for page 0, which is copied (address 0 is a null
    /// pointer to Rust, and no slice may start there).
    fn read_with(&self, hpa: Hpa, len: u64, f: &mut dyn FnMut(&[u8])) {
        let hpa = hpa.0;
        debug_assert!(hpa.saturating_add(len) <= IDENTITY_MAP_END);
        let (mut at, end) = (hpa, hpa + len);
        if at == 0 && end > 0 {
            let mut buf = [0u8; 4096];
            let n = end.min(4096) as usize;
            self.copy(Hpa(0), &mut buf[..n]);
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

    fn write(&self, hpa: Hpa, bytes: &[u8]) {
        let hpa = hpa.0;
        debug_assert!(hpa.saturating_add(bytes.len() as u64) <= IDENTITY_MAP_END);
        // SAFETY: as in `copy`: the identity map makes the range writable
        // at this address (the loader maps the first 4 GiB writable); it
        // is guest RAM, never monitor memory, so no Rust reference of the
        // monitor aliases it, and the guest is stopped during the copy;
        // page 0 is a number to the instruction, not a pointer.
        unsafe { crate::arch::phys::copy(hpa as usize, bytes.as_ptr() as usize, bytes.len()) };
    }
}
