//! The memory a PCI device decodes above 4 GiB: 64-bit memory BARs and
//! bridges' 64-bit prefetchable windows. The firmware memory map does not
//! list device memory; below 4 GiB the base EPT view maps every hole of
//! the map as MMIO, above it only what this scan finds (mapping every
//! hole up to MAXPHYADDR would cost a page-directory-pointer table per
//! 512 GiB, in every view), so a host's devices with 64-bit BARs above
//! 4 GiB stay reachable under the monitor (issue 15).
//!
//! Configuration mechanism #1, every bus, device and function (PCI Local
//! Bus Specification 3.0 §6.2.5 "Base Addresses"; PCI-to-PCI Bridge
//! Architecture 1.2 §3.2.5.9–11, prefetchable base/limit and upper 32
//! bits). A BAR's size is read the way Linux does (`__pci_read_base`):
//! memory decoding off in the command register, all ones written, the
//! mask read back, the BAR and the command register restored — before
//! the guest exists.

use crate::chipset::ConfigSpace;
use okernel::memmap::PhysRange;

/// 4 GiB: below it the holes of the memory map are mapped already.
const FOUR_GIB: u64 = 1 << 32;
/// The command register's Memory Space Enable bit.
const MEMORY_SPACE: u32 = 1 << 1;

/// CONFIG_ADDRESS of `reg` of bus:device.function.
const fn address(bus: u32, dev: u32, func: u32, reg: u32) -> u32 {
    0x8000_0000 | (bus << 16) | (dev << 11) | (func << 8) | (reg & 0xfc)
}

/// Calls `emit` for each memory range at or above 4 GiB that a function
/// decodes: its 64-bit memory BARs (six for a type-0 header, two for a
/// bridge) and a bridge's 64-bit prefetchable window.
///
/// The buses scanned are bus 0 and those behind its bridges (each
/// bridge's secondary to subordinate bus), as an operating system
/// enumerates them, so a machine with one bus costs 32 reads, not 8,192
/// (each a port exit under a hypervisor). Root buses other than 0 (a
/// multi-socket host's, which ACPI names) are not scanned.
pub fn high_mmio(cfg: &mut impl ConfigSpace, emit: &mut dyn FnMut(PhysRange)) {
    let mut scan = [false; 256];
    scan[0] = true;
    for bus in 0..256u32 {
        if !scan[bus as usize] {
            continue;
        }
        for dev in 0..32 {
            if cfg.read(address(bus, dev, 0, 0)) & 0xffff == 0xffff {
                continue;
            }
            let multi = (cfg.read(address(bus, dev, 0, 0xc)) >> 16) & 0x80 != 0;
            for func in 0..if multi { 8 } else { 1 } {
                let at = address(bus, dev, func, 0);
                if cfg.read(at) & 0xffff == 0xffff {
                    continue;
                }
                if let Some((secondary, subordinate)) = function(cfg, at, emit) {
                    for b in secondary.max(bus + 1)..=subordinate.min(255) {
                        scan[b as usize] = true;
                    }
                }
            }
        }
    }
}

