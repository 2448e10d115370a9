//! Code on the last page of the lower canonical half (issue 18): an
//! instruction that ends exactly at 0x0000_8000_0000_0000 completes, and
//! the fetch of the next one raises #GP(0) (SDM Vol. 1 §3.3.7.1). Under
//! okernel an instruction that exits there must not stop the monitor.

use core::cell::UnsafeCell;

/// The last canonical 4 KiB page (48-bit linear addresses).
pub const TOP_PAGE: u64 = 0x0000_7fff_ffff_f000;

/// A PDPT, a PD, a PT and the code page, page-aligned.
#[repr(C, align(4096))]
struct Pages(UnsafeCell<[[u64; 512]; 4]>);

// SAFETY: one CPU; written only by `map_top`, read by the processor.
unsafe impl Sync for Pages {}

static PAGES: Pages = Pages(UnsafeCell::new([[0; 512]; 4]));

/// Present, writable, accessed, dirty.
const FLAGS: u64 = 0x1 | 0x2 | 0x20 | 0x40;

/// Maps [`TOP_PAGE`] in the current address space (PML4 slot 255, which
/// the hand-off tables leave empty) to a code page ending with `code`;
/// returns the address of `code`'s first byte. The PML4 must be writable
/// (no page tables locked: the `boot` scenario).
pub fn map_top(code: &[u8]) -> u64 {
    let pml4 = x86_64::registers::control::Cr3::read_raw()
        .0
        .start_address()
        .as_u64();
    let pages = PAGES.0.get();
    let base = pages as u64;
    let addr = |i: usize| base + 4096 * i as u64;
    // SAFETY: `pml4` is the current PML4, identity-mapped like all of the
    // first 4 GiB; slot 255 maps nothing else. `PAGES` is this module's
    // own memory, identity-mapped (its address is its physical address).
    unsafe {
        let t = &mut *pages;
        t[0][511] = addr(1) | FLAGS;
        t[1][511] = addr(2) | FLAGS;
        t[2][511] = addr(3) | FLAGS;
        let bytes = (&raw mut t[3]).cast::<u8>();
        for (i, b) in code.iter().enumerate() {
            bytes.add(4096 - code.len() + i).write_volatile(*b);
        }
        ((pml4 as *mut u64).add(255)).write_volatile(addr(0) | FLAGS);
    }
    super::cpu::invlpg(TOP_PAGE);
    TOP_PAGE + 4096 - code.len() as u64
}
