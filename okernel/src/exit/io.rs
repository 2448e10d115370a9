//! I/O instruction exits (SDM Vol. 3C §26.1.3: with "use I/O bitmaps" an
//! IN/OUT/INS/OUTS exits when the bit of any port it accesses is set,
//! §25.6.4; the exit qualification is §28.2.1, Table 28-5).
//!
//! Default deny ([`super::port_table`]): the I/O bitmaps ([`bitmap`])
//! intercept every port but the passed ones. An access that touches a
//! port neither passed nor mediated is denied: IN reads all ones, OUT is
//! dropped, both audited. The mediated ports are those of the table
//! below and the platform's ACPI sleep and reset ports
//! ([`crate::vcpu::platform_ports`]). Port 0x92 is emulated; the others are
//! performed by the monitor ([`crate::hw::Cpu::port_in`],
//! [`crate::hw::Cpu::port_out`]) once the write is validated.
//!
//! | port | IN | OUT | why |
//! |------|----|-----|-----|
//! | 0x92, System Control Port A | emulated: 0x02 (A20 on, no reset pending) | A20 kept on and fast reset (bit 0) clear: a no-op; A20 off or a reset: dropped + audit `exit` | A20 off makes the platform mask address bit 20 of every physical access, EPT walks and the monitor's own included (in Bochs the monitor then triple-faults); bit 0 resets the machine under the monitor |
//! | 0x3F8, COM1 data (transmitter with LCR.DLAB clear) | performed | a byte: performed, but [`LINE_MARK`] (SOH), or any byte while the line is not 8 data bits without parity, is dropped + audit `exit`; a word or dword: dropped + audit `exit` | every line the monitor prints starts with SOH, so the guest, which shares the console, cannot print a line that passes for the monitor's (its result, its audit records) |
//! | 0x3FB, COM1 line control | performed | performed | with other processors running the guest, a line-control change (DLAB, parity) made without an exit could land between the data port's check of it and the byte's write on another processor, and turn a dropped mark into a transmitted one; as an exit it is serialized with that check (the run's lock) and with the monitor's own lines (the console's lock) |
//! | 0x64, keyboard controller command/status | performed | commands 0xD1 (write output port: A20 and reset lines), 0xDD (A20 off) and the pulse commands 0xF0–0xFE with bit 0 clear (pulse the reset line): dropped + audit `exit`; any other: performed | the controller's output port drives A20 and the reset line |
//! | 0xCF9, reset control (PIIX/ICH) | performed | a byte with RST_CPU (bit 2): dropped + audit `exit`; any other: performed | bit 2 resets the machine |
//! | 0xCF8 as a dword (PCI CONFIG_ADDRESS, covers 0xCF9) | performed | performed | selecting a configuration register changes nothing |
//! | 0xCFC–0xCFF, PCI configuration data | performed | [`super::pci`]: a memory BAR moved over RAM or monitor memory, dropped + audit `exit`; any other: performed | a device decoding over RAM takes the monitor's accesses there too |
//! | ACPI PM1a/PM1b control (from the FADT) | performed | SLP_EN with any SLP_TYP but `\_S5`'s: dropped + audit `exit`; any other: performed | the firmware resumes a sleeping machine at a vector the guest can write, outside VMX |
//! | SMI_CMD (from the FADT) | performed | only the FADT's values for the OS (ACPI_ENABLE, ACPI_DISABLE, PSTATE_CNT, CST_CNT); S4BIOS_REQ, vendor commands, 0: dropped + audit `exit` | firmware S4 resumes like S3; a vendor SMI handler is code the guest should not choose to run |
//! | the ACPI reset register (from the FADT, when set) | performed | the reset value: dropped + audit `exit`; any other: performed | a reset as at 0xCF9 |
//! | a write that starts below 0xCFC and runs into it (a dword at 0xCF9–0xCFB, a word at 0xCFB) | performed | dropped + audit `exit` | it would write configuration bytes around [`super::pci`]'s checks |
//! | any other port not passed ([`super::port_table`]) | all ones + audit `exit` | dropped + audit `exit` | default deny: DMA controllers, emulator control ports, unknown devices |
//! | string (INS/OUTS) or REP touching an intercepted port | #GP(0) + audit `exit` | #GP(0) + audit `exit` | not emulated |

