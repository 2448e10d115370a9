//! The incremental CALL_CHECK (`fuzz::dirty`, `fuzz::calls::scope`): a
//! monitor write to a locked region is seen by the next check whatever
//! its scope, a view change makes the next check full, a change behind
//! the monitor's back (the documented assumption broken) is seen only by
//! the periodic full check, and BASELINE starts over.

use ept::Perms;
use okernel_abi::fuzz::MonitorVerdict;
use okernel_abi::hypercall::Call;

use super::checks::{RODATA_ID, TEXT_ID, baseline, check, fixture, verdict};
use super::*;
use crate::bits::CR0_WP;
use crate::fuzz::LastFull;
use crate::fuzz::calls::FULL_CHECK_EVERY;
use crate::fuzz::dirty::WRITE_LOG_PAGES;
use crate::memmap::{Gpa, Hpa, PhysRange};
use crate::policy::views::Views;

/// The views generation now.
fn generation(v: &PVcpu) -> u64 {
    v.memory.dirty().generation()
}

/// Baseline, then one full and one incremental check, both intact.
fn settled() -> PVcpu {
    let mut v = fixture();
    baseline(&mut v);
    assert_eq!(v.hooks.last_full, None, "the first check is full");
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::Intact);
    assert_eq!(v.hooks.last_full, Some(LastFull { incremental: 0 }));
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::Intact);
    assert_eq!(
        v.hooks.last_full,
        Some(LastFull { incremental: 1 }),
        "same views, log not overflowed: incremental"
    );
    v
}

#[test]
fn a_monitor_write_to_locked_text_is_seen_by_the_next_incremental_check() {
    let mut v = settled();
    Views::write_phys(&mut v.memory, Gpa(TEXT + 0x1008), b"\xcc").unwrap();
    assert!(v.memory.dirty().written(PhysRange::new(TEXT + 0x1000, 1)));
    let r = check(&mut v);
    assert_eq!(verdict(&r), (MonitorVerdict::RegionChanged, TEXT_ID));
    assert_eq!(v.hooks.last_full, None, "after a finding the next is full");
    assert!(
        !v.memory.dirty().written(PhysRange::new(TEXT, 0x4000)),
        "the log is cleared at every check"
    );
    let r = check(&mut v);
    assert_eq!(verdict(&r), (MonitorVerdict::RegionChanged, TEXT_ID));
}

#[test]
fn an_update_page_table_is_seen_by_the_next_incremental_check() {
    let mut v = settled();
    let slot = PT + 5 * 8;
    ok(&mut v, Call::UpdatePageTable, [slot, DATA | 1, 0]);
    assert!(v.memory.dirty().written(PhysRange::new(slot, 8)));
    let r = check(&mut v);
    assert_eq!(verdict(&r).0, MonitorVerdict::RegionChanged);
}

#[test]
fn the_cheap_parts_are_compared_by_an_incremental_check() {
    let mut v = settled();
    let cr0 = v.vmcs.get(GuestNatural::Cr0) & !CR0_WP;
    v.vmcs.set(GuestNatural::Cr0, cr0);
    assert_eq!(verdict(&check(&mut v)), (MonitorVerdict::CrPinLost, 0));
    let mut v = settled();
    ok(&mut v, Call::RegisterRegion, [DATA, 0x1000, 2]);
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::PolicyChanged);
}

#[test]
fn a_view_change_makes_the_next_check_full() {
    let mut v = settled();
    let g = generation(&v);
    Views::protect(&mut v.memory, 1, Gpa(TEXT + 0x2000), 0x1000, Perms::RWX).unwrap();
    assert_ne!(generation(&v), g, "protect moves the generation");
    let r = check(&mut v);
    assert_eq!(verdict(&r), (MonitorVerdict::ViewTooPermissive, 1));
    assert_eq!(r.expected, TEXT + 0x2000);
    // Creating and destroying a view move it too, switching does not.
    let mut v = settled();
    let g = generation(&v);
    assert!(Views::set_current(&mut v.memory, 1));
    assert!(Views::set_current(&mut v.memory, 0));
    assert_eq!(generation(&v), g);
    Views::create(&mut v.memory, 2).unwrap();
    let g2 = generation(&v);
    assert_ne!(g2, g);
    assert!(Views::destroy(&mut v.memory, 2));
    assert_ne!(generation(&v), g2);
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::Intact);
    assert_eq!(
        v.hooks.last_full,
        Some(LastFull { incremental: 0 }),
        "that check was full"
    );
}

