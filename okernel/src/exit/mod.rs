//! VM-exit handling: one free function per exit reason, each run on the host
//! against `crate::hw::fake` in the tests.
//!
//! [`handle_exit`] reads the exit reason, counts it, and dispatches. A
//! handler returns [`ExitAction::Resume`] (RIP advanced or an event
//! injected), [`ExitAction::Stop`] (the guest asked to end the run), or an
//! [`ExitError`]: a fatal condition the run loop reports with the guest
//! state and ends with a failure — never a silent hang.
//!
//! VMCALL goes down to `crate::hypercall`, whose answer says what becomes
//! of the instruction ([`Vmcall`]); this layer carries it out
//! (`complete_vmcall`; the Null call's advance in line in
//! [`handle_fast`]): the RIP advance ([`rip`]) is this layer's alone.
//!
//! The guest memory's [`ExitHooks`] see each exit once the handler has
//! decided: [`ExitHooks::fast_resumed`] after the two fast exits of
//! [`handle_fast`], [`ExitHooks::slow`] around [`handle_slow`]. The production memories' hooks do nothing; a fuzz
//! build's record the exit's coverage key (`crate::fuzz::observe`).
//!
//! The virtual CPU the handlers work on, with its guest-state helpers, and
//! [`ExitAction`]/[`ExitError`] are the layer below (`crate::vcpu`), so
//! that the hypercalls this layer dispatches to share them without
//! importing it.
//!
//! [`ExitHooks`]: crate::vcpu::hooks::ExitHooks
//! [`ExitHooks::fast_resumed`]: crate::vcpu::hooks::ExitHooks::fast_resumed
//! [`ExitHooks::slow`]: crate::vcpu::hooks::ExitHooks::slow

// Safe code only above the hardware layers (`hw`, `arch`, `launch`):
// issue 14, DESIGN.md §6.
#![forbid(unsafe_code)]

pub mod apic;
pub mod console_tick;
pub mod cpuid;
pub mod cr;
pub mod deliver;
pub mod descriptor;
pub mod ept_violation;
pub mod events;
pub mod fatal;
pub mod io;
pub mod linear_store;
pub mod mmio_store;
pub mod msr;
pub mod msr_shared;
pub mod msr_table;
pub mod other;
pub mod patch_step;
pub mod pci;
pub mod port_table;
pub mod rip;
pub mod simple;
pub mod sipi;
pub mod stop;
pub mod vmcs_sync;
pub mod xapic;
pub mod xsetbv;

// The platform's port rules live with the virtual CPU that holds them;
// the loader names them by this path.
pub use crate::vcpu::platform_ports;

use crate::hw::{Cpu, Vmcs};
use crate::hypercall::{Fast, Vmcall};
use crate::policy::Policy;
use crate::vcpu::hooks::SlowExit;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::startup::Startup;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::exit_reason::{ExitReason, ExitReasonField};
use crate::vmx::fields::ReadOnly32;

/// Handles the exit that just happened on a processor of a run on several
/// (what one processor alone needs is the same without [`catch_up`], a
/// no-op there): reads the exit reason, counts it, dispatches it.
pub fn handle_exit<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    match handle_fast_shared(vcpu) {
        FastPath::Resumed { .. } => Ok(ExitAction::Resume),
        FastPath::Failed(e) => Err(e),
        FastPath::Slow(rest) => handle_slow(vcpu, rest),
    }
}

/// What [`handle_fast`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastPath {
    /// It handled the exit and the guest resumes. The fast handlers read
    /// only RAX, RCX, RDX, RSI, RDI and R8–R11 of [`Vcpu::regs`] (the
    /// caller-saved registers of System V) and write only those and, when
    /// `wrote_rbx`, RBX: the run loop's exit stub relies on it.
    Resumed {
        /// Whether RBX was written (CPUID).
        wrote_rbx: bool,
    },
    /// Handling failed (fatal).
    Failed(ExitError),
    /// [`handle_slow`] finishes the exit.
    Slow(SlowExit),
}

