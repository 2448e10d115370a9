//! Ring 3 and back: the user stub every task runs, the `SYSCALL` entry,
//! the kernel's way into a task (`SYSRET`) and out of it, and the gate
//! where a return to the trusted context resumes.
//!
//! A task runs one *request* at a time: the kernel loads RAX, RDI, RSI and
//! RDX, switches to the task's page tables and `SYSRET`s to the user stub.
//! The stub performs the request (a system call, or a ring-3 load, store
//! or `VMCALL`) and ends it with `syscall DONE(result)`. The kernel's
//! `DONE` handler leaves through [`guest_leave_user`]: for an untrusted
//! task under protection it first asks okernel to switch back to the
//! trusted context, which resumes the guest at the registered gate
//! (`guest_trusted_gate`), never after the `VMCALL` (invariant 9). The
//! gate restores the kernel's page tables and the stack saved by
//! [`guest_enter_user`], re-enables NMIs (an IRETQ to itself: a gate
//! starts with them blocked), and its caller then sees the result.
//!
//! SYSCALL/SYSRET: SDM Vol. 2B (SYSCALL, SYSRET), Vol. 3A §5.8.8.

use okernel_abi::hypercall::Call;

core::arch::global_asm!(
    r#"
    .section .okernel.user_text, "ax"
    .balign 4096
    .global guest_user_stub
guest_user_stub:
    cmp rax, {op_store}
    je 2f
    cmp rax, {op_load}
    je 3f
    cmp rax, {op_vmcall}
    je 4f
    syscall
    jmp 9f
2:  mov [rdi], rsi
    mov rax, [rdi]
    jmp 9f
3:  mov rax, [rdi]
    jmp 9f
4:  mov rax, rdi
    vmcall
9:  mov rdi, rax
    mov eax, {sys_done}
    syscall
    ud2

    .section .text.guest_user, "ax"
    .global guest_syscall_entry
guest_syscall_entry:
    mov [rip + guest_user_rsp], rsp
    mov rsp, [rip + guest_kstack_top]
    push rcx
    push r11
    push qword ptr [rip + guest_user_rsp]
    sub rsp, 8
    mov rcx, rdx
    mov rdx, rsi
    mov rsi, rdi
    mov rdi, rax
    call guest_syscall
    add rsp, 8
    pop rdx
    pop r11
    pop rcx
    mov rsp, rdx
    sysretq

    .global guest_enter_user
guest_enter_user:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + guest_sched_rsp], rsp
    mov r8, rcx
    mov cr3, rdx
    mov rcx, rdi
    mov rsp, rsi
    mov r11, 0x2
    mov rax, [r8]
    mov rdi, [r8 + 8]
    mov rsi, [r8 + 16]
    mov rdx, [r8 + 24]
    xor r8d, r8d
    xor r9d, r9d
    xor r10d, r10d
    xor ebx, ebx
    xor ebp, ebp
    xor r12d, r12d
    xor r13d, r13d
    xor r14d, r14d
    xor r15d, r15d
    sysretq

    .global guest_leave_user
guest_leave_user:
    mov r8, rdx
    mov rdx, rdi
    test r8, r8
    jz guest_trusted_gate
    xor edi, edi
    mov eax, {switch_context}
    vmcall
    /* SwitchContext came back here: refused or not implemented. */
    mov [rip + guest_gate_fallthrough], rax
    .global guest_trusted_gate
guest_trusted_gate:
    /* The state okernel started the gate in (ABI 1.1): its own stack,
       TF clear. Recorded for the attack suite, then never trusted. */
    mov [rip + guest_gate_entry_rsp], rsp
    pushfq
    pop qword ptr [rip + guest_gate_entry_rflags]
    mov qword ptr [rip + guest_probe_armed], 0
    mov rax, [rip + guest_kernel_cr3]
    mov cr3, rax
    mov rsp, [rip + guest_sched_rsp]
    /* Its page tables and stack are the kernel's now: end the NMI
       blocking the gate started with. */
    call guest_iret_to_caller
    mov rax, rdx
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

    /* Returns to its caller through IRETQ (same CS, SS, RFLAGS, the
       stack as `ret` would leave it), which ends blocking by NMI (SDM
       Vol. 3A §6.7.1): how a gate re-enables NMIs once it trusts its
       state (a gate starts with them blocked, ABI 1.1). Clobbers RAX,
       RCX and R11. */
    .global guest_iret_to_caller
guest_iret_to_caller:
    pop rcx
    mov rax, rsp
    mov r11d, ss
    push r11
    push rax
    pushfq
    mov r11d, cs
    push r11
    push rcx
    iretq

    .global guest_switch_keep_running
