//! The exit side of validated self-patching (`crate::policy::patch`):
//! one write to locked text let through, then judged.
//!
//! 1. [`begin`] (from the EPT-violation handler): a data write to a page
//!    of locked text that holds a registered patch site, made by an
//!    instruction (not while the processor delivers an event, not
//!    asynchronous). The monitor copies the page, makes it writable in the
//!    current view, sets the monitor trap flag and resumes the guest at
//!    the same instruction. A write that straddles into a second such
//!    page faults again and opens that one too (at most
//!    [`MAX_STEP_PAGES`]).
//! 2. The instruction runs; the monitor-trap-flag VM exit follows it
//!    (SDM Vol. 3C §26.5.2, "Monitor Trap Flag": pending after the
//!    instruction, or after the delivery of an event that came first).
//! 3. [`finish`]: the pages go back to read-only and the flag is cleared
//!    before anything else; then each page is judged
//!    ([`crate::policy::patch::judge_page`]). A legal write stands
//!    (logged, counted). Otherwise every opened page gets its old bytes
//!    back, the write is audited as the EPT violation it was, and the
//!    guest gets #GP(0) at the writing instruction (where RSP shows no
//!    event was delivered in between; else at the instruction the guest
//!    stopped at) — the same outcome as a write to text without sites.
//!
//! While a page is open it is writable (and executable) for exactly one
//! instruction of one virtual CPU: okernel runs one (issue 17 makes this
//! per-CPU; another CPU must not see the page writable).

use super::guest::Vcpu;
use super::{ExitAction, ExitError};
use crate::hw::{Cpu, Vmcs};
use crate::hypercall::memory::GuestMemory;
use crate::hypercall::patch_sites;
use crate::hypercall::policy::Env;
use crate::policy::Policy;
use crate::policy::apply::{self, Class};
use crate::policy::audit::{Access, AuditAction, AuditKind, AuditRecord};
use crate::policy::patch::{MAX_STEP_PAGES, Refusal, Writer, judge_page};
use crate::vmx::controls::PrimaryProcBased;
use crate::vmx::event::Exception;
use crate::vmx::fields::{Control32, GuestNatural};
use okernel_abi::policy::RegionKind;

/// What a write to locked text became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begun {
    /// The page was opened: resume at the same instruction.
    Opened,
    /// Not a patch: deny it as any other violation.
    NotAPatch,
}

/// Opens page `gpa`'s page for one write if it is locked text with a
/// registered patch site; see the module documentation.
pub fn begin<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    gpa: u64,
    gva: Option<u64>,
    qualification: u64,
) -> Result<Begun, ExitError> {
    let rip = vcpu.vmcs.read(GuestNatural::Rip)?;
    let rsp = vcpu.vmcs.read(GuestNatural::Rsp)?;
    let Some(mut env) = Env::of(vcpu) else {
        return Ok(Begun::NotAPatch);
    };
    let page = gpa & !0xfff;
    let p = &env.prot;
    let step = &p.patch.step;
    if !p.caps.mtf
        || !p.patch.any()
        || p.locked_region_at(gpa, RegionKind::Text).is_none()
        || step.count == MAX_STEP_PAGES
        || step.pages().contains(&page)
        || !patch_sites::page_has_site(&env, page)
        || apply::check_frames(env.views, 1).is_err()
    {
        return Ok(Begun::NotAPatch);
    }
    let ctx = env.prot.current;
    let step = &mut env.prot.patch.step;
    if env
        .views
        .read_phys(page, &mut step.before[step.count])
        .is_err()
    {
        return Ok(Begun::NotAPatch);
    }
    if !step.open() {
        step.writer = Writer {
            ctx,
            rip,
            rsp,
            gva,
            qualification,
        };
    }
    step.pages[step.count] = page;
    step.count += 1;
    let open = apply::perms(env.prot, Class::Region(RegionKind::Text), ctx) | ept::Perms::WRITE;
    env.views
        .protect(ctx, page, 4096, open)
        .map_err(ExitError::PolicyEpt)?;
    let primary = env.vmcs.read(Control32::PrimaryProcessorBasedControls)?;
    env.vmcs.write(
        Control32::PrimaryProcessorBasedControls,
        primary | PrimaryProcBased::MONITOR_TRAP_FLAG.bits(),
    )?;
    env.invalidate()?;
    Ok(Begun::Opened)
}

