//! EPT operations: a sequence of map / identity_map / unmap / protect /
//! clone / drop / translate / eptp on up to four `ept::View`s that share
//! one frame pool, each step with an optional frame budget (out-of-frames
//! at any point of an operation), on capability sets with and without
//! large pages, execute-only and mode-based execute.
//!
//! Oracles: no panic; an operation that fails leaves its view exactly as
//! it was (the crate's all-or-nothing promise) and fails with OutOfFrames
//! only under a budget; one that succeeds leaves the view equal to the
//! reference model (`okernel_fuzz::ept_model`); no walk to a leaf meets an
//! EPT misconfiguration; the pool holds exactly the views' tables, and
//! every frame comes back when the views are dropped (no leak, no double
//! free, no use of a freed table).
#![no_main]

use arbitrary::Arbitrary;
use ept::{
    Attributes, EptCaps, EptFeatures, Error, GPA_LIMIT, Gpa, Hpa, MemoryType, PageSize, Perms, View,
};
use libfuzzer_sys::fuzz_target;
use okernel_fuzz::ept_model::{Model, of_view};
use okernel_fuzz::pool::Pool;

const PAGE: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;
const MAX_VIEWS: usize = 4;

/// Interesting places: 0, around the first 1 GiB and 4 GiB boundaries,
/// the PML4-entry boundary at 512 GiB, and the top of the 48-bit space.
const BASES: [u64; 6] = [
    0,
    G1 - 4 * M2,
    4 * G1 - M2,
    512 * G1 - 2 * G1,
    GPA_LIMIT - 4 * G1,
    7 * M2,
];

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Addr {
    /// A base plus pages.
    Pages(u8, u16),
    /// A base plus 2 MiB steps.
    Large(u8, u8),
    /// Any address (usually refused).
    Raw(u64),
}

