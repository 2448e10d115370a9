//! Hostile hypercalls from the untrusted context: any call number with
//! arguments drawn from selectors (ids, addresses of every class, raw
//! values), judged by what an untrusted kernel path may do — never change
//! the policy, never write memory it cannot write itself, get a defined
//! status for everything (invariant 11).

use super::journal::Journal;
use super::step::{Next, Seen, World};
use super::targets::NON_CANONICAL;
use crate::arch::traps::Fault;
use crate::report::Buf;
use guest::fuzz::Class;
use okernel_abi::fuzz::{CALL_BASELINE, CALL_CHECK};
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::policy::AuditKind;
use okernel_abi::result::Outcome;

/// Call selectors, in order (`None`: an unknown number from the raw
/// operand).
const CALLS: [Option<u64>; 19] = [
    Some(Call::Version as u64),
    Some(Call::Null as u64),
    Some(Call::RegisterRegion as u64),
    Some(Call::LockRegion as u64),
    Some(Call::PinCr as u64),
    Some(Call::LockMsr as u64),
    Some(Call::LockDescriptorTables as u64),
    Some(Call::CreateContext as u64),
    Some(Call::DestroyContext as u64),
    Some(Call::AllocProtectedPage as u64),
    Some(Call::FreeProtectedPage as u64),
    Some(Call::RegisterGate as u64),
    Some(Call::AuditCount as u64),
    Some(Call::AuditRead as u64),
    Some(CALL_BASELINE),
    Some(CALL_CHECK),
    None,
    Some(Call::SwitchContext as u64),
    Some(Call::Exit as u64),
];

impl World {
    /// An argument from selector `sel` and the raw operand.
    fn argument(&self, sel: u8, raw: u32) -> (u64, Option<Class>) {
        let r = u64::from(raw);
        match sel % 12 {
            0 => (r % 8, None),
            1 => (r % 16, None),
            2 => {
                let c = Class::pick(raw as u8);
                (
                    self.targets.addr(c, raw >> 8).unwrap_or(NON_CANONICAL),
                    Some(c),
                )
            }
            3 => {
                let c = Class::pick(raw as u8);
                (
                    self.targets.page(c, raw >> 8).unwrap_or(NON_CANONICAL),
                    Some(c),
                )
            }
            4 => (r, None),
            5 => (r << 12, None),
            6 => (u64::MAX, None),
            7 => (0, None),
            8 => (self.own, None),
            9 => (self.other, None),
            10 => (self.gate, None),
            _ => (
                [0, 4, 3, 8, 0xc000_0082, 0xc000_0080, 0xc000_0081][raw as usize % 7],
                None,
            ),
        }
    }

    /// A hypercall op.
    pub fn hypercall(
        &mut self,
        call: u8,
        args: [u8; 2],
        raw: u32,
        journal: &mut Journal,
        msg: &mut Buf,
    ) -> (Next, Seen) {
        let number = match CALLS[usize::from(call) % CALLS.len()] {
            Some(n) => n,
            // Above every defined number and the fuzz calls.
            None => 0x1000 + u64::from(raw % 0x1000),
        };
        let (a0, _) = self.argument(args[0], raw);
        let (mut a1, c1) = self.argument(args[1], raw.rotate_left(16));
        if number == Call::SwitchContext as u64 {
            return self.switch(args[0], args[1], raw, msg);
        }
        if number == Call::Exit as u64 {
            return self.exit(a1, raw, msg);
        }
        if number == Call::AllocProtectedPage as u64 || number == Call::FreeProtectedPage as u64 {
            let class = Class::pick(raw as u8);
            return self.protected_page(
                number == Call::AllocProtectedPage as u64,
                args[0],
                class,
                raw >> 8,
                journal,
                msg,
            );
        }
        if number == Call::AuditRead as u64 && c1.is_none() {
            // A raw buffer address could be any kernel memory the context
            // may legitimately write: aim it outside RAM instead.
            a1 = 0x0000_7000_0000_0000 | u64::from(raw) << 12;
        }
        let r = match Self::vmcall(number, [a0, a1, u64::from(raw), 0]) {
            Ok(r) => r,
            Err(f) => return self.vmcall_faulted(f, msg),
        };
        let seen = Seen {
            fault: None,
            status: Some(r.status),
            records: self.new_records(),
        };
        let ok = seen.records == 0 && self.allowed_status(number, r.status, r.value0, c1, msg);
        if !ok && msg.as_str().is_empty() {
            msg.set(format_args!(
                "hypercall {number:#x}({a0:#x}, {a1:#x}): {:?} with {} audit record(s)",
                r.status, seen.records
            ));
        }
        (if ok { Next::Continue } else { Next::Violation }, seen)
    }

