//! WRMSR of the local APIC's MSRs: IA32_APIC_BASE (0x1B) and the x2APIC
//! register range (0x800..=0x8FF). The base MSR bitmap makes writes to both
//! exit ([`crate::exit::msr_table::configure_base`]); reads pass through.
//!
//! Why: the APIC page sits wherever IA32_APIC_BASE says, and the processor
//! routes every physical access to that page — the monitor's own, in VMX
//! root operation, included — to the APIC. Moved over the MSR-bitmap page,
//! VMX would read APIC registers as intercept bits (locked MSRs writable
//! without an exit, VMX capability MSRs readable: invariants 5 and 12);
//! moved over the monitor's stack or code it crashes the monitor
//! (invariant 11). And the x2APIC's interrupt-command register can send
//! the processor an INIT, SIPI, SMI or NMI, which stop or take over the
//! processor the monitor runs on.
//!
//! | write | outcome |
//! |-------|---------|
//! | IA32_APIC_BASE, same base, a valid mode transition | written |
//! | IA32_APIC_BASE, another base (relocation) | #GP + audit `msr-write` |
//! | IA32_APIC_BASE, same base, a reserved/BSP bit changed or an invalid transition | #GP (as the processor would raise) |
//! | an x2APIC MSR while the APIC is not in x2APIC mode | #GP (as the processor would raise) |
//! | x2APIC TPR (0x808), EOI (0x80B, value 0), SELF IPI (0x83F) | written (reserved bits: #GP) |
//! | x2APIC ICR (0x830), fixed delivery mode | written (reserved bits: #GP) |
//! | x2APIC ICR, SIPI to other processors only (shorthand "all excluding self", or a physical destination that is not this processor), from the trusted context | written: each waits for it under the monitor (issue 17, `super::sipi`) |
//! | x2APIC ICR, INIT to other processors only, from the trusted context | completed, not sent (see below) |
//! | x2APIC ICR, any other delivery mode (lowest priority, SMI, NMI), INIT or SIPI to this processor or from an untrusted context | #GP + audit `msr-write` |
//! | any other x2APIC register (SVR, LVT, timer, ESR, read-only ones) | #GP + audit `msr-write`: not mediated yet |
//!
//! Why an INIT to another processor is not sent (docs/smp.md): every
//! other processor runs under the monitor, waiting for its SIPI in VMX
//! non-root or running the guest. Waiting, INIT is blocked there (SDM
//! Vol. 3C §26.2) and only strikes once the SIPI has started it, as an
//! INIT exit the monitor then passes over (`super::sipi::just_started`);
//! Bochs 2.7 never clears such an INIT and exits for it at every entry,
//! so a processor it reached could never run the guest. Running, an INIT
//! would stop a processor the monitor runs the guest on. So an OS's
//! INIT-SIPI-SIPI starts a waiting processor with its SIPI alone, and an
//! INIT cannot stop another one (a processor taken offline and started
//! again by INIT-SIPI is not supported).
//!
//! Every value the monitor writes is one the processor accepts (the checks
//! above are those of SDM Vol. 3A §11.4.4 "Local APIC Status and Location",
//! §11.12.5 "x2APIC State Transitions" and §11.12.1.2 "x2APIC Register
//! Address Space"; §10.x in editions before 2023), so the monitor's WRMSR
//! can never fault.

use crate::bits::{APIC_BASE_ADDRESS, APIC_BASE_EN, APIC_BASE_EXTD};
// Re-exported: the tests of this module (`tests::exits_apic`) name it here.
use crate::bits::CPUID1_ECX_X2APIC;
use crate::hw::{Cpu, Vmcs};
use crate::msrs::{
    IA32_APIC_BASE, IA32_X2APIC_APICID, IA32_X2APIC_EOI, IA32_X2APIC_ICR, IA32_X2APIC_SELF_IPI,
    IA32_X2APIC_TPR,
};
use crate::policy::Policy;
use crate::policy::audit::AuditKind;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::event::Exception;

/// The ICR bits software may set in x2APIC mode: vector 7:0, delivery mode
/// 10:8, destination mode 11, level 14, trigger mode 15, destination
/// shorthand 19:18, destination 63:32.
const ICR_WRITABLE: u64 = 0xffff_ffff_000c_cfff;
/// ICR delivery mode (bits 10:8).
const ICR_DELIVERY_MODE: u64 = 0b111 << 8;

/// What happens to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The processor would accept it and it is harmless: the monitor
    /// writes it.
    Write,
    /// The processor itself would raise #GP: the monitor injects #GP.
    Fault,
    /// The policy refuses it: #GP and an audit record.
    Deny,
    /// The processor would accept it; the monitor completes the WRMSR
    /// without performing it (an INIT to other processors).
    Drop,
}

/// ICR destination shorthand (bits 19:18): none, self, all including
/// self, all excluding self (SDM Vol. 3A §11.6.1).
const ICR_SHORTHAND_SHIFT: u32 = 18;
/// ICR destination mode (bit 11): logical.
const ICR_LOGICAL: u64 = 1 << 11;
/// The x2APIC broadcast destination.
const BROADCAST: u32 = u32::MAX;
/// ICR delivery modes (bits 10:8).
const ICR_FIXED: u64 = 0b000;
const ICR_INIT: u64 = 0b101;
const ICR_SIPI: u64 = 0b110;

