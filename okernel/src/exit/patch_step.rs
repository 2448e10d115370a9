//! The exit side of validated self-patching (`crate::policy::patch`):
//! one write to locked text let through, then judged.
//!
//! 1. [`begin`] (from the EPT-violation handler): a data write to a page
//!    of locked text that holds a registered patch site, made by an
//!    instruction (not while the processor delivers an event, not
//!    asynchronous). The monitor copies the page, makes it writable in the
//!    current view, arms a one-instruction step and resumes the guest at
//!    the same instruction. A write that straddles into a second such
//!    page faults again and opens that one too (at most
//!    [`MAX_STEP_PAGES`]).
//! 2. The instruction runs and control comes back ([`StepMethod`]):
//!    - with the **monitor trap flag** (SDM Vol. 3C §26.5.2) as an MTF VM
//!      exit after the instruction, or after the delivery of an event
//!      that came first ([`finish`]);
//!    - where the processor has none (Bochs 2.7's Skylake-X), with the
//!      guest's **RFLAGS.TF**: the single-step #DB after the instruction
//!      (SDM Vol. 3A §18.3.1.4) exits through the exception bitmap, which
//!      intercepts every vector for the step (PFEC mask and match 0, so
//!      every #PF too: an instruction that faults is caught before its
//!      handler runs with the page open); IF is cleared so no maskable
//!      interrupt is delivered in between, NMIs are blocked
//!      (interruptibility bit 3) and IA32_DEBUGCTL.BTF is cleared (else
//!      TF would trap at the next branch, §18.4.3, with the page open). A guest already single-stepping (TF),
//!      or in an STI or MOV-SS shadow (where TF would need a pending
//!      debug exception, §27.3.1.5), gets no step: its write is denied.
//! 3. The step is disarmed and its pages go back to read-only before
//!    anything else; then each page is judged
//!    ([`crate::policy::patch::judge_page`]). A legal write stands
//!    (logged, counted). Otherwise every opened page gets its old bytes
//!    back, the write is audited as the EPT violation it was, and the
//!    guest gets #GP(0) at the writing instruction (where RSP shows no
//!    event was delivered in between) — the outcome of a write to text
//!    without sites. Any other exit while a step is open ends the step
//!    the same way first ([`abandon`]).
//!
//! While a page is open it is writable (and executable) for one
//! instruction of one virtual CPU, in a view every processor in that
//! context uses: so with several processors no other one runs the guest
//! while a step is open (issue 17, `crate::launch::presence`,
//! `Presence::set_stepping`). Before the page opens, [`begin`] has every
//! other processor leave the guest (`Vcpu::stop_others`, bounded: one
//! that does not leave ends the run), and every other processor's exit
//! then waits, without the run's lock, until the step closed before it
//! is handled (so none enters the guest, or ends the step from its own
//! VMCS, meanwhile; the wait is bounded too). The step's own exit comes
//! after its one instruction, or at the next tick of the
//! VMX-preemption timer, which ends a step whose processor halted
//! ([`at_tick`]: with the trap flag IF is clear, and the HLT would never
//! end).

use crate::bits::{DEBUGCTL_BTF, PENDING_BS, RFLAGS_IF, RFLAGS_TF};
use crate::hw::{Cpu, Vmcs};
use crate::hypercall::patch_sites;
use crate::hypercall::policy::Env;
use crate::memmap::Gpa;
use crate::policy::Policy;
use crate::policy::apply::{self, Class};
use crate::policy::audit::{Access, AuditAction, AuditKind, AuditRecord, Note};
use crate::policy::patch::{MAX_STEP_PAGES, Refusal, Saved, StepMethod, Writer, judge_page};
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::controls::PrimaryProcBased;
use crate::vmx::event::{Exception, InterruptionInfo};
use crate::vmx::fields::{Control32, Guest32, Guest64, GuestNatural, ReadOnly32, ReadOnlyNatural};
use okernel_abi::policy::RegionKind;

/// Interruptibility: blocking by STI, by MOV SS (SDM Vol. 3C Table 25-3).
const STI_OR_MOV_SS: u32 = 0b11;
/// Interruptibility: blocking by NMI.
const NMI_BLOCKED: u32 = 1 << 3;
/// EPT-violation qualification: the guest-linear address is valid (bit
/// 7) and the access was to its translation (bit 8), not to a
/// paging-structure entry.
pub const TRANSLATED_ACCESS: u64 = (1 << 7) | (1 << 8);

/// What a write to locked text became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begun {
    /// The page was opened: resume at the same instruction.
    Opened,
    /// Not a patch: deny it as any other violation.
    NotAPatch,
}

/// Whether a step is open.
pub fn open<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(vcpu: &mut Vcpu<V, C, P, M>) -> bool {
    vcpu.policy
        .protection()
        .is_some_and(|p| p.patch.step.open())
}

