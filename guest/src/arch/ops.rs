//! The privileged and faulting instructions of the fuzz executor
//! (`src/fuzz/`), each a probe target (`extern "C" fn(u64) -> u64` run
//! under [`super::traps::probe`]), and its return gate.
//!
//! Operands that do not fit the probe's one argument are passed in
//! [`ARGS`]; results beyond RAX come back in [`OUT`]. One CPU, one probe
//! at a time.
//!
//! The gate: a switch from the untrusted context to a less restricted one
//! resumes at a registered gate, never after the VMCALL (invariant 9). The
//! executor registers [`guest_fuzz_gate`]: it records the context the
//! switch came from (RDI, the ABI), re-enables NMIs with an IRETQ to its
//! next instruction (a gate starts with NMIs blocked until its first
//! IRET, ABI 1.1) and unwinds the probe that issued the switch, which
//! then returns to the executor as if the operation had returned 0. When
//! [`arm_gate_nmi`] armed it, the gate first sends its processor an NMI:
//! that NMI must arrive only after the IRET, at [`guest_fuzz_gate_open`]
//! (the probe, still armed, catches it there).

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::registers::control::{Cr0, Cr4};

/// Operands of the instruction helpers.
pub static ARGS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
/// Extra results of the instruction helpers.
pub static OUT: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// The value [`guest_fuzz_gate`] stores when no gate was taken.
pub const NO_GATE: u64 = u64::MAX;

core::arch::global_asm!(
    r#"
    .section .text.fuzz_gate, "ax"
    .global guest_fuzz_gate
guest_fuzz_gate:
    mov [rip + guest_fuzz_gate_from], rdi
    mov rsp, [rip + guest_probe_rsp]
    cmp qword ptr [rip + guest_fuzz_gate_nmi], 0
    je 2f
    /* The NMI check: send this processor an NMI (ICR_HIGH holds its APIC
       ID) while the gate entry state blocks NMIs; give it time to act. */
    mov qword ptr [rip + guest_fuzz_gate_nmi], 0
    movabs rax, {icr_low}
    mov dword ptr [rax], {nmi}
    /* Until the APIC has sent it (delivery status, bit 12), bounded;
       then a while for it to be taken, were NMIs not blocked. */
    mov ecx, 100000
3:  test dword ptr [rax], 0x1000
    jz 4f
    pause
    dec ecx
    jnz 3b
4:  mov ecx, 1000
1:  pause
    dec ecx
    jnz 1b
2:
    /* End the NMI blocking the gate started with; a held NMI is
       delivered right after the IRETQ, at guest_fuzz_gate_open, while
       the probe is armed. */
    call guest_iret_to_caller
    .global guest_fuzz_gate_open
guest_fuzz_gate_open:
    mov qword ptr [rip + guest_probe_armed], 0
    jmp guest_probe_landing

    .global guest_fuzz_ret
guest_fuzz_ret:
    mov eax, 0x600d
    ret

    .section .data.fuzz_gate, "aw"
    .balign 8
    .global guest_fuzz_gate_from
guest_fuzz_gate_from:
    .quad -1
    .global guest_fuzz_gate_nmi
guest_fuzz_gate_nmi:
    .quad 0
"#,
    icr_low = const guest::layout::alias_va(super::apic::APIC_SLOT) + super::apic::reg::ICR_LOW,
    nmi = const super::apic::ICR_NMI,
);

unsafe extern "C" {
    /// The executor's gate (see the module docs). Never called.
    pub fn guest_fuzz_gate();
    /// Where the gate has re-enabled NMIs (after its IRET).
    pub fn guest_fuzz_gate_open();
    /// A function of kernel text: returns [`RET_GADGET_RESULT`].
    pub fn guest_fuzz_ret() -> u64;
    static mut guest_fuzz_gate_from: u64;
    static mut guest_fuzz_gate_nmi: u64;
}

/// Arms the gate's NMI check for the next gate entry (see the module
/// docs), or disarms it.
pub fn arm_gate_nmi(on: bool) {
    // SAFETY: a quadword of .data read and cleared by the gate stub, on
    // the one CPU.
    unsafe { (&raw mut guest_fuzz_gate_nmi).write_volatile(u64::from(on)) };
}

/// What [`guest_fuzz_ret`] returns.
pub const RET_GADGET_RESULT: u64 = 0x600d;

