//! The #GP(0) of the fetch past the canonical boundary, delivered in
//! software with the non-canonical saved RIP (`exit::deliver`, issue 18),
//! against guest memory with an IDT, a GDT, a TSS and stacks; and every
//! case left to the processor (the #GP injected at the instruction,
//! nothing written).

use super::*;
use crate::bits::{CR0_WP, CR4_SMAP, EFER_NXE, RFLAGS_IF, RFLAGS_RF, RFLAGS_TF, RFLAGS_VM};
use crate::exit::deliver::{Delivery, Interrupted, plan};
use crate::memmap::Hpa;
use crate::policy::guest_paging::PagingState;
use crate::vmx::fields::{Guest16, Guest32, Guest64};
use std::collections::HashMap;

/// The first RIP past the lower canonical half.
const TOP48: u64 = 0x0000_8000_0000_0000;
/// The IDT, GDT and TSS (6..8 MiB: 4 KiB pages of [`PT`]).
const IDT: u64 = 0x70_0000;
const GDT: u64 = 0x70_1000;
const TSS: u64 = 0x70_2000;
/// The interrupted kernel's stack (misaligned: the frame is aligned down).
const KSTACK: u64 = 0x70_6008;
/// TSS.RSP0 and TSS.IST1.
const RSP0: u64 = 0x70_8000;
const IST1: u64 = 0x70_a008;
/// The #GP handler.
const HANDLER: u64 = 0xffff_ffff_8000_1234;
/// Kernel code (0x08), kernel data (0x10), user code (0x33), user data
/// (0x2b).
const KCODE: u64 = 0x00af_9b00_0000_ffff;
const KDATA: u64 = 0x00cf_9300_0000_ffff;
const UCODE: u64 = 0x00af_fb00_0000_ffff;
const UDATA: u64 = 0x00cf_f300_0000_ffff;
/// RFLAGS: IF and the reserved bit 1.
const IF: u64 = 0x2 | RFLAGS_IF;

fn put(v: &PVcpu, at: u64, value: u64) {
    v.memory.phys().write(Hpa(at), &value.to_le_bytes());
}

fn get(v: &PVcpu, at: u64) -> u64 {
    let mut b = [0u8; 8];
    v.memory.phys().copy(Hpa(at), &mut b);
    u64::from_le_bytes(b)
}

/// A 64-bit gate for vector 13: `kind` 0xe (interrupt) or 0xf (trap).
fn gate(v: &PVcpu, handler: u64, selector: u64, ist: u64, kind: u64, present: bool) {
    let low = (handler & 0xffff)
        | (selector << 16)
        | (ist << 32)
        | (kind << 40)
        | (u64::from(present) << 47)
        | ((handler & 0xffff_0000) << 32);
    put(v, IDT + 13 * 16, low);
    put(v, IDT + 13 * 16 + 8, handler >> 32);
}

/// Entry bits A and D: a walk through entries with both set makes the
/// processor write no entry.
const AD: u64 = 0x60;

/// The PTE of [`PT`] that maps `page` (6..8 MiB).
fn pte(page: u64) -> u64 {
    PT + 8 * ((page - 0x60_0000) >> 12)
}

/// A kernel at CPL 0 on [`KSTACK`] with the tables in place, every entry
/// of the walks to 6..8 MiB accessed and dirty (as a running kernel's).
fn kernel() -> PVcpu {
    let mut v = pvcpu();
    for at in [PML4, PDPT, PD + 8 * 3] {
        put(&v, at, get(&v, at) | AD);
    }
    for i in 0..512 {
        put(&v, PT + 8 * i, get(&v, PT + 8 * i) | AD);
    }
    for (i, d) in [0, KCODE, KDATA, 0, 0, UDATA, UCODE]
        .into_iter()
        .enumerate()
    {
        put(&v, GDT + 8 * i as u64, d);
    }
    put(&v, TSS + 4, RSP0);
    put(&v, TSS + 0x24, IST1);
    gate(&v, HANDLER, 0x08, 0, 0xe, true);
    v.vmcs
        .set(GuestNatural::IdtrBase, IDT)
        .set(Guest32::IdtrLimit, 0xfff)
        .set(GuestNatural::GdtrBase, GDT)
        .set(Guest32::GdtrLimit, 0x37)
        .set(GuestNatural::TrBase, TSS)
        .set(Guest32::TrLimit, 0x67)
        .set(GuestNatural::Rsp, KSTACK)
        .set(GuestNatural::Rflags, IF);
    v
}

