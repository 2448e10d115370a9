//! VM entry and the VM-exit entry point (SDM Vol. 3C §27 "VM Entries",
//! §28.5 "Loading Host State").
//!
//! The guest's general-purpose registers live in a [`GuestRegisters`] at
//! the top of the monitor's stack, and HOST_RSP points at it for the whole
//! run (written once, before [`vm_launch`]). A VM exit loads RSP =
//! HOST_RSP and RIP = HOST_RIP = [`vm_exit_entry`], so the exit stub finds
//! the register block at `[rsp]` without touching any other register:
//!
//! 1. store the guest's caller-saved registers (System V: RAX, RCX, RDX,
//!    RSI, RDI, R8–R11) into the block;
//! 2. call `okernel_exit_fast(regs)` on the stack below it (the run loop
//!    defines it). It handles the exits a guest takes on its hot paths,
//!    which read only those registers and write only those and RBX, and
//!    returns [`RESUME`] (or [`RESUME_RBX`] when it wrote RBX) to resume
//!    the guest;
//! 3. otherwise ([`SLOW`]) store RBX, RBP and R12–R15 as well, call
//!    `okernel_exit_slow(regs)`, which handles everything else with the
//!    whole register file in the block (or ends the run: it does not
//!    return then), and reload them;
//! 4. reload the caller-saved registers and VMRESUME.
//!
//! There is no host context to save or restore around the guest: the
//! handlers start afresh at HOST_RSP on every exit, and nothing of the
//! monitor lives in registers between exits. RBX, RBP and R12–R15 need no
//! saving on the fast path because the handlers are `extern "C"`
//! functions: System V has them preserve those, so they still hold the
//! guest's values when the fast handler returns.
//!
//! If VMRESUME fails instead, execution falls through it and the stub
//! stores the rest of the registers and calls
//! `okernel_vmresume_failed(regs, rflags)`, which never returns.
//!
//! RSP and RIP of the guest live in the VMCS, not here. The monitor is built
//! without SSE (the `x86_64-unknown-none` target is soft-float), so the
//! guest's vector and x87 state is never touched and need not be saved.

use core::arch::global_asm;

use crate::vmx::error::{VmFail, decode_rflags};
use crate::vmx::fields::ReadOnly32;
use crate::vmx::regs::GuestRegisters;

const _: () = assert!(core::mem::size_of::<GuestRegisters>() == 16 * 8);

/// `okernel_exit_fast`: resume the guest.
pub const RESUME: u32 = 0;
/// `okernel_exit_fast`: resume the guest; RBX changed in the block.
pub const RESUME_RBX: u32 = 1;
/// `okernel_exit_fast`: finish the exit in `okernel_exit_slow` (bit 31, so
/// that one `test` tells the three codes apart).
pub const SLOW: u32 = 1 << 31;

// The stubs. Register offsets in GuestRegisters follow the SDM GPR encoding
// (RAX=0, RCX=1, RDX=2, RBX=3, RSP=4 unused, RBP=5, RSI=6, RDI=7, R8..R15).
global_asm!(
    ".global okernel_vm_launch",
    // rdi = *mut GuestRegisters (= HOST_RSP). Returns only if VMLAUNCH
    // fails, with RFLAGS in rax.
    "okernel_vm_launch:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rax, [rdi + 0]",
    "mov rcx, [rdi + 8]",
    "mov rdx, [rdi + 16]",
    "mov rbx, [rdi + 24]",
    "mov rbp, [rdi + 40]",
    "mov rsi, [rdi + 48]",
    "mov r8,  [rdi + 64]",
    "mov r9,  [rdi + 72]",
    "mov r10, [rdi + 80]",
    "mov r11, [rdi + 88]",
    "mov r12, [rdi + 96]",
    "mov r13, [rdi + 104]",
    "mov r14, [rdi + 112]",
    "mov r15, [rdi + 120]",
    "mov rdi, [rdi + 56]",
    "vmlaunch",
    // VM entry failed: RFLAGS holds VMfailInvalid/VMfailValid. The guest
    // values loaded above are discarded.
    "pushfq",
    "pop rax",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
);

