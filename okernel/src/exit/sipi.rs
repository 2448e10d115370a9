//! SIPI (exit reason 4): a start-up IPI reached a virtual CPU in the
//! wait-for-SIPI activity state (SDM Vol. 3C §26.2 "Other Causes of VM
//! Exits": a SIPI exits only there, elsewhere it is discarded; the exit
//! qualification's bits 7:0
//! are the SIPI's vector, §28.2.1 Table 28-1). The processor does not
//! start by itself: the monitor starts it the way the hardware would
//! (issue 17), so that every processor runs the guest under the monitor.
//!
//! * The start-up state for the vector ([`write_startup_state`]): real
//!   mode (unrestricted guest), CS.selector = vector << 8, CS.base =
//!   vector << 12, IP = 0, active (SDM Vol. 3A §9.4, Table 10-1).
//! * The trusted context: a processor starts in context 0's view, as it
//!   does after a reset; a SIPI to a processor an untrusted context left
//!   waiting (stopped without a usable gate, [`super::stop`]) takes it
//!   back there ([`Env::enter_trusted`]).
//! * The general-purpose registers cleared but EDX = the processor's
//!   signature, CPUID.1:EAX (Table 10-1).
//! * The guest's cached translations dropped where VPID keeps them across
//!   VM entries ([`flush_guest_tlb`]): nothing cached from the state
//!   before the INIT serves the started processor.
//!
//! Outside wait-for-SIPI no SIPI exits; should the VMCS say otherwise,
//! the exit changes nothing.

use crate::hw::{Cpu, Vmcs};
use crate::hypercall::policy::Env;
use crate::policy::Policy;
use crate::vcpu::guest::flush_guest_tlb;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::startup::{ActivityState, write_startup_state};
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::fields::{Guest32, ReadOnlyNatural};
use crate::vmx::regs::{Gpr, GuestRegisters};

/// Handles a SIPI exit: starts the processor at the SIPI's vector in real
/// mode, in the trusted context (see the module documentation).
pub fn handle<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    if vcpu.vmcs.read(Guest32::ActivityState)? != ActivityState::WaitForSipi as u32 {
        return Ok(ExitAction::Resume);
    }
    // Bits 7:0; the rest are reserved (Table 28-1).
    let vector = vcpu.vmcs.read(ReadOnlyNatural::ExitQualification)? as u8;
    write_startup_state(&mut vcpu.vmcs, &vcpu.cr, vector)?;
    if let Some(mut env) = Env::of(vcpu)
        && env.prot.current != 0
    {
        // Context 0 always has a view (the base view); without one the
        // processor would stay in the more restricted view it has.
        env.enter_trusted()?;
    }
    let signature = vcpu.cpu.cpuid(1, 0).eax;
    vcpu.regs = GuestRegisters::default();
    vcpu.regs.set(Gpr::Rdx, signature.into());
    flush_guest_tlb(vcpu)?;
    log::info!(
        "okernel: SIPI: processor starts at {:#x} (vector {:#04x}) in real mode, under the monitor",
        u64::from(vector) << 12,
        vector
    );
    Ok(ExitAction::Resume)
}
