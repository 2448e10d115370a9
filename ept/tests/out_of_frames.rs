//! Out-of-frames injection: a change or clone that cannot get every frame
//! it needs must fail with `OutOfFrames` and leave the view exactly as it
//! was (every leaf, every walk, every table) without leaking a frame.

mod common;

use common::driver::{Action, Step, World, action, caps, steps};
use common::pool::Pool;
use ept::{Error, Gpa, Mapping, View, WalkPath};
use proptest::prelude::*;

const G: u64 = 1 << 30;
const NARROW: (u64, u64) = (G - (4 << 20), 8 << 20);
const WIDE: (u64, u64) = (511 * G, G + (4 << 20));

/// Every leaf with the entries its walk reads (so table frames count too),
/// the table usage, and the frames live in the pool.
type Snapshot = (Vec<(Mapping, WalkPath)>, usize, usize);

fn snapshot(view: &View<Pool>, pool: &Pool) -> Snapshot {
    let leaves = view
        .mappings()
        .map(|m| (m, view.walk(m.gpa).unwrap()))
        .collect();
    (leaves, view.usage().total(), pool.live())
}

/// The allocation counts to fail at: all of them for small changes, a
/// spread for large ones.
fn failure_points(needed: u64) -> Vec<u64> {
    if needed <= 64 {
        (0..needed).collect()
    } else {
        vec![0, 1, 2, needed / 2, needed - 2, needed - 1]
    }
}

/// Runs `action` on view 0 of `world` with too few frames at every failure
/// point, then with exactly enough, and checks the outcomes.
fn inject(world: &mut World, action: Action) -> Result<(), TestCaseError> {
    // How many frames does the change take? Ask a throwaway copy.
    let mut probe = World {
        pool: world.pool.clone(),
        caps: world.caps,
        views: vec![(
            world.views[0].0.try_clone().unwrap(),
            world.views[0].1.clone(),
        )],
    };
    let step = |budget| Step {
        view: 0,
        action: action.clone(),
        budget,
    };
    let before_probe = world.pool.allocations();
    if probe.run(&step(None))? {
        return Err(TestCaseError::fail("no budget, yet out of frames"));
    }
    let needed = world.pool.allocations() - before_probe;
    // Changes that need no frame cannot run out of them.
    prop_assume!(needed > 0);
    let expected: Vec<Mapping> = probe.views[0].0.mappings().collect();
    drop(probe);

    let before = snapshot(&world.views[0].0, &world.pool);
    for budget in failure_points(needed) {
        prop_assert!(
            world.run(&step(Some(budget)))?,
            "budget {} of {} succeeded",
            budget,
            needed
        );
        let after = snapshot(&world.views[0].0, &world.pool);
        prop_assert!(
            after == before,
            "budget {} of {} changed the view",
            budget,
            needed
        );
    }
    // Exactly the planned number of frames is enough, and gives what the
    // probe got.
    prop_assert!(!world.run(&step(Some(needed)))?);
    let got: Vec<Mapping> = world.views[0].0.mappings().collect();
    prop_assert!(got == expected, "result differs from the probe's");
    world.check(false)
}

/// A world whose one view maps all of `[base, base + len)` as RAM.
fn populated(caps: ept::EptCaps, (base, len): (u64, u64)) -> World {
    let mut world = World::new(caps, base, len);
    let (view, model) = &mut world.views[0];
    view.identity_map(Gpa(base), len, ept::Attributes::RAM)
        .unwrap();
    model.map(base, base, len, ept::Attributes::RAM);
    world
}

fn clone_inject(world: &World) -> Result<(), TestCaseError> {
    let (view, _) = &world.views[0];
    let before = snapshot(view, &world.pool);
    for budget in failure_points(view.usage().total() as u64) {
        world.pool.set_budget(Some(budget));
        let copy = view.try_clone();
        world.pool.set_budget(None);
        prop_assert!(matches!(copy, Err(Error::OutOfFrames)), "budget {}", budget);
        prop_assert!(
            snapshot(view, &world.pool) == before,
            "clone with budget {} changed things",
            budget
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn narrow_changes_fail_cleanly_at_every_allocation(
        caps in caps(),
        prefix in steps(NARROW.0, NARROW.1, 12, false),
        last in action(NARROW.0, NARROW.1),
    ) {
        let mut world = populated(caps, NARROW);
        for step in &prefix {
            world.run(step)?;
        }
        world.views.truncate(1);
        clone_inject(&world)?;
        if !matches!(last, Action::Clone | Action::Drop) {
            inject(&mut world, last)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn wide_changes_fail_cleanly(
        prefix in steps(WIDE.0, WIDE.1, 6, false),
        last in action(WIDE.0, WIDE.1),
    ) {
        let caps = ept::EptCaps::new(ept::EptFeatures::all(), 46).unwrap();
        let mut world = populated(caps, WIDE);
        for step in &prefix {
            world.run(step)?;
        }
        world.views.truncate(1);
        if !matches!(last, Action::Clone | Action::Drop) {
            inject(&mut world, last)?;
        }
    }
}

#[test]
fn protecting_a_page_inside_a_1g_page_fails_cleanly_at_both_allocations() {
    let caps = ept::EptCaps::new(ept::EptFeatures::all(), 46).unwrap();
    let mut world = populated(caps, (0, 2 * G));
    let protect = Action::Protect {
        gpa: G + 0x7000,
        len: 4096,
        perms: ept::Perms::R,
    };
    inject(&mut world, protect).unwrap();
    assert_eq!(world.views[0].0.usage().total(), 4);
}
