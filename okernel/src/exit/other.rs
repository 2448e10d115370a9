//! Every exit reason the other handlers do not take: what the guest gets
//! for each, so that no exit reason ends the run (issue 13). Most of them
//! no control okernel sets can cause (`docs/vmx-core.md`, "Controls and
//! why"); each still has a defined outcome, chosen to be what the guest
//! would see on a processor without the feature, or the architectural
//! effect of the event:
//!
//! | exit reason | outcome |
//! |-------------|---------|
//! | exception or NMI (0) | the event delivered to the guest as it would have been ([`Vcpu::reinject`]) |
//! | external interrupt (1), SMIs (5, 6), interrupt and NMI windows (7, 8), monitor trap flag (37), TPR below threshold (43), virtualized EOI (45), APIC write (56), bus lock (74), instruction timeout (75) | resume: asynchronous or trap-like, nothing was left undone (an external interrupt was not acknowledged and stays pending) |
//! | triple fault (2), INIT (3) | the context is stopped ([`super::stop`], audited `exit`) |
//! | task switch (9) | okernel does not emulate task switches: through an IDT task gate (IDT-vectoring valid) the #GP the double-fault rules give for that delivery ([`Vcpu::fault_during_delivery`]); by CALL, JMP or IRET #GP(0) at the instruction; audited `exit` |
//! | HLT (12) | completed: RIP advanced, the virtual CPU enters the HLT activity state where the processor offers it (IA32_VMX_MISC bit 6), else resumes as after a wake-up |
//! | INVLPG (14) | completed: the guest's translations dropped (INVVPID single context where VPID is on; without VPID every VM entry flushes them), RIP advanced |
//! | PAUSE (40) | completed (a hint): RIP advanced |
//! | APIC access (44), page-modification log full (62), SPP-related event (66), ENQCMD/ENQCMDS PASID failure (72, 73) | fault-like: the access did not happen; #GP(0) at the instruction |
//! | RDPMC, RDTSC, RSM, MOV DR, MWAIT (but while the console's timer is armed: `console_tick`), MONITOR, RDTSCP, RDRAND, INVPCID, ENCLS, RDSEED, XSAVES, XRSTORS, PCONFIG, UMWAIT, TPAUSE, LOADIWKEY, ENCLV, SEAMCALL, TDCALL, RDMSRLIST, WRMSRLIST | #UD at the instruction: instructions okernel does not emulate (their exiting controls are off, so the guest normally executes them itself) |
//!
//! I/O instructions (30) go to [`super::io`] (the I/O bitmaps intercept
//! port 0x92); a SIPI (4) starts the virtual CPU at its vector
//! ([`super::sipi`]).
//!
//! Four reasons still end the run, because only the monitor or the
//! machine can cause them, never guest code: the three VM-entry failures
//! (33, 34, 41: the guest state, MSR-load list and machine check of a VM
//! entry the monitor made; they arrive with bit 31 set) and EPT
//! misconfiguration (49: an EPT entry the monitor wrote).

use super::stop;
use crate::hw::{Cpu, Vmcs};
use crate::msrs;
use crate::policy::Policy;
use crate::policy::audit::{Access, AuditAction, AuditKind, AuditRecord};
use crate::vcpu::guest::flush_guest_tlb;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::event::{Exception, InterruptionInfo};
use crate::vmx::exit_reason::ExitReason;
use crate::vmx::fields::{Control32, Guest32, GuestNatural, ReadOnly32, ReadOnlyNatural};

/// An audit record of kind `exit` for exit `reason` (its qualification
/// read), with `action` (possibly replaced by [`stop::stop_context`]).
pub fn exit_record<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &Vcpu<V, C, P, M>,
    reason: ExitReason,
    action: AuditAction,
) -> Result<AuditRecord, ExitError> {
    Ok(AuditRecord {
        seq: 0,
        kind: AuditKind::Exit,
        context: vcpu.policy.context(),
        gpa: reason as u64,
        gva: None,
        access: Access::empty(),
        allowed: Access::empty(),
        qualification: vcpu.vmcs.read(ReadOnlyNatural::ExitQualification)?,
        rip: vcpu.vmcs.read(GuestNatural::Rip)?,
        cr3: vcpu.vmcs.read(GuestNatural::Cr3)?,
        action,
    })
}

/// The outcome of each exit reason in the module's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Deliver the intercepted event ([`Vcpu::reinject`]).
    Reinject,
    /// Stop the context ([`stop::stop_context`]).
    Stop,
    /// Refuse the task switch: #GP, or the double-fault rules for an
    /// IDT task gate.
    TaskSwitch,
    /// Complete HLT: advance, and the HLT activity state where offered.
    Hlt,
    /// Complete INVLPG: drop the guest's translations, advance.
    Invlpg,
    /// Complete the instruction: advance RIP.
    Advance,
    /// #GP(0) at the instruction.
    Gp,
    /// #UD at the instruction.
    Ud,
    /// Resume as it is.
    Resume,
}

