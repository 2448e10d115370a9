//! Contexts and switches (ABI calls 21, 22, 26; invariants 6 and 9);
//! gates (25) are in [`super::gates`], the protected-page calls (23, 24)
//! in [`super::protected_pages`].
//!
//! A context is an EPT view: 0 is the trusted view (the base view),
//! 1..=`MAX_CONTEXTS` are untrusted views, each created as a copy of the
//! trusted view and then recomputed from the policy (page tables and
//! credentials read-only, other contexts' protected pages absent).
//!
//! Switching views is a VMWRITE of the EPT pointer. No INVEPT is needed
//! for the switch itself: cached translations are tagged with the EPTP's
//! EP4TA (SDM Vol. 3C §29.4.1), and every change to a view is followed by
//! an INVEPT (policy::apply::invalidate), as is the destruction of a view
//! (its root frame may become another view's).

use okernel_abi::hypercall::Status;
use okernel_abi::policy::MAX_CONTEXTS;
use okernel_abi::request::Context;

use super::policy::{CallResult, Env, Reply};
use crate::hw::{Cpu, InveptKind, Vmcs};
use crate::memmap::PhysRange;
use crate::policy::apply::{self, Class};
use crate::policy::audit::{AuditAction, AuditKind};
use crate::policy::hooks::PolicyHooks;
use crate::vcpu::ExitError;
use crate::vmx::fields::Control64;

fn fatal(e: ept::Error) -> ExitError {
    ExitError::PolicyEpt(e)
}

/// A live context id as a view slot, or `BadContext`.
pub(super) fn live_context<V: Vmcs, C: Cpu>(env: &Env<'_, V, C>, ctx: u64) -> Result<u16, Status> {
    if env.prot.is_live(ctx) && env.views.is_live(ctx as u16) {
        Ok(ctx as u16)
    } else {
        Err(Status::BadContext)
    }
}

/// CreateContext(): the first free untrusted slot gets a copy of the
/// trusted view, recomputed for an untrusted context.
pub fn create<V: Vmcs, C: Cpu>(env: &mut Env<'_, V, C>) -> Result<CallResult, ExitError> {
    let Some(ctx) = (1..=MAX_CONTEXTS as u16).find(|&c| !env.prot.contexts[usize::from(c)]) else {
        return Ok(Err(Status::Exhausted));
    };
    let calls = env.prot.protects_per_view(env.views.ram().len());
    let needed = env
        .views
        .tables(0)
        .saturating_add(calls.saturating_mul(crate::policy::views::FRAMES_PER_PROTECT));
    if env.views.frames_available() < needed {
        return Ok(Err(Status::Exhausted));
    }
    if let Err(s) = env.trusted() {
        return Ok(Err(s));
    }
    // No SIPI starts anything from now on: the APIC page's write trap
    // has no processor left to protect (`crate::exit::xapic`). Closed
    // before the copy, which would otherwise take the trusted view's
    // read-only page along.
    let trapped = env.prot.xapic_trap;
    env.close_xapic_trap()?;
    if env.views.create(ctx).is_err() {
        // All-or-nothing copy: nothing was made, and processors can
        // still be started: the trap again.
        if let Some(page) = trapped {
            env.open_xapic_trap(page)?;
        }
        return Ok(Err(Status::Exhausted));
    }
    env.prot.contexts[usize::from(ctx)] = true;
    env.prot.untrusted_created = true;
    apply::recompute_view(env.prot, env.views, ctx).map_err(fatal)?;
    env.invalidate()?;
    Ok(Ok(Reply::Done(Some(ctx.into()))))
}

