//! RegisterRegion and LockRegion: validation, and each view's rights
//! after lock (W^X with and without mode-based execute control).

use okernel_abi::policy::RegionKind;

use super::*;
use crate::vmx::controls::SecondaryProcBased;

const TEXT_KIND: u64 = RegionKind::Text as u64;

#[test]
fn register_region_refuses_each_malformed_range_and_changes_nothing() {
    let mut v = pvcpu();
    ok(&mut v, Call::RegisterRegion, [TEXT, 0x4000, TEXT_KIND]);
    ok(&mut v, Call::AllocProtectedPage, [0, SECRET, 0]);
    let before = snapshot(&v);
    let regions = v.policy.regions;
    let cases: [([u64; 3], Status); 14] = [
        ([DATA, 0x1000, 0], Status::InvalidArgument),
        ([DATA, 0x1000, 8], Status::InvalidArgument),
        ([DATA + 8, 0x1000, 2], Status::Unaligned),
        ([DATA, 0, 2], Status::Empty),
        ([DATA, 0x800, 2], Status::Unaligned),
        ([0x40_0000, 0x1000, 2], Status::MonitorMemory),
        ([0x3f_f000, 0x2000, 2], Status::MonitorMemory),
        ([0x100_0000, 0x1000, 2], Status::MonitorMemory),
        ([0x9_f000, 0x1000, 2], Status::OutOfRam),
        ([0x7ff_f000, 0x2000, 2], Status::OutOfRam),
        ([0xfee0_0000, 0x1000, 2], Status::OutOfRam),
        ([!0xfff, 0x2000, 2], Status::OutOfRam),
        ([TEXT + 0x3000, 0x2000, 2], Status::Overlap),
        ([SECRET, 0x1000, 2], Status::Overlap),
    ];
    for (args, status) in cases {
        assert_eq!(
            call(&mut v, Call::RegisterRegion, args),
            status,
            "{args:x?}"
        );
        assert_eq!(rip(&v), RIP + 3);
    }
    assert_eq!(v.policy.regions, regions, "no region added");
    assert_eq!(snapshot(&v), before, "no view changed");
}

#[test]
fn the_region_table_fills_up_with_exhausted() {
    let mut v = pvcpu();
    for i in 0..32u64 {
        let id = ok(
            &mut v,
            Call::RegisterRegion,
            [0x60_0000 + i * 0x1000, 0x1000, 2],
        );
        assert_eq!(id, i);
    }
    assert_eq!(
        call(&mut v, Call::RegisterRegion, [0x70_0000, 0x1000, 2]),
        Status::Exhausted
    );
}

#[test]
fn a_registered_region_is_not_protected_until_locked() {
    let mut v = pvcpu();
    let id = ok(&mut v, Call::RegisterRegion, [RODATA, 0x1000, 2]);
    assert_eq!(perms(&v, 0, RODATA), Some(Perms::RWX));
    assert_eq!(
        call(&mut v, Call::LockRegion, [id + 1, 0, 0]),
        Status::NotFound
    );
    assert_eq!(
        call(&mut v, Call::LockRegion, [u64::MAX, 0, 0]),
        Status::NotFound
    );
    assert_eq!(perms(&v, 0, RODATA), Some(Perms::RWX));
    ok(&mut v, Call::LockRegion, [id, 0, 0]);
    assert_eq!(perms(&v, 0, RODATA), Some(Perms::R));
    assert!(v.cpu.invepts > 0, "INVEPT after changing a live view");
    let invepts = v.cpu.invepts;
    assert_eq!(call(&mut v, Call::LockRegion, [id, 0, 0]), Status::Locked);
    assert_eq!(perms(&v, 0, RODATA), Some(Perms::R));
    assert_eq!(v.cpu.invepts, invepts);
}

