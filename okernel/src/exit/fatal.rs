//! Fatal exits: VM-entry failures, triple faults, EPT misconfigurations and
//! anything the controls should never cause end the run with a report of
//! the guest state (`log::error!`) and a failure, never a silent hang.

use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitError, Vcpu};
use crate::vmx::exit_reason::{ExitReason, ExitReasonField};
use crate::vmx::fields::{
    Control32, Field, Guest16, Guest32, Guest64, GuestNatural, ReadOnly32, ReadOnly64,
    ReadOnlyNatural,
};
use crate::vmx::qualification::entry_failure_meaning;

/// Builds the error for a VM-entry failure (exit reason bit 31; SDM Vol. 3C
/// §27.8): for reason 33 the qualification says which check failed, for
/// reason 34 it is the 1-based index of the MSR-load entry that failed.
pub fn entry_failure<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &Vcpu<V, C, P, M>,
    field: ExitReasonField,
) -> ExitError {
    let qualification = match vcpu.vmcs.read(ReadOnlyNatural::ExitQualification) {
        Ok(q) => q,
        Err(e) => return ExitError::Vmcs(e),
    };
    let (reason, meaning) = match field.reason() {
        Some(ExitReason::EntryFailureGuestState) => {
            ("invalid guest state", entry_failure_meaning(qualification))
        }
        Some(ExitReason::EntryFailureMsrLoading) => (
            "MSR loading",
            "index of the failing VM-entry MSR-load entry",
        ),
        Some(ExitReason::EntryFailureMachineCheck) => {
            ("machine-check event", "machine check during VM entry")
        }
        Some(other) => (
            other.name(),
            "exit reason with the VM-entry failure bit set",
        ),
        None => (
            "undefined reason",
            "exit reason with the VM-entry failure bit set",
        ),
    };
    ExitError::EntryFailure {
        reason,
        qualification,
        meaning,
    }
}

/// Logs the guest state and the exit information at `error` level: what a
/// developer needs to see why the guest could not continue. Returns how
/// many fields could not be read.
pub fn log_guest_state<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &Vcpu<V, C, P, M>,
) -> usize {
    fn dump<F: Field>(vmcs: &impl Vmcs, fields: &[F]) -> usize {
        let mut failed = 0;
        for &f in fields {
            match vmcs.read_raw(f.encoding()) {
                Ok(v) => log::error!("okernel:   {:<28} {:#x}", f.name(), v),
                Err(e) => {
                    failed += 1;
                    log::error!("okernel:   {:<28} <{}>", f.name(), e);
                }
            }
        }
        failed
    }
    let vmcs = &vcpu.vmcs;
    log::error!("okernel: guest state at the failing exit:");
    let mut failed = 0;
    failed += dump(
        vmcs,
        &[
            ReadOnly32::ExitReason,
            ReadOnly32::IdtVectoringInfo,
            ReadOnly32::ExitInstructionLength,
        ],
    );
    failed += dump(
        vmcs,
        &[
            ReadOnlyNatural::ExitQualification,
            ReadOnlyNatural::GuestLinearAddress,
        ],
    );
    failed += dump(vmcs, &[ReadOnly64::GuestPhysicalAddress]);
    failed += dump(
        vmcs,
        &[
            GuestNatural::Rip,
            GuestNatural::Rsp,
            GuestNatural::Rflags,
            GuestNatural::Cr0,
            GuestNatural::Cr3,
            GuestNatural::Cr4,
            GuestNatural::GdtrBase,
            GuestNatural::IdtrBase,
            GuestNatural::TrBase,
        ],
    );
    failed += dump(vmcs, &[Guest64::Efer, Guest64::VmcsLinkPointer]);
    failed += dump(
        vmcs,
        &[
            Guest16::CsSelector,
            Guest16::SsSelector,
            Guest16::TrSelector,
        ],
    );
    failed += dump(
        vmcs,
        &[
            Guest32::CsAccessRights,
            Guest32::SsAccessRights,
            Guest32::TrAccessRights,
            Guest32::InterruptibilityState,
            Guest32::ActivityState,
        ],
    );
    failed += dump(
        vmcs,
        &[Control32::EntryControls, Control32::EntryInterruptionInfo],
    );
    for (i, v) in vcpu.regs.gpr.iter().enumerate() {
        if i != 4 {
            log::error!(
                "okernel:   {:<28} {:#x}",
                crate::vmx::regs::Gpr::from_index(i as u8).name(),
                v
            );
        }
    }
    failed
}
