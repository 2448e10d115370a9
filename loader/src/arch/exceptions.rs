//! Exception entry stubs and the image's IDT: every CPU exception in the
//! loader (and in the guest while it still runs on the loader's tables)
//! is reported with its vector, error code and RIP, and ends the run with
//! the panic outcome instead of a triple fault.
//!
//! The stubs push a uniform frame (SDM Vol. 3A §7.12.1, "Exception- or
//! Interrupt-Handler Procedures": the CPU pushes SS, RSP, RFLAGS, CS, RIP
//! and, for some vectors, an error code).

use okernel_abi::result::Outcome;

/// Vectors for which the CPU pushes an error code (SDM Vol. 3A Table 7-1).
const HAS_ERROR_CODE: [u8; 8] = [8, 10, 11, 12, 13, 14, 17, 21];

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
    exc_stub 29, 0
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

/// The frame the stubs leave on the stack.
#[repr(C)]
struct Frame {
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

/// Names of the architectural exceptions (SDM Vol. 3A Table 7-1).
fn name(vector: u64) -> &'static str {
    const NAMES: [&str; 22] = [
        "#DE divide error",
        "#DB debug",
        "NMI",
        "#BP breakpoint",
        "#OF overflow",
        "#BR bound range",
        "#UD invalid opcode",
        "#NM device not available",
        "#DF double fault",
        "coprocessor segment overrun",
        "#TS invalid TSS",
        "#NP segment not present",
        "#SS stack fault",
        "#GP general protection",
        "#PF page fault",
        "reserved",
        "#MF x87 error",
        "#AC alignment check",
        "#MC machine check",
        "#XM SIMD error",
        "#VE virtualization exception",
        "#CP control protection",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("reserved")
}

#[unsafe(no_mangle)]
extern "C" fn loader_exception(frame: &Frame) -> ! {
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    okernel_console::report(
        Outcome::Panic,
        format_args!(
            "CPU exception {} ({}) error {:#x} at RIP {:#x} CS {:#x} RFLAGS {:#x} RSP {:#x} SS {:#x} CR2 {:#x}",
            frame.vector,
            name(frame.vector),
            frame.error_code,
            frame.rip,
            frame.cs,
            frame.rflags,
            frame.rsp,
            frame.ss,
            cr2
        ),
    )
}

/// A 16-byte interrupt gate (SDM Vol. 3A §7.14.1, "64-Bit Mode IDT").
const fn gate(handler: u64, selector: u16, ist: u8) -> [u64; 2] {
    let low = (handler & 0xffff)
        | ((selector as u64) << 16)
        | (((ist & 7) as u64) << 32)
        | (0x8e << 40) // present, DPL 0, 64-bit interrupt gate
        | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

/// The IDT: 32 exception gates; the other vectors are not present.
#[repr(C, align(16))]
pub struct Idt([[u64; 2]; 256]);

impl Idt {
    /// Builds the table; `#DF` runs on IST slot `df_ist` (1-based).
    pub fn new(code_selector: u16, df_ist: u8) -> Self {
        let mut idt = Idt([[0; 2]; 256]);
        // SAFETY: the table is defined in the global_asm above, 32
        // initialised quadwords in a read-only section.
        let stubs = unsafe { &loader_exc_table };
        for (v, &stub) in stubs.iter().enumerate() {
            let ist = if v == 8 { df_ist } else { 0 };
            idt.0[v] = gate(stub, code_selector, ist);
        }
        debug_assert!(HAS_ERROR_CODE.iter().all(|&v| v < 32));
        idt
    }
}
