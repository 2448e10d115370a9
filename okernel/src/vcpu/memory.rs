//! [`GuestMemory`]: guest memory as a virtual CPU's handlers and
//! hypercalls reach it, with the exit hooks that come with it
//! ([`super::hooks`]). The rules a range must pass are `crate::mem`'s;
//! the run's memory is [`ViewMemory`] (or, in a fuzz build, its tracking
//! decorator `crate::fuzz::tracked::Tracked`).

use super::hooks::ExitHooks;
use crate::hw::phys::PhysMemory;
use crate::mem::{MemoryError, ViewMemory};
use crate::memmap::Gpa;
use crate::policy::views::{SharedFrames, Views};

/// Guest-physical memory, as a hypercall may read it, and the exit hooks
/// that come with it ([`ExitHooks`]: none for the memories of this
/// module).
pub trait GuestMemory: ExitHooks {
    /// Copies `[gpa, gpa + buf.len())` into `buf` if every byte is
    /// readable under the rules of `crate::mem`; otherwise copies nothing
    /// and says why.
    fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Copies `bytes` to `[gpa, gpa + bytes.len())` if every byte is
    /// guest RAM outside monitor memory that the current view maps
    /// *writable* (and reachable); otherwise writes nothing and says why.
    fn write(&mut self, gpa: Gpa, bytes: &[u8]) -> Result<(), MemoryError> {
        let _ = bytes;
        Err(MemoryError::NotRam(gpa.0))
    }

    /// Whether [`GuestMemory::write`] of `len` bytes at `gpa` would
    /// succeed.
    fn check_writable(&self, gpa: Gpa, len: u64) -> Result<(), MemoryError> {
        let _ = len;
        Err(MemoryError::NotRam(gpa.0))
    }

    /// The EPT views and the memory map, for the protection policy; `None`
    /// for a memory without views (no policy calls are possible).
    fn views(&mut self) -> Option<&mut dyn Views> {
        None
    }

    /// [`GuestMemory::views`], to look only.
    fn views_ref(&self) -> Option<&dyn Views> {
        None
    }
}

/// No guest memory at all: every non-empty read is refused. For virtual
/// CPUs that never read guest memory (most host tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoGuestMemory;

impl ExitHooks for NoGuestMemory {
    type State = ();
}

impl GuestMemory for NoGuestMemory {
    fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError> {
        if buf.is_empty() {
            Ok(())
        } else {
            Err(MemoryError::NotRam(gpa.0))
        }
    }
}

impl<A: ept::FrameAllocator, R: PhysMemory> ExitHooks for ViewMemory<A, R> {
    type State = ();
}

impl<A: SharedFrames, R: PhysMemory> GuestMemory for ViewMemory<A, R> {
    fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError> {
        ViewMemory::read(self, gpa, buf)
    }

    fn check_writable(&self, gpa: Gpa, len: u64) -> Result<(), MemoryError> {
        ViewMemory::check_writable(self, gpa, len)
    }

    fn write(&mut self, gpa: Gpa, bytes: &[u8]) -> Result<(), MemoryError> {
        ViewMemory::write(self, gpa, bytes)
    }

    fn views(&mut self) -> Option<&mut dyn Views> {
        Some(self)
    }

    fn views_ref(&self) -> Option<&dyn Views> {
        Some(self)
    }
}
