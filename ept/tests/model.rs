//! Property tests: random map/unmap/protect/clone/drop sequences over
//! several views, compared page by page with the reference model, with
//! the minimum number of tables (so merging works) after every sequence.

mod common;

use common::driver::{World, caps, steps};
use proptest::prelude::*;

const G: u64 = 1 << 30;

/// A window of 1 GiB + 4 MiB across the 512 GiB boundary: two PML4
/// entries, a 1 GiB region that can merge into a 1 GiB page, two 2 MiB
/// regions past the boundary.
const WIDE: (u64, u64) = (511 * G, G + (4 << 20));
/// An 8 MiB window across the 1 GiB boundary: small enough to translate
/// every page after every step.
const NARROW: (u64, u64) = (G - (4 << 20), 8 << 20);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn wide_window_matches_the_model(caps in caps(), steps in steps(WIDE.0, WIDE.1, 16, false)) {
        let mut world = World::new(caps, WIDE.0, WIDE.1);
        for step in &steps {
            world.run(step)?;
        }
        world.check(false)?;
    }

    #[test]
    fn narrow_window_matches_the_model_after_every_step(
        caps in caps(),
        steps in steps(NARROW.0, NARROW.1, 24, false),
    ) {
        let mut world = World::new(caps, NARROW.0, NARROW.1);
        for step in &steps {
            world.run(step)?;
            world.check(true)?;
        }
    }
}
