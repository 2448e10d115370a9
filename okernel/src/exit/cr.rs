//! Control-register access exits (SDM Vol. 3C §26.1.3, §28.2.1 Table 28-3).
//!
//! The guest owns CR0 and CR4 except the bits in the guest/host masks: the
//! bits VMX fixes (CR0.NE, CR4.VMXE, anything unsupported) and CR4.SMXE.
//! Those read from the read shadows (so the guest sees CR4.VMXE = 0, its own
//! CR0.NE), and a MOV that changes one of them exits here. The handler
//! checks the value as the processor would (raising #GP where the SDM says
//! MOV to CR faults; setting CR4.VMXE or CR4.SMXE faults as on a CPU without
//! VMX/SMX), asks the policy hook (CR pinning), then sets the real register
//! (fixed bits applied) and the shadow (the guest's value).
//!
//! CR3 and CR8 accesses do not exit with okernel's controls (CR3-load/store
//! and CR8-load/store exiting are 0); CR3 is handled anyway, CR8 (and any
//! other register number) gets #UD.

use crate::bits::{
    CR0_CD, CR0_NW, CR0_PE, CR0_PG, CR0_TS, CR0_WP, CR4_PAE, CR4_PCIDE, CR4_PGE, CR4_PKE, CR4_PSE,
    CR4_SMAP, CR4_SMEP, CR4_SMXE, CR4_VMXE, EFER_LMA, EFER_LME,
};
use crate::hw::{Cpu, Vmcs};
use crate::policy::audit::AuditKind;
use crate::policy::{Decision, Policy};
use crate::vcpu::guest::flush_guest_tlb;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{CrConfig, ExitAction, ExitError, Vcpu};
use crate::vmx::controls::EntryControls;
use crate::vmx::event::Exception;
use crate::vmx::fields::{Control32, ControlNatural, Guest64, GuestNatural, ReadOnlyNatural};
use crate::vmx::qualification::{CrAccess, CrAccessType};

/// CR4 bits whose change invalidates TLB entries (SDM Vol. 3A §4.10.4.1):
/// PSE, PAE, PGE, PCIDE, SMEP, SMAP, PKE.
const CR4_PAGING_BITS: u64 =
    CR4_PSE | CR4_PAE | CR4_PGE | CR4_PCIDE | CR4_SMEP | CR4_SMAP | CR4_PKE;

/// Handles a control-register access exit.
pub fn handle<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    let q = vcpu.vmcs.read(ReadOnlyNatural::ExitQualification)?;
    let access = CrAccess::decode(q);
    match (access.access, access.cr) {
        (CrAccessType::MovTo, 0) => {
            let v = vcpu.operand(access.gpr)?;
            write_cr0(vcpu, v)
        }
        (CrAccessType::MovTo, 4) => {
            let v = vcpu.operand(access.gpr)?;
            write_cr4(vcpu, v)
        }
        (CrAccessType::MovTo, 3) => {
            let v = vcpu.operand(access.gpr)?;
            vcpu.vmcs.write(GuestNatural::Cr3, v)?;
            vcpu.advance_rip()
        }
        (CrAccessType::MovFrom, 3) => {
            let v = vcpu.vmcs.read(GuestNatural::Cr3)?;
            let v = if vcpu.in_64bit_mode()? {
                v
            } else {
                v & 0xffff_ffff
            };
            vcpu.set_gpr(access.gpr, v)?;
            vcpu.advance_rip()
        }
        (CrAccessType::Clts, _) => {
            let old = visible_cr0(vcpu)?;
            write_cr0(vcpu, old & !CR0_TS)
        }
        (CrAccessType::Lmsw, _) => {
            // LMSW loads CR0[3:0] but cannot clear PE (SDM Vol. 2A, LMSW).
            let old = visible_cr0(vcpu)?;
            let src = u64::from(access.lmsw_source) & 0xf;
            write_cr0(vcpu, (old & !0xe) | src | (old & CR0_PE))
        }
        // CR8 (no CR8-load/store exiting) and the undefined registers:
        // what MOV to CR1/CR5–7 raises, and not emulated for CR8.
        _ => vcpu.inject(Exception::InvalidOpcode, 0),
    }
}

/// The CR0 the guest believes it has: real bits outside the mask, shadow
/// bits inside it.
pub fn visible_cr0<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &Vcpu<V, C, P, M>,
) -> Result<u64, ExitError> {
    let real = vcpu.vmcs.read(GuestNatural::Cr0)?;
    let shadow = vcpu.vmcs.read(ControlNatural::Cr0ReadShadow)?;
    Ok(CrConfig::visible(real, shadow, vcpu.cr.cr0_mask))
}