/// What an exit of a processor in a run on several does first (issue 17):
/// clears the blocking by SMI Bochs 2.7 saves on a processor a SIPI
/// started ([`sipi::clear_saved_smi_blocking`]), and brings the
/// processor's VMCS and TLB up to the policy's generation when another
/// processor changed it ([`vmcs_sync::catch_up`]). On one processor
/// neither can be due: its own changes keep its generation, and no SIPI
/// started it.
#[inline(always)]
pub fn catch_up<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<(), ExitError> {
    if matches!(vcpu.startup, Startup::Started | Startup::InitPassedOver) {
        sipi::clear_saved_smi_blocking(vcpu)?;
    }
    if vcpu.seen_generation != vcpu.policy.generation() {
        core::hint::cold_path();
        vmcs_sync::catch_up(vcpu)?;
    }
    Ok(())
}

/// [`catch_up`], then [`handle_fast`]: the fast half of an exit in a run
/// on several processors.
#[inline(always)]
pub fn handle_fast_shared<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> FastPath {
    match catch_up(vcpu) {
        Ok(()) => handle_fast(vcpu),
        Err(e) => FastPath::Failed(e),
    }
}

/// The first half of [`handle_exit`], inlined into the run loop: reads the
/// exit reason, and handles in line the exits a guest takes on its hot
/// paths — the Null hypercall and CPUID, matched on the whole exit-reason
/// field (basic reason, no VM-entry failure bit 31, no modifier bits).
/// Other hypercalls and every other value are left to [`handle_slow`],
/// which counts and dispatches every reason the same way.
#[inline(always)]
pub fn handle_fast<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> FastPath {
    const VMCALL: u32 = ExitReason::Vmcall as u32;
    const CPUID: u32 = ExitReason::Cpuid as u32;
    let field = match vcpu.vmcs.read(ReadOnly32::ExitReason) {
        Ok(f) => f,
        Err(e) => {
            core::hint::cold_path();
            return FastPath::Failed(e.into());
        }
    };
    if patch_step::open(vcpu) {
        // An open patch step ends before any exit that is not its own
        // (`dispatch`): no exit takes the fast path around it.
        core::hint::cold_path();
        return FastPath::Slow(SlowExit::Other(ExitReasonField(field)));
    }
    // VMCALL is tested first (one compare for the Null call, two for CPUID).
    if field == VMCALL {
        vcpu.counters.count(ExitReason::Vmcall);
        match crate::hypercall::handle_vmcall_fast(vcpu) {
            // RAX only (Null); the call completed: past the VMCALL.
            Fast::Advance => {
                let r = vcpu.advance_rip();
                resumed(vcpu, r, false)
            }
            Fast::Failed(e) => {
                core::hint::cold_path();
                FastPath::Failed(e)
            }
            Fast::Continue { cpl } => FastPath::Slow(SlowExit::Vmcall { cpl }),
        }
    } else if field == CPUID {
        vcpu.counters.count(ExitReason::Cpuid);
        // EAX and ECX in; EAX, EBX, ECX, EDX out.
        let r = cpuid::handle(vcpu);
        resumed(vcpu, r, true)
    } else {
        core::hint::cold_path();
        FastPath::Slow(SlowExit::Other(ExitReasonField(field)))
    }
}

/// A fast exit's result as [`handle_fast`] returns it, matched in each
/// arm (so that the common case resumes without merging the arms'
/// results first). CPUID writes RBX (`wrote_rbx`); the Null call does not.
#[inline(always)]
fn resumed<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    result: Result<ExitAction, ExitError>,
    wrote_rbx: bool,
) -> FastPath {
    match result {
        Ok(ExitAction::Resume) => {
            M::fast_resumed(vcpu, wrote_rbx);
            FastPath::Resumed { wrote_rbx }
        }
        // Neither Null nor CPUID ends the run.
        Ok(ExitAction::Stop(_)) => unreachable!("a fast exit ended the run"),
        Err(e) => {
            core::hint::cold_path();
            FastPath::Failed(e)
        }
    }
}

/// The second half of [`handle_exit`]: everything [`handle_fast`] left.
#[inline(never)]
pub fn handle_slow<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    rest: SlowExit,
) -> Result<ExitAction, ExitError> {
    let handle = |vcpu: &mut Vcpu<V, C, P, M>| match rest {
        SlowExit::Vmcall { cpl } => vmcall_at(vcpu, cpl),
        SlowExit::Other(field) => handle_any(vcpu, field),
    };
    // The memory's hooks see the exit once the handler decided.
    let action = M::slow(vcpu, rest, handle)?;
    // Lines the exit queued for the console come out on the timer's ticks.
    console_tick::after_slow_exit(vcpu)?;
    Ok(action)
}

