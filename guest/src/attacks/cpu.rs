//! Attacks on processor state and on the monitor's interfaces from
//! `container-a`'s kernel path: LIDT, CR0/CR4 pins, locked MSRs, the
//! page-table remap attacks (through `UpdatePageTable` and then a direct
//! entry write), VMXON, the return to the trusted context, and policy
//! calls against another context.

use super::memory::peek;
use super::{Obs, Shown, Suite};
use crate::arch::instr::{self, hypercall, hypercall_raw};
use crate::arch::traps::probe;
use crate::arch::{cpu, user};
use crate::kernel::{self, FAKE_IDT};
use core::sync::atomic::{AtomicU64, Ordering};
use guest::layout::alias_va;
use guest::paging::{ACCESSED, DIRTY, PRESENT, WRITABLE};
use guest::tasks::{CONTAINER_A, CONTAINER_B, secret_pattern, vuln};
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::result::Outcome;

/// The hypercall [`hypercall_gadget`] makes: number and four arguments.
static GADGET: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

/// Gadget: issues the hypercall in [`GADGET`]; returns the raw status.
extern "C" fn hypercall_gadget(_: u64) -> u64 {
    let a = |i: usize| GADGET[i].load(Ordering::SeqCst);
    // Raw status in RAX: read it back from the reply.
    match hypercall_raw(a(0), [a(1), a(2), a(3), a(4)]).status {
        Ok(s) => s.raw(),
        Err(raw) => raw,
    }
}

/// `container-a`'s kernel path makes hypercall `call` with `args`.
pub(super) fn hypercall_from_a(
    call: Call,
    args: [u64; 4],
) -> Option<Result<u64, crate::arch::traps::Fault>> {
    GADGET[0].store(call.raw(), Ordering::SeqCst);
    for (g, v) in GADGET[1..].iter().zip(args) {
        g.store(v, Ordering::SeqCst);
    }
    kernel::vuln(
        CONTAINER_A,
        vuln::CALL,
        hypercall_gadget as *const () as u64,
        0,
    )
    .0
}

pub(super) fn status_name(raw: Option<Result<u64, crate::arch::traps::Fault>>) -> &'static str {
    match raw {
        Some(Ok(v)) => Status::from_raw(v).map_or("undefined status", Status::name),
        Some(Err(_)) => "faulted",
        None => "no result",
    }
}

/// `container-a` calls `gadget(arg)`; blocked unless it returns `hit`.
fn gadget(gadget: extern "C" fn(u64) -> u64, arg: u64, took: impl Fn(u64) -> bool) -> Obs {
    let (r, _) = kernel::vuln(CONTAINER_A, vuln::CALL, gadget as *const () as u64, arg);
    let done = matches!(r, Some(Ok(v)) if took(v));
    Obs::new(!done, None, format_args!("read back {}", Shown(r)))
}

