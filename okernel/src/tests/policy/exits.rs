//! CR pins, MSR locks and the descriptor-table lock: the calls and the
//! exits they make the guest take.

use super::*;
use crate::bits::{
    CR0_AM, CR0_MP, CR0_PG, CR0_WP, CR3_LAM_U48, CR3_LAM_U57, CR4_LA57, CR4_LAM_SUP, CR4_SMEP,
    CR4_VMXE, EFER_LMA, EFER_NXE,
};
use crate::exit::cr::visible_cr0;
use crate::memmap::{Gpa, Hpa};
use crate::msrs::{IA32_EFER, IA32_FS_BASE, IA32_LSTAR, IA32_S_CET, IA32_SYSENTER_EIP, IA32_TSC};
use crate::policy::audit::{AuditAction, AuditKind};
use crate::vmx::controls::SecondaryProcBased;
use crate::vmx::fields::{ControlNatural, Guest16, Guest32, Guest64, ReadOnly32, ReadOnlyNatural};

#[test]
fn pin_cr_accepts_only_pinnable_bits_that_are_set_now() {
    let mut v = pvcpu();
    let mask = v.vmcs.get(ControlNatural::Cr0GuestHostMask);
    for (args, status) in [
        ([3, CR0_WP, 0], Status::InvalidArgument),
        ([0, 0, 0], Status::InvalidArgument),
        ([0, CR0_MP, 0], Status::Refused),
        ([4, CR4_VMXE, 0], Status::Refused),
        ([4, CR4_SMEP, 0], Status::InvalidArgument),
    ] {
        assert_eq!(call(&mut v, Call::PinCr, args), status, "{args:x?}");
    }
    assert_eq!(v.vmcs.get(ControlNatural::Cr0GuestHostMask), mask);
    assert_eq!((v.policy.cr0_pinned, v.policy.cr4_pinned), (0, 0));
    ok(&mut v, Call::PinCr, [0, CR0_WP | CR0_PG, 0]);
    assert_eq!(v.policy.cr0_pinned, CR0_WP | CR0_PG);
    let mask = v.vmcs.get(ControlNatural::Cr0GuestHostMask);
    assert_eq!(
        mask & (CR0_WP | CR0_PG),
        CR0_WP | CR0_PG,
        "writes of pinned bits exit"
    );
    assert_eq!(v.cr.cr0_mask, mask);
    assert_eq!(
        visible_cr0(&v).unwrap() & CR0_WP,
        CR0_WP,
        "the guest still sees WP"
    );
    assert_eq!(call(&mut v, Call::PinCr, [0, CR0_WP, 0]), Status::Locked);
}

fn mov_to_cr(v: &mut PVcpu, cr: u64, value: u64) -> Result<ExitAction, ExitError> {
    v.vmcs.set(GuestNatural::Rip, RIP);
    v.regs.set(Gpr::Rax, value);
    // MOV to CRn from RAX (qualification: CR number, access type 0, GPR 0).
    run(v, ExitReason::CrAccess, cr, 3)
}

#[test]
fn clearing_a_pinned_bit_is_denied_audited_and_faults() {
    let mut v = pvcpu();
    let cr4 = v.vmcs.get(ControlNatural::Cr4ReadShadow) | CR4_SMEP;
    assert_injected_none(mov_to_cr(&mut v, 4, cr4), &v);
    ok(&mut v, Call::PinCr, [4, CR4_SMEP, 0]);
    ok(&mut v, Call::PinCr, [0, CR0_WP, 0]);
    let cr0 = visible_cr0(&v).unwrap();
    let r = mov_to_cr(&mut v, 0, cr0 & !CR0_WP);
    assert_injected(&v, r, GP);
    let rec = *v.audit.last().unwrap();
    assert_eq!(
        (rec.kind, rec.gpa, rec.qualification),
        (AuditKind::CrPin, 0, cr0 & !CR0_WP)
    );
    assert_eq!(rec.action, AuditAction::InjectGp);
    assert_eq!(visible_cr0(&v).unwrap() & CR0_WP, CR0_WP, "WP still set");
    let r = mov_to_cr(&mut v, 4, cr4 & !CR4_SMEP);
    assert_injected(&v, r, GP);
    assert_eq!(v.audit.total(), 2);
    // Writes that keep the pinned bits go through.
    v.vmcs.set(Control32::EntryInterruptionInfo, 0);
    assert_injected_none(mov_to_cr(&mut v, 0, cr0 | CR0_AM), &v);
}