/// Locks one region of every kind, in a run with one untrusted context
/// created before the locks and one after.
fn locked_everything(caps: PolicyCaps) -> PVcpu {
    let mut v = pvcpu_with(caps);
    assert_eq!(ok(&mut v, Call::CreateContext, [0; 3]), 1);
    lock(&mut v, PML4, 0x4000, RegionKind::PageTable);
    lock(&mut v, TEXT, 0x4000, RegionKind::Text);
    lock(&mut v, RODATA, 0x1000, RegionKind::Rodata);
    lock(&mut v, RODATA + 0x1000, 0x1000, RegionKind::RoAfterInit);
    lock(&mut v, RODATA + 0x2000, 0x1000, RegionKind::DescriptorTable);
    lock(&mut v, RODATA + 0x3000, 0x1000, RegionKind::DispatchTable);
    lock(&mut v, CRED, 0x1000, RegionKind::Credentials);
    assert_eq!(ok(&mut v, Call::CreateContext, [0; 3]), 2);
    v
}

#[test]
fn every_view_gets_the_rights_of_each_kind_after_lock() {
    let v = locked_everything(ALL);
    let rx = Perms::RX | Perms::USER_EXECUTE;
    for ctx in [0, 1, 2] {
        let trusted = ctx == 0;
        assert_eq!(perms(&v, ctx, TEXT + 0x3000), Some(rx), "ctx {ctx}");
        for ro in [RODATA, RODATA + 0x1000, RODATA + 0x2000, RODATA + 0x3000] {
            assert_eq!(perms(&v, ctx, ro), Some(Perms::R), "ctx {ctx} {ro:#x}");
        }
        let pt = if trusted { Perms::RW } else { Perms::R };
        assert_eq!(perms(&v, ctx, PT), Some(pt), "ctx {ctx}");
        assert_eq!(perms(&v, ctx, CRED), Some(pt), "ctx {ctx}");
        // W^X with MBEC: other RAM loses supervisor execute, keeps user.
        let plain = Perms::RW | Perms::USER_EXECUTE;
        assert_eq!(perms(&v, ctx, DATA), Some(plain), "ctx {ctx}");
        assert_eq!(perms(&v, ctx, 0), Some(plain), "ctx {ctx}");
        assert_eq!(
            perms(&v, ctx, 0x9_f000),
            Some(Perms::RW),
            "reserved, ctx {ctx}"
        );
        assert_eq!(
            perms(&v, ctx, 0xfee0_0000),
            Some(Perms::RW),
            "MMIO, ctx {ctx}"
        );
        // Invariant 1: the monitor and the pool stay unmapped.
        assert_eq!(perms(&v, ctx, 0x40_0000), None);
        assert_eq!(perms(&v, ctx, POOL.start), None);
    }
    let secondary = v.vmcs.get(Control32::SecondaryProcessorBasedControls) as u32;
    assert!(
        SecondaryProcBased::from_bits_retain(secondary)
            .contains(SecondaryProcBased::MODE_BASED_EXECUTE_CONTROL)
    );
    assert!(v.policy.mbec_active && v.policy.wx);
}

#[test]
fn without_mbec_only_text_stays_executable() {
    let v = locked_everything(PolicyCaps { mbec: false, ..ALL });
    for ctx in [0, 1, 2] {
        assert_eq!(perms(&v, ctx, TEXT), Some(Perms::RX));
        assert_eq!(perms(&v, ctx, DATA), Some(Perms::RW));
        assert_eq!(perms(&v, ctx, 0), Some(Perms::RW));
        assert_eq!(perms(&v, ctx, RODATA), Some(Perms::R));
        assert_eq!(perms(&v, ctx, 0x9_f000), Some(Perms::RW));
    }
    let secondary = v.vmcs.get(Control32::SecondaryProcessorBasedControls) as u32;
    assert!(
        !SecondaryProcBased::from_bits_retain(secondary)
            .contains(SecondaryProcBased::MODE_BASED_EXECUTE_CONTROL)
    );
}

