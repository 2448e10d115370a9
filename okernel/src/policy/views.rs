//! The EPT views the protection policy works on: the trusted view (slot
//! 0, the base view `launch` builds) and one view per untrusted context
//! (slots 1..=[`MAX_CONTEXTS`]), each a copy of the trusted view made with
//! the `ept` crate's `try_clone` from the monitor's frame pool.
//!
//! [`Views`] is what the policy needs of them, as a trait object so the
//! hypercall handlers stay independent of the frame allocator;
//! [`ViewMemory`] implements it. Every view change goes through
//! [`Views::protect`], which is all-or-nothing per call (the `ept` crate's
//! plan/reserve/apply); the caller checks [`Views::frames_available`]
//! against [`FRAMES_PER_PROTECT`] per call first, so a sequence of calls
//! cannot run out half-way (see `policy::apply`).
//!
//! What the fuzzing oracles read of the views besides (runs of equal
//! rights, the monitor's ranges, guest RAM in place) is a separate trait,
//! `crate::fuzz::inspect::Inspect`, which production builds do not have;
//! the fuzz build's write tracking wraps a [`ViewMemory`] rather than
//! living in it (`crate::fuzz::tracked`).

use ept::{FrameAllocator, Perms, Translation, View};
use okernel_abi::policy::MAX_CONTEXTS;

use crate::hw::phys::PhysMemory;
use crate::mem::{MemoryError, ViewMemory};
use crate::memmap::{Gpa, PhysRange, identity};

/// The most new tables one `protect` of a contiguous range can need: at
/// each end of the range a 1 GiB leaf may split into a page directory and
/// the 2 MiB leaf at the boundary into a page table (SDM Vol. 3C §29.3.2:
/// 4-level EPT, leaves at the PDPT, PD and PT levels).
pub const FRAMES_PER_PROTECT: u64 = 4;

/// A frame allocator that several views can share (a handle: cloning it
/// gives another handle to the same frames) and that can say how many
/// frames it still has.
pub trait SharedFrames: FrameAllocator + Clone {
    /// Frames that can still be allocated.
    fn available(&self) -> u64;
}

/// The policy's access to the views and to guest RAM. Contexts are view
/// slots: 0 = trusted, 1..=[`MAX_CONTEXTS`] = untrusted.
pub trait Views {
    /// Whether context `ctx` has a view.
    fn is_live(&self, ctx: u16) -> bool;
    /// The context whose view the guest runs in.
    fn current(&self) -> u16;
    /// Makes `ctx`'s view the one guest memory is read through; `false`
    /// if it is not live.
    fn set_current(&mut self, ctx: u16) -> bool;
    /// Sets the rights of every mapped page of `[gpa, gpa + len)` in
    /// `ctx`'s view (holes stay holes). All-or-nothing.
    fn protect(&mut self, ctx: u16, gpa: Gpa, len: u64, perms: Perms) -> Result<(), ept::Error>;
    /// Creates `ctx`'s view as a copy of the trusted view. All-or-nothing.
    fn create(&mut self, ctx: u16) -> Result<(), ept::Error>;
    /// Drops `ctx`'s view (never 0 or the current one), returning its
    /// tables to the pool; `false` if there was none to drop.
    fn destroy(&mut self, ctx: u16) -> bool;
    /// The EPT pointer of `ctx`'s view (write-back, no A/D flags).
    fn eptp(&self, ctx: u16) -> Option<u64>;
    /// The tables `ctx`'s view uses.
    fn tables(&self, ctx: u16) -> u64;
    /// Frames the pool can still give.
    fn frames_available(&self) -> u64;
    /// What `ctx`'s view maps at `gpa`.
    fn translate(&self, ctx: u16, gpa: Gpa) -> Option<Translation>;
    /// The end of the highest memory-map entry (page-aligned).
    fn mapped_end(&self) -> u64;
    /// The RAM ranges of the memory map.
    fn ram(&self) -> &[PhysRange];
    /// Whether `[gpa, gpa + len)` is guest RAM, outside monitor memory,
    /// and below the monitor's identity map (monitor memory checked
    /// first).
    fn check_ram(&self, gpa: Gpa, len: u64) -> Result<(), MemoryError>;
    /// Reads guest RAM that [`Views::check_ram`] accepted, whatever the
    /// views map (page-table entries the monitor validates).
    fn read_phys(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError>;
    /// Writes guest RAM that [`Views::check_ram`] accepted, whatever the
    /// views map (validated page-table entries, zeroing freed pages).
    fn write_phys(&mut self, gpa: Gpa, bytes: &[u8]) -> Result<(), MemoryError>;
}

fn slot(ctx: u16) -> usize {
    usize::from(ctx)
}

impl<A: SharedFrames, R: PhysMemory> Views for ViewMemory<A, R> {
    fn is_live(&self, ctx: u16) -> bool {
        self.slot(slot(ctx)).is_some()
    }

    fn current(&self) -> u16 {
        // At most MAX_CONTEXTS + 1 slots.
        self.current_slot() as u16
    }

    fn set_current(&mut self, ctx: u16) -> bool {
        self.set_current_slot(slot(ctx))
    }

    fn protect(&mut self, ctx: u16, gpa: Gpa, len: u64, perms: Perms) -> Result<(), ept::Error> {
        match self.slot_mut(slot(ctx)) {
            Some(v) => v.protect(gpa, len, perms),
            None => Ok(()),
        }
    }

    fn create(&mut self, ctx: u16) -> Result<(), ept::Error> {
        if ctx == 0 || usize::from(ctx) > MAX_CONTEXTS || self.is_live(ctx) {
            return Err(ept::Error::EmptyRange);
        }
        let copy = match self.slot(0) {
            Some(base) => base.try_clone()?,
            None => return Err(ept::Error::EmptyRange),
        };
        // The slot was checked free above.
        self.insert(slot(ctx), copy)
            .map_err(|_| ept::Error::EmptyRange)
    }

    fn destroy(&mut self, ctx: u16) -> bool {
        self.remove(slot(ctx)).is_some()
    }

    fn eptp(&self, ctx: u16) -> Option<u64> {
        let v: &View<A> = self.slot(slot(ctx))?;
        v.eptp(ept::MemoryType::WriteBack, false)
            .ok()
            .map(|e| e.raw())
    }

    fn tables(&self, ctx: u16) -> u64 {
        self.slot(slot(ctx)).map_or(0, |v| v.usage().total() as u64)
    }

    fn frames_available(&self) -> u64 {
        self.slot(0).map_or(0, |v| v.frames().available())
    }

    fn translate(&self, ctx: u16, gpa: Gpa) -> Option<Translation> {
        self.slot(slot(ctx))?.translate(gpa).ok().flatten()
    }

    fn mapped_end(&self) -> u64 {
        ViewMemory::mapped_end(self)
    }

    fn ram(&self) -> &[PhysRange] {
        ViewMemory::ram(self)
    }

    fn check_ram(&self, gpa: Gpa, len: u64) -> Result<(), MemoryError> {
        ViewMemory::check_ram(self, gpa, len)
    }

    fn read_phys(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError> {
        ViewMemory::check_ram(self, gpa, buf.len() as u64)?;
        self.phys().copy(identity(gpa), buf);
        Ok(())
    }

    fn write_phys(&mut self, gpa: Gpa, bytes: &[u8]) -> Result<(), MemoryError> {
        ViewMemory::check_ram(self, gpa, bytes.len() as u64)?;
        self.write_hpa(identity(gpa), bytes);
        Ok(())
    }
}
