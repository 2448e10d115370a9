//! The image's first instructions: the multiboot2 header, the PVH ELF note,
//! and the 32-bit entry points that switch to long mode and call
//! `loader_main(magic, info)`.
//!
//! Both boot protocols enter in 32-bit protected mode with paging off and a
//! flat code segment (multiboot2 spec §3.3 "I386 machine state"; Xen
//! `arch-x86/hvm/start_info.h` for PVH). The switch follows SDM Vol. 3A
//! §10.8.5 "Initializing IA-32e Mode": PAE on, CR3 loaded, EFER.LME set,
//! then CR0.PG. The first 4 GiB are identity-mapped with 2 MiB pages.
//!
//! Register hand-off to `loader_main` (SysV): EDI = the protocol magic
//! (multiboot2's 0x36d76289 from EAX, or the PVH start-info magic
//! 0x336ec578), ESI = the physical address of the boot information (EBX).

core::arch::global_asm!(
    r#"
    .set MB2_MAGIC,        0xE85250D6
    .set MB2_ARCH_I386,    0
    .set PVH_INFO_MAGIC,   0x336ec578
    .set XEN_ELFNOTE_PHYS32_ENTRY, 18

    /* ---- multiboot2 header (multiboot2 spec §3.1) ---- */
    .section .multiboot2_header, "a"
    .balign 8
mb2_header_start:
    .long MB2_MAGIC
    .long MB2_ARCH_I386
    .long mb2_header_end - mb2_header_start
    .long 0x100000000 - (MB2_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header_start))
    /* module alignment tag: page-align modules */
    .balign 8
    .short 6
    .short 0
    .long 8
    /* end tag */
    .balign 8
    .short 0
    .short 0
    .long 8
mb2_header_end:

    /* ---- PVH entry note ---- */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .balign 4
    .long _start_pvh
    .balign 4

    /* ---- 32-bit entry ---- */
    .section .boot.text, "ax"
    .code32
    .global _start_multiboot2
_start_multiboot2:
    cli
    cld
    mov ebp, eax
    mov esi, ebx
    jmp 2f

    .global _start_pvh
_start_pvh:
    cli
    cld
    mov ebp, PVH_INFO_MAGIC
    mov esi, ebx

2:
    /* Zero .bss: it holds the boot page tables and stack. */
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    xor eax, eax
    rep stosb

    mov esp, offset boot_stack_top

    /* PML4[0] -> PDPT */
    mov eax, offset boot_pdpt
    or eax, 0x3
    mov dword ptr [boot_pml4], eax

    /* PDPT[0..4] -> the four page directories */
    mov eax, offset boot_pd
    or eax, 0x3
    xor ecx, ecx
3:
    mov dword ptr [boot_pdpt + ecx * 8], eax
    add eax, 0x1000
    inc ecx
    cmp ecx, 4
    jne 3b

    /* 2048 PD entries: identity 2 MiB pages, present + writable + PS */
    xor ecx, ecx
4:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov dword ptr [boot_pd + ecx * 8], eax
    inc ecx
    cmp ecx, 2048
    jne 4b

    /* CR4.PAE */
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax

    mov eax, offset boot_pml4
    mov cr3, eax

    /* EFER.LME | EFER.NXE */
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x900
    wrmsr

    /* CR0.PG | CR0.WP | CR0.NE | CR0.MP | CR0.PE: NE and MP as the
       guest's entry CR0 under the monitor has them (okernel_abi::boot),
       so a guest entered with mode=direct starts from the same CR0. */
    mov eax, cr0
    or eax, 0x80010023
    mov cr0, eax

    lgdt [boot_gdt_pointer]
    /* Far return into the 64-bit code segment (pops EIP, then CS). */
    mov eax, 0x08
    push eax
    mov eax, offset long_mode_entry
    push eax
    retf

    .code64
long_mode_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset boot_stack_top
    mov edi, ebp
    mov esi, esi
    call loader_main
5:
    hlt
    jmp 5b

    /* ---- boot GDT: null, 64-bit code (0x08), data (0x10) ---- */
    .section .rodata.boot_gdt, "a"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
boot_gdt_end:
boot_gdt_pointer:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    /* ---- boot page tables and stack (zeroed above) ---- */
    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
    /* Between the page tables and the stack: a stack that overflows
       writes here first, not the identity map (a 64 KiB stack once
       overflowed into boot_pd while okernel::launch built its run state,
       and the monitor later faulted on memory the map no longer held).
       Armed with a pattern by `arm_stack_guard` and never written but
       by an overflow: `stack_guard_intact` checks it. */
    .global boot_stack_guard
boot_stack_guard:
    .skip 4096
boot_stack:
    .skip 262144
    .global boot_stack_top
boot_stack_top:
"#
);

unsafe extern "C" {
    /// The page between the boot page tables and the boot stack (above).
    static mut boot_stack_guard: [u64; 512];
}

/// Arms the guard page ([`okernel::hw::guard`]); the first thing
/// `loader_main` does, before any deep call.
pub fn arm_stack_guard() {
    // SAFETY: the guard page, a 4 KiB page-aligned array in .bss defined in
    // the global_asm above and used as nothing else; one processor runs
    // on the boot stack.
    unsafe { okernel::hw::guard::arm((&raw mut boot_stack_guard).cast()) }
}

/// Whether the boot stack has never overflowed into its guard page
/// (armed by [`arm_stack_guard`]).
pub fn stack_guard_intact() -> bool {
    // SAFETY: as in `arm_stack_guard`, and armed there.
    unsafe { okernel::hw::guard::intact((&raw const boot_stack_guard).cast()) }
}