fn assert_injected_none(r: Result<ExitAction, ExitError>, v: &PVcpu) {
    assert_advanced(v, r, 3);
}

#[test]
fn lock_msr_validates_and_intercepts_writes() {
    let mut v = pvcpu();
    v.cpu.set_msr(IA32_LSTAR, 0xffff_8000_0000_1000);
    for (msr, status) in [
        (u64::from(IA32_TSC), Status::Refused),
        (IA32_FS_BASE.into(), Status::Refused),
        (IA32_S_CET.into(), Status::Refused), // no CET on this CPU
        (1 << 32 | u64::from(IA32_LSTAR), Status::InvalidArgument),
    ] {
        assert_eq!(call(&mut v, Call::LockMsr, [msr, 0, 0]), status, "{msr:#x}");
    }
    assert!(
        !v.policy
            .msr_bitmap
            .as_mut()
            .unwrap()
            .write_exits(IA32_LSTAR)
    );
    ok(&mut v, Call::LockMsr, [IA32_LSTAR.into(), 0, 0]);
    assert!(
        v.policy
            .msr_bitmap
            .as_mut()
            .unwrap()
            .write_exits(IA32_LSTAR)
    );
    assert_eq!(v.policy.locked_msr(IA32_LSTAR), Some(0xffff_8000_0000_1000));
    assert_eq!(
        call(&mut v, Call::LockMsr, [IA32_LSTAR.into(), 0, 0]),
        Status::Locked
    );
    // SYSENTER_EIP is locked at the VMCS guest field's value.
    v.vmcs.set(GuestNatural::SysenterEip, 0x1234);
    ok(&mut v, Call::LockMsr, [IA32_SYSENTER_EIP.into(), 0, 0]);
    assert_eq!(v.policy.locked_msr(IA32_SYSENTER_EIP), Some(0x1234));
}

fn wrmsr(v: &mut PVcpu, msr: u64, value: u64) -> Result<ExitAction, ExitError> {
    v.vmcs.set(GuestNatural::Rip, RIP);
    v.regs.set(Gpr::Rcx, msr);
    v.regs.set(Gpr::Rax, value & 0xffff_ffff);
    v.regs.set(Gpr::Rdx, value >> 32);
    run(v, ExitReason::Wrmsr, 0, 2)
}

#[test]
fn writing_a_locked_msr_is_denied_and_its_own_value_is_a_no_op() {
    let mut v = pvcpu();
    v.cpu.set_msr(IA32_LSTAR, 0xffff_8000_0000_1000);
    ok(&mut v, Call::LockMsr, [IA32_LSTAR.into(), 0, 0]);
    let writes = v.cpu.msr_writes;
    let r = wrmsr(&mut v, IA32_LSTAR.into(), 0xffff_8000_dead_0000);
    assert_injected(&v, r, GP);
    let rec = *v.audit.last().unwrap();
    assert_eq!(
        (rec.kind, rec.gpa, rec.qualification),
        (
            AuditKind::MsrLock,
            u64::from(IA32_LSTAR),
            0xffff_8000_dead_0000
        )
    );
    assert_eq!(v.cpu.read_msr_for_tests(IA32_LSTAR), 0xffff_8000_0000_1000);
    v.vmcs.set(Control32::EntryInterruptionInfo, 0);
    let r = wrmsr(&mut v, IA32_LSTAR.into(), 0xffff_8000_0000_1000);
    assert_advanced(&v, r, 2);
    assert_eq!(v.cpu.msr_writes, writes, "nothing written");
    assert_eq!(v.audit.total(), 1);
    // EFER: LMA is the processor's, not compared.
    let efer = v.vmcs.get(Guest64::Efer);
    ok(&mut v, Call::LockMsr, [IA32_EFER.into(), 0, 0]);
    let r = wrmsr(&mut v, IA32_EFER.into(), efer & !EFER_LMA);
    assert_advanced(&v, r, 2);
    let r = wrmsr(&mut v, IA32_EFER.into(), efer & !EFER_NXE);
    assert_injected(&v, r, GP);
}

