//! The state a redirect to a gate starts the guest in (ABI 1.1,
//! `vcpu::guest::GateEntry`, `hypercall::gates`): the gate's registered
//! stack and CR3, the registering kernel's CS and SS, RFLAGS IF, TF, RF,
//! AC, DF, IOPL and NT clear, DR7 reset, no pending debug exception, no
//! STI or MOV SS blocking, NMIs blocked until the gate's first IRET, the
//! processor active — whatever the caller of SwitchContext left there.

use okernel_abi::policy::RegionKind;

use super::*;
use crate::bits::EFER_NXE;
use crate::memmap::Hpa;
use crate::policy::guest_paging::{USER, XD};
use crate::vcpu::guest::GateEntry;
use crate::vmx::controls::SecondaryProcBased;
use crate::vmx::fields::{Control32, Guest16, Guest32, Guest64, GuestNatural};

const GATE: u64 = TEXT + 0x40;
const STACK: u64 = 0x0077_f000;
/// The caller's RSP: a page the attacker chose (a credential page, say).
const CALLER_RSP: u64 = CRED + 0x800;
/// Every RFLAGS bit the attack cares about, plus ZF and CF, which a gate
/// inherits.
const CALLER_RFLAGS: u64 = 0x2 | 0x1 | 0x40 | GateEntry::CLEARED;
/// The kernel's CS and SS when it registers gates: 64-bit code and data,
/// DPL 0 (VMCS access-rights format).
const KERNEL_CS: (u16, u32) = (0x08, 0xa09b);
const KERNEL_SS: (u16, u32) = (0x10, 0xc093);
/// A caller at CPL 0 in a 32-bit compatibility-mode code segment of its
/// own (a VMCALL at CPL 3 is refused before any switch; the stop path's
/// CPL 3 caller is in `tests/exits_all.rs`).
const CALLER_CS: (u16, u32) = (0x38, 0xc09b);
const CALLER_SS: (u16, u32) = (0x40, 0xc093);

fn set_segments(v: &mut PVcpu, cs: (u16, u32), ss: (u16, u32)) {
    v.vmcs
        .set(Guest16::CsSelector, u64::from(cs.0))
        .set(Guest32::CsAccessRights, u64::from(cs.1))
        .set(Guest16::SsSelector, u64::from(ss.0))
        .set(Guest32::SsAccessRights, u64::from(ss.1));
}

fn segments(v: &PVcpu) -> ((u16, u32), (u16, u32)) {
    (
        (
            v.vmcs.get(Guest16::CsSelector) as u16,
            v.vmcs.get(Guest32::CsAccessRights) as u32,
        ),
        (
            v.vmcs.get(Guest16::SsSelector) as u16,
            v.vmcs.get(Guest32::SsAccessRights) as u32,
        ),
    )
}
/// DR7 with L0/G0 and an execute breakpoint armed.
const CALLER_DR7: u64 = 0x403;
/// BS (single step) and B0 pending.
const CALLER_PENDING: u64 = (1 << 14) | 1;
/// Blocking by STI and by MOV SS, not by NMI (an NMI could be delivered
/// at the gate's first instruction, with the caller's CR3 and GS).
const CALLER_BLOCKING: u64 = 0b0011;

/// Text and page tables locked, a gate at [`GATE`] with `stack`, and
/// the guest in untrusted context 1; returns the gate's id.
pub(super) fn with_gate(stack: u64) -> (PVcpu, u64) {
    let mut v = pvcpu();
    lock_for_gates(&mut v);
    set_segments(&mut v, KERNEL_CS, KERNEL_SS);
    let g = ok(&mut v, Call::RegisterGate, [GATE, stack, 0]);
    ok(&mut v, Call::CreateContext, [0; 3]);
    enter(&mut v, 1);
    (v, g)
}

/// The attacker's state at its VMCALL.
fn arm(v: &mut PVcpu) {
    v.vmcs
        .set(GuestNatural::Rsp, CALLER_RSP)
        .set(GuestNatural::Rflags, CALLER_RFLAGS)
        .set(GuestNatural::Dr7, CALLER_DR7)
        .set(GuestNatural::PendingDebugExceptions, CALLER_PENDING)
        .set(Guest32::InterruptibilityState, CALLER_BLOCKING);
    set_segments(v, CALLER_CS, CALLER_SS);
}

fn assert_sanitised(v: &PVcpu) {
    assert_eq!(rip(v), GATE);
    let rflags = v.vmcs.get(GuestNatural::Rflags);
    assert_eq!(rflags & GateEntry::CLEARED, 0, "IF TF RF AC DF clear");
    assert_eq!(rflags, 0x2 | 0x1 | 0x40, "the rest kept, bit 1 set");
    assert_eq!(
        segments(v),
        (KERNEL_CS, KERNEL_SS),
        "the kernel's CS and SS"
    );
    assert_eq!(v.vmcs.get(Guest32::ActivityState), 0, "active");
    assert_eq!(v.vmcs.get(GuestNatural::Dr7), 0x400, "DR7 reset");
    assert_eq!(v.vmcs.get(GuestNatural::PendingDebugExceptions), 0);
    assert_eq!(
        v.vmcs.get(Guest32::InterruptibilityState),
        0b1000,
        "STI and MOV SS blocking cleared, NMI blocking set"
    );
}