/// DestroyContext(ctx): not 0 (decoded), not the current one. Its protected pages
/// are zeroed and returned to every view; its view's tables to the pool.
pub fn destroy<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    ctx: Context,
) -> Result<CallResult, ExitError> {
    // Not 0: decoded.
    let ctx = match live_context(env, ctx.raw()) {
        // Not the caller's, nor one another processor runs in (its view
        // would be freed under it).
        Ok(c) if c == env.prot.current || env.prot.running[usize::from(c)] > 0 => {
            return Ok(Err(Status::BadContext));
        }
        Ok(c) => c,
        Err(s) => return Ok(Err(s)),
    };
    let owned = env
        .prot
        .protected_pages()
        .filter(|p| p.owner == ctx)
        .count() as u64;
    if let Err(s) = apply::check_frames(env.views, owned * apply::live_count(env.views)) {
        return Ok(Err(s));
    }
    if let Err(s) = env.trusted() {
        return Ok(Err(s));
    }
    let eptp = env.views.eptp(ctx);
    env.prot.contexts[usize::from(ctx)] = false;
    env.views.destroy(ctx);
    env.prot.revoke_grants(ctx);
    for i in 0..env.prot.pages.len() {
        let Some(p) = env.prot.pages[i] else { continue };
        if p.owner != ctx {
            continue;
        }
        env.views
            .write_phys(p.gpa, &[0; 4096])
            .map_err(|_| ExitError::Unexpected("protected page outside guest RAM"))?;
        env.prot.pages[i] = None;
        apply::apply_range(
            env.prot,
            env.views,
            PhysRange::new(p.gpa.0, 4096),
            Class::Plain,
        )
        .map_err(fatal)?;
    }
    // The dropped view's translations, before its frames serve another.
    if let (false, Some(e)) = (env.prot.caps.invept_all, eptp) {
        env.cpu.invept(InveptKind::SingleContext(e))?;
    }
    env.invalidate()?;
    Ok(Ok(Reply::Done(None)))
}

/// SwitchContext(ctx, gate) (invariant 9). From the trusted context to an
/// untrusted one (more restricted) the guest resumes after its VMCALL;
/// every other switch (untrusted to trusted, or to another untrusted
/// context, whose protected pages it would see) resumes at the gate,
/// whose address must still translate to the page it was registered
/// with (through its registered CR3, if any), and starts in the state
/// [`crate::vcpu::guest::GateEntry`] defines. Refusals and redirects are
/// audited, with the arguments as the guest gave them (so they arrive
/// undecoded).
pub fn switch<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    ctx: u64,
    gate: u64,
) -> Result<CallResult, ExitError> {
    let refuse = |env: &mut Env<'_, V, C>, s: Status| -> Result<CallResult, ExitError> {
        env.audit(AuditKind::ContextSwitch, ctx, gate, AuditAction::Refused)?;
        Ok(Err(s))
    };
    let target = match live_context(env, ctx) {
        Ok(c) => c,
        Err(s) => return refuse(env, s),
    };
    let from = env.prot.current;
    if target == from {
        return Ok(Ok(Reply::Done(None)));
    }
    // The current context (a planted-defect build may say otherwise:
    // `crate::fuzz::planted_policy`).
    let from = <crate::seam::PolicyDefects as PolicyHooks>::switching_from(from);
    let resume_at = if from == 0 {
        None
    } else {
        let Some(g) = usize::try_from(gate)
            .ok()
            .and_then(|i| env.prot.gates.get(i).copied().flatten())
        else {
            return refuse(env, Status::NotFound);
        };
        if !env.gate_usable(&g)? {
            return refuse(env, Status::Refused);
        }
        Some(g)
    };
    let Some(eptp) = env.views.eptp(target) else {
        return refuse(env, Status::BadContext);
    };
    env.vmcs.write(Control64::Eptp, eptp)?;
    env.views.set_current(target);
    env.prot.current = target;
    match resume_at {
        None => Ok(Ok(Reply::Done(None))),
        Some(g) => {
            // Recorded in the context the guest left.
            env.prot.current = from;
            env.audit(AuditKind::ContextSwitch, ctx, gate, AuditAction::Gate)?;
            env.prot.current = target;
            Ok(Ok(Reply::Gate {
                gate: g,
                rdi: from.into(),
            }))
        }
    }
}
