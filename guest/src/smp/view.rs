//! `race-view-switch` (invariant 3, reported; it is about invariant 9's
//! views too: a view switch on one processor while another runs in the
//! same context). Each processor is
//! in the view of its own context: when the BSP leaves a context through
//! its gate, a processor still in that context stays in that context's
//! view, however the monitor shares its state between processors.
//!
//! Under okernel, with the kernel's text, page tables and gate set up
//! (`super::setup`), the BSP makes [`VIEW_PAGE`](super::VIEW_PAGE) a
//! credentials region (writable in the trusted view, read-only in every
//! context's), creates a context and names it to the other processors, which switch into it
//! (`start_up::VIEW`, `SwitchContext` from real mode) and then write each
//! round's number to the page. Round 1: the BSP is in the same context
//! ([`user::visit_context`]); round 2: the BSP is back in the trusted
//! context, at its gate. Then the BSP asks `DestroyContext` for the
//! context. Blocked = the page keeps its bytes through both rounds and
//! the context does not die under the processors still in it (its view's
//! tables would be freed while they run on them). Under okernel every
//! write must also have faulted (#GP at the write, an `ept-violation`
//! record of the context naming the page), the BSP itself must still
//! write the page (it is writable where the BSP runs: the processors'
//! faults come from their view, not the page), and the destroy must be
//! refused with `BadContext` while a second context the BSP entered and
//! left, which no other processor runs in, is destroyed (so the refusal
//! is the others' doing, not a BSP still counted in the first).
//!
//! Negative controls: without a monitor no view withholds the page, and
//! both rounds' writes land; the monitor built to run every exit in the
//! context the previous exit left (`planted-shared-context`,
//! `crate::seam::PER_CPU_CONTEXT`, row `smp-shared-context`) loses track
//! of which processor runs where: the destroy succeeds on 2 processors
//! (the row `smp-shared-context`), and on 4 the others' writes land as
//! well (`smp-4cpu-shared-context`).

use super::setup::{Failed, call};
use super::start_up::{self, CTX_AT, END, Marks, NO_SWITCH, ROUND_AT};
use super::{WAIT, modes, ticks};
use crate::arch::instr::hypercall;
use crate::arch::user;
use crate::report::{Buf, Checks};
use core::sync::atomic::{AtomicU64, Ordering};
use okernel_abi::boot::EntryMode;
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::policy::{AuditKind, RegionKind};

/// The code page and the processors in the rows, for [`in_context`]
/// (which runs as a bare function in the context's view).
static CODE_PAGE: AtomicU64 = AtomicU64::new(0);
static PROCESSORS: AtomicU64 = AtomicU64::new(0);

/// What the row saw.
pub struct View {
    /// Under okernel: the context, or the setup step that failed.
    setup: Result<u64, Failed>,
    /// Every other processor reached the rounds.
    in_rounds: bool,
    /// (landed, faulted) after round 1 and after round 2.
    rounds: [(u16, u16); 2],
    /// Under okernel: the BSP's `SwitchContext` into the context (its
    /// status) and whether the switch back fell through.
    visit: Option<(u64, bool)>,
    /// The page kept its bytes.
    intact: bool,
    /// The BSP wrote the page and read its byte back.
    bsp_wrote: bool,
    /// Under okernel: `DestroyContext` of the context after round 2.
    destroy: Option<Result<Status, u64>>,
    /// Under okernel: `DestroyContext` of a second context the BSP
    /// entered and left, which no other processor runs in
    /// ([`left_context_destroyed`]).
    control: Option<Result<Status, u64>>,
    /// The marks at the end.
    marks: Marks,
    /// The audit count before the rounds.
    before: Result<u64, Result<Status, u64>>,
    /// Every other processor counted itself halted at the end
    /// (`start_up::HALTED_AT`).
    pub halted: bool,
}

fn fill(page: u64) {
    for i in 0..4096u64 {
        // SAFETY: the row's page, usable RAM below 1 MiB (checked by
        // `super::run`), identity-mapped; the other processors write it
        // only in the rounds, which have not begun.
        unsafe {
            core::ptr::write_volatile((page + i) as *mut u8, super::VIEW_FILL[(i % 16) as usize])
        };
    }
}

fn intact(page: u64) -> bool {
    (0..4096u64).all(|i| {
        // SAFETY: as in `fill`; reads only.
        let b = unsafe { core::ptr::read_volatile((page + i) as *const u8) };
        b == super::VIEW_FILL[(i % 16) as usize]
    })
}

/// Under okernel: the page's lock and a context; the context's id.
fn set_up(page: u64) -> Result<u64, Failed> {
    let id = call(
        "the page",
        Call::RegisterRegion,
        [page, 4096, RegionKind::Credentials as u64, 0],
    )?;
    call("the page", Call::LockRegion, [id, 0, 0, 0])?;
    call("CreateContext", Call::CreateContext, [0; 4])
}

