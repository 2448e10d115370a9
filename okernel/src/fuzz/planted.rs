//! Deliberate monitor defects for the VM fuzzer's planted-defect proof of
//! issue 13's last vocabulary classes (`cargo xtask fuzz vm-planted`,
//! `docs/vm-fuzzing.md`): port I/O, debug state set before a hypercall,
//! self-IPIs. Each is a cargo feature that is off everywhere but that
//! proof; each is marked DELIBERATE DEFECT.
//!
//! One seam: [`around`] wraps the slow half of every exit of a fuzz build
//! ([`super::observe::slow`]). With none of the features on it is the
//! handler itself, so the production files (`exit/`, `hypercall/`) carry
//! no trace of these defects, and a build without `fuzz` has none of this
//! module.
//!
//! | feature | defect | what the executor sees |
//! |---|---|---|
//! | `planted-kbc-output-port` | the keyboard controller's "write output port" command (0x64 ← 0xD1: A20 and the reset line) is performed, not refused: a port table missing an entry | the write completes with no `exit` record |
//! | `planted-dma-ports-passed` | the 8237 ISA DMA controller's ports (0x00–0x1F, page registers 0x81–0x8F, 0xC0–0xDF) are performed, not denied: a default-deny table that passes a bus master | the write completes with no `exit` record |
//! | `planted-gate-debug-state` | a switch that resumes at a gate keeps the caller's TF (and the single-step trap its VMCALL owes) and DR7 | a #DB at the gate before its first instruction, or DR7 ≠ 0x400 there |
//! | `planted-gate-if` | a switch that resumes at a gate keeps the caller's IF | a self-IPI made pending before `STI; VMCALL` is delivered at the gate |
//! | `planted-gate-nmi` | a switch that resumes at a gate keeps the caller's NMI blocking (none), as okernel did before NMI blocking at gates | an NMI the gate sends itself before its first IRET is delivered there, not after the IRET |

use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::vcpu::guest::Vcpu;
use crate::vcpu::hooks::SlowExit;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError};

/// Runs `handle`, with the planted defects of this build around it.
#[inline(always)]
pub fn around<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    rest: SlowExit,
    handle: impl FnOnce(&mut Vcpu<V, C, P, M>) -> Result<ExitAction, ExitError>,
) -> Result<ExitAction, ExitError> {
    #[cfg(feature = "planted-kbc-output-port")]
    if let Some(r) = kbc_output_port(vcpu, rest) {
        return r;
    }
    #[cfg(feature = "planted-dma-ports-passed")]
    if let Some(r) = dma_ports_passed(vcpu, rest) {
        return r;
    }
    #[cfg(any(
        feature = "planted-gate-debug-state",
        feature = "planted-gate-if",
        feature = "planted-gate-nmi"
    ))]
    let caller = gate::Caller::read(vcpu, rest);
    let result = handle(vcpu);
    #[cfg(any(
        feature = "planted-gate-debug-state",
        feature = "planted-gate-if",
        feature = "planted-gate-nmi"
    ))]
    if let Some(caller) = caller {
        caller.leak(vcpu, &result)?;
    }
    let _ = rest;
    result
}

/// A plain byte OUT exit for which `planted(port, byte)` holds, performed
/// as if the port table passed it (the shared body of the port defects).
#[cfg(any(
    feature = "planted-kbc-output-port",
    feature = "planted-dma-ports-passed"
))]
fn perform_out<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    rest: SlowExit,
    planted: impl Fn(u16, u8) -> bool,
) -> Option<Result<ExitAction, ExitError>> {
    use crate::exit::io::IoQualification;
    use crate::vmx::exit_reason::ExitReason;
    use crate::vmx::fields::ReadOnlyNatural;
    let SlowExit::Other(field) = rest else {
        return None;
    };
    if field.basic() != ExitReason::IoInstruction as u16 {
        return None;
    }
    let q = IoQualification(vcpu.vmcs.read(ReadOnlyNatural::ExitQualification).ok()?);
    let value = vcpu.regs.rax() as u8;
    if q.is_in() || q.string() || q.rep() || q.size() != 1 || !planted(q.port(), value) {
        return None;
    }
    vcpu.counters.record(field.basic());
    vcpu.cpu.port_out(q.port(), 1, u32::from(value));
    Some(vcpu.advance_rip())
}

/// DELIBERATE DEFECT for fuzzing only: performs OUT 0x64 ← 0xD1 (write the
/// keyboard controller's output port) as if the port table allowed it.
#[cfg(feature = "planted-kbc-output-port")]
fn kbc_output_port<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    rest: SlowExit,
) -> Option<Result<ExitAction, ExitError>> {
    use crate::exit::io::PORT_KBC_COMMAND;
    perform_out(vcpu, rest, |port, value| {
        port == PORT_KBC_COMMAND && value == 0xd1
    })
}

