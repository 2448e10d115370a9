//! The vCPU at the PVH entry point (Xen `docs/misc/pvh.pandoc`, "Initial
//! state"): 32-bit protected mode with paging off, CS a flat 4 GiB
//! execute/read segment, DS/ES/FS/GS/SS flat 4 GiB read/write segments,
//! TR a 32-bit busy TSS, EBX the start info's physical address, every
//! other register undefined (zero here). The descriptors are also written
//! to a small GDT, so that a reload of a selector finds what the hidden
//! part already holds (SDM Vol. 3A §3.4.5 "Segment Descriptors").

use super::boot::GDT_ADDR;
use super::memory::GuestRam;
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.ET: always 1 on processors since the i486.
pub const CR0_ET: u64 = 1 << 4;
/// RFLAGS bit 1, which always reads 1.
pub const RFLAGS_FIXED: u64 = 1 << 1;
/// RFLAGS.IF.
pub const RFLAGS_IF: u64 = 1 << 9;

/// The boot GDT's selectors.
pub const CODE_SELECTOR: u16 = 0x08;
/// The flat data selector.
pub const DATA_SELECTOR: u16 = 0x10;
/// The TSS selector.
pub const TSS_SELECTOR: u16 = 0x18;
/// The TSS limit (a 32-bit TSS is 104 bytes).
const TSS_LIMIT: u32 = 0x67;

/// The boot GDT: null, flat code (0x08), flat data (0x10), busy TSS (0x18).
pub const GDT: [u64; 4] = [
    0,
    0x00cf_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x0000_8b00_0000_0067,
];

fn flat(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Writes [`GDT`] at [`GDT_ADDR`].
pub fn write_gdt(ram: &mut GuestRam) {
    let bytes: Vec<u8> = GDT.iter().flat_map(|d| d.to_le_bytes()).collect();
    ram.write(GDT_ADDR, &bytes);
}

/// The segment and control registers at entry, over `sregs` as KVM
/// created them (which keeps its APIC base).
pub fn entry_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    sregs.cs = flat(CODE_SELECTOR, 0xb); // execute/read, accessed
    let data = flat(DATA_SELECTOR, 0x3); // read/write, accessed
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: 0,
        limit: TSS_LIMIT,
        selector: TSS_SELECTOR,
        type_: 0xb, // 32-bit busy TSS
        present: 1,
        s: 0,
        db: 0,
        g: 0,
        ..Default::default()
    };
    sregs.ldt = kvm_segment {
        unusable: 1,
        ..Default::default()
    };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_ET;
    sregs.cr2 = 0;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

/// The general registers at entry: RIP at the PVH entry, EBX the start
/// info, interrupts off.
pub fn entry_regs(entry: u32, start_info: u64) -> kvm_regs {
    kvm_regs {
        rip: u64::from(entry),
        rbx: start_info,
        rflags: RFLAGS_FIXED,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a GDT descriptor's base, limit (in bytes) and access byte.
    fn decode(d: u64) -> (u64, u64, u8, bool) {
        let base = ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24);
        let raw_limit = (d & 0xffff) | (((d >> 48) & 0xf) << 16);
        let g = d & (1 << 55) != 0;
        let limit = if g {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        };
        (base, limit, (d >> 40) as u8, d & (1 << 54) != 0)
    }

    #[test]
    fn gdt_matches_the_hidden_segment_state() {
        let s = entry_sregs(kvm_sregs::default());
        for (seg, idx) in [(s.cs, 1), (s.ds, 2), (s.ss, 2), (s.tr, 3)] {
            let (base, limit, access, db) = decode(GDT[idx]);
            assert_eq!(seg.selector, (idx * 8) as u16);
            assert_eq!((seg.base, u64::from(seg.limit)), (base, limit));
            assert_eq!(seg.type_, access & 0xf, "type of {idx}");
            assert_eq!(seg.s, (access >> 4) & 1, "S of {idx}");
            assert_eq!(seg.present, access >> 7, "P of {idx}");
            assert_eq!(seg.db == 1, db, "D/B of {idx}");
        }
        assert_eq!(s.cr0 & CR0_PE, CR0_PE);
        assert_eq!(s.cr0 & (1 << 31), 0, "paging off");
        assert_eq!(s.efer, 0);
    }

    #[test]
    fn regs_point_ebx_at_the_start_info() {
        let r = entry_regs(0x10_0040, 0x6000);
        assert_eq!((r.rip, r.rbx), (0x10_0040, 0x6000));
        assert_eq!(r.rflags & RFLAGS_IF, 0);
    }
}