/// The VM-exit stub (HOST_RIP) that calls `$fast`, `$slow` and `$failed`
/// (see the module documentation): one for a run on one processor, whose
/// HOST_RSP is the run state itself, one for a run on several, whose
/// HOST_RSP is each processor's frame (`crate::launch::run`).
macro_rules! exit_stub {
    ($entry:literal, $fast:literal, $slow:literal, $failed:literal) => {
        global_asm!(
            concat!(".global ", $entry),
            // HOST_RIP: a VM exit lands here with RSP = HOST_RSP = the block.
            concat!($entry, ":"),
            "mov [rsp + 0], rax",
            "mov [rsp + 8], rcx",
            "mov [rsp + 16], rdx",
            "mov [rsp + 48], rsi",
            "mov [rsp + 56], rdi",
            "mov [rsp + 64], r8",
            "mov [rsp + 72], r9",
            "mov [rsp + 80], r10",
            "mov [rsp + 88], r11",
            // HOST_RSP is 16-byte aligned, as the call needs (System V).
            "mov rdi, rsp",
            concat!("call ", $fast),
            "test eax, eax",
            "jz 2f",
            "js 3f",
            // RESUME_RBX
            "mov rbx, [rsp + 24]",
            // RESUME
            "2:",
            "mov rax, [rsp + 0]",
            "mov rcx, [rsp + 8]",
            "mov rdx, [rsp + 16]",
            "mov rsi, [rsp + 48]",
            "mov rdi, [rsp + 56]",
            "mov r8,  [rsp + 64]",
            "mov r9,  [rsp + 72]",
            "mov r10, [rsp + 80]",
            "mov r11, [rsp + 88]",
            "vmresume",
            // VM entry failed: report it with every register (never returns).
            "mov [rsp + 24], rbx",
            "mov [rsp + 40], rbp",
            "mov [rsp + 96], r12",
            "mov [rsp + 104], r13",
            "mov [rsp + 112], r14",
            "mov [rsp + 120], r15",
            "pushfq",
            "pop rsi",
            "mov rdi, rsp",
            concat!("call ", $failed),
            "ud2",
            // SLOW: the whole register file.
            "3:",
            "mov [rsp + 24], rbx",
            "mov [rsp + 40], rbp",
            "mov [rsp + 96], r12",
            "mov [rsp + 104], r13",
            "mov [rsp + 112], r14",
            "mov [rsp + 120], r15",
            "mov rdi, rsp",
            concat!("call ", $slow),
            "mov rbx, [rsp + 24]",
            "mov rbp, [rsp + 40]",
            "mov r12, [rsp + 96]",
            "mov r13, [rsp + 104]",
            "mov r14, [rsp + 112]",
            "mov r15, [rsp + 120]",
            "jmp 2b",
        );
    };
}

exit_stub!(
    "okernel_vm_exit",
    "okernel_exit_fast",
    "okernel_exit_slow",
    "okernel_vmresume_failed"
);
exit_stub!(
    "okernel_vm_exit_shared",
    "okernel_exit_fast_shared",
    "okernel_exit_slow_shared",
    "okernel_vmresume_failed_shared"
);

unsafe extern "C" {
    fn okernel_vm_launch(regs: *mut GuestRegisters) -> u64;
    fn okernel_vm_exit();
    fn okernel_vm_exit_shared();
}

/// The address to program into HOST_RIP: the stub of a run on one
/// processor, or (`shared`) of a run on several.
pub fn vm_exit_entry(shared: bool) -> u64 {
    if shared {
        okernel_vm_exit_shared as *const () as u64
    } else {
        okernel_vm_exit as *const () as u64
    }
}

/// Decodes the RFLAGS of a failed VMLAUNCH or VMRESUME.
pub fn entry_failure(rflags: u64) -> VmFail {
    let decoded = decode_rflags(rflags, || {
        // SAFETY: VMfailValid implies a current VMCS (SDM §31.2).
        unsafe { super::vmx::vmread(ReadOnly32::VmInstructionError as u32) }.map_or(0, |v| v as u32)
    });
    // A VM-entry instruction that fell through failed; CF = ZF = 0 would
    // be a processor bug, reported as VMfailInvalid.
    decoded.err().unwrap_or(VmFail::Invalid)
}

/// Enters the guest with VMLAUNCH, loading its general-purpose registers
/// from `regs`. Returns only if the VM entry fails; after a successful
/// one, every VM exit enters the exit handlers on the stack below `regs`
/// (see the module documentation).
///
/// # Safety
/// In VMX root operation with a current, clear VMCS whose host-state area
/// is complete (HOST_RIP = [`vm_exit_entry`], HOST_RSP = `regs`, host
/// CR3/GDT/IDT/TR/segments of the running monitor) and whose guest state
/// and controls keep the monitor isolated (EPT excludes monitor memory).
/// `regs` must be 16-byte aligned, at the top of the stack this function
/// runs on, with room below it for the exit handler; nothing but the exit
/// path may use that stack or the block afterwards (the caller's frame is
/// overwritten by the first exit and never returned to).
pub unsafe fn vm_launch(regs: *mut GuestRegisters) -> VmFail {
    // SAFETY: the caller guarantees a complete, current VMCS and the
    // stack layout. On failure the stub restores every callee-saved
    // register and the stack pointer and returns the failing RFLAGS; it
    // reads `regs` only.
    let rflags = unsafe { okernel_vm_launch(regs) };
    entry_failure(rflags)
}
