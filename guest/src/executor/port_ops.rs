//! The port-I/O operation of a case (issue 13): IN and OUT of the ports
//! okernel mediates (`okernel/src/exit/io.rs`, `exit/pci.rs`,
//! `docs/policy.md` "Port I/O"), each judged by what the monitor must
//! do: an allowed access completes with no audit record; a write that
//! would turn A20 off or reset the machine (System Control Port A 0x92,
//! the keyboard controller's 0x64, reset control 0xCF9), or move a PCI
//! memory BAR over RAM, or a byte write into a BAR, is dropped — the
//! guest goes on after the instruction — with exactly one `exit` record
//! naming the I/O exit and the port; string I/O on an intercepted port is
//! #GP(0) with one `exit` record. Emulated reads of port 0x92 give A20
//! on, no reset.
//!
//! A monitor that performs a refused write resets the machine or turns
//! A20 off under itself (a crash, which the driver reports too); one that
//! lets the write through quietly, or drops it without a record, is an
//! oracle violation here. Ports okernel neither passes nor mediates
//! (default deny) are dropped the same way, an IN reading all ones.

use super::step::{Seen, World};
use crate::arch::traps::probe;
use crate::report::Buf;
use core::sync::atomic::{AtomicU32, Ordering};
use guest::fuzz::Expect;
use okernel_abi::policy::AuditKind;

/// PCI CONFIG_ADDRESS.
const CONFIG_ADDRESS: u16 = 0xcf8;
/// PCI CONFIG_DATA.
const CONFIG_DATA: u16 = 0xcfc;
/// The I/O-instruction exit reason (the `gpa` of an `exit` record).
const EXIT_IO: u64 = 30;

/// The first 32-bit memory BAR the boot found (CONFIG_ADDRESS of the
/// register, 0: none) and its value.
static MEMORY_BAR: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];

/// What an entry of the port table does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Io {
    /// IN of `size` bytes.
    In(u16, u8),
    /// OUT of `size` bytes of a value.
    Out(u16, u8, u32),
    /// OUTSB of one byte (0x02) to the port.
    Outs(u16),
    /// Select 0:0.0 register 0 and read it as a dword.
    PciRead,
    /// A byte write into BAR 0 of 0:0.0 (a type-0 header).
    PciBarByte,
    /// The sizing pattern written to BAR 0 of 0:0.0, then its value back.
    PciBarSizing,
    /// The boot's memory BAR moved over RAM (the operand picks where).
    PciBarOverRam,
}

/// What okernel must do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Completes, no record; a read returns this value when given.
    Done(Option<u32>),
    /// Dropped: no fault, exactly one `exit` record naming the port.
    Dropped(u16),
    /// #GP(0) with one `exit` record.
    Gp,
}

/// The port table: (what, what okernel must do, name).
const PORTS: [(Io, Want, &str); 25] = [
    // Default deny (`okernel::exit::port_table`): the ISA DMA controller,
    // the floppy controller, the emulators' result and shutdown ports
    // are dropped with one record (an IN reads all ones); a passed port
    // completes without an exit.
    (
        Io::Out(0x0b, 1, 0x46),
        Want::Dropped(0x0b),
        "OUT 0x0B 8237 mode (ISA DMA)",
    ),
    (
        Io::Out(0x81, 1, 0x00),
        Want::Dropped(0x81),
        "OUT 0x81 DMA page",
    ),
    (
        Io::In(0x3f4, 1),
        Want::Dropped(0x3f4),
        "IN 0x3F4 floppy status",
    ),
    (
        Io::Out(0x8900, 1, 0x53),
        Want::Dropped(0x8900),
        "OUT 0x8900 Bochs shutdown",
    ),
    (
        Io::Out(0xf4, 1, 0x10),
        Want::Dropped(0xf4),
        "OUT 0xF4 result port",
    ),
    (Io::Outs(0x0b), Want::Gp, "OUTSB 0x0B"),
    (Io::In(0x80, 1), Want::Done(None), "IN 0x80 (passed)"),
    // System Control Port A: emulated, A20 on, no reset.
    (Io::In(0x92, 1), Want::Done(Some(0x02)), "IN 0x92"),
    (Io::Out(0x92, 1, 0x02), Want::Done(None), "OUT 0x92 A20 on"),
    (
        Io::Out(0x92, 1, 0x00),
        Want::Dropped(0x92),
        "OUT 0x92 A20 off",
    ),
    (
        Io::Out(0x92, 1, 0x03),
        Want::Dropped(0x92),
        "OUT 0x92 fast reset",
    ),
    (Io::Outs(0x92), Want::Gp, "OUTSB 0x92"),
    // The keyboard controller's command port.
    (Io::In(0x64, 1), Want::Done(None), "IN 0x64"),
    (
        Io::Out(0x64, 1, 0xd1),
        Want::Dropped(0x64),
        "OUT 0x64 write output port",
    ),
    (
        Io::Out(0x64, 1, 0xdd),
        Want::Dropped(0x64),
        "OUT 0x64 A20 off",
    ),
    (
        Io::Out(0x64, 1, 0xfe),
        Want::Dropped(0x64),
        "OUT 0x64 pulse reset",
    ),
    (
        Io::Out(0x64, 1, 0xf0),
        Want::Dropped(0x64),
        "OUT 0x64 pulse lines",
    ),
    (Io::Out(0x64, 1, 0xdf), Want::Done(None), "OUT 0x64 A20 on"),
    // Reset control.
    (Io::In(0xcf9, 1), Want::Done(None), "IN 0xCF9"),
    (Io::Out(0xcf9, 1, 0x00), Want::Done(None), "OUT 0xCF9 0"),
    (
        Io::Out(0xcf9, 1, 0x06),
        Want::Dropped(0xcf9),
        "OUT 0xCF9 RST_CPU",
    ),
    // PCI configuration mechanism #1.
    (Io::PciRead, Want::Done(None), "PCI read 0:0.0"),
    (
        Io::PciBarByte,
        Want::Dropped(0xcfc),
        "PCI byte write to a BAR",
    ),
    (Io::PciBarSizing, Want::Done(None), "PCI BAR sizing"),
    (
        Io::PciBarOverRam,
        Want::Dropped(0xcfc),
        "PCI memory BAR over RAM",
    ),
];