/// Makes `v` a CPL 3 task on a user stack.
fn user(v: &mut PVcpu) {
    v.vmcs
        .set(Guest16::CsSelector, 0x33)
        .set(Guest32::CsAccessRights, 0xa0fb)
        .set(Guest16::SsSelector, 0x2b)
        .set(Guest32::SsAccessRights, 0xc0f3)
        .set(GuestNatural::Rsp, 0x70_c000);
}

/// Locks the page at `at` as read-only data: read-only in every view.
fn lock_page(v: &mut PVcpu, at: u64) {
    lock(v, at, 0x1000, okernel_abi::policy::RegionKind::Rodata);
}

/// WBINVD (2 bytes) completing at the canonical boundary.
fn at_boundary(v: &mut PVcpu) -> Result<ExitAction, ExitError> {
    v.vmcs.set(GuestNatural::Rip, TOP48 - 2);
    run(v, ExitReason::Wbinvd, 0, 2)
}

/// The six words of the frame at `rsp`.
fn frame(v: &PVcpu, rsp: u64) -> [u64; 6] {
    core::array::from_fn(|i| get(v, rsp + 8 * i as u64))
}

#[test]
fn a_kernel_takes_the_gp_with_the_non_canonical_rip_in_its_frame() {
    let mut v = kernel();
    let cs = v.vmcs.get(Guest16::CsSelector);
    let ss = v.vmcs.get(Guest16::SsSelector);
    let ss_access = v.vmcs.get(Guest32::SsAccessRights);
    assert_eq!(at_boundary(&mut v), Ok(ExitAction::Resume));
    assert_eq!(v.cpu.wbinvds, 1, "the instruction completed");
    assert_eq!(injected(&v), 0, "delivered by the monitor, not injected");
    let rsp = 0x70_6000 - 48;
    assert_eq!(v.vmcs.get(GuestNatural::Rsp), rsp, "aligned down, 6 words");
    assert_eq!(
        frame(&v, rsp),
        [0, TOP48, cs, IF | RFLAGS_RF, KSTACK, ss],
        "error code, the non-canonical RIP, CS, RFLAGS with RF, RSP, SS"
    );
    assert_eq!(rip(&v), HANDLER);
    assert_eq!(
        v.vmcs.get(GuestNatural::Rflags),
        0x2,
        "an interrupt gate clears IF"
    );
    assert_eq!(v.vmcs.get(Guest16::CsSelector), 0x08);
    assert_eq!(v.vmcs.get(Guest32::CsAccessRights), 0xa09b);
    assert_eq!(v.vmcs.get(Guest32::CsLimit), 0xffff_ffff);
    assert_eq!(
        v.vmcs.get(Guest32::SsAccessRights),
        ss_access,
        "no stack switch"
    );
    assert_eq!(v.audit.total(), 0);
}

#[test]
fn a_user_task_switches_to_rsp0_and_a_null_ss() {
    let mut v = kernel();
    user(&mut v);
    gate(&v, HANDLER, 0x08, 0, 0xf, true);
    assert_eq!(at_boundary(&mut v), Ok(ExitAction::Resume));
    assert_eq!(injected(&v), 0);
    let rsp = RSP0 - 48;
    assert_eq!(
        frame(&v, rsp),
        [0, TOP48, 0x33, IF | RFLAGS_RF, 0x70_c000, 0x2b]
    );
    assert_eq!(v.vmcs.get(GuestNatural::Rsp), rsp);
    assert_eq!(v.vmcs.get(GuestNatural::Rflags), IF, "a trap gate keeps IF");
    assert_eq!(v.vmcs.get(Guest16::CsSelector), 0x08);
    assert_eq!(v.vmcs.get(Guest16::SsSelector), 0, "null SS, RPL 0");
    assert_eq!(
        v.vmcs.get(Guest32::SsAccessRights),
        1 << 16,
        "unusable, DPL 0"
    );
    assert_eq!(v.cpl(), Ok(0));
}

#[test]
fn an_ist_gate_takes_its_stack_from_the_tss() {
    let mut v = kernel();
    gate(&v, HANDLER, 0x08, 1, 0xe, true);
    assert_eq!(at_boundary(&mut v), Ok(ExitAction::Resume));
    assert_eq!(injected(&v), 0);
    assert_eq!(v.vmcs.get(GuestNatural::Rsp), 0x70_a000 - 48);
    assert_eq!(get(&v, 0x70_a000 - 40), TOP48);
}