/// DELIBERATE DEFECT for fuzzing only: performs a byte OUT to the 8237
/// DMA controller's ports as if the port table passed them.
#[cfg(feature = "planted-dma-ports-passed")]
fn dma_ports_passed<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    rest: SlowExit,
) -> Option<Result<ExitAction, ExitError>> {
    perform_out(
        vcpu,
        rest,
        |port, _| matches!(port, 0x00..=0x1f | 0x81..=0x8f | 0xc0..=0xdf),
    )
}

#[cfg(any(
    feature = "planted-gate-debug-state",
    feature = "planted-gate-if",
    feature = "planted-gate-nmi"
))]
mod gate {
    use super::*;
    use crate::vmx::fields::{Guest32, GuestNatural, ReadOnly32};

    /// What the caller of a VMCALL had that a gate entry clears.
    #[derive(Debug, Clone, Copy)]
    pub struct Caller {
        rip: u64,
        next: u64,
        rflags: u64,
        #[cfg_attr(not(feature = "planted-gate-debug-state"), allow(dead_code))]
        dr7: u64,
        #[cfg_attr(not(feature = "planted-gate-nmi"), allow(dead_code))]
        interruptibility: u32,
    }

    impl Caller {
        /// Reads it before a VMCALL's handler (None for other exits).
        pub fn read<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
            vcpu: &Vcpu<V, C, P, M>,
            rest: SlowExit,
        ) -> Option<Self> {
            let SlowExit::Vmcall { .. } = rest else {
                return None;
            };
            let rip = vcpu.vmcs.read(GuestNatural::Rip).ok()?;
            let len = vcpu.vmcs.read(ReadOnly32::ExitInstructionLength).ok()?;
            Some(Self {
                rip,
                next: rip.wrapping_add(u64::from(len)),
                rflags: vcpu.vmcs.read(GuestNatural::Rflags).ok()?,
                dr7: vcpu.vmcs.read(GuestNatural::Dr7).ok()?,
                interruptibility: vcpu.vmcs.read(Guest32::InterruptibilityState).ok()?,
            })
        }

        /// After the handler: if it resumed the guest somewhere other
        /// than at or after its VMCALL (a gate), puts back what the gate
        /// entry cleared.
        pub fn leak<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
            self,
            vcpu: &mut Vcpu<V, C, P, M>,
            result: &Result<ExitAction, ExitError>,
        ) -> Result<(), ExitError> {
            if !matches!(result, Ok(ExitAction::Resume)) {
                return Ok(());
            }
            let rip = vcpu.vmcs.read(GuestNatural::Rip)?;
            if rip == self.rip || rip == self.next {
                return Ok(());
            }
            // DELIBERATE DEFECT for fuzzing only: the gate starts with the
            // caller's TF (planted-gate-debug-state) or IF (planted-gate-if).
            let kept = if cfg!(feature = "planted-gate-debug-state") {
                crate::bits::RFLAGS_TF
            } else {
                0
            } | if cfg!(feature = "planted-gate-if") {
                crate::bits::RFLAGS_IF
            } else {
                0
            };
            if kept != 0 {
                let rflags = vcpu.vmcs.read(GuestNatural::Rflags)?;
                vcpu.vmcs
                    .write(GuestNatural::Rflags, rflags | (self.rflags & kept))?;
            }
            // DELIBERATE DEFECT for fuzzing only: the single-step trap the
            // caller's VMCALL owes, and its DR7.
            #[cfg(feature = "planted-gate-debug-state")]
            {
                if self.rflags & crate::bits::RFLAGS_TF != 0 {
                    vcpu.vmcs.write(
                        GuestNatural::PendingDebugExceptions,
                        crate::bits::PENDING_BS,
                    )?;
                }
                vcpu.vmcs.write(GuestNatural::Dr7, self.dr7)?;
            }
            // DELIBERATE DEFECT for fuzzing only: the gate starts with the
            // caller's NMI blocking (none after an ordinary VMCALL).
            #[cfg(feature = "planted-gate-nmi")]
            {
                let now = vcpu.vmcs.read(Guest32::InterruptibilityState)?;
                let nmi = crate::vcpu::guest::GateEntry::NMI_BLOCKING;
                vcpu.vmcs.write(
                    Guest32::InterruptibilityState,
                    (now & !nmi) | (self.interruptibility & nmi),
                )?;
            }
            Ok(())
        }
    }
}
