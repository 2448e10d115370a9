//! The processor operations of a case: MOV to CR0/CR4, RDMSR/WRMSR, the
//! descriptor-table instructions and CPUID, each judged by the policy
//! model (pinned CR bits, locked MSRs, the descriptor-table lock, VMX
//! hidden: invariants 4, 5 and 12) and by the audit records it left.

use super::step::{Seen, World};
use crate::arch::instr;
use crate::arch::ops::{self, ARGS};
use crate::arch::traps::probe;
use crate::arch::{cpu, tables};
use crate::report::Buf;
use core::sync::atomic::Ordering;
use guest::fuzz::{Expect, cr_write_denied};
use okernel_abi::policy::AuditKind;

impl World {
    pub(super) fn control_register(
        &mut self,
        cr4: bool,
        bit: u8,
        seen: &mut Seen,
        msg: &mut Buf,
    ) -> bool {
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
            msg.prefix(format_args!(
                "MOV CR{} {old:#x} -> {new:#x}",
                if cr4 { 4 } else { 0 }
            ));
        }
        ok
    }

    pub(super) fn msr(
        &mut self,
        write: bool,
        sel: u8,
        flip: u32,
        seen: &mut Seen,
        msg: &mut Buf,
    ) -> bool {
        // What okernel's MSR table (okernel/src/exit/msr_table.rs) gives
        // each: passed or lockable (locked by the kernel here), hidden
        // (#GP both ways, no audit), unlisted (default deny: a read #GP
        // unaudited, a write #GP + audit).
        #[derive(Clone, Copy, PartialEq)]
        enum Class {
            Pass,
            Locked,
            Hidden,
            Unlisted,
        }
        use Class::{Hidden, Locked, Pass, Unlisted};
        // (MSR, class, bits a write may flip)
        const MSRS: [(u32, Class, u64); 17] = [
            (cpu::IA32_LSTAR, Locked, 0xffff_f000),
            (cpu::IA32_STAR, Locked, 0xffff_ffff),
            (cpu::IA32_FMASK, Locked, 0xffff),
            (cpu::IA32_SYSENTER_CS, Locked, 0xfff8),
            (cpu::IA32_SYSENTER_ESP, Locked, 0xffff_f000),
            (cpu::IA32_SYSENTER_EIP, Locked, 0xffff_f000),
            (cpu::IA32_EFER, Locked, 1),
            (0xc000_0102, Pass, 0xffff_f000),
            (0x3a, Hidden, 0),
            (0x480, Hidden, 0),
            (0x48c, Hidden, 0),
            (0x9b, Hidden, 1),
            // Unlisted, inside the bitmap ranges: the microcode-update
            // trigger, IA32_TEST_CTRL, IA32_DS_AREA, an unused high index.
            (0x79, Unlisted, 0xffff_f000),
            (0x33, Unlisted, 1 << 29),
            (0x600, Unlisted, 0xffff_f000),
            (0xc000_1fff, Unlisted, 1),
            // Outside them (always exits): a paravirtual MSR.
            (0x4b56_4d00, Unlisted, 0xffff_f000),
        ];
        let (msr, class, mask) = MSRS[usize::from(sel) % MSRS.len()];
        let read = probe(instr::rdmsr, u64::from(msr));
        let want = match class {
            Hidden if write || msr != 0x3a => Expect::Faults(13),
            Unlisted if !write => Expect::Faults(13),
            Locked | Unlisted if write => Expect::Denied(AuditKind::MsrLock as u32),
            _ => Expect::Allowed,
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
            msg.prefix(format_args!(
                "{} MSR {msr:#x}",
                if write { "WRMSR" } else { "RDMSR" }
            ));
        }
        ok
    }

    pub(super) fn descriptor(&mut self, instr: u8, seen: &mut Seen, msg: &mut Buf) -> bool {
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
            const NAMES: [&str; 8] = ["LIDT", "LGDT", "LLDT", "LTR", "SIDT", "SGDT", "SLDT", "STR"];
            msg.prefix(format_args!("{}", NAMES[which as usize]));
        }
        ok
    }

    pub(super) fn cpuid(&mut self, leaf: u8, raw: u32, seen: &mut Seen, msg: &mut Buf) -> bool {
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
}
