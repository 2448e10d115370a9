//! Fuzzing at scale: long random sequences over several views, with frame
//! budgets injected at random, checked against the model after every
//! out-of-frames failure and at the end; all frames return to the pool when
//! the views are dropped.
//!
//! `EPT_FUZZ_CASES=N` sets the number of sequences per window (default 16,
//! which keeps `cargo test` fast); for example
//! `EPT_FUZZ_CASES=5000 cargo test --release -p ept --test fuzz`.

mod common;

use common::driver::{World, caps, steps};
use proptest::prelude::*;

const G: u64 = 1 << 30;

fn cases() -> u32 {
    std::env::var("EPT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

fn fuzz(world: &mut World, steps: &[common::driver::Step]) -> Result<(), TestCaseError> {
    for (n, step) in steps.iter().enumerate() {
        let ran_out = world.run(step)?;
        if ran_out || n % 16 == 15 {
            world.check(false)?;
        }
    }
    world.check(false)?;
    let pool = world.pool.clone();
    world.views.clear();
    prop_assert_eq!(pool.live(), 0, "frames leaked");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn fuzz_narrow(caps in caps(), steps in steps(G - (4 << 20), 8 << 20, 64, true)) {
        fuzz(&mut World::new(caps, G - (4 << 20), 8 << 20), &steps)?;
    }

    #[test]
    fn fuzz_wide(caps in caps(), steps in steps(511 * G, G + (4 << 20), 32, true)) {
        fuzz(&mut World::new(caps, 511 * G, G + (4 << 20)), &steps)?;
    }
}
