//! The protection policy against the fake VMCS, a heap-backed frame pool
//! and a sparse fake physical memory: every policy hypercall's validation
//! (each error code, and that nothing changed), each view's permissions
//! after lock (walked with the `ept` crate), the CR-pin, MSR-lock and
//! descriptor-table exits, the remap defence, gates and the audit calls.

mod contexts;
mod entry_flags;
mod exits;
mod fetch_gp;
mod gates;
mod page_table;
mod patch;
mod protected_pages;
mod regions;
mod smp;
mod static_calls;
mod table_owner;
mod xapic;

use std::cell::RefCell;
use std::collections::HashMap;

use ept::Perms;
use okernel_abi::hypercall::{Call, Status};

use super::*;
use crate::hw::msr_bitmap_page::MsrBitmapPage;
use crate::hw::phys::PhysMemory;
use crate::launch::ept_view::build_base_view;
use crate::mem::ViewMemory;
use crate::memmap::{Gpa, Hpa, MemoryKind, MemoryRange, PhysRange};
use crate::policy::Protection;
use crate::policy::protection::PolicyCaps;
use crate::policy::views::Views;
use crate::vmx::regs::Gpr;

const fn range(start: u64, end: u64, kind: MemoryKind) -> MemoryRange {
    MemoryRange {
        range: PhysRange { start, end },
        kind,
    }
}

/// RAM below 640 KiB and 1..128 MiB, reserved in between, one MMIO page.
pub const MAP: [MemoryRange; 4] = [
    range(0, 0x9_f000, MemoryKind::Ram),
    range(0x9_f000, 0x10_0000, MemoryKind::Reserved),
    range(0x10_0000, 0x800_0000, MemoryKind::Ram),
    range(0xfee0_0000, 0xfee0_1000, MemoryKind::Mmio),
];
/// The monitor's image.
pub const MONITOR: [PhysRange; 1] = [PhysRange {
    start: 0x40_0000,
    end: 0x48_0000,
}];
/// The frame pool.
pub const POOL: PhysRange = PhysRange {
    start: 0x100_0000,
    end: 0x140_0000,
};

/// The guest's page tables: PML4, PDPT, PD (identity map of the first
/// 128 MiB with 2 MiB pages) and one page table for the 2 MiB at 6 MiB.
pub const PML4: u64 = 0x10_0000;
/// The PDPT.
pub const PDPT: u64 = 0x10_1000;
/// The page directory.
pub const PD: u64 = 0x10_2000;
/// A page table mapping 6..8 MiB with 4 KiB pages.
pub const PT: u64 = 0x10_3000;
/// Kernel text (4 pages).
pub const TEXT: u64 = 0x20_0000;
/// Read-only data.
pub const RODATA: u64 = 0x21_0000;
/// The credential table.
pub const CRED: u64 = 0x30_0000;
/// A page of ordinary RAM.
pub const DATA: u64 = 0x50_0000;
/// A page to protect.
pub const SECRET: u64 = 0x51_0000;

/// Sparse physical memory: 4 KiB pages created on first touch.
#[derive(Debug, Default)]
pub struct SparsePhys(RefCell<HashMap<u64, Box<[u8; 4096]>>>);

impl SparsePhys {
    fn with_page<T>(&self, page: u64, f: impl FnOnce(&mut [u8; 4096]) -> T) -> T {
        let mut m = self.0.borrow_mut();
        f(m.entry(page).or_insert_with(|| Box::new([0; 4096])))
    }
}

impl PhysMemory for SparsePhys {
    fn copy(&self, hpa: Hpa, buf: &mut [u8]) {
        let hpa = hpa.0;
        for (i, b) in buf.iter_mut().enumerate() {
            let a = hpa + i as u64;
            *b = self.with_page(a & !0xfff, |p| p[(a & 0xfff) as usize]);
        }
    }

    fn write(&self, hpa: Hpa, bytes: &[u8]) {
        let hpa = hpa.0;
        for (i, b) in bytes.iter().enumerate() {
            let a = hpa + i as u64;
            self.with_page(a & !0xfff, |p| p[(a & 0xfff) as usize] = *b);
        }
    }
}

/// The guest memory of the policy tests: as the run's, tracked in a fuzz
/// build ([`crate::launch::seam::RunMemory`]).
pub type Memory = crate::launch::seam::RunMemory<ViewMemory<Heap, SparsePhys>>;
/// The virtual CPU of the policy tests.
pub type PVcpu = Vcpu<FakeVmcs, FakeCpu, Protection, Memory>;