/// The frame a delivery would have written is untouched, the #GP is
/// injected at the instruction (the processor delivers it), and the
/// state the delivery would change is as it was.
fn assert_left_to_the_processor(v: &PVcpu, frame_at: u64, why: &str) {
    assert_eq!(injected(v), GP, "{why}");
    assert_eq!(rip(v), TOP48 - 2, "{why}");
    assert_eq!(frame(v, frame_at), [0; 6], "{why}: nothing written");
    assert_ne!(v.vmcs.get(GuestNatural::Rflags) & RFLAGS_RF, 0, "{why}: RF");
}

/// A change to [`kernel`]'s state.
type Setup = fn(&mut PVcpu);

#[test]
fn what_the_processor_must_judge_is_injected_at_the_instruction() {
    let cases: [(&str, Setup); 9] = [
        ("gate not present", |v| {
            gate(v, HANDLER, 0x08, 0, 0xe, false)
        }),
        ("a call gate type", |v| gate(v, HANDLER, 0x08, 0, 0xc, true)),
        ("IDT limit below entry 13", |v| {
            v.vmcs.set(Guest32::IdtrLimit, 13 * 16 + 14);
        }),
        ("non-canonical handler", |v| {
            gate(v, 0x0000_8000_0000_1000, 0x08, 0, 0xe, true)
        }),
        ("a data segment", |v| gate(v, HANDLER, 0x10, 0, 0xe, true)),
        ("an LDT selector", |v| gate(v, HANDLER, 0x0c, 0, 0xe, true)),
        ("a single step pending", |v| {
            v.vmcs.set(GuestNatural::Rflags, IF | RFLAGS_TF);
        }),
        ("a non-canonical stack", |v| {
            v.vmcs.set(GuestNatural::Rsp, 0x0000_8000_0000_0008);
        }),
        ("the IDT not mapped", |v| {
            v.vmcs.set(GuestNatural::IdtrBase, 0x4000_0000_0000);
        }),
    ];
    for (why, setup) in cases {
        let mut v = kernel();
        setup(&mut v);
        assert_eq!(at_boundary(&mut v), Ok(ExitAction::Resume), "{why}");
        assert_left_to_the_processor(&v, 0x70_6000 - 48, why);
    }
}

#[test]
fn a_stack_in_monitor_memory_is_never_written() {
    // TSS.RSP0 points into the monitor's image, which no view maps: the
    // guest's own delivery would end in an EPT violation, so the monitor
    // writes nothing and lets the processor deliver (and fault).
    let mut v = kernel();
    user(&mut v);
    let target = MONITOR[0].start + 0x1000;
    put(&v, TSS + 4, target);
    let before = frame(&v, target - 48);
    assert_eq!(at_boundary(&mut v), Ok(ExitAction::Resume));
    assert_eq!(injected(&v), GP);
    assert_eq!(
        frame(&v, target - 48),
        before,
        "the monitor's memory is untouched"
    );
    assert_eq!(v.cpl(), Ok(3), "no privilege change");
}

#[test]
fn a_stack_on_a_read_only_page_is_left_to_the_processor() {
    // The page the frame would go to is read-only in the guest's own page
    // tables (CR0.WP set): hardware raises #PF during delivery.
    let mut v = kernel();
    let cr0 = v.vmcs.get(GuestNatural::Cr0);
    v.vmcs.set(GuestNatural::Cr0, cr0 | CR0_WP);
    let at = pte(0x70_5000);
    put(&v, at, get(&v, at) & !2);
    assert_eq!(at_boundary(&mut v), Ok(ExitAction::Resume));
    assert_left_to_the_processor(&v, 0x70_6000 - 48, "read-only stack page");
}

#[test]
fn a_stack_on_a_page_a_view_protects_is_left_to_the_processor() {
    // A protected page (read-only in every view): the EPT would refuse
    // the processor's push, so the monitor must not make it.
    let mut v = kernel();
    lock_page(&mut v, 0x70_5000);
    assert_eq!(at_boundary(&mut v), Ok(ExitAction::Resume));
    assert_left_to_the_processor(&v, 0x70_6000 - 48, "locked stack page");
}

