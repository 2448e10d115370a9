//! What `CALL_BASELINE` records and `CALL_CHECK` recomputes: a checksum
//! of every locked region's bytes, a fingerprint of each part of the
//! policy state ([`PolicyPart`] 0–6), and the CR pins and locked MSR
//! values the processor-state oracles compare the guest's registers with.
//!
//! Fingerprints cover what the policy decides *and* what makes it
//! effective, so a monitor bug that drops the effect is seen too: the
//! pinned bits must be in the CR guest/host masks (SDM Vol. 3C §25.6.6),
//! a locked MSR's write must exit (the MSR bitmap, §25.6.9), the
//! descriptor-table lock needs descriptor-table exiting (§25.6.2), W^X
//! with MBEC needs mode-based execute control. Regions and gates are
//! fingerprinted by slot (their ids are the guest's handles and are never
//! freed); MSR locks, live contexts and protected pages as sets, so a
//! page freed and allocated again into another slot fingerprints the
//! same.

use okernel_abi::fuzz::PolicyPart;
use okernel_abi::policy::{MAX_CONTEXTS, RegionKind};

use super::hash::{SetHash, WordHash, fold};
use super::inspect::Inspect;
use crate::hw::Vmcs;
use crate::memmap::{Gpa, PhysRange};
use crate::policy::protection::{MAX_LOCKED_MSRS, MAX_REGIONS, Protection};
use crate::policy::views::Views;
use crate::vmx::controls::SecondaryProcBased;
use crate::vmx::error::VmFail;
use crate::vmx::fields::{Control32, ControlNatural};

/// The parts [`fingerprints`] computes ([`PolicyPart`] 0–6; `Current` is
/// checked against the trusted context, not fingerprinted).
pub const PARTS: [PolicyPart; 7] = [
    PolicyPart::Regions,
    PolicyPart::Pins,
    PolicyPart::Msrs,
    PolicyPart::DescriptorTables,
    PolicyPart::Gates,
    PolicyPart::Contexts,
    PolicyPart::ProtectedPages,
];

/// A locked region's range, kind and checksum at the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionSum {
    /// The range checksummed.
    pub range: PhysRange,
    /// Its kind (whether some view may write it: see
    /// [`super::check::Scope::Incremental`]).
    pub kind: RegionKind,
    /// Its [`checksum`].
    pub sum: u64,
}

/// What `CALL_BASELINE` recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline {
    /// By region id: the regions locked at the baseline.
    pub regions: [Option<RegionSum>; MAX_REGIONS],
    /// [`fingerprints`], in [`PARTS`] order.
    pub parts: [u64; PARTS.len()],
    /// Pinned CR0 bits.
    pub cr0_pinned: u64,
    /// Pinned CR4 bits.
    pub cr4_pinned: u64,
    /// Locked MSRs and their values.
    pub msrs: [Option<(u32, u64)>; MAX_LOCKED_MSRS],
    /// Bytes checksummed.
    pub bytes: u64,
}

impl Baseline {
    /// Records the baseline of `p`.
    pub fn record(
        p: &mut Protection,
        views: &dyn Inspect,
        vmcs: &impl Vmcs,
    ) -> Result<Self, VmFail> {
        let mut regions = [None; MAX_REGIONS];
        let mut bytes = 0u64;
        for (slot, r) in regions.iter_mut().zip(&p.regions) {
            if let Some(r) = r.filter(|r| r.locked) {
                *slot = Some(RegionSum {
                    range: r.range,
                    kind: r.kind,
                    sum: checksum(views, r.range),
                });
                bytes += r.range.len();
            }
        }
        Ok(Self {
            regions,
            parts: fingerprints(p, views, vmcs)?,
            cr0_pinned: p.cr0_pinned,
            cr4_pinned: p.cr4_pinned,
            msrs: p.msrs,
            bytes,
        })
    }
}

/// The [`WordHash`] of `range`'s bytes in guest RAM, read in place
/// through [`Inspect::read_phys_with`] (whatever the views map). If the
/// range cannot be read as a whole (never for a region registration
/// accepted), it is read 4 KiB at a time and a page that cannot be read
/// hashes as its address, so the checksum still changes if readability
/// does. Both ways give the same hash for the same bytes (the hash does
/// not depend on how the bytes are split at multiples of 32).
pub fn checksum(views: &dyn Inspect, range: PhysRange) -> u64 {
    let mut h = WordHash::new();
    let whole = views.read_phys_with(Gpa(range.start), range.len(), &mut |b| h.update(b));
    if whole.is_err() {
        h = WordHash::new();
        let mut at = range.start;
        while at < range.end {
            let n = (range.end - at).min(4096);
            if views
                .read_phys_with(Gpa(at), n, &mut |b| h.update(b))
                .is_err()
            {
                h.update(&(!at).to_le_bytes());
            }
            at += n;
        }
    }
    h.finish()
}

/// The fingerprint of each part of [`PARTS`] (see the module docs).
pub fn fingerprints(
    p: &mut Protection,
    views: &dyn Views,
    vmcs: &impl Vmcs,
) -> Result<[u64; PARTS.len()], VmFail> {
    let secondary = vmcs.read(Control32::SecondaryProcessorBasedControls)?;
    let on = |bit: SecondaryProcBased| u64::from(secondary & bit.bits() != 0);

    let mut regions = fold(u64::from(p.wx), u64::from(p.mbec_active));
    regions = fold(regions, on(SecondaryProcBased::MODE_BASED_EXECUTE_CONTROL));
    for (id, r) in p.regions.iter().enumerate() {
        // An empty slot is one word (most are empty), a region five.
        regions = match r {
            Some(r) => [
                id as u64,
                r.range.start,
                r.range.end,
                r.kind as u64,
                u64::from(r.locked),
            ]
            .iter()
            .fold(regions, |h, &w| fold(h, w)),
            None => fold(regions, u64::MAX),
        };
    }

    let cr0_mask = vmcs.read(ControlNatural::Cr0GuestHostMask)?;
    let cr4_mask = vmcs.read(ControlNatural::Cr4GuestHostMask)?;
    let pins = [
        p.cr0_pinned,
        p.cr4_pinned,
        cr0_mask & p.cr0_pinned,
        cr4_mask & p.cr4_pinned,
    ]
    .iter()
    .fold(1, |h, &w| fold(h, w));

    let mut msrs = SetHash::default();
    let locked = p.msrs;
    for (msr, value) in locked.iter().flatten() {
        let exits = p.msr_bitmap.as_mut().is_some_and(|b| b.write_exits(*msr));
        msrs.add(&[u64::from(*msr), *value, u64::from(exits)]);
    }

    let dt = fold(
        u64::from(p.descriptor_tables_locked),
        on(SecondaryProcBased::DESCRIPTOR_TABLE_EXITING),
    );

    let gates = p.gates.iter().enumerate().fold(3, |h, (id, g)| match g {
        Some(g) => fold(fold(fold(fold(h, id as u64), g.linear), g.gpa.0), g.stack),
        None => fold(h, u64::MAX),
    });

    let mut contexts = 0u64;
    for ctx in 0..=MAX_CONTEXTS {
        contexts |= u64::from(p.contexts[ctx]) << ctx;
        contexts |= u64::from(views.is_live(ctx as u16)) << (32 + ctx);
    }

    let mut pages = SetHash::default();
    for pg in p.protected_pages() {
        pages.add(&[pg.gpa.0, u64::from(pg.owner)]);
    }

    Ok([regions, pins, msrs.0, dt, gates, fold(5, contexts), pages.0])
}
