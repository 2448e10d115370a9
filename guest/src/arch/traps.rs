//! The guest's exception entry and *probes*: run an operation that may
//! fault (an attack, a privileged instruction) and get the fault back as a
//! value instead of dying.
//!
//! `guest_probe(f, arg)` saves the callee-saved registers and the stack
//! pointer, arms the recovery context and calls `f(arg)`. If `f` returns,
//! the probe returns its value. If any exception hits while armed, the
//! handler records vector, error code, RIP and CR2, disarms, and rewrites
//! the interrupt frame so `iretq` lands in `guest_probe_landing` on the
//! saved stack, which restores the registers and returns to the probe's
//! caller. An exception while not armed ends the run with `panic`.

use core::sync::atomic::{AtomicU64, Ordering};
use okernel_abi::result::Outcome;
use okernel_console::traps::{TrapFrame, exception_name, install_exception_stubs};
use x86_64::structures::idt::InterruptDescriptorTable;

core::arch::global_asm!(
    r#"
    .macro trap_stub vec, err
guest_trap_\vec:
    .if \err == 0
    push 0
    .endif
    push \vec
    jmp guest_trap_common
    .endm

    .section .text.traps, "ax"
guest_trap_common:
    mov rdi, rsp
    /* The handler either ends the run or redirects the frame to the
       landing pad; the stack is 16-aligned: 7 quadwords + return. */
    sub rsp, 8
    call guest_trap
    add rsp, 8
    add rsp, 16
    iretq

    .irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    trap_stub \v, 0
    .endr
    .irp v, 8,10,11,12,13,14,17,21,29,30
    trap_stub \v, 1
    .endr

    /* u64 guest_probe(u64 (*f)(u64), u64 arg) */
    .global guest_probe
guest_probe:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + guest_probe_rsp], rsp
    mov qword ptr [rip + guest_probe_armed], 1
    mov rax, rdi
    mov rdi, rsi
    call rax
    mov qword ptr [rip + guest_probe_armed], 0
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

    .global guest_probe_landing
guest_probe_landing:
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    xor eax, eax
    ret

    .section .rodata.traps, "a"
    .balign 8
guest_trap_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad guest_trap_\n
    .endr

    .section .data.traps, "aw"
    .balign 8
    .global guest_probe_armed
guest_probe_armed:
    .quad 0
    /* Global: the fuzz executor's gate (arch/ops.rs) unwinds to it. */
    .global guest_probe_rsp
guest_probe_rsp:
    .quad 0
"#
);

unsafe extern "C" {
    static guest_trap_table: [u64; 32];
    static guest_probe_rsp: u64;
    fn guest_probe_landing();
    /// Calls `f(arg)` under the recovery context (see the module docs).
    fn guest_probe(f: extern "C" fn(u64) -> u64, arg: u64) -> u64;
}

/// A fault a probe caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The exception vector (6 = #UD, 13 = #GP, 14 = #PF, ...).
    pub vector: u8,
    /// The error code (0 when the vector has none).
    pub error_code: u64,
    /// Where it happened.
    pub rip: u64,
    /// CR2 at the time (the faulting address for #PF).
    pub cr2: u64,
    /// The stack the exception frame was pushed on (the interrupted RSP).
    pub rsp: u64,
    /// RFLAGS in the frame (RF set for a fault, SDM Vol. 3A §18.3.1.1).
    pub rflags: u64,
}

impl Fault {
    /// The vector's architectural name.
    pub fn name(&self) -> &'static str {
        exception_name(u64::from(self.vector))
    }
}

/// Set while a probe runs; the trap handler reads and clears it. One CPU.
static ARMED_FAULT: AtomicU64 = AtomicU64::new(u64::MAX);
static FAULT_ERROR: AtomicU64 = AtomicU64::new(0);
static FAULT_RIP: AtomicU64 = AtomicU64::new(0);
static FAULT_CR2: AtomicU64 = AtomicU64::new(0);
static FAULT_RSP: AtomicU64 = AtomicU64::new(0);
static FAULT_RFLAGS: AtomicU64 = AtomicU64::new(0);
/// RFLAGS.TF.
const RFLAGS_TF: u64 = 1 << 8;

unsafe extern "C" {
    static mut guest_probe_armed: u64;
}

#[unsafe(no_mangle)]
extern "C" fn guest_trap(frame: &mut TrapFrame) {
    let armed = &raw mut guest_probe_armed;
    // SAFETY: `guest_probe_armed` is a quadword in .data written only by
    // the probe entry/exit code on this (single) CPU.
    let is_armed = unsafe { armed.read_volatile() } != 0;
    if !is_armed {
        crate::report::end(
            Outcome::Panic,
            format_args!(
                "guest: unexpected CPU exception {} ({}) error {:#x} at RIP {:#x} CR2 {:#x}",
                frame.vector,
                exception_name(frame.vector),
                frame.error_code,
                frame.rip,
                x86_64::registers::control::Cr2::read_raw()
            ),
        );
    }
    // SAFETY: as above; disarm before resuming so a fault in the landing
    // path is reported rather than looped on.
    unsafe { armed.write_volatile(0) };
    ARMED_FAULT.store(frame.vector, Ordering::SeqCst);
    FAULT_ERROR.store(frame.error_code, Ordering::SeqCst);
    FAULT_RIP.store(frame.rip, Ordering::SeqCst);
    FAULT_CR2.store(
        x86_64::registers::control::Cr2::read_raw(),
        Ordering::SeqCst,
    );
    FAULT_RSP.store(frame.rsp, Ordering::SeqCst);
    FAULT_RFLAGS.store(frame.rflags, Ordering::SeqCst);
    frame.rip = guest_probe_landing as *const () as u64;
    // The landing pad runs without single-stepping, whatever the probed
    // code set.
    frame.rflags &= !RFLAGS_TF;
    // SAFETY: written by `guest_probe` before arming; it points at the six
    // saved registers the landing pad pops.
    frame.rsp = unsafe { (&raw const guest_probe_rsp).read_volatile() };
}

/// Runs `f(arg)`; returns its value, or the fault it raised.
pub fn probe(f: extern "C" fn(u64) -> u64, arg: u64) -> Result<u64, Fault> {
    ARMED_FAULT.store(u64::MAX, Ordering::SeqCst);
    // SAFETY: `guest_probe` follows the SysV ABI (callee-saved registers
    // restored on both paths) and `f` is a plain extern "C" function.
    let value = unsafe { guest_probe(f, arg) };
    match ARMED_FAULT.swap(u64::MAX, Ordering::SeqCst) {
        u64::MAX => Ok(value),
        vector => Err(Fault {
            vector: vector as u8,
            error_code: FAULT_ERROR.load(Ordering::SeqCst),
            rip: FAULT_RIP.load(Ordering::SeqCst),
            cr2: FAULT_CR2.load(Ordering::SeqCst),
            rsp: FAULT_RSP.load(Ordering::SeqCst),
            rflags: FAULT_RFLAGS.load(Ordering::SeqCst),
        }),
    }
}

/// Fills `idt`'s exception gates with the guest's stubs.
pub fn install(idt: &mut InterruptDescriptorTable, df_ist: u16) {
    // SAFETY: the table is defined in the global_asm above: 32 initialised
    // quadwords in a read-only section.
    let stubs = unsafe { &guest_trap_table };
    // SAFETY: each stub matches its vector's frame (dummy error code pushed
    // exactly where the CPU pushes none) and returns with iretq after the
    // handler; the caller puts a #DF stack in IST slot `df_ist`.
    unsafe { install_exception_stubs(idt, stubs, df_ist) };
}