/// Takes the context a gate came from, or [`NO_GATE`].
pub fn take_gate_from() -> u64 {
    let p = &raw mut guest_fuzz_gate_from;
    // SAFETY: a quadword of .data written only by the gate stub and here,
    // on the one CPU.
    unsafe {
        let v = p.read_volatile();
        p.write_volatile(NO_GATE);
        v
    }
}

fn arg(i: usize) -> u64 {
    ARGS[i].load(Ordering::SeqCst)
}

fn out(i: usize, v: u64) {
    OUT[i].store(v, Ordering::SeqCst);
}

/// Calls the code at `addr` and returns its RAX.
pub extern "C" fn call_at(addr: u64) -> u64 {
    // SAFETY: run under a probe; the executor only calls known code (a
    // `ret`-terminated gadget in text or in its scratch page) or memory
    // the monitor must refuse to execute, whose fault the probe catches.
    let f: extern "C" fn() -> u64 = unsafe { core::mem::transmute(addr as usize) };
    f()
}

/// Writes `ARGS[0]` to the quadword at `addr`.
pub extern "C" fn write_u64(addr: u64) -> u64 {
    // SAFETY: run under a probe; the address is one the executor chose
    // and restores, or one the monitor must refuse.
    unsafe { core::ptr::write_volatile(addr as *mut u64, arg(0)) };
    0
}

/// Writes `value` to CR0, reads CR0 back into `OUT[0]`.
pub extern "C" fn write_cr0(value: u64) -> u64 {
    // SAFETY: the executor flips one bit of a list that keeps the kernel
    // running (no PG/PE/CD/NW) and writes the old value back after.
    unsafe { Cr0::write_raw(value) };
    out(0, Cr0::read_raw());
    0
}

/// Writes `value` to CR4, reads CR4 back into `OUT[0]`.
pub extern "C" fn write_cr4(value: u64) -> u64 {
    // SAFETY: as for CR0: one bit of a safe list, restored after.
    unsafe { Cr4::write_raw(value) };
    out(0, Cr4::read_raw());
    0
}

/// WRMSR of `ARGS[0]` to MSR `msr`.
pub extern "C" fn wrmsr(msr: u64) -> u64 {
    // SAFETY: the executor writes values that keep the kernel running
    // (low bits of the syscall MSRs, EFER.SCE) and restores them at once.
    unsafe { super::cpu::wrmsr(msr as u32, arg(0)) };
    0
}

/// Descriptor-table instruction `which` (0 LIDT, 1 LGDT, 2 LLDT, 3 LTR,
/// 4 SIDT, 5 SGDT, 6 SLDT, 7 STR): loads reload what is loaded now; stores
/// return the base or selector.
pub extern "C" fn descriptor(which: u64) -> u64 {
    let mut buf = [0u8; 10];
    let p = buf.as_mut_ptr();
    // SAFETY: run under a probe. Loads reload the current tables (read by
    // the matching store first), LLDT loads the null selector the kernel
    // uses; stores write only `buf` or a register.
    unsafe {
        match which {
            0 => core::arch::asm!("sidt [{0}]", "lidt [{0}]", in(reg) p, options(nostack)),
            1 => core::arch::asm!("sgdt [{0}]", "lgdt [{0}]", in(reg) p, options(nostack)),
            2 => core::arch::asm!("xor eax, eax", "lldt ax", out("rax") _, options(nostack)),
            3 => core::arch::asm!("str ax", "ltr ax", out("rax") _, options(nostack)),
            4 => core::arch::asm!("sidt [{0}]", in(reg) p, options(nostack)),
            5 => core::arch::asm!("sgdt [{0}]", in(reg) p, options(nostack)),
            6 => {
                let v: u64;
                core::arch::asm!("xor eax, eax", "sldt ax", out("rax") v, options(nostack));
                return v;
            }
            _ => {
                let v: u64;
                core::arch::asm!("xor eax, eax", "str ax", out("rax") v, options(nostack));
                return v;
            }
        }
    }
    u64::from_le_bytes([
        buf[2], buf[3], buf[4], buf[5], buf[6], buf[7], buf[8], buf[9],
    ])
}

