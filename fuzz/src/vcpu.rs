//! A virtual CPU over okernel's fake VMCS and fake CPU, built the way
//! okernel's host tests build one (`okernel/src/tests/mod.rs`): the
//! capability probe of a Bochs-like processor, the launch-time controls
//! and guest state, and guest memory through an identity EPT view of a
//! fixed memory map, so the Exit hypercall can read a reason.

use std::cell::RefCell;

use ept::Hpa;
use okernel::hw::fake::{FakeCpu, FakeVmcs};
use okernel::hw::phys::IDENTITY_MAP_END;
use okernel::hw::phys::PhysMemory;
use okernel::launch::ept_view::build_base_view;
use okernel::launch::setup;
use okernel::launch::{DescriptorTable, GuestEntry, GuestMode, MemoryKind, MemoryRange, PhysRange};
use okernel::mem::ViewMemory;
use okernel::msrs;
use okernel::policy::BasePolicy;
use okernel::vcpu::{CrConfig, Vcpu};
use okernel::vmx::regs::GuestRegisters;

use crate::pool::Pool;

/// The guest's first RIP.
pub const RIP: u64 = 0x20_1000;
/// Where the fuzzer's bytes lie in guest RAM (the rest of RAM reads as 0).
pub const WINDOW: u64 = 0x20_0000;
/// How many bytes the window holds.
pub const WINDOW_LEN: usize = 0x2000;

const fn range(start: u64, end: u64, kind: MemoryKind) -> MemoryRange {
    MemoryRange {
        range: PhysRange { start, end },
        kind,
    }
}

/// The guest's memory map: low RAM, a reserved hole, RAM to 128 MiB, an
/// MMIO page, and RAM above the monitor's 4 GiB identity map.
pub const MAP: [MemoryRange; 5] = [
    range(0, 0x9_f000, MemoryKind::Ram),
    range(0x9_f000, 0x10_0000, MemoryKind::Reserved),
    range(0x10_0000, 0x800_0000, MemoryKind::Ram),
    range(0xfee0_0000, 0xfee0_1000, MemoryKind::Mmio),
    range(0x1_0000_0000, 0x1_0010_0000, MemoryKind::Ram),
];
/// The monitor's image (not page-aligned at its end, as a real one).
pub const MONITOR: [PhysRange; 1] = [PhysRange {
    start: 0x40_0000,
    end: 0x48_0123,
}];
/// The monitor's frame pool.
pub const POOL: PhysRange = PhysRange {
    start: 0x100_0000,
    end: 0x140_0000,
};

/// Host-physical memory as the monitor reads and writes it for a
/// hypercall. It is the oracle of invariant 1: a copy from or to anything
/// but guest RAM below the identity map and outside monitor memory panics.
#[derive(Debug)]
pub struct FakePhys {
    /// The bytes at [`WINDOW`].
    pub window: RefCell<Vec<u8>>,
    /// Every copy, as (host-physical address, length).
    pub copies: RefCell<Vec<(u64, usize)>>,
}

impl FakePhys {
    /// Memory whose window holds `bytes` (zero-padded or cut to
    /// [`WINDOW_LEN`]).
    pub fn new(bytes: &[u8]) -> Self {
        let mut window = vec![0; WINDOW_LEN];
        let n = bytes.len().min(WINDOW_LEN);
        window[..n].copy_from_slice(&bytes[..n]);
        Self {
            window: RefCell::new(window),
            copies: RefCell::default(),
        }
    }
}

/// Whether `[start, end)` lies in guest RAM of [`MAP`], below the identity
/// map, and outside [`MONITOR`] and [`POOL`] (page-aligned outward).
pub fn readable(start: u64, end: u64) -> bool {
    let in_ram = MAP
        .iter()
        .filter(|m| m.kind == MemoryKind::Ram)
        .any(|m| m.range.start <= start && end <= m.range.end);
    let page_out = |r: &PhysRange| (r.start & !0xfff, r.end.div_ceil(0x1000) * 0x1000);
    let monitor = MONITOR
        .iter()
        .chain(std::iter::once(&POOL))
        .map(page_out)
        .any(|(s, e)| start < e && s < end);
    in_ram && !monitor && end <= IDENTITY_MAP_END
}

