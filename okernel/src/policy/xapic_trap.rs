//! The APIC page's write trap as policy state (`crate::exit::xapic` has
//! the why and the handler): open, the page is read-only in the trusted
//! context's view, and [`crate::policy::apply::recompute_view`] keeps it
//! so; closed, the page is the guest's again. Both change EPT entries:
//! the caller invalidates every view and bumps the generation (so every
//! other processor drops its cached translation at its next exit).

use ept::Perms;

use super::Protection;
use super::views::Views;
use crate::memmap::Gpa;

/// The size of the APIC's page.
pub const PAGE: u64 = 0x1000;

/// Opens the trap on the page at `page` (read-only in the trusted
/// context's view: the only view while a processor can be started).
/// `Ok(false)`: that view does not map the page writable, nothing to trap.
pub fn open(p: &mut Protection, views: &mut dyn Views, page: u64) -> Result<bool, ept::Error> {
    let writable = views
        .translate(0, Gpa(page))
        .is_some_and(|t| t.page.attrs.perms.contains(Perms::WRITE));
    if !writable {
        return Ok(false);
    }
    views.protect(0, Gpa(page), PAGE, Perms::READ)?;
    p.xapic_trap = Some(page);
    Ok(true)
}

/// Closes the trap if it is open (the page writable again in the trusted
/// context's view): whether it was.
pub fn close(p: &mut Protection, views: &mut dyn Views) -> Result<bool, ept::Error> {
    match p.xapic_trap.take() {
        Some(page) => {
            views.protect(0, Gpa(page), PAGE, Perms::RW)?;
            Ok(true)
        }
        None => Ok(false),
    }
}
