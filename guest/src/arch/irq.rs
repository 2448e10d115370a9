//! Device interrupts, for one user: the fuzz executor's COM2 link, which
//! waits for the UART with `HLT` instead of polling its line status.
//!
//! Why: on Bochs a polling loop costs a full emulated instruction (most
//! of them `IN`s) for every tick of the ~139 ticks a byte takes at
//! 115200 baud, while a halted CPU lets emulated time run ahead ten ticks
//! at a time until the UART raises its line (docs/vm-fuzzing.md,
//! "Throughput"). The demo kernel otherwise runs with interrupts off, and
//! the PIC stays as the firmware left it until [`route_only`] is called.
//!
//! The legacy PIC (8259A) is remapped so that its master lines land on
//! vectors [`PIC_BASE`]`..+8`, above the exceptions (the firmware's
//! mapping puts IRQ 0–7 on vectors 8–15, on top of #DF..#PF). Each of
//! those vectors gets the same handler, which acknowledges the line with a
//! non-specific EOI and returns: the waiter re-reads the device itself, so
//! the handler needs no state. A spurious IRQ 7 (the PIC reports one when
//! a line drops before the CPU acknowledges it) is harmless too: an EOI
//! with nothing in service changes nothing.
//!
//! One more vector, [`RECORD_VECTOR`], serves the attack suite's self-IPI
//! (`gate-pending-interrupt`, `attacks/gate_events.rs`): its handler
//! records the RIP and RSP the interrupt found, counts it and ends its
//! service at the local APIC (EOI through the APIC's alias slot, which
//! the suite maps first). While the suite opens interrupts, both PICs'
//! lines are masked ([`mask_all`]), so the firmware's timer line cannot
//! reach its old vector (8, #DF's).

use super::ops::outb;
use x86_64::VirtAddr;
use x86_64::structures::idt::InterruptDescriptorTable;

/// The vector of the master PIC's line 0 once remapped.
pub const PIC_BASE: u8 = 0x20;

/// The vector whose handler records where it interrupted (see the module
/// docs): above the PIC's sixteen, below every other use.
pub const RECORD_VECTOR: u8 = 0x30;

const MASTER_CMD: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_CMD: u16 = 0xa0;
const SLAVE_DATA: u16 = 0xa1;
/// The master's line the slave cascades into.
const CASCADE_LINE: u8 = 2;

core::arch::global_asm!(
    r#"
    .section .text.irq, "ax"
    .global guest_irq_ack
guest_irq_ack:
    push rax
    mov al, 0x20    /* OCW2: non-specific EOI */
    out 0x20, al
    pop rax
    iretq

    /* The recording handler: frame RIP at [rsp + 8], RSP at [rsp + 32]
       once RAX is saved (no error code). */
    .global guest_irq_record
guest_irq_record:
    push rax
    mov rax, [rsp + 8]
    mov [rip + guest_irq_rip], rax
    mov rax, [rsp + 32]
    mov [rip + guest_irq_rsp], rax
    inc qword ptr [rip + guest_irq_count]
    movabs rax, {eoi}
    mov dword ptr [rax], 0
    pop rax
    iretq

    .section .data.irq, "aw"
    .balign 8
    .global guest_irq_count
guest_irq_count: .quad 0
    .global guest_irq_rip
guest_irq_rip: .quad 0
    .global guest_irq_rsp
guest_irq_rsp: .quad 0
"#,
    eoi = const guest::layout::alias_va(super::apic::APIC_SLOT) + super::apic::reg::EOI,
);

unsafe extern "C" {
    fn guest_irq_ack();
    fn guest_irq_record();
    static mut guest_irq_count: u64;
    static mut guest_irq_rip: u64;
    static mut guest_irq_rsp: u64;
}

/// What the recording handler saw since [`clear_recorded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Interrupts taken at [`RECORD_VECTOR`].
    pub count: u64,
    /// The RIP the last one interrupted.
    pub rip: u64,
    /// The RSP it found (where its frame went).
    pub rsp: u64,
}