/// VMX instruction `which` (0 VMXON, 1 VMXOFF, 2 VMCLEAR, 3 VMPTRLD,
/// 4 VMPTRST, 5 VMREAD, 6 VMWRITE, 7 VMLAUNCH, 8 VMRESUME, 9 INVEPT,
/// 10 INVVPID, 11 VMFUNC) with a zeroed memory operand.
pub extern "C" fn vmx(which: u64) -> u64 {
    let mem = [0u64; 2];
    let p = mem.as_ptr();
    // SAFETY: in VMX non-root mode each exits to the monitor, which must
    // inject #UD (the probe catches it); outside VMX operation each
    // raises #UD itself. The memory operand is the local `mem`.
    unsafe {
        match which {
            0 => core::arch::asm!("vmxon [{0}]", in(reg) p, options(nostack)),
            1 => core::arch::asm!("vmxoff", options(nostack)),
            2 => core::arch::asm!("vmclear [{0}]", in(reg) p, options(nostack)),
            3 => core::arch::asm!("vmptrld [{0}]", in(reg) p, options(nostack)),
            4 => core::arch::asm!("vmptrst [{0}]", in(reg) p, options(nostack)),
            5 => {
                core::arch::asm!("xor eax, eax", "vmread rcx, rax", out("rax") _, out("rcx") _, options(nostack))
            }
            6 => {
                core::arch::asm!("xor eax, eax", "vmwrite rax, rax", out("rax") _, options(nostack))
            }
            7 => core::arch::asm!("vmlaunch", options(nostack)),
            8 => core::arch::asm!("vmresume", options(nostack)),
            9 => {
                core::arch::asm!("mov eax, 1", "invept rax, [{0}]", in(reg) p, out("rax") _, options(nostack))
            }
            10 => {
                core::arch::asm!("mov eax, 1", "invvpid rax, [{0}]", in(reg) p, out("rax") _, options(nostack))
            }
            _ => {
                core::arch::asm!("xor eax, eax", "xor ecx, ecx", "vmfunc", out("rax") _, out("rcx") _, options(nostack))
            }
        }
    }
    0
}

/// Exception or interrupt `which`: 0 #DE (divide by zero), 1 #BP (INT3),
/// 2 #UD (UD2), 3 INT1, 4–9 INT n to vectors 4, 5, 6, 7, 16, 19, 10 INT
/// 0x80 (no gate: #NP). No interrupt window: the legacy PIC that firmware
/// left programmed would deliver its timer at vector 8.
pub extern "C" fn exception(which: u64) -> u64 {
    // SAFETY: run under a probe; each raises one exception the guest's
    // IDT routes to the probe handler (vectors without an error code, so
    // a software INT pushes the frame the stub expects), or none.
    unsafe {
        match which {
            0 => {
                core::arch::asm!("xor edx, edx", "xor eax, eax", "xor ecx, ecx", "div rcx", out("rax") _, out("rcx") _, out("rdx") _, options(nostack))
            }
            1 => core::arch::asm!("int3", options(nostack)),
            2 => core::arch::asm!("ud2", options(nostack)),
            3 => core::arch::asm!(".byte 0xf1", options(nostack)),
            4 => core::arch::asm!("int 4", options(nostack)),
            5 => core::arch::asm!("int 5", options(nostack)),
            6 => core::arch::asm!("int 6", options(nostack)),
            7 => core::arch::asm!("int 7", options(nostack)),
            8 => core::arch::asm!("int 16", options(nostack)),
            9 => core::arch::asm!("int 19", options(nostack)),
            _ => core::arch::asm!("int 0x80", options(nostack)),
        }
    }
    0
}

/// The vector [`exception`]`(which)` raises.
pub const fn exception_vector(which: u64) -> u8 {
    match which {
        0 => 0,
        1 => 3,
        2 => 6,
        3 => 1,
        4 => 4,
        5 => 5,
        6 => 6,
        7 => 7,
        8 => 16,
        9 => 19,
        _ => 11,
    }
}

/// Reads an I/O port byte.
pub fn inb(port: u16) -> u8 {
    // SAFETY: the executor reads only its own UART's registers; reads
    // change nothing but that device's state.
    unsafe { x86_64::instructions::port::Port::<u8>::new(port).read() }
}

/// Writes an I/O port byte.
pub fn outb(port: u16, v: u8) {
    // SAFETY: callers write only the executor's UART and the PIC
    // (`irq`); neither can touch memory.
    unsafe { x86_64::instructions::port::Port::<u8>::new(port).write(v) }
}

/// Writes a doubleword to an I/O port (the KVM doorbell).
pub fn outl(port: u16, v: u32) {
    // SAFETY: the doorbell port belongs to the harness; the write has no
    // effect on guest memory the compiler knows of.
    unsafe { x86_64::instructions::port::Port::<u32>::new(port).write(v) }
}
