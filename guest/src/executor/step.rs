//! One operation: run it under a probe in the untrusted context, then
//! judge what happened against the policy model (`guest::fuzz`): the
//! fault (or none), the hypercall status, and the audit records the
//! monitor wrote for it — exactly one of the right kind for a denial,
//! none otherwise (invariant 10). The dispatch, the judging and the
//! context switch live here; the operations themselves in
//! [`super::memory_ops`], [`super::cpu_ops`], [`super::hypercalls`],
//! [`super::port_ops`] and [`super::event_ops`].

use super::journal::Journal;
use super::targets::{SCRATCH, Targets};
use crate::arch::cpu;
use crate::arch::instr::{Reply, hypercall_raw};
use crate::arch::ops::{self, ARGS, NO_GATE, OUT};
use crate::arch::traps::{Fault, probe};
use crate::kernel;
use crate::report::Buf;
use core::sync::atomic::Ordering;
use guest::fuzz::{Expect, Op};
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::policy::{AuditKind, AuditRecord};

/// The first alias-window slot the executor edits (the attack suite uses
/// lower ones).
pub const ALIAS_SLOT0: usize = 16;
/// Alias slots the executor edits.
pub const ALIAS_SLOTS: usize = 8;

/// What the executor knows about the run it is in.
pub struct World {
    /// The resolved classes.
    pub targets: Targets,
    /// Whether a monitor runs underneath (hypercalls, audit records).
    pub monitor: bool,
    /// The untrusted context the cases run in (0 without a monitor).
    pub own: u64,
    /// Another live untrusted context.
    pub other: u64,
    /// The executor's gate id.
    pub gate: u64,
    /// CR0 bits the kernel pins.
    pub cr0_pins: u64,
    /// CR4 bits the kernel pins.
    pub cr4_pins: u64,
    /// The audit count after the last operation.
    pub audit_seen: u64,
    /// The context the guest runs in now.
    pub current: u64,
    /// The newest audit record [`World::new_records`] read.
    pub newest: AuditRecord,
    /// Whether another processor runs beside the executor (`aps=run`,
    /// `super::other`).
    pub other_runs: bool,
}

/// How an operation ended for the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Go on with the next operation.
    Continue,
    /// A gate took the guest out of the untrusted context: the case ends.
    Gated,
    /// The model was violated (the message says how): the case ends.
    Violation,
}

/// What an operation observed, for coverage and messages.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// The fault, if any.
    pub fault: Option<Fault>,
    /// The hypercall status, if the operation was one.
    pub status: Option<Result<Status, u64>>,
    /// Audit records written for it.
    pub records: u64,
}

impl Seen {
    /// A small code for the coverage map.
    pub fn code(&self) -> u32 {
        let f = self.fault.map_or(0, |f| 1 + u32::from(f.vector));
        let s = match self.status {
            None => 0,
            Some(Ok(s)) => 1 + s.raw() as u32,
            Some(Err(_)) => 31,
        };
        f | s << 6 | (self.records.min(3) as u32) << 11
    }
}

impl World {
    /// The audit records written since the last call (0 without a
    /// monitor), read from the monitor's audit mirror; the newest is left
    /// in [`World::newest`].
    pub(super) fn new_records(&mut self) -> u64 {
        if !self.monitor {
            return 0;
        }
        let m = super::audit_mirror();
        let n = m.total.wrapping_sub(self.audit_seen);
        self.audit_seen = m.total;
        if n != 0 {
            self.newest = m.newest;
        }
        n
    }

    /// Judges a fault and the audit records against `want`.
    fn judge(&self, want: Expect, seen: &Seen, page: Option<u64>, msg: &mut Buf) -> bool {
        let vector = seen.fault.map(|f| f.vector);
        match want {
            Expect::Allowed if vector.is_none() && seen.records == 0 => true,
            Expect::Faults(v) if vector == Some(v) && seen.records == 0 => true,
            Expect::Denied(kind) if !self.monitor => {
                if vector == Some(13) {
                    return true;
                }
                msg.set(format_args!("expected a denial (audit kind {kind}), got fault {vector:?}: no monitor enforces it"));
                false
            }
            Expect::Denied(kind) if vector == Some(13) && seen.records == 1 => {
                let r = self.newest;
                let page_ok = page.is_none_or(|p| r.gpa & !0xfff == p & !0xfff);
                if r.kind == kind && r.context == self.current && page_ok {
                    return true;
                }
                msg.set(format_args!(
                    "denied as expected but the audit record is wrong: kind {} (want {kind}), context {} (want {}), gpa {:#x} (want page {page:#x?})",
                    r.kind, r.context, self.current, r.gpa
                ));
                false
            }
            _ => {
                msg.set(format_args!(
                    "expected {want:?}, got fault {vector:?} with {} audit record(s)",
                    seen.records
                ));
                false
            }
        }
    }

