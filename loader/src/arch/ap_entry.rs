//! An application processor's first instructions: the real-mode
//! trampoline a SIPI starts it at, which switches to long mode on the
//! loader's page tables (SDM Vol. 3A §10.9 "Mode Switching", §10.8.5),
//! and the 64-bit entry that gives it its own stack and calls
//! `loader_ap_main(index)` (`smp.rs`).
//!
//! The trampoline is position-independent within its page: `smp.rs`
//! copies `ap_trampoline_start..ap_trampoline_end` to a page below 1 MiB,
//! writes the page-table root at `ap_trampoline_cr3` and the address of
//! `ap_long_mode_entry` at `ap_trampoline_entry`, and sends the page
//! number as the SIPI vector: the processor starts at CS = vector << 8,
//! IP = 0 (SDM Vol. 3A §9.4.4.1). Everything it uses after the switch
//! (GDT, stack, IDT, VMXON region) lies in this image, which the guest
//! never sees; the low page stays the monitor's too. The stacks lie
//! above the VMXON regions: slot 0's stack overflowing (16 KiB, where
//! parking needs a few hundred bytes) would reach region 62.

use crate::smp::{AP_NEXT, AP_STACK_BYTES, MAX_APS};

core::arch::global_asm!(
    r#"
    /* ---- the trampoline, copied to a low page ---- */
    .section .rodata.ap_trampoline, "a"
    .balign 16
    .global ap_trampoline_start
    .code16
ap_trampoline_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    xorl %ebx, %ebx
    movw %ax, %bx
    shll $4, %ebx
    /* The GDT's and the 32-bit entry's linear addresses. */
    leal (tramp_gdt - ap_trampoline_start)(%ebx), %eax
    movl %eax, (tramp_gdtr - ap_trampoline_start + 2)
    leal (tramp_pm32 - ap_trampoline_start)(%ebx), %eax
    movl %eax, (tramp_far32 - ap_trampoline_start)
    leal (tramp_lm64 - ap_trampoline_start)(%ebx), %eax
    movl %eax, (tramp_far64 - ap_trampoline_start)
    lgdtl (tramp_gdtr - ap_trampoline_start)
    /* CR0 = PE | ET, loaded whole: caching on (CD, NW clear) whatever
       the firmware left (INIT keeps CD and NW). */
    movl $0x11, %eax
    movl %eax, %cr0
    ljmpl *(tramp_far32 - ap_trampoline_start)

    .code32
tramp_pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    /* CR4 = PAE | MCE (a machine check then reaches the IDT's #MC gate
       instead of shutting the processor down), the loader's page
       tables, EFER.LME | EFER.NXE, then CR0 = PG | WP | NE | ET | MP |
       PE, loaded whole: the bootstrap processor's settings (entry.rs). */
    movl $0x60, %eax
    movl %eax, %cr4
    movl (ap_trampoline_cr3 - ap_trampoline_start)(%ebx), %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x900, %eax
    wrmsr
    movl $0x80010033, %eax
    movl %eax, %cr0
    ljmpl *(tramp_far64 - ap_trampoline_start)(%ebx)

    .code64
tramp_lm64:
    movl %ebx, %ebx
    movq (ap_trampoline_entry - ap_trampoline_start)(%rbx), %rax
    jmpq *%rax

    .balign 8
tramp_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF /* 0x10: data */
    .quad 0x00CF9A000000FFFF /* 0x18: 32-bit code */
tramp_gdtr:
    .word 4 * 8 - 1
    .long 0
tramp_far32:
    .long 0
    .word 0x18
tramp_far64:
    .long 0
    .word 0x08
    .balign 8
    .global ap_trampoline_cr3
ap_trampoline_cr3:
    .long 0
    .long 0
    .global ap_trampoline_entry
ap_trampoline_entry:
    .quad 0
    .global ap_trampoline_end
ap_trampoline_end:

    /* ---- the 64-bit entry, in this image ---- */
    .text
    .code64
    .global ap_long_mode_entry
ap_long_mode_entry:
    lgdt ap_gdt_pointer(%rip)
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    /* CS keeps 0x08: the same 64-bit code descriptor in this GDT. */
    movl $1, %eax
    lock xaddl %eax, {next}(%rip)
    cmpl ${max}, %eax
    jae 2f
    movl %eax, %edi
    leal 1(%rax), %ecx
    imulq ${stack}, %rcx
    leaq ap_stacks(%rip), %rsp
    addq %rcx, %rsp
    xorl %ebp, %ebp
    call loader_ap_main
2:
    /* More processors than stacks: AP_NEXT says so, and the boot is
       refused. */
    cli
    hlt
    jmp 2b

    /* Every processor's NMI gate (smp.rs, tables.rs): an NMI that
       strikes in VMX root returns where it struck. */
    .global nmi_return_stub
nmi_return_stub:
    iretq

    .section .rodata.ap_gdt, "a"
    .balign 16
ap_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
    /* Each processor then loads a GDT of its own with its TSS
       (`tables::init_ap`). */
ap_gdt_end:
    .balign 8
ap_gdt_pointer:
    .word ap_gdt_end - ap_gdt - 1
    .quad ap_gdt

    .section .bss.ap, "aw", @nobits
    .balign 4096
    .global ap_vmxon_regions
ap_vmxon_regions:
    .skip 4096 * {max}
    .global ap_stacks
ap_stacks:
    .skip {stack} * {max}
"#,
    next = sym AP_NEXT,
    max = const MAX_APS,
    stack = const AP_STACK_BYTES,
    options(att_syntax)
);