/// The outcome of exit `reason`; None for the reasons another handler
/// takes (the dispatcher in [`super::dispatch`] never sends those here).
pub const fn outcome(reason: ExitReason) -> Option<Outcome> {
    use ExitReason as R;
    Some(match reason {
        R::ExceptionOrNmi => Outcome::Reinject,
        R::TripleFault | R::InitSignal => Outcome::Stop,
        R::TaskSwitch => Outcome::TaskSwitch,
        R::Hlt => Outcome::Hlt,
        R::Invlpg => Outcome::Invlpg,
        R::Pause => Outcome::Advance,
        R::ApicAccess
        | R::PmlFull
        | R::SppEvent
        | R::EnqcmdPasidFailure
        | R::EnqcmdsPasidFailure => Outcome::Gp,
        R::Rdpmc
        | R::Rdtsc
        | R::Rsm
        | R::MovDr
        | R::Mwait
        | R::Monitor
        | R::Rdtscp
        | R::Rdrand
        | R::Invpcid
        | R::Encls
        | R::Rdseed
        | R::Xsaves
        | R::Xrstors
        | R::Pconfig
        | R::Umwait
        | R::Tpause
        | R::Loadiwkey
        | R::Enclv
        | R::Seamcall
        | R::Tdcall
        | R::Rdmsrlist
        | R::Wrmsrlist => Outcome::Ud,
        R::ExternalInterrupt
        | R::IoSmi
        | R::OtherSmi
        | R::InterruptWindow
        | R::NmiWindow
        | R::MonitorTrapFlag
        | R::TprBelowThreshold
        | R::VirtualizedEoi
        | R::ApicWrite
        | R::BusLock
        | R::InstructionTimeout => Outcome::Resume,
        _ => return None,
    })
}

/// Whether no control okernel ever sets causes exit `reason`: every
/// reason of the module's table but those some guest action always
/// causes (triple fault, INIT, task switch) and MWAIT (which exits while
/// the console's timer is armed, `super::console_tick`); never a reason
/// another handler takes (SIPI among them: the guest sends it to a
/// virtual CPU in wait-for-SIPI, `super::sipi`). The fuzzer's oracle
/// counts such exits as unexpected (`crate::fuzz::observe::unexpected`).
pub const fn never_caused(reason: ExitReason) -> bool {
    match outcome(reason) {
        Some(Outcome::Stop | Outcome::TaskSwitch) | None => false,
        Some(_) => !matches!(reason, ExitReason::Mwait),
    }
}

/// Handles exit `reason`, one of those in the module's table (any other
/// resumes the guest).
pub fn handle<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    reason: ExitReason,
) -> Result<ExitAction, ExitError> {
    match outcome(reason) {
        Some(Outcome::Reinject) => {
            let event = InterruptionInfo(vcpu.vmcs.read(ReadOnly32::ExitInterruptionInfo)?);
            vcpu.reinject(event)
        }
        Some(Outcome::Stop) => {
            if reason == ExitReason::InitSignal && super::sipi::just_started(vcpu)? {
                // The INIT of the guest's INIT-SIPI-SIPI, held while the
                // processor waited for the SIPI (see `sipi::just_started`).
                return super::sipi::resume_start(vcpu);
            }
            let record = exit_record(vcpu, reason, AuditAction::Stop)?;
            stop::stop_context(vcpu, record, reason)
        }
        Some(Outcome::TaskSwitch) => task_switch(vcpu),
        Some(Outcome::Hlt) => hlt(vcpu),
        Some(Outcome::Invlpg) => {
            flush_guest_tlb(vcpu)?;
            vcpu.advance_rip()
        }
        Some(Outcome::Advance) => vcpu.advance_rip(),
        Some(Outcome::Gp) => vcpu.inject(Exception::GeneralProtection, 0),
        Some(Outcome::Ud) => vcpu.inject(Exception::InvalidOpcode, 0),
        // Asynchronous or trap-like: nothing left undone.
        Some(Outcome::Resume) | None => Ok(ExitAction::Resume),
    }
}

/// A task switch (SDM Vol. 3C §26.1.2: always exits; qualification §28.2.1
/// Table 28-2). okernel does not emulate it.
fn task_switch<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    let vectoring = InterruptionInfo(vcpu.vmcs.read(ReadOnly32::IdtVectoringInfo)?);
    let record = exit_record(vcpu, ExitReason::TaskSwitch, AuditAction::InjectGp)?;
    if vectoring.valid() {
        // Through a task gate of the IDT: the event is not delivered.
        return vcpu.fault_during_delivery(vectoring, record);
    }
    // CALL, JMP or IRET: RIP is that instruction's (§28.2.5 / §27.?).
    vcpu.audit.record(record);
    vcpu.inject(Exception::GeneralProtection, 0)
}

/// HLT (only with "HLT exiting", which okernel leaves off): completed, and
/// the virtual CPU halts where the processor offers the HLT activity
/// state (IA32_VMX_MISC bit 6, SDM Vol. 3D Appendix A.6; HLT itself
/// faults at CPL > 0 before it can exit).
fn hlt<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    let rip = vcpu.vmcs.read(GuestNatural::Rip)?;
    let action = vcpu.advance_rip()?;
    // A HLT at the canonical boundary completed into the fetch's #GP
    // (`exit::rip`): an event is delivered or injected, and VM entry
    // refuses an injection into the HLT state (SDM Vol. 3C §27.3.1.5).
    let event = vcpu.vmcs.read(Control32::EntryInterruptionInfo)? & (1 << 31) != 0;
    let delivered = vcpu.vmcs.read(GuestNatural::Rip)? != rip.wrapping_add(1);
    if !event
        && !delivered
        && vcpu.cpu.read_msr(msrs::IA32_VMX_MISC) & (1 << 6) != 0
        && vcpu.cpl()? == 0
    {
        vcpu.vmcs
            .write(Guest32::ActivityState, stop::ActivityState::Hlt as u32)?;
    }
    Ok(action)
}