guest_switch_keep_running:
    mov rsi, rdi
    xor edi, edi
    mov rdx, {gate_magic}
    mov eax, {switch_context}
    vmcall
    /* Still here: the switch did not divert us to the gate. */
    mov qword ptr [rip + guest_kept_running], 1
    ret

    /* Runs `body` (RDX) in context RDI and comes back through the gate
       RSI: SwitchContext(RDI) (a more restricted view: it resumes after
       the VMCALL), body(status) on this stack, then SwitchContext(0,
       RSI), which resumes at guest_trusted_gate: that restores the
       stack saved here and returns body's result (RDX, which the switch
       keeps). A switch back that falls through is recorded like
       guest_leave_user's. */
    .global guest_visit_context
guest_visit_context:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + guest_sched_rsp], rsp
    mov r12, rsi
    mov r13, rdx
    xor esi, esi
    mov eax, {switch_context}
    vmcall
    mov rdi, rax
    sub rsp, 8
    call r13
    mov rdx, rax
    mov rsi, r12
    xor edi, edi
    mov eax, {switch_context}
    vmcall
    mov [rip + guest_gate_fallthrough], rax
    jmp guest_trusted_gate

    .global guest_switch_single_step
guest_switch_single_step:
    mov rsi, rdi
    xor edi, edi
    mov rdx, {gate_magic}
    mov eax, {switch_context}
    pushfq
    or qword ptr [rsp], {tf}
    popfq
    vmcall
    /* Still here: no gate. With TF still set the single-step trap is
       delivered after the VMCALL, on this stack. */
    pushfq
    and qword ptr [rsp], ~{tf}
    popfq
    mov qword ptr [rip + guest_kept_running], 1
    ret

    /* Sends this processor a fixed IPI (interrupts are off: it stays
       requested), waits (bounded) for its IRR bit, then STI; VMCALL: the
       VMCALL runs in STI's shadow with the interrupt still pending. */
    .global guest_switch_pending_irq
guest_switch_pending_irq:
    mov rsi, rdi
    movabs rcx, {icr_low}
    mov dword ptr [rcx], {irq_ipi}
    movabs rcx, {irr_word}
    mov r8d, 100000
.Lpending_irq_wait:
    test dword ptr [rcx], {irr_bit}
    jnz .Lpending_irq_requested
    pause
    dec r8d
    jnz .Lpending_irq_wait
.Lpending_irq_requested:
    xor edi, edi
    mov rdx, {gate_magic}
    mov eax, {switch_context}
    sti
    vmcall
    /* Still here: no gate. Blocking by STI ended with the VMCALL, so the
       interrupt is taken here, on this stack. */
    .global guest_switch_pending_irq_after
guest_switch_pending_irq_after:
    cli
    mov qword ptr [rip + guest_kept_running], 1
    ret

    /* DR0 = the gate, DR1 = the instruction after the VMCALL, both
       enabled execute breakpoints (DR7 L0, L1), then the switch. */
    .global guest_switch_breakpoints
guest_switch_breakpoints:
    mov rsi, rdi
    lea rax, [rip + guest_trusted_gate]
    mov dr0, rax
    lea rax, [rip + guest_switch_breakpoints_after]
    mov dr1, rax
    mov eax, {dr7_armed}
    mov dr7, rax
    xor edi, edi
    mov rdx, {gate_magic}
    mov eax, {switch_context}
    vmcall
    /* Still here: no gate. DR1's #DB hits before this instruction. */
    .global guest_switch_breakpoints_after
guest_switch_breakpoints_after:
    mov ecx, {dr7_reset}
    mov dr7, rcx
    mov qword ptr [rip + guest_kept_running], 1
    ret

    .section .data.guest_user, "aw"
    .balign 8
guest_user_rsp: .quad 0
guest_sched_rsp: .quad 0
    .global guest_kstack_top
guest_kstack_top: .quad 0
    .global guest_kernel_cr3
guest_kernel_cr3: .quad 0
    .global guest_gate_fallthrough
guest_gate_fallthrough: .quad 0
    .global guest_kept_running
guest_kept_running: .quad 0
    .global guest_gate_entry_rsp
guest_gate_entry_rsp: .quad 0
    .global guest_gate_entry_rflags
guest_gate_entry_rflags: .quad 0

    /* The stack okernel starts the gate on (registered with it). */
    .section .bss.guest_gate_stack, "aw", @nobits
    .balign 4096
