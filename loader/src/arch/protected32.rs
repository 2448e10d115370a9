//! Leaving long mode for a 32-bit protected-mode entry: how the loader
//! enters a Linux kernel at its PVH entry with `mode=direct` (no monitor).
//!
//! The steps are those of SDM Vol. 3A §10.8.5 "Initializing IA-32e Mode"
//! in reverse, as §10.8.5.4 "Switching Out of IA-32e Mode Operation"
//! lists them:
//! 1. switch to compatibility mode (a far return to a 32-bit code
//!    segment), running from identity-mapped code below 4 GiB;
//! 2. clear CR0.PG: the processor deactivates IA-32e mode (EFER.LMA = 0);
//! 3. clear EFER.LME (and NXE, which only paging uses);
//! 4. leave CR4 and CR3 clear and CR0 = PE | ET.
//!
//! The state at the jump is the PVH ABI's (Xen `docs/misc/pvh.pandoc`,
//! "x86/HVM direct boot ABI"): CR0.PE set and its other writable bits
//! clear, CR4 = 0, CS a flat 32-bit execute/read segment, DS/ES/SS (and
//! FS/GS) flat 32-bit read/write segments, EFLAGS.IF/TF/VM clear, EBX =
//! the physical address of the `hvm_start_info`. The ABI also asks for a
//! 32-bit TSS in TR; the loader's TSS stays loaded, and Linux loads its
//! own task register long after it set up its own GDT.

core::arch::global_asm!(
    r#"
    .section .text.protected32, "ax"
    .code64
    .global okernel_enter_protected32
okernel_enter_protected32:
    cli
    cld
    lgdt [rip + p32_gdt_pointer]
    /* Far return (pops RIP, then CS) into the 32-bit code segment. */
    push 0x08
    lea rax, [rip + 2f]
    push rax
    retfq

    .code32
2:
    mov eax, 0x10
    mov ds, eax
    mov es, eax
    mov ss, eax
    mov fs, eax
    mov gs, eax
    /* CR0.PG = 0: IA-32e mode deactivates (EFER.LMA clears). */
    mov eax, cr0
    and eax, 0x7fffffff
    mov cr0, eax
    /* EFER.LME = EFER.NXE = 0. */
    mov ecx, 0xC0000080
    rdmsr
    and eax, 0xfffff6ff
    wrmsr
    /* CR4 = CR3 = 0; CR0 = PE | ET. */
    xor eax, eax
    mov cr4, eax
    mov cr3, eax
    mov eax, 0x11
    mov cr0, eax
    mov ebx, esi
    jmp edi
    .code64

    /* null, 0x08 flat 32-bit code, 0x10 flat 32-bit data */
    .section .rodata.protected32, "a"
    .balign 16
p32_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF
    .quad 0x00CF92000000FFFF
p32_gdt_end:
    .balign 2
p32_gdt_pointer:
    .short p32_gdt_end - p32_gdt - 1
    .quad p32_gdt
"#
);

unsafe extern "sysv64" {
    fn okernel_enter_protected32(entry: u32, ebx: u32) -> !;
}

/// Leaves long mode and jumps to `entry` in 32-bit protected mode, paging
/// off, with EBX = `ebx`; never returns.
///
/// # Safety
///
/// `entry` must be the 32-bit entry of code loaded in RAM below 4 GiB
/// that expects this state (a PVH entry), and nothing of this image may
/// be needed afterwards. This image must run identity-mapped below
/// 4 GiB (the entry stub's map) so the code survives paging going off.
pub unsafe fn enter(entry: u32, ebx: u32) -> ! {
    // SAFETY: forwarded from the caller; the trampoline lies in this
    // image, identity-mapped below 4 GiB.
    unsafe { okernel_enter_protected32(entry, ebx) }
}
