//! The run loop: VMLAUNCH once per processor, then, per VM exit, a call
//! of the fast half of exit handling (and, for all but the hot exits, of
//! the slow half) made by the exit stub ([`crate::arch::run`]) on that
//! processor's monitor stack, until the guest's Exit hypercall or a fatal
//! exit ends the run.
//!
//! On **one processor** (no application processor joined) the run state
//! itself is at HOST_RSP, as before issue 17: the stub stores the guest's
//! registers into its virtual CPU and [`okernel_exit_fast`] /
//! [`okernel_exit_slow`] work on it directly — no lock, nothing moved.
//! On **several**, the layout below, with the `_shared` handlers and
//! their stub (`launch` picks one before VMLAUNCH).
//!
//! Every processor that runs the guest (the bootstrap processor and each
//! application processor that joined, [`super::ap`]) has a [`CpuFrame`]
//! at the top of its own host stack, whose address is its HOST_RSP: the
//! stub stores the guest's registers into it (they are its first field)
//! and hands its address to the handlers. What the exits work on — the
//! policy, the views, the audit log, the counters — is one [`RunState`],
//! shared by every processor behind one lock ([`SharedRun`]): an exit
//! takes the lock, moves this processor's own state (the guest's
//! registers and its [`PerCpu`]: context, console timer, policy
//! generation, start by SIPI) into the shared virtual CPU, runs the handlers, moves it back and releases the lock
//! before the stub resumes the guest. Exits are therefore serialized, and
//! no lock is held across a VM entry (issue 17). The VMCS the handlers
//! read and write is the processor's current one: `RealVmcs` is a handle
//! to whatever VMCS is current on the processor that runs the exit.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering};

use okernel_abi::result::Outcome;
use spin::mutex::SpinMutex;

use super::ReportFn;
use super::ept_view::PoolFrames;
use super::presence::PRESENCE;
use crate::arch::run::{RESUME, RESUME_RBX, SLOW};
use crate::exit::{self, FastPath};
use crate::fmt::FixedString;
use crate::hw::phys::IdentityMap;
use crate::hw::real::{RealCpu, RealVmcs};
use crate::mem::ViewMemory;
use crate::policy::Protection;
use crate::policy::views::Views;
use crate::vcpu::hooks::SlowExit;
use crate::vcpu::timer::ConsoleTimer;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::error::VmFail;
use crate::vmx::regs::GuestRegisters;

/// Guest memory of the run: the base EPT view (whose tables the processor
/// uses) over the loader's identity map (tracked in a fuzz build:
/// [`super::seam::RunMemory`]).
pub(super) type MonitorMemory = super::seam::RunMemory<ViewMemory<PoolFrames, IdentityMap>>;

/// The virtual CPU of the run.
pub(super) type MonitorVcpu = Vcpu<RealVmcs, RealCpu, Protection, MonitorMemory>;

/// The monitor's state for the whole run, shared by every processor.
/// `repr(C)` with the virtual CPU (and so its registers) first: on one
/// processor HOST_RSP is this state's registers (`solo`).
#[repr(C)]
pub(super) struct RunState {
    /// The shared virtual CPU: while a processor's exit holds the lock,
    /// its registers, context and timer are this processor's.
    pub(super) vcpu: MonitorVcpu,
    /// Ends the run.
    pub(super) report: ReportFn,
    /// On one processor, what the fast half of exit handling left to the
    /// slow half (on several, each frame's [`CpuFrame::pending`]).
    pub(super) pending: Pending,
}

/// The run state behind the run's lock.
pub(super) type SharedRun = SpinMutex<RunState>;

/// What a processor keeps of its own between exits; moved into the
/// shared virtual CPU for the length of an exit.
#[derive(Debug, Clone, Copy)]
pub(super) struct PerCpu {
    /// The context this processor runs in (its VMCS's EPTP is that
    /// context's view).
    pub(super) context: u16,
    /// Its console timer (the preemption-timer controls of its VMCS).
    pub(super) timer: ConsoleTimer,
    /// The policy generation its VMCS and TLB reflect
    /// (`crate::exit::vmcs_sync`).
    pub(super) seen_generation: u64,
    /// Its start by SIPI (`crate::exit::sipi`).
    pub(super) startup: crate::vcpu::startup::Startup,
}