/// Opens page `gpa`'s page for one write if it is locked text with a
/// registered patch site; see the module documentation.
pub fn begin<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    gpa: Gpa,
    gva: Option<u64>,
    qualification: u64,
) -> Result<Begun, ExitError> {
    // Only a write to the page a linear address translates to (bits 7
    // and 8 of the qualification, SDM Vol. 3C Table 28-7), not the
    // processor's own write of a paging-structure entry's accessed or
    // dirty flag: that is no instruction's store to step.
    if qualification & TRANSLATED_ACCESS != TRANSLATED_ACCESS {
        return Ok(Begun::NotAPatch);
    }
    let (stop_others, me) = (vcpu.stop_others, vcpu.cpu_index);
    let rip = vcpu.vmcs.read(GuestNatural::Rip)?;
    let rsp = vcpu.vmcs.read(GuestNatural::Rsp)?;
    let rflags = vcpu.vmcs.read(GuestNatural::Rflags)?;
    let interruptibility = vcpu.vmcs.read(Guest32::InterruptibilityState)?;
    let Some(mut env) = Env::of(vcpu) else {
        return Ok(Begun::NotAPatch);
    };
    let page = gpa.page_base();
    let p = &env.prot;
    let step = &p.patch.step;
    let method = if p.caps.mtf {
        StepMethod::MonitorTrap
    } else {
        StepMethod::TrapFlag
    };
    let cannot_trap = method == StepMethod::TrapFlag
        && !step.open()
        && (rflags & RFLAGS_TF != 0 || interruptibility & STI_OR_MOV_SS != 0);
    if cannot_trap
        || !p.patch.any()
        || p.locked_region_at(gpa, RegionKind::Text).is_none()
        || step.count == MAX_STEP_PAGES
        || step.pages().contains(&page)
        || !patch_sites::page_has_site(&mut env, page)
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
    let first = !step.open();
    if first {
        step.writer = Writer {
            method,
            saved: Saved::default(),
            ctx,
            rip,
            rsp,
            gva,
            qualification,
        };
    }
    // Every other processor out of the guest, and kept out until the step
    // closed, before the page opens (`crate::launch::presence`): none may
    // run on the writable page.
    if let Some(stop) = stop_others
        && let Err(cpu) = stop(me)
    {
        return Err(ExitError::Shootdown(cpu));
    }
    step.pages[step.count] = page;
    step.count += 1;
    let open = apply::perms(env.prot, Class::Region(RegionKind::Text), ctx) | ept::Perms::WRITE;
    env.views
        .protect(ctx, page, 4096, open)
        .map_err(ExitError::PolicyEpt)?;
    env.invalidate()?;
    if first {
        arm(&mut env, method, rflags, interruptibility)?;
    } else if method == StepMethod::TrapFlag {
        // A second page: the instruction faulted on it with TF set, and
        // Bochs 2.7 saves the single-step trap of that unfinished
        // instruction as pending (BS in the pending debug exceptions,
        // SDM Vol. 3C §25.4.2): VM entry would deliver it before the
        // instruction runs again, the step would end with nothing
        // written, and the write would fault on the first page anew — for
        // ever. The trap belongs after the instruction; TF brings it then.
        let pending = env.vmcs.read(GuestNatural::PendingDebugExceptions)?;
        env.vmcs
            .write(GuestNatural::PendingDebugExceptions, pending & !PENDING_BS)?;
    }
    Ok(Begun::Opened)
}

/// Arms the step's way back (see the module documentation).
fn arm<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    method: StepMethod,
    rflags: u64,
    interruptibility: u32,
) -> Result<(), ExitError> {
    let v = &mut *env.vmcs;
    match method {
        StepMethod::MonitorTrap => {
            let primary = v.read(Control32::PrimaryProcessorBasedControls)?;
            v.write(
                Control32::PrimaryProcessorBasedControls,
                primary | PrimaryProcBased::MONITOR_TRAP_FLAG.bits(),
            )?;
        }
        StepMethod::TrapFlag => {
            env.prot.patch.step.writer.saved = Saved {
                rflags,
                exceptions: v.read(Control32::ExceptionBitmap)?,
                pfec: (
                    v.read(Control32::PageFaultErrorCodeMask)?,
                    v.read(Control32::PageFaultErrorCodeMatch)?,
                ),
                interruptibility,
                debugctl: v.read(Guest64::Debugctl)?,
            };
            // With BTF set the trap would come at the next branch, the
            // page open until then: the step single-steps the instruction.
            let debugctl = env.prot.patch.step.writer.saved.debugctl;
            v.write(Guest64::Debugctl, debugctl & !DEBUGCTL_BTF)?;
            v.write(GuestNatural::Rflags, (rflags | RFLAGS_TF) & !RFLAGS_IF)?;
            v.write(Control32::ExceptionBitmap, u32::MAX)?;
            v.write(Control32::PageFaultErrorCodeMask, 0)?;
            v.write(Control32::PageFaultErrorCodeMatch, 0)?;
            v.write(
                Guest32::InterruptibilityState,
                interruptibility | NMI_BLOCKED,
            )?;
        }
    }
    Ok(())
}

