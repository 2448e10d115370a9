//! The shootdown's wait (`launch::presence`, issue 17): a processor that
//! changed the policy returns to its guest only once every other
//! processor has left the guest; one in the wait-for-SIPI state is not
//! waited for; one that never leaves is named once the patience is spent.
//! Real threads stand for the processors.

use crate::launch::presence::{MAX_CPUS, Presence};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[test]
fn the_wait_ends_only_once_every_other_processor_left_the_guest() {
    let p = Arc::new(Presence::new());
    p.entering(0, true);
    p.entering(1, true);
    p.entering(3, true);
    p.entering(2, false); // waits for its SIPI: runs nothing
    let left = Arc::new(AtomicU64::new(0));
    let other = {
        let (p, left) = (p.clone(), left.clone());
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            left.store(1, Ordering::SeqCst);
            p.left(1);
            std::thread::sleep(std::time::Duration::from_millis(20));
            left.store(2, Ordering::SeqCst);
            p.left(3);
        })
    };
    assert_eq!(p.wait_out(0, u64::MAX, || 0), Ok(()));
    assert_eq!(left.load(Ordering::SeqCst), 2, "returned before both left");
    other.join().unwrap();
    assert!(p.in_guest(0), "the waiter's own mark is its own");
    assert!(!p.in_guest(1) && !p.in_guest(2) && !p.in_guest(3));
}

#[test]
fn a_processor_that_never_leaves_is_named_after_the_patience() {
    let p = Presence::new();
    p.entering(5, true);
    let clock = AtomicU64::new(0);
    let now = || clock.fetch_add(1, Ordering::SeqCst);
    assert_eq!(p.wait_out(0, 1000, now), Err(5));
    assert!(clock.load(Ordering::SeqCst) > 1000);
    // Alone in the guest, or out of range: nothing to wait for.
    assert_eq!(Presence::new().wait_out(0, 0, || 0), Ok(()));
    assert_eq!(p.wait_out(5, 0, || 0), Ok(()));
}

#[test]
#[should_panic]
fn a_processor_past_the_table_is_not_ignored_entering() {
    Presence::new().entering(MAX_CPUS, true);
}

#[test]
#[should_panic]
fn a_processor_past_the_table_is_not_ignored_leaving() {
    Presence::new().left(MAX_CPUS);
}

#[test]
fn a_step_keeps_every_other_processor_out_until_it_closes() {
    let p = Presence::new();
    assert!(!p.step_elsewhere(0) && !p.step_elsewhere(1));
    p.set_stepping(1, true);
    assert!(p.step_elsewhere(0) && p.step_elsewhere(2), "others wait");
    assert!(!p.step_elsewhere(1), "the stepping processor goes on");
    // Another processor's exit that found no step open does not close
    // this one's.
    p.set_stepping(0, false);
    assert!(p.step_elsewhere(0));
    p.set_stepping(1, false);
    assert!(!p.step_elsewhere(0) && !p.step_elsewhere(2));
}

#[test]
fn the_wait_for_a_step_is_bounded_and_names_its_processor() {
    let t = std::cell::Cell::new(0u64);
    let clock = || {
        t.set(t.get() + 1);
        t.get()
    };
    let p = Presence::new();
    assert_eq!(p.wait_step(0, 0, clock), Ok(()), "no step");
    p.entering(0, true);
    assert_eq!(
        p.stop_for_step(1, 10, clock),
        Err(0),
        "0 still in the guest"
    );
    assert!(
        p.step_elsewhere(0),
        "marked before the wait: 0's next exit waits"
    );
    p.left(0);
    assert_eq!(p.stop_for_step(1, 10, clock), Ok(()));
    assert_eq!(p.wait_step(1, 0, clock), Ok(()), "its own step");
    assert_eq!(p.wait_step(0, 100, clock), Err(1), "1's step never closed");
    p.set_stepping(1, false);
    assert_eq!(p.wait_step(0, 100, clock), Ok(()));
}