#[test]
fn lock_descriptor_tables_turns_on_descriptor_table_exiting_once() {
    let mut v = pvcpu_with(PolicyCaps {
        descriptor_table_exiting: false,
        ..ALL
    });
    assert_eq!(
        call(&mut v, Call::LockDescriptorTables, [0; 3]),
        Status::Refused
    );
    let mut v = pvcpu();
    ok(&mut v, Call::LockDescriptorTables, [0; 3]);
    let s = v.vmcs.get(Control32::SecondaryProcessorBasedControls) as u32;
    assert!(
        SecondaryProcBased::from_bits_retain(s)
            .contains(SecondaryProcBased::DESCRIPTOR_TABLE_EXITING)
    );
    assert_eq!(
        call(&mut v, Call::LockDescriptorTables, [0; 3]),
        Status::Locked
    );
}

/// A descriptor-table exit: reason, instruction information,
/// displacement.
fn dt_exit(
    v: &mut PVcpu,
    reason: ExitReason,
    info: u32,
    disp: u64,
) -> Result<ExitAction, ExitError> {
    v.vmcs.set(GuestNatural::Rip, RIP);
    v.vmcs.set(Control32::EntryInterruptionInfo, 0);
    synth(v, reason as u32, disp, 3);
    v.vmcs.set(ReadOnly32::ExitInstructionInfo, info.into());
    handle_exit(v)
}

/// 64-bit address size, DS, base = RBX, no index.
const MEM_RBX: u32 = (2 << 7) | (3 << 15) | (1 << 22) | (3 << 23);

#[test]
fn loads_are_refused_and_audited() {
    let mut v = pvcpu();
    ok(&mut v, Call::LockDescriptorTables, [0; 3]);
    for (reason, identity) in [
        (ExitReason::GdtrIdtrAccess, 2),
        (ExitReason::GdtrIdtrAccess, 3),
        (ExitReason::LdtrTrAccess, 2),
        (ExitReason::LdtrTrAccess, 3),
    ] {
        let info = MEM_RBX | (identity << 28);
        let r = dt_exit(&mut v, reason, info, 0);
        assert_injected(&v, r, GP);
        let rec = *v.audit.last().unwrap();
        assert_eq!(
            (rec.kind, rec.gpa, rec.qualification),
            (AuditKind::DescriptorTable, reason as u64, info.into())
        );
    }
    assert_eq!(v.audit.total(), 4);
}

#[test]
fn stores_are_emulated_through_the_guest_page_tables() {
    let mut v = pvcpu();
    v.vmcs
        .set(GuestNatural::GdtrBase, 0xffff_8000_0001_2000)
        .set(Guest32::GdtrLimit, 0x3f)
        .set(Guest16::TrSelector, 0x28);
    v.regs.set(Gpr::Rbx, DATA);
    // SGDT [rbx + 0x10]: 10 bytes.
    let r = dt_exit(&mut v, ExitReason::GdtrIdtrAccess, MEM_RBX, 0x10);
    assert_advanced(&v, r, 3);
    let mut b = [0u8; 10];
    v.memory.phys().copy(Hpa(DATA + 0x10), &mut b);
    assert_eq!(b[..2], [0x3f, 0]);
    assert_eq!(
        u64::from_le_bytes(b[2..].try_into().unwrap()),
        0xffff_8000_0001_2000
    );
    // STR to R9 (register form).
    let r = dt_exit(
        &mut v,
        ExitReason::LdtrTrAccess,
        (1 << 28) | (1 << 10) | (9 << 3),
        0,
    );
    assert_advanced(&v, r, 3);
    assert_eq!(v.regs.get(Gpr::R9), 0x28);
    // RIP-relative: base and index invalid, the qualification is the address.
    let r = dt_exit(
        &mut v,
        ExitReason::GdtrIdtrAccess,
        (1 << 28) | (2 << 7) | (3 << 15) | (1 << 22) | (1 << 27),
        DATA + 0x40,
    );
    assert_advanced(&v, r, 3);
    assert_eq!(v.audit.total(), 0);
}