/// Undoes [`arm`]: the guest's TF, IF, BTF and NMI blocking as they were,
/// the exception interception as it was.
fn disarm<V: Vmcs, C: Cpu>(env: &mut Env<'_, V, C>, w: &Writer) -> Result<(), ExitError> {
    let v = &mut *env.vmcs;
    match w.method {
        StepMethod::MonitorTrap => {
            let primary = v.read(Control32::PrimaryProcessorBasedControls)?;
            v.write(
                Control32::PrimaryProcessorBasedControls,
                primary & !PrimaryProcBased::MONITOR_TRAP_FLAG.bits(),
            )?;
        }
        StepMethod::TrapFlag => {
            let s = w.saved;
            let rflags = v.read(GuestNatural::Rflags)?;
            v.write(
                GuestNatural::Rflags,
                (rflags & !(RFLAGS_TF | RFLAGS_IF)) | (s.rflags & (RFLAGS_TF | RFLAGS_IF)),
            )?;
            let debugctl = v.read(Guest64::Debugctl)?;
            v.write(
                Guest64::Debugctl,
                (debugctl & !DEBUGCTL_BTF) | (s.debugctl & DEBUGCTL_BTF),
            )?;
            v.write(Control32::ExceptionBitmap, s.exceptions)?;
            v.write(Control32::PageFaultErrorCodeMask, s.pfec.0)?;
            v.write(Control32::PageFaultErrorCodeMatch, s.pfec.1)?;
            let now = v.read(Guest32::InterruptibilityState)?;
            v.write(
                Guest32::InterruptibilityState,
                (now & !NMI_BLOCKED) | (s.interruptibility & NMI_BLOCKED),
            )?;
        }
    }
    Ok(())
}

/// A closed step: its writer and the verdict on what it wrote (the number
/// of sites it left in legal forms, or why it was refused).
type Closed = (Writer, Result<u32, Refusal>);

/// Ends the open step: disarms it, closes its pages, judges them and
/// undoes a refused write. `Ok(None)`: no step was open.
fn close<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<Option<Closed>, ExitError> {
    let Some(mut env) = Env::of(vcpu) else {
        return Ok(None);
    };
    if !env.prot.patch.step.open() {
        return Ok(None);
    }
    let (pages, count) = (env.prot.patch.step.pages, env.prot.patch.step.count);
    let writer = env.prot.patch.step.writer;
    disarm(&mut env, &writer)?;
    let locked = apply::perms(env.prot, Class::Region(RegionKind::Text), writer.ctx);
    for &page in &pages[..count] {
        env.views
            .protect(writer.ctx, page, 4096, locked)
            .map_err(ExitError::PolicyEpt)?;
    }
    env.invalidate()?;
    let mut verdict = Ok(0u32);
    for (i, &page) in pages[..count].iter().enumerate() {
        let views = &*env.views;
        let mut now = |gpa: Gpa, buf: &mut [u8]| views.read_phys(gpa, buf).is_ok();
        let mut table = |gpa: Gpa, buf: &mut [u8]| views.read_phys(gpa, buf).is_ok();
        let prot = &*env.prot;
        // Where a static call may go: locked text, but not inside a patch
        // site (whose bytes a write primitive chooses: a review's bypass).
        let text = |gpa: Gpa| {
            let mut read = |gpa: Gpa, buf: &mut [u8]| views.read_phys(gpa, buf).is_ok();
            prot.locked_region_at(gpa, RegionKind::Text).is_some()
                && !prot.patch.inside_a_site(gpa, &mut read)
        };
        let patch = &prot.patch;
        match judge_page(
            patch,
            page,
            &patch.step.before[i],
            &mut now,
            &mut table,
            &text,
        ) {
            Ok(n) => verdict = verdict.map(|t| t + n),
            Err(r) => {
                verdict = Err(r);
                break;
            }
        }
    }
    if verdict.is_err() {
        for (i, &page) in pages[..count].iter().enumerate() {
            env.views
                .write_phys(page, &env.prot.patch.step.before[i])
                .map_err(|_| ExitError::PatchRestore(page.0))?;
        }
    }
    env.prot.patch.step.count = 0;
    if let Ok(sites @ 1..) = verdict {
        let n = env.prot.patch.validated + 1;
        env.prot.patch.validated = n;
        // A static key rewrites hundreds of sites: the log shows the
        // first write and then every power of two.
        if n.is_power_of_two() {
            // After the audit lines still waiting: the console keeps order.
            env.audit.print_pending();
            log::info!(
                "okernel: patch: validated write #{n} at rip {:#x}: {sites} patch site(s) on page {:#x} in legal forms",
                writer.rip,
                pages[0].0
            );
        }
    }
    Ok(Some((writer, verdict)))
}

