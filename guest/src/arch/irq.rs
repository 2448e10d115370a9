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

use super::ops::outb;
use x86_64::VirtAddr;
use x86_64::structures::idt::InterruptDescriptorTable;

/// The vector of the master PIC's line 0 once remapped.
pub const PIC_BASE: u8 = 0x20;

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
"#
);

unsafe extern "C" {
    fn guest_irq_ack();
}

/// Points the master PIC's eight vectors at the acknowledging handler.
/// Called while the IDT is built, before it is loaded and locked.
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
