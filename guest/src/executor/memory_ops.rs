//! The memory operations of a case: loads, stores and calls at addresses
//! of every class, UpdatePageTable of the executor's alias-window slots,
//! and accesses through those slots, each judged by the policy model
//! (W^X, read-only kinds, protected pages, monitor memory, the remap
//! rules: invariants 1, 2, 3, 6 and 7) and by the audit records it left.

use super::journal::Journal;
use super::step::{ALIAS_SLOT0, ALIAS_SLOTS, Seen, World};
use super::targets::SCRATCH;
use crate::arch::cpu;
use crate::arch::instr;
use crate::arch::ops::{self, ARGS};
use crate::arch::traps::probe;
use crate::kernel;
use crate::report::Buf;
use core::sync::atomic::Ordering;
use guest::fuzz::{Access, Class, Expect, expect_access, pte, pte_update_allowed};
use guest::layout::alias_va;
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::policy::AuditKind;

impl World {
    pub(super) fn memory(
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
            msg.prefix(format_args!("{} {} {addr:#x}", access.name(), class.name()));
            return false;
        }
        if access == Access::Execute && class == Class::Text && result != Ok(ops::RET_GADGET_RESULT)
        {
            msg.set(format_args!("the text gadget returned {result:?}"));
            return false;
        }
        true
    }

    pub(super) fn alias_entry(slot: u8) -> (usize, u64) {
        let s = ALIAS_SLOT0 + usize::from(slot) % ALIAS_SLOTS;
        (s, kernel::layout().spaces.alias_entry(s))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn page_table(
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
        let allowed = pte_update_allowed(&self.targets, self.current != 0, old, value);
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
        seen.records = self.new_records();
        cpu::invlpg(alias_va(s));
        let ok = match (allowed, r.status) {
            (true, Ok(Status::Success)) => seen.records == 0,
            (false, Ok(Status::Refused)) => {
                seen.records == 1 && self.newest.kind == AuditKind::PageTableUpdate as u32
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

    pub(super) fn alias(
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
            msg.prefix(format_args!(
                "{} via alias slot {s} (entry {e:#x})",
                if write { "write" } else { "read" }
            ));
        }
        ok
    }
}
