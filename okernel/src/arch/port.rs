//! Port I/O (IN/OUT), for the ports the monitor mediates on the guest's
//! behalf (`exit::io`): the guest's access, once validated, performed by
//! the monitor.

use core::arch::asm;

/// IN of `size` bytes (1, 2 or 4; any other is 4) from `port`.
///
/// # Safety
/// The caller must run at CPL0 (or with IOPL/I-O permission for `port`),
/// and reading `port` must have no effect the monitor relies on not
/// happening (device reads can have side effects: the caller owns them).
pub unsafe fn port_in(port: u16, size: u8) -> u32 {
    let value: u32;
    // SAFETY: the caller's contract; IN touches no memory and no flags.
    unsafe {
        match size {
            1 => {
                let v: u8;
                asm!("in al, dx", in("dx") port, out("al") v,
                     options(nomem, nostack, preserves_flags));
                value = u32::from(v);
            }
            2 => {
                let v: u16;
                asm!("in ax, dx", in("dx") port, out("ax") v,
                     options(nomem, nostack, preserves_flags));
                value = u32::from(v);
            }
            _ => {
                asm!("in eax, dx", in("dx") port, out("eax") value,
                     options(nomem, nostack, preserves_flags));
            }
        }
    }
    value
}

/// OUT of the low `size` bytes (1, 2 or 4; any other is 4) of `value` to
/// `port`.
///
/// # Safety
/// The caller must run at CPL0 and have validated the write: a port write
/// can reset the machine, remap memory (A20, PCI BARs) or start DMA.
pub unsafe fn port_out(port: u16, size: u8, value: u32) {
    // SAFETY: the caller validated the write. A device may change memory
    // routing, so `nomem` is not claimed; OUT changes no flags.
    unsafe {
        match size {
            1 => asm!("out dx, al", in("dx") port, in("al") value as u8,
                      options(nostack, preserves_flags)),
            2 => asm!("out dx, ax", in("dx") port, in("ax") value as u16,
                      options(nostack, preserves_flags)),
            _ => asm!("out dx, eax", in("dx") port, in("eax") value,
                      options(nostack, preserves_flags)),
        }
    }
}