/// Who writes an x2APIC ICR: whether the trusted context does, and this
/// processor's x2APIC ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcrWriter {
    /// The guest runs in the trusted context (0).
    pub trusted: bool,
    /// IA32_X2APIC_APICID of the processor that writes.
    pub own_id: u32,
}

/// Judges the delivery of a valid x2APIC ICR `value` (reserved bits
/// clear) from `writer`.
pub(super) const fn icr_write(value: u64, writer: IcrWriter) -> Verdict {
    let mode = (value & ICR_DELIVERY_MODE) >> 8;
    if mode == ICR_FIXED {
        return Verdict::Write;
    }
    let destination = (value >> 32) as u32;
    let others_only = match (value >> ICR_SHORTHAND_SHIFT) & 0b11 {
        0b11 => true,
        0b00 => {
            value & ICR_LOGICAL == 0 && destination != writer.own_id && destination != BROADCAST
        }
        _ => false,
    };
    match mode {
        ICR_INIT if writer.trusted && others_only => Verdict::Drop,
        ICR_SIPI if writer.trusted && others_only => Verdict::Write,
        _ => Verdict::Deny,
    }
}

/// The APIC's mode for IA32_APIC_BASE `value`: (EN, EXTD).
const fn mode(value: u64) -> (bool, bool) {
    (value & APIC_BASE_EN != 0, value & APIC_BASE_EXTD != 0)
}

/// Judges WRMSR(IA32_APIC_BASE, `value`) while it holds `current`, on a
/// processor that offers x2APIC mode when `x2apic`.
///
/// Only EN and EXTD may change, along the transitions of SDM Vol. 3A
/// §11.12.5 (Figure 11-27): xAPIC -> x2APIC, xAPIC or x2APIC -> disabled,
/// disabled -> xAPIC. x2APIC -> xAPIC and EN = 0 with EXTD = 1 are invalid
/// (#GP); disabled -> x2APIC is refused as well (#GP: the monitor is
/// stricter than some processors; software goes through xAPIC mode).
pub const fn apic_base_write(current: u64, value: u64, x2apic: bool) -> Verdict {
    let changed = current ^ value;
    if changed & APIC_BASE_ADDRESS != 0 {
        return Verdict::Deny;
    }
    if changed & !(APIC_BASE_EN | APIC_BASE_EXTD) != 0 {
        return Verdict::Fault;
    }
    let ok = match (mode(current), mode(value)) {
        (_, (false, true)) => false,
        (_, (true, true)) if !x2apic => false,
        (from, to) if from.0 == to.0 && from.1 == to.1 => true,
        ((true, false), (true, true) | (false, false)) => true,
        ((true, true), (false, false)) => true,
        ((false, false), (true, false)) => true,
        _ => false,
    };
    if ok { Verdict::Write } else { Verdict::Fault }
}

/// Judges WRMSR(`index`, `value`) of an x2APIC MSR while IA32_APIC_BASE
/// holds `apic_base`, written by `writer`.
pub const fn x2apic_write(index: u32, value: u64, apic_base: u64, writer: IcrWriter) -> Verdict {
    if !matches!(mode(apic_base), (true, true)) {
        // SDM Vol. 3A §11.12.1.2: x2APIC MSRs outside x2APIC mode #GP.
        return Verdict::Fault;
    }
    let reserved = match index {
        IA32_X2APIC_TPR | IA32_X2APIC_SELF_IPI => value & !0xff,
        IA32_X2APIC_EOI => value,
        IA32_X2APIC_ICR => value & !ICR_WRITABLE,
        _ => return Verdict::Deny,
    };
    if reserved != 0 {
        return Verdict::Fault;
    }
    if index == IA32_X2APIC_ICR {
        return icr_write(value, writer);
    }
    Verdict::Write
}

/// Handles an intercepted WRMSR of IA32_APIC_BASE or an x2APIC MSR
/// (`index`), value `value`.
pub fn handle_write<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    index: u32,
    value: u64,
) -> Result<ExitAction, ExitError> {
    let base = vcpu.cpu.read_msr(IA32_APIC_BASE);
    let verdict = if index == IA32_APIC_BASE {
        let x2apic = vcpu.cpu.cpuid(1, 0).ecx & CPUID1_ECX_X2APIC != 0;
        apic_base_write(base, value, x2apic)
    } else {
        // The ID only where an ICR write is judged: outside x2APIC mode
        // reading it would fault the monitor (§11.12.1.2).
        let x2apic_mode = matches!(mode(base), (true, true));
        let own_id = if index == IA32_X2APIC_ICR && x2apic_mode {
            vcpu.cpu.read_msr(IA32_X2APIC_APICID) as u32
        } else {
            0
        };
        let writer = IcrWriter {
            trusted: vcpu.policy.context() == 0,
            own_id,
        };
        x2apic_write(index, value, base, writer)
    };
    match verdict {
        Verdict::Write => {
            vcpu.cpu.write_msr(index, value);
            vcpu.advance_rip()
        }
        Verdict::Drop => vcpu.advance_rip(),
        Verdict::Fault => vcpu.inject(Exception::GeneralProtection, 0),
        Verdict::Deny => vcpu.deny_write(AuditKind::MsrLock, index.into(), None, value),
    }
}
