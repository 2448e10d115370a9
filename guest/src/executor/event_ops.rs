//! The event operations of a case (issue 13): debug state set before a
//! hypercall (RFLAGS.TF by POPF, an enabled DR7 instruction breakpoint on
//! the executor's gate), and self-IPIs through the local APIC (a fixed
//! vector pending across a VMCALL, an NMI), each judged by what okernel
//! must do:
//!
//! - a switch that resumes at a gate starts it in the gate entry state
//!   (`docs/policy.md` "Gates and switches", invariant 9): TF, IF, RF,
//!   AC, DF clear, DR7 = 0x400, no pending debug exception — so no #DB
//!   at the gate, DR7 reads 0x400 there, and a fixed self-IPI made
//!   pending before `STI; VMCALL` is still pending (IRR) after the gate;
//! - a VMCALL that returns to its caller completes as an instruction:
//!   with TF set the single-step trap comes right after it (SDM Vol. 3A
//!   §19.3.1.4), and an interrupt made pending before `STI; VMCALL` is
//!   delivered right after it (blocking by STI ends with the VMCALL);
//! - an NMI sent to itself is delivered at once as vector 2;
//! - a gate starts with NMIs blocked until its first IRET: an NMI the
//!   executor's gate sends itself before its IRET (armed by
//!   [`ops::arm_gate_nmi`]) arrives right after the IRET, at
//!   `guest_fuzz_gate_open`, not before;
//! - none of these writes an audit record but the switch's own.
//!
//! Not generated: INIT to itself. okernel stops the context and resumes
//! the trusted one at the *first* registered gate, the demo kernel's
//! scheduler gate, which returns to a scheduler stack the executor never
//! sets up. And Bochs 2.7 cannot run it: its INIT VM exit leaves the INIT
//! pending (`handleAsyncEvent` exits before it clears the event; later
//! Bochs clears it first), so every later VM entry exits again and the
//! trusted context is stopped too — measured here with an INIT from
//! `container-a` (audit `exit` action `gate`, then action `stop` at the
//! gate's first instruction). The stop paths are host-tested
//! (`okernel/src/tests/exits_all.rs`).

use super::step::{Next, Seen, World};
use crate::arch::apic::{self, reg};
use crate::arch::ops::{self, NO_GATE};
use crate::arch::traps::{Fault, probe};
use crate::report::Buf;
use core::sync::atomic::{AtomicU64, Ordering};
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::policy::AuditKind;

core::arch::global_asm!(
    r#"
    .section .text.fuzz_events, "ax"
    /* u64 guest_fuzz_traced_vmcall(u64 args[5]): RAX, RDI, RSI, RDX from
       args[0..4]; args[4] = 0: VMCALL, 1: POPF setting TF then VMCALL,
       2: STI then VMCALL (in its interrupt shadow), then CLI. Returns
       RAX, RDI and RSI in args[0..3]. */
    .global guest_fuzz_traced_vmcall
guest_fuzz_traced_vmcall:
    mov r8, rdi
    mov rax, [r8]
    mov rdi, [r8 + 8]
    mov rsi, [r8 + 16]
    mov rdx, [r8 + 24]
    mov rcx, [r8 + 32]
    cmp rcx, 1
    je 2f
    cmp rcx, 2
    je 3f
    vmcall
    jmp 4f
2:
    pushfq
    or qword ptr [rsp], 0x100
    popfq
    vmcall
    .global guest_fuzz_traced_vmcall_after
guest_fuzz_traced_vmcall_after:
    pushfq
    and qword ptr [rsp], ~0x100
    popfq
    jmp 4f
3:
    sti
    vmcall
    cli
4:
    mov [r8], rax
    mov [r8 + 8], rdi
    mov [r8 + 16], rsi
    ret
"#
);

unsafe extern "C" {
    /// See the assembly above.
    fn guest_fuzz_traced_vmcall(args: u64) -> u64;
    /// The instruction after the TF-traced VMCALL.
    fn guest_fuzz_traced_vmcall_after();
}

/// The operands and results of [`guest_fuzz_traced_vmcall`].
static CALL: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

/// How the VMCALL is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain = 0,
    Trapped = 1,
    Sti = 2,
}

