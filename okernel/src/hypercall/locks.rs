//! The processor-state locks (ABI calls 18–20; invariants 4 and 5): CR
//! pins, MSR locks and the descriptor-table lock. Each call validates
//! everything first and changes nothing on an error; the exits they make
//! the guest take are in `exit::cr`, `exit::msr` and `exit::descriptor`.

use core::num::NonZeroU64;

use okernel_abi::hypercall::Status;
use okernel_abi::policy::ControlRegister;

use super::policy::{CallResult, Env, Reply};
use crate::hw::{Cpu, Vmcs};
use crate::msrs::{
    IA32_EFER, IA32_FMASK, IA32_INTERRUPT_SSP_TABLE_ADDR, IA32_PAT, IA32_PL0_SSP, IA32_PL1_SSP,
    IA32_PL2_SSP, IA32_PL3_SSP, IA32_S_CET, IA32_STAR, IA32_SYSENTER_CS, IA32_SYSENTER_EIP,
    IA32_SYSENTER_ESP,
};
use crate::policy::protection::{CR0_PINNABLE, CR4_PINNABLE};
use crate::vcpu::{CrConfig, ExitError};
use crate::vmx::controls::{EntryControls, SecondaryProcBased};
use crate::vmx::error::VmFail;
use crate::vmx::fields::{Control32, ControlNatural, Guest32, Guest64, GuestNatural};

/// PinCr(cr, bits) (the register and some bits decoded): only pinnable
/// bits that are set now; all already pinned is `Locked`.
pub fn pin_cr<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    which: ControlRegister,
    bits: NonZeroU64,
) -> Result<CallResult, ExitError> {
    let bits = bits.get();
    let (pinnable, pinned, mask, real_f, shadow_f, mask_f) = match which {
        ControlRegister::Cr0 => (
            CR0_PINNABLE,
            env.prot.cr0_pinned,
            env.cr.cr0_mask,
            GuestNatural::Cr0,
            ControlNatural::Cr0ReadShadow,
            ControlNatural::Cr0GuestHostMask,
        ),
        ControlRegister::Cr4 => (
            CR4_PINNABLE,
            env.prot.cr4_pinned,
            env.cr.cr4_mask,
            GuestNatural::Cr4,
            ControlNatural::Cr4ReadShadow,
            ControlNatural::Cr4GuestHostMask,
        ),
    };
    if bits & !pinnable != 0 {
        return Ok(Err(Status::Refused));
    }
    let real = env.vmcs.read(real_f)?;
    let shadow = env.vmcs.read(shadow_f)?;
    let visible = CrConfig::visible(real, shadow, mask);
    if bits & !visible != 0 {
        return Ok(Err(Status::InvalidArgument));
    }
    if bits & !pinned == 0 {
        return Ok(Err(Status::Locked));
    }
    if let Err(s) = env.trusted() {
        return Ok(Err(s));
    }
    // The shadow holds what the guest sees for every bit the mask now
    // owns; a MOV that changes an owned bit exits (SDM Vol. 3C §26.3,
    // §25.6.6), and `Protection::cr_write` denies clearing a pinned one.
    let mask = mask | bits;
    env.vmcs.write(shadow_f, visible)?;
    env.vmcs.write(mask_f, mask)?;
    env.changed();
    match which {
        ControlRegister::Cr0 => {
            env.prot.cr0_pinned |= bits;
            env.cr.cr0_mask = mask;
        }
        ControlRegister::Cr4 => {
            env.prot.cr4_pinned |= bits;
            env.cr.cr4_mask = mask;
        }
    }
    Ok(Ok(Reply::Done(None)))
}

/// IA32_SYSENTER_CS, _ESP, _EIP.
pub const IA32_SYSENTER: [u32; 3] = [IA32_SYSENTER_CS, IA32_SYSENTER_ESP, IA32_SYSENTER_EIP];
/// IA32_S_CET, then IA32_PL0_SSP .. IA32_PL3_SSP, IA32_INTERRUPT_SSP_TABLE_ADDR.
pub const CET_MSRS: [u32; 6] = [
    IA32_S_CET,
    IA32_PL0_SSP,
    IA32_PL1_SSP,
    IA32_PL2_SSP,
    IA32_PL3_SSP,
    IA32_INTERRUPT_SSP_TABLE_ADDR,
];