/// Reads `buf` from the byte map `m` (`None` where a byte is missing),
/// as `plan` reads guest-linear memory.
fn from_map(m: &HashMap<u64, u8>, at: u64, buf: &mut [u8]) -> Option<()> {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = *m.get(&(at + i as u64))?;
    }
    Some(())
}

/// The interrupted state of the `plan` tests: 64-bit mode, paging off (the
/// byte map is the linear space), IDT at 0, GDT at 0x1000, TSS at 0x2000.
fn interrupted(cpl: u8, cs: u16, ss: u16, rsp: u64, rflags: u64) -> Interrupted {
    Interrupted {
        rip: TOP48,
        rflags,
        rsp,
        cs,
        ss,
        cpl,
        paging: PagingState {
            cr0: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
        },
        idt: (0, 0xfff),
        gdt: (0x1000, 0xff),
        tss: (0x2000, 0x67),
    }
}

#[test]
fn plan_follows_the_gate_descriptor_and_the_privilege_levels() {
    let tables: HashMap<u64, u8> = {
        let mut m = HashMap::new();
        let mut put = |at: u64, v: u64| {
            for (i, b) in v.to_le_bytes().into_iter().enumerate() {
                m.insert(at + i as u64, b);
            }
        };
        // Gate 13: a trap gate to 0x08:HANDLER, IST 0.
        put(
            13 * 16,
            (HANDLER & 0xffff)
                | (0x08 << 16)
                | (0xf << 40)
                | (1 << 47)
                | ((HANDLER & 0xffff_0000) << 32),
        );
        put(13 * 16 + 8, HANDLER >> 32);
        put(0x1008, KCODE);
        put(0x1018, KCODE | (3 << 45)); // DPL 3 code at 0x18
        put(0x2004, RSP0);
        m
    };
    let read = |at: u64, buf: &mut [u8]| from_map(&tables, at, buf);
    let s = interrupted(3, 0x33, 0x2b, 0x7fff_ffff_e008, IF);
    assert_eq!(
        plan(&s, read),
        Some(Delivery {
            rsp: RSP0 - 48,
            frame: [0, TOP48, 0x33, IF | RFLAGS_RF, 0x7fff_ffff_e008, 0x2b],
            rip: HANDLER,
            rflags: IF,
            cs: (0x08, 0xffff_ffff, 0xa09b),
            ss: Some((0, 1 << 16)),
        })
    );
    // A DPL 3 target from CPL 3: no stack switch, so the pushes are
    // user-mode accesses, which the model leaves to the processor.
    let mut g = tables.clone();
    g.insert(13 * 16 + 2, 0x18);
    let read3 = |at: u64, buf: &mut [u8]| from_map(&g, at, buf);
    assert_eq!(plan(&s, read3), None);
    // A kernel code segment from CPL 0 whose TSS is too short for RSP0 is
    // not needed: same level. A DPL 0 target with a TSS limit below RSP0
    // is the processor's (#TS).
    let short = Interrupted {
        tss: (0x2000, 0x8),
        ..s
    };
    assert_eq!(plan(&short, read), None);
}

#[test]
fn a_frame_across_two_pages_is_written_whole_or_not_at_all() {
    // RSP 0x70_6018: the frame is 0x70_5fe0..0x70_6010, across two pages.
    let mut v = kernel();
    v.vmcs.set(GuestNatural::Rsp, 0x70_6018);
    assert_eq!(at_boundary(&mut v), Ok(ExitAction::Resume));
    assert_eq!(injected(&v), 0);
    assert_eq!(get(&v, 0x70_5fe8), TOP48);
    assert_eq!(get(&v, 0x70_6008), 0x10, "SS on the second page");
    // With the second page locked, not even the first page's part.
    let mut v = kernel();
    v.vmcs.set(GuestNatural::Rsp, 0x70_6018);
    lock_page(&mut v, 0x70_6000);
    assert_eq!(at_boundary(&mut v), Ok(ExitAction::Resume));
    assert_left_to_the_processor(&v, 0x70_5fe0, "second page locked");
}

