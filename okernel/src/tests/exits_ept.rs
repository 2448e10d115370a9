//! EPT violations and misconfigurations.

use super::*;
use crate::policy::audit::{Access, AuditAction, AuditKind};
use crate::vmx::fields::{Guest32, GuestNatural, ReadOnly64};

const MONITOR_GPA: u64 = 0x0010_2345;
const GVA: u64 = 0xffff_8000_0010_2345;

fn violation<P: Policy>(
    v: &mut Vcpu<FakeVmcs, FakeCpu, P>,
    qualification: u64,
) -> Result<ExitAction, ExitError> {
    synth(v, ExitReason::EptViolation as u32, qualification, 0);
    v.vmcs
        .set(ReadOnly64::GuestPhysicalAddress, MONITOR_GPA)
        .set(ReadOnlyNatural::GuestLinearAddress, GVA);
    handle_exit(v)
}

#[test]
fn write_to_monitor_memory_is_denied_audited_and_faults() {
    let mut v = vcpu();
    // Data write, nothing allowed (not mapped), linear address valid and
    // the access was to its translation.
    let r = violation(&mut v, 0x182);
    assert_injected(&v, r, GP);
    let rec = *v.audit.last().unwrap();
    assert_eq!(rec.kind, AuditKind::EptViolation);
    assert_eq!(rec.gpa, MONITOR_GPA);
    assert_eq!(rec.gva, Some(GVA));
    assert_eq!(rec.access, Access::WRITE);
    assert_eq!(rec.allowed, Access::empty());
    assert_eq!(rec.qualification, 0x182);
    assert_eq!(rec.rip, RIP);
    assert_eq!(rec.cr3, 0x10_0000);
    assert_eq!(rec.action, AuditAction::InjectGp);
    assert_eq!(v.counters.get(ExitReason::EptViolation), 1);
}

#[test]
fn read_and_fetch_violations_are_denied_too() {
    let mut v = vcpu();
    let r = violation(&mut v, 0x181);
    assert_injected(&v, r, GP);
    let mut v = vcpu();
    let r = violation(&mut v, 0x184 | (1 << 3)); // fetch from a readable page
    assert_injected(&v, r, GP);
    let rec = v.audit.last().unwrap();
    assert_eq!(rec.access, Access::EXECUTE);
    assert_eq!(rec.allowed, Access::READ);
}

#[test]
fn no_guest_linear_address_is_recorded_as_none() {
    let mut v = vcpu();
    let r = violation(&mut v, 0x1);
    assert_injected(&v, r, GP);
    assert_eq!(v.audit.last().unwrap().gva, None);
}

/// An EPT violation while delivering `vectoring`: what was injected and
/// the record's action.
fn during_delivery(
    vectoring: u64,
) -> (
    Vcpu<FakeVmcs, FakeCpu, BasePolicy>,
    Result<ExitAction, ExitError>,
) {
    let mut v = vcpu();
    synth(&mut v, ExitReason::EptViolation as u32, 0x182, 0);
    v.vmcs
        .set(ReadOnly64::GuestPhysicalAddress, MONITOR_GPA)
        .set(ReadOnly32::IdtVectoringInfo, vectoring);
    let r = handle_exit(&mut v);
    (v, r)
}

#[test]
fn violation_during_a_benign_event_is_a_gp_with_ext() {
    // #UD being delivered (RSP on a read-only page, then ud2): #GP(EXT).
    let (v, r) = during_delivery(0x8000_0306);
    assert_injected(&v, r, GP);
    assert_eq!(v.vmcs.get(Control32::EntryExceptionErrorCode), 1);
    assert_eq!(v.audit.last().unwrap().action, AuditAction::InjectGp);
    // INT n: EXT clear.
    let (v, r) = during_delivery(0x8000_0480);
    assert_injected(&v, r, GP);
    assert_eq!(v.vmcs.get(Control32::EntryExceptionErrorCode), 0);
}