#[test]
fn a_store_into_read_only_memory_is_denied_like_an_ept_violation() {
    let mut v = pvcpu();
    lock(
        &mut v,
        RODATA,
        0x1000,
        okernel_abi::policy::RegionKind::Rodata,
    );
    v.regs.set(Gpr::Rbx, RODATA);
    let r = dt_exit(&mut v, ExitReason::GdtrIdtrAccess, MEM_RBX, 0);
    assert_injected(&v, r, GP);
    let rec = *v.audit.last().unwrap();
    assert_eq!(
        (rec.kind, rec.gpa, rec.gva),
        (AuditKind::EptViolation, RODATA, Some(RODATA))
    );
    // Unmapped in the guest's page tables: the #PF the processor raises
    // (error code W; CR2 = the address), nothing audited.
    v.regs.set(Gpr::Rbx, 0x4000_0000_0000);
    v.vmcs.set(Control32::EntryInterruptionInfo, 0);
    let r = dt_exit(&mut v, ExitReason::GdtrIdtrAccess, MEM_RBX, 0);
    assert_injected(&v, r, PF);
    assert_eq!(v.vmcs.get(Control32::EntryExceptionErrorCode), 0b010);
    assert_eq!(v.cpu.cr2, 0x4000_0000_0000);
    assert_eq!(v.audit.total(), 1);
    // Mapped read-only (the page table's first entry, with CR0.WP): #PF
    // with P set.
    let pte = PT;
    v.memory
        .phys()
        .write(Hpa(pte), &(0x60_0000u64 | 1).to_le_bytes());
    v.regs.set(Gpr::Rbx, 0x60_0000);
    v.vmcs.set(Control32::EntryInterruptionInfo, 0);
    let r = dt_exit(&mut v, ExitReason::GdtrIdtrAccess, MEM_RBX, 0);
    assert_injected(&v, r, PF);
    assert_eq!(v.vmcs.get(Control32::EntryExceptionErrorCode), 0b011);
    assert_eq!(v.cpu.cr2, 0x60_0000);
    // Not canonical: #GP.
    v.regs.set(Gpr::Rbx, 0x8000_0000_0000);
    v.vmcs.set(Control32::EntryInterruptionInfo, 0);
    let r = dt_exit(&mut v, ExitReason::GdtrIdtrAccess, MEM_RBX, 0);
    assert_injected(&v, r, GP);
    assert_eq!(v.audit.total(), 1);
    // The exit-qualification field the handler read is the displacement.
    assert_eq!(v.vmcs.get(ReadOnlyNatural::ExitQualification), 0);
}

/// The 8-byte value at guest-physical `at`.
fn entry_at(v: &PVcpu, at: u64) -> u64 {
    let mut b = [0u8; 8];
    v.memory.phys().copy(Hpa(at), &mut b);
    u64::from_le_bytes(b)
}

/// Sets `bits` in the 8-byte entry at `at`.
fn set_bits(v: &PVcpu, at: u64, bits: u64) {
    let e = entry_at(v, at) | bits;
    v.memory.phys().write(Hpa(at), &e.to_le_bytes());
}

/// Entry flags A and D.
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
/// The last 6 bytes of the first page [`PT`] maps, and the first 4 of the
/// second: an SGDT there (10 bytes) crosses the page boundary.
const ACROSS: u64 = 0x60_0ffa;

#[test]
fn an_emulated_store_sets_the_accessed_and_dirty_flags_the_processor_would() {
    // The fixture's entries have neither A nor D: the processor would set
    // A in every entry of both walks and D in both leaves (SDM Vol. 3A
    // §4.8) — and nothing else.
    let mut v = pvcpu();
    v.vmcs
        .set(GuestNatural::GdtrBase, 0xffff_8000_0001_2000)
        .set(Guest32::GdtrLimit, 0x3f);
    let before =
        |v: &PVcpu| [PML4, PDPT, PD, PD + 8 * 3, PT, PT + 8, PT + 16].map(|at| entry_at(v, at));
    let old = before(&v);
    v.regs.set(Gpr::Rbx, ACROSS);
    let r = dt_exit(&mut v, ExitReason::GdtrIdtrAccess, MEM_RBX, 0);
    assert_advanced(&v, r, 3);
    let mut b = [0u8; 10];
    v.memory.phys().copy(Hpa(ACROSS), &mut b);
    assert_eq!(b[..2], [0x3f, 0]);
    assert_eq!(
        u64::from_le_bytes(b[2..].try_into().unwrap()),
        0xffff_8000_0001_2000
    );
    let new = before(&v);
    assert_eq!(new[0], old[0] | A, "PML4 entry: A");
    assert_eq!(new[1], old[1] | A, "PDPT entry: A");
    assert_eq!(new[2], old[2], "PD entry of another walk untouched");
    assert_eq!(new[3], old[3] | A, "PD entry linking the PT: A, no D");
    assert_eq!(new[4], old[4] | A | D, "first page's PTE: A and D");
    assert_eq!(new[5], old[5] | A | D, "second page's PTE: A and D");
    assert_eq!(new[6], old[6], "the next PTE untouched");
    // A 2 MiB page: D in the PD entry, its leaf.
    v.regs.set(Gpr::Rbx, DATA);
    let r = dt_exit(&mut v, ExitReason::GdtrIdtrAccess, MEM_RBX, 0);
    assert_advanced(&v, r, 3);
    assert_eq!(entry_at(&v, PD + 8 * (DATA >> 21)) & (A | D), A | D);
    assert_eq!(v.audit.total(), 0);
}

