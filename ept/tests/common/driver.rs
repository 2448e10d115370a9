//! Random operation sequences over several views that share one frame
//! pool, each view checked against its own model.

use ept::{Attributes, EptCaps, EptFeatures, Error, Gpa, Hpa, MemoryType, Perms, View};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::model::Model;
use super::pool::Pool;

const PAGE: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;
/// At most this many views exist at once.
const MAX_VIEWS: usize = 3;

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    Map {
        gpa: u64,
        len: u64,
        hpa: u64,
        attrs: Attributes,
    },
    Unmap {
        gpa: u64,
        len: u64,
    },
    Protect {
        gpa: u64,
        len: u64,
        perms: Perms,
    },
    /// Clone the view into a new one (if fewer than `MAX_VIEWS` exist).
    Clone,
    /// Drop the view (if it is not the last one).
    Drop,
}

/// One step: an action on one of the views, optionally with only `budget`
/// frames available.
#[derive(Debug, Clone)]
pub struct Step {
    /// Which view (modulo the number of views).
    pub view: usize,
    pub action: Action,
    pub budget: Option<u64>,
}

/// EPT capabilities with every feature, with or without 2M and 1G pages.
pub fn caps() -> impl Strategy<Value = EptCaps> {
    prop_oneof![
        4 => Just((true, true)),
        1 => Just((true, false)),
        1 => Just((false, true)),
        1 => Just((false, false)),
    ]
    .prop_map(|(two_m, one_g)| {
        let mut f = EptFeatures::all();
        f.set(EptFeatures::PAGES_2M, two_m);
        f.set(EptFeatures::PAGES_1G, one_g);
        EptCaps::new(f, 46).unwrap()
    })
}

/// A non-empty range inside `[base, base + len)`: runs of 4 KiB pages, or
/// of 2 MiB / 1 GiB regions, sometimes trimmed by a few pages at each end.
fn range(base: u64, len: u64) -> BoxedStrategy<(u64, u64)> {
    let granules: Vec<u64> = [PAGE, M2, G1].into_iter().filter(|&g| g <= len).collect();
    proptest::sample::select(granules)
        .prop_flat_map(move |g| {
            let max: u64 = if g == PAGE { 1100 } else { 3 };
            (0..len / g, 1..=max, 0..4u64, 0..4u64, any::<bool>()).prop_map(
                move |(i, n, left, right, trim): (u64, u64, u64, u64, bool)| {
                    let mut start = base + i * g;
                    let mut end = (start + n * g).min(base + len);
                    if trim && g > PAGE {
                        start += left * PAGE;
                        end -= right * PAGE;
                    }
                    (start, end - start)
                },
            )
        })
        .boxed()
}

fn perms() -> impl Strategy<Value = Perms> {
    prop_oneof![
        6 => Just(Perms::RWX),
        2 => Just(Perms::R),
        2 => Just(Perms::RW),
        2 => Just(Perms::RX),
        2 => Just(Perms::NONE),
        1 => Just(Perms::EXECUTE),
        1 => Just(Perms::R | Perms::USER_EXECUTE),
        1 => Just(Perms::RWX | Perms::USER_EXECUTE),
        1 => Just(Perms::WRITE), // invalid: must be refused
    ]
}

fn attrs() -> impl Strategy<Value = Attributes> {
    let mt = prop_oneof![3 => Just(MemoryType::WriteBack), 1 => Just(MemoryType::Uncacheable)];
    let rare = || prop_oneof![5 => Just(false), 1 => Just(true)];
    (perms(), mt, rare(), rare()).prop_map(|(p, mt, ipat, sve)| {
        Attributes::new(p, mt)
            .with_ignore_pat(ipat)
            .with_suppress_ve(sve)
    })
}

/// Host address offsets: mostly identity, sometimes 4K-, 2M- or 1G-aligned.
fn delta() -> impl Strategy<Value = u64> {
    prop_oneof![
        5 => Just(0),
        1 => (1..512u64).prop_map(|k| k * PAGE),
        1 => (1..4u64).prop_map(|k| k * M2),
        1 => (1..3u64).prop_map(|k| k * G1),
    ]
}

/// One random action in `[base, base + len)`.
pub fn action(base: u64, len: u64) -> impl Strategy<Value = Action> {
    action_in(range(base, len))
}

fn action_in(ranges: BoxedStrategy<(u64, u64)>) -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (ranges.clone(), delta(), attrs())
            .prop_map(|((gpa, len), d, attrs)| Action::Map { gpa, len, hpa: gpa + d, attrs }),
        2 => ranges.clone().prop_map(|(gpa, len)| Action::Unmap { gpa, len }),
        4 => (ranges, perms()).prop_map(|((gpa, len), perms)| Action::Protect { gpa, len, perms }),
        1 => Just(Action::Clone),
        1 => Just(Action::Drop),
    ]
}

