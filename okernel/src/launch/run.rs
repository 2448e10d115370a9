//! The run loop: VMLAUNCH once, then, per VM exit, a call of
//! [`okernel_exit_fast`] (and, for all but the hot exits, of
//! [`okernel_exit_slow`]) made by the exit stub ([`crate::arch::run`]) on
//! the monitor's stack, until the guest's Exit hypercall or a fatal exit
//! ends the run.
//!
//! Everything the exits need lives in one [`RunState`] at the top of the
//! host stack, whose address is HOST_RSP: the stub stores the guest's
//! registers into it (they are its first field) and hands its address to
//! the handlers, which run below it and return to the stub to resume the
//! guest.

use core::sync::atomic::{AtomicPtr, Ordering};

use okernel_abi::result::Outcome;

use super::ReportFn;
use super::ept_view::PoolFrames;
use crate::arch::run::{RESUME, RESUME_RBX, SLOW};
use crate::exit::{self, FastPath};
use crate::fmt::FixedString;
use crate::hw::phys::IdentityMap;
use crate::hw::real::{RealCpu, RealVmcs};
use crate::mem::ViewMemory;
use crate::policy::Protection;
use crate::vcpu::hooks::SlowExit;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::error::VmFail;
use crate::vmx::regs::GuestRegisters;

/// Guest memory of the run: the base EPT view (whose tables the processor
/// uses) over the loader's identity map (tracked in a fuzz build:
/// [`super::seam::RunMemory`]).
pub(super) type MonitorMemory = super::seam::RunMemory<ViewMemory<PoolFrames, IdentityMap>>;

/// The virtual CPU of the run.
pub(super) type MonitorVcpu = Vcpu<RealVmcs, RealCpu, Protection, MonitorMemory>;

/// The monitor's state for the whole run, at HOST_RSP.
#[repr(C)]
pub(super) struct RunState {
    /// First, so that its registers (its own first field) sit at HOST_RSP.
    pub(super) vcpu: MonitorVcpu,
    /// Ends the run.
    pub(super) report: ReportFn,
    /// What the fast half of exit handling left to the slow half.
    pub(super) pending: Pending,
}

/// Work the fast half of exit handling leaves to the slow half.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pending {
    /// None (between exits).
    Nothing,
    /// Finish this exit.
    Slow(SlowExit),
    /// The exit failed: report it.
    Failed(ExitError),
}

/// The run state, for the crash paths ([`print_unprinted_audit_lines`]);
/// null until the run state is written.
static CRASH_VIEW: AtomicPtr<RunState> = AtomicPtr::new(core::ptr::null_mut());

/// Records where the run state lives, once it is written.
pub(super) fn publish_for_crash_report(state: *mut RunState) {
    CRASH_VIEW.store(state, Ordering::Release);
}

/// Prints the audit lines the console still owes (`policy::audit`'s
/// queue), for the loader's panic and exception handlers: a monitor fault
/// or panic would otherwise take with it up to a queue of lines that are
/// likely what led to it. Nothing before the run state exists.
///
/// # Safety
/// Called only on the path to the run's end from a panic or exception
/// handler that never returns, on the one processor that runs the guest,
/// after the console's lock was broken (`okernel_console::break_lock`):
/// the code it interrupted, which may have held the run state, never runs
/// again. A fault in the middle of queueing may leave one line printed
/// twice or missing; nothing else is read.
pub unsafe fn print_unprinted_audit_lines() {
    let state = CRASH_VIEW.load(Ordering::Acquire);
    if state.is_null() {
        return;
    }
    // SAFETY: the caller's contract: whatever held the run state was
    // interrupted for good, so this is its only user now; the pointer is
    // the run state `launch` wrote, which is never freed.
    let audit = unsafe { &mut (*state).vcpu.audit };
    audit.print_pending();
}

const _: () = assert!(core::mem::offset_of!(RunState, vcpu) == 0);
const _: () = assert!(core::mem::offset_of!(MonitorVcpu, regs) == 0);

/// The monitor's entry point on its own stack, below the [`RunState`] at
/// `arg`: VMLAUNCH. Returns to nobody: a successful VM entry continues at
/// the exit stub, a failed one ends the run.
pub(super) extern "C" fn monitor_main(arg: *mut u8) -> ! {
    let state = arg.cast::<RunState>();
    // SAFETY: `launch` placed the RunState at the top of this stack,
    // 16-byte aligned, wrote HOST_RSP = its address and HOST_RIP = the exit
    // stub, and completed the VMCS (host state from this CPU, controls,
    // guest state) with an EPT view that excludes all monitor memory. This
    // frame is never used again after a successful VMLAUNCH.
    let failed = unsafe { crate::arch::run::vm_launch(&raw mut (*state).vcpu.regs) };
    // SAFETY: the entry failed, so no exit handler ran or runs: this is the
    // only user of the RunState.
    entry_failed(unsafe { &mut *state }, "VMLAUNCH", failed)
}

