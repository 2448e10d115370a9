//! The views watch: the EPT views are scanned ([`super::oracle`]) at the
//! end of every VM exit that changed them, so the guest only ever runs
//! with views a scan has seen.
//!
//! This is what lets a `CALL_CHECK` after a view change stay incremental
//! (`super::check::Scope`): locked bytes can change only through a view
//! that lets the guest write them or through the monitor's own writes
//! (`super::dirty`'s log). If every view the guest ran with was scanned
//! and none granted such a write, only the logged writes need re-hashing;
//! the full re-hash of every locked region (most of a full check: about
//! 480 KiB for the demo kernel) is left to the periodic full check. A
//! view found too permissive is kept, the first one since the last check,
//! and the next check reports it even if a later exit put the view right
//! again (the guest may have written through it in between).
//!
//! The watch compares the views generation at the end of each exit with
//! the one it last scanned. A change it never saw (made outside an exit's
//! slow path) leaves the two unequal at the next check, which is then
//! full. Before the baseline nothing is watched: the guest is still
//! setting its policy up, and the baseline's full check comes first.

use super::check::Finding;
use super::oracle::too_permissive;
use super::tracked::{Fuzzed, Tracking};
use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::vcpu::Vcpu;
use okernel_abi::fuzz::MonitorVerdict;

/// What the watch knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watch {
    /// The views generation last scanned.
    pub scanned: u64,
    /// The first too-permissive view a scan found since the last check.
    pub finding: Option<Finding>,
}

impl Watch {
    /// Starts watching from the views as they are now (the baseline).
    pub fn restart(&mut self, views: &dyn Tracking) {
        *self = Self {
            scanned: views.dirty().generation(),
            finding: None,
        };
    }

    /// Whether every view the guest ran with since the last check was
    /// scanned and found within the rules.
    pub fn all_seen(&self, views: &dyn Tracking) -> bool {
        self.finding.is_none() && self.scanned == views.dirty().generation()
    }
}

/// Scans the views if the exit that just ended changed them (after a
/// baseline only).
pub fn after_exit<V: Vmcs, C: Cpu, P: Policy, M: Fuzzed>(vcpu: &mut Vcpu<V, C, P, M>) {
    if vcpu.hooks.baseline.is_none() {
        return;
    }
    let Some(prot) = vcpu.policy.protection() else {
        return;
    };
    let views = &vcpu.memory;
    let watch = &mut vcpu.hooks.watch;
    let generation = views.dirty().generation();
    if generation == watch.scanned {
        return;
    }
    watch.scanned = generation;
    if watch.finding.is_none() {
        watch.finding = too_permissive(prot, views).map(|v| Finding {
            verdict: MonitorVerdict::ViewTooPermissive,
            subject: v.ctx.into(),
            expected: v.gpa,
            actual: v.perms.bits(),
        });
    }
}