guest_gate_stack:
    .skip 4096
    .global guest_gate_stack_top
guest_gate_stack_top:
"#,
    op_store = const guest::tasks::user_op::STORE,
    op_load = const guest::tasks::user_op::LOAD,
    op_vmcall = const guest::tasks::user_op::VMCALL,
    sys_done = const guest::tasks::sys::DONE,
    switch_context = const Call::SwitchContext as u64,
    gate_magic = const GATE_MAGIC,
    tf = const RFLAGS_TF,
    icr_low = const guest::layout::alias_va(super::apic::APIC_SLOT) + super::apic::reg::ICR_LOW,
    irq_ipi = const PENDING_IRQ_ICR,
    irr_word = const guest::layout::alias_va(super::apic::APIC_SLOT)
        + super::apic::reg::IRR
        + (super::irq::RECORD_VECTOR as u64 / 32) * 0x10,
    irr_bit = const 1u32 << (super::irq::RECORD_VECTOR as u32 % 32),
    dr7_armed = const DR7_RESET | DR7_L0 | DR7_L1,
    dr7_reset = const DR7_RESET,
);

/// The ICR value of [`guest_switch_pending_irq`]'s IPI: vector
/// [`super::irq::RECORD_VECTOR`], delivery mode fixed, level assert (bit
/// 14), destination shorthand self (bits 19:18 = 01b).
pub const PENDING_IRQ_ICR: u32 = super::irq::RECORD_VECTOR as u32 | 1 << 14 | 1 << 18;

/// DR7's reset value (SDM Vol. 3B §18.2.4): every breakpoint disabled.
pub const DR7_RESET: u64 = 0x400;
/// DR7 L0: breakpoint 0 enabled (R/W0 = LEN0 = 0: instruction execution).
pub const DR7_L0: u64 = 1;
/// DR7 L1: breakpoint 1 enabled (R/W1 = LEN1 = 0: instruction execution).
pub const DR7_L1: u64 = 1 << 2;

/// RFLAGS.TF.
pub const RFLAGS_TF: u64 = 1 << 8;

/// What [`guest_switch_keep_running`] leaves in RDX: a request that ends
/// with this result came back through the gate from that attack.
pub const GATE_MAGIC: u64 = 0x6a7e_6a7e_6a7e_6a7e;

unsafe extern "C" {
    /// The first byte of the user stub (its page is every task's code).
    pub fn guest_user_stub();
    /// The `SYSCALL` entry (IA32_LSTAR).
    pub fn guest_syscall_entry();
    /// The gate a switch back to the trusted context resumes at.
    pub fn guest_trusted_gate();
    /// Asks okernel to switch to the trusted context (gate RDI) and keeps
    /// running if it can (a probe target of the attack suite).
    pub fn guest_switch_keep_running(gate: u64) -> u64;
    /// Sets RFLAGS.TF, asks okernel to switch to the trusted context (gate
    /// RDI) and, if it comes back, clears TF (a probe target of the
    /// attack suite).
    pub fn guest_switch_single_step(gate: u64) -> u64;
    /// Makes a fixed self-IPI ([`PENDING_IRQ_ICR`]) pending with
    /// interrupts off, then `STI; VMCALL` asks okernel to switch to the
    /// trusted context (gate RDI); if it comes back, `CLI` (a probe
    /// target of the attack suite).
    pub fn guest_switch_pending_irq(gate: u64) -> u64;
    /// The instruction after [`guest_switch_pending_irq`]'s VMCALL.
    pub fn guest_switch_pending_irq_after();
    /// Arms execute breakpoints on the gate (DR0) and on the instruction
    /// after its VMCALL (DR1), then asks okernel to switch to the trusted
    /// context (gate RDI); if it comes back, resets DR7 (a probe target
    /// of the attack suite).
    pub fn guest_switch_breakpoints(gate: u64) -> u64;
    /// The instruction after [`guest_switch_breakpoints`]'s VMCALL.
    pub fn guest_switch_breakpoints_after();
    static guest_gate_stack_top: u8;
    static mut guest_gate_entry_rsp: u64;
    static mut guest_gate_entry_rflags: u64;
    fn guest_enter_user(rip: u64, rsp: u64, cr3: u64, regs: *const [u64; 4]) -> u64;
    fn guest_visit_context(ctx: u64, gate: u64, body: extern "C" fn(u64) -> u64) -> u64;
    fn guest_leave_user(result: u64, gate: u64, switch: u64) -> !;
    static mut guest_kstack_top: u64;
    static mut guest_kernel_cr3: u64;
    static mut guest_gate_fallthrough: u64;
    static mut guest_kept_running: u64;
}

