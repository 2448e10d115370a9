//! The console's lines out of the exit path (issue 14, item 5): a denied
//! operation's exit queues its line and arms the VMX-preemption timer;
//! the timer's tick prints one line a tick and disarms once none wait;
//! a guest byte to the console prints the waiting lines first; without
//! the timer's controls nothing is armed. Through the fake VMCS and CPU.

use super::*;
use crate::exit::io::IoQualification;
use crate::vcpu::timer::ConsoleTimer;
use crate::vmx::controls::{ExitControls, PinBased, PrimaryProcBased};
use crate::vmx::fields::Guest32;
use crate::vmx::regs::Gpr;

/// Port 0x80 + 0x100: denied (default deny), so each write is audited.
const DENIED: u16 = 0x180;

fn out(v: &mut Vcpu<FakeVmcs, FakeCpu, BasePolicy>, port: u16, value: u64) -> ExitAction {
    v.regs.set(Gpr::Rax, value);
    run(
        v,
        ExitReason::IoInstruction,
        IoQualification::new(port, 1, false).0,
        1,
    )
    .unwrap()
}

fn tick(v: &mut Vcpu<FakeVmcs, FakeCpu, BasePolicy>) -> ExitAction {
    v.vmcs.set(Guest32::PreemptionTimerValue, 0);
    run(v, ExitReason::PreemptionTimer, 0, 0).unwrap()
}

/// (activate, save, the count loaded) as the VMCS holds them.
fn timer(v: &Vcpu<FakeVmcs, FakeCpu, BasePolicy>) -> (bool, bool, u64) {
    let pin = PinBased::from_bits_retain(v.vmcs.get(Control32::PinBasedControls) as u32);
    let exit = ExitControls::from_bits_retain(v.vmcs.get(Control32::ExitControls) as u32);
    (
        pin.contains(PinBased::ACTIVATE_PREEMPTION_TIMER),
        exit.contains(ExitControls::SAVE_PREEMPTION_TIMER),
        v.vmcs.get(Guest32::PreemptionTimerValue),
    )
}

fn with_timer() -> Vcpu<FakeVmcs, FakeCpu, BasePolicy> {
    let mut v = vcpu();
    capture_lines(&mut v.audit);
    let rate = check::probe(&mut FakeCpu::vmx_capable())
        .unwrap()
        .preemption_timer;
    assert!(
        rate.is_some(),
        "the fake CPU offers the timer, as Bochs does"
    );
    v.timer = ConsoleTimer::new(rate, true);
    v
}

#[test]
fn a_denial_queues_its_line_and_arms_the_timer() {
    let mut v = with_timer();
    let ticks = u64::from(v.timer.ticks().unwrap());
    assert_eq!(timer(&v), (false, false, 0), "off at launch");
    assert_eq!(out(&mut v, DENIED, 1), ExitAction::Resume);
    assert_eq!(v.audit.total(), 1);
    assert!(v.audit.has_pending(), "queued, not printed in the exit");
    assert_eq!(timer(&v), (true, true, ticks));
    // A second denial while armed: queued, the count not restarted.
    v.vmcs.set(Guest32::PreemptionTimerValue, 7);
    out(&mut v, DENIED + 1, 1);
    assert_eq!(timer(&v), (true, true, 7));
    assert!(printed_lines().is_empty(), "nothing printed in the exits");
    // Two ticks print the two lines, one each; the second disarms.
    assert_eq!(tick(&mut v), ExitAction::Resume);
    let line = printed_lines();
    assert_eq!(line.len(), 1);
    assert!(line[0].starts_with("OKERNEL-AUDIT: {\"seq\":0,\"kind\":\"exit\""));
    assert!(line[0].contains("\"qual\":\"0x1800000\""), "{}", line[0]);
    assert!(v.audit.has_pending());
    assert_eq!(timer(&v), (true, true, ticks), "re-armed: a line waits");
    tick(&mut v);
    let line = printed_lines();
    assert!(
        line.len() == 1 && line[0].contains("\"seq\":1,"),
        "{line:?}"
    );
    assert!(!v.audit.has_pending());
    assert!(!timer(&v).0, "disarmed");
    assert!(!timer(&v).1, "save needs activate (27.2.1.2)");
    // The ticks are not the guest's: RIP, events, audit untouched.
    assert_eq!(rip(&v), RIP + 2);
    assert_eq!(injected(&v), 0);
    assert_eq!(v.audit.total(), 2);
}

#[test]
fn a_tick_with_nothing_waiting_disarms() {
    // The lines went out with a guest byte (below) before the tick came.
    let mut v = with_timer();
    out(&mut v, DENIED, 1);
    v.cpu.set_port(0x3fb, 0x03);
    out(&mut v, 0x3f8, u64::from(b'A'));
    assert!(
        !v.audit.has_pending(),
        "the guest's byte printed them first"
    );
    assert_eq!(printed_lines().len(), 1);
    assert_eq!(v.cpu.outs(), &[(0x3f8, 1, u32::from(b'A'))]);
    tick(&mut v);
    assert!(!timer(&v).0);
}

#[test]
fn without_the_timer_the_exit_prints_its_lines() {
    // Nothing would bring them out if the guest then never printed,
    // exited or ended: printed in the exit, as before the queue.
    let mut v = vcpu();
    capture_lines(&mut v.audit);
    assert_eq!(v.timer, ConsoleTimer::new(None, false));
    out(&mut v, DENIED, 1);
    assert!(!v.audit.has_pending());
    assert_eq!(printed_lines().len(), 1);
    assert_eq!(timer(&v), (false, false, 0), "nothing armed");
}

