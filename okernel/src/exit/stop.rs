//! Stopping a context: what the monitor does when the guest cannot go on
//! where it is — a triple fault (the processor's shutdown), an INIT
//! signal, a #GP while delivering a double fault (SDM Vol. 3A Table 6-5)
//! — instead of ending the run (issue 13: no guest action ends the run
//! but the trusted kernel's own `Exit`).
//!
//! * **An untrusted context** (a kernel path running for an untrusted
//!   task) is abandoned: the guest returns to the trusted context at the
//!   first registered gate (lowest id) whose linear address still
//!   translates, through the guest's current page tables, to the page it
//!   was registered with — the check `SwitchContext` makes — in the gate
//!   entry state ([`crate::vcpu::guest::GateEntry`]), with RAX = `Refused`,
//!   RDI = the stopped context and RSI = the exit reason. The trusted
//!   kernel decides what happens to the task (the demo kernel ends its
//!   request); the host and the other contexts go on. Audited with action
//!   `gate`.
//! * **The trusted context**, or an untrusted one without a usable gate,
//!   is halted: the virtual CPU enters the first inactive activity state
//!   the processor offers (IA32_VMX_MISC bits 8, 7, 6: wait-for-SIPI,
//!   shutdown, HLT with RFLAGS.IF clear; SDM Vol. 3C §25.4.2, §27.7.4,
//!   Appendix A.6), as a processor does after a triple fault or an INIT:
//!   nothing runs until a reset — or, in wait-for-SIPI, a SIPI, which
//!   starts it in real mode in the trusted context ([`super::sipi`]) —
//!   and the monitor stays resident. Audited with action `stop`. A
//!   processor with no inactive state the guest can enter (none, or only
//!   HLT with the guest at CPL > 0) ends the run with
//!   [`ExitError::Halted`].

use okernel_abi::hypercall::Status;

use crate::bits::{RFLAGS_IF, RFLAGS_TF};
use crate::hw::{Cpu, Vmcs};
use crate::hypercall::policy::Env;
use crate::msrs;
use crate::policy::Policy;
use crate::policy::audit::{AuditAction, AuditRecord, Note};
use crate::policy::protection::Gate;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::exit_reason::ExitReason;
use crate::vmx::fields::{Control32, Guest32, GuestNatural};
use crate::vmx::regs::Gpr;

// The activity states live with the start-up state, in the layer below
// (`launch` writes wait-for-SIPI too).
pub use crate::vcpu::startup::ActivityState;

/// The inactive state a halted virtual CPU enters: the first of
/// wait-for-SIPI, shutdown and HLT that IA32_VMX_MISC bits 8:6 allow
/// (SDM Vol. 3D Appendix A.6).
pub const fn halt_state(vmx_misc: u64) -> Option<ActivityState> {
    if vmx_misc & (1 << 8) != 0 {
        Some(ActivityState::WaitForSipi)
    } else if vmx_misc & (1 << 7) != 0 {
        Some(ActivityState::Shutdown)
    } else if vmx_misc & (1 << 6) != 0 {
        Some(ActivityState::Hlt)
    } else {
        None
    }
}

/// Stops the context the guest runs in (see the module documentation)
/// and writes `record` with the action taken.
pub fn stop_context<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    mut record: AuditRecord,
    reason: ExitReason,
) -> Result<ExitAction, ExitError> {
    let from = vcpu.policy.context();
    if from != 0
        && let Some(gate) = back_to_trusted(vcpu)?
    {
        record.action = AuditAction::Gate;
        if vcpu.audit.record(record).printed {
            vcpu.audit.note(Note::Gated {
                from,
                reason: reason.name(),
                gate: gate.linear,
            });
        }
        vcpu.vmcs.write(Control32::EntryInterruptionInfo, 0)?;
        vcpu.regs.set(Gpr::Rax, Status::Refused.raw());
        vcpu.regs.set(Gpr::Rdi, from.into());
        vcpu.regs.set(Gpr::Rsi, reason as u64);
        vcpu.enter_gate(&gate)?;
        return Ok(ExitAction::Resume);
    }
    record.action = AuditAction::Stop;
    vcpu.audit.record(record);
    halt(vcpu, reason)
}

/// Halts the virtual CPU: an inactive activity state, no event pending,
/// no STI/MOV-SS blocking (VM entry into an inactive state, §27.3.1.5).
fn halt<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    reason: ExitReason,
) -> Result<ExitAction, ExitError> {
    let Some(state) = halt_state(vcpu.cpu.read_msr(msrs::IA32_VMX_MISC)) else {
        return Err(ExitError::Halted(reason.name()));
    };
    if state == ActivityState::Hlt {
        // HLT requires CPL 0 at VM entry (§27.3.1.5); only an NMI, SMI or
        // INIT wakes a HLT with interrupts disabled.
        if vcpu.cpl()? != 0 {
            return Err(ExitError::Halted(reason.name()));
        }
        // TF and the pending debug exceptions cleared too: with TF set
        // (and BTF clear) a HLT activity state needs BS set in them, else
        // VM entry fails (§27.3.1.5) — the run would end.
        let rflags = vcpu.vmcs.read(GuestNatural::Rflags)?;
        vcpu.vmcs
            .write(GuestNatural::Rflags, rflags & !(RFLAGS_IF | RFLAGS_TF))?;
        vcpu.vmcs.write(GuestNatural::PendingDebugExceptions, 0)?;
    }
    vcpu.vmcs.write(Control32::EntryInterruptionInfo, 0)?;
    // Blocking by STI and MOV SS cleared (an inactive state allows
    // neither), and blocking by SMI, which VM entry outside SMM refuses
    // (§27.3.1.5): Bochs 2.7 saves it for an INIT that struck right after
    // a SIPI start.
    let s = vcpu.vmcs.read(Guest32::InterruptibilityState)?;
    vcpu.vmcs
        .write(Guest32::InterruptibilityState, s & !0b111)?;
    vcpu.vmcs.write(Guest32::ActivityState, state as u32)?;
    vcpu.audit.note(Note::Halted {
        context: vcpu.policy.context(),
        reason: reason.name(),
        state: state.name(),
    });
    // Printed now: in wait-for-SIPI the console's timer does not count
    // (SDM Vol. 3C §26.5.1), and nothing else may run before a reset —
    // unless other processors run the guest, whose exits print them: an
    // application processor stopped by the INIT of an INIT-SIPI-SIPI must
    // be waiting again before the second SIPI, microseconds later (a
    // UART takes milliseconds per line).
    if vcpu.started_aps == 0 {
        vcpu.audit.print_pending();
    }
    Ok(ExitAction::Resume)
}

/// Switches to the trusted view for a stop, if a gate can take it: the
/// first registered gate whose address still translates to its page.
fn back_to_trusted<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<Option<Gate>, ExitError> {
    let Some(mut env) = Env::of(vcpu) else {
        return Ok(None);
    };
    let mut usable = None;
    for g in env.prot.gates.into_iter().flatten() {
        if env.gate_usable(&g)? {
            usable = Some(g);
            break;
        }
    }
    let Some(gate) = usable else {
        return Ok(None);
    };
    Ok(env.enter_trusted()?.then_some(gate))
}
