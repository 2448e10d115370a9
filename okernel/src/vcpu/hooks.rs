//! [`ExitHooks`]: the one seam through which a fuzz build observes the
//! exit path, without a `cfg` in the handlers.
//!
//! The hooks belong to the guest-memory type of a [`Vcpu`] (every
//! [`GuestMemory`] is [`ExitHooks`]): the production memories
//! (`ViewMemory`, [`NoGuestMemory`]) keep the defaults, which do nothing
//! and keep no state (`State = ()`), so they compile to the handler
//! alone. The fuzz build runs the same `Vcpu` over its tracking decorator
//! of the views (`crate::fuzz::tracked::Tracked`), whose hooks record
//! coverage, answer the fuzz calls and run the oracles' watch. Which
//! memory a run uses is chosen once, where the run's types are named
//! (`launch::run::MonitorMemory`).
//!
//! [`NoGuestMemory`]: super::memory::NoGuestMemory

use okernel_abi::hypercall::Status;

use super::guest::Vcpu;
use super::memory::GuestMemory;
use super::{ExitAction, ExitError};
use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::vmx::exit_reason::ExitReasonField;

/// What a hook call that succeeded gives the guest besides RAX =
/// Success ([`ExitHooks::call`]; a refusal is its `Status` instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallReply {
    /// RDI unchanged.
    Done,
    /// RDI = this value.
    Rdi(u64),
}

/// An exit the exit path's fast half (`crate::exit::handle_fast`) left
/// to its slow half (`crate::exit::handle_slow`), with what it already
/// read (so that no field is read twice): what [`ExitHooks::slow`] sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowExit {
    /// Any exit-reason field but VMCALL and CPUID (not counted yet). First:
    /// its tag 0 costs the fast half no register set up in advance.
    Other(ExitReasonField),
    /// A VMCALL (counted) by a caller at this CPL, other than the Null
    /// call at CPL 0.
    Vmcall {
        /// The caller's privilege level.
        cpl: u8,
    },
}

/// What a guest-memory type may add around the exit path (see the module
/// docs). Every method defaults to nothing added.
pub trait ExitHooks: Sized {
    /// What the hooks keep per virtual CPU (`Vcpu::hooks`): `()` for the
    /// production memories.
    type State: Default + core::fmt::Debug;

    /// A fast exit (the Null hypercall or CPUID, `wrote_rbx` for CPUID)
    /// resumed the guest.
    #[inline(always)]
    fn fast_resumed<V: Vmcs, C: Cpu, P: Policy>(vcpu: &mut Vcpu<V, C, P, Self>, wrote_rbx: bool)
    where
        Self: GuestMemory,
    {
        let _ = (vcpu, wrote_rbx);
    }

    /// Runs `handle`, the slow half of an exit (`rest`), returning its
    /// result.
    #[inline(always)]
    fn slow<V: Vmcs, C: Cpu, P: Policy>(
        vcpu: &mut Vcpu<V, C, P, Self>,
        rest: SlowExit,
        handle: impl FnOnce(&mut Vcpu<V, C, P, Self>) -> Result<ExitAction, ExitError>,
    ) -> Result<ExitAction, ExitError>
    where
        Self: GuestMemory,
    {
        let _ = rest;
        handle(vcpu)
    }

    /// Whether hypercall `number` (outside the ABI) is one of the hooks'
    /// own calls, which [`ExitHooks::call`] answers.
    #[inline(always)]
    fn is_call(number: u64) -> bool {
        let _ = number;
        false
    }

    /// Runs the hooks' call `number` with RDI = `arg` (reduced to the
    /// guest's operand size), at CPL 0: the reply, or the status the
    /// dispatcher completes the call with as any call's (`UnknownCall`:
    /// the call is unknown to this monitor after all). `ExitError` only
    /// for a broken monitor invariant.
    fn call<V: Vmcs, C: Cpu, P: Policy>(
        vcpu: &mut Vcpu<V, C, P, Self>,
        number: u64,
        arg: u64,
    ) -> Result<Result<CallReply, Status>, ExitError>
    where
        Self: GuestMemory,
    {
        let _ = (vcpu, number, arg);
        Ok(Err(Status::UnknownCall))
    }
}