#[test]
fn lock_with_too_few_frames_is_exhausted_and_changes_nothing() {
    let mut v = pvcpu();
    ok(&mut v, Call::CreateContext, [0; 3]);
    let id = ok(&mut v, Call::RegisterRegion, [TEXT, 0x1000, TEXT_KIND]);
    let before = snapshot(&v);
    v.memory.view().frames().allow_more(3);
    assert_eq!(
        call(&mut v, Call::LockRegion, [id, 0, 0]),
        Status::Exhausted
    );
    assert_eq!(snapshot(&v), before);
    assert!(!v.policy.regions[id as usize].unwrap().locked);
    assert!(!v.policy.wx);
    v.memory.view().frames().allow_more(1000);
    ok(&mut v, Call::LockRegion, [id, 0, 0]);
    assert_eq!(perms(&v, 1, TEXT), Some(Perms::RX | Perms::USER_EXECUTE));
}

#[test]
fn untrusted_contexts_get_the_same_errors_and_cannot_register_or_lock() {
    let mut v = pvcpu();
    let id = ok(&mut v, Call::RegisterRegion, [RODATA, 0x1000, 2]);
    ok(&mut v, Call::CreateContext, [0; 3]);
    enter(&mut v, 1);
    let before = snapshot(&v);
    assert_eq!(
        call(&mut v, Call::RegisterRegion, [DATA + 1, 0x1000, 2]),
        Status::Unaligned
    );
    assert_eq!(
        call(&mut v, Call::RegisterRegion, [DATA, 0x1000, 2]),
        Status::PermissionDenied
    );
    assert_eq!(
        call(&mut v, Call::LockRegion, [id, 0, 0]),
        Status::PermissionDenied
    );
    assert_eq!(call(&mut v, Call::LockRegion, [9, 0, 0]), Status::NotFound);
    assert_eq!(snapshot(&v), before);
    assert_eq!(v.policy.regions.iter().flatten().count(), 1);
}

#[test]
fn without_a_policy_the_calls_are_unknown() {
    let mut v = vcpu();
    for c in [
        Call::RegisterRegion,
        Call::CreateContext,
        Call::AuditRead,
        Call::AuditCount,
    ] {
        v.regs.set(Gpr::Rax, c.raw());
        let r = run(&mut v, ExitReason::Vmcall, 0, 3);
        assert_advanced(&v, r, 3);
        assert_eq!(v.regs.rax(), Status::UnknownCall.raw());
        v.vmcs.set(GuestNatural::Rip, RIP);
    }
}

#[cfg(feature = "fuzz")]
#[test]
fn rights_at_runs_agree_with_each_page_and_checksums_with_copies() {
    use crate::memmap::{Gpa, Hpa};
    let mut v = pvcpu();
    let id = lock(&mut v, TEXT, 0x4000, RegionKind::Text);
    lock(&mut v, RODATA, 0x2000, RegionKind::Rodata);
    ok(&mut v, Call::AllocProtectedPage, [0, SECRET, 0]);
    let ctx1 = ok(&mut v, Call::CreateContext, [0; 3]) as u16;
    for ctx in [0, ctx1] {
        let mut at = 0;
        while at < 0x80_0000 {
            let (p, end) = crate::fuzz::inspect::Inspect::rights_at(&v.memory, ctx, Gpa(at));
            assert!(end > at, "ctx {ctx} {at:#x}");
            for page in (at..end.min(0x80_0000)).step_by(0x1000) {
                let each = perms(&v, ctx, page).unwrap_or(Perms::NONE);
                assert_eq!(each, p, "ctx {ctx} page {page:#x} in the run from {at:#x}");
            }
            at = end;
        }
    }
    let r = v.policy.regions[id as usize].unwrap().range;
    v.memory.phys().write(Hpa(TEXT + 0x1234), &[0xcc; 9]);
    let mut copy = vec![0u8; r.len() as usize];
    Views::read_phys(&v.memory, Gpa(r.start), &mut copy).unwrap();
    let mut h = crate::fuzz::hash::WordHash::new();
    h.update(&copy);
    assert_eq!(crate::fuzz::baseline::checksum(&v.memory, r), h.finish());
}
