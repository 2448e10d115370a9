//! The audit mirror (`okernel_abi::fuzz::AuditMirror`): the executor
//! registers a page of its own with `CALL_BASELINE`, and the monitor
//! rewrites it — the record total and the newest record — at the
//! baseline and after every VM exit that wrote audit records
//! (`super::observe`). The executor then judges each operation's records
//! by reading its page instead of with AuditCount and AuditRead, two VM
//! exits per operation; on Bochs a VM exit costs far more than its
//! instructions (a full TLB flush each way), and these were half the
//! exits of a case. The executor still compares the mirror with an
//! AuditCount answer once per case, so the public calls stay checked.
//!
//! The page is written through `Views::write_phys`, as the check report
//! is, so it lands in the monitor write log (`super::dirty`) like every
//! other monitor write to guest RAM.

use okernel_abi::fuzz::AuditMirror;

use super::tracked::Fuzzed;
use crate::hw::{Cpu, Vmcs};
use crate::hypercall::page_table::record_bytes;
use crate::memmap::Gpa;
use crate::policy::Policy;
use crate::policy::audit::AuditLog;
use crate::vcpu::Vcpu;

/// The mirror's bytes for `audit`: `repr(C)`, little-endian.
pub fn bytes(audit: &AuditLog) -> [u8; size_of::<AuditMirror>()] {
    let mut out = [0u8; size_of::<AuditMirror>()];
    out[..8].copy_from_slice(&audit.total().to_le_bytes());
    if let Some(r) = audit.last() {
        out[8..].copy_from_slice(&record_bytes(&r.to_abi()));
    }
    out
}

/// Rewrites the registered mirror page, if any. A page that can no
/// longer be written (it always can: `CALL_BASELINE` checked it, and
/// guest RAM does not move) ends the mirroring; the executor then sees a
/// stale total and reports it.
pub fn update<V: Vmcs, C: Cpu, P: Policy, M: Fuzzed>(vcpu: &mut Vcpu<V, C, P, M>) {
    let Some(page) = vcpu.hooks.mirror else {
        return;
    };
    let bytes = bytes(&vcpu.audit);
    if vcpu.memory.write_phys(Gpa(page), &bytes).is_err() {
        vcpu.hooks.mirror = None;
    }
}
