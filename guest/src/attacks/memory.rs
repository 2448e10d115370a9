//! Memory attacks through the vulnerability-emulation call of
//! `container-a`: writes to every protected kind of kernel memory,
//! another container's protected page, the monitor's memory, and code run
//! from a data page. Each write's effect is checked by reading back (or
//! using) what it changed, and undone through the same path when it took.

use super::{Obs, Shown, Suite};
use crate::arch::instr::{self, MARKER};
use crate::arch::traps::probe;
use crate::arch::{cpu, tables};
use crate::kernel::{self, DATA_PAGE, syscall};
use guest::attack::Mode;
use guest::layout::USER_SECRET;
use guest::tasks::{CONTAINER_A, CONTAINER_B, secret_pattern, sys, user_op, vuln};

/// A read-only datum of the kernel (in `.rodata`).
static RO_VICTIM: u64 = 0x0123_4567_89ab_cdef;

/// Reads a quadword the trusted kernel can see (None when it faults).
pub fn peek(addr: u64) -> Option<u64> {
    probe(instr::read_u64, addr).ok()
}

impl Suite<'_> {
    /// `container-a` writes `value` at `addr`; `took` says whether the
    /// effect is there. Undone (the quadword written back) when it took.
    pub(super) fn vuln_write(&mut self, addr: u64, value: u64, took: impl Fn() -> bool) -> Obs {
        let orig = peek(addr);
        let (r, _) = kernel::vuln(CONTAINER_A, vuln::WRITE, addr, value);
        let done = took();
        if done && let Some(orig) = orig {
            kernel::vuln(CONTAINER_A, vuln::WRITE, addr, orig);
        }
        let effect = if done { "effect present" } else { "no effect" };
        Obs::new(
            !done,
            Some(addr),
            format_args!("write {addr:#x}: {}; {effect}", Shown(r)),
        )
    }

    fn write_readback(&mut self, addr: u64) -> Obs {
        self.vuln_write(addr, MARKER, || peek(addr) == Some(MARKER))
    }
}

fn uid_of_a() -> u64 {
    kernel::run(CONTAINER_A, [sys::GETUID, 0, 0, 0]).result
}

/// Runs the memory attacks.
pub fn run(s: &mut Suite<'_>) {
    let victim = cpu::guest_victim as *const () as u64;
    let patched = || probe(cpu::call_victim, 0) == Ok(cpu::VICTIM_PATCHED_RESULT);
    if probe(cpu::call_victim, 0) != Ok(cpu::VICTIM_RESULT) {
        s.checks.check(
            "victim-text-intact",
            2,
            false,
            format_args!("the victim function is already patched"),
        );
    }
    s.attack("write-text", |s| {
        s.vuln_write(victim, cpu::VICTIM_PATCH, patched)
    });
    s.attack("write-rodata", |s| {
        s.write_readback((&raw const RO_VICTIM) as u64)
    });
    s.attack("exec-data-page", |_| {
        let page = DATA_PAGE.addr();
        let (r, _) = kernel::vuln(CONTAINER_A, vuln::CALL, page, 0);
        let ran = r == Some(Ok(cpu::DATA_CODE_RESULT));
        Obs::new(
            !ran,
            Some(page),
            format_args!("call {page:#x}: {}", Shown(r)),
        )
    });
    let t = tables::addrs();
    s.attack("write-idt", |s| s.write_readback(t.idt + 255 * 16));
    s.attack("write-gdt", |s| s.write_readback(t.gdt_spare));
    s.attack("write-tss", |s| s.write_readback(t.tss_spare));
    s.attack("write-syscall-table", |s| {
        let backdoor = syscall::sys_backdoor as *const () as u64;
        s.vuln_write(syscall::syscall_entry(sys::GETUID), backdoor, || {
            uid_of_a() == 0
        })
    });
    s.attack("write-credentials", |s| {
        // uid 0, gid 0: container-a becomes root.
        s.vuln_write(syscall::cred_addr(CONTAINER_A), 0, || uid_of_a() == 0)
    });
    let l = kernel::layout();
    s.attack("write-page-table", |s| {
        s.write_readback(l.spaces.alias_entry(511))
    });
    super::cpu::alias_attacks(s);
    let secret_b = l.frames[CONTAINER_B].secret;
    s.attack("read-other-protected-page", |_| {
        let (r, _) = kernel::vuln(CONTAINER_A, vuln::READ, secret_b, 0);
        let leaked = r == Some(Ok(secret_pattern(CONTAINER_B)));
        Obs::new(
            !leaked,
            Some(secret_b),
            format_args!("read {secret_b:#x}: {}", Shown(r)),
        )
    });
    s.attack("write-other-protected-page", |_| {
        let (r, _) = kernel::vuln(CONTAINER_A, vuln::WRITE, secret_b, MARKER);
        let seen = kernel::run(CONTAINER_B, [user_op::LOAD, USER_SECRET, 0, 0]).result;
        let took = seen == MARKER;
        if took {
            let p = secret_pattern(CONTAINER_B);
            kernel::run(CONTAINER_B, [user_op::STORE, USER_SECRET, p, 0]);
        }
        Obs::new(
            !took,
            Some(secret_b),
            format_args!(
                "write {secret_b:#x}: {}; container-b reads {seen:#x}",
                Shown(r)
            ),
        )
    });
    s.attack("exception-on-read-only-stack", |_| {
        exception_on_read_only_stack()
    });
    monitor_attacks(s);
}

