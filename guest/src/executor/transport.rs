//! How cases reach the executor and results leave it
//! (`okernel_abi::fuzz`): frames over COM2 (Bochs), or a mailbox in guest
//! RAM and a doorbell port (the KVM harness, which snapshots the guest at
//! the first doorbell and resets it there before every case).

use crate::arch::irq;
use crate::arch::ops::{inb, outb, outl};
use crate::kernel::Pages;
use okernel_abi::fuzz::{
    CASE_MAGIC, COM2, DOORBELL_PORT, MAX_CASE, READY_MAGIC, RESULT_MAGIC, mailbox,
};

/// The KVM mailbox.
static MAILBOX: Pages<[u8; mailbox::SIZE]> = Pages::new([0; mailbox::SIZE]);

/// A way to exchange cases and results.
pub enum Link {
    /// The second UART.
    Com2,
    /// The mailbox and the doorbell.
    Mailbox,
}

const THR: u16 = COM2;
const RBR: u16 = COM2;
const IER: u16 = COM2 + 1;
const FCR: u16 = COM2 + 2;
const LCR: u16 = COM2 + 3;
const MCR: u16 = COM2 + 4;
const LSR: u16 = COM2 + 5;

/// COM2's line on the master PIC.
const COM2_LINE: u8 = 3;
/// IER: received data available.
const IER_RX: u8 = 0x01;
/// IER: transmitter holding register (the FIFO) empty.
const IER_TX: u8 = 0x02;
/// LSR: data ready.
const LSR_DR: u8 = 0x01;
/// LSR: transmit FIFO empty.
const LSR_THRE: u8 = 0x20;
/// The 16550's transmit FIFO.
const TX_FIFO: usize = 16;
/// FCR: FIFOs on and both cleared; the received-data interrupt at 8 bytes
/// (or after a few character times of silence, the FIFO timeout), so the
/// executor wakes once per few bytes of a case rather than once per byte,
/// and the FIFO (16 bytes) still has room while it drains it.
const FIFOS_ON: u8 = 0x87;

impl Link {
    /// Sets the link up and tells the host the executor is ready (COM2:
    /// the ready byte; the mailbox says it with its first doorbell, in
    /// [`Link::exchange`]).
    pub fn open(self) -> Self {
        if let Link::Com2 = self {
            outb(IER, 0);
            outb(LCR, 0x80);
            outb(COM2, 1); // divisor 1: 115200 baud
            outb(COM2 + 1, 0);
            outb(LCR, 0x03); // 8N1
            outb(FCR, FIFOS_ON);
            outb(MCR, 0x0b); // DTR, RTS, OUT2 (gates the line to the PIC)
            irq::route_only(COM2_LINE);
            send(&[READY_MAGIC]);
        }
        self
    }

    /// Sends the previous case's result (`None` before the first case)
    /// and waits for the next case, which it copies to `case`; returns
    /// its length.
    pub fn exchange(&mut self, result: Option<&[u8]>, case: &mut [u8; MAX_CASE]) -> usize {
        match self {
            Link::Com2 => {
                if let Some(r) = result {
                    listen();
                    send(&[RESULT_MAGIC]);
                    send(&(r.len() as u16).to_le_bytes());
                    send(r);
                }
                while recv() != CASE_MAGIC {}
                let len = usize::from(u16::from_le_bytes([recv(), recv()]));
                for i in 0..len {
                    let b = recv();
                    if let Some(slot) = case.get_mut(i) {
                        *slot = b;
                    }
                }
                stop_listening();
                len.min(MAX_CASE)
            }
            Link::Mailbox => {
                let m = MAILBOX.get().cast::<u8>();
                let len = result.map_or(0, <[u8]>::len);
                // SAFETY: the mailbox is the executor's static, 8 KiB; the
                // result fits its half (MAX_RESULT < 4 KiB - 8) and the
                // host reads it only while the guest waits at the doorbell.
                unsafe {
                    if let Some(r) = result {
                        core::ptr::copy_nonoverlapping(r.as_ptr(), m.add(mailbox::RESULT), r.len());
                    }
                    m.add(mailbox::RESULT_LEN)
                        .cast::<u32>()
                        .write_volatile(len as u32);
                }
                outl(DOORBELL_PORT, MAILBOX.addr() as u32);
                // SAFETY: the host wrote the case before resuming the guest.
                unsafe {
                    let n = (m.add(mailbox::CASE_LEN).cast::<u32>().read_volatile() as usize)
                        .min(MAX_CASE);
                    core::ptr::copy_nonoverlapping(m.add(mailbox::CASE), case.as_mut_ptr(), n);
                    n
                }
            }
        }
    }
}

/// Bochs polls a socket-backed UART's receiver with a `select` once per
/// character time of emulated time while its FIFOs are on, but with them
/// off, after a poll that found nothing, only every 100 ms (its
/// `rx_timer`). A case runs tens of thousands of instructions, which at
/// the fuzz configuration's `ips` is a couple of hundred character times:
/// as many system calls per case for a line that carries nothing while
/// the case runs (the host sends the next case only after this one's
/// result). So the executor turns the FIFOs off once it has a whole case
/// ([`stop_listening`]) and on again, re-arming the poll, before it sends
/// the result ([`listen`]).
fn stop_listening() {
    outb(FCR, 0x00);
}

/// The FIFOs on (and cleared: the case was read whole and the last result
/// sent whole) and the receive poll re-armed at one character time:
/// Bochs restarts it on a change of word length, so the length goes to 7
/// bits and back to 8.
fn listen() {
    outb(FCR, FIFOS_ON);
    outb(LCR, 0x02);
    outb(LCR, 0x03);
}

/// Sends `bytes` a FIFO-full at a time. The last chunk is left to drain
/// while the executor goes on (to wait for the next case).
fn send(bytes: &[u8]) {
    for chunk in bytes.chunks(TX_FIFO) {
        wait_for(LSR_THRE, IER_TX);
        for &b in chunk {
            outb(THR, b);
        }
    }
}

fn recv() -> u8 {
    wait_for(LSR_DR, IER_RX);
    inb(RBR)
}

/// Waits until the line status shows `status`, halted in between with
/// only the interrupt `ier` enabled at the UART: the UART raises its line
/// when the condition becomes true, or at once if it already is, and
/// drops it when the interrupt is disabled again, so every wait starts
/// from a low line and sees its edge ([`irq::wait`] loses none).
fn wait_for(status: u8, ier: u8) {
    if inb(LSR) & status != 0 {
        return;
    }
    outb(IER, ier);
    while inb(LSR) & status == 0 {
        irq::wait();
    }
    outb(IER, 0);
}