impl PhysMemory for FakePhys {
    fn copy(&self, hpa: Hpa, buf: &mut [u8]) {
        let hpa = hpa.0;
        let end = hpa + buf.len() as u64;
        assert!(
            readable(hpa, end),
            "monitor copied host-physical [{hpa:#x}, {end:#x}) for the guest: not readable guest RAM"
        );
        buf.fill(0);
        let window = self.window.borrow();
        for (i, b) in buf.iter_mut().enumerate() {
            let at = hpa + i as u64;
            if (WINDOW..WINDOW + WINDOW_LEN as u64).contains(&at) {
                *b = window[(at - WINDOW) as usize];
            }
        }
        self.copies.borrow_mut().push((hpa, buf.len()));
    }

    fn write(&self, hpa: Hpa, bytes: &[u8]) {
        let hpa = hpa.0;
        let end = hpa + bytes.len() as u64;
        assert!(
            readable(hpa, end),
            "monitor wrote host-physical [{hpa:#x}, {end:#x}) for the guest: not guest RAM outside monitor memory"
        );
        let mut window = self.window.borrow_mut();
        for (i, &b) in bytes.iter().enumerate() {
            let at = hpa + i as u64;
            if (WINDOW..WINDOW + WINDOW_LEN as u64).contains(&at) {
                window[(at - WINDOW) as usize] = b;
            }
        }
    }
}

impl okernel::policy::views::SharedFrames for Pool {
    fn available(&self) -> u64 {
        Pool::available(self)
    }
}

/// The guest memory of [`FuzzVcpu`].
pub type Memory = ViewMemory<Pool, FakePhys>;
/// The virtual CPU the exit targets drive.
pub type FuzzVcpu = Vcpu<FakeVmcs, FakeCpu, BasePolicy, Memory>;

/// The MSRs every x86-64 processor has that the fake's Bochs preset leaves
/// out (SYSCALL and swapgs state), so a WRMSR the monitor performs for the
/// guest does not trip the fake's "would #GP" check.
pub const SYSCALL_MSRS: [u32; 5] = [
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0xc000_0102,
];

/// A guest entry in `mode` at [`RIP`].
pub fn entry(mode: GuestMode) -> GuestEntry {
    GuestEntry {
        mode,
        rip: RIP,
        rsp: 0x30_0000,
        regs: GuestRegisters::default(),
        gdtr: DescriptorTable {
            base: 0,
            limit: 0xffff,
        },
        idtr: DescriptorTable { base: 0, limit: 0 },
    }
}

/// A virtual CPU as `launch` leaves it before the first VM entry: guest
/// state for `mode`, the base policy, and guest memory whose window holds
/// `window`.
pub fn build(mode: GuestMode, window: &[u8]) -> FuzzVcpu {
    let mut cpu = FakeCpu::vmx_capable();
    for m in SYSCALL_MSRS {
        cpu.set_msr(m, 0);
    }
    let caps = okernel::check::probe(&mut cpu).expect("the fake CPU is VMX-capable");
    let cr = CrConfig::new(caps.cr0_fixed, caps.cr4_fixed);
    let ept = ept::EptCaps::from_msrs(
        caps.ept.0,
        cpu.read_msr_for_tests(msrs::IA32_VMX_PROCBASED_CTLS2),
        39,
    )
    .expect("the fake CPU's EPT capabilities decode");
    let mut vmcs = FakeVmcs::new();
    setup::write_controls(
        &mut vmcs,
        &caps,
        mode,
        0x5000,
        setup::io_bitmaps(),
        0x601e,
        &cr,
    )
    .expect("controls fit the fake VMCS");
    setup::write_guest_state(&mut vmcs, &entry(mode), &cr, true, 0x0007_0406_0007_0406)
        .expect("guest state fits the fake VMCS");
    let view = build_base_view(Pool::new(), ept, &MAP, &MONITOR, POOL)
        .expect("the base view of MAP builds");
    let memory = Memory::new(view, &MAP, &MONITOR, POOL, FakePhys::new(window))
        .expect("MAP has few enough ranges");
    Vcpu::with_memory(vmcs, cpu, BasePolicy, cr, ept, memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_both_modes() {
        let v = build(GuestMode::Long64 { cr3: 0x10_0000 }, b"hi");
        assert!(v.in_64bit_mode().unwrap());
        let v = build(GuestMode::Protected32, &[]);
        assert!(!v.in_64bit_mode().unwrap());
    }

    #[test]
    fn readable_excludes_monitor_and_holes() {
        assert!(readable(WINDOW, WINDOW + 16));
        assert!(!readable(0x40_0000, 0x40_0001));
        assert!(!readable(0x48_0f00, 0x48_0f01), "page-aligned outward");
        assert!(!readable(0x9_f000, 0x9_f001));
        assert!(!readable(0x1_0000_0000, 0x1_0000_0001));
    }
}
