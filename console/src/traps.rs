//! Exception-vector support shared by the images: architectural names for
//! reports, and filling an IDT's 32 exception gates with an image's entry
//! stubs (the stubs themselves are assembly in each image's `arch/`).

use x86_64::VirtAddr;
use x86_64::structures::idt::InterruptDescriptorTable;

/// The vectors for which the CPU pushes an error code (SDM Vol. 3A,
/// Table 7-1 "Protected-Mode Exceptions and Interrupts").
pub const HAS_ERROR_CODE: [u8; 9] = [8, 10, 11, 12, 13, 14, 17, 21, 29];

/// The frame an image's exception stub leaves on the stack: the vector and
/// the error code (a dummy 0 where the CPU pushes none) pushed by the stub,
/// then what the CPU pushed (SDM Vol. 3A §7.12.1, "Exception- or
/// Interrupt-Handler Procedures").
#[derive(Debug)]
#[repr(C)]
pub struct TrapFrame {
    /// The exception vector.
    pub vector: u64,
    /// The error code, or 0.
    pub error_code: u64,
    /// Where the exception happened (or, for traps, the next instruction).
    pub rip: u64,
    /// The interrupted code segment.
    pub cs: u64,
    /// The interrupted RFLAGS.
    pub rflags: u64,
    /// The interrupted stack pointer.
    pub rsp: u64,
    /// The interrupted stack segment.
    pub ss: u64,
}

/// The name of an exception vector (SDM Vol. 3A Table 7-1).
pub fn exception_name(vector: u64) -> &'static str {
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

/// Points the 32 exception gates of `idt` at `stubs` (one entry address per
/// vector); `#DF` runs on IST slot `df_ist` (0-based index into the TSS's
/// interrupt stack table).
///
/// # Safety
///
/// Each address in `stubs` must be an exception entry stub that handles
/// its vector's stack frame (with or without error code, per
/// [`HAS_ERROR_CODE`]) and ends with `iretq` or never returns; `df_ist`
/// must name an IST slot that holds a valid stack in the loaded TSS.
pub unsafe fn install_exception_stubs(
    idt: &mut InterruptDescriptorTable,
    stubs: &[u64; 32],
    df_ist: u16,
) {
    let a = |v: usize| VirtAddr::new(stubs[v]);
    // SAFETY: forwarded from the caller: every address is a stub written
    // for exactly that vector.
    unsafe {
        idt.divide_error.set_handler_addr(a(0));
        idt.debug.set_handler_addr(a(1));
        idt.non_maskable_interrupt.set_handler_addr(a(2));
        idt.breakpoint.set_handler_addr(a(3));
        idt.overflow.set_handler_addr(a(4));
        idt.bound_range_exceeded.set_handler_addr(a(5));
        idt.invalid_opcode.set_handler_addr(a(6));
        idt.device_not_available.set_handler_addr(a(7));
        idt.double_fault
            .set_handler_addr(a(8))
            .set_stack_index(df_ist);
        idt.invalid_tss.set_handler_addr(a(10));
        idt.segment_not_present.set_handler_addr(a(11));
        idt.stack_segment_fault.set_handler_addr(a(12));
        idt.general_protection_fault.set_handler_addr(a(13));
        idt.page_fault.set_handler_addr(a(14));
        idt.x87_floating_point.set_handler_addr(a(16));
        idt.alignment_check.set_handler_addr(a(17));
        idt.machine_check.set_handler_addr(a(18));
        idt.simd_floating_point.set_handler_addr(a(19));
        idt.virtualization.set_handler_addr(a(20));
        idt.cp_protection_exception.set_handler_addr(a(21));
    }
}