impl PerCpu {
    /// A processor's state before its first exit: the trusted context,
    /// `timer` as its VMCS has it (armed where the launch armed the poll).
    pub(super) fn new(timer: ConsoleTimer, startup: crate::vcpu::startup::Startup) -> Self {
        Self {
            context: 0,
            seen_generation: 0,
            startup,
            timer,
        }
    }
}

/// One processor's place at HOST_RSP: the register block the exit stub
/// fills, then where its exits find the run.
#[repr(C)]
pub(super) struct CpuFrame {
    /// First: the stub stores the guest's registers at HOST_RSP.
    pub(super) regs: GuestRegisters,
    /// The run.
    pub(super) run: NonNull<SharedRun>,
    /// What the fast half of exit handling left to the slow half.
    pub(super) pending: Pending,
    /// This processor's own state.
    pub(super) own: PerCpu,
    /// Its number in the shootdown's [`PRESENCE`] (0 the
    /// bootstrap processor, slot + 1 an application processor).
    pub(super) cpu: usize,
}

/// The registers the exit stub stores before the fast half (System V's
/// caller-saved ones, by SDM number: RAX, RCX, RDX, RSI, RDI, R8–R11),
/// and RBX, the one more the fast half may write (`crate::arch::run`).
const FAST_IN: [usize; 9] = [0, 1, 2, 6, 7, 8, 9, 10, 11];
const RBX: usize = 3;

/// Which registers an exit moves: those the fast half reads and writes,
/// or all of them (the slow half, and the failure paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Regs {
    Fast,
    All,
}

impl CpuFrame {
    /// Moves this processor's state into the shared virtual CPU (the
    /// caller holds the lock).
    #[inline(always)]
    fn enter(&self, vcpu: &mut MonitorVcpu, regs: Regs) {
        match regs {
            Regs::Fast => {
                for i in FAST_IN {
                    vcpu.regs.gpr[i] = self.regs.gpr[i];
                }
            }
            Regs::All => vcpu.regs = self.regs,
        }
        vcpu.timer = self.own.timer;
        vcpu.cpu_index = self.cpu;
        vcpu.seen_generation = self.own.seen_generation;
        vcpu.startup = self.own.startup;
        if crate::seam::PER_CPU_CONTEXT && vcpu.policy.current != self.own.context {
            vcpu.policy.current = self.own.context;
            vcpu.memory.set_current(self.own.context);
        }
    }