extern "C" fn traced(arg: u64) -> u64 {
    // SAFETY: the assembly follows the SysV ABI (it clobbers only
    // caller-saved registers) and reads and writes only `CALL`; the
    // VMCALL changes RAX, RDI and RSI (the ABI). Run under a probe: a #DB
    // or a #UD unwinds it.
    unsafe { guest_fuzz_traced_vmcall(arg) }
}

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// DR7's reset value.
const DR7_RESET: u64 = 0x400;
/// DR7 L0: breakpoint 0 enabled, an instruction breakpoint (R/W0 = 00).
const DR7_L0: u64 = 1;

/// The fixed vector of the self-IPIs: a remapped PIC line's, whose
/// handler (`arch/irq.rs`) only acknowledges and returns.
const IPI_VECTOR: u32 = crate::arch::irq::PIC_BASE as u32 + 1;

fn read_dr7() -> u64 {
    let v: u64;
    // SAFETY: MOV from DR7 at CPL 0 (MOV-DR exiting is off).
    unsafe { core::arch::asm!("mov {}, dr7", out(reg) v, options(nomem, nostack)) };
    v
}

/// Arms (`Some(address)`) or resets DR0/DR7.
fn set_breakpoint(at: Option<u64>) {
    let (dr0, dr7) = at.map_or((0, DR7_RESET), |a| (a, DR7_RESET | DR7_L0));
    // SAFETY: MOV to DR0/DR7 at CPL 0; the breakpoint is on the executor's
    // gate, which runs only under a probe that catches the #DB.
    unsafe {
        core::arch::asm!("mov dr0, {}", "mov dr7, {}", in(reg) dr0, in(reg) dr7, options(nomem, nostack));
    }
}

fn rflags() -> u64 {
    x86_64::registers::rflags::read_raw()
}

impl World {
    /// The hypercall of the event operations: `(number, args, target of
    /// a switch)`.
    fn event_call(&self, call: u8) -> (u64, [u64; 2], Option<u64>) {
        let switch = Call::SwitchContext.raw();
        match call % 5 {
            0 => (switch, [0, self.gate], Some(0)),
            1 => (switch, [self.other, self.gate], Some(self.other)),
            2 => (switch, [self.current, self.gate], Some(self.current)),
            3 => (Call::Null.raw(), [0, 0], None),
            _ => (Call::Version.raw(), [0, 0], None),
        }
    }

    /// Whether a switch to `target` resumes at the gate.
    fn gates(&self, target: Option<u64>) -> bool {
        target.is_some_and(|t| t != self.current && self.live(t))
    }

    /// Issues the call under a probe in `mode`; returns the fault, the
    /// context a gate came from, RAX, and the audit records.
    fn traced_call(
        &mut self,
        number: u64,
        args: [u64; 2],
        mode: Mode,
    ) -> (Result<u64, Fault>, u64) {
        for (i, v) in [number, args[0], args[1], 0, mode as u64]
            .into_iter()
            .enumerate()
        {
            CALL[i].store(v, Ordering::SeqCst);
        }
        let _ = ops::take_gate_from();
        let r = probe(traced, CALL.as_ptr() as u64);
        let from = ops::take_gate_from();
        (r.map(|_| CALL[0].load(Ordering::SeqCst)), from)
    }

    /// Judges the common part of a switch that must resume at the gate:
    /// resumed there, from the context it left, with one ContextSwitch
    /// record. On success or on a fault at the gate the guest is in
    /// `target` now.
    fn judge_gate(
        &mut self,
        target: u64,
        r: Result<u64, Fault>,
        from: u64,
        seen: &mut Seen,
        msg: &mut Buf,
    ) -> bool {
        seen.fault = r.err();
        seen.records = self.new_records();
        let gate_addr = ops::guest_fuzz_gate as *const () as u64;
        let at_gate = seen.fault.is_some_and(|f| f.rip == gate_addr);
        let ok = from == self.current
            && seen.fault.is_none()
            && seen.records == 1
            && self.newest.kind == AuditKind::ContextSwitch as u32;
        if !ok {
            match seen.fault {
                Some(f) if at_gate => msg.set(format_args!(
                    "vector {} at the gate, before its first instruction: gate entry state not applied",
                    f.vector
                )),
                _ => msg.set(format_args!(
                    "gate {}: fault {:?}, {} record(s)",
                    if from == NO_GATE { "not taken" } else { "taken" },
                    seen.fault.map(|f| (f.vector, f.rip)),
                    seen.records
                )),
            }
        }
        if from != NO_GATE || at_gate {
            self.current = target;
        }
        ok
    }