#[test]
fn a_change_behind_the_monitors_back_is_seen_only_by_the_periodic_full_check() {
    // The assumption broken: a byte of locked rodata changed neither by
    // the guest through a view (no view may write it) nor by a logged
    // monitor write.
    let mut v = settled();
    v.memory.phys().write(Hpa(RODATA + 0x10), b"!");
    // `settled` ran one incremental check after the full one.
    for n in 2..FULL_CHECK_EVERY {
        let r = check(&mut v);
        assert_eq!(verdict(&r).0, MonitorVerdict::Intact, "incremental {n}");
    }
    let r = check(&mut v);
    assert_eq!(verdict(&r), (MonitorVerdict::RegionChanged, RODATA_ID));
}

#[test]
fn an_overflowed_write_log_makes_the_next_check_full() {
    let mut v = settled();
    v.memory.phys().write(Hpa(RODATA + 0x10), b"!");
    for page in 0..=WRITE_LOG_PAGES as u64 {
        Views::write_phys(&mut v.memory, Gpa(DATA + 0x10_000 + page * 4096), b"x").unwrap();
    }
    assert!(v.memory.dirty().overflowed());
    let r = check(&mut v);
    assert_eq!(verdict(&r), (MonitorVerdict::RegionChanged, RODATA_ID));
}

#[test]
fn a_trusted_write_to_credentials_is_seen_by_the_next_full_check() {
    // The trusted view may write them: a guest store, no monitor write,
    // no view change. Incremental checks leave them to the full one.
    let mut v = settled();
    v.memory.phys().write(Hpa(CRED + 0x20), b"root");
    // `settled` ran one incremental check after the full one.
    for n in 2..FULL_CHECK_EVERY {
        assert_eq!(
            verdict(&check(&mut v)).0,
            MonitorVerdict::Intact,
            "incremental {n}"
        );
    }
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::RegionChanged);
}

#[test]
fn baseline_forgets_the_last_full_check_and_clears_the_log() {
    let mut v = settled();
    Views::write_phys(&mut v.memory, Gpa(TEXT + 0x10), b"patched").unwrap();
    baseline(&mut v);
    assert_eq!(v.hooks.last_full, None);
    assert!(!v.memory.dirty().written(PhysRange::new(TEXT, 0x4000)));
    // The patch is the new baseline: a full check, then incremental ones.
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::Intact);
    assert_eq!(v.hooks.last_full.map(|l| l.incremental), Some(0));
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::Intact);
    assert_eq!(v.hooks.last_full.map(|l| l.incremental), Some(1));
    // A view change before a new baseline: the baseline takes it, the
    // first check after it is full and intact.
    Views::protect(&mut v.memory, 1, Gpa(DATA), 0x1000, Perms::R).unwrap();
    baseline(&mut v);
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::Intact);
    assert_eq!(v.hooks.last_full, Some(LastFull { incremental: 0 }));
}

#[test]
fn view_changes_made_by_exits_are_scanned_and_checks_stay_incremental() {
    let mut v = settled();
    let g = generation(&v);
    // Allocate a protected page and free it again: two exits, each
    // changing every view; the policy ends as the baseline has it.
    ok(&mut v, Call::AllocProtectedPage, [1, DATA + 0x4000, 0]);
    ok(&mut v, Call::FreeProtectedPage, [1, DATA + 0x4000, 0]);
    assert_ne!(generation(&v), g, "the views changed");
    assert_eq!(v.hooks.watch.scanned, generation(&v), "and were scanned");
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::Intact);
    assert_eq!(
        v.hooks.last_full,
        Some(LastFull { incremental: 2 }),
        "that check was incremental"
    );
}

#[test]
fn a_view_too_permissive_at_the_end_of_an_exit_is_reported_though_put_right_since() {
    // A handler bug stand-in: text made writable in context 1's view,
    // then any exit ends with it so, then the view is put right behind
    // the watch's back before the check.
    let mut v = settled();
    Views::protect(&mut v.memory, 1, Gpa(TEXT + 0x2000), 0x1000, Perms::RWX).unwrap();
    assert_eq!(raw_call(&mut v, Call::Version.raw(), 0), Status::Success);
    assert!(v.hooks.watch.finding.is_some(), "the exit's end scanned it");
    Views::protect(&mut v.memory, 1, Gpa(TEXT + 0x2000), 0x1000, Perms::RX).unwrap();
    let r = check(&mut v);
    assert_eq!(verdict(&r), (MonitorVerdict::ViewTooPermissive, 1));
    assert_eq!((r.expected, r.actual), (TEXT + 0x2000, Perms::RWX.bits()));
    assert_eq!(v.hooks.last_full, None, "after a finding the next is full");
    assert_eq!(verdict(&check(&mut v)).0, MonitorVerdict::Intact);
}

#[test]
fn before_a_baseline_nothing_is_scanned() {
    let mut v = fixture();
    Views::protect(&mut v.memory, 1, Gpa(TEXT + 0x2000), 0x1000, Perms::RWX).unwrap();
    assert_eq!(raw_call(&mut v, Call::Version.raw(), 0), Status::Success);
    assert_eq!(v.hooks.watch, Default::default());
}