use super::other::exit_record;
use super::pci;
use super::port_table;
use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::policy::audit::AuditAction;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::platform_ports::PlatformPorts;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::event::Exception;
use crate::vmx::exit_reason::ExitReason;
use crate::vmx::fields::ReadOnlyNatural;
use crate::vmx::regs::Gpr;
use okernel_abi::result::LINE_MARK;

/// System Control Port A (PS/2 "fast A20 and reset").
pub const PORT_A20: u16 = 0x92;
/// Port A bit 1: A20 enabled.
pub const A20_ENABLE: u8 = 1 << 1;
/// Port A bit 0: fast reset.
pub const FAST_RESET: u8 = 1 << 0;

/// The keyboard controller's command and status port.
pub const PORT_KBC_COMMAND: u16 = 0x64;
/// The reset control register.
pub const PORT_RESET_CONTROL: u16 = 0xcf9;
/// PCI CONFIG_ADDRESS (a dword at 0xCF8).
pub const PORT_PCI_ADDRESS: u16 = 0xcf8;
/// Reset control bit 2: RST_CPU, starts the reset.
pub const RST_CPU: u8 = 1 << 2;

/// COM1's data port: the transmitter holding register (receive buffer
/// on IN; the divisor latch's low byte with LCR.DLAB set).
pub const PORT_COM1_DATA: u16 = 0x3f8;
/// COM1's line control register: bit 7 is DLAB.
const PORT_COM1_LCR: u16 = 0x3fb;
const LCR_DLAB: u8 = 1 << 7;

/// Every port the base I/O bitmaps intercept.
pub const INTERCEPTED: &[u16] = &[
    PORT_KBC_COMMAND,
    PORT_A20,
    PORT_COM1_DATA,
    PORT_COM1_LCR,
    PORT_RESET_CONTROL,
    0xcfc,
    0xcfd,
    0xcfe,
    0xcff,
];

/// An I/O-instruction exit qualification (SDM Vol. 3C Table 28-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoQualification(pub u64);

