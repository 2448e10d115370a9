//! What `CALL_CHECK` compares, in the order of `okernel_abi::fuzz`,
//! stopping at the first violation: locks (invariant 8), locked bytes,
//! the policy state, the views (invariants 1, 2, 3, 6, 7: [`super::oracle`]),
//! pinned CR bits (4), locked MSRs (5), unexpected exits.
//!
//! A check runs in one of two [`Scope`]s; `super::calls` picks it from the
//! views watch (`super::watch`) and the monitor write log
//! (`super::dirty`).

use crate::msrs::IA32_EFER;
use okernel_abi::fuzz::{MonitorVerdict, PolicyPart};
use okernel_abi::policy::MAX_CONTEXTS;

use super::baseline::{Baseline, PARTS, RegionSum, checksum, fingerprints};
use super::tracked::Tracking;
use crate::bits::EFER_LMA;
use crate::hw::{Cpu, Vmcs};
use crate::hypercall::locks::guest_msr;
use crate::policy::protection::Protection;
use crate::policy::views::Views;
use crate::vmx::error::VmFail;
use crate::vmx::fields::{Control64, GuestNatural};

/// What a check found: the first four fields of a `CheckReport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// The verdict.
    pub verdict: MonitorVerdict,
    /// What it is about (see [`MonitorVerdict`]).
    pub subject: u32,
    /// The baseline's value.
    pub expected: u64,
    /// The value found.
    pub actual: u64,
}

impl Finding {
    /// Every invariant held.
    pub const INTACT: Self = Self {
        verdict: MonitorVerdict::Intact,
        subject: 0,
        expected: 0,
        actual: 0,
    };

    const fn new(verdict: MonitorVerdict, subject: u32, expected: u64, actual: u64) -> Self {
        Self {
            verdict,
            subject,
            expected,
            actual,
        }
    }
}

/// How much a check recomputes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything: every locked region's checksum, every live view's
    /// rights.
    Full,
    /// Valid only while every view the guest ran with since the last
    /// intact full check was scanned and found within the rules
    /// (`super::watch`) and the write log has not overflowed: the
    /// checksums of the regions the log's pages overlap, and no view scan
    /// (the watch did it).
    /// The locks, fingerprints, running context, CR pins, MSRs and
    /// unexpected exits are compared as in a full check. Page tables and
    /// credentials, which the trusted view may write (by design: the
    /// trusted kernel owns them, and no other view may write them, as the
    /// full check's scan proved), are re-hashed by full checks only: a
    /// difference there is the trusted kernel's own, found within
    /// [`super::calls::FULL_CHECK_EVERY`] checks.
    Incremental,
}

impl Scope {
    /// Whether this scope re-hashes `region`.
    fn rehashes(self, region: &RegionSum, views: &dyn Tracking) -> bool {
        match self {
            Scope::Full => true,
            Scope::Incremental => views.dirty().written(region.range),
        }
    }
}

/// Everything a check reads (disjoint parts of the `Vcpu`).
pub struct Machine<'a, V: Vmcs, C: Cpu> {
    /// The policy state.
    pub prot: &'a mut Protection,
    /// The views and guest RAM.
    pub views: &'a dyn Tracking,
    /// The current VMCS (the guest's CRs, EFER, SYSENTER, EPTP).
    pub vmcs: &'a V,
    /// The processor (the MSRs VM entry does not switch).
    pub cpu: &'a C,
    /// Unexpected exits since the last check, and the first one's reason.
    pub unexpected: (u32, u16),
}

/// Compares `m` with `base`, in the documented order, over `scope`.
pub fn check<V: Vmcs, C: Cpu>(
    base: &Baseline,
    m: &mut Machine<'_, V, C>,
    scope: Scope,
) -> Result<Finding, VmFail> {
    use MonitorVerdict as V_;
    let p = &mut *m.prot;
    for (id, b) in base.regions.iter().enumerate() {
        if b.is_some() && !p.regions[id].is_some_and(|r| r.locked) {
            return Ok(Finding::new(V_::RegionUnlocked, id as u32, 1, 0));
        }
    }
    for (id, b) in base.regions.iter().enumerate() {
        if let Some(b) = b.filter(|b| scope.rehashes(b, m.views)) {
            let now = checksum(m.views, b.range);
            if now != b.sum {
                return Ok(Finding::new(V_::RegionChanged, id as u32, b.sum, now));
            }
        }
    }
    let now = fingerprints(p, m.views, m.vmcs)?;
    for ((part, &was), &is) in PARTS.iter().zip(&base.parts).zip(&now) {
        if was != is {
            return Ok(Finding::new(V_::PolicyChanged, *part as u32, was, is));
        }
    }
    let running = running_context(p, m.views, m.vmcs)?;
    if running != 0 {
        return Ok(Finding::new(
            V_::PolicyChanged,
            PolicyPart::Current as u32,
            0,
            running,
        ));
    }
    let scan = match scope {
        Scope::Full => super::oracle::too_permissive(p, m.views),
        Scope::Incremental => None,
    };
    if let Some(v) = scan {
        let perms = v.perms.bits();
        return Ok(Finding::new(
            V_::ViewTooPermissive,
            v.ctx.into(),
            v.gpa,
            perms,
        ));
    }
    for (cr, field, pinned) in [
        (0, GuestNatural::Cr0, base.cr0_pinned),
        (4, GuestNatural::Cr4, base.cr4_pinned),
    ] {
        let value = m.vmcs.read(field)?;
        if value & pinned != pinned {
            return Ok(Finding::new(V_::CrPinLost, cr, pinned, value));
        }
    }
    for &(msr, locked) in base.msrs.iter().flatten() {
        let value = guest_msr(m.vmcs, m.cpu, msr)?;
        let ignore = if msr == IA32_EFER { EFER_LMA } else { 0 };
        if (value ^ locked) & !ignore != 0 {
            return Ok(Finding::new(V_::MsrChanged, msr, locked, value));
        }
    }
    let (n, reason) = m.unexpected;
    if n != 0 {
        return Ok(Finding::new(V_::UnexpectedExit, reason.into(), 0, n.into()));
    }
    Ok(Finding::INTACT)
}

/// The context the guest actually runs in: the policy's current context;
/// if that is 0, the views' current one; if that is 0 too, the context
/// whose EPT pointer the VMCS holds (`u64::MAX` if none: SDM Vol. 3C
/// §25.6.11, the EPTP is what the processor walks).
pub fn running_context<V: Vmcs>(
    p: &Protection,
    views: &dyn Views,
    vmcs: &V,
) -> Result<u64, VmFail> {
    if p.current != 0 {
        return Ok(p.current.into());
    }
    if views.current() != 0 {
        return Ok(views.current().into());
    }
    let eptp = vmcs.read(Control64::Eptp)?;
    if views.eptp(0) == Some(eptp) {
        return Ok(0);
    }
    Ok((1..=MAX_CONTEXTS as u16)
        .find(|&c| views.eptp(c) == Some(eptp))
        .map_or(u64::MAX, u64::from))
}
