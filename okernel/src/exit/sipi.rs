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
//!   does after a reset (the only context there is: see below).
//! * The general-purpose registers cleared but EDX = the processor's
//!   signature, CPUID.1:EAX (Table 10-1).
//! * The guest's cached translations dropped where VPID keeps them across
//!   VM entries ([`flush_guest_tlb`]): nothing cached from the state
//!   before the INIT serves the started processor.
//!
//! * The policy's VMCS controls and a fresh TLB: the exit's catch-up
//!   (`super::vmcs_sync`, before any handler) brought this processor's
//!   VMCS up to the policy's generation, so a processor started after a
//!   lock starts locked.
//! * **Refused once an untrusted context has existed**
//!   (`Protection::untrusted_created`): the xAPIC page's ICR no longer
//!   exits then (its write trap, `super::xapic`, closes at the first
//!   `CreateContext`), so a kernel path of an untrusted context could INIT another
//!   processor (stopping it in wait-for-SIPI, `super::stop`) and SIPI it
//!   into the trusted context at code of its choosing below 1 MiB. The
//!   processor then stays waiting; the SIPI is audited (kind `exit`, the
//!   reason 4, action `refused`). A kernel starts its processors at boot,
//!   before it creates contexts (Linux: long before the okernel client
//!   loads); CPU hotplug after that is not supported.
//!
//! A SIPI exits only in wait-for-SIPI, so the exit starts the processor
//! whatever activity state it saved: Bochs 2.7 saves "active" for it (the
//! processor it emulates leaves wait-for-SIPI before the exit), with
//! blocking by SMI and NMI in the interruptibility state, which the
//! start-up state clears.

use super::other;
use crate::bits::CR0_PE;
use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::policy::audit::{AuditAction, Note};
use crate::vcpu::guest::flush_guest_tlb;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::startup::{ActivityState, Startup, write_startup_state};
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::exit_reason::ExitReason;
use crate::vmx::fields::{Guest16, Guest32, GuestNatural, ReadOnlyNatural};
use crate::vmx::regs::{Gpr, GuestRegisters};

/// Whether the processor is exactly where a SIPI started it: active, in
/// real mode, at IP 0 of a code segment at its selector × 16 on a page
/// boundary below 1 MiB, before its first instruction. An INIT exit
/// there is the INIT of the guest's own INIT-SIPI-SIPI: INIT is blocked in
/// wait-for-SIPI (SDM Vol. 3C §26.2) and delivered once the SIPI's start
/// made the processor active. Stopping the processor for it would leave
/// it waiting for the second SIPI, which the guest sends microseconds
/// after the first and may have sent already; and nothing ran since the
/// start, so an INIT would change nothing the guest could observe but
/// which SIPI starts it. The INIT exit resumes the start instead — once:
/// a second INIT exit there is no INIT the SIPI followed (Bochs 2.7 never
/// clears an INIT it exits for, and would exit again at every entry), and
/// stops the processor as any INIT does.
pub fn just_started<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &Vcpu<V, C, P, M>,
) -> Result<bool, ExitError> {
    if vcpu.startup != Startup::Started {
        return Ok(false);
    }
    let v = &vcpu.vmcs;
    let cs = v.read(Guest16::CsSelector)?;
    let base = v.read(GuestNatural::CsBase)?;
    Ok(
        v.read(Guest32::ActivityState)? == ActivityState::Active as u32
            && v.read(GuestNatural::Cr0)? & CR0_PE == 0
            && v.read(GuestNatural::Rip)? == 0
            && base == u64::from(cs) << 4
            && base & 0xfff == 0
            && base < 1 << 20,
    )
}

/// Resumes a processor [`just_started`] after the INIT exit that struck
/// there: still the start-up state, so no blocking (Bochs 2.7 saves
/// blocking by SMI and NMI for that exit; VM entry outside SMM refuses
/// the first, §27.3.1.5).
pub fn resume_start<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    vcpu.vmcs.write(Guest32::InterruptibilityState, 0)?;
    vcpu.startup = Startup::InitPassedOver;
    Ok(ExitAction::Resume)
}

/// Clears blocking by SMI in the interruptibility state an exit saved, on
/// a processor a SIPI started. Outside SMM a VM exit saves it as 0 (SDM
/// Vol. 3C §28.3.4) and VM entry refuses it set (§27.3.1.5); Bochs 2.7
/// saves it set on every exit of such a processor (its SIPI exit skips
/// unmasking SMIs), which would end the run at the next VM entry. On
/// other processors the bit is never set: one VMREAD.
#[cold]
#[inline(never)]
pub fn clear_saved_smi_blocking<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<(), ExitError> {
    let blocking = vcpu.vmcs.read(Guest32::InterruptibilityState)?;
    if blocking & BLOCKING_BY_SMI != 0 {
        vcpu.vmcs
            .write(Guest32::InterruptibilityState, blocking & !BLOCKING_BY_SMI)?;
    }
    Ok(())
}

/// Interruptibility state: blocking by SMI (bit 2, SDM Vol. 3C Table
/// 25-3).
const BLOCKING_BY_SMI: u32 = 1 << 2;

/// Handles a SIPI exit: starts the processor at the SIPI's vector in real
/// mode, in the trusted context (see the module documentation).
pub fn handle<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    // A processor starts once: a restart by INIT-SIPI would come up in
    // real mode with the pinned CR0/CR4 bits and the locked MSRs at their
    // reset values (the pins bind a bit only while it is set).
    let refused = vcpu.startup != Startup::Never
        || vcpu
            .policy
            .protection()
            .is_some_and(|p| p.untrusted_created);
    if refused {
        // Stays waiting: audited, nothing started. The exit may have saved
        // another activity state and blocking by SMI (Bochs), which VM
        // entry outside SMM refuses (SDM Vol. 3C §27.3.1.5).
        let record = other::exit_record(vcpu, ExitReason::Sipi, AuditAction::Refused)?;
        vcpu.audit.record(record);
        vcpu.vmcs
            .write(Guest32::ActivityState, ActivityState::WaitForSipi as u32)?;
        clear_saved_smi_blocking(vcpu)?;
        return Ok(ExitAction::Resume);
    }
    // Bits 7:0; the rest are reserved (Table 28-1).
    let vector = vcpu.vmcs.read(ReadOnlyNatural::ExitQualification)? as u8;
    // No untrusted context ever existed, so this processor is in the
    // trusted context (its view, the base view, is in its VMCS).
    write_startup_state(&mut vcpu.vmcs, &vcpu.cr, vector)?;
    let signature = vcpu.cpu.cpuid(1, 0).eax;
    vcpu.regs = GuestRegisters::default();
    vcpu.regs.set(Gpr::Rdx, signature.into());
    flush_guest_tlb(vcpu)?;
    // Queued, not printed here: the guest's next SIPI may follow within
    // microseconds (`policy::audit`, "When the lines are printed").
    vcpu.audit.note(Note::Started { vector });
    vcpu.startup = Startup::Started;
    vcpu.started_aps = vcpu.started_aps.saturating_add(1);
    // The last processor the guest can start: the APIC page's write trap
    // has done its work (`super::xapic`).
    if vcpu.started_aps >= vcpu.joined_aps
        && let Some(mut env) = crate::hypercall::policy::Env::of(vcpu)
    {
        env.close_xapic_trap()?;
    }
    Ok(ExitAction::Resume)
}