impl IoQualification {
    /// Size of the access in bytes (bits 2:0: 0 = 1, 1 = 2, 3 = 4).
    pub const fn size(self) -> u8 {
        match self.0 & 0b111 {
            0 => 1,
            1 => 2,
            _ => 4,
        }
    }
    /// Direction (bit 3): IN.
    pub const fn is_in(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// String instruction (bit 4): INS/OUTS.
    pub const fn string(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// REP prefix (bit 5).
    pub const fn rep(self) -> bool {
        self.0 & (1 << 5) != 0
    }
    /// Port number (bits 31:16).
    pub const fn port(self) -> u16 {
        (self.0 >> 16) as u16
    }
    /// The qualification of an access (for tests and the fuzzer).
    pub const fn new(port: u16, size: u8, is_in: bool) -> Self {
        let s = match size {
            1 => 0,
            2 => 1,
            _ => 3,
        };
        Self(((port as u64) << 16) | ((is_in as u64) << 3) | s)
    }
}

/// The value a guest reads from emulated `port` (one byte).
pub const fn read_byte(port: u16) -> u8 {
    match port {
        PORT_A20 => A20_ENABLE,
        _ => 0xff,
    }
}

/// Whether the monitor lets a write of byte `value` to `port` happen
/// (ports it does not mediate: always). Port 0x92's allowed writes are
/// no-ops (its emulated state never changes); the others are performed.
pub const fn write_allowed(port: u16, value: u8) -> bool {
    match port {
        PORT_A20 => value & A20_ENABLE != 0 && value & FAST_RESET == 0,
        // 0xD1: write the output port (A20, reset); 0xDD: A20 off;
        // 0xF0-0xFF pulse the output lines whose bit is 0 (bit 0: reset).
        PORT_KBC_COMMAND => !(value == 0xd1 || value == 0xdd || (value >= 0xf0 && value & 1 == 0)),
        PORT_RESET_CONTROL => value & RST_CPU == 0,
        _ => true,
    }
}

/// Whether the monitor mediates `port` without platform rules.
pub fn intercepted(port: u16) -> bool {
    INTERCEPTED.contains(&port)
}

/// What the monitor does with an access to `port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortClass {
    /// The guest reaches the device without an exit.
    Passed,
    /// Intercepted, performed once judged.
    Mediated,
    /// Intercepted and refused: reads all ones, writes dropped.
    Denied,
}

/// The class of `port` on `platform` ([`super::port_table`]).
pub fn class(port: u16, platform: &PlatformPorts) -> PortClass {
    if intercepted(port) || platform.mediates(port) {
        PortClass::Mediated
    } else if port_table::passed(port) || platform.passes(port) {
        PortClass::Passed
    } else {
        PortClass::Denied
    }
}

/// Handles an I/O instruction exit.
pub fn handle<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    let q = IoQualification(vcpu.vmcs.read(ReadOnlyNatural::ExitQualification)?);
    if q.string() || q.rep() {
        let record = exit_record(vcpu, ExitReason::IoInstruction, AuditAction::InjectGp)?;
        vcpu.audit.record(record);
        return vcpu.inject(Exception::GeneralProtection, 0);
    }
    let (port, size) = (q.port(), q.size());
    let ports = (0..u16::from(size)).map(move |i| port.wrapping_add(i));
    // A dword at 0xCF8 is PCI CONFIG_ADDRESS, not the reset register.
    let config_address = port == PORT_PCI_ADDRESS && size == 4;
    let platform = vcpu.platform;
    if !config_address
        && ports
            .clone()
            .any(|p| class(p, &platform) == PortClass::Denied)
    {
        return deny(vcpu, q);
    }
    let emulated = ports.clone().any(|p| p == PORT_A20);
    if q.is_in() {
        let value = if emulated {
            ports
                .enumerate()
                .fold(0u64, |v, (i, p)| v | u64::from(read_byte(p)) << (8 * i))
        } else {
            u64::from(vcpu.cpu.port_in(port, size))
        };
        let rax = vcpu.regs.rax();
        let merged = match size {
            1 => (rax & !0xff) | value,
            2 => (rax & !0xffff) | value,
            // A 32-bit destination zero-extends (SDM Vol. 1 §3.4.1.1).
            _ => value,
        };
        vcpu.regs.set(Gpr::Rax, merged);
        return vcpu.advance_rip();
    }
    let rax = vcpu.regs.rax();
    // A write that starts below the data ports and runs into them (a
    // dword at 0xCFB, a word at 0xCFB): the platform splits it into
    // aligned cycles, so configuration bytes would be written without
    // `pci`'s checks. No OS writes so; refused.
    let straddles_data = port < pci::PORT_PCI_DATA && port + u16::from(size) > pci::PORT_PCI_DATA;
    let refused = if straddles_data {
        true
    } else if sends_console_byte(port, size) {
        !console_write_allowed(vcpu, size, (rax >> (8 * (PORT_COM1_DATA - port))) as u8)
    } else if (pci::PORT_PCI_DATA..=pci::PORT_PCI_DATA + 3).contains(&port) {
        !pci::write_allowed(vcpu, port, size, rax as u32)
    } else {
        ports.enumerate().any(|(i, p)| {
            let byte = (rax >> (8 * i)) as u8;
            (!config_address && !write_allowed(p, byte)) || !platform.write_allowed(p, byte)
        })
    };
    if refused {
        // Dropped: the guest goes on, the port keeps its state.
        let record = exit_record(vcpu, ExitReason::IoInstruction, AuditAction::Skip)?;
        vcpu.audit.record(record);
    } else {
        // The console's waiting lines go before any write the monitor
        // performs: before a console byte they keep their place among the
        // guest's (`policy::audit`); a write to a reset, sleep or A20 port
        // may end or stop the machine. Nothing waits: nothing printed.
        vcpu.audit.print_pending();
        if !emulated {
            vcpu.cpu.port_out(port, size, rax as u32);
        }
    }
    vcpu.advance_rip()
}

/// Whether a write of `size` bytes at `port` reaches COM1's data port.
const fn sends_console_byte(port: u16, size: u8) -> bool {
    port <= PORT_COM1_DATA && PORT_COM1_DATA < port + size as u16
}

