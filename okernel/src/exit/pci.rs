//! PCI configuration writes through the data ports 0xCFC–0xCFF (PCI
//! Local Bus Specification 3.0 §3.2.2.3.2, configuration mechanism #1):
//! a memory BAR may not be moved over RAM or monitor memory (issue 13).
//! A device that decodes a range over RAM takes the platform's physical
//! accesses there — the monitor's own included — whatever the EPT says.
//! Nor may an I/O BAR be moved onto ports the guest reaches directly:
//! the device (a bus master) would then be programmable without an exit.
//!
//! | write to 0xCFC–0xCFF | outcome |
//! |---|---|
//! | any part of a dword the platform locks (the ACPI PM I/O base: `crate::vcpu::platform_ports`) | dropped + audit `exit` |
//! | CONFIG_ADDRESS disabled (bit 31 clear), or a register that places no range (type 0: outside 0x10–0x24 and 0x30; a bridge, type 1: outside 0x10–0x14 and 0x38), or another header type | performed |
//! | a BAR register, as a dword: the sizing pattern (every address bit set), the BAR's own value, an unimplemented BAR (sizes to 0), a memory BAR whose new range touches no RAM and no monitor memory, or an I/O BAR whose new range holds only ports denied to the guest | performed |
//! | a BAR register, as a dword: a memory BAR over RAM or monitor memory, an I/O BAR over any port the guest reaches or the monitor mediates ([`super::port_table`]), or a 64-bit BAR's upper half other than 0 or the sizing pattern | dropped + audit `exit` |
//! | a BAR register as a byte or a word | dropped + audit `exit` |
//! | the expansion ROM BAR (0x30; a bridge's 0x38) as a dword: decode off, its own value, or decode on over no RAM | performed; decode on over RAM: dropped + audit `exit` |
//!
//! The BAR's size comes from the BAR itself (the monitor sizes it: all
//! ones written, the mask read back, the old value restored, §6.2.5.1).
//! Without the memory map (no EPT views) every move is refused.

use super::io::{PORT_PCI_ADDRESS, PortClass};
use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::vcpu::Vcpu;
use crate::vcpu::memory::GuestMemory;

/// The first configuration data port.
pub const PORT_PCI_DATA: u16 = 0xcfc;
/// CONFIG_ADDRESS bit 31: configuration space access enabled.
const ENABLE: u32 = 1 << 31;
/// The header-type dword (bits 23:16 of register 0x0C).
const HEADER_TYPE: u32 = 0x0c;
/// The first and last BAR registers of a type-0 header.
const BARS: core::ops::RangeInclusive<u32> = 0x10..=0x24;
/// The expansion ROM BAR of a type-0 header: a memory range (bits 31:11)
/// and its decode enable (bit 0).
const ROM_BAR: u32 = 0x30;
/// A bridge's (type-1 header's) expansion ROM BAR.
const BRIDGE_ROM_BAR: u32 = 0x38;
/// The ROM BAR's address bits.
const ROM_ADDRESS: u32 = 0xffff_f800;

/// Whether the monitor lets a guest write of `value` (`size` bytes) to
/// data port `port` happen, with CONFIG_ADDRESS as the processor holds
/// it. May do configuration cycles of its own (header type, sizing),
/// leaving CONFIG_ADDRESS and the BAR as they were.
pub fn write_allowed<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    port: u16,
    size: u8,
    value: u32,
) -> bool {
    let address = vcpu.cpu.port_in(PORT_PCI_ADDRESS, 4);
    // CONFIG_ADDRESS bits 1:0 are reserved (0) for type-1 accesses; a
    // bridge that keeps them (QEMU) writes the dword at that byte offset,
    // so the register judged below would not be the one written.
    if address & ENABLE != 0 && address & 0b11 != 0 {
        return false;
    }
    if vcpu.platform.config_locked(address) {
        return false;
    }
    let register = address & 0xfc;
    let candidate = BARS.contains(&register) || register == ROM_BAR || register == BRIDGE_ROM_BAR;
    if address & ENABLE == 0 || !candidate {
        return true;
    }
    let select = |cpu: &mut C, reg: u32| cpu.port_out(PORT_PCI_ADDRESS, 4, (address & !0xff) | reg);
    select(&mut vcpu.cpu, HEADER_TYPE);
    let header = (vcpu.cpu.port_in(PORT_PCI_DATA, 4) >> 16) & 0x7f;
    let below = if register > 0x10 {
        select(&mut vcpu.cpu, register - 4);
        vcpu.cpu.port_in(PORT_PCI_DATA, 4)
    } else {
        0
    };
    select(&mut vcpu.cpu, register);
    // Which registers decode an address range, by header type (PCI Local
    // Bus Specification 3.0 §6.1; PCI-to-PCI Bridge Architecture
    // Specification 1.2 §3.2: a bridge has two BARs and its ROM BAR at
    // 0x38). A bridge's forwarding windows (0x1C–0x30) are not judged.
    let rom = match (header, register) {
        (0, r) if BARS.contains(&r) => false,
        (1, 0x10 | 0x14) => false,
        (0, ROM_BAR) | (1, BRIDGE_ROM_BAR) => true,
        _ => return true,
    };
    if port != PORT_PCI_DATA || size != 4 {
        return false;
    }
    if rom {
        return rom_write_allowed(vcpu, value);
    }
    // The upper half of a 64-bit memory BAR (type bits 2:1 = 10b below).
    if below & 0b111 == 0b100 {
        return value == 0 || value == u32::MAX;
    }
    let current = vcpu.cpu.port_in(PORT_PCI_DATA, 4);
    if value | 0xf == u32::MAX || value == current {
        // The sizing pattern, or the BAR's own value back.
        return true;
    }
    vcpu.cpu.port_out(PORT_PCI_DATA, 4, u32::MAX);
    let sized = vcpu.cpu.port_in(PORT_PCI_DATA, 4);
    vcpu.cpu.port_out(PORT_PCI_DATA, 4, current);
    // The range the device will decode: the address bits it implements
    // (read back after all ones), as written — so aligned to its size.
    if current & 1 != 0 {
        return io_range_is_denied(vcpu, value, sized & !0b11);
    }
    let mask = sized & !0xf;
    if mask == 0 {
        return true;
    }
    let base = u64::from(value & mask);
    let len = u64::from(!mask) + 1;
    range_is_free(vcpu, base, len)
}

