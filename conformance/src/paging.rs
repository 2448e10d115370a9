//! The kernel's own 4-level page tables (SDM Vol. 3A §5.5): the first
//! 4 GiB identity-mapped with 2 MiB pages as the loader's, the MMIO window
//! from 0xFEC0_0000 uncached, and the pages the checks need:
//!
//! | linear address | page | for |
//! |---|---|---|
//! | `LAB` | user data (U/S = 1) | SMAP |
//! | `LAB + 4K` | user code, `ret` (U/S = 1); at +0x10 `sgdt [rsp - 16]; ud2` | SMEP, UMIP |
//! | `LAB + 8K` | supervisor code, `ret`, XD = 1 | NX |
//! | `BOUNDARY` | the last page below the canonical boundary (U/S = 1) | RIP advance at 2^47, from ring 0 and ring 3 |
//! | `WRAP_ENTRY` (4 GiB − 4 KiB) | code ending at 4 GiB − 1, instead of the BIOS ROM's last page | EIP wrap in compatibility mode |
//! | 0 | `ud2`, instead of physical page 0 | where the wrapped EIP lands |
//!
//! Nothing maps 4 GiB and above in the lower half (a page-fault target).

use core::cell::UnsafeCell;

/// Where the paging checks' pages start: 1 GiB, a 2 MiB region nothing
/// else uses.
pub const LAB: u64 = 0x4000_0000;
/// The last page of the lower canonical half.
pub const BOUNDARY: u64 = 0x7fff_ffff_f000;
/// Ring-3 code on the user code page: `sgdt [rsp - 16]; ud2` (the UMIP
/// checks).
pub const UMIP_SGDT_ENTRY: u64 = LAB + 0x1000 + 0x10;
/// The first address nothing maps.
pub const UNMAPPED: u64 = 0x1_0000_0000;

const P: u64 = 1;
const W: u64 = 1 << 1;
const U: u64 = 1 << 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;
const MMIO: u64 = 0xfec0_0000;

#[repr(C, align(4096))]
struct Page(UnsafeCell<[u64; 512]>);

// SAFETY: written only by `init` on the one CPU before CR3 points at
// them; afterwards only the processor (and the checks' code bytes) read.
unsafe impl Sync for Page {}

macro_rules! pages {
    ($($n:ident),*) => { $(static $n: Page = Page(UnsafeCell::new([0; 512]));)* };
}
pages!(
    PML4,
    PDPT_LOW,
    PD0,
    PD1,
    PD2,
    PD3,
    PT_LAB,
    PDPT_HI,
    PD_HI,
    PT_HI,
    USER_DATA,
    USER_CODE,
    NX_CODE,
    BOUNDARY_PAGE,
    PT_ZERO,
    PT_TOP,
    ZERO_PAGE,
    TOP_PAGE
);

fn addr(p: &Page) -> u64 {
    p.0.get() as u64
}

fn set(p: &Page, i: usize, v: u64) {
    // SAFETY: single CPU, before the tables are in use (see `Sync`).
    unsafe { (*p.0.get())[i] = v };
}

/// Puts `code` at `offset` in the page of `p`.
fn code(p: &Page, offset: usize, code: &[u8]) {
    // SAFETY: single CPU; the page is ours, 4096 bytes, and `offset +
    // code.len()` stays inside it (callers pass constants).
    let bytes = unsafe { core::slice::from_raw_parts_mut(p.0.get().cast::<u8>(), 4096) };
    bytes[offset..offset + code.len()].copy_from_slice(code);
}

/// The entry point of the boundary code: `xor eax, eax; cpuid` whose
/// last byte is at 2^47 - 1.
pub const BOUNDARY_ENTRY: u64 = BOUNDARY + 0xffc;

/// The entry point of the wrap code: `xor eax, eax; cpuid` whose last
/// byte is at 4 GiB − 1, run in compatibility mode: EIP wraps to 0 (SDM
/// Vol. 1 §3.5), where linear page 0 holds `ud2`.
pub const WRAP_ENTRY: u64 = 0xffff_fffc;

/// Builds the tables and loads CR3.
pub fn init() {
    set(&PML4, 0, addr(&PDPT_LOW) | P | W | U);
    for (i, pd) in [&PD0, &PD1, &PD2, &PD3].into_iter().enumerate() {
        let user = if i == 1 { U } else { 0 };
        set(&PDPT_LOW, i, addr(pd) | P | W | user);
        for j in 0..512 {
            let a = ((i as u64) << 30) | ((j as u64) << 21);
            let uc = if a >= MMIO { PCD | PWT } else { 0 };
            set(pd, j, a | P | W | PS | uc);
        }
    }
    set(&PD1, 0, addr(&PT_LAB) | P | W | U);
    set(&PT_LAB, 0, addr(&USER_DATA) | P | W | U);
    set(&PT_LAB, 1, addr(&USER_CODE) | P | U);
    set(&PT_LAB, 2, addr(&NX_CODE) | P | XD);
    code(&USER_CODE, 0, &[0xc3]);
    // sgdt [rsp - 16]; ud2 — ring 3's SGDT for the UMIP lines.
    code(
        &USER_CODE,
        (UMIP_SGDT_ENTRY - LAB - 0x1000) as usize,
        &[0x0f, 0x01, 0x44, 0x24, 0xf0, 0x0f, 0x0b],
    );
    code(&NX_CODE, 0, &[0xc3]);
    // A user page (U/S = 1), so ring 3 runs it too; the kernel runs it
    // with SMEP off.
    set(&PML4, 255, addr(&PDPT_HI) | P | W | U);
    set(&PDPT_HI, 511, addr(&PD_HI) | P | W | U);
    set(&PD_HI, 511, addr(&PT_HI) | P | W | U);
    set(&PT_HI, 511, addr(&BOUNDARY_PAGE) | P | W | U);
    // xor eax, eax; cpuid — ending at 0x7fff_ffff_ffff.
    code(&BOUNDARY_PAGE, 0xffc, &[0x31, 0xc0, 0x0f, 0xa2]);
    // Linear page 0 → `ud2`; the rest of the first 2 MiB identity.
    set(&PD0, 0, addr(&PT_ZERO) | P | W);
    set(&PT_ZERO, 0, addr(&ZERO_PAGE) | P | W);
    for i in 1..512 {
        set(&PT_ZERO, i, ((i as u64) << 12) | P | W);
    }
    code(&ZERO_PAGE, 0, &[0x0f, 0x0b]);
    // The last 4 KiB below 4 GiB → the wrap code; the rest of the last
    // 2 MiB as before (uncached).
    set(&PD3, 511, addr(&PT_TOP) | P | W);
    for i in 0..511 {
        set(
            &PT_TOP,
            i,
            (0xffe0_0000 + ((i as u64) << 12)) | P | W | PCD | PWT,
        );
    }
    set(&PT_TOP, 511, addr(&TOP_PAGE) | P | W);
    // xor eax, eax; cpuid — ending at 0xffff_ffff.
    code(&TOP_PAGE, 0xffc, &[0x31, 0xc0, 0x0f, 0xa2]);
    // SAFETY: the new tables map the first 4 GiB exactly as the loader's
    // do but for linear page 0 and the BIOS ROM's last page, which this
    // kernel never uses (its code, stack and data are elsewhere below
    // 4 GiB), so execution continues; PML4 is 4 KiB aligned.
    unsafe {
        core::arch::asm!("mov cr3, {}", in(reg) addr(&PML4), options(nostack));
    }
}