/// The CR4 the guest believes it has.
pub fn visible_cr4<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &Vcpu<V, C, P, M>,
) -> Result<u64, ExitError> {
    let real = vcpu.vmcs.read(GuestNatural::Cr4)?;
    let shadow = vcpu.vmcs.read(ControlNatural::Cr4ReadShadow)?;
    Ok(CrConfig::visible(real, shadow, vcpu.cr.cr4_mask))
}

/// Emulates MOV to CR0 of `v` (SDM Vol. 2B, MOV—Move to/from Control
/// Registers: #GP on reserved bits, PG without PE, NW without CD, clearing
/// PG in 64-bit mode, setting PG with LME but without PAE). Toggling PG
/// with EFER.LME set (de)activates IA-32e mode: EFER.LMA and the "IA-32e
/// mode guest" entry control follow (SDM §27.3.2.1 checks them against each
/// other).
pub fn write_cr0<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    v: u64,
) -> Result<ExitAction, ExitError> {
    let gp = |vcpu: &mut Vcpu<V, C, P, M>| vcpu.inject(Exception::GeneralProtection, 0);
    if v >> 32 != 0
        || v & !vcpu.cr.cr0_fixed.fixed1 & 0xffff_ffff != 0
        || (v & CR0_PG != 0 && v & CR0_PE == 0)
        || (v & CR0_NW != 0 && v & CR0_CD == 0)
    {
        return gp(vcpu);
    }
    let old = visible_cr0(vcpu)?;
    let mut efer = vcpu.vmcs.read(Guest64::Efer)?;
    let paging_on = old & CR0_PG == 0 && v & CR0_PG != 0;
    let paging_off = old & CR0_PG != 0 && v & CR0_PG == 0;
    if paging_off && vcpu.in_64bit_mode()? {
        return gp(vcpu);
    }
    if paging_on && efer & EFER_LME != 0 && visible_cr4(vcpu)? & CR4_PAE == 0 {
        return gp(vcpu);
    }
    if vcpu.policy.cr_write(0, old, v) == Decision::Deny {
        return vcpu.deny_write(AuditKind::CrPin, 0, None, v);
    }
    let mut entry = None;
    if paging_on && efer & EFER_LME != 0 {
        efer |= EFER_LMA;
        entry = Some(true);
    } else if paging_off && efer & EFER_LMA != 0 {
        efer &= !EFER_LMA;
        entry = Some(false);
    }
    if let Some(ia32e) = entry {
        vcpu.vmcs.write(Guest64::Efer, efer)?;
        let controls = EntryControls::from_bits_retain(vcpu.vmcs.read(Control32::EntryControls)?);
        let controls = if ia32e {
            controls | EntryControls::IA32E_MODE_GUEST
        } else {
            controls - EntryControls::IA32E_MODE_GUEST
        };
        vcpu.vmcs.write(Control32::EntryControls, controls.bits())?;
    }
    let real = vcpu.cr.real_cr0(v);
    vcpu.vmcs.write(GuestNatural::Cr0, real)?;
    vcpu.vmcs.write(ControlNatural::Cr0ReadShadow, v)?;
    if (old ^ v) & (CR0_PG | CR0_WP | CR0_PE) != 0 {
        flush_guest_tlb(vcpu)?;
    }
    vcpu.advance_rip()
}

/// Emulates MOV to CR4 of `v`: #GP for VMXE and SMXE (hidden), for bits the
/// CPU does not support in VMX operation, and for clearing PAE in IA-32e
/// mode; then the policy hook.
pub fn write_cr4<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    v: u64,
) -> Result<ExitAction, ExitError> {
    let supported = vcpu.cr.cr4_fixed.fixed1 & !(CR4_VMXE | CR4_SMXE);
    let lma = vcpu.vmcs.read(Guest64::Efer)? & EFER_LMA != 0;
    if v & !supported != 0 || (lma && v & CR4_PAE == 0) {
        return vcpu.inject(Exception::GeneralProtection, 0);
    }
    let old = visible_cr4(vcpu)?;
    if vcpu.policy.cr_write(4, old, v) == Decision::Deny {
        return vcpu.deny_write(AuditKind::CrPin, 4, None, v);
    }
    vcpu.vmcs.write(GuestNatural::Cr4, vcpu.cr.real_cr4(v))?;
    vcpu.vmcs.write(ControlNatural::Cr4ReadShadow, v)?;
    if (old ^ v) & CR4_PAGING_BITS != 0 {
        flush_guest_tlb(vcpu)?;
    }
    vcpu.advance_rip()
}
