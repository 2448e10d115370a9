//! The conformance kernel's descriptor tables, exception and interrupt
//! entry, and *probes*: run a piece of code that may fault and get the
//! exception back as a value, with everything the processor pushed.
//!
//! Every entry (the 32 exception vectors and the interrupt vectors the
//! platform checks use) saves all general registers, so an interrupt or a
//! trap can be returned from. `conf_probe(f, arg)` arms the recovery
//! context and calls `f(arg)` with RSP ≡ 8 (mod 16), so the stack
//! alignment the processor does before pushing a frame (SDM Vol. 3A
//! §7.14.2, "64-Bit Mode Stack Frame") is visible. An exception while
//! armed is recorded ([`Fault`]) and resumed at the landing pad, which
//! returns from `conf_probe`; one while not armed ends the run.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};
use okernel_abi::result::Outcome;
use okernel_console::traps::{TrapFrame, exception_name, install_exception_stubs};
use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::structures::tss::TaskStateSegment;

/// The APIC timer's vector.
pub const TIMER_VECTOR: u8 = 0x40;
/// The self-IPI's vector.
pub const IPI_VECTOR: u8 = 0x41;
/// The local APIC's spurious vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

core::arch::global_asm!(
    r#"
    .macro conf_stub vec, err
conf_trap_\vec:
    .if \err == 0
    push 0
    .endif
    push \vec
    jmp conf_trap_common
    .endm

    .section .text.traps, "ax"
conf_trap_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    /* 15 registers + vector + error + the 5 pushed by the CPU from a
       16-aligned RSP: the stack is 16-aligned here. */
    lea rdi, [rsp + 15 * 8]
    call conf_trap
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq

    .irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31,64,65,255
    conf_stub \v, 0
    .endr
    .irp v, 8,10,11,12,13,14,17,21,29,30
    conf_stub \v, 1
    .endr

    /* u64 conf_probe(u64 (*f)(u64), u64 arg): f runs with RSP = 8 mod 16. */
    .global conf_probe
conf_probe:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + conf_probe_rsp], rsp
    mov qword ptr [rip + conf_probe_armed], 1
    mov rax, rdi
    mov rdi, rsi
    sub rsp, 8
    call rax
    add rsp, 8
    mov qword ptr [rip + conf_probe_armed], 0
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

    .global conf_probe_landing
conf_probe_landing:
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
    .global conf_trap_table
conf_trap_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad conf_trap_\n
    .endr
    .global conf_irq_table
conf_irq_table:
    .quad conf_trap_64, conf_trap_65, conf_trap_255

    .section .data.traps, "aw"
    .balign 8
    .global conf_probe_armed
conf_probe_armed:
    .quad 0
    .global conf_probe_rsp
conf_probe_rsp:
    .quad 0
"#
);

unsafe extern "C" {
    static conf_trap_table: [u64; 32];
    static conf_irq_table: [u64; 3];
    static conf_probe_rsp: u64;
    static mut conf_probe_armed: u64;
    fn conf_probe_landing();
    fn conf_probe(f: extern "C" fn(u64) -> u64, arg: u64) -> u64;
}

/// An exception a probe caught, with what the processor pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The vector.
    pub vector: u8,
    /// The error code (0 where the vector has none).
    pub error_code: u64,
    /// The saved RIP.
    pub rip: u64,
    /// The saved RFLAGS.
    pub rflags: u64,
    /// Whether the frame was pushed from a 16-byte aligned RSP (SDM Vol.
    /// 3A §7.14.2).
    pub aligned: bool,
    /// CR2 (for #PF).
    pub cr2: u64,
    /// DR6 (for #DB), cleared after reading.
    pub dr6: u64,
    /// The interrupted CS, SS and RSP the frame holds.
    pub interrupted: [u64; 3],
    /// The address just above the frame: where the processor started
    /// pushing (the aligned RSP).
    pub frame_top: u64,
    /// The SS selector the handler ran with.
    pub handler_ss: u16,
}

impl Fault {
    /// The vector's name, short ("#GP").
    pub fn name(&self) -> &'static str {
        exception_name(u64::from(self.vector))
            .split(' ')
            .next()
            .unwrap_or("?")
    }
}

/// The fault the handler recorded, one CPU.
static FAULT: spin::Mutex<Option<Fault>> = spin::Mutex::new(None);
/// Interrupts taken per vector: timer, IPI, spurious.
pub static IRQS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_RF: u64 = 1 << 16;

