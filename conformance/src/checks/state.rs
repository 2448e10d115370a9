//! Register state the monitor must not disturb: XMM0–15 (and the upper
//! halves of YMM0–15 where the CPU has AVX and XCR0 enables it) across
//! 100 exits (CPUID in a loop).

use crate::report::Checks;

core::arch::global_asm!(
    r#"
    .section .text.state, "ax"
    /* void conf_vector_roundtrip(const u8 src[512], u8 dst[512], u64 avx)
       Loads 16 vector registers from src, runs CPUID 100 times, stores
       them to dst: 32 bytes each with AVX, else 16. */
    .global conf_vector_roundtrip
conf_vector_roundtrip:
    push rbx
    mov r8, rdi
    mov r9, rsi
    mov r10, rdx
    test r10, r10
    jz 2f
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    vmovdqu ymm\n, [r8 + \n * 32]
    .endr
    jmp 3f
2:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    movdqu xmm\n, [r8 + \n * 32]
    .endr
3:
    mov r11d, 100
4:
    xor eax, eax
    cpuid
    dec r11d
    jnz 4b
    test r10, r10
    jz 5f
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    vmovdqu [r9 + \n * 32], ymm\n
    .endr
    vzeroupper
    pop rbx
    ret
5:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    movdqu [r9 + \n * 32], xmm\n
    .endr
    pop rbx
    ret
"#
);

unsafe extern "C" {
    fn conf_vector_roundtrip(src: *const u8, dst: *mut u8, avx: u64);
}

/// Runs the check; `avx` when CPUID has AVX and XCR0 enables the YMM
/// state.
pub fn run_all(c: &mut Checks, avx: bool) {
    let mut src = [0u8; 512];
    for (i, b) in src.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    let mut dst = [0u8; 512];
    // SAFETY: both buffers are 512 bytes; the routine clobbers only the
    // vector registers (no Rust code here uses them: the target is
    // soft-float) and RAX..RDX, R8..R11, saving RBX; AVX instructions run
    // only when `avx` says the CPU and XCR0 allow them.
    unsafe { conf_vector_roundtrip(src.as_ptr(), dst.as_mut_ptr(), u64::from(avx)) };
    let width = if avx { 32 } else { 16 };
    let bad = (0..16)
        .filter(|r| src[r * 32..r * 32 + width] != dst[r * 32..r * 32 + width])
        .count();
    c.line(
        "vector-registers-across-100-cpuid",
        bad == 0,
        format_args!(
            "{} {} registers changed",
            bad,
            if avx { "YMM" } else { "XMM" }
        ),
    );
}
