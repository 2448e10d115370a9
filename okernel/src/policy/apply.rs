//! The EPT permissions the policy gives each view, and how changes reach
//! the views (invariants 1, 2, 3, 6, 7).
//!
//! | page | trusted view (0) | untrusted view (1..) |
//! |---|---|---|
//! | monitor memory | not mapped | not mapped |
//! | locked text | R, X (+ user-X with MBEC) | same |
//! | locked rodata, ro-after-init, descriptor tables, dispatch tables | R | R |
//! | locked page tables, credentials | RW | R |
//! | protected page of context `c` | not present (unless `c` = 0: RW) | RW in `c`'s view only, not present elsewhere |
//! | any other RAM, before W^X or under `GuestPageTables` | RWX | RWX |
//! | any other RAM, W^X on, with MBEC | RW + user-X | RW + user-X |
//! | any other RAM, W^X on, without MBEC | RW (ring-3 code must be registered as text) | RW |
//! | reserved memory, W^X on | RW | RW |
//!
//! Under the execute rule `GuestPageTables` (ABI 1.2) every locked kind
//! above also keeps execute (never write): EPT then guards integrity only.
//!
//! W^X turns on when the first text region is locked (rule
//! `LockedTextOnly`). "Not present" keeps
//! the page's address in the entry (rights 000b, `ept` invariant 3).
//!
//! Every function here makes a sequence of [`Views::protect`] calls; the
//! caller first checks with [`check_frames`] that the pool holds
//! [`FRAMES_PER_PROTECT`] frames per call, so no call runs out of frames
//! half-way. A failure after that check is a monitor bug, reported as a
//! fatal exit (the guest never runs with a half-applied change).

use ept::Perms;
use okernel_abi::hypercall::Status;
use okernel_abi::policy::{ExecuteRule, RegionKind};

use super::protection::{Protection, Region};
use super::views::{FRAMES_PER_PROTECT, Views};
use crate::hw::{Cpu, InveptKind};
use crate::mem::MAX_RAM_RANGES;
use crate::memmap::{Gpa, PhysRange};
use crate::vmx::error::VmFail;

/// What a page is, for the views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// RAM in no locked region and not protected.
    Plain,
    /// In a locked region of this kind.
    Region(RegionKind),
    /// A protected page of this context.
    Protected(u16),
}

/// The rights `class` gets in context `ctx`'s view.
pub fn perms(p: &Protection, class: Class, ctx: u16) -> Perms {
    let user_x = if p.mbec_active {
        Perms::USER_EXECUTE
    } else {
        Perms::empty()
    };
    // Under `GuestPageTables` EPT guards integrity only: execute rights
    // on locked data are the kernel's page tables' business too (Linux's
    // vDSO is code inside its read-only data, run by every process).
    let data_x = if p.execute == ExecuteRule::GuestPageTables {
        Perms::EXECUTE
    } else {
        Perms::empty()
    };
    match class {
        Class::Plain if p.wx => Perms::RW | user_x,
        Class::Plain => Perms::RWX,
        Class::Region(RegionKind::Text) => Perms::RX | user_x | extra_text_rights(ctx),
        Class::Region(RegionKind::PageTable | RegionKind::Credentials) if ctx == 0 => {
            Perms::RW | data_x
        }
        Class::Region(_) => Perms::R | data_x,
        Class::Protected(owner) if owner == ctx => Perms::RW,
        Class::Protected(_) => Perms::NONE,
    }
}

/// `Exhausted` unless the pool holds enough frames for `calls` protect
/// calls.
pub fn check_frames(views: &dyn Views, calls: u64) -> Result<(), Status> {
    if views.frames_available() >= calls.saturating_mul(FRAMES_PER_PROTECT) {
        Ok(())
    } else {
        Err(Status::Exhausted)
    }
}

/// The live contexts (views) in slot order.
pub fn live(views: &dyn Views) -> impl Iterator<Item = u16> + '_ {
    (0..=okernel_abi::policy::MAX_CONTEXTS as u16).filter(move |&c| views.is_live(c))
}

/// The number of live views.
pub fn live_count(views: &dyn Views) -> u64 {
    live(views).count() as u64
}

/// Gives `range` the rights of `class` in every live view.
pub fn apply_range(
    p: &Protection,
    views: &mut dyn Views,
    range: PhysRange,
    class: Class,
) -> Result<(), ept::Error> {
    for ctx in 0..=okernel_abi::policy::MAX_CONTEXTS as u16 {
        if views.is_live(ctx) {
            views.protect(ctx, Gpa(range.start), range.len(), perms(p, class, ctx))?;
        }
    }
    Ok(())
}

/// Gives a locked region its rights in every live view.
pub fn apply_region(p: &Protection, views: &mut dyn Views, r: &Region) -> Result<(), ept::Error> {
    apply_range(p, views, r.range, Class::Region(r.kind))
}

/// Recomputes every page of context `ctx`'s view from the policy: with
/// W^X, execute rights off everything, user-execute back on plain RAM
/// where MBEC is on; then every locked region and every protected page;
/// then, in the trusted view while it is open, the APIC page's write trap
/// (`super::xapic_trap`). Makes [`Protection::protects_per_view`] protect
/// calls.
pub fn recompute_view(p: &Protection, views: &mut dyn Views, ctx: u16) -> Result<(), ept::Error> {
    if p.wx {
        views.protect(ctx, Gpa(0), views.mapped_end(), Perms::RW)?;
        let mut ram = [PhysRange { start: 0, end: 0 }; MAX_RAM_RANGES];
        let n = views.ram().len().min(MAX_RAM_RANGES);
        ram[..n].copy_from_slice(&views.ram()[..n]);
        for r in &ram[..n] {
            let r = r.page_aligned_outward();
            views.protect(ctx, Gpa(r.start), r.len(), perms(p, Class::Plain, ctx))?;
        }
    }
    for r in p.locked_regions() {
        views.protect(
            ctx,
            Gpa(r.range.start),
            r.range.len(),
            perms(p, Class::Region(r.kind), ctx),
        )?;
    }
    for pg in p.protected_pages() {
        views.protect(ctx, pg.gpa, 4096, perms(p, Class::Protected(pg.owner), ctx))?;
    }
    // The APIC page's write trap (`crate::exit::xapic`), which the reset
    // to RW above would open.
    if let (Some(page), 0) = (p.xapic_trap, ctx) {
        views.protect(0, Gpa(page), 4096, Perms::READ)?;
    }
    Ok(())
}

/// Drops cached translations of every view after a change (SDM Vol. 3C
/// §29.4.3.1: software must invalidate after changing EPT entries that
/// may be cached): INVEPT all-context where supported, else
/// single-context for each live view's EPTP.
pub fn invalidate(cpu: &mut impl Cpu, all: bool, views: &dyn Views) -> Result<(), VmFail> {
    if all {
        return cpu.invept(InveptKind::AllContext);
    }
    for ctx in live(views) {
        if let Some(eptp) = views.eptp(ctx) {
            cpu.invept(InveptKind::SingleContext(eptp))?;
        }
    }
    Ok(())
}

/// The rights locked text gets in `ctx`'s view besides read and execute:
/// none (the policy hook's rule as written; a planted-defect build may
/// say otherwise: `crate::fuzz::planted_policy`).
#[inline(always)]
fn extra_text_rights(ctx: u16) -> Perms {
    <crate::seam::PolicyDefects as super::hooks::PolicyHooks>::extra_text_rights(ctx)
}