/// Sequences of up to `max_steps` steps in `[base, base + len)`; with
/// `budgets`, about one step in four runs with only 0..4 frames available.
///
/// Half the steps reuse one of a few ranges fixed per sequence (one of them
/// the whole window), so that a change is often undone or covered by a
/// later one: that is what makes split regions uniform again and exercises
/// merging.
pub fn steps(
    base: u64,
    len: u64,
    max_steps: usize,
    budgets: bool,
) -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(range(base, len), 3).prop_flat_map(move |mut palette| {
        palette.push((base, len));
        let ranges = prop_oneof![range(base, len), proptest::sample::select(palette)].boxed();
        let budget = if budgets {
            prop_oneof![3 => Just(None), 1 => (0..4u64).prop_map(Some)].boxed()
        } else {
            Just(None).boxed()
        };
        let step =
            (any::<usize>(), action_in(ranges), budget).prop_map(|(view, action, budget)| Step {
                view,
                action,
                budget,
            });
        proptest::collection::vec(step, 1..=max_steps)
    })
}

/// Views sharing one pool, and their models.
pub struct World {
    pub pool: Pool,
    pub caps: EptCaps,
    pub views: Vec<(View<Pool>, Model)>,
}

impl World {
    /// One empty view over the window `[base, base + len)`.
    pub fn new(caps: EptCaps, base: u64, len: u64) -> Self {
        let pool = Pool::new();
        let view = View::new(pool.clone(), caps).unwrap();
        World {
            pool,
            caps,
            views: vec![(view, Model::new(base, len))],
        }
    }

    /// Runs `step` on the view and, if it succeeded, on the model. Returns
    /// `true` if it failed for lack of frames (the view must then be as it
    /// was, which the next [`World::check`] verifies).
    pub fn run(&mut self, step: &Step) -> Result<bool, TestCaseError> {
        let count = self.views.len();
        let i = step.view % count;
        self.pool.set_budget(step.budget);
        let (view, model) = &mut self.views[i];
        let mut refused_perms = None;
        let result = match step.action {
            Action::Map {
                gpa,
                len,
                hpa,
                attrs,
            } => {
                refused_perms = Some(attrs.perms);
                let r = view.map(Gpa(gpa), Hpa(hpa), len, attrs);
                r.map(|()| model.map(gpa, hpa, len, attrs))
            }
            Action::Unmap { gpa, len } => view.unmap(Gpa(gpa), len).map(|()| model.unmap(gpa, len)),
            Action::Protect { gpa, len, perms } => {
                refused_perms = Some(perms);
                view.protect(Gpa(gpa), len, perms)
                    .map(|()| model.protect(gpa, len, perms))
            }
            Action::Clone if count < MAX_VIEWS => match view.try_clone() {
                Ok(copy) => {
                    let model = model.clone();
                    self.views.push((copy, model));
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Action::Drop if count > 1 => {
                self.views.swap_remove(i);
                Ok(())
            }
            Action::Clone | Action::Drop => Ok(()),
        };
        self.pool.set_budget(None);
        let invalid =
            refused_perms.is_some_and(|p| p.contains(Perms::WRITE) && !p.contains(Perms::READ));
        match result {
            Err(Error::WriteWithoutRead) if invalid => Ok(false),
            Err(Error::OutOfFrames) if step.budget.is_some() && !invalid => Ok(true),
            Ok(()) if !invalid => Ok(false),
            other => Err(TestCaseError::fail(format!("{step:?} gave {other:?}"))),
        }
    }

    /// Checks every view against its model (every page, through the leaf
    /// mappings; and by translating each page if `every_page`), that each
    /// uses the minimum number of tables, that no walk (to a sample of
    /// leaves) meets an EPT misconfiguration, and that the pool holds exactly the views' tables.
    pub fn check(&self, every_page: bool) -> Result<(), TestCaseError> {
        let mut tables = 0;
        for (n, (view, model)) in self.views.iter().enumerate() {
            model
                .check_mappings(view)
                .map_err(|e| TestCaseError::fail(format!("view {n}: {e}")))?;
            if every_page {
                model
                    .check_every_page(view)
                    .map_err(|e| TestCaseError::fail(format!("view {n}: {e}")))?;
            }
            prop_assert_eq!(
                view.usage().total(),
                model.min_tables(&self.caps),
                "view {}",
                n
            );
            // No EPT misconfiguration on the walk to (at most ~64) leaves.
            let step = view.mappings().count() / 64 + 1;
            for m in view.mappings().step_by(step) {
                let bad = view.walk(m.gpa).unwrap().misconfiguration(&self.caps, true);
                prop_assert_eq!(bad, None, "leaf {:?}", m);
            }
            tables += view.usage().total();
        }
        prop_assert_eq!(self.pool.live(), tables);
        Ok(())
    }
}