/// Waits (bounded) until the other processors' writes and faults reach
/// `n` in all; the counts.
fn settle(page: u64, n: u64) -> (u16, u16) {
    let t = ticks();
    loop {
        let v = Marks::read(page).view;
        if u64::from(v.wrote) + u64::from(v.faults.0) >= n || ticks().wrapping_sub(t) >= WAIT {
            return (v.wrote, v.faults.0);
        }
        core::hint::spin_loop();
    }
}

/// Round 1, in the context's view (the BSP's own `SwitchContext` status
/// in `status`): posts the round and waits for every processor's write;
/// returns `(landed << 16 | faulted) << 1 | 1`, or 0 if the switch
/// failed (then nothing is posted: round 1 runs after the return).
extern "C" fn in_context(status: u64) -> u64 {
    if status != 0 {
        return 0;
    }
    let page = CODE_PAGE.load(Ordering::SeqCst);
    start_up::post(page, ROUND_AT, 1);
    let (landed, faulted) = settle(page, PROCESSORS.load(Ordering::SeqCst));
    (u64::from(landed) << 16 | u64::from(faulted)) << 1 | 1
}

/// The control for the refusal of `DestroyContext`: a second context the
/// BSP enters and leaves through its gate, which no other processor runs
/// in, must be destroyed (`Success`), so that the refusal for the first
/// is the others' doing, not the BSP's own context after its gate. The
/// destroy's status, or `Err` if the context or the visit failed.
fn left_context_destroyed() -> Result<Status, u64> {
    extern "C" fn stay(status: u64) -> u64 {
        status
    }
    let ctx = call("CreateContext", Call::CreateContext, [0; 4]).map_err(|_| u64::MAX)?;
    // SAFETY: as for round 1 in `run`; `stay` touches nothing.
    let (status, fell) = unsafe { user::visit_context(ctx, crate::kernel::gate(), stay) };
    if status != 0 || fell != user::NO_FALLTHROUGH {
        return Err(status);
    }
    hypercall(Call::DestroyContext, [ctx, 0, 0, 0]).status
}

/// Runs the row: `page` is the code page, `target` the row's page,
/// `processors` how many others ran the start-up code.
/// `kernel`: what `super::setup::kernel` returned.
pub fn run(
    entry: EntryMode,
    kernel: Result<(), Failed>,
    page: u64,
    target: u64,
    processors: u16,
) -> View {
    fill(target);
    CODE_PAGE.store(page, Ordering::SeqCst);
    PROCESSORS.store(u64::from(processors), Ordering::SeqCst);
    let monitor = entry == EntryMode::NonRoot;
    let setup = if monitor {
        kernel.and_then(|()| set_up(target))
    } else {
        Ok(0)
    };
    let before = if monitor {
        crate::attacks::audit::count()
    } else {
        Err(Err(0))
    };
    let mut view = View {
        setup,
        in_rounds: false,
        rounds: [(0, 0); 2],
        visit: None,
        intact: false,
        bsp_wrote: false,
        destroy: None,
        control: None,
        marks: Marks::read(page),
        before,
        halted: false,
    };
    let ctx = match (&view.setup, monitor) {
        (Ok(ctx), true) => *ctx,
        (Ok(_), false) => u64::from(NO_SWITCH),
        (Err(_), _) => {
            // Nothing to run in: the processors halt where they wait.
            start_up::post(page, CTX_AT, NO_SWITCH);
            start_up::post(page, ROUND_AT, END);
            return view;
        }
    };
    start_up::post(page, CTX_AT, ctx as u32);
    let t = ticks();
    while Marks::read(page).view.in_rounds < processors && ticks().wrapping_sub(t) < WAIT {
        core::hint::spin_loop();
    }
    view.in_rounds = Marks::read(page).view.in_rounds == processors;
    let n = u64::from(processors);
    // Round 1: the BSP in the same context as the others (under okernel).
    view.rounds[0] = if monitor {
        let gate = crate::kernel::gate();
        // SAFETY: `set_up` built and loaded the kernel's page tables and
        // registered `gate` at the trusted gate; `in_context` touches the
        // code page and its own stack only, both writable in the view.
        let (r, fell) = unsafe { user::visit_context(ctx, gate, in_context) };
        view.visit = Some((r, fell != user::NO_FALLTHROUGH));
        if r & 1 == 1 {
            ((r >> 17) as u16, (r >> 1) as u16)
        } else {
            start_up::post(page, ROUND_AT, 1);
            settle(page, n)
        }
    } else {
        start_up::post(page, ROUND_AT, 1);
        settle(page, n)
    };
    // Round 2: the BSP back in the trusted context.
    start_up::post(page, ROUND_AT, 2);
    view.rounds[1] = settle(page, 2 * n);
    view.intact = intact(target);
    if monitor {
        view.control = Some(left_context_destroyed());
        view.destroy = Some(hypercall(Call::DestroyContext, [ctx, 0, 0, 0]).status);
    }
    start_up::post(page, ROUND_AT, END);
    let t = ticks();
    while Marks::read(page).view.halted < processors && ticks().wrapping_sub(t) < WAIT {
        core::hint::spin_loop();
    }
    view.marks = Marks::read(page);
    view.halted = view.marks.view.halted == processors;
    // The page is writable where the BSP runs (the trusted context).
    // SAFETY: as in `fill`; the other processors have halted.
    view.bsp_wrote = unsafe {
        let p = target as *mut u8;
        let b = p.read_volatile();
        p.write_volatile(!b);
        let back = p.read_volatile() == !b;
        p.write_volatile(b);
        back
    };
    view
}

