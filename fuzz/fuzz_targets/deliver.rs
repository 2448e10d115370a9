//! The software delivery of the #GP past the canonical boundary
//! (`okernel::exit::deliver::plan`): any IDT gate, GDT descriptor, TSS
//! slots, limits, CPL, RSP and RFLAGS, read through a fuzzer-filled
//! memory. Oracles: no panic; every delivery `plan` accepts passes the
//! VM-entry checks its guard (`Delivery::enters`) applies, so the guard
//! never has to catch one; the frame is six words below a 16-byte
//! aligned stack, holds the interrupted state with RF set, and the new
//! RFLAGS has TF, NT, RF and VM clear (and IF too for an interrupt gate).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use okernel::exit::deliver::{Interrupted, plan};
use okernel::policy::guest_paging::PagingState;

/// Where the tables lie in the fuzzed address space.
const IDT: u64 = 0x1000;
const GDT: u64 = 0x2000;
const TSS: u64 = 0x3000;

#[derive(Debug, Arbitrary)]
struct Input {
    gate: [u8; 16],
    descriptor: u64,
    selector_index: u8,
    tss_slots: [u64; 10],
    idt_limit: u16,
    gdt_limit: u16,
    tss_limit: u16,
    cpl: u8,
    rsp: u64,
    rflags: u64,
    cs: u16,
    ss: u16,
    /// Bytes the reads of other addresses get; `None` reads fail.
    filler: Option<u8>,
}

fuzz_target!(|input: Input| {
    let index = u64::from(input.selector_index & 0x1f) * 8;
    let read = |at: u64, buf: &mut [u8]| {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = at.wrapping_add(i as u64);
            *b = if (IDT + 13 * 16..IDT + 14 * 16).contains(&a) {
                input.gate[(a - IDT - 13 * 16) as usize]
            } else if (GDT + index..GDT + index + 8).contains(&a) {
                input.descriptor.to_le_bytes()[(a - GDT - index) as usize]
            } else if (TSS..TSS + 80).contains(&a) {
                let off = (a - TSS) as usize;
                input.tss_slots[off / 8].to_le_bytes()[off % 8]
            } else {
                input.filler?
            };
        }
        Some(())
    };
    // RFLAGS as a running IA-32e guest can have it (VM entry checked it):
    // the defined bits but VM, bit 1 set (SDM Vol. 3C §27.3.1.4).
    let rflags = (input.rflags & 0x3d_7fd5) | 2;
    let s = Interrupted {
        rip: 0x0000_8000_0000_0000,
        rflags,
        rsp: input.rsp,
        cs: input.cs,
        ss: input.ss,
        cpl: input.cpl & 3,
        paging: PagingState {
            cr0: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
        },
        idt: (IDT, u32::from(input.idt_limit)),
        gdt: (GDT, u32::from(input.gdt_limit)),
        tss: (TSS, u32::from(input.tss_limit)),
    };
    let Some(d) = plan(&s, read) else {
        return;
    };
    // The interrupted SS as VM entry found it: usable, DPL = CPL, RPL =
    // CPL (what a processor in IA-32e mode at that CPL has).
    let ss_before = (
        (input.ss & !3) | u16::from(s.cpl),
        0xc093 | (u32::from(s.cpl) << 5),
    );
    let s = Interrupted {
        ss: ss_before.0,
        ..s
    };
    let Some(d2) = plan(&s, read) else {
        panic!("the SS selector changed the plan: {d:x?}");
    };
    assert!(
        d2.enters(ss_before),
        "the guard would refuse {d2:x?} for {s:x?}"
    );
    assert_eq!(d2.rsp & 0xf, 0, "frame aligned: {d2:x?}");
    assert_eq!(
        d2.frame,
        [
            0,
            s.rip,
            u64::from(s.cs),
            s.rflags | (1 << 16),
            s.rsp,
            u64::from(s.ss)
        ]
    );
    let cleared = (1 << 8) | (1 << 14) | (1 << 16) | (1 << 17);
    assert_eq!(d2.rflags & cleared, 0, "TF, NT, RF, VM cleared");
    let kind = u64::from(input.gate[5]) & 0x1f;
    if kind == 0xe {
        assert_eq!(d2.rflags & (1 << 9), 0, "an interrupt gate clears IF");
    }
    let new_cpl = u32::from(d2.cs.0 & 3);
    assert!(new_cpl <= u32::from(s.cpl), "privilege never drops");
    assert_eq!(
        d2.ss.is_some(),
        new_cpl < u32::from(s.cpl),
        "a null SS on a change only"
    );
});