/// Runs the processor and interface attacks.
pub fn run(s: &mut Suite<'_>) {
    let fake = FAKE_IDT.addr();
    s.attack("lidt-fake-idt", |_| {
        gadget(cpu::lidt_fake, fake, |base| base == fake)
    });
    s.attack("clear-cr0-wp", |_| {
        gadget(cpu::clear_cr0, cpu::CR0_WP, |cr0| cr0 & cpu::CR0_WP == 0)
    });
    for (name, bit) in [
        ("clear-cr4-smep", cpu::CR4_SMEP),
        ("clear-cr4-smap", cpu::CR4_SMAP),
    ] {
        if s.cr4_bits & bit == 0 {
            log::warn!("attacks: {name} skipped: the CPU does not offer the bit");
            continue;
        }
        s.attack(name, |_| gadget(cpu::clear_cr4, bit, |cr4| cr4 & bit == 0));
    }
    // A canonical kernel-text address other than the MSRs' values.
    let evil = cpu::call_victim as *const () as u64;
    for (name, msr) in [
        ("write-lstar", cpu::IA32_LSTAR),
        ("write-sysenter-eip", cpu::IA32_SYSENTER_EIP),
    ] {
        cpu::MSR_VALUE.store(evil, Ordering::SeqCst);
        s.attack(name, |_| {
            gadget(cpu::write_msr, u64::from(msr), |v| v == evil)
        });
    }
    // The xAPIC page moved over monitor memory (the processor would send
    // the monitor's own accesses there to the APIC), or over container-b's
    // protected page (its accesses there would reach the APIC, and the
    // page's EPT rights no longer decide them).
    let targets = [
        ("relocate-apic-over-monitor", s.monitor.map(|m| m & !0xfff)),
        (
            "relocate-apic-over-protected-page",
            Some(kernel::layout().frames[CONTAINER_B].secret & !0xfff),
        ),
    ];
    for (name, page) in targets {
        let Some(page) = page else { continue };
        let base = cpu::rdmsr(cpu::IA32_APIC_BASE);
        cpu::MSR_VALUE.store(page | (base & 0xfff), Ordering::SeqCst);
        s.attack(name, |_| {
            let at = |v: u64| v & cpu::APIC_BASE_ADDRESS == page;
            gadget(cpu::write_msr, u64::from(cpu::IA32_APIC_BASE), at)
        });
    }
    // Default deny (issue 13): an MSR okernel's table does not list —
    // the microcode-update trigger — is refused and audited; a hidden one
    // (SMM monitor control, which exists only with VMX) faults.
    static UPDATE: [u8; 64] = [0; 64];
    cpu::MSR_VALUE.store(UPDATE.as_ptr() as u64, Ordering::SeqCst);
    s.attack("write-unlisted-msr", |_| {
        gadget(
            cpu::write_msr_blind,
            u64::from(cpu::IA32_BIOS_UPDT_TRIG),
            |v| v == 1,
        )
    });
    s.attack("read-hidden-msr", |_| {
        gadget(
            cpu::read_msr_probe,
            u64::from(cpu::IA32_SMM_MONITOR_CTL),
            |v| v == 1,
        )
    });
    // Port I/O (issue 13): A20 off makes the platform mask address bit
    // 20 of every physical access — under a monitor, its own and the EPT
    // walks too (in Bochs the monitor triple-faulted).
    // An MSR the guest shares with the monitor (VMX does not switch it):
    // the MTRRs set the memory types of the monitor's own accesses.
    let uc = cpu::rdmsr(cpu::IA32_MTRR_DEF_TYPE) & !0x7;
    cpu::MSR_VALUE.store(uc, Ordering::SeqCst);
    s.attack("write-mtrr", |_| {
        gadget(cpu::write_msr, u64::from(cpu::IA32_MTRR_DEF_TYPE), |v| {
            v == uc
        })
    });
    // The time-stamp counter: the monitor's time base too. Judged by
    // RDTSC around the write; where the platform has no IA32_TSC MSR (QEMU
    // TCG reads it as 0 and ignores writes) the row cannot show anything
    // and is not run, with the evidence.
    let tsc_msr = cpu::rdmsr(cpu::IA32_TSC);
    if tsc_msr == 0 {
        log::warn!(
            "attacks: write-tsc skipped: RDMSR of IA32_TSC reads 0 (the platform does not implement it)"
        );
    } else {
        s.attack("write-tsc", |_| {
            gadget(cpu::write_tsc, 0, |moved| moved >= cpu::TSC_JUMP)
        });
    }
    s.attack("disable-a20", |_| {
        gadget(cpu::a20_off, 0, |back| back & 2 == 0)
    });
    // The same with a string instruction (OUTSB), which the I/O exit
    // handler refuses to every port (#GP) rather than emulating.
    s.attack("disable-a20-string-io", |_| {
        gadget(cpu::a20_off_outsb, 0, |back| back & 2 == 0)
    });
    // The machine's reset commands: the reset control register (RST_CPU
    // with a hard reset) and the keyboard controller's pulse-reset. A
    // reset under okernel would end the run, so reaching the check at all
    // is the proof (and its audit record).
    for (name, port, value) in [
        ("reset-via-cf9", 0xcf9u64, 0x06u64),
        ("reset-via-keyboard-controller", 0x64, 0xfe),
    ] {
        s.attack(name, |_| {
            gadget(cpu::outb_reset, port | value << 16, |_| false)
        });
    }
    s.attack("vmxon", |_| {
        let (r, _) = kernel::vuln(CONTAINER_A, vuln::CALL, instr::vmxon as *const () as u64, 0);
        let ran = matches!(r, Some(Ok(_)));
        Obs::new(!ran, None, format_args!("{}", Shown(r)))
    });
    s.attack("switch-to-trusted-keep-running", |_| {
        let f = user::guest_switch_keep_running as *const () as u64;
        let (r, done) = kernel::vuln(CONTAINER_A, vuln::CALL, f, kernel::gate());
        let kept = user::kept_running();
        let at_gate = done.result == user::GATE_MAGIC;
        Obs::new(
            !kept,
            None,
            format_args!(
                "kept running {kept}, resumed at gate {at_gate}, call {}",
                Shown(r)
            ),
        )
    });
    s.attack("gate-single-step", |_| {
        // TF set at the VMCALL: without a clean gate entry the single-step
        // trap (#DB) hits in the trusted view before or right after the
        // gate's first instruction, its frame pushed on the caller's stack.
        let _ = user::take_gate_entry();
        let f = user::guest_switch_single_step as *const () as u64;
        let (r, done) = kernel::vuln(CONTAINER_A, vuln::CALL, f, kernel::gate());
        let (rsp, rflags) = user::take_gate_entry();
        let trapped = matches!(r, Some(Err(e)) if e.vector == 1);
        let at_gate = done.result == user::GATE_MAGIC;
        let clean = at_gate && rsp == user::gate_stack_top() && rflags & user::RFLAGS_TF == 0;
        let trap_rsp = match r {
            Some(Err(e)) => e.rsp,
            _ => 0,
        };
        Obs::new(
            clean && !trapped,
            None,
            format_args!(
                "#DB delivered {trapped} (frame on {trap_rsp:#x}); gate ran {at_gate} on RSP {rsp:#x} (its stack {:#x}) with RFLAGS {rflags:#x}; call {}",
                user::gate_stack_top(),
                Shown(r)
            ),
        )
    });
    s.attack("free-other-context-page", |_| {
        let (ctx_b, secret_b) = (
            kernel::context(CONTAINER_B),
            kernel::layout().frames[CONTAINER_B].secret,
        );
        let r = hypercall_from_a(Call::FreeProtectedPage, [ctx_b, secret_b, 0, 0]);
        let freed = r == Some(Ok(Status::Success.raw()));
        if freed {
            hypercall(Call::AllocProtectedPage, [ctx_b, secret_b, 0, 0]);
        }
        Obs::new(
            !freed,
            None,
            format_args!("FreeProtectedPage(ctx {ctx_b}): {}", status_name(r)),
        )
    });
    s.attack("untrusted-exit", |_| untrusted_exit());
    // Last of this file: it leaves the APIC in x2APIC mode.
    s.attack("x2apic-init-to-itself", |_| {
        let (r, _) = kernel::vuln(
            CONTAINER_A,
            vuln::CALL,
            cpu::x2apic_init as *const () as u64,
            0,
        );
        let sent = matches!(r, Some(Ok(1)));
        let mut obs = Obs::new(
            !sent,
            Some(u64::from(cpu::X2APIC_ICR)),
            format_args!("WRMSR x2APIC ICR (INIT to itself): {}", Shown(r)),
        );
        // x2APIC mode not offered: nothing tested.
        obs.counts = !matches!(r, Some(Ok(0)));
        obs
    });
}