fn status(s: Option<Result<Status, u64>>) -> &'static str {
    match s {
        Some(Ok(s)) => s.name(),
        Some(Err(_)) => "?",
        None => "-",
    }
}

/// `race-view-switch`.
pub fn report(
    checks: &mut Checks,
    entry: EntryMode,
    planted: Option<guest::cmdline::Planted>,
    view: &View,
) {
    let shared = planted == Some(guest::cmdline::Planted::SharedContext);
    let (mode, expected) = match entry {
        EntryMode::NonRoot if shared => ("planted-shared-context", "succeeded"),
        _ => modes(entry),
    };
    let [(w1, f1), (w2, f2)] = view.rounds;
    // Blocked: no write landed, and the context did not die under the
    // processors still in it (its view's tables would be freed while they
    // run on them).
    let blocked = view.intact && view.destroy != Some(Ok(Status::Success));
    let (_, fault_ip) = view.marks.view.faults;
    let mut audit = Buf::new();
    let audited = match (entry, &view.setup) {
        (EntryMode::NonRoot, Ok(ctx)) if blocked => crate::attacks::audit::find(
            view.before,
            AuditKind::EptViolation,
            *ctx,
            Some(super::VIEW_PAGE),
            &mut audit,
        ),
        (EntryMode::NonRoot, _) => {
            audit.set(format_args!("not looked for: not blocked or not set up"));
            false
        }
        (EntryMode::Direct, _) => {
            audit.set(format_args!("none (no monitor)"));
            false
        }
    };
    let n = view.marks.counts[0];
    let ok = view.in_rounds
        && view.bsp_wrote
        && match entry {
            // The monitor built to run every exit in the context the last
            // one left: a write lands from a processor the BSP's switch
            // back took along.
            EntryMode::NonRoot if shared => view.setup.is_ok() && !blocked,
            EntryMode::NonRoot => {
                view.setup.is_ok()
                    && view.marks.view.switch == 0
                    && view.visit == Some(((u64::from(w1) << 16 | u64::from(f1)) << 1 | 1, false))
                    && blocked
                    && (w1, f1, w2, f2) == (0, n, 0, 2 * n)
                    && fault_ip == start_up::VIEW_WRITE_IP
                    && view.destroy == Some(Ok(Status::BadContext))
                    && view.control == Some(Ok(Status::Success))
                    && audited
            }
            EntryMode::Direct => !blocked && (w1, w2) == (n, 2 * n),
        };
    // One line of at most 160 bytes (`Buf`).
    let mut setup = Buf::new();
    match &view.setup {
        Ok(ctx) if entry == EntryMode::NonRoot => {
            setup.set(format_args!("ctx {ctx}, sw {:#x}", view.marks.view.switch))
        }
        Ok(_) => setup.set(format_args!("no monitor")),
        Err(e) => setup.set(format_args!("SETUP FAILED: {e}")),
    }
    checks.attack(
        "race-view-switch",
        3,
        ok,
        format_args!(
            "{}, {}/{n} in; BSP in{}: {w1} wrote {f1} #GP; out: {w2} wrote {f2} #GP @{fault_ip:#x}; page {}; BSP writes: {}; destroy: {}, left one: {}",
            setup.as_str(),
            view.marks.view.in_rounds,
            match view.visit {
                Some((_, true)) => " (BACK FELL THROUGH)",
                Some((r, false)) if r & 1 == 0 => " (SWITCH FAILED)",
                _ => "",
            },
            if view.intact { "kept" } else { "CHANGED" },
            if view.bsp_wrote { "yes" } else { "NO" },
            status(view.destroy),
            status(view.control),
        ),
        mode,
        expected,
        blocked,
        format_args!("{}", audit.as_str()),
    );
}
