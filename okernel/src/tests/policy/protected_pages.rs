//! Protected pages, issue 13 class 4: an untrusted context protects only
//! pages the trusted kernel gave it, and every context has a quota.

use super::*;
use crate::policy::audit::{AuditAction, AuditKind};
use crate::policy::protection::PAGES_PER_CONTEXT;

/// Two untrusted contexts; context 1 was given SECRET.
fn given() -> PVcpu {
    let mut v = pvcpu();
    ok(&mut v, Call::CreateContext, [0; 3]);
    ok(&mut v, Call::CreateContext, [0; 3]);
    ok(&mut v, Call::AllocProtectedPage, [1, SECRET, 0]);
    v
}

#[test]
fn an_untrusted_context_may_not_protect_memory_it_was_not_given() {
    let mut v = given();
    enter(&mut v, 1);
    let before = snapshot(&v);
    // Ordinary RAM (another context's data, the trusted kernel's stack).
    for page in [DATA, 0x60_0000, 0x9_e000] {
        let total = v.audit.total();
        assert_eq!(
            call(&mut v, Call::AllocProtectedPage, [1, page, 0]),
            Status::PermissionDenied,
            "{page:#x}"
        );
        assert_eq!(v.audit.total(), total + 1);
        let rec = v.audit.last().unwrap();
        assert_eq!(
            (
                rec.kind,
                rec.context,
                rec.gpa,
                rec.qualification,
                rec.action
            ),
            (AuditKind::Hypercall, 1, 23, page, AuditAction::Refused)
        );
    }
    assert_eq!(snapshot(&v), before, "no view changed");
    assert_eq!(v.policy.protected_pages().count(), 1);
}

#[test]
fn a_context_may_free_and_protect_again_what_it_was_given() {
    let mut v = given();
    enter(&mut v, 1);
    ok(&mut v, Call::FreeProtectedPage, [1, SECRET, 0]);
    assert!(perms(&v, 2, SECRET).is_some_and(|p| !p.is_empty()));
    ok(&mut v, Call::AllocProtectedPage, [1, SECRET, 0]);
    assert_eq!(
        perms(&v, 2, SECRET),
        Some(ept::Perms::empty()),
        "absent again"
    );
}

#[test]
fn the_trusted_kernel_takes_a_page_back_by_freeing_it() {
    let mut v = given();
    ok(&mut v, Call::FreeProtectedPage, [1, SECRET, 0]);
    enter(&mut v, 1);
    assert_eq!(
        call(&mut v, Call::AllocProtectedPage, [1, SECRET, 0]),
        Status::PermissionDenied
    );
}

#[test]
fn destroying_a_context_drops_what_it_was_given() {
    let mut v = given();
    ok(&mut v, Call::DestroyContext, [1, 0, 0]);
    assert!(v.policy.grants.iter().all(Option::is_none));
}

#[test]
fn one_context_cannot_exhaust_the_table() {
    let mut v = given();
    for i in 1..PAGES_PER_CONTEXT as u64 {
        ok(
            &mut v,
            Call::AllocProtectedPage,
            [1, 0x60_0000 + i * 0x1000, 0],
        );
    }
    assert_eq!(
        call(&mut v, Call::AllocProtectedPage, [1, 0x70_0000, 0]),
        Status::Exhausted,
        "context 1 at its quota"
    );
    // The others still get theirs.
    ok(&mut v, Call::AllocProtectedPage, [2, 0x70_0000, 0]);
    ok(&mut v, Call::AllocProtectedPage, [0, 0x71_0000, 0]);
}