#[test]
fn violation_during_a_contributory_exception_or_page_fault_is_a_double_fault() {
    for vectoring in [0x8000_0b0d, 0x8000_0b0e, 0x8000_0300] {
        let (v, r) = during_delivery(vectoring);
        assert_injected(&v, r, DF);
        assert_eq!(v.vmcs.get(Control32::EntryExceptionErrorCode), 0);
        let rec = v.audit.last().unwrap();
        assert_eq!(rec.action, AuditAction::InjectDf);
        assert_eq!(rec.gpa, MONITOR_GPA);
        assert_eq!(rec.kind, AuditKind::EptViolation);
    }
}

#[test]
fn violation_during_a_double_fault_stops_the_context_not_the_run() {
    let (_, r) = during_delivery(0x8000_0b08);
    // The fake processor offers no inactive activity state: the one case
    // that ends the run (no real VMX processor lacks HLT).
    assert_eq!(r, Err(ExitError::Halted("triple-fault")));
    let mut v = vcpu();
    v.cpu.set_msr(crate::msrs::IA32_VMX_MISC, 0x0300_01e0);
    synth(&mut v, ExitReason::EptViolation as u32, 0x182, 0);
    v.vmcs
        .set(ReadOnly64::GuestPhysicalAddress, MONITOR_GPA)
        .set(ReadOnly32::IdtVectoringInfo, 0x8000_0b08);
    let r = handle_exit(&mut v);
    assert_eq!(r, Ok(ExitAction::Resume), "never a monitor stop");
    assert_eq!(injected(&v), 0);
    assert_eq!(v.audit.last().unwrap().action, AuditAction::Stop);
    // The fake processor offers wait-for-SIPI.
    assert_eq!(v.vmcs.get(Guest32::ActivityState), 3);
}

#[test]
fn nmi_unblocking_iret_reblocks_nmis() {
    let mut v = vcpu();
    let r = violation(&mut v, 0x182 | (1 << 12));
    assert_injected(&v, r, GP);
    assert_ne!(v.vmcs.get(Guest32::InterruptibilityState) & (1 << 3), 0);
}

#[test]
fn asynchronous_violation_is_dropped_without_an_exception() {
    let mut v = vcpu();
    let r = violation(&mut v, 0x2 | (1 << 16));
    assert_eq!(r, Ok(ExitAction::Resume));
    assert_eq!(injected(&v), 0);
    assert_eq!(rip(&v), RIP);
    assert_eq!(v.audit.last().unwrap().action, AuditAction::Skip);
}

#[test]
fn malformed_qualification_is_fatal_and_audited() {
    let mut v = vcpu();
    let r = violation(&mut v, 0x2 | (1 << 40));
    assert!(
        matches!(r, Err(ExitError::MalformedQualification(_))),
        "{r:?}"
    );
    assert_eq!(v.audit.last().unwrap().action, AuditAction::Stop);
}

#[test]
fn audit_ring_survives_a_flood_of_violations() {
    let mut v = vcpu();
    for _ in 0..1000 {
        v.vmcs.set(GuestNatural::Rip, RIP);
        let r = violation(&mut v, 0x182);
        assert_eq!(r, Ok(ExitAction::Resume));
    }
    assert_eq!(v.audit.total(), 1000);
    assert_eq!(v.audit.len(), crate::policy::audit::AUDIT_CAPACITY);
    assert_eq!(v.audit.last().unwrap().seq, 999);
}

#[test]
fn misconfiguration_is_fatal_with_the_gpa() {
    let mut v = vcpu();
    synth(&mut v, ExitReason::EptMisconfiguration as u32, 0, 0);
    v.vmcs.set(ReadOnly64::GuestPhysicalAddress, 0xfee0_0000);
    let r = handle_exit(&mut v);
    assert_eq!(r, Err(ExitError::EptMisconfiguration(0xfee0_0000)));
    assert_eq!(
        r.unwrap_err().to_string(),
        "EPT misconfiguration at GPA 0xfee00000"
    );
}
