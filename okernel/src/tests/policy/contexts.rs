//! Contexts, protected pages, gates and SwitchContext.

use super::*;
use crate::memmap::{Gpa, Hpa};
use crate::policy::audit::{AuditAction, AuditKind};
use crate::vmx::fields::Control64;
use okernel_abi::policy::RegionKind;

#[test]
fn contexts_are_created_up_to_the_limit_then_exhausted() {
    let mut v = pvcpu();
    for id in 1..=8 {
        assert_eq!(ok(&mut v, Call::CreateContext, [0; 3]), id);
        assert!(Views::is_live(&v.memory, id as u16));
    }
    assert_eq!(call(&mut v, Call::CreateContext, [0; 3]), Status::Exhausted);
}

#[test]
fn create_context_without_frames_is_exhausted_and_makes_no_view() {
    let mut v = pvcpu();
    let in_use = v.memory.view().frames().in_use();
    v.memory.view().frames().allow_more(2);
    assert_eq!(call(&mut v, Call::CreateContext, [0; 3]), Status::Exhausted);
    assert!(!Views::is_live(&v.memory, 1));
    assert!(!v.policy.contexts[1]);
    assert_eq!(v.memory.view().frames().in_use(), in_use);
}

#[test]
fn destroy_context_checks_its_argument_and_returns_the_view_and_pages() {
    let mut v = pvcpu();
    let in_use = v.memory.view().frames().in_use();
    ok(&mut v, Call::CreateContext, [0; 3]);
    ok(&mut v, Call::CreateContext, [0; 3]);
    ok(&mut v, Call::AllocProtectedPage, [1, SECRET, 0]);
    v.memory.phys().write(Hpa(SECRET), b"secret");
    for bad in [0, 3, 9, u64::MAX] {
        assert_eq!(
            call(&mut v, Call::DestroyContext, [bad, 0, 0]),
            Status::BadContext
        );
    }
    enter(&mut v, 1);
    assert_eq!(
        call(&mut v, Call::DestroyContext, [1, 0, 0]),
        Status::BadContext,
        "current"
    );
    assert_eq!(
        call(&mut v, Call::DestroyContext, [2, 0, 0]),
        Status::PermissionDenied
    );
    assert!(Views::is_live(&v.memory, 2));
    v.policy.current = 0;
    Views::set_current(&mut v.memory, 0);
    ok(&mut v, Call::DestroyContext, [1, 0, 0]);
    assert!(!Views::is_live(&v.memory, 1) && !v.policy.contexts[1]);
    assert_eq!(
        call(&mut v, Call::DestroyContext, [1, 0, 0]),
        Status::BadContext,
        "dead"
    );
    // Its page: zeroed, back in every view.
    let mut b = [0xffu8; 6];
    v.memory.phys().copy(Hpa(SECRET), &mut b);
    assert_eq!(b, [0; 6]);
    assert_eq!(perms(&v, 0, SECRET), Some(Perms::RWX));
    assert_eq!(perms(&v, 2, SECRET), Some(Perms::RWX));
    ok(&mut v, Call::DestroyContext, [2, 0, 0]);
    assert_eq!(
        v.memory.view().frames().in_use(),
        in_use,
        "every table returned"
    );
}

#[test]
fn a_protected_page_is_mapped_only_in_its_contexts_view() {
    let mut v = pvcpu();
    for _ in 0..3 {
        ok(&mut v, Call::CreateContext, [0; 3]);
    }
    ok(&mut v, Call::AllocProtectedPage, [2, SECRET, 0]);
    assert_eq!(perms(&v, 2, SECRET), Some(Perms::RW));
    for other in [0, 1, 3] {
        assert_eq!(perms(&v, other, SECRET), Some(Perms::NONE), "ctx {other}");
    }
    // A context created later does not see it either.
    ok(&mut v, Call::CreateContext, [0; 3]);
    assert_eq!(perms(&v, 4, SECRET), Some(Perms::NONE));
}

#[test]
fn alloc_protected_page_refuses_each_bad_argument_and_changes_nothing() {
    let mut v = pvcpu();
    ok(&mut v, Call::CreateContext, [0; 3]);
    ok(&mut v, Call::RegisterRegion, [RODATA, 0x1000, 2]);
    ok(&mut v, Call::AllocProtectedPage, [1, SECRET, 0]);
    let before = snapshot(&v);
    let pages = v.policy.pages;
    let cases: [([u64; 2], Status); 8] = [
        ([2, DATA], Status::BadContext),
        ([99, DATA], Status::BadContext),
        ([1, DATA + 0x10], Status::Unaligned),
        ([1, 0x40_0000], Status::MonitorMemory),
        ([1, 0x9_f000], Status::OutOfRam),
        ([1, 0x800_0000], Status::OutOfRam),
        ([1, RODATA], Status::Overlap),
        ([0, SECRET], Status::Overlap),
    ];
    for ([ctx, page], status) in cases {
        assert_eq!(
            call(&mut v, Call::AllocProtectedPage, [ctx, page, 0]),
            status,
            "{ctx} {page:#x}"
        );
    }
    assert_eq!(v.policy.pages, pages);
    assert_eq!(snapshot(&v), before);
}