    /// Moves it back, with what the exit changed (the caller still holds
    /// the lock).
    #[inline(always)]
    fn leave(&mut self, vcpu: &mut MonitorVcpu, regs: Regs) {
        match regs {
            Regs::Fast => {
                for i in FAST_IN {
                    self.regs.gpr[i] = vcpu.regs.gpr[i];
                }
                self.regs.gpr[RBX] = vcpu.regs.gpr[RBX];
            }
            Regs::All => self.regs = vcpu.regs,
        }
        self.own.timer = vcpu.timer;
        self.own.seen_generation = vcpu.seen_generation;
        self.own.startup = vcpu.startup;
        if self.own.context != vcpu.policy.current {
            vcpu.policy.moved(self.own.context, vcpu.policy.current);
            self.own.context = vcpu.policy.current;
        }
    }
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

/// The run, for the crash paths ([`print_unprinted_audit_lines`]); null
/// until the run state is written.
static CRASH_VIEW: AtomicPtr<SharedRun> = AtomicPtr::new(core::ptr::null_mut());

/// Records where the run state lives, once it is written.
pub(super) fn publish_for_crash_report(run: *mut SharedRun) {
    CRASH_VIEW.store(run, Ordering::Release);
}

/// Prints the audit lines the console still owes (`policy::audit`'s
/// queue), for the loader's panic and exception handlers: a monitor fault
/// or panic would otherwise take with it up to a queue of lines that are
/// likely what led to it. Nothing before the run state exists.
///
/// # Safety
/// Called only on the path to the run's end from a panic or exception
/// handler that never returns, after the console's lock was broken
/// (`okernel_console::break_lock`): the code it interrupted, which may
/// have held the run's lock, never runs again. The lock is not taken (the
/// processor that panicked may hold it); another processor inside an exit
/// at the same moment may print the same lines or see the queue change
/// under it — the machine is stopping, and a line may come out twice or
/// be missing; nothing else is read.
pub unsafe fn print_unprinted_audit_lines() {
    let run = CRASH_VIEW.load(Ordering::Acquire);
    if run.is_null() {
        return;
    }
    // SAFETY: the caller's contract: whatever held the run state was
    // interrupted for good; the pointer is the run `launch` wrote, which
    // is never freed.
    let audit = unsafe { &mut (*(*run).as_mut_ptr()).vcpu.audit };
    audit.print_pending();
}

const _: () = assert!(core::mem::offset_of!(CpuFrame, regs) == 0);

/// Takes the run's lock for an exit of the processor whose frame is at
/// `regs` and moves its state into the shared virtual CPU.
///
/// # Safety
/// `regs` is HOST_RSP as `launch` (or `ap::join`) set it: this
/// processor's [`CpuFrame`], with the guest's registers just stored into
/// it, and nothing else referring to it while the handler runs.
#[inline(always)]
unsafe fn lock<'a>(regs: *mut GuestRegisters, moved: Regs) -> (&'a mut CpuFrame, &'a mut RunState) {
    // SAFETY: the caller's contract: `regs` is this processor's CpuFrame
    // (`repr(C)`, registers at offset 0). Nothing else holds a reference
    // to it: the processor gave it up at VMLAUNCH, and exits do not nest
    // (the guest is stopped while the handler runs, and the monitor runs
    // with interrupts off: a VM exit clears RFLAGS.IF).
    let frame = unsafe { &mut *regs.cast::<CpuFrame>() };
    // Before the lock: a processor waiting for the others to leave the
    // guest holds it (`super::presence`).
    PRESENCE.left(frame.cpu);
    // SAFETY: `run` is the run's shared state, written once before any
    // processor entered the guest and never freed.
    let run = unsafe { frame.run.as_ref() };
    // Held until [`unlock`], before the stub resumes the guest: the fast
    // half hands it to the slow half of the same exit. Not while another
    // processor's patch step is open (`Presence::set_stepping`): given
    // back, and taken again once the step closed.
    let state = loop {
        let guard = run.lock();
        if !PRESENCE.step_elsewhere(frame.cpu) {
            break spin::mutex::SpinMutexGuard::leak(guard);
        }
        drop(guard);
        if let Err(cpu) = PRESENCE.wait_step(frame.cpu, SHOOTDOWN_PATIENCE, crate::arch::cpu::tsc) {
            // A step that never closes: this processor may not enter
            // the guest while its page is open. Fail closed.
            let state = spin::mutex::SpinMutexGuard::leak(run.lock());
            frame.enter(&mut state.vcpu, moved);
            fatal_exit(state, ExitError::Shootdown(cpu));
        }
    };
    frame.enter(&mut state.vcpu, moved);
    (frame, state)
}

/// Moves this processor's state back and releases the run's lock.
///
/// # Safety
/// The caller took the lock with [`lock`] for this exit, and uses
/// `state` no more.
#[inline(always)]
unsafe fn unlock(frame: &mut CpuFrame, state: &mut RunState, moved: Regs) {
    frame.leave(&mut state.vcpu, moved);
    // Only a slow exit (SIPI, INIT) can leave the processor waiting for
    // its SIPI, where it runs nothing and its timer does not exit.
    let running = moved == Regs::Fast || !waits_for_sipi(&state.vcpu);
    PRESENCE.entering(frame.cpu, running);
    // SAFETY: the caller's contract: this exit holds the lock (its guard
    // was leaked by `lock`), and nothing of it is used after this.
    unsafe { frame.run.as_ref().force_unlock() };
}

/// The monitor's entry point on its own stack, below this processor's
/// [`CpuFrame`] at `arg`: VMLAUNCH. Returns to nobody: a successful VM
/// entry continues at the exit stub, a failed one ends the run.
pub(super) extern "C" fn monitor_main(arg: *mut u8) -> ! {
    let frame = arg.cast::<CpuFrame>();
    // SAFETY: `launch` (or `ap::join`) placed the CpuFrame at the top of
    // this stack, 16-byte aligned, wrote HOST_RSP = its address and
    // HOST_RIP = the exit stub, and completed the VMCS (host state from
    // this CPU, controls, guest state) with an EPT view that excludes all
    // monitor memory. This frame is never used again after a successful
    // VMLAUNCH.
    let failed = unsafe { crate::arch::run::vm_launch(&raw mut (*frame).regs) };
    // SAFETY: the entry failed, so no exit of this processor ran or runs:
    // the frame is this code's alone; the run is shared, taken below.
    let (_, state) = unsafe { lock(&raw mut (*frame).regs, Regs::All) };
    entry_failed(state, "VMLAUNCH", failed)
}