/// `container-a`'s kernel path points RSP at the top of the credential
/// page (read-only in its view) and raises #UD: the processor pushes the
/// exception frame there. Protected, each push is an EPT violation during
/// event delivery: #GP(EXT) for the #UD, then #DF for the #GP (SDM Vol.
/// 3A Table 6-5), which the kernel takes on its #DF stack (IST) — the
/// monitor used to stop the whole run here. Unprotected the frame lands
/// on the credential page (its top quadwords, unused by the table, are
/// cleared again).
fn exception_on_read_only_stack() -> Obs {
    let page = syscall::cred_addr(0) & !0xfff;
    let top = page + 0x1000;
    // The frame the processor pushes: SS, RSP, RFLAGS, CS, RIP (SDM Vol.
    // 3A §6.14.2), in the top quadwords of the page, which the table
    // leaves zero. (The handler rewrites RIP and RSP in place.)
    let frame = |q: u64| peek(top - q * 8).unwrap_or(0);
    let (r, _) = kernel::vuln(
        CONTAINER_A,
        vuln::CALL,
        cpu::guest_stack_fault as *const () as u64,
        top,
    );
    let cs = frame(4);
    let landed = (1..=5).any(|q| frame(q) != 0);
    if landed {
        // The trusted kernel may write its credential page.
        for q in 1..=7 {
            let _ = probe(instr::write_zero, top - q * 8);
        }
    }
    let vector = match r {
        Some(Err(f)) => f.name(),
        _ => "none",
    };
    Obs::new(
        !landed,
        Some(top - 8),
        format_args!(
            "RSP {top:#x}, ud2: {}; handler saw {vector}; frame on the credential page: {} (CS slot {cs:#x})",
            Shown(r),
            if landed { "yes" } else { "no" }
        ),
    )
}

fn monitor_attacks(s: &mut Suite<'_>) {
    let Some(target) = s.monitor else {
        s.checks.check(
            "monitor-memory-listed",
            1,
            false,
            format_args!("no monitor region in the hand-off map"),
        );
        return;
    };
    s.attack("read-monitor-memory", |_| {
        let (r, _) = kernel::vuln(CONTAINER_A, vuln::READ, target, 0);
        let read = matches!(r, Some(Ok(_)));
        Obs::new(
            !read,
            Some(target),
            format_args!("read {target:#x}: {}", Shown(r)),
        )
    });
    s.attack("write-monitor-memory", |s| {
        if s.mode == Mode::NoMonitor {
            return s.write_readback(target);
        }
        // Under the monitor the trusted view cannot read it either: a
        // write that did not fault is taken as done.
        let (r, _) = kernel::vuln(CONTAINER_A, vuln::WRITE, target, MARKER);
        let wrote = matches!(r, Some(Ok(_)));
        Obs::new(
            !wrote,
            Some(target),
            format_args!("write {target:#x}: {}", Shown(r)),
        )
    });
}
