//! The protected-page calls (ABI calls 23, 24; invariant 6) with their
//! ownership rule and quota (issue 13, class 4).
//!
//! A protected page is mapped read-write in its owner context's view and
//! absent from every other view. **Ownership**: the trusted kernel owns
//! the guest's memory and gives pages to untrusted contexts; an untrusted
//! context may protect only a page the trusted kernel gave it — one the
//! trusted kernel protected for it earlier (a *grant*, kept when the
//! context frees the page itself and dropped when the trusted kernel
//! frees it or destroys the context). Any other page (ordinary RAM,
//! another context's data, the trusted kernel's stack) is
//! `PermissionDenied` and audited (kind `hypercall`): before this rule an
//! untrusted context could take any unregistered page away from every
//! other view. **Quota**: a context holds at most [`PAGES_PER_CONTEXT`]
//! protected pages, and an untrusted one is given at most as many, so
//! that no context exhausts the global table of [`MAX_PROTECTED_PAGES`]
//! for the others (`Exhausted`).

use okernel_abi::hypercall::{Call, Status};
use okernel_abi::request::Context;

use super::contexts::live_context;
use super::policy::{CallResult, Env, Reply, memory_status};
use crate::hw::{Cpu, Vmcs};
use crate::memmap::{Gpa, PhysRange};
use crate::policy::apply::{self, Class};
use crate::policy::audit::{AuditAction, AuditKind};
#[cfg(doc)]
use crate::policy::protection::MAX_PROTECTED_PAGES;
use crate::policy::protection::{PAGES_PER_CONTEXT, ProtectedPage};
use crate::vcpu::ExitError;

fn fatal(e: ept::Error) -> ExitError {
    ExitError::PolicyEpt(e)
}

/// The checks both calls start with, in their documented order, after
/// the decoder's (a context id in range): a live context, then a 4 KiB
/// aligned page (after the context, so the page stays undecoded).
fn live_page<V: Vmcs, C: Cpu>(env: &Env<'_, V, C>, ctx: Context, page: Gpa) -> Result<u16, Status> {
    let ctx = live_context(env, ctx.raw())?;
    if page.page_offset() != 0 {
        return Err(Status::Unaligned);
    }
    Ok(ctx)
}

/// AllocProtectedPage(ctx, page).
pub fn alloc<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    ctx: Context,
    page: Gpa,
) -> Result<CallResult, ExitError> {
    match live_page(env, ctx, page) {
        Ok(ctx) => alloc_page(env, ctx, page),
        Err(s) => Ok(Err(s)),
    }
}

/// FreeProtectedPage(ctx, page).
pub fn free<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    ctx: Context,
    page: Gpa,
) -> Result<CallResult, ExitError> {
    match live_page(env, ctx, page) {
        Ok(ctx) => free_page(env, ctx, page),
        Err(s) => Ok(Err(s)),
    }
}

/// AllocProtectedPage(ctx, page): mapped RW in `ctx`'s view only.
fn alloc_page<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    ctx: u16,
    page: Gpa,
) -> Result<CallResult, ExitError> {
    if let Err(e) = env.views.check_ram(page, 4096) {
        return Ok(Err(memory_status(e)));
    }
    let range = PhysRange::new(page.0, 4096);
    if env.prot.overlaps(&range) {
        return Ok(Err(Status::Overlap));
    }
    let Some(slot) = env.prot.pages.iter().position(Option::is_none) else {
        return Ok(Err(Status::Exhausted));
    };
    let trusted = env.prot.current == 0;
    // The trusted kernel gives an untrusted context a page it does not
    // hold yet: a new grant, within the quota.
    let new_grant = trusted && ctx != 0 && !env.prot.granted(ctx, page);
    let grant_slot = env.prot.grants.iter().position(Option::is_none);
    let held = env
        .prot
        .protected_pages()
        .filter(|p| p.owner == ctx)
        .count();
    if held >= PAGES_PER_CONTEXT || (new_grant && env.prot.owned_pages(ctx) >= PAGES_PER_CONTEXT) {
        return Ok(Err(Status::Exhausted));
    }
    if new_grant && grant_slot.is_none() {
        return Ok(Err(Status::Exhausted));
    }
    if let Err(s) = apply::check_frames(env.views, apply::live_count(env.views)) {
        return Ok(Err(s));
    }
    if !trusted && env.prot.current != ctx {
        return Ok(Err(Status::PermissionDenied));
    }
    if !trusted && !env.prot.granted(ctx, page) {
        // Not the caller's page.
        env.audit(
            AuditKind::Hypercall,
            Call::AllocProtectedPage.raw(),
            page.0,
            AuditAction::Refused,
        )?;
        return Ok(Err(Status::PermissionDenied));
    }
    let mine = ProtectedPage {
        gpa: page,
        owner: ctx,
    };
    if let (true, Some(g)) = (new_grant, grant_slot) {
        env.prot.grants[g] = Some(mine);
    }
    env.prot.pages[slot] = Some(mine);
    apply::apply_range(env.prot, env.views, range, Class::Protected(ctx)).map_err(fatal)?;
    env.invalidate()?;
    Ok(Ok(Reply::Done(None)))
}

/// FreeProtectedPage(ctx, page): zeroed, then back in every view. Freed
/// by the trusted kernel, the page is no longer the context's (its grant
/// is dropped); freed by the context itself, it may protect it again.
fn free_page<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    ctx: u16,
    page: Gpa,
) -> Result<CallResult, ExitError> {
    let mine = ProtectedPage {
        gpa: page,
        owner: ctx,
    };
    let Some(slot) = env.prot.pages.iter().position(|p| *p == Some(mine)) else {
        return Ok(Err(Status::NotFound));
    };
    if let Err(s) = apply::check_frames(env.views, apply::live_count(env.views)) {
        return Ok(Err(s));
    }
    if env.prot.current != 0 && env.prot.current != ctx {
        return Ok(Err(Status::PermissionDenied));
    }
    // Not while another processor runs in the context (issue 17): its
    // view maps the page writable until the shootdown after this call, so
    // a write of its after the zeroing would reach every view.
    let mine_running = u8::from(env.prot.current == ctx);
    if env.prot.running[usize::from(ctx)] > mine_running {
        return Ok(Err(Status::BadContext));
    }
    // Zeroed while still hidden from every other view.
    env.views
        .write_phys(page, &[0; 4096])
        .map_err(|_| ExitError::Unexpected("protected page outside guest RAM"))?;
    env.prot.pages[slot] = None;
    if env.prot.current == 0 {
        for g in &mut env.prot.grants {
            if *g == Some(mine) {
                *g = None;
            }
        }
    }
    let range = PhysRange::new(page.0, 4096);
    apply::apply_range(env.prot, env.views, range, Class::Plain).map_err(fatal)?;
    env.invalidate()?;
    Ok(Ok(Reply::Done(None)))
}
