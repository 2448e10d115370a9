//! The MSR-bitmap page the VMCS points at, as the policy changes it
//! (`LockMsr` makes a write exit): a handle to the page whose `unsafe`
//! constructor carries the one invariant its accesses need.

use core::ptr::NonNull;

use crate::vmx::msr_bitmap::{MsrAccess, MsrBitmap};

/// The MSR-bitmap page the VMCS points at (SDM Vol. 3C §25.6.9).
#[derive(Debug)]
pub struct MsrBitmapPage(NonNull<[u8; 4096]>);

impl MsrBitmapPage {
    /// The page at `page`.
    ///
    /// # Safety
    /// `page` must be the MSR-bitmap page of the current VMCS (or a test's
    /// page), valid and used by nothing else for as long as the handle
    /// lives.
    pub unsafe fn new(page: NonNull<[u8; 4096]>) -> Self {
        Self(page)
    }

    /// Makes WRMSR of `msr` exit.
    pub fn intercept_write(&mut self, msr: u32) {
        // SAFETY: `new`'s contract: the page is valid and exclusively this
        // handle's; the processor only reads it, and not while the monitor
        // runs (the guest is stopped; one CPU).
        let page = unsafe { self.0.as_mut() };
        let mut b = MsrBitmap::wrap(page);
        b.intercept(msr, MsrAccess::Write);
    }

    /// Whether WRMSR of `msr` exits.
    pub fn write_exits(&mut self, msr: u32) -> bool {
        // SAFETY: as in `intercept_write`.
        let page = unsafe { self.0.as_mut() };
        MsrBitmap::wrap(page).exits(msr, MsrAccess::Write)
    }
}
