//! Legitimate work that must go on in every mode, protected or not: the
//! tasks' system calls, their writes to their own data, each container's
//! access to its own protected page, a validated page-table update, the
//! trusted kernel's update of the credential table, and (protected) the
//! return from every untrusted request through the gate.

use super::Suite;
use super::memory::peek;
use crate::kernel::{self, syscall};
use guest::attack::Mode;
use guest::layout::{USER_DATA, USER_SECRET};
use guest::tasks::Cred;
use guest::tasks::{
    CONTAINER_A, CONTAINER_B, HOST, TASKS, data_pattern, secret_pattern, sys, user_op,
};

fn getuid(s: &mut Suite<'_>, check: &str) {
    for (t, spec) in TASKS.iter().enumerate() {
        let d = kernel::run(t, [sys::GETUID, 0, 0, 0]);
        let want = u64::from(spec.cred.uid);
        s.checks.check(
            check,
            0,
            d.result == want,
            format_args!("{}: uid {} (table {want}); {d:?}", spec.name, d.result),
        );
    }
}

/// Runs the legitimate operations (before the attacks).
pub fn run(s: &mut Suite<'_>) {
    getuid(s, "legit-syscall-getuid");
    if s.mode == Mode::Protected {
        let ctx = kernel::context(CONTAINER_A);
        let d = kernel::run(CONTAINER_A, [sys::GETUID, 0, 0, 0]);
        s.checks.check(
            "legit-return-to-trusted-at-gate",
            9,
            ctx != 0 && d.switch_in.is_none() && d.fell_through.is_none(),
            format_args!(
                "context {ctx}: switch in {:?}, switch back returned after VMCALL: {:?}",
                d.switch_in, d.fell_through
            ),
        );
    }
    for (t, check) in [
        (HOST, "legit-host-data-write"),
        (CONTAINER_A, "legit-container-data-write"),
    ] {
        let v = 0x600d_0000 | t as u64;
        let d = kernel::run(t, [user_op::STORE, USER_DATA + 8, v, 0]);
        let frame = kernel::layout().frames[t].data;
        let seen = peek(frame + 8);
        s.checks.check(
            check,
            0,
            d.result == v && seen == Some(v),
            format_args!(
                "{}: wrote {v:#x}, task read {:#x}, kernel reads {seen:x?}",
                TASKS[t].name, d.result
            ),
        );
    }
    for t in [CONTAINER_A, CONTAINER_B] {
        let p = secret_pattern(t);
        let w = kernel::run(t, [user_op::STORE, USER_SECRET, p, 0]).result;
        let r = kernel::run(t, [user_op::LOAD, USER_SECRET, 0, 0]).result;
        s.checks.check(
            "legit-own-protected-page",
            6,
            w == p && r == p,
            format_args!("{}: stored {p:#x}, read {w:#x} then {r:#x}", TASKS[t].name),
        );
    }
    let data = kernel::layout().frames[CONTAINER_A].data;
    let d = kernel::run(CONTAINER_A, [sys::MAP_OWN, 1, data, 0]);
    s.checks.check(
        "legit-page-table-update",
        7,
        d.result == data_pattern(CONTAINER_A),
        format_args!(
            "container-a maps its data page at alias 1: read {:#x}; {d:?}",
            d.result
        ),
    );
    trusted_updates_credentials(s);
}

/// The trusted kernel changes container-b's gid and back (credentials are
/// read-only only in untrusted views).
fn trusted_updates_credentials(s: &mut Suite<'_>) {
    let addr = syscall::cred_addr(CONTAINER_B) as *mut Cred;
    extern "C" fn set_gid(v: u64) -> u64 {
        let addr = syscall::cred_addr(CONTAINER_B) as *mut Cred;
        // SAFETY: container-b's entry of the credential table, written by
        // the trusted kernel (under a probe: a denial comes back).
        unsafe { (&raw mut (*addr).gid).write_volatile(v as u32) };
        0
    }
    let orig = TASKS[CONTAINER_B].cred.gid;
    let w = crate::arch::traps::probe(set_gid, 4242);
    // SAFETY: reading the entry just written.
    let seen = unsafe { (&raw const (*addr).gid).read_volatile() };
    let back = crate::arch::traps::probe(set_gid, u64::from(orig));
    s.checks.check(
        "legit-trusted-updates-credentials",
        3,
        w.is_ok() && seen == 4242 && back.is_ok(),
        format_args!("setgid 4242: {w:?}, reads {seen}; back: {back:?}"),
    );
}

/// Checks after the attacks that the host still works.
pub fn after_attacks(s: &mut Suite<'_>) {
    getuid(s, "legit-syscall-getuid-after-attacks");
}