    /// Runs `op` and judges it; on a violation `msg` says what happened.
    pub fn step(&mut self, op: &Op, journal: &mut Journal, msg: &mut Buf) -> (Next, Seen) {
        let mut seen = Seen {
            fault: None,
            status: None,
            records: 0,
        };
        let ok = match *op {
            Op::Memory {
                access,
                class,
                offset,
                flip,
            } => self.memory(access, class, offset, flip, &mut seen, msg),
            Op::Hypercall { call, args, raw } => {
                return self.hypercall(call, args, raw, journal, msg);
            }
            Op::ControlRegister { cr4, bit } => self.control_register(cr4, bit, &mut seen, msg),
            Op::Msr { write, msr, flip } => self.msr(write, msr, flip, &mut seen, msg),
            Op::DescriptorTable { instr } => self.descriptor(instr, &mut seen, msg),
            Op::Vmx { instr } => {
                seen.fault = probe(ops::vmx, u64::from(instr % 12)).err();
                self.finish(Expect::Faults(6), &mut seen, None, msg)
            }
            Op::PageTable {
                slot,
                class,
                flags,
                offset,
            } => self.page_table(slot, class, flags, offset, journal, &mut seen, msg),
            Op::Alias {
                slot,
                write,
                offset,
            } => self.alias(slot, write, offset, &mut seen, msg),
            Op::Switch { ctx, gate, raw } => return self.switch(ctx, gate, raw, msg),
            Op::Exception { kind } => {
                let which = u64::from(kind % 11);
                seen.fault = probe(ops::exception, which).err();
                let want = Expect::Faults(ops::exception_vector(which));
                self.finish(want, &mut seen, None, msg)
            }
            Op::ProtectedPage { alloc, ctx, class } => {
                return self.protected_page(alloc, ctx, class, 0, journal, msg);
            }
            Op::Cpuid { leaf, raw } => self.cpuid(leaf, raw, &mut seen, msg),
            Op::Port { sel, raw } => self.port(sel, raw, &mut seen, msg),
            Op::Debug { what, call } => return self.debug(what, call, msg),
            Op::Ipi { what, call } => return self.ipi(what, call, msg),
        };
        (if ok { Next::Continue } else { Next::Violation }, seen)
    }

    /// Counts the records and judges.
    pub(super) fn finish(
        &mut self,
        want: Expect,
        seen: &mut Seen,
        page: Option<u64>,
        msg: &mut Buf,
    ) -> bool {
        seen.records = self.new_records();
        self.judge(want, seen, page, msg)
    }

    /// Issues a raw hypercall under a probe; `None` when it faulted.
    pub(super) fn vmcall(number: u64, args: [u64; 4]) -> Result<Reply, Fault> {
        ARGS[0].store(number, Ordering::SeqCst);
        for (i, a) in args.iter().enumerate().take(3) {
            OUT[i].store(*a, Ordering::SeqCst);
        }
        OUT[3].store(args[3], Ordering::SeqCst);
        extern "C" fn call(_: u64) -> u64 {
            let a = [0, 1, 2, 3].map(|i| OUT[i].load(Ordering::SeqCst));
            let r = hypercall_raw(ARGS[0].load(Ordering::SeqCst), a);
            OUT[0].store(r.value0, Ordering::SeqCst);
            OUT[1].store(r.value1, Ordering::SeqCst);
            match r.status {
                Ok(s) => s.raw(),
                Err(raw) => raw,
            }
        }
        probe(call, 0).map(|rax| Reply {
            status: Status::from_raw(rax),
            value0: OUT[0].load(Ordering::SeqCst),
            value1: OUT[1].load(Ordering::SeqCst),
        })
    }

    /// Whether `ctx` is a live context.
    pub fn live(&self, ctx: u64) -> bool {
        ctx == 0 || ctx == self.own || ctx == self.other
    }

    /// SwitchContext from the untrusted context (invariant 9).
    pub fn switch(&mut self, ctx: u8, gate: u8, raw: u32, msg: &mut Buf) -> (Next, Seen) {
        let target = match ctx % 5 {
            0 => 0,
            1 => self.own,
            2 => self.other,
            3 => 7,
            _ => u64::from(raw),
        };
        let gate_id = match gate % 5 {
            0..=2 => self.gate,
            3 => 9,
            _ => u64::from(raw >> 8),
        };
        // The kernel's own gate returns to its scheduler's saved stack, which
        // the executor never set up: aim any id that names it at a dead one.
        let gate_id = if gate_id != self.gate && gate_id == kernel::gate() {
            9
        } else {
            gate_id
        };
        let _ = ops::take_gate_from();
        let r = Self::vmcall(Call::SwitchContext.raw(), [target, gate_id, 0, 0]);
        let from = ops::take_gate_from();
        let seen = Seen {
            fault: r.err(),
            status: r.ok().map(|r| r.status),
            records: self.new_records(),
        };
        let gated = from != NO_GATE;
        let same = target == self.current;
        let can_gate = !same && self.live(target) && gate_id == self.gate;
        let status = seen.status.and_then(Result::ok);
        let audit_ok = seen.records == u64::from(!same)
            && (same || self.newest.kind == AuditKind::ContextSwitch as u32);
        let ok = audit_ok
            && if gated {
                can_gate && from == self.current
            } else {
                match status {
                    Some(Status::Success) => same,
                    Some(_) => !can_gate,
                    None => false,
                }
            };
        if !ok {
            msg.set(format_args!(
                "SwitchContext({target}, gate {gate_id}) from context {}: {} with {} audit record(s){}",
                self.current,
                if gated { "resumed at the gate" } else { "returned to the caller" },
                seen.records,
                if !gated && status == Some(Status::Success) && !same {
                    " — the switch skipped its gate (invariant 9)"
                } else {
                    ""
                }
            ));
        }
        if gated || status == Some(Status::Success) {
            self.current = target;
        }
        (
            if !ok {
                Next::Violation
            } else if gated {
                Next::Gated
            } else {
                Next::Continue
            },
            seen,
        )
    }
}

/// Writes the scratch page's code (`mov eax, 0x1234; ret`).
pub fn init_scratch() {
    // SAFETY: the executor's own scratch page, in the trusted context.
    unsafe {
        core::ptr::copy_nonoverlapping(
            cpu::DATA_CODE.as_ptr(),
            SCRATCH.get().cast::<u8>(),
            cpu::DATA_CODE.len(),
        );
    }
}