/// The reason the forged `Exit` gives.
static FORGED_REASON: &str = "all checks passed (forged by container-a)";

/// `container-a`'s kernel path ends the whole run with a verdict of its
/// own: `Exit(pass)`. Before that, the same call with an undefined
/// outcome code shows the request is judged like the trusted kernel's
/// (`InvalidArgument`), so a refusal of the valid one is for its context.
fn untrusted_exit() -> Obs {
    let reason = [FORGED_REASON.as_ptr() as u64, FORGED_REASON.len() as u64];
    let malformed = hypercall_from_a(Call::Exit, [0x99, reason[0], reason[1], 0]);
    let pass = u64::from(Outcome::Pass.code());
    let r = hypercall_from_a(Call::Exit, [pass, reason[0], reason[1], 0]);
    // Still here: the run did not end.
    let mut obs = Obs::new(
        r != Some(Ok(Status::Success.raw())),
        None,
        format_args!(
            "Exit(pass) from container-a: {}; with an undefined outcome: {}",
            status_name(r),
            status_name(malformed)
        ),
    );
    obs.counts = r == Some(Ok(Status::PermissionDenied.raw()))
        && malformed == Some(Ok(Status::InvalidArgument.raw()));
    obs
}

/// Points alias slot `slot` at `frame`, writable, from `container-a`: first
/// through `UpdatePageTable`, then, if that did not take, by writing the
/// entry. Returns the steps' outcomes and whether the entry holds it.
fn make_alias(
    slot: usize,
    frame: u64,
) -> (
    &'static str,
    Option<Result<u64, crate::arch::traps::Fault>>,
    bool,
) {
    let entry = kernel::layout().spaces.alias_entry(slot);
    set_entry_from_a(entry, frame | PRESENT | WRITABLE | ACCESSED | DIRTY)
}