/// The fast half of exit handling ([`exit::handle_fast_shared`]); called by the
/// exit stub only, with the caller-saved registers in the block. Returns
/// [`RESUME`] or [`RESUME_RBX`] to resume the guest, or [`SLOW`] to have
/// the stub store the other registers and call [`okernel_exit_slow_shared`],
/// which finds its work in [`CpuFrame::pending`] (the run's lock stays
/// held in between).
///
/// # Safety
/// `regs` must be HOST_RSP as `launch` (or `ap::join`) set it: the
/// address of this processor's [`CpuFrame`] at the top of its host stack,
/// with the guest's registers just stored into it, and nothing else
/// referring to it while the handler runs.
#[unsafe(no_mangle)]
unsafe extern "C" fn okernel_exit_fast_shared(regs: *mut GuestRegisters) -> u32 {
    // SAFETY: the caller's contract.
    let (frame, state) = unsafe { lock(regs, Regs::Fast) };
    // Nothing here calls out: the slow half is reached by returning.
    let pending = match exit::handle_fast_shared(&mut state.vcpu) {
        FastPath::Resumed { wrote_rbx } => {
            // SAFETY: this exit took the lock above and is done with the
            // state.
            unsafe { unlock(frame, state, Regs::Fast) };
            return if wrote_rbx { RESUME_RBX } else { RESUME };
        }
        FastPath::Failed(e) => Pending::Failed(e),
        FastPath::Slow(rest) => Pending::Slow(rest),
    };
    // The slow half: what the fast half changed goes back to the frame
    // (the slow half takes the whole register file from there, once the
    // stub has stored the rest); the lock stays held.
    frame.leave(&mut state.vcpu, Regs::Fast);
    frame.pending = pending;
    SLOW
}

/// The slow half of exit handling; called by the exit stub only, after
/// [`okernel_exit_fast_shared`] asked for it (still holding the run's lock),
/// with every register in the block. Returns to resume the guest; a run
/// that ends does not return.
///
/// # Safety
/// As for [`okernel_exit_fast_shared`], and the fast half of this exit returned
/// [`SLOW`].
#[unsafe(no_mangle)]
unsafe extern "C" fn okernel_exit_slow_shared(regs: *mut GuestRegisters) {
    // SAFETY: as in `okernel_exit_fast_shared`; the lock is this exit's (taken
    // by its fast half, which leaked the guard), so the state is this
    // processor's to use until `unlock`.
    let frame = unsafe { &mut *regs.cast::<CpuFrame>() };
    // SAFETY: as above.
    let state = unsafe { &mut *frame.run.as_ref().as_mut_ptr() };
    // The callee-saved registers were stored after the fast half ran.
    frame.enter(&mut state.vcpu, Regs::All);
    let pending = core::mem::replace(&mut frame.pending, Pending::Nothing);
    let generation = state.vcpu.policy.generation;
    slow_half(state, pending);
    PRESENCE.set_stepping(frame.cpu, exit::patch_step::open(&mut state.vcpu));
    if crate::seam::SHOOTDOWN && state.vcpu.policy.generation != generation {
        shootdown(state, frame.cpu);
    }
    // SAFETY: this exit holds the lock and is done with the state.
    unsafe { unlock(frame, state, Regs::All) }
}

/// How long a processor that changed the policy waits for the others to
/// leave the guest, in TSC ticks: 512 ticks of their VMX-preemption timer
/// (`crate::vcpu::timer::POLL_TSC`), which exits each at least once a
/// tick.
const SHOOTDOWN_PATIENCE: u64 = 512 * crate::vcpu::timer::POLL_TSC;