/// Whether an I/O BAR whose implemented address bits are `mask` (read
/// back after all ones; 0: unimplemented) may decode at `value`: only
/// where every port it would take is denied to the guest. Moved over
/// passed ports, a bus master's registers (IDE bus-master DMA, a USB or
/// network controller) would answer the guest without an exit (default
/// deny, [`super::port_table`]); over mediated ones, it would take the
/// monitor's own accesses. A device whose upper 16 address bits read
/// back 0 decodes 16 bits (PCI Local Bus Specification 3.0 §6.2.5.1), so
/// those bits of `value` do not lift it out of the port space.
fn io_range_is_denied<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &Vcpu<V, C, P, M>,
    value: u32,
    mask: u32,
) -> bool {
    if mask == 0 {
        return true;
    }
    // The device's size from its implemented bits: in the low 16 alone
    // for a 16-bit decoder (its upper bits read back 0, hardwired).
    let size_bits = if mask & 0xffff_0000 == 0 {
        !mask & 0xffff
    } else {
        !mask
    };
    let base = u64::from(value & mask);
    let end = (base + u64::from(size_bits) + 1).min(0x1_0000);
    (base..end).all(|p| super::io::class(p as u16, &vcpu.platform) == PortClass::Denied)
}

/// Whether a dword write of `value` to the selected expansion ROM BAR may
/// happen: with its decode off (the sizing pattern, an unassigned ROM's
/// 0) and the BAR's own value, it does; with decode on only where the ROM, sized
/// from the BAR itself, would decode over no RAM (PCI Local Bus
/// Specification 3.0 §6.2.5.2) — enabled there, it takes the platform's
/// accesses to that RAM as a memory BAR would.
fn rom_write_allowed<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    value: u32,
) -> bool {
    let current = vcpu.cpu.port_in(PORT_PCI_DATA, 4);
    // Decode off (bit 0 clear: sizing, or Linux restoring an unassigned
    // ROM's 0) decodes nothing; and the BAR's own value back. A byte or
    // word cannot set the enable bit alone: those are refused above.
    if value & 1 == 0 || value == current {
        return true;
    }
    vcpu.cpu.port_out(PORT_PCI_DATA, 4, ROM_ADDRESS);
    let mask = vcpu.cpu.port_in(PORT_PCI_DATA, 4) & ROM_ADDRESS;
    vcpu.cpu.port_out(PORT_PCI_DATA, 4, current);
    if mask == 0 {
        return true;
    }
    range_is_free(vcpu, u64::from(value & mask), u64::from(!mask) + 1)
}

/// Whether `[base, base + len)` touches no RAM of the memory map, the
/// monitor's memory included (false without the memory map).
fn range_is_free<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &Vcpu<V, C, P, M>,
    base: u64,
    len: u64,
) -> bool {
    let Some(views) = vcpu.memory.views_ref() else {
        return false;
    };
    let end = base.saturating_add(len);
    let overlaps = |r: &crate::memmap::PhysRange| r.start < end && base < r.end;
    // The monitor's image and frame pool lie in RAM of the memory map.
    !views.ram().iter().any(overlaps)
}