/// Whether a guest write of `size` bytes reaching COM1's data port, whose
/// byte there is `value`, may go to the UART: a byte to the divisor
/// latch (LCR.DLAB set: the monitor reads the line control register,
/// which has no side effect), or a transmitted byte other than
/// [`LINE_MARK`] while the line has 8 data bits and no parity — with
/// fewer bits, or a stick parity bit, another byte would arrive as the
/// mark at a receiver set to 8N1. Wider writes are refused (no UART
/// driver makes them). (The guest's other UART settings pass: the
/// console puts its own back around each of the monitor's lines.)
fn console_write_allowed<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    size: u8,
    value: u8,
) -> bool {
    /// LCR: word length (bits 1:0, 11b = 8 bits) and parity enable (3).
    const LCR_8_NO_PARITY: (u8, u8) = (0b1011, 0b0011);
    let lcr = vcpu.cpu.port_in(PORT_COM1_LCR, 1) as u8;
    size == 1
        && (lcr & LCR_DLAB != 0
            || (lcr & LCR_8_NO_PARITY.0 == LCR_8_NO_PARITY.1 && value != LINE_MARK))
}

/// A denied access (default deny, [`super::port_table`]): an IN reads
/// all ones, as from a port nothing decodes; an OUT is dropped; both are
/// audited, and the guest goes on after the instruction.
fn deny<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    q: IoQualification,
) -> Result<ExitAction, ExitError> {
    let record = exit_record(vcpu, ExitReason::IoInstruction, AuditAction::Skip)?;
    vcpu.audit.record(record);
    if q.is_in() {
        let rax = vcpu.regs.rax();
        let value = match q.size() {
            1 => rax | 0xff,
            2 => rax | 0xffff,
            // A 32-bit destination zero-extends (SDM Vol. 1 §3.4.1.1).
            _ => 0xffff_ffff,
        };
        vcpu.regs.set(Gpr::Rax, value);
    }
    vcpu.advance_rip()
}

/// The I/O bitmap A (`high` false: ports 0x0000–0x7FFF) or B (`high`:
/// 0x8000–0xFFFF) of a run on `platform`, one bit a port (SDM Vol. 3C
/// §25.6.4): [`base_bitmap`] with the platform's passed blocks cleared
/// and its mediated ports set ([`class`]). `launch` writes them to two
/// pool frames.
pub fn bitmap(high: bool, platform: &PlatformPorts) -> [u8; 4096] {
    let mut page = base_bitmap(high);
    let ports = platform.passed().flat_map(|b| {
        (u32::from(b.first)..u32::from(b.first) + u32::from(b.len)).map(|p| p as u16)
    });
    for port in ports.chain(platform.ports()) {
        if (port >= 0x8000) == high {
            let bit = usize::from(port & 0x7fff);
            let exits = class(port, platform) != PortClass::Passed;
            page[bit / 8] = (page[bit / 8] & !(1 << (bit % 8))) | (u8::from(exits) << (bit % 8));
        }
    }
    page
}

/// The base I/O bitmap A (`high` false) or B (`high`), without platform
/// rules: every bit set but those of [`port_table::PASSED`] (and the fuzz
/// builds' doorbell). A `const
/// fn`, so it is also an immutable static of the monitor's image
/// (`launch::setup`, for host tests and the fuzzers).
pub const fn base_bitmap(high: bool) -> [u8; 4096] {
    let mut page = [0xffu8; 4096];
    let mut i = 0;
    while i < port_table::PASSED.len() {
        let range = port_table::PASSED[i];
        let mut port = range.first as u32;
        while port <= range.last as u32 {
            if (port >= 0x8000) == high {
                let bit = (port & 0x7fff) as usize;
                page[bit / 8] &= !(1 << (bit % 8));
            }
            port += 1;
        }
        i += 1;
    }
    if let Some(port) = port_table::FUZZ_DOORBELL
        && (port >= 0x8000) == high
    {
        let bit = (port & 0x7fff) as usize;
        page[bit / 8] &= !(1 << (bit % 8));
    }
    page
}