#[test]
fn a_flag_the_view_will_not_let_the_store_set_is_denied_like_an_ept_violation() {
    // The page table is read-only in the view (locked): the processor's
    // own write of the second PTE's D flag would be an EPT violation, so
    // the emulated store is denied as one, at that entry, and nothing is
    // written — not the first page's bytes either.
    let mut v = pvcpu();
    v.vmcs
        .set(GuestNatural::GdtrBase, 0xffff_8000_0001_2000)
        .set(Guest32::GdtrLimit, 0x3f);
    for at in [PML4, PDPT, PD + 8 * 3] {
        set_bits(&v, at, A);
    }
    set_bits(&v, PT, A | D);
    set_bits(&v, PT + 8, A);
    lock(&mut v, PT, 0x1000, okernel_abi::policy::RegionKind::Rodata);
    v.regs.set(Gpr::Rbx, ACROSS);
    let r = dt_exit(&mut v, ExitReason::GdtrIdtrAccess, MEM_RBX, 0);
    assert_injected(&v, r, GP);
    let rec = *v.audit.last().unwrap();
    assert_eq!(
        (rec.kind, rec.gpa, rec.gva),
        (AuditKind::EptViolation, PT + 8, Some(ACROSS))
    );
    let mut b = [0u8; 10];
    v.memory.phys().copy(Hpa(ACROSS), &mut b);
    assert_eq!(b, [0; 10], "nothing stored");
    assert_eq!(entry_at(&v, PT + 8) & (A | D), A, "no flag written");
    // With D already set there is nothing to write in the table: stored.
    set_bits(&v, PT + 8, D);
    v.vmcs.set(Control32::EntryInterruptionInfo, 0);
    let r = dt_exit(&mut v, ExitReason::GdtrIdtrAccess, MEM_RBX, 0);
    assert_advanced(&v, r, 3);
    v.memory.phys().copy(Hpa(ACROSS), &mut b);
    assert_eq!(b[..2], [0x3f, 0]);
    assert_eq!(v.audit.total(), 1);
}

#[test]
fn a_reserved_bit_in_the_walk_is_the_processors_page_fault() {
    // XD with EFER.NXE clear and PS in a PML4 entry are reserved (SDM Vol.
    // 3A §4.5): #PF with P, W and RSVD (and U at CPL 3), CR2 = the
    // address, nothing stored, nothing audited (§4.7).
    let mut v = pvcpu();
    let efer = v.vmcs.get(Guest64::Efer);
    v.vmcs.set(Guest64::Efer, efer & !EFER_NXE);
    set_bits(&v, PT, 1 << 63);
    v.regs.set(Gpr::Rbx, 0x60_0000);
    let r = dt_exit(&mut v, ExitReason::GdtrIdtrAccess, MEM_RBX, 0);
    assert_injected(&v, r, PF);
    assert_eq!(v.vmcs.get(Control32::EntryExceptionErrorCode), 0b1011);
    assert_eq!(v.cpu.cr2, 0x60_0000);
    // At CPL 3 (the page is a supervisor page, but the reserved bit comes
    // first): U too.
    let ss = v.vmcs.get(Guest32::SsAccessRights);
    v.vmcs.set(Guest32::SsAccessRights, ss | (3 << 5));
    let r = dt_exit(&mut v, ExitReason::GdtrIdtrAccess, MEM_RBX, 0);
    assert_injected(&v, r, PF);
    assert_eq!(v.vmcs.get(Control32::EntryExceptionErrorCode), 0b1111);
    v.vmcs.set(Guest32::SsAccessRights, ss);
    // PS in the PML4 entry, NXE set again: every address.
    v.vmcs.set(Guest64::Efer, efer);
    set_bits(&v, PML4, 1 << 7);
    v.regs.set(Gpr::Rbx, DATA);
    let r = dt_exit(&mut v, ExitReason::GdtrIdtrAccess, MEM_RBX, 0);
    assert_injected(&v, r, PF);
    assert_eq!(v.vmcs.get(Control32::EntryExceptionErrorCode), 0b1011);
    assert_eq!(v.cpu.cr2, DATA);
    let mut b = [0u8; 10];
    for at in [0x60_0000, DATA] {
        v.memory.phys().copy(Hpa(at), &mut b);
        assert_eq!(b, [0; 10], "nothing stored at {at:#x}");
    }
    assert_eq!(v.audit.total(), 0);
}