#[unsafe(no_mangle)]
extern "C" fn conf_trap(frame: &mut TrapFrame) {
    if frame.vector >= 32 {
        let slot = match frame.vector as u8 {
            TIMER_VECTOR => 0,
            IPI_VECTOR => 1,
            _ => 2,
        };
        IRQS[slot].fetch_add(1, Ordering::SeqCst);
        if slot != 2 {
            crate::checks::platform::eoi();
        }
        return;
    }
    let armed = &raw mut conf_probe_armed;
    // SAFETY: a quadword in .data written only by conf_probe on this one
    // CPU, with interrupts off around probes.
    if unsafe { armed.read_volatile() } == 0 {
        crate::end(
            Outcome::Panic,
            format_args!(
                "conformance: unexpected {} error {:#x} at RIP {:#x}",
                exception_name(frame.vector),
                frame.error_code,
                frame.rip
            ),
        );
    }
    // SAFETY: as above; disarmed before resuming, so a fault on the
    // landing path ends the run instead of looping.
    unsafe { armed.write_volatile(0) };
    let dr6 = if frame.vector == 1 {
        let v = crate::cpu::dr6();
        crate::cpu::clear_debug();
        v
    } else {
        0
    };
    // SS is the first quadword the CPU pushed, just below the RSP it
    // aligned (SDM Vol. 3A §7.14.2): the slot above SS is that RSP.
    let start = (&raw const frame.ss) as u64 + 8;
    *FAULT.lock() = Some(Fault {
        vector: frame.vector as u8,
        error_code: frame.error_code,
        rip: frame.rip,
        rflags: frame.rflags,
        aligned: start.is_multiple_of(16),
        cr2: x86_64::registers::control::Cr2::read_raw(),
        dr6,
        interrupted: [frame.cs, frame.ss, frame.rsp],
        frame_top: start,
        handler_ss: x86_64::instructions::segmentation::SS::get_reg().0,
    });
    frame.rip = conf_probe_landing as *const () as u64;
    if frame.cs != u64::from(KERNEL_CS) {
        // From ring 3 or compatibility mode (a probe's `conf_to_user` or
        // `conf_to_compat`): back to the kernel's segments.
        frame.cs = KERNEL_CS.into();
        frame.ss = KERNEL_SS.into();
    }
    frame.rflags &= !(RFLAGS_TF | RFLAGS_RF);
    // SAFETY: written by conf_probe before arming: the six saved
    // registers the landing pad pops.
    frame.rsp = unsafe { (&raw const conf_probe_rsp).read_volatile() };
}

/// Runs `f(arg)`: its value, or the exception it raised.
pub fn probe(f: extern "C" fn(u64) -> u64, arg: u64) -> Result<u64, Fault> {
    *FAULT.lock() = None;
    // SAFETY: conf_probe follows the SysV ABI on both paths (callee-saved
    // registers restored by it or by the landing pad) and `f` is a plain
    // extern "C" function.
    let value = unsafe { conf_probe(f, arg) };
    match FAULT.lock().take() {
        None => Ok(value),
        Some(f) => Err(f),
    }
}

const STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct Stack(UnsafeCell<[u8; STACK_SIZE]>);

// SAFETY: only the processor uses the stack (the #DF IST slot).
unsafe impl Sync for Stack {}

static DF_STACK: Stack = Stack(UnsafeCell::new([0; STACK_SIZE]));
/// TSS.RSP0: the stack an exception from ring 3 switches to.
static RSP0_STACK: Stack = Stack(UnsafeCell::new([0; STACK_SIZE]));

/// The top of the ring-0 stack an exception from ring 3 is delivered on
/// (TSS.RSP0, 16-aligned).
pub fn rsp0_top() -> u64 {
    (&raw const RSP0_STACK) as u64 + STACK_SIZE as u64
}

struct Tables {
    idt: InterruptDescriptorTable,
    gdt: GlobalDescriptorTable,
    tss: TaskStateSegment,
}

struct Shared(UnsafeCell<Tables>);

// SAFETY: written once by `init` (guarded by `DONE`) before anything
// reads them; afterwards only the processor reads them.
unsafe impl Sync for Shared {}

