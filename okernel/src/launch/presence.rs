//! The shootdown (issue 17, `docs/smp.md`): which processors may be in
//! VMX non-root operation, so that a hypercall that changed the policy
//! returns only after every other processor has left the guest since.
//!
//! A processor that changes the policy (a lock, a pin, a view's
//! permissions) writes the EPT tables every processor shares, runs INVEPT
//! on itself and bumps the policy's generation; another processor may
//! still hold a translation it cached before (a writable one, say), and
//! its VMCS still has the old CR masks, until it exits and catches up
//! (`crate::exit::vmcs_sync::catch_up`, at the start of every exit, under
//! the run's lock). So before that hypercall returns to its guest, its
//! processor waits (holding the run's lock) until every other processor
//! is out of the guest:
//!
//! - a processor marks itself **out** at every VM exit, first thing,
//!   before it waits for the run's lock ([`Presence::left`]): so a
//!   processor that exits while another holds the lock for the shootdown
//!   does not deadlock it;
//! - it marks itself **in** while it still holds the lock, right before
//!   it resumes the guest ([`Presence::entering`]), unless it resumes it
//!   in the wait-for-SIPI state, where it runs nothing and caches no
//!   translation (and where the VMX-preemption timer does not exit,
//!   SDM Vol. 3C §26.5.1).
//!
//! A processor marked out is between its exit and the lock (the waiter
//! holds it), and catches up once it gets the lock, before it enters the
//! guest again; in VMX root it uses no guest translation. A
//! processor marked in exits within one tick of its VMX-preemption timer,
//! which with several processors is armed for good, also in HLT
//! (`crate::vcpu::timer`, the poll). The wait is bounded
//! ([`Presence::wait_out`]): a processor that does not leave within the
//! patience ends the run (fail closed: the hypercall does not return
//! with the old translation live).
//!
//! Processor 0 is the bootstrap processor, application processor `slot`
//! is `slot + 1` ([`super::ap`]).

// Safe code only: issue 14, DESIGN.md §6.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How many processors the run can have: the bootstrap processor and
/// [`super::ap::MAX_APS`] application processors.
pub const MAX_CPUS: usize = super::ap::MAX_APS + 1;

/// Per processor, whether it may be in VMX non-root operation; and which
/// processor, if any, has a patch step open.
#[derive(Debug)]
pub struct Presence {
    in_guest: [AtomicBool; MAX_CPUS],
    /// The processor whose patch step is open (`crate::exit::patch_step`),
    /// or [`NOBODY`].
    stepping: AtomicUsize,
}

/// No processor has a step open.
const NOBODY: usize = usize::MAX;

impl Default for Presence {
    fn default() -> Self {
        Self::new()
    }
}

impl Presence {
    /// No processor in the guest.
    pub const fn new() -> Self {
        Self {
            in_guest: [const { AtomicBool::new(false) }; MAX_CPUS],
            stepping: AtomicUsize::new(NOBODY),
        }
    }

    /// Records, with the run's lock held at the end of an exit of `cpu`,
    /// whether that processor now has a patch step open.
    ///
    /// A step makes one page of locked text writable for one instruction
    /// in a view every processor in that context uses. So while it is
    /// open no other processor runs the guest: the exit that opened it
    /// changed the policy, and so waited until every other one had left
    /// the guest ([`Self::wait_out`]); and every other processor that
    /// takes the run's lock meanwhile gives it back at once and waits
    /// for the step to close ([`Self::step_elsewhere`]) before it handles
    /// its exit, so none enters the guest or ends the step from its own
    /// VMCS. The step's own exit comes within one instruction.
    #[inline(always)]
    pub fn set_stepping(&self, cpu: usize, open: bool) {
        let now = self.stepping.load(Ordering::SeqCst);
        if open {
            self.stepping.store(cpu, Ordering::SeqCst);
        } else if now == cpu {
            self.stepping.store(NOBODY, Ordering::SeqCst);
        }
    }

    /// Whether a processor other than `me` has a patch step open.
    #[inline(always)]
    pub fn step_elsewhere(&self, me: usize) -> bool {
        let s = self.stepping.load(Ordering::SeqCst);
        s != NOBODY && s != me
    }

    /// Waits (without the run's lock) until no processor but `me` has a
    /// step open, reading the time from `clock`; `Err(cpu)` names the
    /// processor whose step is still open once `patience` ticks have
    /// passed (the caller ends the run: it may not enter the guest while
    /// the step's page is open).
    pub fn wait_step(
        &self,
        me: usize,
        patience: u64,
        clock: impl Fn() -> u64,
    ) -> Result<(), usize> {
        let start = clock();
        loop {
            let s = self.stepping.load(Ordering::SeqCst);
            if s == NOBODY || s == me {
                return Ok(());
            }
            if clock().wrapping_sub(start) > patience {
                return Err(s);
            }
            core::hint::spin_loop();
        }
    }

    /// Stops every processor but `me` for `me`'s patch step: marks the
    /// step (so their exits wait, [`Self::wait_step`]), then waits until
    /// none is in the guest ([`Self::wait_out`]). The caller holds the
    /// run's lock.
    pub fn stop_for_step(
        &self,
        me: usize,
        patience: u64,
        clock: impl Fn() -> u64,
    ) -> Result<(), usize> {
        self.stepping.store(me, Ordering::SeqCst);
        self.wait_out(me, patience, clock)
    }

    /// Processor `cpu` left the guest (a VM exit): called before it takes
    /// the run's lock.
    /// A number past [`MAX_CPUS`] panics (the run ends): no processor
    /// may go unaccounted for.
    #[inline(always)]
    pub fn left(&self, cpu: usize) {
        self.in_guest[cpu].store(false, Ordering::SeqCst);
    }

    /// Processor `cpu` is about to enter the guest, running (`true`) or
    /// in the wait-for-SIPI state (`false`): called with the run's lock
    /// held, after its exit caught up with the policy.
    /// A number past [`MAX_CPUS`] panics, as for [`Self::left`].
    #[inline(always)]
    pub fn entering(&self, cpu: usize, running: bool) {
        self.in_guest[cpu].store(running, Ordering::SeqCst);
    }

    /// Whether processor `cpu` may be in the guest.
    pub fn in_guest(&self, cpu: usize) -> bool {
        self.in_guest
            .get(cpu)
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Waits until no processor but `me` is in the guest, reading the
    /// time from `clock`. `Err(cpu)` names the first processor still in
    /// the guest once `patience` ticks have passed. The caller holds the
    /// run's lock, so no processor marked out can mark itself in again
    /// meanwhile: one pass over the processors suffices.
    pub fn wait_out(&self, me: usize, patience: u64, clock: impl Fn() -> u64) -> Result<(), usize> {
        let start = clock();
        for (cpu, flag) in self.in_guest.iter().enumerate() {
            if cpu == me {
                continue;
            }
            while flag.load(Ordering::SeqCst) {
                if clock().wrapping_sub(start) > patience {
                    return Err(cpu);
                }
                core::hint::spin_loop();
            }
        }
        Ok(())
    }
}

/// The run's processors.
pub static PRESENCE: Presence = Presence::new();