#[test]
fn the_protected_page_table_fills_up_with_exhausted() {
    use crate::policy::protection::PAGES_PER_CONTEXT;
    // Every context to its quota: 9 x 7 = 63 of the 64 slots.
    let mut v = pvcpu();
    for _ in 0..8 {
        ok(&mut v, Call::CreateContext, [0; 3]);
    }
    let mut page = 0x60_0000;
    for ctx in 0..=8 {
        for _ in 0..PAGES_PER_CONTEXT {
            ok(&mut v, Call::AllocProtectedPage, [ctx, page, 0]);
            page += 0x1000;
        }
    }
    // The last slot: taken by nobody, a context over its quota is refused.
    assert_eq!(
        call(&mut v, Call::AllocProtectedPage, [0, 0x70_0000, 0]),
        Status::Exhausted
    );
    v.policy.pages[63] = Some(crate::policy::protection::ProtectedPage {
        gpa: Gpa(0x71_0000),
        owner: 0,
    });
    ok(&mut v, Call::FreeProtectedPage, [1, 0x60_7000, 0]);
    assert_eq!(
        call(&mut v, Call::AllocProtectedPage, [2, 0x70_0000, 0]),
        Status::Exhausted,
        "context 2 is at its quota"
    );
}

#[test]
fn free_protected_page_zeroes_it_and_only_its_owner_or_the_trusted_context_may() {
    let mut v = pvcpu();
    ok(&mut v, Call::CreateContext, [0; 3]);
    ok(&mut v, Call::CreateContext, [0; 3]);
    ok(&mut v, Call::AllocProtectedPage, [1, SECRET, 0]);
    v.memory.phys().write(Hpa(SECRET + 8), b"key");
    assert_eq!(
        call(&mut v, Call::FreeProtectedPage, [2, SECRET, 0]),
        Status::NotFound
    );
    assert_eq!(
        call(&mut v, Call::FreeProtectedPage, [1, DATA, 0]),
        Status::NotFound
    );
    assert_eq!(
        call(&mut v, Call::FreeProtectedPage, [1, SECRET + 1, 0]),
        Status::Unaligned
    );
    assert_eq!(
        call(&mut v, Call::FreeProtectedPage, [5, SECRET, 0]),
        Status::BadContext
    );
    enter(&mut v, 2);
    assert_eq!(
        call(&mut v, Call::FreeProtectedPage, [1, SECRET, 0]),
        Status::PermissionDenied,
        "another untrusted context"
    );
    assert_eq!(perms(&v, 1, SECRET), Some(Perms::RW));
    v.policy.current = 0;
    Views::set_current(&mut v.memory, 0);
    ok(&mut v, Call::FreeProtectedPage, [1, SECRET, 0]);
    let mut b = [0xffu8; 3];
    v.memory.phys().copy(Hpa(SECRET + 8), &mut b);
    assert_eq!(b, [0; 3]);
    for ctx in 0..=2 {
        assert_eq!(perms(&v, ctx, SECRET), Some(Perms::RWX));
    }
}

const GATE: u64 = TEXT + 0x123;

fn with_gate() -> (PVcpu, u64) {
    let mut v = pvcpu();
    lock_for_gates(&mut v);
    let g = ok(&mut v, Call::RegisterGate, [GATE, 0, 0]);
    ok(&mut v, Call::CreateContext, [0; 3]);
    ok(&mut v, Call::CreateContext, [0; 3]);
    (v, g)
}

#[test]
fn a_gate_walked_through_an_unlocked_table_at_gpa_0_is_refused() {
    // The PDPT moved to guest-physical page 0, outside the locked page
    // tables: the walk to the gate goes through a table the kernel can
    // still rewrite (until session 13 a table at GPA 0 was taken for "no
    // table" and the gate was accepted).
    let mut v = pvcpu();
    let w = |v: &PVcpu, at: u64, e: u64| v.memory.phys().write(Hpa(at), &e.to_le_bytes());
    w(&v, 0, PD | 3);
    w(&v, PML4, 3);
    lock(&mut v, PML4, 0x4000, RegionKind::PageTable);
    lock(&mut v, TEXT, 0x4000, RegionKind::Text);
    assert_eq!(
        call(&mut v, Call::RegisterGate, [GATE, 0, 0]),
        Status::InvalidArgument
    );
    // The same tables with the PDPT back in the locked region: accepted.
    w(&v, PML4, PDPT | 3);
    ok(&mut v, Call::RegisterGate, [GATE, 0, 0]);
}

