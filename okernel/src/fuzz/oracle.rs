//! The EPT-view invariants as one function, [`too_permissive`]: what no
//! live view may grant, page by page, whatever the policy state. The
//! monitor's `CALL_CHECK` runs it after every VM-fuzzing case, and the
//! host `policy` fuzz target after every operation, so both fuzzers hold
//! the views to the same rules (DESIGN.md §2):
//!
//! - invariant 1: monitor memory (the loader's ranges and the frame pool)
//!   is mapped in no view (no rights at all);
//! - invariants 2 and 3: locked text and read-only kinds (rodata,
//!   ro-after-init, descriptor and dispatch tables) are writable in no
//!   view;
//! - invariants 3 and 7: locked page tables and credentials are writable
//!   in the trusted view only;
//! - invariant 6: a context's protected pages are mapped (any right) in no
//!   other context's view.
//!
//! W^X for the rest of memory (nothing but text supervisor-executable) is
//! not checked here: it would mean walking every page of RAM; the guest's
//! executor tests it by executing.
//!
//! Each range is walked leaf by leaf ([`Inspect::rights_at`]): a 2 MiB or
//! 1 GiB leaf, or an empty entry, is one step.

use ept::Perms;
use okernel_abi::policy::{MAX_CONTEXTS, RegionKind};

use super::inspect::Inspect;
use crate::memmap::{Gpa, PhysRange};
use crate::policy::protection::Protection;

/// Every right an EPT entry can give.
pub const ANY: Perms = Perms::RWX.union(Perms::USER_EXECUTE);

/// What a page is, for the view invariants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    /// In a locked region of this kind.
    Region(RegionKind),
    /// A protected page of this context.
    Protected(u16),
    /// Monitor memory.
    Monitor,
}

impl Guarded {
    /// The rights no view of context `ctx` may give such a page.
    pub const fn forbidden(self, ctx: u16) -> Perms {
        match self {
            Guarded::Region(RegionKind::PageTable | RegionKind::Credentials) if ctx == 0 => {
                Perms::NONE
            }
            Guarded::Region(_) => Perms::WRITE,
            Guarded::Protected(owner) if owner == ctx => Perms::NONE,
            Guarded::Protected(_) | Guarded::Monitor => ANY,
        }
    }

    /// The invariant of DESIGN.md §2 a violation breaks, for messages.
    pub const fn invariant(self) -> &'static str {
        match self {
            Guarded::Region(RegionKind::Text) => "2 (locked text writable)",
            Guarded::Region(RegionKind::PageTable) => "7 (locked page table writable)",
            Guarded::Region(_) => "3 (locked read-only memory writable)",
            Guarded::Protected(_) => "6 (another context's protected page mapped)",
            Guarded::Monitor => "1 (monitor memory mapped)",
        }
    }
}

/// A page a view grants more than the policy allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// The context whose view it is.
    pub ctx: u16,
    /// The guest-physical page.
    pub gpa: u64,
    /// The rights the view gives it.
    pub perms: Perms,
    /// What the page is.
    pub what: Guarded,
}

/// The first page (by context, then locked regions in slot order,
/// protected pages, monitor ranges) that some live view maps with a
/// forbidden right; `None` when every view keeps the invariants.
pub fn too_permissive(p: &Protection, views: &dyn Inspect) -> Option<Violation> {
    for ctx in 0..=MAX_CONTEXTS as u16 {
        if !views.is_live(ctx) {
            continue;
        }
        let regions = p
            .locked_regions()
            .map(|r| (r.range, Guarded::Region(r.kind)));
        let pages = p
            .protected_pages()
            .map(|pg| (PhysRange::new(pg.gpa.0, 4096), Guarded::Protected(pg.owner)));
        let monitor = views.monitor().iter().map(|&m| (m, Guarded::Monitor));
        for (range, what) in regions.chain(pages).chain(monitor) {
            if let Some(v) = scan(views, ctx, range, what) {
                return Some(v);
            }
        }
    }
    None
}

/// The first page of `range` whose rights in `ctx`'s view include one
/// `what` forbids there.
fn scan(views: &dyn Inspect, ctx: u16, range: PhysRange, what: Guarded) -> Option<Violation> {
    let forbidden = what.forbidden(ctx);
    if forbidden.is_empty() {
        return None;
    }
    let mut at = range.start & !0xfff;
    while at < range.end {
        let (perms, end) = views.rights_at(ctx, Gpa(at));
        if perms.intersects(forbidden) {
            return Some(Violation {
                ctx,
                gpa: at,
                perms,
                what,
            });
        }
        at = end.max(at + 0x1000);
    }
    None
}
