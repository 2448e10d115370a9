//! The coverage exits leave: keys, edges, the map's life between checks,
//! and unexpected exits.

use std::collections::BTreeSet;

use okernel_abi::fuzz::MonitorVerdict;
use okernel_abi::hypercall::Call;

use super::checks::{baseline, check, fixture, verdict};
use super::*;
use crate::fuzz::coverage::Coverage;
use crate::fuzz::observe::{self, CPUID_KEY, NULL_KEY, Outcome};

fn null(v: &mut PVcpu) {
    assert_eq!(raw_call(v, Call::Null.raw(), 0), Status::Success);
}

fn cpuid(v: &mut PVcpu) {
    v.vmcs.set(GuestNatural::Rip, RIP);
    v.regs.set(Gpr::Rax, 0);
    v.regs.set(Gpr::Rcx, 0);
    let r = run(v, ExitReason::Cpuid, 0, 2);
    assert_advanced(v, r, 2);
}

/// The hits a check reports for what `f` does after a check.
fn hits_of(v: &mut PVcpu, f: impl FnOnce(&mut PVcpu)) -> Vec<u16> {
    check(v);
    f(v);
    let r = check(v);
    r.hit[..r.hits as usize].to_vec()
}

#[test]
fn each_exit_marks_the_edge_from_the_previous_one() {
    let mut v = fixture();
    baseline(&mut v);
    let hits = hits_of(&mut v, |v| {
        null(v);
        cpuid(v);
        null(v);
    });
    let e = |p, k| Coverage::edge(p, k) as u16;
    assert_eq!(
        hits,
        [
            e(0, NULL_KEY),
            e(NULL_KEY, CPUID_KEY),
            e(CPUID_KEY, NULL_KEY)
        ],
        "a check starts the next case from key 0; first-hit order"
    );
    let r = check(&mut v);
    assert_eq!(
        (r.exits, r.hits),
        (0, 0),
        "the check's own exit is not counted"
    );
}

#[test]
fn different_exit_sequences_give_different_hit_sets_and_equal_ones_equal() {
    let mut v = fixture();
    baseline(&mut v);
    let set = |h: Vec<u16>| h.into_iter().collect::<BTreeSet<_>>();
    let a = set(hits_of(&mut v, |v| {
        null(v);
        cpuid(v);
    }));
    let b = set(hits_of(&mut v, |v| {
        cpuid(v);
        null(v);
    }));
    let a2 = set(hits_of(&mut v, |v| {
        null(v);
        cpuid(v);
    }));
    assert_ne!(a, b);
    assert_eq!(a, a2, "the same case gives the same coverage");
    // The policy decision counts: a denied write to text and one to
    // rodata are different exits.
    let text = set(hits_of(&mut v, |v| ept_write(v, TEXT)));
    let rodata = set(hits_of(&mut v, |v| ept_write(v, RODATA)));
    assert_ne!(text, rodata);
    // So does the status: Version succeeds, an unknown call does not.
    let known = set(hits_of(&mut v, |v| {
        raw_call(v, Call::Version.raw(), 0);
    }));
    let unknown = set(hits_of(&mut v, |v| {
        raw_call(v, 3, 0);
    }));
    assert_ne!(known, unknown);
}

#[test]
fn a_check_reports_the_exits_since_the_last_one_and_clears_the_map() {
    let mut v = fixture();
    baseline(&mut v);
    check(&mut v);
    for _ in 0..3 {
        null(&mut v);
    }
    assert_eq!(v.hooks.coverage.exits(), 3);
    let hits = v.hooks.coverage.hits().to_vec();
    let r = check(&mut v);
    assert_eq!(r.exits, 3);
    assert_eq!(r.hit[..r.hits as usize], hits[..]);
    assert_eq!((r.hits, r.dropped), (2, 0), "0→Null and Null→Null");
    assert_eq!(v.hooks.coverage.exits(), 0);
    assert!(v.hooks.coverage.hits().is_empty());
    assert!(hits.iter().all(|&h| !v.hooks.coverage.is_hit(h.into())));
}

#[test]
fn the_fast_and_slow_paths_key_a_null_call_alike() {
    // The slow path's key for the Null call at CPL 0, computed the way
    // `observe::slow` does, is the fast path's constant.
    let key = observe::key(
        ExitReason::Vmcall as u16,
        Outcome::Advance,
        false,
        false,
        observe::vmcall_detail(Call::Null.raw(), Status::Success.raw()),
    );
    assert_eq!(key, NULL_KEY);
    let mut v = fixture();
    let prev = v.hooks.coverage.exits();
    // Version goes the slow way; its edge from Null is keyed by the call.
    null(&mut v);
    raw_call(&mut v, Call::Version.raw(), 0);
    let version = observe::key(
        ExitReason::Vmcall as u16,
        Outcome::Advance,
        false,
        false,
        observe::vmcall_detail(Call::Version.raw(), 0),
    );
    assert!(v.hooks.coverage.is_hit(Coverage::edge(NULL_KEY, version)));
    assert_eq!(v.hooks.coverage.exits(), prev + 2);
}

#[test]
fn memory_classes_of_ept_violations() {
    let mut v = fixture();
    let mut class = |gpa| {
        let PVcpu { policy, memory, .. } = &mut v;
        observe::memory_class(Some(&*policy), Some(&*memory), crate::memmap::Gpa(gpa))
    };
    assert_eq!(class(TEXT + 0x1000), 1);
    assert_eq!(class(RODATA), 2);
    assert_eq!(class(CRED), 6);
    assert_eq!(class(DATA), observe::PLAIN);
    assert_eq!(class(SECRET), observe::OTHER_PROTECTED);
    assert_eq!(class(0x40_0000), observe::MONITOR);
    assert_eq!(class(POOL.start + 0x5000), observe::POOL);
    assert_eq!(class(0x9_f000), observe::NOT_RAM);
    assert_eq!(class(0xfee0_0000), observe::NOT_RAM);
}

#[test]
fn a_survived_exit_no_control_causes_is_an_unexpected_exit() {
    let mut v = fixture();
    baseline(&mut v);
    check(&mut v);
    // MOV to CR3 from RAX: CR3-load exiting is off, yet `exit::cr`
    // handles it.
    v.vmcs.set(GuestNatural::Rip, RIP);
    v.regs.set(Gpr::Rax, PML4);
    let r = run(&mut v, ExitReason::CrAccess, 3, 3);
    assert_advanced(&v, r, 3);
    let r = check(&mut v);
    assert_eq!(
        verdict(&r),
        (MonitorVerdict::UnexpectedExit, ExitReason::CrAccess as u32)
    );
    assert_eq!(r.actual, 1);
    assert_eq!(
        verdict(&check(&mut v)).0,
        MonitorVerdict::Intact,
        "cleared by the check"
    );
    // A MOV to CR4 is expected (CR4 has owned bits).
    v.vmcs.set(GuestNatural::Rip, RIP);
    let cr4 = v
        .vmcs
        .get(crate::vmx::fields::ControlNatural::Cr4ReadShadow);
    v.regs.set(Gpr::Rax, cr4);
    let r = run(&mut v, ExitReason::CrAccess, 4, 3);
    assert_advanced(&v, r, 3);
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::Intact);
}
