//! Control-register access exits.

use super::*;
use crate::bits::{
    CR0_NE, CR0_PE, CR0_PG, CR0_TS, CR4_PAE, CR4_PGE, CR4_SMEP, CR4_SMXE, CR4_VMXE, EFER_LMA,
    EFER_LME,
};
use crate::exit::cr::{visible_cr0, visible_cr4};
use crate::policy::audit::AuditKind;
use crate::vmx::controls::EntryControls;
use crate::vmx::fields::{ControlNatural, Guest64};
use crate::vmx::regs::Gpr;

/// MOV CRn, RBX qualification.
const fn mov_to(cr: u64) -> u64 {
    cr | (3 << 8)
}

fn mov_to_cr<P: Policy>(
    v: &mut Vcpu<FakeVmcs, FakeCpu, P>,
    cr: u64,
    value: u64,
) -> Result<ExitAction, ExitError> {
    v.regs.set(Gpr::Rbx, value);
    run(v, ExitReason::CrAccess, mov_to(cr), 3)
}

#[test]
fn masks_own_the_vmx_fixed_bits_and_vmxe() {
    let v = vcpu();
    assert_ne!(v.cr.cr4_mask & CR4_VMXE, 0, "CR4.VMXE owned");
    assert_ne!(v.cr.cr4_mask & CR4_SMXE, 0, "CR4.SMXE owned");
    assert_ne!(v.cr.cr0_mask & CR0_NE, 0, "CR0.NE owned");
    assert_eq!(
        v.cr.cr0_mask & (CR0_PG | CR0_PE),
        0,
        "PE/PG free (unrestricted guest)"
    );
    // The guest reads CR4.VMXE as 0 while the real bit is 1.
    assert_ne!(v.vmcs.get(GuestNatural::Cr4) & CR4_VMXE, 0);
    assert_eq!(visible_cr4(&v).unwrap() & CR4_VMXE, 0);
}

#[test]
fn setting_cr4_vmxe_raises_gp() {
    let mut v = vcpu();
    let cr4 = visible_cr4(&v).unwrap();
    let r = mov_to_cr(&mut v, 4, cr4 | CR4_VMXE);
    assert_injected(&v, r, GP);
    assert_eq!(v.vmcs.get(ControlNatural::Cr4ReadShadow) & CR4_VMXE, 0);
}

#[test]
fn setting_cr4_smxe_or_unsupported_bits_raises_gp() {
    for bit in [14, 30, 40] {
        let mut v = vcpu();
        let cr4 = visible_cr4(&v).unwrap();
        let r = mov_to_cr(&mut v, 4, cr4 | (1 << bit));
        assert_injected(&v, r, GP);
    }
}

#[test]
fn clearing_cr4_pae_in_long_mode_raises_gp() {
    let mut v = vcpu();
    let r = mov_to_cr(&mut v, 4, 0);
    assert_injected(&v, r, GP);
}

#[test]
fn legal_cr4_write_updates_shadow_and_real_register() {
    let mut v = vcpu();
    let new = visible_cr4(&v).unwrap() | CR4_PGE | CR4_SMEP;
    let r = mov_to_cr(&mut v, 4, new);
    assert_advanced(&v, r, 3);
    assert_eq!(v.vmcs.get(ControlNatural::Cr4ReadShadow), new);
    assert_eq!(v.vmcs.get(GuestNatural::Cr4), new | CR4_VMXE);
}

#[test]
fn clearing_cr0_ne_is_virtualised() {
    let mut v = vcpu();
    let new = visible_cr0(&v).unwrap() & !CR0_NE;
    let r = mov_to_cr(&mut v, 0, new);
    assert_advanced(&v, r, 3);
    assert_eq!(visible_cr0(&v).unwrap(), new, "the guest sees NE clear");
    assert_ne!(
        v.vmcs.get(GuestNatural::Cr0) & CR0_NE,
        0,
        "the real NE stays set"
    );
}

#[test]
fn illegal_cr0_values_raise_gp() {
    for value in [
        0x1_8000_0031u64, // reserved high bit
        0x8000_0030,      // PG without PE
        0x2000_0031,      // NW without CD
        0x0000_0031,      // clearing PG in 64-bit mode
    ] {
        let mut v = vcpu();
        let r = mov_to_cr(&mut v, 0, value);
        assert_injected(&v, r, GP);
    }
}