/// A VCPU with the protection policy (MBEC and descriptor-table exiting
/// available when `mbec`/`dt`), the base view over [`MAP`], and the
/// guest's page tables in place.
pub fn pvcpu_with(caps: PolicyCaps) -> PVcpu {
    let v = vcpu();
    let heap = Heap::default();
    let view = build_base_view(heap, v.ept, &MAP, &MONITOR, POOL).unwrap();
    #[allow(clippy::useless_conversion)] // the identity without `fuzz`
    let memory: Memory = ViewMemory::new(view, &MAP, &MONITOR, POOL, SparsePhys::default())
        .unwrap()
        .into();
    let page: &'static mut [u8; 4096] = Box::leak(Box::new([0u8; 4096]));
    // SAFETY: a leaked page used only by this handle.
    let bitmap = unsafe { MsrBitmapPage::new(std::ptr::NonNull::from(page)) };
    let policy = Protection::new(caps, Some(bitmap));
    let mut p = Vcpu::with_memory(v.vmcs, v.cpu, policy, v.cr, v.ept, memory);
    let w = |p: &PVcpu, at: u64, v: u64| p.memory.phys().write(Hpa(at), &v.to_le_bytes());
    const P: u64 = 1;
    const RW: u64 = 2;
    const PS: u64 = 0x80;
    w(&p, PML4, PDPT | P | RW);
    w(&p, PDPT, PD | P | RW);
    for i in 0..64 {
        w(&p, PD + 8 * i, (i << 21) | P | RW | PS);
    }
    w(&p, PD + 8 * 3, PT | P | RW);
    for i in 0..512 {
        w(&p, PT + 8 * i, (0x60_0000 + (i << 12)) | P | RW);
    }
    p.cpu.invepts = 0;
    p
}

/// Every capability on.
pub const ALL: PolicyCaps = PolicyCaps {
    mbec: true,
    descriptor_table_exiting: true,
    invept_all: true,
    cet: false,
    mtf: true,
};

/// The default policy VCPU.
pub fn pvcpu() -> PVcpu {
    pvcpu_with(ALL)
}

/// Makes hypercall `call` with RDI, RSI, RDX; returns the status.
pub fn call(v: &mut PVcpu, call: Call, args: [u64; 3]) -> Status {
    v.vmcs.set(GuestNatural::Rip, RIP);
    v.regs.set(Gpr::Rax, call.raw());
    v.regs.set(Gpr::Rdi, args[0]);
    v.regs.set(Gpr::Rsi, args[1]);
    v.regs.set(Gpr::Rdx, args[2]);
    let r = run(v, ExitReason::Vmcall, 0, 3);
    assert_eq!(r, Ok(ExitAction::Resume));
    Status::from_raw(v.regs.rax()).expect("a defined status")
}

/// Makes a call that must succeed; returns RDI.
pub fn ok(v: &mut PVcpu, c: Call, args: [u64; 3]) -> u64 {
    assert_eq!(call(v, c, args), Status::Success, "{c:?} {args:x?}");
    assert_eq!(rip(v), RIP + 3, "{c:?} resumes after the VMCALL");
    v.regs.rdi()
}

/// Registers and locks a region; returns its id.
pub fn lock(v: &mut PVcpu, base: u64, len: u64, kind: okernel_abi::policy::RegionKind) -> u64 {
    let id = ok(v, Call::RegisterRegion, [base, len, kind as u64]);
    ok(v, Call::LockRegion, [id, 0, 0]);
    id
}

/// The rights context `ctx`'s view gives `gpa` (None: not mapped).
pub fn perms(v: &PVcpu, ctx: u16, gpa: u64) -> Option<Perms> {
    Views::translate(&v.memory, ctx, Gpa(gpa)).map(|t| t.page.attrs.perms)
}

/// Every view's rights on a sample of pages, to prove nothing changed.
pub fn snapshot(v: &PVcpu) -> Vec<Option<Perms>> {
    let pages = [
        0u64, PML4, PT, TEXT, RODATA, CRED, DATA, SECRET, 0x9_f000, 0x40_0000,
    ];
    (0..=8)
        .flat_map(|c| pages.iter().map(move |&p| (c, p)))
        .map(|(c, p)| perms(v, c, p))
        .collect()
}

/// Runs `f` in untrusted context `ctx`: switches there from context 0.
/// Locks what a gate needs (`Env::gate_target`): kernel text (4 pages at
/// [`TEXT`]) and the guest's page tables (PML4, PDPT, PD, PT at [`PML4`]),
/// so that a gate's walk runs through locked tables only.
pub fn lock_for_gates(v: &mut PVcpu) {
    lock(v, TEXT, 0x4000, okernel_abi::policy::RegionKind::Text);
    lock(v, PML4, 0x4000, okernel_abi::policy::RegionKind::PageTable);
}

pub fn enter(v: &mut PVcpu, ctx: u64) {
    ok(v, Call::SwitchContext, [ctx, 0, 0]);
    assert_eq!(v.policy.current, ctx as u16);
}