impl Addr {
    fn get(self) -> u64 {
        let base = |b: u8| BASES[usize::from(b) % BASES.len()];
        match self {
            Addr::Pages(b, n) => base(b) + u64::from(n) * PAGE,
            Addr::Large(b, n) => base(b) + u64::from(n) * M2,
            Addr::Raw(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Len {
    Pages(u16),
    Large(u8),
    Gigs(u8),
    /// Any length; those below 2^48 are cut to 2 GiB so that a mapping the
    /// crate accepts stays small enough to check quickly.
    Raw(u64),
}

impl Len {
    fn get(self) -> u64 {
        match self {
            Len::Pages(n) => u64::from(n) * PAGE,
            Len::Large(n) => u64::from(n) * M2,
            Len::Gigs(n) => u64::from(n % 3) * G1,
            Len::Raw(v) if v >= GPA_LIMIT => v,
            Len::Raw(v) => v % (2 * G1 + PAGE),
        }
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
struct Attrs {
    perms: u8,
    memory_type: u8,
    ignore_pat: bool,
    suppress_ve: bool,
}

impl Attrs {
    fn get(self) -> Attributes {
        let mt = MemoryType::from_bits(self.memory_type & 7).unwrap_or(MemoryType::WriteBack);
        Attributes::new(Perms::from_bits_truncate(self.perms.into()), mt)
            .with_ignore_pat(self.ignore_pat)
            .with_suppress_ve(self.suppress_ve)
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Op {
    Map {
        gpa: Addr,
        len: Len,
        delta: Addr,
        attrs: Attrs,
    },
    IdentityMap {
        gpa: Addr,
        len: Len,
        attrs: Attrs,
    },
    Unmap {
        gpa: Addr,
        len: Len,
    },
    Protect {
        gpa: Addr,
        len: Len,
        perms: u8,
    },
    Clone,
    Drop,
    Translate(Addr),
    Eptp {
        memory_type: u8,
        accessed_dirty: bool,
    },
}

#[derive(Debug, Clone, Copy, Arbitrary)]
struct Step {
    view: u8,
    op: Op,
    budget: Option<u8>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    no_2m: bool,
    no_1g: bool,
    no_execute_only: bool,
    no_mbec: bool,
    phys_bits: u8,
    steps: Vec<Step>,
}

/// A mapping that can only use 4 KiB leaves (host and guest addresses
/// not 2 MiB-congruent, or no 2 MiB pages) is cut to 32 MiB (8192 leaves):
/// longer ones cost milliseconds to check and find nothing new.
fn small(len: u64, fine: bool) -> u64 {
    if fine && len < GPA_LIMIT {
        len.min(32 << 20)
    } else {
        len
    }
}

fn caps(input: &Input) -> EptCaps {
    let mut f = EptFeatures::all();
    f.set(EptFeatures::PAGES_2M, !input.no_2m);
    f.set(EptFeatures::PAGES_1G, !input.no_1g);
    f.set(EptFeatures::EXECUTE_ONLY, !input.no_execute_only);
    f.set(EptFeatures::MODE_BASED_EXECUTE, !input.no_mbec);
    let bits = [39, 46, 52, 36][usize::from(input.phys_bits % 4)];
    EptCaps::new(f, bits).expect("valid capability set")
}

/// What a successful operation does to the model.
type ModelUpdate = Box<dyn FnOnce(&mut Model)>;

/// Runs one step and checks the oracles.
fn step(views: &mut Vec<(View<Pool>, Model)>, pool: &Pool, caps: &EptCaps, s: &Step) {
    let i = usize::from(s.view) % views.len();
    let count = views.len();
    match s.op {
        Op::Clone if count < MAX_VIEWS => {
            pool.set_budget(s.budget.map(u64::from));
            let r = views[i].0.try_clone();
            pool.set_budget(None);
            match r {
                Ok(copy) => {
                    let model = views[i].1.clone();
                    assert_eq!(of_view(&copy), model.canonical(), "clone differs");
                    views.push((copy, model));
                }
                Err(e) => assert!(
                    e == Error::OutOfFrames && s.budget.is_some(),
                    "clone failed: {e}"
                ),
            }
            return;
        }
        Op::Drop if count > 1 => {
            views.swap_remove(i);
            return;
        }
        Op::Clone | Op::Drop => return,
        Op::Translate(a) => {
            let (view, model) = &views[i];
            let gpa = a.get();
            match view.translate(Gpa(gpa)) {
                Ok(Some(t)) => {
                    let seg = model
                        .canonical()
                        .into_iter()
                        .find(|s| s.start <= gpa && gpa < s.end)
                        .expect("the view translates an address the model does not map");
                    assert_eq!(t.hpa.0, seg.hpa + (gpa - seg.start));
                    assert_eq!(t.page.attrs, seg.attrs);
                }
                Ok(None) => assert!(
                    !model
                        .canonical()
                        .iter()
                        .any(|s| s.start <= gpa && gpa < s.end),
                    "the model maps {gpa:#x}, the view does not"
                ),
                Err(_) => assert!(gpa >= GPA_LIMIT, "translate of {gpa:#x} failed"),
            }
            return;
        }
        Op::Eptp {
            memory_type,
            accessed_dirty,
        } => {
            if let Some(mt) = MemoryType::from_bits(memory_type & 7)
                && let Ok(p) = views[i].0.eptp(mt, accessed_dirty)
            {
                assert_eq!(p.root(), views[i].0.root());
                assert_eq!(ept::Eptp::from_raw(p.raw(), caps), Ok(p));
            }
            return;
        }
        _ => {}
    }

    let (view, model) = &mut views[i];
    let before = of_view(view);
    let usage = view.usage();
    pool.set_budget(s.budget.map(u64::from));
    let (result, apply): (Result<(), Error>, ModelUpdate) = match s.op {
        Op::Map {
            gpa,
            len,
            delta,
            attrs,
        } => {
            let (g, a) = (gpa.get(), attrs.get());
            let h = g.wrapping_add(delta.get());
            let l = small(
                len.get(),
                h.wrapping_sub(g) % M2 != 0 || !caps.allows(PageSize::Size2M),
            );
            (
                view.map(Gpa(g), Hpa(h), l, a),
                Box::new(move |m| m.map(g, g + l, h, a)),
            )
        }
        Op::IdentityMap { gpa, len, attrs } => {
            let (g, a) = (gpa.get(), attrs.get());
            let l = small(len.get(), !caps.allows(PageSize::Size2M));
            (
                view.identity_map(Gpa(g), l, a),
                Box::new(move |m| m.map(g, g + l, g, a)),
            )
        }
        Op::Unmap { gpa, len } => {
            let (g, l) = (gpa.get(), len.get());
            (view.unmap(Gpa(g), l), Box::new(move |m| m.unmap(g, g + l)))
        }
        Op::Protect { gpa, len, perms } => {
            let (g, l) = (gpa.get(), len.get());
            let p = Perms::from_bits_truncate(perms.into());
            (
                view.protect(Gpa(g), l, p),
                Box::new(move |m| m.protect(g, g + l, p)),
            )
        }
        _ => unreachable!("handled above"),
    };
    pool.set_budget(None);
    match result {
        Ok(()) => {
            apply(model);
            assert_eq!(
                of_view(view),
                model.canonical(),
                "view and model differ after {s:?}"
            );
        }
        Err(e) => {
            assert!(
                e != Error::OutOfFrames || s.budget.is_some(),
                "{s:?}: out of frames without a budget"
            );
            assert_eq!(
                of_view(view),
                before,
                "{s:?} failed with {e} but changed the view"
            );
            assert_eq!(
                view.usage(),
                usage,
                "{s:?} failed with {e} but changed the tables"
            );
        }
    }
    // No misconfigured entry on the walk to (a sample of) the leaves.
    let leaves = view.mappings().count();
    for m in view.mappings().step_by(leaves / 16 + 1) {
        let bad = view
            .walk(m.gpa)
            .expect("a leaf's address walks")
            .misconfiguration(caps, caps.supports(EptFeatures::MODE_BASED_EXECUTE));
        assert_eq!(bad, None, "misconfigured walk to {m:?}");
    }
}

fuzz_target!(|input: Input| {
    let caps = caps(&input);
    let pool = Pool::new();
    let mut views = vec![(
        View::new(pool.clone(), caps).expect("a root frame"),
        Model::default(),
    )];
    for s in input.steps.iter().take(48) {
        step(&mut views, &pool, &caps, s);
        let tables: usize = views.iter().map(|(v, _)| v.usage().total()).sum();
        assert_eq!(
            pool.live(),
            tables,
            "the pool and the views disagree after {s:?}"
        );
    }
    drop(views);
    assert_eq!(pool.live(), 0, "frames leaked");
});
