//! The guest's first instructions: switch to the guest's own stack and
//! call `guest_main(boot_info)` (the hand-off of [`okernel_abi::boot`]:
//! 64-bit mode, RDI = physical address of the `BootInfo`).

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    mov rsp, offset guest_stack_top
    xor ebp, ebp
    call guest_main
1:
    hlt
    jmp 1b

    .section .bss.guest_stack, "aw", @nobits
    .balign 4096
    .skip 65536
guest_stack_top:
"#
);