static TABLES: Shared = Shared(UnsafeCell::new(Tables {
    idt: InterruptDescriptorTable::new(),
    gdt: GlobalDescriptorTable::new(),
    tss: TaskStateSegment::new(),
}));
static DONE: Once<()> = Once::new();

/// Loads the kernel's GDT, TSS and IDT (the loader's lie in memory the
/// kernel must not rely on). Call once, first thing.
pub fn init() {
    let t = TABLES.0.get();
    DONE.call_once(|| {
        // SAFETY: first and only call (Once): the three fields are
        // borrowed exclusively, once, before anything loads them.
        let (idt, gdt, tss) = unsafe { (&mut (*t).idt, &mut (*t).gdt, &mut (*t).tss) };
        tss.interrupt_stack_table[0] = VirtAddr::from_ptr(&DF_STACK) + STACK_SIZE as u64;
        tss.privilege_stack_table[0] = VirtAddr::new(rsp0_top());
        // SAFETY: the table holds the 32 stubs defined above, each pushing
        // a dummy error code exactly where the CPU pushes none and ending
        // in iretq; IST slot 0 holds DF_STACK.
        unsafe { install_exception_stubs(idt, &conf_trap_table, 0) };
        // SAFETY: the interrupt stubs push a dummy error code (no
        // interrupt has one) and return with iretq.
        let irqs = unsafe { &conf_irq_table };
        for (v, addr) in [TIMER_VECTOR, IPI_VECTOR, SPURIOUS_VECTOR].iter().zip(irqs) {
            // SAFETY: as above.
            unsafe { idt[*v].set_handler_addr(VirtAddr::new(*addr)) };
        }
        let tss: &'static TaskStateSegment = tss;
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss_sel = gdt.append(Descriptor::tss_segment(tss));
        let user_ss = gdt.append(Descriptor::user_data_segment());
        let user_cs = gdt.append(Descriptor::user_code_segment());
        let compat_cs = gdt.append(Descriptor::UserSegment(CODE32));
        assert_eq!(
            (code.0, data.0, tss_sel.0, user_ss.0, user_cs.0, compat_cs.0),
            (
                KERNEL_CS,
                KERNEL_SS,
                TSS_SELECTOR,
                USER_SS,
                USER_CS,
                COMPAT_CS
            ),
            "the GDT's layout"
        );
        // SAFETY: built above, never mutated again; 'static.
        let gdt: &'static GlobalDescriptorTable = unsafe { &(*t).gdt };
        gdt.load();
        // SAFETY: the selectors index the GDT just loaded: a 64-bit code
        // segment, a data segment and an available TSS.
        unsafe {
            CS::set_reg(code);
            SS::set_reg(data);
            DS::set_reg(data);
            ES::set_reg(data);
            load_tss(tss_sel);
        }
    });
    // SAFETY: initialised above and never mutated again.
    let idt: &'static InterruptDescriptorTable = unsafe { &(*t).idt };
    idt.load();
}

/// What SGDT and SIDT must store: the GDT's base and limit, the IDT's
/// base (its limit is 256 gates: 0xFFF), and the TSS selector STR must
/// give.
pub fn table_addrs() -> (u64, u16, u64, u16) {
    let t = TABLES.0.get();
    // SAFETY: only addresses and the GDT's length (written once by
    // `init`) are read; no reference to the tables outlives this.
    unsafe {
        let gdt = &(*t).gdt;
        (
            gdt.entries().as_ptr() as u64,
            gdt.limit(),
            (&raw const (*t).idt) as u64,
            TSS_SELECTOR,
        )
    }
}

/// The TSS's selector: the fourth GDT entry (null, code, data, TSS).
const TSS_SELECTOR: u16 = 0x18;
/// The kernel's code and stack segments.
const KERNEL_CS: u16 = 0x08;
const KERNEL_SS: u16 = 0x10;
/// Ring 3's stack and code segments (after the TSS's two slots), RPL 3.
pub const USER_SS: u16 = 0x2b;
/// Ring 3's code segment.
pub const USER_CS: u16 = 0x33;
/// A ring-0 32-bit code segment: compatibility mode.
pub const COMPAT_CS: u16 = 0x38;
/// Its descriptor: base 0, limit 4 GiB (G), D = 1, L = 0, present, DPL 0,
/// execute/read, accessed (SDM Vol. 3A §3.4.5).
const CODE32: u64 = 0x00cf_9b00_0000_ffff;