#[test]
fn register_gate_needs_an_address_in_locked_text() {
    let mut v = pvcpu();
    assert_eq!(
        call(&mut v, Call::RegisterGate, [GATE, 0, 0]),
        Status::InvalidArgument,
        "its page tables not locked"
    );
    lock(&mut v, PML4, 0x4000, RegionKind::PageTable);
    assert_eq!(
        call(&mut v, Call::RegisterGate, [GATE, 0, 0]),
        Status::NotFound,
        "text not locked"
    );
    lock(&mut v, TEXT, 0x4000, RegionKind::Text);
    assert_eq!(
        call(&mut v, Call::RegisterGate, [DATA, 0, 0]),
        Status::NotFound
    );
    assert_eq!(
        call(&mut v, Call::RegisterGate, [0x4000_0000_0000, 0, 0]),
        Status::InvalidArgument,
        "not mapped"
    );
    assert_eq!(
        call(&mut v, Call::RegisterGate, [1 << 63, 0, 0]),
        Status::InvalidArgument,
        "not canonical"
    );
    let g = ok(&mut v, Call::RegisterGate, [GATE, 0, 0]);
    assert_eq!(
        ok(&mut v, Call::RegisterGate, [GATE, 0, 0]),
        g,
        "same gate, same id"
    );
    assert_eq!(v.policy.gates.iter().flatten().count(), 1);
}

#[test]
fn switching_to_a_more_restricted_view_resumes_after_the_vmcall() {
    let (mut v, _) = with_gate();
    ok(&mut v, Call::SwitchContext, [2, 0, 0]);
    assert_eq!(v.policy.current, 2);
    assert_eq!(v.memory.current_slot(), 2);
    assert_eq!(Some(v.vmcs.get(Control64::Eptp)), Views::eptp(&v.memory, 2));
    assert_eq!(v.audit.total(), 0, "nothing to audit");
}

#[test]
fn switching_back_to_the_trusted_view_resumes_at_the_gate_never_after_the_vmcall() {
    let (mut v, g) = with_gate();
    enter(&mut v, 1);
    assert_eq!(
        call(&mut v, Call::SwitchContext, [0, g, 0]),
        Status::Success
    );
    assert_eq!(rip(&v), GATE, "at the gate");
    assert_eq!(v.regs.rdi(), 1, "RDI = the context left");
    assert_eq!(v.policy.current, 0);
    assert_eq!(Some(v.vmcs.get(Control64::Eptp)), Views::eptp(&v.memory, 0));
    let rec = *v.audit.last().unwrap();
    assert_eq!(
        (rec.kind, rec.action, rec.context),
        (AuditKind::ContextSwitch, AuditAction::Gate, 1)
    );
    // A lateral switch (untrusted to untrusted) goes through the gate too.
    enter(&mut v, 1);
    assert_eq!(
        call(&mut v, Call::SwitchContext, [2, g, 0]),
        Status::Success
    );
    assert_eq!((rip(&v), v.policy.current), (GATE, 2));
}

#[test]
fn refused_switches_are_audited_and_change_nothing() {
    let (mut v, g) = with_gate();
    enter(&mut v, 1);
    let eptp = v.vmcs.get(Control64::Eptp);
    for (args, status) in [
        ([0, g + 1, 0], Status::NotFound),
        ([0, u64::MAX, 0], Status::NotFound),
        ([5, g, 0], Status::BadContext),
        ([u64::MAX, g, 0], Status::BadContext),
    ] {
        let n = v.audit.total();
        assert_eq!(call(&mut v, Call::SwitchContext, args), status, "{args:x?}");
        assert_eq!(
            rip(&v),
            RIP + 3,
            "resumes after the VMCALL, in its own view"
        );
        assert_eq!((v.policy.current, v.vmcs.get(Control64::Eptp)), (1, eptp));
        let rec = *v.audit.last().unwrap();
        assert_eq!(v.audit.total(), n + 1);
        assert_eq!(
            (rec.kind, rec.action),
            (AuditKind::ContextSwitch, AuditAction::Refused)
        );
    }
    // The gate's address no longer leads to the page it was registered
    // with (the guest's page tables changed): refused.
    v.memory
        .phys()
        .write(Hpa(PD + 8), &((0x60_0000u64) | 0x83).to_le_bytes());
    assert_eq!(
        call(&mut v, Call::SwitchContext, [0, g, 0]),
        Status::Refused
    );
    assert_eq!(v.policy.current, 1);
}

#[test]
fn only_the_trusted_context_ends_the_run() {
    let (mut v, g) = with_gate();
    enter(&mut v, 1);
    let pass = u64::from(okernel_abi::result::Outcome::Pass.code());
    assert_eq!(
        call(&mut v, Call::Exit, [pass, 0, 0]),
        Status::PermissionDenied
    );
    let rec = *v.audit.last().unwrap();
    assert_eq!(
        (rec.kind, rec.action, rec.context),
        (AuditKind::Hypercall, AuditAction::Refused, 1)
    );
    assert_eq!(v.policy.current, 1, "still running, in its context");
    // Back in the trusted context (through the gate), Exit ends the run.
    assert_eq!(
        call(&mut v, Call::SwitchContext, [0, g, 0]),
        Status::Success
    );
    v.regs.set(Gpr::Rax, Call::Exit.raw());
    v.regs.set(Gpr::Rdi, pass);
    v.regs.set(Gpr::Rdx, 0);
    assert_eq!(
        run(&mut v, ExitReason::Vmcall, 0, 3),
        Ok(ExitAction::Stop(okernel_abi::result::Outcome::Pass))
    );
}