#[test]
fn register_gate_takes_a_canonical_aligned_stack_or_none() {
    let mut v = pvcpu();
    lock_for_gates(&mut v);
    for stack in [1 << 63, 0x0000_8000_0000_0000, STACK + 8, STACK + 1] {
        assert_eq!(
            call(&mut v, Call::RegisterGate, [GATE, stack, 0]),
            Status::InvalidArgument,
            "{stack:#x}"
        );
    }
    assert_eq!(
        v.policy.gates.iter().flatten().count(),
        0,
        "nothing registered"
    );
    let with_stack = ok(&mut v, Call::RegisterGate, [GATE, STACK, 0]);
    assert_eq!(ok(&mut v, Call::RegisterGate, [GATE, STACK, 0]), with_stack);
    let legacy = ok(&mut v, Call::RegisterGate, [GATE, 0, 0]);
    assert_ne!(legacy, with_stack, "another stack, another gate");
    let high = ok(&mut v, Call::RegisterGate, [GATE, 0xffff_8000_0000_0000, 0]);
    assert_ne!(high, legacy);
}

#[test]
fn a_gate_starts_on_its_stack_with_flags_debug_state_and_blocking_sanitised() {
    let (mut v, g) = with_gate(STACK);
    arm(&mut v);
    assert_eq!(
        call(&mut v, Call::SwitchContext, [0, g, 0]),
        Status::Success
    );
    assert_eq!(v.policy.current, 0);
    assert_eq!(v.vmcs.get(GuestNatural::Rsp), STACK, "the gate's stack");
    assert_sanitised(&v);
    // A lateral switch is a redirect too.
    ok(&mut v, Call::CreateContext, [0; 3]);
    enter(&mut v, 1);
    arm(&mut v);
    assert_eq!(
        call(&mut v, Call::SwitchContext, [2, g, 0]),
        Status::Success
    );
    assert_eq!(v.vmcs.get(GuestNatural::Rsp), STACK);
    assert_sanitised(&v);
}

#[test]
fn a_gate_without_a_stack_keeps_the_callers_rsp_but_not_its_flags() {
    let (mut v, g) = with_gate(0);
    arm(&mut v);
    assert_eq!(
        call(&mut v, Call::SwitchContext, [0, g, 0]),
        Status::Success
    );
    assert_eq!(v.vmcs.get(GuestNatural::Rsp), CALLER_RSP, "ABI 1.0 gate");
    assert_sanitised(&v);
}

#[test]
fn refused_switches_and_switches_into_a_restricted_view_leave_the_state_alone() {
    let (mut v, g) = with_gate(STACK);
    arm(&mut v);
    assert_eq!(
        call(&mut v, Call::SwitchContext, [0, g + 1, 0]),
        Status::NotFound
    );
    assert_eq!(v.vmcs.get(GuestNatural::Rsp), CALLER_RSP);
    // The refused VMCALL completed: RF is cleared as after any completed
    // instruction (SDM Vol. 3A §19.3.1.1; `exit::rip`), the rest is kept.
    assert_eq!(
        v.vmcs.get(GuestNatural::Rflags),
        CALLER_RFLAGS & !crate::bits::RFLAGS_RF
    );
    assert_eq!(v.vmcs.get(GuestNatural::Dr7), CALLER_DR7);
    assert_eq!(
        v.vmcs.get(GuestNatural::PendingDebugExceptions),
        CALLER_PENDING
    );
    // The trusted kernel entering an untrusted context keeps running
    // after its VMCALL, as itself.
    let mut v = pvcpu();
    ok(&mut v, Call::CreateContext, [0; 3]);
    arm(&mut v);
    ok(&mut v, Call::SwitchContext, [1, 0, 0]);
    assert_eq!(v.vmcs.get(GuestNatural::Rsp), CALLER_RSP);
    assert_eq!(v.vmcs.get(GuestNatural::Dr7), CALLER_DR7);
}

#[test]
fn gate_rflags_keep_bit_1_and_clear_only_the_eight_flags() {
    assert_eq!(GateEntry::rflags(0), 0x2);
    assert_eq!(GateEntry::rflags(u64::MAX), !GateEntry::CLEARED);
    // TF, IF, DF, IOPL, NT, RF, VM, AC.
    assert_eq!(GateEntry::CLEARED, 0x7_7700);
}