/// The cases an adversarial review of the first version found delivered
/// in software although the processor's own delivery faults (or writes an
/// entry the view may refuse): each is left to the processor now.
#[test]
fn what_the_review_found_is_left_to_the_processor() {
    let cases: [(&str, Setup); 9] = [
        // IDT entry 13 with S = 1 (access byte 0x9e): a code-segment
        // descriptor, no gate: #GP(13 * 8 + 2), then #DF.
        ("S = 1 in IDT entry 13", |v| {
            gate(v, HANDLER, 0x08, 0, 0x1e, true)
        }),
        // CPL 3 to a DPL 3 handler: the pushes are user-mode accesses,
        // and the stack page is a supervisor page (#PF).
        ("user-mode pushes", |v| {
            user(v);
            v.vmcs.set(GuestNatural::Rsp, 0x70_6008);
            gate(v, HANDLER, 0x33, 0, 0xe, true);
        }),
        // The IDT on a user page with SMAP: the implicit supervisor read
        // faults whatever RFLAGS.AC.
        ("SMAP, IDT on a user page", |v| {
            for at in [PML4, PDPT, PD + 8 * 3, pte(IDT)] {
                put(v, at, get(v, at) | 4);
            }
            let cr4 = v.vmcs.get(GuestNatural::Cr4);
            v.vmcs.set(GuestNatural::Cr4, cr4 | CR4_SMAP);
        }),
        // XD in the stack's PTE with EFER.NXE clear: reserved, #PF.
        ("XD without NXE", |v| {
            let efer = v.vmcs.get(Guest64::Efer);
            v.vmcs.set(Guest64::Efer, efer & !EFER_NXE);
            let at = pte(0x70_5000);
            put(v, at, get(v, at) | (1 << 63));
        }),
        // CR4 features the model does not know: LASS, FRED, PKS.
        ("LASS", |v| set_cr4_bit(v, 27)),
        ("FRED", |v| set_cr4_bit(v, 32)),
        ("PKS", |v| set_cr4_bit(v, 24)),
        // A clear in the PT's entry of the stack page: the processor
        // would set it, writing the page table.
        ("A clear on the stack's walk", |v| {
            let at = pte(0x70_5000);
            put(v, at, get(v, at) & !0x20);
        }),
        // D clear on the stack page: the processor would set it.
        ("D clear on the stack page", |v| {
            let at = pte(0x70_5000);
            put(v, at, get(v, at) & !0x40);
        }),
    ];
    for (why, setup) in cases {
        let mut v = kernel();
        setup(&mut v);
        let frame_at = v.vmcs.get(GuestNatural::Rsp) & !0xf;
        assert_eq!(at_boundary(&mut v), Ok(ExitAction::Resume), "{why}");
        assert_left_to_the_processor(&v, frame_at - 48, why);
    }
}

/// Sets CR4 bit `bit` in the guest's CR4.
fn set_cr4_bit(v: &mut PVcpu, bit: u32) {
    let cr4 = v.vmcs.get(GuestNatural::Cr4);
    v.vmcs.set(GuestNatural::Cr4, cr4 | (1u64 << bit));
}