/// The monitor-trap-flag exit of an open step: close, judge, and keep or
/// undo the write. `None`: no step was open (the exit is not ours).
pub fn finish<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<Option<ExitAction>, ExitError> {
    let Some(mut env) = Env::of(vcpu) else {
        return Ok(None);
    };
    if !env.prot.patch.step.open() {
        return Ok(None);
    }
    let (pages, count) = (env.prot.patch.step.pages, env.prot.patch.step.count);
    let writer = env.prot.patch.step.writer;
    // Close first: clear the flag, pages back to their locked rights.
    let primary = env.vmcs.read(Control32::PrimaryProcessorBasedControls)?;
    env.vmcs.write(
        Control32::PrimaryProcessorBasedControls,
        primary & !PrimaryProcBased::MONITOR_TRAP_FLAG.bits(),
    )?;
    let locked = apply::perms(env.prot, Class::Region(RegionKind::Text), writer.ctx);
    for &page in &pages[..count] {
        env.views
            .protect(writer.ctx, page, 4096, locked)
            .map_err(ExitError::PolicyEpt)?;
    }
    env.invalidate()?;
    // Judge every page the instruction could write.
    let mut verdict = Ok(0u32);
    for (i, &page) in pages[..count].iter().enumerate() {
        let views = &*env.views;
        let mut now = |gpa: u64, buf: &mut [u8]| views.read_phys(gpa, buf).is_ok();
        let mut table = |gpa: u64, buf: &mut [u8]| views.read_phys(gpa, buf).is_ok();
        let patch = &env.prot.patch;
        match judge_page(patch, page, &patch.step.before[i], &mut now, &mut table) {
            Ok(n) => verdict = verdict.map(|t| t + n),
            Err(r) => {
                verdict = Err(r);
                break;
            }
        }
    }
    if verdict.is_err() {
        // Undo: every opened page gets its old bytes back.
        for (i, &page) in pages[..count].iter().enumerate() {
            env.views
                .write_phys(page, &env.prot.patch.step.before[i])
                .map_err(|_| ExitError::PatchRestore(page))?;
        }
    }
    env.prot.patch.step.count = 0;
    match verdict {
        Ok(0) => Ok(Some(ExitAction::Resume)),
        Ok(sites) => {
            env.prot.patch.validated += 1;
            log::info!(
                "okernel: patch: validated write at rip {:#x}: {sites} patch site(s) on page {:#x} in legal forms",
                writer.rip,
                pages[0]
            );
            Ok(Some(ExitAction::Resume))
        }
        Err(refusal) => refuse(vcpu, writer, refusal).map(Some),
    }
}

/// Audits a refused (and already undone) write as the EPT violation it
/// was, and faults the writer.
fn refuse<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    writer: Writer,
    refusal: Refusal,
) -> Result<ExitAction, ExitError> {
    let why = match refusal {
        Refusal::OutsideSites(_) => "a byte outside every patch site",
        Refusal::IllegalForm(_) => "a patch site left in an illegal form",
    };
    log::warn!(
        "okernel: patch: refused write at rip {:#x}: {why} at gpa {:#x}; old bytes restored",
        writer.rip,
        refusal.gpa()
    );
    let record = AuditRecord {
        seq: 0,
        kind: AuditKind::EptViolation,
        context: writer.ctx,
        gpa: refusal.gpa(),
        gva: writer.gva,
        access: Access::WRITE,
        allowed: Access::READ | Access::EXECUTE,
        qualification: writer.qualification,
        rip: writer.rip,
        cr3: vcpu.vmcs.read(GuestNatural::Cr3)?,
        action: AuditAction::InjectedGp,
    };
    vcpu.audit.push(record).log();
    // Fault semantics where nothing was delivered in between (RSP as it
    // was): #GP at the writing instruction.
    if vcpu.vmcs.read(GuestNatural::Rsp)? == writer.rsp {
        vcpu.vmcs.write(GuestNatural::Rip, writer.rip)?;
    }
    vcpu.inject(Exception::GeneralProtection, 0)
}
