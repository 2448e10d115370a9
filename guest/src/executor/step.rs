//! One operation: run it under a probe in the untrusted context, then
//! judge what happened against the policy model (`guest::fuzz`): the
//! fault (or none), the hypercall status, and the audit records the
//! monitor wrote for it — exactly one of the right kind for a denial,
//! none otherwise (invariant 10).

use super::journal::Journal;
use super::targets::{SCRATCH, Targets};
use crate::arch::instr::{self, Reply, hypercall, hypercall_raw};
use crate::arch::ops::{self, ARGS, NO_GATE, OUT};
use crate::arch::traps::{Fault, probe};
use crate::arch::{cpu, tables};
use crate::kernel::{self, Pages};
use crate::report::Buf;
use core::sync::atomic::Ordering;
use guest::fuzz::{
    Access, Class, Expect, Op, cr_write_denied, expect_access, pte, pte_update_allowed,
};
use guest::layout::alias_va;
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::policy::{AuditKind, AuditRecord};

/// The first alias-window slot the executor edits (the attack suite uses
/// lower ones).
pub const ALIAS_SLOT0: usize = 16;
/// Alias slots the executor edits.
pub const ALIAS_SLOTS: usize = 8;

/// Where AuditRead copies records: kernel data in no region.
static RECORD: Pages<AuditRecord> = Pages::new(AuditRecord {
    sequence: 0,
    kind: 0,
    action: 0,
    context: 0,
    gpa: 0,
    gva: 0,
    access: 0,
    rip: 0,
    qualification: 0,
});

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
    /// monitor); the newest is left in [`RECORD`].
    pub(super) fn new_records(&mut self) -> Result<u64, &'static str> {
        if !self.monitor {
            return Ok(0);
        }
        let r = hypercall(Call::AuditCount, [0; 4]);
        if r.status != Ok(Status::Success) {
            return Err("AuditCount failed");
        }
        let n = r.value0.wrapping_sub(self.audit_seen);
        self.audit_seen = r.value0;
        if n != 0
            && hypercall(Call::AuditRead, [r.value0 - 1, RECORD.addr(), 0, 0]).status
                != Ok(Status::Success)
        {
            return Err("AuditRead of the newest record failed");
        }
        Ok(n)
    }

    fn record() -> AuditRecord {
        // SAFETY: the monitor copied a record there; nothing else writes it.
        unsafe { RECORD.get().read_volatile() }
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
                let r = Self::record();
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
        };
        (if ok { Next::Continue } else { Next::Violation }, seen)
    }

    /// Counts the records and judges.
    fn finish(&mut self, want: Expect, seen: &mut Seen, page: Option<u64>, msg: &mut Buf) -> bool {
        match self.new_records() {
            Ok(n) => seen.records = n,
            Err(e) => {
                msg.set(format_args!("{e}"));
                return false;
            }
        }
        self.judge(want, seen, page, msg)
    }

    fn memory(
        &mut self,
        access: Access,
        class: Class,
        offset: u32,
        flip: u64,
        seen: &mut Seen,
        msg: &mut Buf,
    ) -> bool {
        let Some(mut addr) = self.targets.addr(class, offset) else {
            return true;
        };
        if access == Access::Execute && class == Class::UserText {
            // Ring-3 code run in ring 0 would SYSCALL from the kernel; and
            // whether the view lets the kernel fetch it depends on MBEC.
            return true;
        }
        let want = expect_access(class, access);
        let result = match access {
            Access::Read => probe(instr::read_u64, addr),
            Access::Write => {
                // Read first only where reading is allowed: a denied read
                // would write an audit record of its own.
                let old = if expect_access(class, Access::Read) == Expect::Allowed {
                    probe(instr::read_u64, addr).unwrap_or(0)
                } else {
                    0
                };
                ARGS[0].store(old ^ flip, Ordering::SeqCst);
                let r = probe(ops::write_u64, addr);
                if r.is_ok() {
                    ARGS[0].store(old, Ordering::SeqCst);
                    let _ = probe(ops::write_u64, addr);
                }
                r
            }
            Access::Execute => {
                addr = match class {
                    Class::Text => ops::guest_fuzz_ret as *const () as u64,
                    Class::Scratch => SCRATCH.addr(),
                    _ => self.targets.range(class).0,
                };
                probe(ops::call_at, addr)
            }
        };
        seen.fault = result.err();
        if !self.finish(want, seen, Some(addr), msg) {
            let mut m = Buf::new();
            m.set(format_args!(
                "{} {} {addr:#x}: {}",
                access.name(),
                class.name(),
                msg.as_str()
            ));
            *msg = m;
            return false;
        }
        if access == Access::Execute && class == Class::Text && result != Ok(ops::RET_GADGET_RESULT)
        {
            msg.set(format_args!("the text gadget returned {result:?}"));
            return false;
        }
        true
    }

    fn control_register(&mut self, cr4: bool, bit: u8, seen: &mut Seen, msg: &mut Buf) -> bool {
        const CR0_BITS: [u32; 4] = [16, 18, 1, 3];
        const CR4_BITS: [u32; 8] = [20, 21, 11, 7, 2, 3, 8, 13];
        let (old, pins, b, write): (u64, u64, u32, extern "C" fn(u64) -> u64) = if cr4 {
            (
                x86_64::registers::control::Cr4::read_raw(),
                self.cr4_pins,
                CR4_BITS[usize::from(bit) % 8],
                ops::write_cr4,
            )
        } else {
            (
                x86_64::registers::control::Cr0::read_raw(),
                self.cr0_pins,
                CR0_BITS[usize::from(bit) % 4],
                ops::write_cr0,
            )
        };
        let new = old ^ (1 << b);
        seen.fault = probe(write, new).err();
        if seen.fault.is_none() {
            let _ = probe(write, old);
        }
        let kind = AuditKind::CrPin as u32;
        let want = if cr_write_denied(pins, old, new) {
            Expect::Denied(kind)
        } else if cr4 && b == 13 && new & (1 << 13) != 0 {
            // CR4.VMXE: hidden by the monitor, #GP as on a CPU without VMX.
            Expect::Faults(13)
        } else if seen.fault.map(|f| f.vector) == Some(13) {
            // The processor may refuse a bit it does not support.
            Expect::Faults(13)
        } else {
            Expect::Allowed
        };
        let ok = self.finish(want, seen, None, msg);
        if !ok {
            let mut m = Buf::new();
            m.set(format_args!(
                "MOV CR{} {old:#x} -> {new:#x}: {}",
                if cr4 { 4 } else { 0 },
                msg.as_str()
            ));
            *msg = m;
        }
        ok
    }

    fn msr(&mut self, write: bool, sel: u8, flip: u32, seen: &mut Seen, msg: &mut Buf) -> bool {
        // (MSR, locked by the kernel, bits a write may flip)
        const MSRS: [(u32, bool, u64); 11] = [
            (cpu::IA32_LSTAR, true, 0xffff_f000),
            (cpu::IA32_STAR, true, 0xffff_ffff),
            (cpu::IA32_FMASK, true, 0xffff),
            (cpu::IA32_SYSENTER_CS, true, 0xfff8),
            (cpu::IA32_SYSENTER_ESP, true, 0xffff_f000),
            (cpu::IA32_SYSENTER_EIP, true, 0xffff_f000),
            (cpu::IA32_EFER, true, 1),
            (0xc000_0102, false, 0xffff_f000),
            (0x3a, false, 0),
            (0x480, false, 0),
            (0x48c, false, 0),
        ];
        let (msr, locked, mask) = MSRS[usize::from(sel) % MSRS.len()];
        let vmx_hidden = msr == 0x3a || (0x480..=0x493).contains(&msr);
        let read = probe(instr::rdmsr, u64::from(msr));
        let want = if vmx_hidden && (write || msr != 0x3a) {
            Expect::Faults(13)
        } else if write && locked {
            Expect::Denied(AuditKind::MsrLock as u32)
        } else {
            Expect::Allowed
        };
        if write {
            let old = read.unwrap_or(0);
            let bits = u64::from(flip) & mask;
            let bits = if bits == 0 {
                mask & mask.wrapping_neg()
            } else {
                bits
            };
            ARGS[0].store(old ^ bits.max(1), Ordering::SeqCst);
            seen.fault = probe(ops::wrmsr, u64::from(msr)).err();
            if seen.fault.is_none() {
                ARGS[0].store(old, Ordering::SeqCst);
                let _ = probe(ops::wrmsr, u64::from(msr));
            }
        } else {
            seen.fault = read.err();
        }
        let mut ok = self.finish(want, seen, None, msg);
        if ok
            && !write
            && msr == 0x3a
            && let Ok(v) = read
        {
            // Locked, with VMX disabled inside and outside SMX.
            ok = v & 1 == 1 && v & 0b110 == 0;
            if !ok {
                msg.set(format_args!(
                    "IA32_FEATURE_CONTROL reads {v:#x}: VMX visible"
                ));
            }
        }
        if !ok {
            let mut m = Buf::new();
            m.set(format_args!(
                "{} MSR {msr:#x}: {}",
                if write { "WRMSR" } else { "RDMSR" },
                msg.as_str()
            ));
            *msg = m;
        }
        ok
    }

    fn descriptor(&mut self, instr: u8, seen: &mut Seen, msg: &mut Buf) -> bool {
        let which = u64::from(instr % 8);
        let r = probe(ops::descriptor, which);
        seen.fault = r.err();
        let want = if which < 4 {
            Expect::Denied(AuditKind::DescriptorTable as u32)
        } else {
            Expect::Allowed
        };
        let mut ok = self.finish(want, seen, None, msg);
        if ok && which == 4 && r != Ok(tables::addrs().idt) {
            msg.set(format_args!(
                "SIDT returned {r:#x?}, the IDT is at {:#x}",
                tables::addrs().idt
            ));
            ok = false;
        }
        if !ok {
            let mut m = Buf::new();
            const NAMES: [&str; 8] = ["LIDT", "LGDT", "LLDT", "LTR", "SIDT", "SGDT", "SLDT", "STR"];
            m.set(format_args!("{}: {}", NAMES[which as usize], msg.as_str()));
            *msg = m;
        }
        ok
    }

    fn alias_entry(slot: u8) -> (usize, u64) {
        let s = ALIAS_SLOT0 + usize::from(slot) % ALIAS_SLOTS;
        (s, kernel::layout().spaces.alias_entry(s))
    }

    #[allow(clippy::too_many_arguments)]
    fn page_table(
        &mut self,
        slot: u8,
        class: Class,
        flags: u8,
        offset: u32,
        journal: &mut Journal,
        seen: &mut Seen,
        msg: &mut Buf,
    ) -> bool {
        let (s, entry) = Self::alias_entry(slot);
        let frame = self
            .targets
            .page(class, offset)
            .unwrap_or(u64::from(offset) << 12)
            & pte::ADDR;
        let mut value = frame | pte::PRESENT | 1 << 5;
        if flags & 1 != 0 {
            value |= pte::WRITABLE;
        }
        if flags & 2 != 0 {
            value &= !pte::PRESENT;
        }
        if flags & 4 != 0 {
            value |= pte::PAGE_SIZE;
        }
        if flags & 8 != 0 {
            value |= 1 << 63;
        }
        if flags & 16 != 0 {
            value |= 1 << 2;
        }
        let old = probe(instr::read_u64, entry).unwrap_or(0);
        let allowed = pte_update_allowed(&self.targets, old, value);
        let r = match Self::vmcall(Call::UpdatePageTable.raw(), [entry, value, 0, 0]) {
            Ok(r) => r,
            Err(f) => {
                seen.fault = Some(f);
                msg.set(format_args!(
                    "UpdatePageTable: VMCALL raised {}: no monitor answered",
                    f.name()
                ));
                return false;
            }
        };
        seen.status = Some(r.status);
        if let Err(e) = self.new_records().map(|n| seen.records = n) {
            msg.set(format_args!("{e}"));
            return false;
        }
        cpu::invlpg(alias_va(s));
        let ok = match (allowed, r.status) {
            (true, Ok(Status::Success)) => seen.records == 0,
            (false, Ok(Status::Refused)) => {
                seen.records == 1 && Self::record().kind == AuditKind::PageTableUpdate as u32
            }
            _ => false,
        };
        if r.status == Ok(Status::Success) {
            journal.alias_dirty[s - ALIAS_SLOT0] = true;
        }
        if !ok {
            msg.set(format_args!(
                "UpdatePageTable slot {s} {old:#x} -> {value:#x} ({}): expected {}, got {:?} with {} audit record(s)",
                class.name(),
                if allowed { "success" } else { "refused + 1 record" },
                r.status,
                seen.records
            ));
        }
        ok
    }

    fn alias(
        &mut self,
        slot: u8,
        write: bool,
        offset: u32,
        seen: &mut Seen,
        msg: &mut Buf,
    ) -> bool {
        let (s, entry) = Self::alias_entry(slot);
        let Ok(e) = probe(instr::read_u64, entry) else {
            return true;
        };
        let va = alias_va(s) + ((u64::from(offset) % 4096) & !7);
        let frame = e & pte::ADDR;
        // The window's directory entries are supervisor-only, so the U bit
        // of a slot's entry never makes the page a user page (no SMAP).
        let want = if e & pte::PRESENT == 0 || (write && e & pte::WRITABLE == 0) {
            Expect::Faults(14)
        } else {
            let class = self.targets.class_of(frame).unwrap_or(Class::Scratch);
            expect_access(class, if write { Access::Write } else { Access::Read })
        };
        let readable = want == Expect::Allowed || !write;
        let old = if readable {
            probe(instr::read_u64, va)
        } else {
            Ok(0)
        };
        let r = if write {
            ARGS[0].store(old.unwrap_or(0) ^ 0x5a5a, Ordering::SeqCst);
            let r = probe(ops::write_u64, va);
            if r.is_ok() {
                ARGS[0].store(old.unwrap_or(0), Ordering::SeqCst);
                let _ = probe(ops::write_u64, va);
            }
            r
        } else {
            old
        };
        seen.fault = r.err();
        let ok = self.finish(want, seen, Some(frame), msg);
        if !ok {
            let mut m = Buf::new();
            m.set(format_args!(
                "{} via alias slot {s} (entry {e:#x}): {}",
                if write { "write" } else { "read" },
                msg.as_str()
            ));
            *msg = m;
        }
        ok
    }

    fn cpuid(&mut self, leaf: u8, raw: u32, seen: &mut Seen, msg: &mut Buf) -> bool {
        const LEAVES: [u32; 5] = [0, 1, 7, 0x4000_0000, 0x4000_0001];
        let l = LEAVES.get(usize::from(leaf) % 6).copied().unwrap_or(raw);
        let r = core::arch::x86_64::__cpuid_count(l, 0);
        if !self.finish(Expect::Allowed, seen, None, msg) {
            return false;
        }
        let ok = match l {
            1 => r.ecx & (1 << 5) == 0,
            0x4000_0000 => okernel_abi::cpuid::is_signature(r.ebx, r.ecx, r.edx),
            _ => true,
        };
        if !ok {
            msg.set(format_args!(
                "CPUID {l:#x}: ebx {:#x} ecx {:#x} edx {:#x}: VMX visible or no okernel signature",
                r.ebx, r.ecx, r.edx
            ));
        }
        ok
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
        let mut seen = Seen {
            fault: r.err(),
            status: r.ok().map(|r| r.status),
            records: 0,
        };
        match self.new_records() {
            Ok(n) => seen.records = n,
            Err(e) => {
                msg.set(format_args!("{e}"));
                return (Next::Violation, seen);
            }
        }
        let gated = from != NO_GATE;
        let same = target == self.current;
        let can_gate = !same && self.live(target) && gate_id == self.gate;
        let status = seen.status.and_then(Result::ok);
        let audit_ok = seen.records == u64::from(!same)
            && (same || Self::record().kind == AuditKind::ContextSwitch as u32);
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

/// The number of audit records written so far.
pub fn audit_count() -> Result<u64, &'static str> {
    let r = hypercall(Call::AuditCount, [0; 4]);
    match r.status {
        Ok(Status::Success) => Ok(r.value0),
        _ => Err("AuditCount failed"),
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