/// Whether okernel locks MSR `msr` on this processor.
pub fn lockable(msr: u32, cet: bool) -> bool {
    matches!(
        msr,
        IA32_EFER | IA32_PAT | IA32_STAR..=IA32_FMASK | IA32_SYSENTER_CS..=IA32_SYSENTER_EIP
    ) || (cet && CET_MSRS.contains(&msr))
}

/// LockMsr(index): locked at its current value; writes then exit.
pub fn lock_msr<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    msr: u32,
) -> Result<CallResult, ExitError> {
    if !lockable(msr, env.prot.caps.cet) || env.prot.msr_bitmap.is_none() {
        return Ok(Err(Status::Refused));
    }
    if env.prot.locked_msr(msr).is_some() {
        return Ok(Err(Status::Locked));
    }
    let Some(slot) = env.prot.msrs.iter().position(Option::is_none) else {
        return Ok(Err(Status::Exhausted));
    };
    if let Err(s) = env.trusted() {
        return Ok(Err(s));
    }
    let value = guest_msr(env.vmcs, env.cpu, msr)?;
    if let Some(b) = env.prot.msr_bitmap.as_mut() {
        b.intercept_write(msr);
    }
    env.prot.msrs[slot] = Some((msr, value));
    // The bitmap is every processor's: with others in the guest, the
    // lock returns only once each has left it since (the shootdown), so
    // no WRMSR that read the old bitmap is still under way there
    // (SDM Vol. 3C §25.6.9 leaves a bitmap changed under a processor in
    // VMX non-root operation to the processor).
    env.changed();
    Ok(Ok(Reply::Done(None)))
}

/// The guest's value of lockable MSR `msr`: the VMCS guest-state field
/// where VM entry loads it (EFER; PAT with "load IA32_PAT"; SYSENTER_CS,
/// _ESP, _EIP: SDM Vol. 3C §25.4.1, §27.3.2.1), otherwise the processor's
/// MSR, which VM entries and exits leave alone (STAR, LSTAR, CSTAR,
/// FMASK, the CET MSRs).
pub fn guest_msr<V: Vmcs, C: Cpu>(vmcs: &V, cpu: &C, msr: u32) -> Result<u64, VmFail> {
    Ok(match msr {
        IA32_EFER => vmcs.read(Guest64::Efer)?,
        IA32_PAT => {
            let entry = EntryControls::from_bits_retain(vmcs.read(Control32::EntryControls)?);
            if entry.contains(EntryControls::LOAD_PAT) {
                vmcs.read(Guest64::Pat)?
            } else {
                cpu.read_msr(msr)
            }
        }
        IA32_SYSENTER_CS => vmcs.read(Guest32::SysenterCs)?.into(),
        IA32_SYSENTER_ESP => vmcs.read(GuestNatural::SysenterEsp)?,
        IA32_SYSENTER_EIP => vmcs.read(GuestNatural::SysenterEip)?,
        _ => cpu.read_msr(msr),
    })
}

/// LockDescriptorTables(): descriptor-table exiting on (SDM Vol. 3C
/// §25.6.2, Table 25-7 bit 2); loads are then refused, stores emulated
/// (`exit::descriptor`).
pub fn lock_descriptor_tables<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
) -> Result<CallResult, ExitError> {
    if env.prot.descriptor_tables_locked {
        return Ok(Err(Status::Locked));
    }
    if !env.prot.caps.descriptor_table_exiting {
        return Ok(Err(Status::Refused));
    }
    if let Err(s) = env.trusted() {
        return Ok(Err(s));
    }
    let s = env.vmcs.read(Control32::SecondaryProcessorBasedControls)?;
    let s = s | SecondaryProcBased::DESCRIPTOR_TABLE_EXITING.bits();
    env.vmcs
        .write(Control32::SecondaryProcessorBasedControls, s)?;
    env.prot.descriptor_tables_locked = true;
    env.changed();
    Ok(Ok(Reply::Done(None)))
}
