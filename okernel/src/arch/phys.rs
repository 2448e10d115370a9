//! Byte copies between the monitor's memory and physical memory through
//! the loader's identity map (`hw::phys::IdentityMap`), as one `rep movsb`:
//! the physical address is a number handed to the instruction, never a
//! Rust pointer, so physical page 0 — guest RAM like any other — is no
//! null pointer to the compiler.

/// Copies `len` bytes from address `src` to address `dst` (`rep movsb`,
/// SDM Vol. 2B MOVS; RFLAGS.DF is clear in the monitor, as the System V
/// ABI it runs under requires).
///
/// # Safety
///
/// `[src, src + len)` must be mapped readable and `[dst, dst + len)`
/// writable at these addresses, the two must not overlap, and no Rust
/// reference may alias `[dst, dst + len)` or a `&mut` alias `[src, src +
/// len)` during the copy.
pub unsafe fn copy(dst: usize, src: usize, len: usize) {
    // SAFETY: the caller's contract: both ranges are mapped as the
    // instruction uses them and nothing Rust holds aliases them; the
    // instruction touches no stack and leaves RFLAGS unchanged (it only
    // reads DF).
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rdi") dst => _,
            inout("rsi") src => _,
            inout("rcx") len => _,
            options(nostack, preserves_flags),
        );
    }
}
