//! EPT violations and misconfigurations (SDM Vol. 3C §30.3.3 "EPT-Induced
//! VM Exits"; qualification: §28.2.1, Table 28-7).
//!
//! A data write to locked text at a registered patch site is the one
//! exception: [`super::patch_step`] lets it through for one instruction
//! and judges it (validated self-patching, `docs/policy.md`).
//!
//! Outcome of any other violation (invariant 10): the access is **denied** — the
//! EPT entry is never changed — an [`AuditRecord`] is written, and the
//! guest gets **#GP(0) at the faulting instruction** (fault semantics: RIP
//! is not advanced, nothing of the access happened), which its own
//! exception handler can observe and recover from. A violation during
//! event delivery (the IDT-vectoring information is valid: the guest's
//! IDT, stack or handler lies in denied memory) is a #GP the processor
//! raised while delivering that event, so the guest gets what the
//! double-fault rules give (SDM Vol. 3A Table 6-5: #GP after a benign
//! event, #DF after a contributory exception or a page fault, and after a
//! double fault the context is stopped — [`Vcpu::fault_during_delivery`],
//! [`super::stop`]); the record's action says which. A qualification with
//! reserved bits set (decoded by the `ept` crate; only a processor defect
//! can produce one) ends the run. An asynchronous violation (bit 16: a
//! trace or PEBS write, not an instruction) is dropped: audited, not
//! performed, no exception.

use crate::hw::{Cpu, Vmcs};
use crate::memmap::Gpa;
use crate::policy::Policy;
use crate::policy::audit::{Access, AuditAction, AuditKind, AuditRecord};
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::event::{Exception, InterruptionInfo};
use crate::vmx::fields::{Guest32, GuestNatural, ReadOnly32, ReadOnly64, ReadOnlyNatural};

/// The audit form of the attempted access.
pub fn audit_access(a: ept::Access) -> Access {
    let mut r = Access::empty();
    r.set(Access::READ, a.contains(ept::Access::READ));
    r.set(Access::WRITE, a.contains(ept::Access::WRITE));
    r.set(Access::EXECUTE, a.contains(ept::Access::FETCH));
    r
}

/// The audit form of what the EPT walk allowed.
pub fn audit_allowed(p: ept::Perms) -> Access {
    let mut r = Access::empty();
    r.set(Access::READ, p.contains(ept::Perms::READ));
    r.set(Access::WRITE, p.contains(ept::Perms::WRITE));
    r.set(
        Access::EXECUTE,
        p.intersects(ept::Perms::EXECUTE | ept::Perms::USER_EXECUTE),
    );
    r
}

/// Guest interruptibility state bit 3: blocking by NMI.
const BLOCKING_BY_NMI: u32 = 1 << 3;

/// Handles an EPT violation: deny, audit, #GP(0) (or stop, see the module
/// documentation).
pub fn handle_violation<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    let q = vcpu.vmcs.read(ReadOnlyNatural::ExitQualification)?;
    let gpa = vcpu.vmcs.read(ReadOnly64::GuestPhysicalAddress)?;
    let decoded = ept::EptViolation::decode(q, &vcpu.ept, vcpu.policy.mbec_active());
    let (access, allowed, linear_valid, asynchronous, nmi_unblocking) = match &decoded {
        Ok(v) => (
            audit_access(v.access),
            audit_allowed(v.allowed),
            v.linear != ept::LinearAccess::None,
            v.asynchronous,
            v.nmi_unblocking,
        ),
        Err(_) => (Access::empty(), Access::empty(), false, false, false),
    };
    let gva = if linear_valid {
        Some(vcpu.vmcs.read(ReadOnlyNatural::GuestLinearAddress)?)
    } else {
        None
    };
    let vectoring = InterruptionInfo(vcpu.vmcs.read(ReadOnly32::IdtVectoringInfo)?);
    let action = if decoded.is_err() {
        AuditAction::Stop
    } else if asynchronous {
        AuditAction::Skip
    } else {
        AuditAction::InjectGp
    };
    let record = AuditRecord {
        seq: 0,
        kind: AuditKind::EptViolation,
        context: vcpu.policy.context(),
        gpa,
        gva,
        access,
        allowed,
        qualification: q,
        rip: vcpu.vmcs.read(GuestNatural::Rip)?,
        cr3: vcpu.vmcs.read(GuestNatural::Cr3)?,
        action,
    };
    if let Err(e) = decoded {
        vcpu.audit.record(record);
        return Err(ExitError::MalformedQualification(e));
    }
    // A write to the APIC page while it is write-trapped: decoded,
    // judged, performed or refused there.
    if !vectoring.valid()
        && !asynchronous
        && access.contains(Access::WRITE)
        && let Some(done) = super::xapic::handle_write(vcpu, gpa, gva, q)?
    {
        return Ok(done);
    }
    // A write to locked text at a registered patch site is let through
    // for one instruction and judged (validated self-patching).
    if !vectoring.valid()
        && !asynchronous
        && access.contains(Access::WRITE)
        && super::patch_step::begin(vcpu, Gpa(gpa), gva, q)? == super::patch_step::Begun::Opened
    {
        return Ok(ExitAction::Resume);
    }
    // Any other violation ends an open step first (judged, undone if
    // refused).
    super::patch_step::abandon(vcpu)?;
    if vectoring.valid() && !asynchronous {
        // The processor's own access while delivering an event: the
        // double-fault rules decide (and write the record).
        return vcpu.fault_during_delivery(vectoring, record);
    }
    vcpu.audit.record(record);
    if asynchronous {
        // Not caused by an instruction (a trace or PEBS write): RIP does
        // not point at the access, so there is nothing to fault. The write
        // is simply not performed.
        return Ok(ExitAction::Resume);
    }
    // The IRET that unblocked NMIs did not complete: keep NMIs blocked
    // (SDM §28.2.3 "Information About NMI Unblocking Due to IRET").
    if nmi_unblocking {
        let s = vcpu.vmcs.read(Guest32::InterruptibilityState)?;
        vcpu.vmcs
            .write(Guest32::InterruptibilityState, s | BLOCKING_BY_NMI)?;
    }
    vcpu.inject(Exception::GeneralProtection, 0)
}

/// An EPT misconfiguration is a monitor bug (the monitor wrote an invalid
/// EPT entry): reported with the GPA, never resumed.
pub fn misconfiguration<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> ExitError {
    match vcpu.vmcs.read(ReadOnly64::GuestPhysicalAddress) {
        Ok(gpa) => ExitError::EptMisconfiguration(gpa),
        Err(e) => ExitError::Vmcs(e),
    }
}
