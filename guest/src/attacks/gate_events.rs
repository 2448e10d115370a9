//! Issue 13's events at a gate: what `container-a`'s kernel path can set
//! up before its `SwitchContext(0, gate)` so that the processor acts in
//! the trusted view before the gate's first instruction — a maskable
//! interrupt it made pending, and debug breakpoints — beside
//! `gate-single-step` (`attacks/cpu.rs`). okernel starts a gate in the
//! gate entry state (`docs/policy.md`, "Gates and switches"): IF clear,
//! DR7 reset, no pending debug exception, the gate's own stack.
//!
//! Unprotected there is no context to leave: the call returns after its
//! `VMCALL` and the event is delivered there, on the caller's stack — the
//! state a redirect must not carry over. Each row is *blocked* when the
//! gate ran clean on its registered stack with no event before it, and
//! *succeeded* when the event was delivered in the caller's place (after
//! the `VMCALL`, or at the gate before its first instruction); an
//! observation that is neither (no gate and no event: the event was never
//! armed) does not count.
//!
//! No NMI row: see docs/attack-suite.md ("Events at a gate").

use super::{Obs, Shown, Suite};
use crate::arch::apic::{self, reg};
use crate::arch::irq;
use crate::arch::traps::{Fault, probe};
use crate::arch::user;
use crate::kernel;
use core::fmt;
use guest::attack::Mode;
use guest::tasks::{CONTAINER_A, vuln};
use spin::Mutex;

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// DR6's value with no condition recorded (SDM Vol. 3B §18.2.3).
const DR6_CLEAR: u64 = 0xffff_0ff0;
/// DR7's enable bits (L0–L3, G0–G3).
const DR7_ENABLES: u64 = 0xff;

/// Runs the attacks (before `cpu::run`: its last row leaves the APIC in
/// x2APIC mode, and the self-IPI is sent through the xAPIC page).
pub fn run(s: &mut Suite<'_>) {
    if s.mode == Mode::NoMonitor {
        // Both rows need the monitor's VMCALL (not run, `Guard::Gate`).
        return;
    }
    let apic_mapped = match apic::map(s.mode == Mode::Protected) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("attacks: local APIC not mapped ({e:?}): no self-IPI");
            false
        }
    };
    s.attack("gate-pending-interrupt", |_| {
        let mut obs = if apic_mapped {
            pending_interrupt()
        } else {
            Obs::new(false, None, format_args!("local APIC not mapped"))
        };
        obs.counts &= apic_mapped;
        obs
    });
    s.attack("gate-breakpoint", |_| breakpoints());
    if apic_mapped {
        super::cpu::clear_alias(apic::APIC_SLOT);
    }
}

/// Where an event hit (at `rip`, its frame on `rsp`), for check lines
/// (at most 160 bytes in all).
struct Hit {
    what: &'static str,
    at: Option<(u64, u64)>,
    after: u64,
}

impl fmt::Display for Hit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((rip, rsp)) = self.at else {
            return write!(f, "no {} in the call", self.what);
        };
        let place = if rip == user::guest_trusted_gate as *const () as u64 {
            "at the gate before its 1st insn"
        } else if rip == self.after {
            "after the VMCALL"
        } else {
            "elsewhere"
        };
        write!(f, "{} {place} ({rip:#x}), frame on {rsp:#x}", self.what)
    }
}

/// A fixed self-IPI made pending with interrupts off, then `STI; VMCALL`
/// (`guest_switch_pending_irq`). Without IF cleared at the gate entry the
/// interrupt is delivered in the trusted view at the gate's address,
/// before its first instruction; with the entry state applied it stays
/// pending through the gate (which never sets IF) and is taken here,
/// afterwards, in the trusted kernel. The recording handler
/// (`arch/irq.rs`) tells where it hit.
fn pending_interrupt() -> Obs {
    let v = u32::from(irq::RECORD_VECTOR);
    let after = user::guest_switch_pending_irq_after as *const () as u64;
    // The firmware's PIC lines would be taken too while IF is set.
    let pic = irq::mask_all();
    irq::clear_recorded();
    let _ = user::take_gate_entry();
    let f = user::guest_switch_pending_irq as *const () as u64;
    let (_, done) = kernel::vuln(CONTAINER_A, vuln::CALL, f, kernel::gate());
    // Were the gate started with IF set, it returns with IF set.
    x86_64::instructions::interrupts::disable();
    let seen = irq::recorded();
    let pending = apic::bit(reg::IRR, v);
    let (rsp, rflags) = user::take_gate_entry();
    // Take the interrupt still pending (the handler ends its service) and
    // make sure none stays in service, so the next rows start clean.
    if pending {
        // SAFETY: interrupts open for one instruction with every PIC line
        // masked: the only interrupt that can be pending is this IPI, whose
        // handler records it, sends EOI and returns.
        unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
    }
    if apic::bit(reg::ISR, v) {
        apic::write(reg::EOI, 0);
    }
    let drained = !apic::bit(reg::IRR, v) && !apic::bit(reg::ISR, v);
    irq::restore_masks(pic);
    let delivered = seen.count != 0;
    let at_gate = done.result == user::GATE_MAGIC;
    let clean = at_gate && rsp == user::gate_stack_top() && rflags & RFLAGS_IF == 0;
    let hit = Hit {
        what: "IRQ",
        at: delivered.then_some((seen.rip, seen.rsp)),
        after,
    };
    let mut obs = Obs::new(
        clean && !delivered,
        None,
        format_args!(
            "{hit}; pending after {pending}; gate {at_gate} RSP {rsp:#x} (own {:#x}) RFLAGS {rflags:#x}{}",
            user::gate_stack_top(),
            if drained { "" } else { "; NOT drained" }
        ),
    );
    // Neither a clean gate nor a delivery: the IPI was never requested.
    obs.counts = (clean || delivered) && drained;
    obs
}

