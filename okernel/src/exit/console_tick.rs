//! The console's tick: while the audit log owes the console lines
//! (`crate::policy::audit`), the VMX-preemption timer
//! ([`crate::vcpu::timer`]) brings the guest back every tick, and each
//! tick prints one line, so a guest that neither prints nor ends still
//! gets its lines out, at most one line's UART time per tick. The exit
//! that queued the lines arms the timer ([`after_slow_exit`]); the tick
//! disarms it once the queue is empty.
//!
//! | Exit | Outcome |
//! |---|---|
//! | VMX-preemption timer expired (52) | one waiting line printed; the timer re-armed while lines wait, else disarmed; the guest resumes where it was (trap-like: nothing left undone, SDM Vol. 3C §26.5.1) |
//! | MWAIT (36), while the timer is armed | the waiting lines printed, the timer and MWAIT exiting cleared; the guest resumes at the MWAIT, which now runs (fault-like: the instruction did not execute, §26.1.3): a C-state deeper than C2 would stop the timer |
//! | MWAIT (36), while the timer polls (several processors) | the waiting lines printed; the MWAIT is passed over (RIP past it: an MWAIT may end at any time, SDM Vol. 2B "MWAIT", so the guest's idle loop polls again); the timer stays armed |
//!
//! With several processors the timer polls ([`ConsoleTimer::polling`]):
//! armed for good, so the tick re-arms it whether or not lines wait.
//!
//! [`ConsoleTimer::polling`]: crate::vcpu::timer::ConsoleTimer::polling

use super::{ExitAction, ExitError, Vcpu};
use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::timer::ConsoleTimer;
use crate::vmx::controls::{ExitControls, PinBased, PrimaryProcBased};
use crate::vmx::error::VmFail;
use crate::vmx::fields::{Control32, Guest32};

/// Arms the timer when the exit just handled left lines waiting; without
/// the timer, prints them now (as every exit did before the queue: a
/// guest that then never prints, exits or ends must not keep them).
#[inline]
pub fn after_slow_exit<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<(), ExitError> {
    if vcpu.timer.armed || !vcpu.audit.has_pending() {
        return Ok(());
    }
    if vcpu.timer.ticks().is_none() {
        vcpu.audit.print_pending();
        return Ok(());
    }
    set(vcpu, true)
}

/// The timer's exit: one line out, then the timer re-armed or disarmed.
pub fn tick<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    vcpu.audit.print_next();
    // The saved count is 0 now: reloaded, or the controls cleared.
    set(vcpu, vcpu.audit.has_pending() || vcpu.timer.poll)?;
    Ok(ExitAction::Resume)
}

/// An MWAIT exit (only while the timer is armed, [`ConsoleTimer::mwait`]):
/// the lines out, the timer and MWAIT exiting off, and the guest resumes
/// at the MWAIT, which then runs. Elsewhere MWAIT exits are none of this
/// module's: `None`.
///
/// [`ConsoleTimer::mwait`]: crate::vcpu::timer::ConsoleTimer::mwait
pub fn mwait<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<Option<ExitAction>, ExitError> {
    if !(vcpu.timer.armed && vcpu.timer.mwait) {
        return Ok(None);
    }
    vcpu.audit.print_pending();
    if vcpu.timer.poll {
        return vcpu.advance_rip().map(Some);
    }
    set(vcpu, false)?;
    Ok(Some(ExitAction::Resume))
}

/// Sets (with a full tick's count) or clears the timer's controls in
/// `vcpu`'s VMCS ([`write_controls`]).
fn set<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    on: bool,
) -> Result<(), ExitError> {
    Ok(write_controls(&mut vcpu.vmcs, &mut vcpu.timer, on)?)
}

/// Sets (with a full tick's count) or clears "activate VMX-preemption
/// timer" and "save VMX-preemption timer value" together (§27.2.1.2),
/// and "MWAIT exiting" with them where it is used; nothing without the
/// timer. The launch arms a polling timer with it before the first VM
/// entry of each processor.
pub fn write_controls<V: Vmcs>(
    vmcs: &mut V,
    timer: &mut ConsoleTimer,
    on: bool,
) -> Result<(), VmFail> {
    let Some(ticks) = timer.ticks() else {
        return Ok(());
    };
    let pin = PinBased::from_bits_retain(vmcs.read(Control32::PinBasedControls)?);
    let exit = ExitControls::from_bits_retain(vmcs.read(Control32::ExitControls)?);
    let (pin, exit) = if on {
        (
            pin | PinBased::ACTIVATE_PREEMPTION_TIMER,
            exit | ExitControls::SAVE_PREEMPTION_TIMER,
        )
    } else {
        (
            pin - PinBased::ACTIVATE_PREEMPTION_TIMER,
            exit - ExitControls::SAVE_PREEMPTION_TIMER,
        )
    };
    if on {
        vmcs.write(Guest32::PreemptionTimerValue, ticks)?;
    }
    vmcs.write(Control32::PinBasedControls, pin.bits())?;
    vmcs.write(Control32::ExitControls, exit.bits())?;
    if timer.mwait && on != timer.armed {
        let primary = PrimaryProcBased::from_bits_retain(
            vmcs.read(Control32::PrimaryProcessorBasedControls)?,
        );
        let primary = if on {
            primary | PrimaryProcBased::MWAIT_EXITING
        } else {
            primary - PrimaryProcBased::MWAIT_EXITING
        };
        vmcs.write(Control32::PrimaryProcessorBasedControls, primary.bits())?;
    }
    timer.armed = on;
    Ok(())
}
