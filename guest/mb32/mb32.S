/*
 * A minimal multiboot2 ELF32 guest kernel: the fixture that proves okernel
 * enters a 32-bit protected-mode guest with paging off (unrestricted
 * guest), EAX = the multiboot2 magic and EBX = a multiboot2 information
 * structure, as the multiboot2 specification (§3.3, "I386 machine state")
 * requires.
 *
 * It checks, from inside: CR0.PE = 1 and CR0.PG = 0; EAX = 0x36d76289;
 * the information structure at EBX is 8-aligned and ends with an end tag;
 * it carries a memory-map tag and a command-line tag; CPUID shows the
 * okernel signature and hides VMX; a JMP to a TSS (a task switch, which
 * okernel does not emulate and must not end the run with) raises #GP(0)
 * at the JMP with RFLAGS.RF set in the pushed frame, as a fault does on
 * hardware (issues 13 and 18). It prints each result on COM1 (port 0xE9
 * is the monitor's: okernel denies it to the guest), then ends the run with the okernel `Exit` hypercall (RAX = 2,
 * RDI = outcome code: 0x10 pass, 0x11 fail).
 *
 * Stable Rust has no bare-metal 32-bit x86 target, hence assembly; it is
 * built by `cargo xtask build` with `as --32` and `ld -m elf_i386`.
 */
    .set MB2_MAGIC, 0xE85250D6
    .set MB2_BOOT_MAGIC, 0x36d76289
    .set COM1, 0x3f8

    .section .multiboot2, "a"
    .balign 8
mb2_header:
    .long MB2_MAGIC
    .long 0
    .long mb2_header_end - mb2_header
    .long -(MB2_MAGIC + (mb2_header_end - mb2_header))
    .short 0, 0
    .long 8
mb2_header_end:

    .section .text
    .code32
    .global _start
_start:
    cli
    mov $stack_top, %esp
    mov %eax, saved_magic
    mov %ebx, saved_info
    push $msg_banner
    call puts
    add $4, %esp

    /* CR0: PE set, PG clear. */
    mov %cr0, %eax
    and $0x80000001, %eax
    cmp $0x00000001, %eax
    jne fail_cr0
    push $msg_cr0
    call puts
    add $4, %esp

    /* EAX at entry: the multiboot2 magic. */
    cmpl $MB2_BOOT_MAGIC, saved_magic
    jne fail_magic
    push $msg_magic
    call puts
    add $4, %esp

    /* The information structure: 8-aligned, total size sane, and a walk
       over its tags meets a memory map (6), a command line (1) and the end
       tag (0) inside the announced size. */
    mov saved_info, %esi
    test $7, %esi
    jnz fail_mbi
    mov (%esi), %ecx            /* total_size */
    cmp $16, %ecx
    jb fail_mbi
    cmp $8192, %ecx
    ja fail_mbi
    lea (%esi, %ecx), %edx      /* end of the structure */
    lea 8(%esi), %edi           /* first tag */
    xor %ebp, %ebp              /* bit 0: mmap seen, bit 1: cmdline seen */
1:
    lea 8(%edi), %eax
    cmp %edx, %eax
    ja fail_mbi                 /* a tag header past the end */
    mov (%edi), %eax            /* type */
    mov 4(%edi), %ebx           /* size */
    cmp $8, %ebx
    jb fail_mbi
    test %eax, %eax
    jz 3f                       /* end tag */
    cmp $6, %eax
    jne 2f
    or $1, %ebp
2:
    cmp $1, %eax
    jne 4f
    or $2, %ebp
    lea 8(%edi), %eax
    mov %eax, cmdline
4:
    add $7, %ebx                /* next tag: size rounded up to 8 */
    and $-8, %ebx
    add %ebx, %edi
    jmp 1b
3:
    cmp $3, %ebp
    jne fail_mbi
    push $msg_mbi
    call puts
    add $4, %esp
    push cmdline
    call puts
    add $4, %esp
    push $msg_nl
    call puts
    add $4, %esp

    /* CPUID: VMX hidden, okernel signature present. */
    mov $1, %eax
    cpuid
    test $(1 << 5), %ecx
    jnz fail_cpuid
    mov $0x40000000, %eax
    cpuid
    cmp $0x72654b4f, %ebx       /* "OKer" */
    jne fail_cpuid
    cmp $0x536c656e, %ecx       /* "nelS" */
    jne fail_cpuid
    cmp $0x216d6968, %edx       /* "him!" */
    jne fail_cpuid
    push $msg_cpuid
    call puts
    add $4, %esp

    /* A task switch: our own GDT (flat code and data, one TSS) and an
       IDT with a #GP handler, then JMP to the TSS. */
    mov $tss, %eax
    mov %ax, gdt_tss + 2
    shr $16, %eax
    mov %al, gdt_tss + 4
    mov %ah, gdt_tss + 7
    lgdt gdt_ptr
    ljmp $0x08, $9f
9:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $gp_handler, %eax
    mov %ax, idt + 13 * 8
    shr $16, %eax
    mov %ax, idt + 13 * 8 + 6
    movw $0x08, idt + 13 * 8 + 2
    movw $0x8e00, idt + 13 * 8 + 4
    lidt idt_ptr
task_jmp:
    ljmp $0x18, $0              /* 7 bytes; the #GP handler skips them */
    cmpl $task_jmp, gp_eip
    jne fail_task
    cmpl $0, gp_error
    jne fail_task
    testl $0x10000, gp_eflags   /* RF */
    jz fail_task
    push $msg_task
    call puts
    add $4, %esp

    push $msg_pass
    call puts
    add $4, %esp
    mov $0x10, %edi
    jmp exit

/* #GP: record the frame (error code, EIP, CS, EFLAGS), skip the far JMP. */
gp_handler:
    mov (%esp), %eax
    mov %eax, gp_error
    mov 4(%esp), %eax
    mov %eax, gp_eip
    mov 12(%esp), %eax
    mov %eax, gp_eflags
    addl $7, 4(%esp)
    add $4, %esp
    iret

fail_cr0:
    push $msg_fail_cr0
    jmp fail
fail_magic:
    push $msg_fail_magic
    jmp fail
fail_mbi:
    push $msg_fail_mbi
    jmp fail
fail_cpuid:
    push $msg_fail_cpuid
    jmp fail
fail_task:
    push $msg_fail_task
fail:
    call puts
    mov $0x11, %edi
exit:
    mov $2, %eax                /* okernel Exit hypercall */
    xor %esi, %esi
    xor %edx, %edx
    vmcall
    /* Exit does not return; if it does, halt. */
5:
    hlt
    jmp 5b

/* puts(const char *s): COM1 (polling LSR.THRE). */
puts:
    push %esi
    mov 8(%esp), %esi
6:
    lodsb
    test %al, %al
    jz 8f
    mov %al, %ah
    mov $(COM1 + 5), %dx
7:
    inb %dx, %al
    test $0x20, %al
    jz 7b
    mov $COM1, %dx
    mov %ah, %al
    outb %al, %dx
    jmp 6b
8:
    pop %esi
    ret

    .section .rodata
msg_banner:     .asciz "multiboot32 guest: entered\r\n"
msg_cr0:        .asciz "multiboot32 guest: protected mode, paging off\r\n"
msg_magic:      .asciz "multiboot32 guest: EAX = multiboot2 magic\r\n"
msg_mbi:        .asciz "multiboot32 guest: EBX = multiboot2 info with memory map, command line `"
msg_nl:         .asciz "`\r\n"
msg_cpuid:      .asciz "multiboot32 guest: CPUID shows okernel, hides VMX\r\n"
msg_task:       .asciz "multiboot32 guest: task switch refused with #GP(0) at the JMP, RF set\r\n"
msg_pass:       .asciz "multiboot32 guest: all checks passed\r\n"
msg_fail_cr0:   .asciz "multiboot32 guest: FAIL: CR0 is not protected mode with paging off\r\n"
msg_fail_magic: .asciz "multiboot32 guest: FAIL: EAX is not the multiboot2 magic\r\n"
msg_fail_mbi:   .asciz "multiboot32 guest: FAIL: EBX is not a well-formed multiboot2 information structure\r\n"
msg_fail_cpuid: .asciz "multiboot32 guest: FAIL: CPUID does not show okernel or shows VMX\r\n"
msg_fail_task:  .asciz "multiboot32 guest: FAIL: a task switch did not raise #GP(0) at the JMP with RF set\r\n"

    .section .data
    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff     /* 0x08: flat 32-bit code */
    .quad 0x00cf92000000ffff     /* 0x10: flat data */
gdt_tss:
    .quad 0x0000890000000067     /* 0x18: available 32-bit TSS, base set at run time */
gdt_end:
gdt_ptr:
    .short gdt_end - gdt - 1
    .long gdt
    .balign 8
idt:
    .skip 32 * 8
idt_ptr:
    .short 32 * 8 - 1
    .long idt
    .balign 4
gp_error:       .long 0xffffffff
gp_eip:         .long 0
gp_eflags:      .long 0

    .section .bss
    .balign 16
saved_magic:    .long 0
saved_info:     .long 0
cmdline:        .long 0
    .balign 16
tss:            .skip 104
    .balign 16
stack:          .skip 4096
stack_top:
