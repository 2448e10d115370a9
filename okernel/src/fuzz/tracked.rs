//! [`Tracked`]: the fuzz build's decorator of the guest memory. It wraps
//! the production memory (a `ViewMemory`) and
//!
//! - keeps the views generation and the monitor write log
//!   ([`super::dirty`]) by watching every call that can change a view or
//!   write guest RAM pass through it, so the production memory has no
//!   trace of them; and
//! - is the memory whose [`ExitHooks`] are the fuzzer's: coverage of
//!   every exit ([`super::observe`]), the two fuzz calls
//!   ([`super::calls`]), per-vCPU state in [`FuzzState`].
//!
//! The wrapped memory is private: the ways exit handlers (generic over
//! [`GuestMemory`]) change a view or write guest RAM are the [`Views`]
//! and [`GuestMemory`] methods below, so such a path cannot skip the log.
//! One exception: [`Deref`] reaches the wrapped memory, whose `phys()`
//! writes physical memory through `&self` — code with the concrete type
//! (tests, `launch`) can write there unlogged; no exit handler can.

use core::ops::Deref;

use ept::{Perms, Translation};
use okernel_abi::hypercall::Status;

use super::FuzzState;
use super::dirty::Dirty;
use super::inspect::Inspect;
use crate::hw::{Cpu, Vmcs};
use crate::mem::MemoryError;
use crate::memmap::{Gpa, PhysRange, identity};
use crate::policy::Policy;
use crate::policy::views::Views;
use crate::vcpu::hooks::SlowExit;
use crate::vcpu::hooks::{CallReply, ExitHooks};
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};

/// The memory a fuzz build runs over: `M` with the write tracking and the
/// fuzzer's exit hooks (see the module docs).
#[derive(Debug)]
pub struct Tracked<M> {
    inner: M,
    dirty: Dirty,
}

impl<M> Tracked<M> {
    /// `inner`, generation 0, nothing written.
    pub const fn new(inner: M) -> Self {
        Self {
            inner,
            dirty: Dirty::new(),
        }
    }

    /// The views generation and the monitor write log.
    pub fn dirty(&self) -> &Dirty {
        &self.dirty
    }

    /// Empties the monitor write log (the generation stays).
    pub fn clear_write_log(&mut self) {
        self.dirty.clear_log();
    }
}

impl<M> From<M> for Tracked<M> {
    fn from(inner: M) -> Self {
        Self::new(inner)
    }
}

impl<M> Deref for Tracked<M> {
    type Target = M;

    fn deref(&self) -> &M {
        &self.inner
    }
}

/// What the fuzz code reads of a tracked memory: [`Inspect`] and the
/// write tracking.
pub trait Tracking: Inspect {
    /// The views generation and the monitor write log.
    fn dirty(&self) -> &Dirty;
    /// Empties the monitor write log (the generation stays).
    fn clear_write_log(&mut self);
}

/// The memory of a fuzz-build [`Vcpu`]: tracked, with the fuzzer's
/// hooks. The fuzz code is generic over it.
pub trait Fuzzed: GuestMemory + ExitHooks<State = FuzzState> + Tracking {}

impl<M: Inspect + GuestMemory> Fuzzed for Tracked<M> {}

impl<M: Inspect + GuestMemory> Tracking for Tracked<M> {
    fn dirty(&self) -> &Dirty {
        &self.dirty
    }

    fn clear_write_log(&mut self) {
        self.dirty.clear_log();
    }
}

impl<M: Inspect + GuestMemory> Views for Tracked<M> {
    fn is_live(&self, ctx: u16) -> bool {
        self.inner.is_live(ctx)
    }

    fn current(&self) -> u16 {
        self.inner.current()
    }

    /// Switching views does not bump the generation (`super::dirty`).
    fn set_current(&mut self, ctx: u16) -> bool {
        self.inner.set_current(ctx)
    }

    fn protect(&mut self, ctx: u16, gpa: Gpa, len: u64, perms: Perms) -> Result<(), ept::Error> {
        self.dirty.bump();
        self.inner.protect(ctx, gpa, len, perms)
    }

    fn create(&mut self, ctx: u16) -> Result<(), ept::Error> {
        let created = self.inner.create(ctx);
        if created.is_ok() {
            self.dirty.bump();
        }
        created
    }

    fn destroy(&mut self, ctx: u16) -> bool {
        // Any slot but the base and the current one may change.
        if ctx != 0 && ctx != self.inner.current() {
            self.dirty.bump();
        }
        self.inner.destroy(ctx)
    }