/// The fast half of exit handling ([`exit::handle_fast`]); called by the
/// exit stub only, with the caller-saved registers in the block. Returns
/// [`RESUME`] or [`RESUME_RBX`] to resume the guest, or [`SLOW`] to have
/// the stub store the other registers and call [`okernel_exit_slow`],
/// which finds its work in [`RunState::pending`].
///
/// # Safety
/// `regs` must be HOST_RSP as `launch` set it: the address of the
/// [`RunState`] at the top of the host stack, with the guest's registers
/// just stored into it, and nothing else referring to it while the handler
/// runs.
#[unsafe(no_mangle)]
unsafe extern "C" fn okernel_exit_fast(regs: *mut GuestRegisters) -> u32 {
    // SAFETY: the caller's contract: `regs` is the RunState (`repr(C)`, the
    // registers are its first field at offset 0). Nothing else holds a
    // reference to it: `monitor_main` gave it up at VMLAUNCH, and exits do
    // not nest (the guest is stopped while the handler runs, and the
    // monitor runs with interrupts off: a VM exit clears RFLAGS.IF).
    let state = unsafe { &mut *regs.cast::<RunState>() };
    // Nothing here calls out: the slow half is reached by returning, so
    // this path needs no stack frame and no saved registers.
    match exit::handle_fast(&mut state.vcpu) {
        FastPath::Resumed { wrote_rbx: false } => RESUME,
        FastPath::Resumed { wrote_rbx: true } => RESUME_RBX,
        FastPath::Failed(e) => {
            state.pending = Pending::Failed(e);
            SLOW
        }
        FastPath::Slow(rest) => {
            state.pending = Pending::Slow(rest);
            SLOW
        }
    }
}

/// The slow half of exit handling; called by the exit stub only, after
/// [`okernel_exit_fast`] asked for it, with every register in the block.
/// Returns to resume the guest; a run that ends does not return.
///
/// # Safety
/// As for [`okernel_exit_fast`].
#[unsafe(no_mangle)]
unsafe extern "C" fn okernel_exit_slow(regs: *mut GuestRegisters) {
    // SAFETY: as in `okernel_exit_fast`.
    let state = unsafe { &mut *regs.cast::<RunState>() };
    let result = match core::mem::replace(&mut state.pending, Pending::Nothing) {
        Pending::Slow(rest) => exit::handle_slow(&mut state.vcpu, rest),
        Pending::Failed(e) => Err(e),
        Pending::Nothing => unreachable!("slow exit path entered without work"),
    };
    match result {
        Ok(ExitAction::Resume) => {}
        Ok(ExitAction::Stop(outcome)) => guest_ended(state, outcome),
        Err(e) => fatal_exit(state, e),
    }
}

/// Reports a VMRESUME that failed; called by the exit stub only.
///
/// # Safety
/// As for [`okernel_exit_fast`]; `rflags` is RFLAGS right after the
/// VMRESUME.
#[unsafe(no_mangle)]
unsafe extern "C" fn okernel_vmresume_failed(regs: *mut GuestRegisters, rflags: u64) -> ! {
    // SAFETY: as in `okernel_exit_fast`.
    let state = unsafe { &mut *regs.cast::<RunState>() };
    entry_failed(state, "VMRESUME", crate::arch::run::entry_failure(rflags))
}

/// A failed VMLAUNCH/VMRESUME: the guest state and the §31.4 error.
#[cold]
fn entry_failed(state: &mut RunState, op: &str, e: VmFail) -> ! {
    state.vcpu.audit.print_pending();
    log::error!("okernel: {op} failed: {e}");
    exit::fatal::log_guest_state(&state.vcpu);
    let msg = FixedString::<160>::from_fmt(format_args!("{op} failed: {e}"));
    finish(state, Outcome::Fail, msg.as_str())
}

/// The guest's Exit hypercall: the marker carries the guest's reason
/// (`guest: <reason>`) if it gave one.
#[cold]
#[inline(never)]
fn guest_ended(state: &mut RunState, outcome: Outcome) -> ! {
    state.vcpu.audit.print_pending();
    let reason = &state.vcpu.guest_reason;
    // The guest's own words go only into the result line (after
    // `OKERNEL-RESULT: <outcome>: `), never at the start of another line
    // of the monitor's, which runners read as the monitor's account.
    log::info!(
        "okernel: guest ended the run ({}), reason of {} bytes",
        outcome.word(),
        reason.as_str().len()
    );
    let msg = if reason.is_empty() {
        FixedString::<160>::from_fmt(format_args!("guest ended the run ({})", outcome.word()))
    } else {
        FixedString::<160>::from_fmt(format_args!("guest: {reason}"))
    };
    finish(state, outcome, msg.as_str())
}

/// A fatal exit: the guest state and the error.
#[cold]
#[inline(never)]
fn fatal_exit(state: &mut RunState, e: ExitError) -> ! {
    state.vcpu.audit.print_pending();
    log::error!("okernel: fatal VM exit: {e}");
    exit::fatal::log_guest_state(&state.vcpu);
    let msg = FixedString::<160>::from_fmt(format_args!("{e}"));
    finish(state, Outcome::Fail, msg.as_str())
}

/// Prints the exit counters and the audit summary, then ends the run
/// (the callers printed the audit lines still waiting).
fn finish(state: &RunState, outcome: Outcome, msg: &str) -> ! {
    state.vcpu.counters.log();
    log::info!(
        "okernel: audit log: {} records ({} dropped from the ring; {} console lines printed in the exit that queued a line, the queue full)",
        state.vcpu.audit.total(),
        state.vcpu.audit.dropped(),
        state.vcpu.audit.printed_in_exit()
    );
    (state.report)(outcome, msg)
}