#[test]
fn gate_interruptibility_blocks_nmis_and_clears_only_sti_and_mov_ss() {
    for caller in [0, 0b0011, 0b1011, 0b0100, 0b1111] {
        let gate = GateEntry::interruptibility(caller);
        assert_eq!(gate & GateEntry::NMI_BLOCKING, GateEntry::NMI_BLOCKING);
        assert_eq!(gate & GateEntry::STI_MOV_SS, 0, "{caller:#b}");
        assert_eq!(gate & 0b0100, caller & 0b0100, "blocking by SMI kept");
    }
}

/// The guest's page tables (the PML4 page of the policy tests): a locked
/// page-table region, so a gate may name them as its CR3.
fn with_cr3_gate() -> (PVcpu, u64) {
    let mut v = pvcpu();
    lock_for_gates(&mut v);
    set_segments(&mut v, KERNEL_CS, KERNEL_SS);
    let g = ok(&mut v, Call::RegisterGate, [GATE, STACK, PML4]);
    ok(&mut v, Call::CreateContext, [0; 3]);
    enter(&mut v, 1);
    (v, g)
}

#[test]
fn a_gate_with_page_tables_starts_on_them_and_drops_the_callers_translations() {
    let (mut v, g) = with_cr3_gate();
    v.vmcs.set(
        Control32::SecondaryProcessorBasedControls,
        u64::from(SecondaryProcBased::ENABLE_VPID.bits()),
    );
    // The caller's own page tables, where nothing maps the gate: the gate
    // is still found through its registered CR3.
    v.vmcs.set(GuestNatural::Cr3, DATA);
    arm(&mut v);
    let flushes = v.cpu.invvpids;
    assert_eq!(
        call(&mut v, Call::SwitchContext, [0, g, 0]),
        Status::Success
    );
    assert_eq!(v.vmcs.get(GuestNatural::Cr3), PML4, "the gate's CR3");
    assert_eq!(v.cpu.invvpids, flushes + 1, "INVVPID single context");
    assert_sanitised(&v);
}

#[test]
fn a_gate_cr3_must_be_locked_page_tables_without_stray_bits() {
    let mut v = pvcpu();
    lock(&mut v, TEXT, 0x4000, RegionKind::Text);
    // Not (yet) a locked page-table region: the caller could change it.
    assert_eq!(
        call(&mut v, Call::RegisterGate, [GATE, STACK, PML4]),
        Status::InvalidArgument
    );
    lock(&mut v, PML4, 0x4000, RegionKind::PageTable);
    for cr3 in [PML4 | 1, PML4 | 0x800, PML4 | (1 << 63), DATA] {
        assert_eq!(
            call(&mut v, Call::RegisterGate, [GATE, STACK, cr3]),
            Status::InvalidArgument,
            "{cr3:#x}"
        );
    }
    let with = ok(&mut v, Call::RegisterGate, [GATE, STACK, PML4 | 0x18]);
    let without = ok(&mut v, Call::RegisterGate, [GATE, STACK, 0]);
    assert_ne!(with, without, "another CR3, another gate");
    assert_eq!(
        ok(&mut v, Call::RegisterGate, [GATE, STACK, PML4 | 0x18]),
        with
    );
}

#[test]
fn a_gate_whose_address_no_longer_translates_through_its_cr3_is_refused() {
    let (mut v, g) = with_cr3_gate();
    // The trusted kernel unmaps the gate's 2 MiB page from those tables:
    // the switch is refused.
    let pde = PD + 8 * (TEXT >> 21);
    v.memory.phys().write(Hpa(pde), &0u64.to_le_bytes());
    assert_eq!(
        call(&mut v, Call::SwitchContext, [0, g, 0]),
        Status::Refused
    );
}

#[test]
fn a_gate_whose_page_became_user_or_execute_disable_is_refused_not_entered() {
    // Defence in depth: UpdatePageTable refuses these flag changes from
    // an untrusted context (`entry_flags.rs`), but the trusted kernel may
    // make them: a gate page made user (SMEP) or execute-disable would
    // fault at the gate's first instruction, in the trusted view, with
    // the caller's registers.
    for flag in [USER, XD] {
        let (mut v, g) = with_gate(STACK);
        v.vmcs
            .set(Guest64::Efer, v.vmcs.get(Guest64::Efer) | EFER_NXE);
        // U must be set at every level to make a user page; XD at any
        // level.
        for entry in [PML4, PDPT, PD + 8 * (TEXT >> 21)] {
            let mut e = [0u8; 8];
            v.memory.phys().copy(Hpa(entry), &mut e);
            let e = u64::from_le_bytes(e) | flag;
            v.memory.phys().write(Hpa(entry), &e.to_le_bytes());
        }
        arm(&mut v);
        assert_eq!(
            call(&mut v, Call::SwitchContext, [0, g, 0]),
            Status::Refused,
            "{flag:#x}"
        );
        assert_eq!(v.policy.current, 1, "still in the caller's context");
    }
}
