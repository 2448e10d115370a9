//! VM-exit handling: one free function per exit reason, each run on the host
//! against [`crate::hw::fake`] in the tests.
//!
//! [`handle_exit`] reads the exit reason, counts it, and dispatches. A
//! handler returns [`ExitAction::Resume`] (RIP advanced or an event
//! injected), [`ExitAction::Stop`] (the guest asked to end the run), or an
//! [`ExitError`]: a fatal condition the run loop reports with the guest
//! state and ends with a failure — never a silent hang.

pub mod counters;
pub mod cpuid;
pub mod cr;
pub mod ept_violation;
pub mod fatal;
pub mod guest;
pub mod msr;
pub mod simple;
pub mod xsetbv;

use okernel_abi::result::Outcome;
use thiserror::Error;

pub use self::counters::ExitCounters;
pub use self::guest::{CrConfig, Vcpu};
use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::vmx::error::VmFail;
use crate::vmx::exit_reason::{ExitReason, ExitReasonField};
use crate::vmx::fields::ReadOnly32;

/// What the run loop does after a handled exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitAction {
    /// Re-enter the guest.
    Resume,
    /// End the run with this outcome (the guest's Exit hypercall).
    Stop(Outcome),
}

/// A fatal exit: the run ends with [`Outcome::Fail`] and this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ExitError {
    /// a VMREAD or VMWRITE failed
    #[error("VMCS access failed: {0}")]
    Vmcs(#[from] VmFail),
    /// the VM-exit instruction length is outside 1..=15
    #[error("VM-exit instruction length {0} outside 1..=15")]
    BadInstructionLength(u32),
    /// advancing RIP would leave the canonical address space
    #[error("guest RIP {rip:#x} + {len} is not canonical")]
    RipOverflow {
        /// Guest RIP.
        rip: u64,
        /// Instruction length.
        len: u32,
    },
    /// an exit reason the SDM does not define
    #[error("unknown exit reason {0:#x}")]
    UnknownReason(u32),
    /// an exit the chosen controls should never cause
    #[error("unexpected VM exit: {0}")]
    Unexpected(&'static str),
    /// the guest triple-faulted
    #[error("guest triple fault")]
    TripleFault,
    /// VM entry failed after loading guest state
    #[error("VM-entry failure: {reason} (qualification {qualification:#x}: {meaning})")]
    EntryFailure {
        /// The exit reason's name.
        reason: &'static str,
        /// The exit qualification.
        qualification: u64,
        /// What the qualification means (SDM §27.8).
        meaning: &'static str,
    },
    /// an EPT paging-structure entry is misconfigured (a monitor bug)
    #[error("EPT misconfiguration at GPA {0:#x}")]
    EptMisconfiguration(u64),
    /// an EPT violation during event delivery: the guest cannot be resumed
    #[error("EPT violation at GPA {gpa:#x} while delivering vector {vector}: guest stopped")]
    ViolationDuringDelivery {
        /// The guest-physical address.
        gpa: u64,
        /// The vector being delivered.
        vector: u8,
    },
    /// the EPT-violation qualification could not be decoded
    #[error("EPT violation with a malformed qualification: {0}")]
    MalformedQualification(ept::Error),
    /// a control-register access the controls never cause
    #[error("unexpected control-register access (qualification {0:#x})")]
    UnexpectedCrAccess(u64),
}

/// Handles the exit that just happened.
pub fn handle_exit<V: Vmcs, C: Cpu, P: Policy>(
    vcpu: &mut Vcpu<V, C, P>,
) -> Result<ExitAction, ExitError> {
    let field = ExitReasonField(vcpu.vmcs.read(ReadOnly32::ExitReason)?);
    vcpu.counters.record(field.basic());
    if field.entry_failure() {
        return Err(fatal::entry_failure(vcpu, field));
    }
    let Some(reason) = field.reason() else {
        return Err(ExitError::UnknownReason(field.0));
    };
    dispatch(vcpu, reason)
}

/// Calls the handler of `reason`.
pub fn dispatch<V: Vmcs, C: Cpu, P: Policy>(
    vcpu: &mut Vcpu<V, C, P>,
    reason: ExitReason,
) -> Result<ExitAction, ExitError> {
    use ExitReason as R;
    match reason {
        R::Cpuid => cpuid::handle(vcpu),
        R::Rdmsr => msr::handle_rdmsr(vcpu),
        R::Wrmsr => msr::handle_wrmsr(vcpu),
        R::CrAccess => cr::handle(vcpu),
        R::Xsetbv => xsetbv::handle(vcpu),
        R::Invd | R::Wbinvd => simple::handle_cache_flush(vcpu),
        R::Getsec => simple::inject_ud(vcpu),
        R::Vmclear
        | R::Vmlaunch
        | R::Vmptrld
        | R::Vmptrst
        | R::Vmread
        | R::Vmresume
        | R::Vmwrite
        | R::Vmxoff
        | R::Vmxon
        | R::Invept
        | R::Invvpid
        | R::Vmfunc => simple::inject_ud(vcpu),
        R::Vmcall => crate::hypercall::handle_vmcall(vcpu),
        R::EptViolation => ept_violation::handle_violation(vcpu),
        R::EptMisconfiguration => Err(ept_violation::misconfiguration(vcpu)),
        R::TripleFault => Err(ExitError::TripleFault),
        R::EntryFailureGuestState | R::EntryFailureMsrLoading | R::EntryFailureMachineCheck => Err(
            fatal::entry_failure(vcpu, ExitReasonField(reason as u32 | (1 << 31))),
        ),
        other => Err(ExitError::Unexpected(other.name())),
    }
}