/// [`high_mmio`] for the function whose register 0 is at `at`; for a
/// bridge, its secondary and subordinate bus numbers.
fn function(
    cfg: &mut impl ConfigSpace,
    at: u32,
    emit: &mut dyn FnMut(PhysRange),
) -> Option<(u32, u32)> {
    let header = (cfg.read(at | 0xc) >> 16) & 0x7f;
    let bars = match header {
        0 => 6,
        1 => 2,
        _ => return None,
    };
    let mut i = 0;
    while i < bars {
        let reg = 0x10 + 4 * i;
        let low = cfg.read(at | reg);
        // Memory BAR (bit 0 clear) of type 64-bit (bits 2:1 = 10b).
        if low & 1 == 0 && (low >> 1) & 3 == 2 && i + 1 < bars {
            let high = cfg.read(at | (reg + 4));
            let base = (u64::from(high) << 32) | u64::from(low & !0xf);
            if base >= FOUR_GIB
                && let Some(size) = size64(cfg, at, reg, low, high)
                && let Some(end) = base.checked_add(size)
            {
                emit(PhysRange { start: base, end });
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    if header == 1 {
        // Prefetchable memory base/limit (0x24), 64-bit when bits 3:0 of
        // the base are 1; upper 32 bits at 0x28 and 0x2C.
        let base_limit = cfg.read(at | 0x24);
        if base_limit & 0xf == 1 {
            let base =
                (u64::from(cfg.read(at | 0x28)) << 32) | (u64::from(base_limit & 0xfff0) << 16);
            let limit = (u64::from(cfg.read(at | 0x2c)) << 32)
                | (u64::from((base_limit >> 16) & 0xfff0) << 16)
                | 0xf_ffff;
            if base >= FOUR_GIB && limit >= base {
                emit(PhysRange {
                    start: base,
                    end: limit.saturating_add(1),
                });
            }
        }
        // Bus numbers (0x18): secondary bits 15:8, subordinate 23:16.
        let buses = cfg.read(at | 0x18);
        return Some(((buses >> 8) & 0xff, (buses >> 16) & 0xff));
    }
    None
}

/// The size of the 64-bit memory BAR at `reg` (now `low`/`high`), read
/// with memory decoding off and restored after; `None` if it decodes
/// nothing.
fn size64(cfg: &mut impl ConfigSpace, at: u32, reg: u32, low: u32, high: u32) -> Option<u64> {
    // Only the command half of the dword: the status half's bits are
    // write-one-to-clear, and zeros leave them.
    let command = cfg.read(at | 0x4) & 0xffff;
    cfg.write(at | 0x4, command & !MEMORY_SPACE);
    cfg.write(at | reg, 0xffff_ffff);
    cfg.write(at | (reg + 4), 0xffff_ffff);
    let mask = (u64::from(cfg.read(at | (reg + 4))) << 32) | u64::from(cfg.read(at | reg) & !0xf);
    cfg.write(at | reg, low);
    cfg.write(at | (reg + 4), high);
    cfg.write(at | 0x4, command);
    (mask != 0).then(|| (!mask).wrapping_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::vec::Vec;

    /// A configuration space of dwords; BARs answer a size mask when all
    /// ones are written.
    #[derive(Default)]
    struct Fake {
        regs: HashMap<u32, u32>,
        /// (address of the BAR's low dword, size) of the 64-bit BARs.
        bars: Vec<(u32, u64)>,
        /// Writes to command registers with memory decoding on while a
        /// BAR held all ones: sizing with decoding on.
        decoding_while_sizing: bool,
    }

    impl ConfigSpace for Fake {
        fn read(&mut self, address: u32) -> u32 {
            *self.regs.get(&address).unwrap_or(&0xffff_ffff)
        }
        fn write(&mut self, address: u32, value: u32) {
            for &(bar, size) in &self.bars {
                let mask = !(size - 1);
                if address == bar && value == 0xffff_ffff {
                    let command = self.regs[&(bar & !0xff | 0x4)];
                    self.decoding_while_sizing |= command & MEMORY_SPACE != 0;
                    self.regs.insert(address, (mask as u32) | 0b100);
                    return;
                }
                if address == bar + 4 && value == 0xffff_ffff {
                    self.regs.insert(address, (mask >> 32) as u32);
                    return;
                }
            }
            self.regs.insert(address, value);
        }
    }

    fn device(f: &mut Fake, at: u32, header: u32) {
        f.regs.insert(at, 0x1234_8086);
        f.regs.insert(at | 0x4, 0x0010_0006); // memory + bus master on
        f.regs.insert(at | 0xc, header << 16);
        for bar in 0..6 {
            f.regs.insert(at | (0x10 + 4 * bar), 0);
        }
    }

    #[test]
    fn finds_64_bit_bars_above_4_gib_and_restores_them() {
        let mut f = Fake::default();
        let nic = address(0, 3, 0, 0);
        device(&mut f, nic, 0);
        // BAR0: 32-bit at 0xfebc_0000 (below 4 GiB: ignored); BAR2/3:
        // 64-bit prefetchable at 0x8_0000_0000, 16 MiB.
        f.regs.insert(nic | 0x10, 0xfebc_0000);
        f.regs.insert(nic | 0x18, 0x0000_000c);
        f.regs.insert(nic | 0x1c, 0x8);
        f.bars.push((nic | 0x18, 16 << 20));
        // A bridge on bus 0 device 4 with a 64-bit prefetchable window
        // 0x10_0000_0000..=0x10_3fff_ffff.
        let bridge = address(0, 4, 0, 0);
        device(&mut f, bridge, 1);
        f.regs.insert(bridge | 0x24, 0x3ff1_0001);
        f.regs.insert(bridge | 0x28, 0x10);
        f.regs.insert(bridge | 0x2c, 0x10);
        // Behind it, bus 1: a device with a 64-bit BAR at 0x10_0000_0000.
        f.regs.insert(bridge | 0x18, 0x0001_0100);
        let nvme = address(1, 0, 0, 0);
        device(&mut f, nvme, 0);
        f.regs.insert(nvme | 0x10, 0x0000_0004);
        f.regs.insert(nvme | 0x14, 0x10);
        f.bars.push((nvme | 0x10, 16 << 10));
        let mut found = Vec::new();
        high_mmio(&mut f, &mut |r| found.push((r.start, r.end)));
        assert_eq!(
            found,
            [
                (0x8_0000_0000, 0x8_0100_0000),
                (0x10_0000_0000, 0x10_4000_0000),
                (0x10_0000_0000, 0x10_0000_4000)
            ]
        );
        assert!(!f.decoding_while_sizing, "memory decoding off while sizing");
        assert_eq!(f.regs[&(nic | 0x18)], 0xc, "BAR restored");
        assert_eq!(f.regs[&(nic | 0x1c)], 0x8);
        assert_eq!(f.regs[&(nic | 0x4)], 0x0006, "command restored");
    }

    /// Counts the reads of a [`Fake`].
    struct Counting(Fake, u32);

    impl ConfigSpace for Counting {
        fn read(&mut self, address: u32) -> u32 {
            self.1 += 1;
            self.0.read(address)
        }
        fn write(&mut self, address: u32, value: u32) {
            self.0.write(address, value);
        }
    }

    #[test]
    fn an_empty_bus_and_low_bars_give_nothing() {
        let mut c = Counting(Fake::default(), 0);
        let mut found = 0;
        high_mmio(&mut c, &mut |_| found += 1);
        assert_eq!(found, 0);
        assert_eq!(c.1, 32, "bus 0 only: one read per device");
        let mut f = c.0;
        let vga = address(0, 2, 0, 0);
        device(&mut f, vga, 0);
        f.regs.insert(vga | 0x10, 0xe000_0008); // 32-bit prefetchable
        high_mmio(&mut f, &mut |_| found += 1);
        assert_eq!(found, 0);
    }
}