/// Whatever `plan` accepts passes the VM-entry checks on CS and SS (SDM
/// Vol. 3C §27.3.1.2) and RFLAGS (§27.3.1.4): every access byte and flags
/// nibble of the target's descriptor, three limits, every CPL, with and
/// without IST (from the adversarial review).
#[test]
fn every_planned_delivery_passes_the_vm_entry_checks() {
    fn put(mem: &mut HashMap<u64, u8>, at: u64, v: u64) {
        for (i, b) in v.to_le_bytes().into_iter().enumerate() {
            mem.insert(at + i as u64, b);
        }
    }
    let mut mem = HashMap::<u64, u8>::new();
    for i in 0..8 {
        put(&mut mem, 0x2004 + 8 * i, 0x7000_0000_1238);
    }
    put(&mut mem, 13 * 16 + 8, 0xffff_ffff);
    let mut checked = 0u64;
    for ist in [0u64, 1] {
        put(
            &mut mem,
            13 * 16,
            (0x08 << 16) | (ist << 32) | (0xe << 40) | (1 << 47) | 0x1000,
        );
        for bits in 0u64..0x1000 {
            // Access byte (bits 47:40) and flags nibble (bits 55:52).
            let (access, flags) = (bits & 0xff, bits >> 8);
            for raw_limit in [0u64, 0xffff, 0xf_ffff] {
                let desc = (raw_limit & 0xffff)
                    | ((raw_limit >> 16) << 48)
                    | (access << 40)
                    | (flags << 52);
                put(&mut mem, 0x1008, desc);
                for cpl in 0..=3u8 {
                    let read = |at: u64, buf: &mut [u8]| from_map(&mem, at, buf);
                    let s = interrupted(
                        cpl,
                        0x08 | u16::from(cpl),
                        0x10 | u16::from(cpl),
                        0x7fff_0000_0008,
                        // Every legal bit but VM and TF.
                        0x3f_7fd7 & !RFLAGS_VM & !RFLAGS_TF,
                    );
                    let Some(d) = plan(&s, read) else { continue };
                    checked += 1;
                    let (sel, limit, ar) = d.cs;
                    let ty = ar & 0xf;
                    assert!(ty == 9 || ty == 11, "{desc:#x}: CS type {ty}");
                    assert!(ar & (1 << 4) != 0 && ar & (1 << 7) != 0, "{desc:#x}: S, P");
                    assert_eq!(ar & 0xf00, 0, "{desc:#x}: AR 11:8");
                    assert_eq!(ar & !0x1_ffff, 0, "{desc:#x}: AR 31:17");
                    assert_eq!(ar & (1 << 16), 0, "{desc:#x}: CS usable");
                    assert!(
                        ar & (1 << 13) != 0 && ar & (1 << 14) == 0,
                        "{desc:#x}: L, D"
                    );
                    let g = ar & (1 << 15) != 0;
                    if limit & 0xfff != 0xfff {
                        assert!(!g, "{desc:#x}: limit 11:0 vs G");
                    }
                    if limit & 0xfff0_0000 != 0 {
                        assert!(g, "{desc:#x}: limit 31:20 vs G");
                    }
                    let ss_ar = 0xc093 | (u32::from(cpl) << 5);
                    let (ss_sel, ss_ar) = d.ss.unwrap_or((s.ss, ss_ar));
                    let ss_dpl = (ss_ar >> 5) & 3;
                    assert_eq!((ar >> 5) & 3, ss_dpl, "{desc:#x}: CS.DPL = SS.DPL");
                    assert_eq!(u32::from(ss_sel & 3), ss_dpl, "{desc:#x}: SS.RPL = SS.DPL");
                    assert_eq!(sel & 3, ss_sel & 3, "{desc:#x}: CS.RPL = SS.RPL");
                    assert_eq!(d.rflags & 0xffff_ffff_ffc0_8028, 0, "RFLAGS reserved");
                    assert_eq!(d.rflags & 2, 2, "RFLAGS bit 1");
                    assert_eq!(d.rip >> 47, 0x1_ffff, "canonical handler");
                    assert!(
                        d.enters((s.ss, 0xc093 | (u32::from(cpl) << 5))),
                        "{desc:#x}: the guard agrees"
                    );
                }
            }
        }
    }
    assert!(checked > 100, "{checked}");
}

#[test]
fn the_vm_entry_guard_refuses_what_vm_entry_would() {
    let good = Delivery {
        rsp: 0x70_5fd0,
        frame: [0; 6],
        rip: HANDLER,
        rflags: 2,
        cs: (0x08, 0xffff_ffff, 0xa09b),
        ss: None,
    };
    let ss = (0x10, 0xc093);
    assert!(good.enters(ss));
    let bad = [
        Delivery {
            cs: (0x08, 0xffff_ffff, 0xa093),
            ..good
        }, // a data segment
        Delivery {
            cs: (0x08, 0xffff_ffff, 0xc09b),
            ..good
        }, // D, not L
        Delivery {
            cs: (0x08, 0xff00, 0xa09b),
            ..good
        }, // G with limit 11:0 not all ones
        Delivery {
            cs: (0x0b, 0xffff_ffff, 0xa09b),
            ..good
        }, // CS.RPL 3, SS.RPL 0
        Delivery {
            cs: (0x08, 0xffff_ffff, 0xa0fb),
            ..good
        }, // CS.DPL 3, SS.DPL 0
        Delivery {
            rflags: 2 | RFLAGS_VM,
            ..good
        }, // VM
        Delivery { rflags: 0, ..good },  // bit 1 clear
        Delivery { rip: TOP48, ..good }, // non-canonical
    ];
    for d in bad {
        assert!(!d.enters(ss), "{d:x?}");
    }
    // A change to ring 0 with the null SS it loads.
    let to_ring0 = Delivery {
        ss: Some((0, 1 << 16)),
        ..good
    };
    assert!(to_ring0.enters((0x2b, 0xc0f3)));
}