/// `IN`: `arg` = port | size << 16.
extern "C" fn port_in(arg: u64) -> u64 {
    let port = arg as u16;
    // SAFETY: run under a probe; reads of the ports of the table change
    // at most a device's status, never memory.
    unsafe {
        match (arg >> 16) as u8 {
            1 => u64::from(x86_64::instructions::port::Port::<u8>::new(port).read()),
            2 => u64::from(x86_64::instructions::port::Port::<u16>::new(port).read()),
            _ => u64::from(x86_64::instructions::port::Port::<u32>::new(port).read()),
        }
    }
}

/// `OUT`: `arg` = port | size << 16 | value << 32.
extern "C" fn port_out(arg: u64) -> u64 {
    let port = arg as u16;
    let value = (arg >> 32) as u32;
    // SAFETY: run under a probe; the writes of the table are ones okernel
    // performs (harmless ones) or must drop; on a monitor that performs a
    // dangerous one the machine resets, which the driver reports.
    unsafe {
        match (arg >> 16) as u8 {
            1 => x86_64::instructions::port::Port::<u8>::new(port).write(value as u8),
            2 => x86_64::instructions::port::Port::<u16>::new(port).write(value as u16),
            _ => x86_64::instructions::port::Port::<u32>::new(port).write(value),
        }
    }
    0
}

/// `OUTSB` of one byte (0x02: A20 on) to port `port`.
extern "C" fn port_outs(port: u64) -> u64 {
    let byte = 0x02u8;
    // SAFETY: run under a probe; reads one byte of this frame and writes
    // the value that keeps A20 on.
    unsafe {
        core::arch::asm!(
            "outsb",
            in("dx") port as u16,
            inout("rsi") &raw const byte => _,
            options(nostack, readonly, preserves_flags)
        );
    }
    0
}

fn io(port: u16, size: u8, value: u32) -> u64 {
    u64::from(port) | u64::from(size) << 16 | u64::from(value) << 32
}

/// CONFIG_ADDRESS of bus 0, `dev`, `func`, register `reg`.
const fn config_address(dev: u32, func: u32, reg: u32) -> u32 {
    0x8000_0000 | dev << 11 | func << 8 | reg
}

/// Finds the first 32-bit memory BAR of a type-0 header on bus 0 (in the
/// trusted context, before the baseline): the BAR the port operation
/// tries to move over RAM. Bochs' default machine has none (its devices
/// decode I/O BARs only), so there the entry checks nothing.
pub fn find_memory_bar() {
    let read = |a: u32| {
        crate::arch::ops::outl(CONFIG_ADDRESS, a);
        port_in(io(CONFIG_DATA, 4, 0)) as u32
    };
    for dev in 0..32 {
        for func in 0..8 {
            if read(config_address(dev, func, 0)) & 0xffff == 0xffff {
                continue;
            }
            if (read(config_address(dev, func, 0x0c)) >> 16) & 0x7f != 0 {
                continue;
            }
            for reg in (0x10..=0x24).step_by(4) {
                let a = config_address(dev, func, reg);
                let v = read(a);
                if v & 0b111 == 0 && v & !0xf != 0 {
                    MEMORY_BAR[0].store(a, Ordering::SeqCst);
                    MEMORY_BAR[1].store(v, Ordering::SeqCst);
                    log::info!("fuzz: memory BAR at {a:#x} = {v:#x}");
                    return;
                }
            }
        }
    }
    log::info!("fuzz: no 32-bit PCI memory BAR on bus 0");
}