    fn eptp(&self, ctx: u16) -> Option<u64> {
        self.inner.eptp(ctx)
    }

    fn tables(&self, ctx: u16) -> u64 {
        self.inner.tables(ctx)
    }

    fn frames_available(&self) -> u64 {
        self.inner.frames_available()
    }

    fn translate(&self, ctx: u16, gpa: Gpa) -> Option<Translation> {
        self.inner.translate(ctx, gpa)
    }

    fn mapped_end(&self) -> u64 {
        self.inner.mapped_end()
    }

    fn ram(&self) -> &[PhysRange] {
        self.inner.ram()
    }

    fn check_ram(&self, gpa: Gpa, len: u64) -> Result<(), MemoryError> {
        self.inner.check_ram(gpa, len)
    }

    fn read_phys(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.inner.read_phys(gpa, buf)
    }

    /// Logged: the write goes to physical `[gpa, gpa + len)`.
    fn write_phys(&mut self, gpa: Gpa, bytes: &[u8]) -> Result<(), MemoryError> {
        self.inner.write_phys(gpa, bytes)?;
        self.dirty.record(identity(gpa), bytes.len() as u64);
        Ok(())
    }
}

impl<M: Inspect + GuestMemory> Inspect for Tracked<M> {
    fn rights_at(&self, ctx: u16, gpa: Gpa) -> (Perms, u64) {
        self.inner.rights_at(ctx, gpa)
    }

    fn monitor(&self) -> &[PhysRange] {
        self.inner.monitor()
    }

    fn read_phys_with(
        &self,
        gpa: Gpa,
        len: u64,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), MemoryError> {
        self.inner.read_phys_with(gpa, len, f)
    }
}

impl<M: Inspect + GuestMemory> GuestMemory for Tracked<M> {
    fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.inner.read(gpa, buf)
    }

    /// Logged: the physical pages the current view translates the range
    /// to (the write went through that view, whole or not at all).
    fn write(&mut self, gpa: Gpa, bytes: &[u8]) -> Result<(), MemoryError> {
        self.inner.write(gpa, bytes)?;
        let (ctx, end) = (self.inner.current(), gpa + bytes.len() as u64);
        let mut at = gpa;
        while at < end {
            let piece_end = at.page_end().min(end);
            if let Some(t) = self.inner.translate(ctx, at) {
                self.dirty.record(t.hpa, piece_end - at);
            }
            at = piece_end;
        }
        Ok(())
    }

    fn check_writable(&self, gpa: Gpa, len: u64) -> Result<(), MemoryError> {
        self.inner.check_writable(gpa, len)
    }

    fn views(&mut self) -> Option<&mut dyn Views> {
        Some(self)
    }

    fn views_ref(&self) -> Option<&dyn Views> {
        Some(self)
    }
}

impl<M: Inspect + GuestMemory> ExitHooks for Tracked<M> {
    type State = FuzzState;

    /// Records the fast exit's constant key.
    #[inline(always)]
    fn fast_resumed<V: Vmcs, C: Cpu, P: Policy>(vcpu: &mut Vcpu<V, C, P, Self>, wrote_rbx: bool) {
        // The bootstrap processor's only (`super::observe`).
        if vcpu.cpu_index != 0 {
            return;
        }
        vcpu.hooks.coverage.record(if wrote_rbx {
            super::observe::CPUID_KEY
        } else {
            super::observe::NULL_KEY
        });
    }

    /// Records the exit's key once the handler decided
    /// ([`super::observe::slow`]).
    #[inline(always)]
    fn slow<V: Vmcs, C: Cpu, P: Policy>(
        vcpu: &mut Vcpu<V, C, P, Self>,
        rest: SlowExit,
        handle: impl FnOnce(&mut Vcpu<V, C, P, Self>) -> Result<ExitAction, ExitError>,
    ) -> Result<ExitAction, ExitError> {
        super::observe::slow(vcpu, rest, handle)
    }

    fn is_call(number: u64) -> bool {
        super::calls::is_fuzz_call(number)
    }

    fn call<V: Vmcs, C: Cpu, P: Policy>(
        vcpu: &mut Vcpu<V, C, P, Self>,
        number: u64,
        arg: u64,
    ) -> Result<Result<CallReply, Status>, ExitError> {
        super::calls::handle(vcpu, number, arg)
    }
}