/// The recording handler's counters.
pub fn recorded() -> Recorded {
    // SAFETY: quadwords of .data written only by the recording handler
    // (on this, the one CPU) and by `clear_recorded`.
    unsafe {
        Recorded {
            count: (&raw const guest_irq_count).read_volatile(),
            rip: (&raw const guest_irq_rip).read_volatile(),
            rsp: (&raw const guest_irq_rsp).read_volatile(),
        }
    }
}

/// Resets the recording handler's counters.
pub fn clear_recorded() {
    // SAFETY: as for `recorded`; called with interrupts off.
    unsafe {
        (&raw mut guest_irq_count).write_volatile(0);
        (&raw mut guest_irq_rip).write_volatile(0);
        (&raw mut guest_irq_rsp).write_volatile(0);
    }
}

fn inb(port: u16) -> u8 {
    // SAFETY: only the PICs' data ports are read: reading one returns its
    // interrupt mask and changes nothing.
    unsafe { x86_64::instructions::port::Port::<u8>::new(port).read() }
}

/// Masks every line of both PICs; returns the masks they had (`slave << 8
/// | master`) for [`restore_masks`]. A request the master had raised is
/// withdrawn (an 8259A drops INT when no unmasked request is left).
pub fn mask_all() -> u16 {
    let old = u16::from(inb(MASTER_DATA)) | u16::from(inb(SLAVE_DATA)) << 8;
    outb(MASTER_DATA, 0xff);
    outb(SLAVE_DATA, 0xff);
    old
}

/// Puts back the masks [`mask_all`] returned.
pub fn restore_masks(masks: u16) {
    let [master, slave] = masks.to_le_bytes();
    outb(MASTER_DATA, master);
    outb(SLAVE_DATA, slave);
}

/// Points the master PIC's eight vectors at the acknowledging handler and
/// [`RECORD_VECTOR`] at the recording one. Called while the IDT is built, before it is loaded and locked.
pub fn install(idt: &mut InterruptDescriptorTable) {
    let handler = VirtAddr::new(guest_irq_ack as *const () as u64);
    for v in PIC_BASE..PIC_BASE + 8 {
        // SAFETY: `guest_irq_ack` is written for an interrupt frame without
        // an error code (what an external interrupt pushes), preserves
        // every register it uses and returns with iretq.
        unsafe {
            idt[v].set_handler_addr(handler);
        }
    }
    // SAFETY: `guest_irq_record` is written for a frame without an error
    // code, preserves RAX (the only register it uses) and returns with
    // iretq; only the attack suite's self-IPI uses the vector.
    unsafe {
        idt[RECORD_VECTOR].set_handler_addr(VirtAddr::new(guest_irq_record as *const () as u64));
    }
}

/// Remaps the PIC (ICW1–ICW4: edge-triggered, cascaded, 8086 mode,
/// master at [`PIC_BASE`], slave at `PIC_BASE + 8`) and masks every line
/// but master line `line`.
pub fn route_only(line: u8) {
    debug_assert!(line < 8 && line != CASCADE_LINE);
    outb(MASTER_CMD, 0x11);
    outb(SLAVE_CMD, 0x11);
    outb(MASTER_DATA, PIC_BASE);
    outb(SLAVE_DATA, PIC_BASE + 8);
    outb(MASTER_DATA, 1 << CASCADE_LINE);
    outb(SLAVE_DATA, CASCADE_LINE);
    outb(MASTER_DATA, 0x01);
    outb(SLAVE_DATA, 0x01);
    outb(MASTER_DATA, !(1 << line));
    outb(SLAVE_DATA, 0xff);
}

/// Halts until an interrupt arrives, then turns interrupts off again.
/// `STI` takes effect after the `HLT` that follows it, so an interrupt
/// that became pending before this call wakes the `HLT` at once and none
/// is lost between the caller's last look at the device and the halt.
pub fn wait() {
    x86_64::instructions::interrupts::enable_and_hlt();
    x86_64::instructions::interrupts::disable();
}