#[test]
fn lam_masks_the_metadata_bits_of_a_pointer() {
    use crate::exit::descriptor::lam_masked;
    let tagged = 0x7f00_0000_0000_1000;
    assert_eq!(lam_masked(tagged, 0, 0), tagged, "no LAM: the pointer");
    assert_eq!(
        lam_masked(tagged, CR3_LAM_U48, 0),
        0x1000,
        "LAM48: bits 62:48 from bit 47"
    );
    assert_eq!(
        lam_masked(tagged, CR3_LAM_U57, 0),
        tagged,
        "LAM57: bit 56 set, so are 62:57"
    );
    assert_eq!(
        lam_masked(0x3e00_4000_0000_0000, CR3_LAM_U57, 0),
        0x0000_4000_0000_0000
    );
    // Bit 47 set: the metadata bits become ones, bit 63 stays clear, so
    // the address is not canonical (the processor's modified check).
    assert_eq!(
        lam_masked(0x0000_8000_0000_0000, CR3_LAM_U48, 0),
        0x7fff_8000_0000_0000
    );
    // A supervisor pointer needs CR4.LAM_SUP; LA57 picks LAM57.
    let kernel = 0xff12_ffff_8000_0000;
    assert_eq!(lam_masked(kernel, CR3_LAM_U48 | CR3_LAM_U57, 0), kernel);
    assert_eq!(lam_masked(kernel, 0, CR4_LAM_SUP), 0xffff_ffff_8000_0000);
    assert_eq!(
        lam_masked(0x8112_0000_0000_0000, 0, CR4_LAM_SUP | CR4_LA57),
        0xff12_0000_0000_0000
    );
}

#[test]
fn an_emulated_store_through_a_lam_tagged_pointer_lands_where_lam_says() {
    let mut v = pvcpu();
    ok(&mut v, Call::LockDescriptorTables, [0; 3]);
    v.vmcs
        .set(GuestNatural::GdtrBase, 0xffff_8000_0001_2000)
        .set(Guest32::GdtrLimit, 0x3f);
    // A tagged pointer to DATA: without LAM it is not canonical (#GP).
    v.regs.set(Gpr::Rbx, DATA | (0x5a << 48));
    let r = dt_exit(&mut v, ExitReason::GdtrIdtrAccess, MEM_RBX, 0x10);
    assert_injected(&v, r, GP);
    // With CR3.LAM_U48 the store goes to DATA + 0x10.
    let cr3 = v.vmcs.get(GuestNatural::Cr3);
    v.vmcs.set(GuestNatural::Cr3, cr3 | CR3_LAM_U48);
    v.vmcs.set(Control32::EntryInterruptionInfo, 0);
    let r = dt_exit(&mut v, ExitReason::GdtrIdtrAccess, MEM_RBX, 0x10);
    assert_advanced(&v, r, 3);
    let mut b = [0u8; 10];
    v.memory.phys().copy(Hpa(DATA + 0x10), &mut b);
    assert_eq!(b[..2], [0x3f, 0]);
}

#[test]
fn a_view_that_led_into_monitor_memory_is_not_read_through() {
    // Every view maps guest RAM to the same host-physical address; were
    // one to lead a RAM page into the monitor's image, the host-physical
    // check of `ViewMemory` refuses the access before `hw::phys` runs.
    use crate::mem::MemoryError;
    let v = vcpu();
    let view = build_base_view(Heap::default(), v.ept, &MAP, &MONITOR, POOL).unwrap();
    let mut memory = ViewMemory::new(view, &MAP, &MONITOR, POOL, SparsePhys::default()).unwrap();
    let monitor = MONITOR[0].start;
    memory
        .view_mut()
        .map(
            ept::Gpa(DATA),
            ept::Hpa(monitor),
            0x1000,
            ept::Attributes::RAM,
        )
        .unwrap();
    let mut b = [0u8; 8];
    assert_eq!(
        memory.read(Gpa(DATA), &mut b),
        Err(MemoryError::Monitor(monitor))
    );
    assert_eq!(
        memory.read(Gpa(DATA + 0x1000), &mut b),
        Ok(()),
        "the next page"
    );
}
