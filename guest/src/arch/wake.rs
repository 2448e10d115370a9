//! The waking-vector code of `scenario=sleep` (`crate::sleep`): what the
//! firmware runs, in real mode, when it resumes the machine from S3 at
//! the vector the guest wrote into the FACS (ACPI 6.5 §5.2.10: CS =
//! vector >> 4, IP = vector & 0xF). It says so on COM1 — the attack's
//! check line, `succeeded`, and a pass marker, since the escape is what
//! the negative control must show — and ends the run through Bochs'
//! shutdown port. Position-independent within its page: it addresses
//! its text through CS.

core::arch::global_asm!(
    r#"
    .section .rodata.wake, "a"
    .global guest_wake_start
    .global guest_wake_end
    .code16
guest_wake_start:
    cli
    movw %cs, %ax
    movw %ax, %ds
    cld
    movw $(wake_text - guest_wake_start), %si
1:
    lodsb
    testb %al, %al
    jz 3f
    movb %al, %bl
    movw $0x3fd, %dx
2:
    inb %dx, %al
    testb $0x20, %al
    jz 2b
    movw $0x3f8, %dx
    movb %bl, %al
    outb %al, %dx
    jmp 1b
3:
    movw $0x8900, %dx
    movw $(wake_shutdown - guest_wake_start), %si
4:
    lodsb
    testb %al, %al
    jz 5f
    outb %al, %dx
    jmp 4b
5:
    hlt
    jmp 5b
wake_text:
    .ascii "\r\nOKERNEL-CHECK: {{\"check\":\"attack-acpi-sleep-resume-outside-vmx\",\"invariant\":1,\"ok\":true,"
    .ascii "\"observed\":\"the firmware resumed the machine from S3 at the guest's waking vector, in real mode, outside VMX\","
    .ascii "\"attack\":\"acpi-sleep-resume-outside-vmx\",\"mode\":\"no-monitor\",\"protected\":false,"
    .ascii "\"expected\":\"succeeded\",\"result\":\"succeeded\",\"audit\":\"none\"}}\r\n"
    .asciz "OKERNEL-RESULT: pass\r\n"
wake_shutdown:
    .asciz "Shutdown"
guest_wake_end:
    .code64
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static guest_wake_start: u8;
    static guest_wake_end: u8;
}

/// The code's bytes.
pub fn code() -> &'static [u8] {
    let start = &raw const guest_wake_start;
    let end = &raw const guest_wake_end;
    // SAFETY: both symbols delimit the code in this image's read-only
    // data (the global_asm above), start before end.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}
