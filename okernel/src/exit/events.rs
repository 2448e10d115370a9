//! Events the monitor makes the guest take, one helper per kind, each
//! delivered through the VM-entry interruption-information field (format:
//! SDM Vol. 3C §25.8.3, Table 25-16; delivery: §27.6 "Event Injection")
//! so that the guest sees what the processor itself would have given it:
//!
//! | helper | event | what the guest sees |
//! |--------|-------|---------------------|
//! | [`Vcpu::inject`] | a hardware exception the monitor raises (#GP, #UD, #DF...) | the frame hardware pushes: RIP at the instruction for a fault (not advanced), RFLAGS.RF set for a fault, the error code where the vector has one (none in real mode) |
//! | [`Vcpu::fault_during_delivery`] | a denied access the processor made while delivering an event | the #GP, #DF or shutdown the double-fault rules give (SDM Vol. 3A Table 6-5, [`crate::vmx::delivery`]) |
//! | [`Vcpu::reinject`] | an event a VM exit intercepted (exit reason 0) | the same event, with its error code, and the instruction length for software interrupts and exceptions (§27.6.1.1) |
//! | [`Vcpu::deny_write`] | the #GP(0) of a write the policy refuses, audited | #GP(0) at the instruction, as [`Vcpu::inject`] gives it |

use super::stop;
use crate::bits::CR0_PE;
use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::policy::audit::{Access, AuditAction, AuditKind, AuditRecord};
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::delivery::{DuringDelivery, gp_during};
use crate::vmx::error::VmFail;
use crate::vmx::event::{
    Exception, InterruptionInfo, InterruptionType, hardware_exception, rflags_for,
};
use crate::vmx::exit_reason::ExitReason;
use crate::vmx::fields::{Control32, GuestNatural, ReadOnly32};

impl<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory> Vcpu<V, C, P, M> {
    /// Injects hardware exception `e` at the current RIP (SDM Vol. 3C
    /// §27.6.1: type 3, "hardware exception"). For a fault-class exception
    /// (SDM Vol. 3A §6.5, Table 6-1) RIP is not advanced and RFLAGS.RF is
    /// set in the guest RFLAGS field, so that the frame the handler finds
    /// has RF set as hardware pushes it (SDM Vol. 3A §18.3.1.1;
    /// [`rflags_for`]). The error code goes with the vectors that have one
    /// (Table 6-1) and is dropped when the guest is in real mode (CR0.PE =
    /// 0), where VM entry forbids delivering one (§27.2.1.3).
    pub fn inject(&mut self, e: Exception, error_code: u32) -> Result<ExitAction, ExitError> {
        self.inject_event(e, error_code)?;
        Ok(ExitAction::Resume)
    }

    /// [`Self::inject`] with only the VMCS access's failure: what the
    /// RIP advance's cold path calls, whose errors stay small
    /// ([`super::rip`]). Inlined: the exit path's far RIP advance makes no
    /// call.
    #[inline(always)]
    pub(super) fn inject_event(&mut self, e: Exception, error_code: u32) -> Result<(), VmFail> {
        let protected = self.vmcs.read(GuestNatural::Cr0)? & CR0_PE != 0;
        let info = hardware_exception(e, protected);
        self.vmcs.write(Control32::EntryInterruptionInfo, info)?;
        if protected && e.has_error_code() {
            self.vmcs
                .write(Control32::EntryExceptionErrorCode, error_code)?;
        }
        let rflags = self.vmcs.read(GuestNatural::Rflags)?;
        let with_rf = rflags_for(e, protected, rflags);
        if with_rf != rflags {
            self.vmcs.write(GuestNatural::Rflags, with_rf)?;
        }
        Ok(())
    }

