//! One processor's VMCS and TLB brought in line with the shared policy
//! (issue 17).
//!
//! The policy is one for every processor, but part of it lives in each
//! processor's VMCS and TLB: the CR0/CR4 guest/host masks and read
//! shadows that make a pinned bit's write exit (`hypercall::locks`),
//! descriptor-table exiting, mode-based execute control, and the EPT
//! translations the processor caches. The processor that changes the
//! policy updates its own VMCS and runs INVEPT; every other processor
//! does the same with [`catch_up`] at its next exit, found by the policy's
//! generation (`crate::policy::Protection::generation`), before the exit
//! is handled; an application processor does it when its SIPI starts it
//! (`super::sipi`), so one started after a lock starts locked.
//!
//! A processor that takes no exit would keep its old VMCS controls and
//! cached translations: the shootdown (`crate::launch::presence`) makes
//! the hypercall that changed the policy wait until every other processor
//! has left the guest, so each runs this before it enters it again.
//!
//! A pin on a processor that does not have the bit set (an application
//! processor started in real mode, CR0.PG and CR0.WP clear) binds it from
//! the moment it sets the bit: `Protection::cr_write` refuses clearing a
//! pinned bit that is set, and the mask makes every write of it exit.

use crate::hw::{Cpu, Vmcs};
use crate::hypercall::policy::Env;
use crate::policy::Policy;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{CrConfig, ExitError, Vcpu};
use crate::vmx::controls::SecondaryProcBased;
use crate::vmx::error::VmFail;
use crate::vmx::fields::{Control32, ControlNatural, GuestNatural};

/// Brings this processor's VMCS and cached translations up to the
/// policy's generation: INVEPT for every view, then [`sync_controls`].
#[cold]
#[inline(never)]
pub fn catch_up<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<(), ExitError> {
    let generation = vcpu.policy.generation();
    if let Some(mut env) = Env::of(vcpu) {
        crate::policy::apply::invalidate(env.cpu, env.prot.caps.invept_all, env.views)?;
        sync_controls(&mut env)?;
    }
    vcpu.seen_generation = generation;
    Ok(())
}

/// Writes the policy's VMCS controls into this processor's VMCS: the
/// CR0/CR4 guest/host masks with every pinned bit (the read shadow taking
/// the value the guest saw for each bit newly owned), descriptor-table
/// exiting once the tables are locked, mode-based execute control once it
/// is active.
pub fn sync_controls<V: Vmcs, C: Cpu>(env: &mut Env<'_, V, C>) -> Result<(), VmFail> {
    for (mask, real_f, shadow_f, mask_f) in [
        (
            env.cr.cr0_mask,
            GuestNatural::Cr0,
            ControlNatural::Cr0ReadShadow,
            ControlNatural::Cr0GuestHostMask,
        ),
        (
            env.cr.cr4_mask,
            GuestNatural::Cr4,
            ControlNatural::Cr4ReadShadow,
            ControlNatural::Cr4GuestHostMask,
        ),
    ] {
        let old_mask = env.vmcs.read(mask_f)?;
        if old_mask == mask {
            continue;
        }
        let real = env.vmcs.read(real_f)?;
        let shadow = env.vmcs.read(shadow_f)?;
        let visible = CrConfig::visible(real, shadow, old_mask);
        env.vmcs.write(shadow_f, visible)?;
        env.vmcs.write(mask_f, mask)?;
    }
    let mut wanted = SecondaryProcBased::empty();
    if env.prot.descriptor_tables_locked {
        wanted |= SecondaryProcBased::DESCRIPTOR_TABLE_EXITING;
    }
    if env.prot.mbec_active {
        wanted |= SecondaryProcBased::MODE_BASED_EXECUTE_CONTROL;
    }
    if !wanted.is_empty() {
        let s = env.vmcs.read(Control32::SecondaryProcessorBasedControls)?;
        if s & wanted.bits() != wanted.bits() {
            env.vmcs.write(
                Control32::SecondaryProcessorBasedControls,
                s | wanted.bits(),
            )?;
        }
    }
    Ok(())
}