/// A VMCALL the fast half left, by a caller at `cpl`: its answer
/// ([`crate::hypercall::handle_vmcall_at`]) carried out. Out of line, as
/// is [`vmcall`]: in line, the RIP advance widened the frame of
/// [`handle_slow`], which every slow exit runs (the bench's EPT
/// violation took two instructions more).
#[inline(never)]
fn vmcall_at<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    cpl: u8,
) -> Result<ExitAction, ExitError> {
    let answer = crate::hypercall::handle_vmcall_at(vcpu, cpl);
    complete_vmcall(vcpu, answer)
}

/// A VMCALL [`dispatch`] sees (the fast half leaves one to it only while
/// a patch step is open): its answer ([`crate::hypercall::handle_vmcall`])
/// carried out.
#[inline(never)]
fn vmcall<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    let answer = crate::hypercall::handle_vmcall(vcpu);
    complete_vmcall(vcpu, answer)
}

/// Carries out a VMCALL's answer ([`crate::hypercall`]'s [`Vmcall`]):
/// past the VMCALL when the call completed ([`Vcpu::advance_rip_in`],
/// with the mode the handler read), nothing more when the guest resumes
/// at a gate, or the run's end.
fn complete_vmcall<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    answer: Result<Vmcall, ExitError>,
) -> Result<ExitAction, ExitError> {
    match answer? {
        Vmcall::Advance { mut mode } => vcpu.advance_rip_in(&mut mode),
        Vmcall::Redirected => Ok(ExitAction::Resume),
        Vmcall::Stop(outcome) => Ok(ExitAction::Stop(outcome)),
    }
}

/// Counts and dispatches an exit whose reason field has been read.
pub fn handle_any<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    field: ExitReasonField,
) -> Result<ExitAction, ExitError> {
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
pub fn dispatch<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    reason: ExitReason,
) -> Result<ExitAction, ExitError> {
    use ExitReason as R;
    // An open patch step ends before any exit that is not its own.
    // (The console's tick is not the guest's: it leaves the step open.)
    if !matches!(
        reason,
        R::EptViolation | R::ExceptionOrNmi | R::MonitorTrapFlag | R::PreemptionTimer
    ) {
        patch_step::abandon(vcpu)?;
    }
    match reason {
        R::Cpuid => cpuid::handle(vcpu),
        R::Rdmsr => msr::handle_rdmsr(vcpu),
        R::Wrmsr => msr::handle_wrmsr(vcpu),
        R::CrAccess => cr::handle(vcpu),
        R::Xsetbv => xsetbv::handle(vcpu),
        R::IoInstruction => io::handle(vcpu),
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
        R::Vmcall => vmcall(vcpu),
        R::Sipi => sipi::handle(vcpu),
        R::PreemptionTimer => {
            patch_step::at_tick(vcpu)?;
            console_tick::tick(vcpu)
        }
        R::Mwait => match console_tick::mwait(vcpu)? {
            Some(action) => Ok(action),
            None => other::handle(vcpu, reason),
        },
        R::EptViolation => ept_violation::handle_violation(vcpu),
        R::MonitorTrapFlag => match patch_step::finish(vcpu)? {
            Some(action) => Ok(action),
            None => other::handle(vcpu, reason),
        },
        R::ExceptionOrNmi => match patch_step::on_exception(vcpu)? {
            Some(action) => Ok(action),
            None => other::handle(vcpu, reason),
        },
        R::GdtrIdtrAccess | R::LdtrTrAccess => descriptor::handle(vcpu, reason),
        R::EptMisconfiguration => Err(ept_violation::misconfiguration(vcpu)),
        R::EntryFailureGuestState | R::EntryFailureMsrLoading | R::EntryFailureMachineCheck => Err(
            fatal::entry_failure(vcpu, ExitReasonField(reason as u32 | (1 << 31))),
        ),
        other => other::handle(vcpu, other),
    }
}
