//! Launch-time construction: configuration checks, VMCS guest/host/control
//! state, the base EPT view.

use ept::{Gpa, MemoryType};

use super::*;
use crate::arch::descriptors::Selectors;
use crate::bits::{CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME};
use crate::launch::config::LaunchError;
use crate::launch::ept_view::build_base_view;
use crate::launch::setup::{HostState, tss_base, write_host_state};
use crate::launch::{LaunchConfig, MIN_POOL_BYTES, validate};
use crate::memmap::{MemoryKind, MemoryRange, PhysRange};
use crate::vmx::capability::FixedBits;
use crate::vmx::controls::EntryControls;
use crate::vmx::fields::{
    Control64, ControlNatural, Guest16, Guest32, Guest64, Host16, HostNatural,
};

fn never(_: Outcome, _: &str) -> ! {
    unreachable!()
}

use okernel_abi::result::Outcome;

const MAP: [MemoryRange; 3] = [
    MemoryRange {
        range: PhysRange {
            start: 0,
            end: 0x9_f000,
        },
        kind: MemoryKind::Ram,
    },
    MemoryRange {
        range: PhysRange {
            start: 0x10_0000,
            end: 0x800_0000,
        },
        kind: MemoryKind::Ram,
    },
    MemoryRange {
        range: PhysRange {
            start: 0xfee0_0000,
            end: 0xfee0_1000,
        },
        kind: MemoryKind::Mmio,
    },
];
const MONITOR: [PhysRange; 1] = [PhysRange {
    start: 0x40_0000,
    end: 0x48_0123,
}];
const POOL: PhysRange = PhysRange {
    start: 0x100_0000,
    end: 0x140_0000,
};

fn config(guest: GuestEntry) -> LaunchConfig<'static> {
    LaunchConfig {
        guest,
        memory_map: &MAP,
        monitor_ranges: &MONITOR,
        frame_pool: POOL,
        platform_ports: Default::default(),
        report: never,
        application_processors: 0,
    }
}

#[test]
fn validate_accepts_a_loader_like_config() {
    assert_eq!(validate(&config(entry64())), Ok(()));
}

#[test]
fn validate_rejects_bad_pools_and_entries() {
    let mut c = config(entry64());
    c.frame_pool = PhysRange {
        start: 0x100_0800,
        end: 0x140_0000,
    };
    assert!(matches!(
        validate(&c),
        Err(LaunchError::BadFramePool { .. })
    ));
    c.frame_pool = PhysRange::new(0x100_0000, MIN_POOL_BYTES - 4096);
    assert!(matches!(
        validate(&c),
        Err(LaunchError::BadFramePool { .. })
    ));
    let mut e = entry64();
    e.rip = 0x40_1000; // inside the monitor
    assert_eq!(
        validate(&config(e)),
        Err(LaunchError::BadGuest("entry point not in guest RAM"))
    );
    e.rip = 0x9_f800; // in a gap
    assert!(validate(&config(e)).is_err());
    e = entry64();
    e.mode = GuestMode::Long64 { cr3: 0x10_0100 };
    assert_eq!(
        validate(&config(e)),
        Err(LaunchError::BadGuest("CR3 not 4 KiB aligned"))
    );
}

#[test]
fn validate_rejects_more_ranges_than_guest_memory_keeps() {
    let ram: Vec<MemoryRange> = (0..65u64)
        .map(|i| MemoryRange {
            range: PhysRange {
                start: 0x10_0000 + i * 0x2000,
                end: 0x10_1000 + i * 0x2000,
            },
            kind: MemoryKind::Ram,
        })
        .collect();
    let mut c = config(entry64());
    c.guest.rip = 0x10_0000;
    c.memory_map = &ram[..64];
    assert_eq!(validate(&c), Ok(()));
    c.memory_map = &ram;
    assert_eq!(
        validate(&c),
        Err(LaunchError::BadGuest(
            "more than 64 RAM ranges in the memory map"
        ))
    );
    let monitor = [PhysRange {
        start: 0x40_0000,
        end: 0x40_1000,
    }; 9];
    let mut c = config(entry64());
    c.monitor_ranges = &monitor[..8];
    assert_eq!(validate(&c), Ok(()));
    c.monitor_ranges = &monitor;
    assert_eq!(
        validate(&c),
        Err(LaunchError::BadGuest("more than 8 monitor ranges"))
    );
}

