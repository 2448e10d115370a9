//! The run loop, on the monitor's own stack.

use okernel_abi::result::Outcome;

use super::Prepared;
use crate::arch;
use crate::exit::{self, ExitAction, Vcpu};
use crate::fmt::FixedString;
use crate::hw::real::{RealCpu, RealVmcs};
use crate::hw::{Cpu, Vmcs};
use crate::policy::{BasePolicy, Policy};

/// The monitor's entry point on its own stack: VMLAUNCH, then handle exits
/// and VMRESUME until the run ends. Never returns.
pub(super) extern "C" fn monitor_main(arg: *mut u8) -> ! {
    // SAFETY: `launch` passes a pointer to its `Prepared`, which stays
    // valid (the old stack is abandoned, never popped or reused); it is
    // moved out exactly once, here.
    let prepared = unsafe { arg.cast::<Prepared>().read() };
    // SAFETY: `launch` made the VMCS current in VMX root operation, and
    // this loop is its only user from now on; CPL0 on the bare machine.
    let (vmcs, cpu) = unsafe { (RealVmcs::current(), RealCpu::new()) };
    let mut vcpu = Vcpu::new(vmcs, cpu, BasePolicy, prepared.cr, prepared.ept);
    vcpu.regs = prepared.guest.regs;
    let _keep_alive = &prepared.view;
    let _ = prepared.caps;
    let report = prepared.report;
    let mut launched = false;
    loop {
        // SAFETY: the VMCS is complete (host state read from this CPU,
        // HOST_RIP = the exit stub, controls and guest state written by
        // `launch`), and the EPT view excludes all monitor memory.
        let entered = unsafe { arch::run::vm_run(&mut vcpu.regs, launched) };
        if let Err(e) = entered {
            let op = if launched { "VMRESUME" } else { "VMLAUNCH" };
            log::error!("okernel: {op} failed: {e}");
            exit::fatal::log_guest_state(&vcpu);
            let msg = FixedString::<160>::from_fmt(format_args!("{op} failed: {e}"));
            finish(&vcpu, report, Outcome::Fail, msg.as_str());
        }
        launched = true;
        match exit::handle_exit(&mut vcpu) {
            Ok(ExitAction::Resume) => {}
            Ok(ExitAction::Stop(outcome)) => {
                let msg = FixedString::<64>::from_fmt(format_args!(
                    "guest ended the run ({})",
                    outcome.word()
                ));
                finish(&vcpu, report, outcome, msg.as_str());
            }
            Err(e) => {
                log::error!("okernel: fatal VM exit: {e}");
                exit::fatal::log_guest_state(&vcpu);
                let msg = FixedString::<160>::from_fmt(format_args!("{e}"));
                finish(&vcpu, report, Outcome::Fail, msg.as_str());
            }
        }
    }
}

/// Prints the exit counters and the audit summary, then ends the run.
fn finish<V: Vmcs, C: Cpu, P: Policy>(
    vcpu: &Vcpu<V, C, P>,
    report: super::ReportFn,
    outcome: Outcome,
    msg: &str,
) -> ! {
    vcpu.counters.log();
    log::info!(
        "okernel: audit log: {} records ({} dropped from the ring)",
        vcpu.audit.total(),
        vcpu.audit.dropped()
    );
    report(outcome, msg)
}
