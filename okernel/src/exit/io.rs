//! I/O instruction exits (SDM Vol. 3C §26.1.3: with "use I/O bitmaps" an
//! IN/OUT/INS/OUTS exits when the bit of any port it accesses is set,
//! §25.6.4; the exit qualification is §28.2.1, Table 28-5).
//!
//! The I/O bitmaps ([`base_bitmap`]) intercept the ports of the table
//! below; every other port passes through (issue 13's default-deny port
//! table is not done yet: `docs/policy.md`, "Port I/O"). The monitor
//! performs no port I/O itself: each intercepted port is emulated.
//!
//! | port | IN | OUT | why |
//! |------|----|-----|-----|
//! | 0x92, System Control Port A | emulated: 0x02 (A20 on, no reset pending) | A20 kept on and fast reset (bit 0) clear: a no-op; A20 off or a reset: dropped + audit `exit` | A20 off makes the platform mask address bit 20 of every physical access, EPT walks and the monitor's own included (in Bochs the monitor then triple-faults); bit 0 resets the machine under the monitor |
//! | any other intercepted port | all ones (no device) | dropped + audit `exit` | not reachable with the base bitmaps |
//! | string (INS/OUTS) or REP to an intercepted port | #GP(0) + audit `exit` | #GP(0) + audit `exit` | not emulated |

use super::guest::Vcpu;
use super::other::exit_record;
use super::{ExitAction, ExitError};
use crate::hw::{Cpu, Vmcs};
use crate::hypercall::memory::GuestMemory;
use crate::policy::Policy;
use crate::policy::audit::AuditAction;
use crate::vmx::event::Exception;
use crate::vmx::exit_reason::ExitReason;
use crate::vmx::fields::ReadOnlyNatural;
use crate::vmx::regs::Gpr;

/// System Control Port A (PS/2 "fast A20 and reset").
pub const PORT_A20: u16 = 0x92;
/// Port A bit 1: A20 enabled.
pub const A20_ENABLE: u8 = 1 << 1;
/// Port A bit 0: fast reset.
pub const FAST_RESET: u8 = 1 << 0;

/// Every port the base I/O bitmaps intercept.
pub const INTERCEPTED: &[u16] = &[PORT_A20];

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

/// The value a guest reads from intercepted `port` (one byte).
pub const fn read_byte(port: u16) -> u8 {
    match port {
        PORT_A20 => A20_ENABLE,
        _ => 0xff,
    }
}

/// Whether the monitor lets a write of `value` to intercepted `port`
/// happen (as a no-op: the emulated state never changes).
pub const fn write_allowed(port: u16, value: u8) -> bool {
    match port {
        PORT_A20 => value & A20_ENABLE != 0 && value & FAST_RESET == 0,
        _ => false,
    }
}

/// Whether the base bitmaps intercept `port`.
pub fn intercepted(port: u16) -> bool {
    INTERCEPTED.contains(&port)
}

/// Handles an I/O instruction exit.
pub fn handle<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    let q = IoQualification(vcpu.vmcs.read(ReadOnlyNatural::ExitQualification)?);
    if q.string() || q.rep() {
        let record = exit_record(vcpu, ExitReason::IoInstruction, AuditAction::InjectedGp)?;
        vcpu.audit.push(record).log();
        return vcpu.inject(Exception::GeneralProtection, 0);
    }
    let ports = (0..u16::from(q.size())).map(|i| q.port().wrapping_add(i));
    if q.is_in() {
        let mut value = 0u64;
        for (i, port) in ports.enumerate() {
            value |= u64::from(read_byte(port)) << (8 * i);
        }
        let rax = vcpu.regs.rax();
        let merged = match q.size() {
            1 => (rax & !0xff) | value,
            2 => (rax & !0xffff) | value,
            // A 32-bit destination zero-extends (SDM Vol. 1 §3.4.1.1).
            _ => value,
        };
        vcpu.regs.set(Gpr::Rax, merged);
        return vcpu.advance_rip();
    }
    let rax = vcpu.regs.rax();
    let refused = ports
        .enumerate()
        .any(|(i, port)| !write_allowed(port, (rax >> (8 * i)) as u8));
    if refused {
        // Dropped: the guest goes on, the port keeps its state.
        let record = exit_record(vcpu, ExitReason::IoInstruction, AuditAction::Dropped)?;
        vcpu.audit.push(record).log();
    }
    vcpu.advance_rip()
}

/// The base I/O bitmap A (`high` false: ports 0x0000–0x7FFF) or B
/// (`high`: 0x8000–0xFFFF), one bit a port (SDM Vol. 3C §25.6.4): the
/// ports of [`INTERCEPTED`] set, every other clear. A `const fn`, so the
/// bitmaps are immutable statics of the monitor's image
/// (`launch::setup`), which the processor only reads.
pub const fn base_bitmap(high: bool) -> [u8; 4096] {
    let mut page = [0u8; 4096];
    let mut i = 0;
    while i < INTERCEPTED.len() {
        let port = INTERCEPTED[i];
        if (port >= 0x8000) == high {
            let bit = (port & 0x7fff) as usize;
            page[bit / 8] |= 1 << (bit % 8);
        }
        i += 1;
    }
    page
}