#[test]
fn long_mode_guest_state_is_consistent() {
    let v = vcpu();
    let vm = &v.vmcs;
    let cr0 = vm.get(GuestNatural::Cr0);
    let cr4 = vm.get(GuestNatural::Cr4);
    let efer = vm.get(Guest64::Efer);
    let entry = vm.get(Control32::EntryControls);
    // SDM §27.3.1.1: fixed bits, IA-32e mode guest <=> EFER.LMA, PG, PAE.
    assert!(
        FixedBits {
            fixed0: 0x8000_0021,
            fixed1: 0xffff_ffff
        }
        .accepts(cr0)
    );
    assert!(
        FixedBits {
            fixed0: 0x2000,
            fixed1: 0x0037_27ff
        }
        .accepts(cr4)
    );
    assert_ne!(entry & u64::from(EntryControls::IA32E_MODE_GUEST.bits()), 0);
    assert_eq!(efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
    assert_ne!(cr4 & CR4_PAE, 0);
    assert_eq!(vm.get(GuestNatural::Cr3), 0x10_0000);
    // CS is 64-bit code (L=1, D=0), TR a busy TSS, LDTR unusable.
    assert_eq!(vm.get(Guest32::CsAccessRights), 0xa09b);
    assert_eq!(vm.get(Guest32::TrAccessRights) & 0xf, 11);
    assert_ne!(vm.get(Guest32::LdtrAccessRights) & (1 << 16), 0);
    assert_eq!(vm.get(Guest64::VmcsLinkPointer), u64::MAX);
    assert_eq!(vm.get(GuestNatural::Rflags), 2);
    assert_eq!(vm.get(GuestNatural::Rip), RIP);
    // The guest sees its CR4 without VMXE.
    assert_eq!(vm.get(ControlNatural::Cr4ReadShadow), CR4_PAE);
    assert_eq!(vm.get(Control64::MsrBitmaps), 0x5000);
    assert_eq!(vm.get(Control32::ExceptionBitmap), 0);
}

#[test]
fn protected_mode_guest_state_uses_unrestricted_guest() {
    let mut e = entry64();
    e.mode = GuestMode::Protected32;
    e.regs.gpr[0] = 0x2bad_b002;
    e.regs.gpr[3] = 0x9000;
    let v = vcpu_with(BasePolicy, e);
    let vm = &v.vmcs;
    assert_eq!(
        vm.get(GuestNatural::Cr0) & (CR0_PG | CR0_PE),
        CR0_PE,
        "PE on, PG off"
    );
    assert_eq!(vm.get(Guest64::Efer), 0);
    assert_eq!(
        vm.get(Control32::EntryControls) & u64::from(EntryControls::IA32E_MODE_GUEST.bits()),
        0
    );
    assert_eq!(vm.get(Guest32::CsAccessRights), 0xc09b);
    assert_eq!(vm.get(Guest16::CsSelector), 0x08);
    assert_eq!(vm.get(Guest32::CsLimit), 0xffff_ffff);
    assert_eq!(
        v.regs.rax(),
        0,
        "initial registers are the run loop's business"
    );
}

#[test]
fn host_state_is_written_as_read() {
    let mut vm = FakeVmcs::new();
    let h = HostState {
        cr3: 0x1000,
        selectors: Selectors {
            cs: 0x08,
            ss: 0x10,
            tr: 0x18,
            ..Default::default()
        },
        tr_base: 0x5000,
        rip: 0xdead,
        ..Default::default()
    };
    write_host_state(&mut vm, &h).unwrap();
    assert_eq!(vm.get(Host16::CsSelector), 0x08);
    assert_eq!(vm.get(Host16::TrSelector), 0x18);
    assert_eq!(vm.get(HostNatural::TrBase), 0x5000);
    assert_eq!(vm.get(HostNatural::Rip), 0xdead);
}

#[test]
fn tss_base_decodes_a_64_bit_system_descriptor() {
    // Base 0xffff_8000_1234_5678, limit 0x67, type 0x9 (available TSS).
    let low: u64 = 0x67 | (0x5678 << 16) | (0x34 << 32) | (0x89 << 40) | (0x12 << 56);
    let high: u64 = 0xffff_8000;
    assert_eq!(tss_base(low, high), 0xffff_8000_1234_5678);
}

#[test]
fn base_view_maps_ram_and_mmio_but_never_the_monitor() {
    let caps = vcpu().ept;
    let view = build_base_view(Heap::default(), caps, &MAP, &MONITOR, POOL).unwrap();
    let t = |a: u64| view.translate(Gpa(a)).unwrap();
    // RAM identity-mapped write-back.
    let ram = t(0x20_1234).expect("RAM mapped");
    assert_eq!(ram.hpa.0, 0x20_1234);
    assert_eq!(ram.page.attrs.memory_type, MemoryType::WriteBack);
    // MMIO uncacheable, not executable.
    let apic = t(0xfee0_0010).expect("MMIO mapped");
    assert_eq!(apic.page.attrs.memory_type, MemoryType::Uncacheable);
    assert!(!apic.page.attrs.perms.contains(ept::Perms::EXECUTE));
    // Monitor ranges (widened to pages) and the whole pool: not mapped.
    for a in [
        0x40_0000, 0x44_0000, 0x48_0000, 0x48_0fff, 0x100_0000, 0x13f_ffff,
    ] {
        assert!(t(a).is_none(), "{a:#x} must not be mapped");
    }
    // Just outside them: mapped.
    assert!(t(0x3f_ffff).is_some());
    assert!(t(0x48_1000).is_some());
    assert!(t(0x140_0000).is_some());
    // Gaps stay unmapped.
    assert!(t(0x9_f000).is_none());
    assert!(t(0x800_0000).is_none());
}

#[test]
fn base_view_for_linux_maps_the_holes_uncached_but_never_the_monitor() {
    // What the loader passes for a Linux guest: the firmware map plus its
    // holes below 4 GiB as MMIO (`loader::linux::mmio_holes`); one hole
    // entry here even overlaps the monitor and the pool, which must stay
    // unmapped anyway (they are unmapped last).
    let mut map = MAP.to_vec();
    map.pop();
    for (start, end) in [
        (0xa_0000, 0x10_0000),
        (0x800_0000, 0x1_0000_0000),
        (0x40_0000, 0x140_0000),
    ] {
        map.push(MemoryRange {
            range: PhysRange { start, end },
            kind: MemoryKind::Mmio,
        });
    }
    let caps = vcpu().ept;
    let view = build_base_view(Heap::default(), caps, &map, &MONITOR, POOL).unwrap();
    let t = |a: u64| view.translate(Gpa(a)).unwrap();
    // The RSDP scan area, the I/O APIC, the HPET and the local APIC:
    // identity, uncacheable, not executable.
    for a in [0xe_0000, 0xf_fff0, 0xfec0_0000, 0xfed0_00f0, 0xfee0_00b0] {
        let m = t(a).unwrap_or_else(|| panic!("{a:#x} must be mapped"));
        assert_eq!(m.hpa.0, a);
        assert_eq!(m.page.attrs.memory_type, MemoryType::Uncacheable, "{a:#x}");
        assert!(!m.page.attrs.perms.contains(ept::Perms::EXECUTE), "{a:#x}");
    }
    // RAM stays write-back; the monitor and the pool stay unmapped.
    assert_eq!(
        t(0x20_0000).unwrap().page.attrs.memory_type,
        MemoryType::WriteBack
    );
    for a in [0x40_0000, 0x48_0fff, 0x100_0000, 0x13f_ffff] {
        assert!(t(a).is_none(), "{a:#x} must not be mapped");
    }
}