/// Writes `value` to page-table entry `entry` from `container-a`: first
/// through `UpdatePageTable`, then, if that did not take, with the
/// vulnerability's write. Returns the steps' outcomes and whether the
/// entry holds `value`.
pub(super) fn set_entry_from_a(
    entry: u64,
    value: u64,
) -> (
    &'static str,
    Option<Result<u64, crate::arch::traps::Fault>>,
    bool,
) {
    let update = status_name(hypercall_from_a(
        Call::UpdatePageTable,
        [entry, value, 0, 0],
    ));
    let mut write = None;
    if peek(entry) != Some(value) {
        write = kernel::vuln(CONTAINER_A, vuln::WRITE, entry, value).0;
    }
    (update, write, peek(entry) == Some(value))
}

/// Clears alias slot `slot` from the trusted kernel (a plain store in the
/// trusted view; `UpdatePageTable` if that is refused).
pub(super) fn clear_alias(slot: usize) {
    let entry = kernel::layout().spaces.alias_entry(slot);
    if peek(entry) != Some(0) {
        extern "C" fn zero(addr: u64) -> u64 {
            // SAFETY: an alias-window entry; clearing it only unmaps.
            unsafe { (addr as *mut u64).write_volatile(0) };
            0
        }
        if probe(zero, entry).is_err() {
            hypercall(Call::UpdatePageTable, [entry, 0, 0, 0]);
        }
    }
    cpu::invlpg(alias_va(slot));
}

/// The remap attacks: kernel text and another context's protected frame
/// mapped writable at an alias address.
pub fn alias_attacks(s: &mut Suite<'_>) {
    let victim = cpu::guest_victim as *const () as u64;
    s.attack("remap-text-writable-alias", |_| {
        let (update, write, mapped) = make_alias(2, victim & !0xfff);
        let va = alias_va(2) + (victim & 0xfff);
        let mut via = None;
        let mut patched = false;
        if mapped {
            let orig = peek(victim).unwrap_or(0);
            via = kernel::vuln(CONTAINER_A, vuln::WRITE, va, cpu::VICTIM_PATCH).0;
            patched = probe(cpu::call_victim, 0) == Ok(cpu::VICTIM_PATCHED_RESULT);
            if patched {
                kernel::vuln(CONTAINER_A, vuln::WRITE, va, orig);
            }
        }
        clear_alias(2);
        Obs::new(
            !patched,
            None,
            format_args!(
                "update: {update}; pte write: {}; alias write: {}; text patched {patched}",
                Shown(write),
                Shown(via)
            ),
        )
    });
    s.attack("map-protected-frame-writable", |_| {
        let secret_b = kernel::layout().frames[CONTAINER_B].secret;
        let (update, write, mapped) = make_alias(3, secret_b);
        let mut via = None;
        if mapped {
            via = kernel::vuln(CONTAINER_A, vuln::READ, alias_va(3), 0).0;
        }
        clear_alias(3);
        let leaked = via == Some(Ok(secret_pattern(CONTAINER_B)));
        Obs::new(
            !leaked,
            None,
            format_args!(
                "update: {update}; pte write: {}; alias read: {}",
                Shown(write),
                Shown(via)
            ),
        )
    });
}