/// The step's own exit with the instruction done: judge, then resume
/// (legal) or fault the writer (refused).
fn done<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<Option<ExitAction>, ExitError> {
    match close(vcpu)? {
        None => Ok(None),
        Some((writer, Ok(_))) => {
            // An instruction that ended at the canonical boundary: the
            // next fetch's #GP, never a VM entry with that RIP.
            vcpu.fault_past_canonical_boundary(writer.rip)?;
            Ok(Some(ExitAction::Resume))
        }
        Some((writer, Err(refusal))) => {
            audit(vcpu, &writer, refusal)?;
            // Fault semantics where nothing was delivered in between (RSP
            // as it was): #GP at the writing instruction. So too where the
            // instruction ended past the canonical boundary: VM entry
            // cannot load that RIP (48-bit: a 57-bit canonical one that is
            // not goes back to the writer too, with its #GP either way).
            let rip = vcpu.vmcs.read(GuestNatural::Rip)?;
            if vcpu.vmcs.read(GuestNatural::Rsp)? == writer.rsp || !super::deliver::canonical(rip) {
                vcpu.vmcs.write(GuestNatural::Rip, writer.rip)?;
            }
            vcpu.inject(Exception::GeneralProtection, 0).map(Some)
        }
    }
}

/// The monitor-trap-flag exit: the step's end. `None`: no step was open
/// (the exit is not ours).
pub fn finish<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<Option<ExitAction>, ExitError> {
    done(vcpu)
}

/// An exception or NMI exit while a trap-flag step is open: the
/// single-step #DB ends the step; any other event (the instruction
/// faulted) ends it too and is then delivered as it would have been.
/// `None`: no step was open.
pub fn on_exception<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<Option<ExitAction>, ExitError> {
    if !open(vcpu) {
        return Ok(None);
    }
    let event = InterruptionInfo(vcpu.vmcs.read(ReadOnly32::ExitInterruptionInfo)?);
    let qualification = vcpu.vmcs.read(ReadOnlyNatural::ExitQualification)?;
    // The #DB exit qualification has BS at the pending debug exceptions'
    // bit (SDM Vol. 3C Table 28-1).
    let single_step = qualification & PENDING_BS != 0;
    if event.valid() && event.vector() == Exception::Debug as u8 && single_step {
        return done(vcpu);
    }
    abandon(vcpu)?;
    if event.valid() && event.vector() == Exception::PageFault as u8 {
        // The #PF exited instead of loading CR2 (SDM Vol. 3C §27.1).
        vcpu.cpu.write_cr2(qualification);
    }
    vcpu.reinject(event).map(Some)
}

/// At a tick of the VMX-preemption timer: ends a step whose processor
/// halted before its instruction completed (the activity state HLT: the
/// step cleared IF, so only the timer brings it out, and it would keep
/// the page open and, with several processors, the others waiting).
pub fn at_tick<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<(), ExitError> {
    if open(vcpu)
        && vcpu.vmcs.read(Guest32::ActivityState)?
            == crate::vcpu::startup::ActivityState::Hlt as u32
    {
        abandon(vcpu)?;
    }
    Ok(())
}

/// Ends an open step because another exit came first (the instruction
/// faulted, or made a write no patch can explain): a refused write is
/// undone and audited; the caller then handles its own exit. Nothing
/// happens when no step is open.
pub fn abandon<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<(), ExitError> {
    if let Some((writer, Err(refusal))) = close(vcpu)? {
        audit(vcpu, &writer, refusal)?;
    }
    Ok(())
}

/// Audits a refused (and already undone) write as the EPT violation it
/// was.
fn audit<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    writer: &Writer,
    refusal: Refusal,
) -> Result<(), ExitError> {
    let why = match refusal {
        Refusal::OutsideSites(_) => "a byte outside every patch site",
        Refusal::IllegalForm(_) => "a patch site left in an illegal form",
    };
    let record = AuditRecord {
        seq: 0,
        kind: AuditKind::EptViolation,
        context: writer.ctx,
        gpa: refusal.gpa().0,
        gva: writer.gva,
        access: Access::WRITE,
        allowed: Access::READ | Access::EXECUTE,
        qualification: writer.qualification,
        rip: writer.rip,
        cr3: vcpu.vmcs.read(GuestNatural::Cr3)?,
        action: AuditAction::InjectGp,
    };
    if vcpu.audit.record(record).printed {
        vcpu.audit.note(Note::PatchRefused {
            rip: writer.rip,
            why,
            gpa: refusal.gpa().0,
        });
    }
    Ok(())
}