    /// The guest's answer to an access the policy denied (#GP(0) outside
    /// event delivery) when the processor made it while delivering
    /// `event` (the IDT-vectoring information, SDM Vol. 3C §28.2.4): the
    /// exception the double-fault rules give for a #GP at that point (SDM
    /// Vol. 3A §6.15, Table 6-5): #GP (EXT set for events external to the
    /// program) after a benign event, #DF(0) after a contributory
    /// exception or a page fault, and for a #GP during a double fault the
    /// shutdown hardware enters, which stops the context
    /// ([`stop::stop_context`], as exit reason 2, triple fault). The RIP is
    /// the one the VM exit saved for the interrupted delivery, as the
    /// processor's own #GP or #DF would report it. `record` is written
    /// with the action taken.
    pub fn fault_during_delivery(
        &mut self,
        event: InterruptionInfo,
        mut record: AuditRecord,
    ) -> Result<ExitAction, ExitError> {
        let (e, code) = match gp_during(event) {
            DuringDelivery::GeneralProtection(code) => (Exception::GeneralProtection, code),
            DuringDelivery::DoubleFault => (Exception::DoubleFault, 0),
            DuringDelivery::TripleFault => {
                return stop::stop_context(self, record, ExitReason::TripleFault);
            }
        };
        record.action = if e == Exception::DoubleFault {
            AuditAction::InjectDf
        } else {
            AuditAction::InjectGp
        };
        self.audit.record(record);
        self.inject(e, code)
    }

    /// Delivers again an event a VM exit intercepted before the guest took
    /// it (exit reason 0, "exception or NMI": the VM-exit
    /// interruption-information and error-code fields, SDM Vol. 3C
    /// §28.2.2), as the guest would have taken it without the exit: the
    /// same type, vector and error code; software interrupts and
    /// exceptions (types 4–6) with the VM-exit instruction length, which
    /// VM entry needs to push the return address after the instruction
    /// (§27.6.1.1); a fault-class hardware exception with RF as
    /// [`Self::inject`] sets it. Not valid: nothing to deliver, the guest
    /// resumes.
    pub fn reinject(&mut self, event: InterruptionInfo) -> Result<ExitAction, ExitError> {
        if !event.valid() {
            return Ok(ExitAction::Resume);
        }
        let kind = event.kind();
        if kind == InterruptionType::HardwareException as u32
            && let Some(e) = Exception::from_vector(event.vector())
        {
            let protected = self.vmcs.read(GuestNatural::Cr0)? & CR0_PE != 0;
            let rflags = self.vmcs.read(GuestNatural::Rflags)?;
            let with_rf = rflags_for(e, protected, rflags);
            if with_rf != rflags {
                self.vmcs.write(GuestNatural::Rflags, with_rf)?;
            }
        }
        if event.has_error_code() {
            let code = self.vmcs.read(ReadOnly32::ExitInterruptionErrorCode)?;
            self.vmcs.write(Control32::EntryExceptionErrorCode, code)?;
        }
        if kind == InterruptionType::SoftwareInterrupt as u32
            || kind == InterruptionType::PrivilegedSoftwareException as u32
            || kind == InterruptionType::SoftwareException as u32
        {
            let len = self.vmcs.read(ReadOnly32::ExitInstructionLength)?;
            self.vmcs.write(Control32::EntryInstructionLength, len)?;
        }
        self.vmcs
            .write(Control32::EntryInterruptionInfo, event.for_reinjection())?;
        Ok(ExitAction::Resume)
    }

    /// Denies a write the policy refuses (a pinned CR bit, a locked MSR,
    /// a descriptor-table load or store): writes and logs an audit record
    /// naming what was written (`target`: the CR number, MSR index, exit
    /// reason or guest-physical address) and injects #GP(0) at the
    /// instruction (invariant 10).
    pub fn deny_write(
        &mut self,
        kind: AuditKind,
        target: u64,
        gva: Option<u64>,
        value: u64,
    ) -> Result<ExitAction, ExitError> {
        let record = AuditRecord {
            seq: 0,
            kind,
            context: self.policy.context(),
            gpa: target,
            gva,
            access: Access::WRITE,
            allowed: Access::empty(),
            qualification: value,
            rip: self.vmcs.read(GuestNatural::Rip)?,
            cr3: self.vmcs.read(GuestNatural::Cr3)?,
            action: AuditAction::InjectGp,
        };
        self.audit.record(record);
        self.inject(Exception::GeneralProtection, 0)
    }
}