    /// RFLAGS.TF and/or a DR7 breakpoint on the gate, then a hypercall.
    pub(super) fn debug(&mut self, what: u8, call: u8, msg: &mut Buf) -> (Next, Seen) {
        let mut seen = Seen {
            fault: None,
            status: None,
            records: 0,
        };
        let (tf, dr) = match what % 3 {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        let (number, args, target) = self.event_call(call);
        let gated = self.gates(target);
        if dr {
            set_breakpoint(Some(ops::guest_fuzz_gate as *const () as u64));
        }
        let mode = if tf { Mode::Trapped } else { Mode::Plain };
        let (r, from) = self.traced_call(number, args, mode);
        let dr7 = read_dr7();
        set_breakpoint(None);
        let ok = if gated {
            let mut ok = self.judge_gate(target.unwrap_or(0), r, from, &mut seen, msg);
            if ok && dr7 != DR7_RESET {
                msg.set(format_args!(
                    "DR7 is {dr7:#x} at the gate, not its reset value {DR7_RESET:#x}"
                ));
                ok = false;
            }
            ok
        } else {
            seen.fault = r.err();
            seen.status = r.ok().map(Status::from_raw);
            seen.records = self.new_records();
            let after = guest_fuzz_traced_vmcall_after as *const () as u64;
            let fault = seen.fault.map(|f| (f.vector, f.rip));
            let ok = seen.records == 0
                && if tf {
                    fault == Some((1, after))
                } else {
                    fault.is_none() && seen.status == Some(Ok(Status::Success))
                };
            if !ok {
                msg.set(format_args!(
                    "want {}, no record; got fault {fault:x?}, {:?}, {} record(s)",
                    if tf {
                        "#DB after the VMCALL"
                    } else {
                        "Success"
                    },
                    seen.status,
                    seen.records
                ));
            }
            ok
        };
        if !ok {
            msg.prefix(format_args!(
                "{}{} VMCALL {number}({}, {})",
                if tf { "TF" } else { "" },
                if dr { "+DR7 bp" } else { "" },
                args[0],
                args[1]
            ));
        }
        let next = match (ok, gated) {
            (false, _) => Next::Violation,
            (true, true) => Next::Gated,
            (true, false) => Next::Continue,
        };
        (next, seen)
    }

    /// A self-IPI: a fixed vector pending across `STI; VMCALL` (to a gate
    /// or back to the caller), a fixed vector with interrupts off, an NMI,
    /// or an NMI the gate sends itself before its first IRET.
    pub(super) fn ipi(&mut self, what: u8, call: u8, msg: &mut Buf) -> (Next, Seen) {
        let mut seen = Seen {
            fault: None,
            status: None,
            records: 0,
        };
        let v = IPI_VECTOR;
        let (ok, next) = match what % 4 {
            0 => {
                // Fixed, shorthand self, interrupts off: pending in IRR.
                apic::write(reg::ICR_LOW, v | 1 << 14 | 1 << 18);
                seen.records = self.new_records();
                let pending = apic::bit(reg::IRR, v);
                let ok = pending && seen.records == 0;
                if !ok {
                    msg.set(format_args!(
                        "self-IPI {v:#x}, IF clear: pending {pending}, {} record(s)",
                        seen.records
                    ));
                }
                (ok, Next::Continue)
            }
            1 => {
                // Fixed, pending across STI; VMCALL.
                let (number, args, target) = self.event_call(call);
                let gated = self.gates(target);
                apic::write(reg::ICR_LOW, v | 1 << 14 | 1 << 18);
                let (r, from) = self.traced_call(number, args, Mode::Sti);
                let flags = rflags();
                x86_64::instructions::interrupts::disable();
                let pending = apic::bit(reg::IRR, v);
                let served = apic::bit(reg::ISR, v);
                if gated {
                    let mut ok = self.judge_gate(target.unwrap_or(0), r, from, &mut seen, msg);
                    if ok && (!pending || served || flags & RFLAGS_IF != 0) {
                        msg.set(format_args!(
                            "self-IPI {v:#x} pending at STI; VMCALL delivered at the gate (IRR {pending}, ISR {served}, RFLAGS {flags:#x})"
                        ));
                        ok = false;
                    }
                    (ok, if ok { Next::Gated } else { Next::Violation })
                } else {
                    seen.fault = r.err();
                    seen.status = r.ok().map(Status::from_raw);
                    seen.records = self.new_records();
                    let ok = seen.fault.is_none() && seen.records == 0 && !pending && served;
                    if !ok {
                        msg.set(format_args!(
                            "self-IPI {v:#x} pending at STI; VMCALL {number} not delivered after it: IRR {pending}, ISR {served}, fault {:?}, {} record(s)",
                            seen.fault.map(|f| f.vector),
                            seen.records
                        ));
                    }
                    (ok, Next::Continue)
                }
            }
            2 => (self.nmi_to_itself(&mut seen, msg), Next::Continue),
            _ => self.nmi_at_gate(call, &mut seen, msg),
        };
        drain(v);
        (if ok { next } else { Next::Violation }, seen)
    }

    /// An NMI to this processor (physical destination: its own APIC ID):
    /// delivered at once, as vector 2, with no record.
    fn nmi_to_itself(&mut self, seen: &mut Seen, msg: &mut Buf) -> bool {
        extern "C" fn nmi(_: u64) -> u64 {
            apic::write(reg::ICR_HIGH, apic::id() << 24);
            apic::write(reg::ICR_LOW, apic::ICR_NMI);
            for _ in 0..10_000 {
                core::hint::spin_loop();
            }
            0
        }
        seen.fault = probe(nmi, 0).err();
        let ok = self.finish(guest::fuzz::Expect::Faults(2), seen, None, msg);
        if !ok {
            msg.prefix(format_args!("NMI to itself"));
        }
        ok
    }

    /// A switch to a gate whose first act is to send its processor an NMI
    /// ([`ops::arm_gate_nmi`]): the gate starts with NMIs blocked, so the
    /// NMI must arrive only after the gate's IRET, at
    /// `guest_fuzz_gate_open`. A call that does not reach a gate runs the
    /// plain NMI check instead.
    fn nmi_at_gate(&mut self, call: u8, seen: &mut Seen, msg: &mut Buf) -> (bool, Next) {
        let (number, args, target) = self.event_call(call);
        if !self.gates(target) {
            return (self.nmi_to_itself(seen, msg), Next::Continue);
        }
        apic::write(reg::ICR_HIGH, apic::id() << 24);
        ops::arm_gate_nmi(true);
        let (r, from) = self.traced_call(number, args, Mode::Plain);
        ops::arm_gate_nmi(false);
        seen.fault = r.err();
        seen.records = self.new_records();
        let open = ops::guest_fuzz_gate_open as *const () as u64;
        let fault = seen.fault.map(|f| (f.vector, f.rip));
        let ok = from == self.current
            && fault == Some((2, open))
            && seen.records == 1
            && self.newest.kind == AuditKind::ContextSwitch as u32;
        if !ok {
            msg.set(format_args!(
                "NMI sent at the gate: want vector 2 after its IRET at {open:#x}, got fault {fault:x?}; gate {}, {} record(s)",
                if from == NO_GATE { "not taken" } else { "taken" },
                seen.records
            ));
        }
        if from != NO_GATE {
            self.current = target.unwrap_or(0);
        }
        (ok, if ok { Next::Gated } else { Next::Violation })
    }
}

/// Takes a pending self-IPI (its handler only acknowledges the PIC) and
/// ends its service at the APIC, so that the next case starts clean.
fn drain(v: u32) {
    if apic::bit(reg::IRR, v) {
        // SAFETY: interrupts open for one instruction; the only one that
        // can be pending is this IPI or COM2's line, whose handler only
        // acknowledges the PIC (`arch/irq.rs`).
        unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
    }
    if apic::bit(reg::ISR, v) {
        apic::write(reg::EOI, 0);
    }
}