/// The call's result when `.0` (for check lines).
struct Called(bool, Option<Result<u64, Fault>>);

impl fmt::Display for Called {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 {
            write!(f, "{}", Shown(self.1))
        } else {
            Ok(())
        }
    }
}

/// The nested probe's result in [`breakpoint_gadget`].
static INNER: Mutex<Option<Result<u64, Fault>>> = Mutex::new(None);

extern "C" fn switch_breakpoints(gate: u64) -> u64 {
    // SAFETY: the assembly follows the SysV ABI (it clobbers only
    // caller-saved registers and DR0, DR1, DR7); run under a probe, which
    // catches the #DB it may raise.
    unsafe { user::guest_switch_breakpoints(gate) }
}

/// `container-a`'s kernel path: the switch with breakpoints armed, under
/// a probe of its own, then DR7 reset. Unprotected the DR1 #DB comes
/// back through that probe (the outer one, the vulnerability call's,
/// would leave DR0 armed on the gate, which the kernel runs next);
/// protected the gate takes the request and neither returns. Were the
/// gate entered with DR7 armed, the DR0 #DB would bring the kernel path
/// back here in the trusted view with the gate's page tables: it puts its
/// own back, as an attacker would, so the request ends normally and the
/// row reports what happened instead of the run ending at the user stub.
extern "C" fn breakpoint_gadget(gate: u64) -> u64 {
    let cr3 = read_cr3();
    let r = probe(switch_breakpoints, gate);
    reset_debug();
    if read_cr3() != cr3 {
        // SAFETY: the page tables this kernel path ran on a moment ago
        // (its task's, which map the kernel as the kernel's do).
        unsafe { core::arch::asm!("mov cr3, {}", in(reg) cr3, options(nostack)) };
    }
    *INNER.lock() = Some(r);
    0
}

fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: MOV from CR3 at CPL 0 has no side effect.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) v, options(nomem, nostack)) };
    v
}

fn read_dr7() -> u64 {
    let v: u64;
    // SAFETY: MOV from DR7 at CPL 0 (MOV-DR exiting is off).
    unsafe { core::arch::asm!("mov {}, dr7", out(reg) v, options(nomem, nostack)) };
    v
}

/// DR7 to its reset value, DR0/DR1 to 0, DR6 cleared.
fn reset_debug() {
    // SAFETY: MOV to debug registers at CPL 0: disables every breakpoint
    // and clears the status the #DB left.
    unsafe {
        core::arch::asm!(
            "mov dr7, {dr7}",
            "mov dr0, {zero}",
            "mov dr1, {zero}",
            "mov dr6, {dr6}",
            dr7 = in(reg) user::DR7_RESET,
            zero = in(reg) 0u64,
            dr6 = in(reg) DR6_CLEAR,
            options(nomem, nostack)
        );
    }
}

/// Execute breakpoints on the gate (DR0) and after the VMCALL (DR1), then
/// the switch. Without DR7 reset at the gate entry the DR0 #DB hits at the
/// gate's address, before its first instruction; unprotected the call
/// returns and DR1's fires after the VMCALL.
fn breakpoints() -> Obs {
    let after = user::guest_switch_breakpoints_after as *const () as u64;
    *INNER.lock() = None;
    let _ = user::take_gate_entry();
    let (r, done) = kernel::vuln(
        CONTAINER_A,
        vuln::CALL,
        breakpoint_gadget as *const () as u64,
        kernel::gate(),
    );
    // What the gate entry left (the gate does not touch DR7).
    let dr7 = read_dr7();
    reset_debug();
    let inner = INNER.lock().take();
    let (rsp, _) = user::take_gate_entry();
    let db = match (inner, r) {
        (Some(Err(f)), _) | (_, Some(Err(f))) if f.vector == 1 => Some(f),
        _ => None,
    };
    let at_gate = done.result == user::GATE_MAGIC;
    let clean = at_gate && rsp == user::gate_stack_top() && dr7 & DR7_ENABLES == 0;
    let hit = Hit {
        what: "#DB",
        at: db.map(|f| (f.rip, f.rsp)),
        after,
    };
    let mut obs = Obs::new(
        clean && db.is_none(),
        None,
        format_args!(
            "{hit}; DR7 after {dr7:#x}; gate {at_gate} RSP {rsp:#x} (own {:#x}){}{}",
            user::gate_stack_top(),
            if db.is_some() { "" } else { "; call " },
            Called(db.is_none(), inner.or(r))
        ),
    );
    // Neither a clean gate nor a #DB: the breakpoints were never armed.
    obs.counts = clean || db.is_some();
    obs
}
