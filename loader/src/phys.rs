//! Physical memory as the image sees it: the first 4 GiB identity-mapped
//! by the entry stub (virtual address == physical address).

use loader::bootinfo::PhysMem;
use okernel::memmap::PhysRange;

/// The end of the identity map the entry stub builds.
pub const IDENTITY_END: u64 = 4 << 30;

/// Read access to identity-mapped physical memory.
pub struct Identity;

impl PhysMem for Identity {
    fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let end = addr.checked_add(len as u64)?;
        if addr == 0 || end > IDENTITY_END {
            return None;
        }
        // SAFETY: [addr, end) lies inside the identity map (checked above),
        // so the pointer is valid for reads; boot information is written by
        // the boot loader before entry and by no one afterwards.
        Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
    }
}

/// The bytes of `range` for writing, when it lies in the identity map.
///
/// # Safety
///
/// `range` must be RAM that nothing else uses for the returned lifetime.
pub unsafe fn bytes_mut(range: PhysRange) -> Option<&'static mut [u8]> {
    if range.start == 0 || range.end > IDENTITY_END {
        return None;
    }
    // SAFETY: inside the identity map (checked above); exclusive use is
    // forwarded from the caller.
    Some(unsafe { core::slice::from_raw_parts_mut(range.start as *mut u8, range.len() as usize) })
}

/// The physical range of this image, from the linker script.
pub fn image_range() -> PhysRange {
    unsafe extern "C" {
        static __image_start: u8;
        static __image_end: u8;
    }
    PhysRange {
        start: (&raw const __image_start) as u64,
        end: (&raw const __image_end) as u64,
    }
}

/// Copies the bytes of `from` over `to` (same length; the two may
/// overlap), when both lie in the identity map.
///
/// # Safety
///
/// `to` must be RAM that nothing else uses, and `from` readable memory.
pub unsafe fn copy(from: PhysRange, to: PhysRange) -> Option<()> {
    let inside = |r: PhysRange| r.start != 0 && r.end <= IDENTITY_END;
    if from.len() != to.len() || !inside(from) || !inside(to) {
        return None;
    }
    // SAFETY: both ranges lie inside the identity map (checked above);
    // `to` is exclusively the caller's; `ptr::copy` allows overlap.
    unsafe {
        core::ptr::copy(
            from.start as *const u8,
            to.start as *mut u8,
            from.len() as usize,
        )
    };
    Some(())
}
