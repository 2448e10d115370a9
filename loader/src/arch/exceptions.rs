//! Exception entry stubs and the image's IDT: every CPU exception in the
//! loader (and in the guest while it still runs on the loader's tables)
//! is reported with its vector, error code and RIP, and ends the run with
//! the panic outcome instead of a triple fault.
//!
//! The stubs push a uniform frame (SDM Vol. 3A §7.12.1, "Exception- or
//! Interrupt-Handler Procedures": the CPU pushes SS, RSP, RFLAGS, CS, RIP
//! and, for some vectors, an error code).

use okernel_abi::result::Outcome;
use okernel_console::traps::{TrapFrame, exception_name, install_exception_stubs};
use x86_64::structures::idt::InterruptDescriptorTable;

core::arch::global_asm!(
    r#"
    .macro exc_stub vec, err
    .global loader_exc_\vec
loader_exc_\vec:
    .if \err == 0
    push 0
    .endif
    push \vec
    jmp loader_exc_common
    .endm

    .section .text.exceptions, "ax"
loader_exc_common:
    mov rdi, rsp
    and rsp, -16
    call loader_exception
    ud2

    exc_stub 0, 0
    exc_stub 1, 0
    exc_stub 2, 0
    exc_stub 3, 0
    exc_stub 4, 0
    exc_stub 5, 0
    exc_stub 6, 0
    exc_stub 7, 0
    exc_stub 8, 1
    exc_stub 9, 0
    exc_stub 10, 1
    exc_stub 11, 1
    exc_stub 12, 1
    exc_stub 13, 1
    exc_stub 14, 1
    exc_stub 15, 0
    exc_stub 16, 0
    exc_stub 17, 1
    exc_stub 18, 0
    exc_stub 19, 0
    exc_stub 20, 0
    exc_stub 21, 1
    exc_stub 22, 0
    exc_stub 23, 0
    exc_stub 24, 0
    exc_stub 25, 0
    exc_stub 26, 0
    exc_stub 27, 0
    exc_stub 28, 0
    exc_stub 29, 1
    exc_stub 30, 0
    exc_stub 31, 0

    .section .rodata.exceptions, "a"
    .balign 8
    .global loader_exc_table
loader_exc_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad loader_exc_\n
    .endr
"#
);

unsafe extern "C" {
    /// The 32 stub addresses, in vector order.
    static loader_exc_table: [u64; 32];
}

#[unsafe(no_mangle)]
extern "C" fn loader_exception(frame: &TrapFrame) -> ! {
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    // SAFETY: this handler never returns (it reports and halts, and the
    // report powers the machine off where the platform can); another
    // processor printing at the same moment may see its line cut.
    unsafe { okernel_console::break_lock() };
    // SAFETY: as above: the code the exception interrupted never runs
    // again, so the audit lines it queued can be printed before the
    // report that ends the run.
    unsafe { okernel::launch::print_unprinted_audit_lines() };
    // What overflowed, if a stack did: the monitor's host stack faults in
    // its not-present guard page (CR2 there); the loader's boot stack
    // leaves its pattern guard written.
    let remark = if let Some(words) = okernel::hw::guard::overflow_at(cr2, frame.rsp) {
        words
    } else if super::entry::stack_guard_intact() {
        ""
    } else {
        "the loader's boot stack overflowed into its guard page: the identity map below it may be damaged"
    };
    okernel_console::report(
        Outcome::Panic,
        format_args!(
            "CPU exception {} ({}) error {:#x} at RIP {:#x} CS {:#x} RFLAGS {:#x} RSP {:#x} SS {:#x} CR2 {:#x}{}{}{}",
            frame.vector,
            exception_name(frame.vector),
            frame.error_code,
            frame.rip,
            frame.cs,
            frame.rflags,
            frame.rsp,
            frame.ss,
            cr2,
            if remark.is_empty() { "" } else { " (" },
            remark,
            if remark.is_empty() { "" } else { ")" },
        ),
    )
}

/// Fills `idt`'s exception gates with this image's stubs.
pub fn install(idt: &mut InterruptDescriptorTable, df_ist: u16) {
    // SAFETY: the table is defined in the global_asm above: 32 initialised
    // quadwords in a read-only section.
    let stubs = unsafe { &loader_exc_table };
    // SAFETY: each stub pushes a dummy error code exactly for the vectors
    // without one (the `exc_stub` table mirrors HAS_ERROR_CODE) and never
    // returns; the caller puts a #DF stack in IST slot `df_ist`.
    unsafe { install_exception_stubs(idt, stubs, df_ist) };
}