    /// `Exit` from the untrusted context, with a defined or undefined
    /// outcome code and a reason at `reason` of up to 159 bytes: the run
    /// must go on (only the trusted kernel ends it) — `InvalidArgument`
    /// for a malformed request, `PermissionDenied` with one `hypercall`
    /// audit record otherwise. Not made from the trusted context, where
    /// it would end the run (without a monitor: no VMCALL at all).
    fn exit(&mut self, reason: u64, raw: u32, msg: &mut Buf) -> (Next, Seen) {
        if self.current == 0 || !self.monitor {
            let seen = Seen {
                fault: None,
                status: None,
                records: 0,
            };
            return (Next::Continue, seen);
        }
        let code = match raw & 3 {
            0 => u64::from(raw >> 2),
            _ => u64::from(Outcome::ALL[(raw >> 2) as usize % Outcome::ALL.len()].code()),
        };
        let len = u64::from(raw >> 16) % 160;
        let r = match Self::vmcall(Call::Exit as u64, [code, reason, len, 0]) {
            Ok(r) => r,
            Err(f) => return self.vmcall_faulted(f, msg),
        };
        let seen = Seen {
            fault: None,
            status: Some(r.status),
            records: self.new_records(),
        };
        let ok = match (r.status, seen.records) {
            (Ok(Status::InvalidArgument), 0) => true,
            (Ok(Status::PermissionDenied), 1) => {
                self.newest.kind == AuditKind::Hypercall as u32
                    && self.newest.context == self.current
            }
            _ => false,
        };
        if !ok {
            msg.set(format_args!(
                "Exit({code:#x}, {reason:#x}, {len}) from untrusted context {}: {:?} with {} audit record(s)",
                self.current, r.status, seen.records
            ));
        }
        (if ok { Next::Continue } else { Next::Violation }, seen)
    }

    /// A VMCALL that faulted: no monitor answered (invariant 11 says every
    /// hypercall gets a status).
    pub fn vmcall_faulted(&self, f: Fault, msg: &mut Buf) -> (Next, Seen) {
        msg.set(format_args!(
            "VMCALL raised {} at {:#x}: no monitor answered",
            f.name(),
            f.rip
        ));
        let seen = Seen {
            fault: Some(f),
            status: None,
            records: 0,
        };
        (Next::Violation, seen)
    }

    /// Whether `status` is one an untrusted context may get from call
    /// `number`.
    fn allowed_status(
        &self,
        number: u64,
        status: Result<Status, u64>,
        value: u64,
        buffer: Option<Class>,
        msg: &mut Buf,
    ) -> bool {
        let Ok(status) = status else {
            msg.set(format_args!(
                "hypercall {number:#x}: undefined status {status:?}"
            ));
            return false;
        };
        let ok = match Call::from_raw(number) {
            Ok(Call::Version) => {
                status == Status::Success && value == u64::from(okernel_abi::ABI_VERSION.packed())
            }
            Ok(Call::Null | Call::AuditCount) => status == Status::Success,
            // Any context may read the exit counters (ABI 1.3).
            Ok(Call::ExitCount) => matches!(status, Status::Success | Status::InvalidArgument),
            Ok(Call::AuditRead) => {
                status != Status::Success
                    || matches!(
                        buffer,
                        Some(Class::Scratch | Class::Spare | Class::OwnSecret)
                    )
            }
            // Policy changes are the trusted context's alone.
            Ok(_) => status != Status::Success,
            Err(_) if number == CALL_BASELINE || number == CALL_CHECK => status != Status::Success,
            Err(_) => status == Status::UnknownCall,
        };
        if !ok {
            msg.set(format_args!(
                "hypercall {number:#x} from untrusted context {}: status {} (value {value:#x}) is not allowed",
                self.current,
                status.name()
            ));
        }
        ok
    }

    /// AllocProtectedPage / FreeProtectedPage of a page of `class`: only
    /// the caller's own context's pages may change.
    pub fn protected_page(
        &mut self,
        alloc: bool,
        ctx: u8,
        class: Class,
        offset: u32,
        journal: &mut Journal,
        msg: &mut Buf,
    ) -> (Next, Seen) {
        let ctx = match ctx % 4 {
            1 => self.other,
            2 => 0,
            3 => 9,
            _ => self.own,
        };
        let page = self.targets.page(class, offset).unwrap_or(NON_CANONICAL);
        let call = if alloc {
            Call::AllocProtectedPage
        } else {
            Call::FreeProtectedPage
        };
        let r = match Self::vmcall(call as u64, [ctx, page, 0, 0]) {
            Ok(r) => r,
            Err(f) => return self.vmcall_faulted(f, msg),
        };
        let seen = Seen {
            fault: None,
            status: Some(r.status),
            records: self.new_records(),
        };
        let success = r.status == Ok(Status::Success);
        let own = ctx == self.own && self.monitor;
        // An untrusted context protecting a page the trusted kernel did
        // not give it: refused with one `hypercall` audit record (issue
        // 13); every other refusal leaves none.
        let not_given =
            alloc && own && self.current == self.own && r.status == Ok(Status::PermissionDenied);
        let ok = if not_given {
            seen.records == 1 && self.newest.kind == AuditKind::Hypercall as u32
        } else {
            seen.records == 0
                && r.status.is_ok()
                && (!success
                    || (own && matches!(class, Class::Scratch | Class::Spare | Class::OwnSecret)))
        };
        if success {
            journal.protected_page(alloc, page, &mut self.targets);
        }
        if !ok {
            msg.set(format_args!(
                "{}({ctx}, {page:#x} {}) from context {}: {:?} with {} audit record(s)",
                call.name(),
                class.name(),
                self.current,
                r.status,
                seen.records
            ));
        }
        (if ok { Next::Continue } else { Next::Violation }, seen)
    }
}