impl World {
    pub(super) fn port(&mut self, sel: u8, raw: u32, seen: &mut Seen, msg: &mut Buf) -> bool {
        let (what, want, name) = PORTS[usize::from(sel) % PORTS.len()];
        let out = |port, size, value| probe(port_out, io(port, size, value));
        let bridge_bar0 = config_address(0, 0, 0x10);
        let mut value = None;
        let mut after_ok = true;
        let result = match what {
            Io::In(port, size) => probe(port_in, io(port, size, 0)).map(|v| value = Some(v)),
            Io::Out(port, size, v) => out(port, size, v).map(drop),
            Io::Outs(port) => probe(port_outs, u64::from(port)).map(drop),
            Io::PciRead => out(CONFIG_ADDRESS, 4, config_address(0, 0, 0))
                .and_then(|_| probe(port_in, io(CONFIG_DATA, 4, 0)))
                .map(|v| value = Some(v)),
            Io::PciBarByte => out(CONFIG_ADDRESS, 4, bridge_bar0)
                .and_then(|_| probe(port_in, io(CONFIG_DATA, 4, 0)))
                .and_then(|v| out(CONFIG_DATA, 1, v as u32 & 0xff))
                .map(drop),
            Io::PciBarSizing => out(CONFIG_ADDRESS, 4, bridge_bar0)
                .and_then(|_| probe(port_in, io(CONFIG_DATA, 4, 0)))
                .and_then(|old| {
                    out(CONFIG_DATA, 4, u32::MAX)?;
                    out(CONFIG_DATA, 4, old as u32)?;
                    let back = probe(port_in, io(CONFIG_DATA, 4, 0))?;
                    after_ok = back == old;
                    Ok(())
                }),
            Io::PciBarOverRam => {
                let (bar, old) = (
                    MEMORY_BAR[0].load(Ordering::SeqCst),
                    MEMORY_BAR[1].load(Ordering::SeqCst),
                );
                if bar == 0 {
                    return true;
                }
                // RAM below 4 GiB of every memory map: the first MiB
                // above the legacy holes, or the executor's scratch page.
                let base = if raw & 1 == 0 {
                    0x10_0000
                } else {
                    super::targets::SCRATCH.addr() as u32 & !0xfff
                };
                out(CONFIG_ADDRESS, 4, bar)
                    .and_then(|_| out(CONFIG_DATA, 4, base))
                    .and_then(|_| probe(port_in, io(CONFIG_DATA, 4, 0)))
                    .map(|back| after_ok = back as u32 == old)
            }
        };
        seen.fault = result.err();
        let ok = match want {
            Want::Gp => self.finish(Expect::Denied(AuditKind::Exit as u32), seen, None, msg),
            Want::Done(v) => {
                let mut ok = self.finish(Expect::Allowed, seen, None, msg);
                if ok && let (Some(want), Some(got)) = (v, value) {
                    ok = u64::from(want) == got;
                    if !ok {
                        msg.set(format_args!("read {got:#x}, expected {want:#x}"));
                    }
                }
                if ok && !after_ok {
                    msg.set(format_args!("the BAR did not read back its value"));
                    ok = false;
                }
                ok
            }
            Want::Dropped(port) => {
                seen.records = self.new_records();
                let r = self.newest;
                // A denied IN reads all ones in its width.
                let floating = match what {
                    Io::In(_, size) => value == Some((1u64 << (8 * u32::from(size))) - 1),
                    _ => true,
                };
                let ok = seen.fault.is_none()
                    && floating
                    && seen.records == 1
                    && r.kind == AuditKind::Exit as u32
                    && r.gpa == EXIT_IO
                    && (r.qualification >> 16) & 0xffff == u64::from(port)
                    && r.context == self.current
                    && after_ok;
                if !ok {
                    msg.set(format_args!(
                        "not dropped with one exit record: read {value:#x?}, fault {:?}, {} record(s), newest kind {} gpa {:#x} qual {:#x} ctx {}{}",
                        seen.fault.map(|f| f.vector),
                        seen.records,
                        r.kind,
                        r.gpa,
                        r.qualification,
                        r.context,
                        if after_ok { "" } else { ", BAR moved" }
                    ));
                }
                ok
            }
        };
        if what == Io::PciBarOverRam && !after_ok {
            // The BAR moved: put it back (a move within the MMIO hole) so
            // that the next case runs on the machine the boot found.
            let _ = out(CONFIG_ADDRESS, 4, MEMORY_BAR[0].load(Ordering::SeqCst));
            let _ = out(CONFIG_DATA, 4, MEMORY_BAR[1].load(Ordering::SeqCst));
            self.new_records();
        }
        if !ok {
            msg.prefix(format_args!("{name}"));
        }
        ok
    }
}
