//! How cases reach the executor and results leave it
//! (`okernel_abi::fuzz`): frames over COM2 (Bochs), or a mailbox in guest
//! RAM and a doorbell port (the KVM harness, which snapshots the guest at
//! the first doorbell and resets it there before every case).

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
            outb(FCR, 0x07); // FIFOs on and cleared, trigger at 1 byte
            outb(MCR, 0x03);
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

fn send(bytes: &[u8]) {
    for &b in bytes {
        while inb(LSR) & 0x20 == 0 {}
        outb(THR, b);
    }
}

fn recv() -> u8 {
    while inb(LSR) & 1 == 0 {}
    inb(RBR)
}