/// [`crate::vcpu::Vcpu::stop_others`] of a run on several processors:
/// every other processor out of the guest, and kept out, before processor
/// `me` opens a patch step's page (`super::presence`).
pub(super) fn stop_others(me: usize) -> Result<(), usize> {
    PRESENCE.stop_for_step(me, SHOOTDOWN_PATIENCE, crate::arch::cpu::tsc)
}

/// This exit changed the policy: waits, holding the run's lock, until
/// every other processor has left the guest (`super::presence`), so that each
/// catches up before it enters it again; ends the run if one does not.
fn shootdown(state: &mut RunState, me: usize) {
    if let Err(cpu) = PRESENCE.wait_out(me, SHOOTDOWN_PATIENCE, crate::arch::cpu::tsc) {
        fatal_exit(state, ExitError::Shootdown(cpu));
    }
}

/// Whether the current VMCS enters the guest in the wait-for-SIPI state.
fn waits_for_sipi(vcpu: &MonitorVcpu) -> bool {
    use crate::hw::Vmcs;
    vcpu.vmcs
        .read(crate::vmx::fields::Guest32::ActivityState)
        .is_ok_and(|a| a == crate::vcpu::startup::ActivityState::WaitForSipi as u32)
}

/// Reports a VMRESUME that failed; called by the exit stub only.
///
/// # Safety
/// As for [`okernel_exit_fast_shared`]; `rflags` is RFLAGS right after the
/// VMRESUME.
#[unsafe(no_mangle)]
unsafe extern "C" fn okernel_vmresume_failed_shared(regs: *mut GuestRegisters, rflags: u64) -> ! {
    // SAFETY: as in `okernel_exit_fast_shared` (the exit that led here released
    // the lock before its VMRESUME).
    let (_, state) = unsafe { lock(regs, Regs::All) };
    entry_failed(state, "VMRESUME", crate::arch::run::entry_failure(rflags))
}

// One processor: the run state itself at HOST_RSP, no lock, nothing
// moved (the virtual CPU's registers, context and timer are the one
// processor's). The exit stub `okernel_vm_exit` calls these.

/// The monitor's entry point on one processor, on its own stack below the
/// [`RunState`] at `arg`: VMLAUNCH with HOST_RSP = its registers.
pub(super) extern "C" fn monitor_main_solo(arg: *mut u8) -> ! {
    let state = arg.cast::<RunState>();
    // SAFETY: `launch` wrote the run state and HOST_RSP = its registers
    // (the first field of its first field), HOST_RIP = the one-processor
    // stub, and completed the VMCS; no other processor runs the guest.
    let failed = unsafe { crate::arch::run::vm_launch(&raw mut (*state).vcpu.regs) };
    // SAFETY: the entry failed: no exit ran or runs.
    entry_failed(unsafe { &mut *state }, "VMLAUNCH", failed)
}

/// [`okernel_exit_fast_shared`] on one processor.
///
/// # Safety
/// `regs` is HOST_RSP as `launch` set it on one processor: the run
/// state's registers, just stored, and nothing else refers to the run
/// state while the handler runs (exits do not nest; no other processor).
#[unsafe(no_mangle)]
unsafe extern "C" fn okernel_exit_fast(regs: *mut GuestRegisters) -> u32 {
    // SAFETY: the caller's contract; the registers are at offset 0 of the
    // virtual CPU, at offset 0 of the `repr(C)` run state.
    let state = unsafe { &mut *regs.cast::<RunState>() };
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

/// [`okernel_exit_slow_shared`] on one processor.
///
/// # Safety
/// As for [`okernel_exit_fast`].
#[unsafe(no_mangle)]
unsafe extern "C" fn okernel_exit_slow(regs: *mut GuestRegisters) {
    // SAFETY: as in `okernel_exit_fast`.
    let state = unsafe { &mut *regs.cast::<RunState>() };
    let pending = core::mem::replace(&mut state.pending, Pending::Nothing);
    slow_half(state, pending);
}

/// [`okernel_vmresume_failed_shared`] on one processor.
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

const _: () = assert!(core::mem::offset_of!(RunState, vcpu) == 0);
const _: () = assert!(core::mem::offset_of!(MonitorVcpu, regs) == 0);

/// Finishes an exit the fast half left as `pending`. Returns only to
/// resume the guest; a run that ends does not return.
fn slow_half(state: &mut RunState, pending: Pending) {
    let result = match pending {
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
