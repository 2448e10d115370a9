//! VM entry and the VM-exit entry point (SDM Vol. 3C §27 "VM Entries",
//! §28.5 "Loading Host State").
//!
//! [`vm_run`] behaves like a function call that returns at the next VM exit:
//! it saves the host's callee-saved registers on the current stack, points
//! HOST_RSP at that stack, loads the guest's general-purpose registers from
//! a [`GuestRegisters`], and executes VMLAUNCH or VMRESUME. At a VM exit the
//! processor loads RSP = HOST_RSP and RIP = HOST_RIP = [`vm_exit_entry`],
//! which stores the guest's registers back, restores the host's and returns
//! to the caller of [`vm_run`]. If the VM entry fails instead, execution
//! falls through the VMLAUNCH/VMRESUME, which returns the RFLAGS outcome.
//!
//! RSP and RIP of the guest live in the VMCS, not here. The monitor is built
//! without SSE (the `x86_64-unknown-none` target is soft-float), so the
//! guest's vector and x87 state is never touched and need not be saved.

use core::arch::global_asm;

use crate::vmx::error::{VmFail, decode_rflags};
use crate::vmx::fields::{HostNatural, ReadOnly32};
use crate::vmx::regs::GuestRegisters;

const _: () = assert!(core::mem::size_of::<GuestRegisters>() == 16 * 8);

// The stub. Register offsets in GuestRegisters follow the SDM GPR encoding
// (RAX=0, RCX=1, RDX=2, RBX=3, RSP=4 unused, RBP=5, RSI=6, RDI=7, R8..R15).
global_asm!(
    ".global okernel_vm_run",
    ".global okernel_vm_exit",
    "okernel_vm_run:",
    // rdi = *mut GuestRegisters, rsi = launched (0 = VMLAUNCH).
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "mov rax, {host_rsp}",
    "vmwrite rax, rsp",
    "jbe 3f",
    "test rsi, rsi",
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
    "jnz 2f",
    "vmlaunch",
    "jmp 3f",
    "2:",
    "vmresume",
    // VM entry failed: RFLAGS holds VMfailInvalid/VMfailValid. The guest
    // values loaded above are discarded.
    "3:",
    "pushfq",
    "pop rax",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    // HOST_RIP: a VM exit lands here with RSP = HOST_RSP, i.e. pointing at
    // the saved GuestRegisters pointer.
    "okernel_vm_exit:",
    "push rdi",
    "mov rdi, [rsp + 8]",
    "mov [rdi + 0], rax",
    "mov [rdi + 8], rcx",
    "mov [rdi + 16], rdx",
    "mov [rdi + 24], rbx",
    "mov [rdi + 40], rbp",
    "mov [rdi + 48], rsi",
    "mov [rdi + 64], r8",
    "mov [rdi + 72], r9",
    "mov [rdi + 80], r10",
    "mov [rdi + 88], r11",
    "mov [rdi + 96], r12",
    "mov [rdi + 104], r13",
    "mov [rdi + 112], r14",
    "mov [rdi + 120], r15",
    "pop rax",
    "mov [rdi + 56], rax",
    "xor eax, eax",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    host_rsp = const HostNatural::Rsp as u32,
);

unsafe extern "C" {
    fn okernel_vm_run(regs: *mut GuestRegisters, launched: u64) -> u64;
    fn okernel_vm_exit();
}

/// The address to program into HOST_RIP.
pub fn vm_exit_entry() -> u64 {
    okernel_vm_exit as *const () as u64
}

/// Enters the guest (VMLAUNCH if `launched` is false, else VMRESUME) and
/// returns at the next VM exit with `regs` holding the guest's registers.
///
/// # Safety
/// In VMX root operation with a current VMCS whose host-state area is
/// complete (HOST_RIP = [`vm_exit_entry`], host CR3/GDT/IDT/TR/segments of
/// the running monitor) and whose guest state and controls keep the monitor
/// isolated (EPT excludes monitor memory). HOST_RSP is written here.
pub unsafe fn vm_run(regs: &mut GuestRegisters, launched: bool) -> Result<(), VmFail> {
    // SAFETY: the caller guarantees a complete, current VMCS. The stub
    // preserves every callee-saved register and the stack pointer across
    // both the exit path and the failed-entry path, writes `regs` only
    // through the pointer it was given, and returns 0 after a VM exit or
    // the failing RFLAGS otherwise.
    let rflags = unsafe { okernel_vm_run(regs, u64::from(launched)) };
    if rflags == 0 {
        return Ok(());
    }
    decode_rflags(rflags, || {
        // SAFETY: VMfailValid implies a current VMCS (SDM §31.2).
        unsafe { super::vmx::vmread(ReadOnly32::VmInstructionError as u32) }.map_or(0, |v| v as u32)
    })
}