/// The top of the gate's own stack, registered with `RegisterGate`.
pub fn gate_stack_top() -> u64 {
    &raw const guest_gate_stack_top as u64
}

/// RSP and RFLAGS as the gate found them the last time it ran, then
/// cleared to 0.
pub fn take_gate_entry() -> (u64, u64) {
    // SAFETY: quadwords of .data written only by the gate code on this
    // CPU.
    unsafe {
        let state = (
            (&raw const guest_gate_entry_rsp).read_volatile(),
            (&raw const guest_gate_entry_rflags).read_volatile(),
        );
        (&raw mut guest_gate_entry_rsp).write_volatile(0);
        (&raw mut guest_gate_entry_rflags).write_volatile(0);
        state
    }
}

/// No fall-through recorded (see [`gate_fallthrough`]).
pub const NO_FALLTHROUGH: u64 = u64::MAX;

/// Sets the page tables the gate restores.
pub fn set_kernel_cr3(cr3: u64) {
    // SAFETY: a quadword of .data read only by the gate code on this CPU.
    unsafe { (&raw mut guest_kernel_cr3).write_volatile(cr3) };
}

/// Runs one request of a task in ring 3 and returns its `DONE` result.
///
/// # Safety
///
/// `cr3` must map the kernel as the current page tables do and the user
/// stub at `rip` with a writable user stack below `rsp`; `kstack_top` must
/// be the top of a free, 16-aligned kernel stack; `LSTAR`, `STAR` and
/// `SFMASK` must be set up for [`guest_syscall_entry`].
pub unsafe fn enter_user(rip: u64, rsp: u64, cr3: u64, kstack_top: u64, regs: [u64; 4]) -> u64 {
    // SAFETY: quadwords of .data that only this CPU reads, in the entry
    // and gate code.
    unsafe {
        (&raw mut guest_kstack_top).write_volatile(kstack_top);
        (&raw mut guest_gate_fallthrough).write_volatile(NO_FALLTHROUGH);
        (&raw mut guest_kept_running).write_volatile(0);
    }
    // SAFETY: forwarded from the caller; `guest_enter_user` saves the
    // callee-saved registers and the stack and the gate restores them, so
    // it returns like a function.
    unsafe { guest_enter_user(rip, rsp, cr3, &regs) }
}

/// Runs `body` in context `ctx` and comes back to the trusted context
/// through gate `gate`: `body` gets the `SwitchContext(ctx)` status and
/// runs in that context's view only if it is 0. Returns `body`'s result
/// and, if the switch back returned after its `VMCALL` instead of at the
/// gate, its status (else [`NO_FALLTHROUGH`]).
///
/// # Safety
///
/// The kernel's page tables must be set ([`set_kernel_cr3`]) and `gate`
/// registered at `guest_trusted_gate` with its stack; `body` must not
/// rely on anything the context's view withholds.
pub unsafe fn visit_context(ctx: u64, gate: u64, body: extern "C" fn(u64) -> u64) -> (u64, u64) {
    // SAFETY: a quadword of .data written only by the gate code on this
    // CPU.
    unsafe { (&raw mut guest_gate_fallthrough).write_volatile(NO_FALLTHROUGH) };
    // SAFETY: forwarded from the caller; `guest_visit_context` saves the
    // callee-saved registers and the stack and the gate restores them, so
    // it returns like a function.
    let result = unsafe { guest_visit_context(ctx, gate, body) };
    (result, gate_fallthrough())
}

/// Ends the current request with `result`; `gate` is the registered gate
/// id, used when `switch` asks for a return to the trusted context first.
///
/// # Safety
///
/// Only from a system call of a request started by [`enter_user`].
pub unsafe fn leave_user(result: u64, gate: u64, switch: bool) -> ! {
    // SAFETY: forwarded; the saved scheduler stack is live.
    unsafe { guest_leave_user(result, gate, u64::from(switch)) }
}

/// The status of a `SwitchContext` back to the trusted context that
/// returned after the `VMCALL` during the last request, or
/// [`NO_FALLTHROUGH`].
pub fn gate_fallthrough() -> u64 {
    // SAFETY: a quadword of .data written only by the gate code.
    unsafe { (&raw const guest_gate_fallthrough).read_volatile() }
}

/// Whether [`guest_switch_keep_running`] kept running after its switch
/// during the last request.
pub fn kept_running() -> bool {
    // SAFETY: as above.
    unsafe { (&raw const guest_kept_running).read_volatile() != 0 }
}