#[test]
fn any_write_the_monitor_performs_prints_the_lines_first() {
    // A reset, sleep or A20 write may end or stop the machine: the lines
    // waiting go out first. Port 0x92 (emulated) with A20 on, nothing else.
    let mut v = with_timer();
    out(&mut v, DENIED, 1);
    assert!(v.audit.has_pending());
    out(&mut v, 0x92, 0x02);
    assert!(!v.audit.has_pending());
    assert_eq!(printed_lines().len(), 1);
}

/// Whether MWAIT exiting is set.
fn mwait_exiting(v: &Vcpu<FakeVmcs, FakeCpu, BasePolicy>) -> bool {
    let primary = v.vmcs.get(Control32::PrimaryProcessorBasedControls) as u32;
    PrimaryProcBased::from_bits_retain(primary).contains(PrimaryProcBased::MWAIT_EXITING)
}

#[test]
fn an_mwait_while_lines_wait_prints_them_and_then_runs() {
    // MWAIT into a C-state deeper than C2 stops the timer (SDM Vol. 3C
    // §26.5.1): while it is armed, MWAIT exits, the lines go out, and
    // the guest's MWAIT runs again with nothing armed.
    let mut v = with_timer();
    assert!(!mwait_exiting(&v), "off at launch");
    out(&mut v, DENIED, 1);
    assert!(mwait_exiting(&v), "armed with the timer");
    let at = rip(&v);
    assert_eq!(run(&mut v, ExitReason::Mwait, 0, 3), Ok(ExitAction::Resume));
    assert_eq!(printed_lines().len(), 1);
    assert!(!v.audit.has_pending());
    assert_eq!((timer(&v).0, timer(&v).1), (false, false), "disarmed");
    assert!(!mwait_exiting(&v));
    assert_eq!((rip(&v), injected(&v)), (at, 0), "the MWAIT runs again");
    // With nothing armed an MWAIT exit (no control of okernel's causes
    // one) keeps its old outcome: #UD.
    run(&mut v, ExitReason::Mwait, 0, 3).unwrap();
    assert_eq!(injected(&v), UD);
    // A tick that empties the queue clears MWAIT exiting too.
    let mut v = with_timer();
    out(&mut v, DENIED, 1);
    tick(&mut v);
    assert!(!mwait_exiting(&v));
}

#[test]
fn a_polling_timer_stays_armed_and_passes_over_mwait() {
    // Several processors: the timer is the shootdown's poll (`presence`),
    // armed for good from launch, so a processor in the guest always
    // exits within a tick; a tick with no line waiting re-arms it, and an
    // MWAIT (whose deep C-states would stop it) is passed over.
    let mut v = with_timer();
    let mut poll = v.timer.polling().unwrap();
    let ticks = u64::from(poll.ticks().unwrap());
    crate::exit::console_tick::write_controls(&mut v.vmcs, &mut poll, true).unwrap();
    v.timer = poll;
    assert_eq!(timer(&v), (true, true, ticks), "armed at launch");
    assert!(mwait_exiting(&v));
    assert_eq!(tick(&mut v), ExitAction::Resume);
    assert!(printed_lines().is_empty());
    assert_eq!(
        timer(&v),
        (true, true, ticks),
        "re-armed with nothing waiting"
    );
    // A line waits: out at the next tick, and the timer still armed.
    out(&mut v, DENIED, 1);
    tick(&mut v);
    assert_eq!(printed_lines().len(), 1);
    assert_eq!(timer(&v), (true, true, ticks));
    // MWAIT: the waiting line out, the instruction passed over, nothing
    // injected, the timer and MWAIT exiting still on.
    out(&mut v, DENIED, 1);
    let at = rip(&v);
    assert_eq!(run(&mut v, ExitReason::Mwait, 0, 3), Ok(ExitAction::Resume));
    assert_eq!(printed_lines().len(), 1);
    assert_eq!((rip(&v), injected(&v)), (at + 3, 0), "MWAIT passed over");
    assert_eq!((timer(&v).0, timer(&v).1), (true, true));
    assert!(mwait_exiting(&v));
}

#[test]
fn the_probe_offers_the_timer_only_with_both_controls() {
    use crate::msrs;
    let without = |msr: u32, bit: u32| {
        let mut cpu = FakeCpu::vmx_capable();
        let allowed = cpu.read_msr_for_tests(msr);
        cpu.set_msr(msr, allowed & !(u64::from(bit) << 32));
        check::probe(&mut cpu).unwrap().preemption_timer
    };
    let activate = PinBased::ACTIVATE_PREEMPTION_TIMER.bits();
    let save = ExitControls::SAVE_PREEMPTION_TIMER.bits();
    assert_eq!(without(msrs::IA32_VMX_TRUE_PINBASED_CTLS, activate), None);
    assert_eq!(without(msrs::IA32_VMX_TRUE_EXIT_CTLS, save), None);
    let misc = FakeCpu::vmx_capable().read_msr_for_tests(msrs::IA32_VMX_MISC);
    assert_eq!(
        without(msrs::IA32_VMX_TRUE_EXIT_CTLS, 0),
        Some((misc & 0x1f) as u8)
    );
}
