//! The state a redirect to a gate starts the guest in (ABI 1.1,
//! `exit::guest::GateEntry`): the gate's registered stack, RFLAGS IF, TF,
//! RF, AC and DF clear, DR7 reset, no pending debug exception, no STI or
//! MOV SS blocking, NMIs blocked until the gate's first IRET — whatever
//! the caller of SwitchContext left there.

use okernel_abi::policy::RegionKind;

use super::*;
use crate::exit::guest::GateEntry;
use crate::vmx::fields::{Guest32, GuestNatural};

const GATE: u64 = TEXT + 0x40;
const STACK: u64 = 0x0077_f000;
/// The caller's RSP: a page the attacker chose (a credential page, say).
const CALLER_RSP: u64 = CRED + 0x800;
/// Every RFLAGS bit the attack cares about, plus ZF, CF and NT, which a
/// gate inherits.
const CALLER_RFLAGS: u64 = 0x2 | 0x1 | 0x40 | (1 << 14) | GateEntry::CLEARED;
/// DR7 with L0/G0 and an execute breakpoint armed.
const CALLER_DR7: u64 = 0x403;
/// BS (single step) and B0 pending.
const CALLER_PENDING: u64 = (1 << 14) | 1;
/// Blocking by STI and by MOV SS, not by NMI (an NMI could be delivered
/// at the gate's first instruction, with the caller's CR3 and GS).
const CALLER_BLOCKING: u64 = 0b0011;

fn with_gate(stack: u64) -> (PVcpu, u64) {
    let mut v = pvcpu();
    lock(&mut v, TEXT, 0x4000, RegionKind::Text);
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
}

fn assert_sanitised(v: &PVcpu) {
    assert_eq!(rip(v), GATE);
    let rflags = v.vmcs.get(GuestNatural::Rflags);
    assert_eq!(rflags & GateEntry::CLEARED, 0, "IF TF RF AC DF clear");
    assert_eq!(
        rflags,
        0x2 | 0x1 | 0x40 | (1 << 14),
        "the rest kept, bit 1 set"
    );
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
    lock(&mut v, TEXT, 0x4000, RegionKind::Text);
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
        CALLER_RFLAGS & !GateEntry::RF
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
fn gate_rflags_keep_bit_1_and_clear_only_the_five_flags() {
    assert_eq!(GateEntry::rflags(0), 0x2);
    assert_eq!(GateEntry::rflags(u64::MAX), !GateEntry::CLEARED);
    assert_eq!(GateEntry::CLEARED, 0x5_0700);
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