#[test]
fn cr_pinning_hook_denies_and_audits() {
    let mut v = vcpu_with(DenyAll, entry64());
    let new = visible_cr4(&v).unwrap() | CR4_PGE;
    let before = v.vmcs.get(GuestNatural::Cr4);
    let r = mov_to_cr(&mut v, 4, new);
    assert_injected(&v, r, GP);
    assert_eq!(v.vmcs.get(GuestNatural::Cr4), before);
    let rec = v.audit.last().unwrap();
    assert_eq!(rec.kind, AuditKind::CrPin);
    assert_eq!((rec.gpa, rec.qualification), (4, new));
}

#[test]
fn protected_mode_guest_enabling_long_mode_sets_lma_and_ia32e() {
    let mut entry = entry64();
    entry.mode = GuestMode::Protected32;
    let mut v = vcpu_with(BasePolicy, entry);
    assert_eq!(
        v.vmcs.get(Control32::EntryControls) & EntryControls::IA32E_MODE_GUEST.bits() as u64,
        0
    );
    // The guest set CR4.PAE and EFER.LME (neither exits), then writes CR0
    // with PG and NE (NE differs from the shadow, so this one exits).
    v.vmcs
        .set(GuestNatural::Cr4, v.vmcs.get(GuestNatural::Cr4) | CR4_PAE);
    v.vmcs.set(ControlNatural::Cr4ReadShadow, CR4_PAE);
    v.vmcs.set(Guest64::Efer, EFER_LME);
    let r = mov_to_cr(&mut v, 0, 0x8000_0031);
    assert_advanced(&v, r, 3);
    assert_ne!(v.vmcs.get(Guest64::Efer) & EFER_LMA, 0, "EFER.LMA");
    assert_ne!(
        v.vmcs.get(Control32::EntryControls) & EntryControls::IA32E_MODE_GUEST.bits() as u64,
        0
    );
}

#[test]
fn enabling_long_mode_paging_without_pae_raises_gp() {
    let mut entry = entry64();
    entry.mode = GuestMode::Protected32;
    let mut v = vcpu_with(BasePolicy, entry);
    v.vmcs.set(Guest64::Efer, EFER_LME);
    let r = mov_to_cr(&mut v, 0, 0x8000_0031);
    assert_injected(&v, r, GP);
}

#[test]
fn protected_mode_guest_uses_32_bit_operands_and_rip() {
    let mut entry = entry64();
    entry.mode = GuestMode::Protected32;
    let mut v = vcpu_with(BasePolicy, entry);
    // Upper half of RBX is ignored outside 64-bit mode.
    let r = mov_to_cr(&mut v, 0, 0xffff_ffff_0000_0011);
    assert_advanced(&v, r, 3);
    assert_eq!(v.vmcs.get(ControlNatural::Cr0ReadShadow), 0x11);
}

#[test]
fn clts_and_lmsw_go_through_the_cr0_path() {
    let mut v = vcpu();
    let cr0 = visible_cr0(&v).unwrap();
    let r = run(&mut v, ExitReason::CrAccess, 2 << 4, 2);
    assert_advanced(&v, r, 2);
    assert_eq!(visible_cr0(&v).unwrap(), cr0 & !CR0_TS);
    // LMSW cannot clear PE.
    let mut v = vcpu();
    let r = run(&mut v, ExitReason::CrAccess, 3 << 4, 3);
    assert_advanced(&v, r, 3);
    assert_ne!(visible_cr0(&v).unwrap() & CR0_PE, 0);
}

#[test]
fn cr3_accesses_are_handled_and_cr8_gets_ud() {
    let mut v = vcpu();
    v.regs.set(Gpr::R9, 0);
    let r = run(&mut v, ExitReason::CrAccess, 3 | (1 << 4) | (9 << 8), 3);
    assert_advanced(&v, r, 3);
    assert_eq!(v.regs.get(Gpr::R9), 0x10_0000);
    let mut v = vcpu();
    let r = run(&mut v, ExitReason::CrAccess, 8, 3);
    assert_injected(&v, r, UD);
}

#[test]
fn emulated_paging_changes_flush_the_guest_vpid() {
    let mut v = vcpu();
    let new = visible_cr4(&v).unwrap() | CR4_PGE;
    let r = mov_to_cr(&mut v, 4, new);
    assert_advanced(&v, r, 3);
    assert_eq!(v.cpu.invvpids, 1);
    // NE alone does not change translations.
    let mut v = vcpu();
    let new = visible_cr0(&v).unwrap() & !CR0_NE;
    let r = mov_to_cr(&mut v, 0, new);
    assert_advanced(&v, r, 3);
    assert_eq!(v.cpu.invvpids, 0);
}
