//! VMCALL: the hypercall ABI of [`okernel_abi::hypercall`] (register
//! convention there). [`handle_vmcall`] checks the caller's privilege,
//! decodes the registers once into a typed [`Request`]
//! ([`okernel_abi::request`]: everything the ABI asks of an argument that
//! needs no monitor state) and dispatches on it, one arm per call; each
//! handler checks what needs the monitor's state, then its answer sets
//! RAX (and what the call returns) and says what becomes of the VMCALL
//! ([`Vmcall`]): it completed (the exit layer, `crate::exit`, moves RIP
//! past it: the RIP advance is that layer's, this one never calls up into
//! it), the guest resumes at a gate (SwitchContext), or the run ends
//! (Exit). The exit path runs the CPL check and the Null arm in line, with
//! no decoding ([`handle_vmcall_fast`]), and the rest out of line
//! ([`handle_vmcall_at`]). Exit's reason is read from guest memory through
//! [`GuestMemory`].
//!
//! Every malformed call gets a status code (invariant 11): a call number
//! outside the ABI [`Status::UnknownCall`], a bad argument the decoder's
//! or the handler's status, a caller at CPL > 0
//! [`Status::PermissionDenied`] (and nothing else happens).
//!
//! Two kinds of failure, two types: a guest's bad request is a [`Status`]
//! the guest gets back (a handler's `Ok(Err(status))`,
//! [`policy::CallResult`]); a broken monitor invariant (a VMCS access
//! that failed, an EPT change that failed after its frames were checked)
//! is an [`ExitError`] and ends the run.

// Safe code only above the hardware layers (`hw`, `arch`, `launch`):
// issue 14, DESIGN.md §6.
#![forbid(unsafe_code)]

pub mod contexts;
pub mod gates;
pub mod locks;
pub mod page_table;
pub mod patch_sites;
pub mod policy;
pub mod protected_pages;

use okernel_abi::ABI_VERSION;
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::request::{ExitReasonSlot, ReasonBytes, Registers, Request};
use okernel_abi::result::Outcome;

use crate::hw::{Cpu, Vmcs};
use crate::memmap::Gpa;
use crate::policy::Policy;
use crate::policy::audit::{Access, AuditAction, AuditKind, AuditRecord};
use crate::vcpu::guest::{SS_DPL, cpl_of};
use crate::vcpu::hooks::CallReply;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::reason::GuestReason;
use crate::vcpu::{ExitError, Vcpu};
use crate::vmx::fields::{Guest32, GuestNatural};
use crate::vmx::regs::Gpr;

/// What becomes of the VMCALL once its handler has answered (RAX and
/// what the call returns already set). The exit layer carries it out
/// (`crate::exit`'s VMCALL arms): the RIP advance, with its boundaries,
/// RFLAGS and blocking, is that layer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmcall {
    /// The call completed: RIP moves past the VMCALL as after any
    /// instruction the monitor completes.
    Advance {
        /// The guest's mode as far as this exit has read it
        /// ([`Vcpu::mode_once`]), for the advance.
        mode: Option<bool>,
    },
    /// The guest resumes where the call put it, at a gate in its entry
    /// state (SwitchContext): RIP is set, nothing advances.
    Redirected,
    /// The run ends with this outcome (Exit from the trusted context);
    /// RIP stays at the VMCALL.
    Stop(Outcome),
}

/// Handles a VMCALL exit: [`handle_vmcall_fast`], then
/// [`handle_vmcall_at`] for what it left.
///
/// Outside 64-bit mode only the low 32 bits of a register count. Every
/// call number of the ABI fits in 32 bits, so it means the same in every
/// mode: the mode (two VMREADs) is read only for a RAX with a non-zero
/// upper half, or for an argument with one that the call reads.
pub fn handle_vmcall<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<Vmcall, ExitError> {
    match handle_vmcall_fast(vcpu) {
        Fast::Advance => Ok(Vmcall::Advance { mode: None }),
        Fast::Failed(e) => Err(e),
        Fast::Continue { cpl } => handle_vmcall_at(vcpu, cpl),
    }
}

/// What [`handle_vmcall_fast`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// It answered the call (Null at CPL 0: RAX = Success), which
    /// completed: [`Vmcall::Advance`], the mode not read.
    Advance,
    /// Reading the CPL failed.
    Failed(ExitError),
    /// [`handle_vmcall_at`] handles it.
    Continue {
        /// The caller's privilege level.
        cpl: u8,
    },
}

/// The part of [`handle_vmcall`] the exit path runs in line: the CPL, and
/// the Null call at CPL 0 — exactly what [`handle_vmcall_at`] does for it
/// (RAX = Success, the call completed; its number fits in 32 bits, so no
/// mode).
#[inline(always)]
pub fn handle_vmcall_fast<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Fast {
    let ss = match vcpu.vmcs.read(Guest32::SsAccessRights) {
        Ok(ar) => ar,
        Err(e) => return Fast::Failed(e.into()),
    };
    if ss & SS_DPL != 0 {
        core::hint::cold_path();
        return Fast::Continue { cpl: cpl_of(ss) };
    }
    if vcpu.regs.rax() != Call::Null.raw() {
        core::hint::cold_path();
        return Fast::Continue { cpl: 0 };
    }
    vcpu.regs.set(Gpr::Rax, Status::Success.raw());
    Fast::Advance
}

/// [`handle_vmcall`] once the caller's CPL is known: the request decoded
/// once ([`Request::decode`]), then one arm per call.
pub fn handle_vmcall_at<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    cpl: u8,
) -> Result<Vmcall, ExitError> {
    if cpl != 0 {
        return complete(vcpu, Status::PermissionDenied, None);
    }
    let r = vcpu.regs;
    let regs = Registers {
        rax: r.rax(),
        rdi: r.rdi(),
        rsi: r.rsi(),
        rdx: r.rdx(),
    };
    // The mode (two VMREADs, kept for the RIP advance) only where it can
    // change the answer; elsewhere every mode decodes alike.
    let mut mode = None;
    let long = !regs.needs_mode() || vcpu.mode_once(&mut mode)?;
    match Request::decode(regs, long) {
        Ok(request) => dispatch(vcpu, request, mode),
        Err(status) => malformed(vcpu, regs.in_mode(long).rax, status, mode),
    }
}

/// Runs `request`'s handler and gives the guest its answer. CPL is 0.
fn dispatch<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    request: Request,
    mode: Option<bool>,
) -> Result<Vmcall, ExitError> {
    use self::policy::{lock_region, register_region, with_env};
    use self::{contexts as ctx, gates, locks, page_table as pt, patch_sites, protected_pages};
    let answer = match request {
        Request::Null => return complete(vcpu, Status::Success, mode),
        Request::Version => return version(vcpu, mode),
        Request::Exit { outcome, reason } => return exit(vcpu, outcome, reason, mode),
        Request::ExitCount { reason } => return exit_count(vcpu, reason, mode),
        Request::AuditRead { sequence, buffer } => pt::audit_read(vcpu, sequence, Gpa(buffer))?,
        Request::RegisterRegion { pages, kind } => {
            with_env(vcpu, |env| Ok(register_region(env, pages, kind)))?
        }
        Request::LockRegion { region } => with_env(vcpu, |env| lock_region(env, region))?,
        Request::PinCr { cr, bits } => with_env(vcpu, |env| locks::pin_cr(env, cr, bits))?,
        Request::LockMsr { msr } => with_env(vcpu, |env| locks::lock_msr(env, msr))?,
        Request::LockDescriptorTables => with_env(vcpu, locks::lock_descriptor_tables)?,
        Request::CreateContext => with_env(vcpu, ctx::create)?,
        Request::DestroyContext { context } => with_env(vcpu, |env| ctx::destroy(env, context))?,
        Request::AllocProtectedPage { context, page } => {
            with_env(vcpu, |env| protected_pages::alloc(env, context, Gpa(page)))?
        }
        Request::FreeProtectedPage { context, page } => {
            with_env(vcpu, |env| protected_pages::free(env, context, Gpa(page)))?
        }
        Request::RegisterGate { linear, stack, cr3 } => {
            with_env(vcpu, |env| gates::register(env, linear, stack, cr3))?
        }
        Request::SwitchContext { context, gate } => {
            with_env(vcpu, |env| ctx::switch(env, context, gate))?
        }
        Request::UpdatePageTable { entry, value } => {
            with_env(vcpu, |env| pt::update(env, entry, value))?
        }
        Request::AuditCount => with_env(vcpu, |env| {
            Ok(Ok(policy::Reply::Done(Some(env.audit.total()))))
        })?,
        Request::SetExecuteRule { rule } => {
            with_env(vcpu, |env| Ok(patch_sites::set_execute_rule(env, rule)))?
        }
        Request::RegisterPatchSites { table } => {
            with_env(vcpu, |env| patch_sites::register(env, table))?
        }
    };
    answer_policy_call(vcpu, answer, mode)
}

/// A call [`Request::decode`] refused with `status` (`number` is RAX as
/// the guest's operand): a number outside the ABI may be a call of the
/// memory's exit hooks; a policy call may be answered before its
/// arguments ([`policy::before_arguments`]); otherwise the status.
fn malformed<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    number: u64,
    status: Status,
    mode: Option<bool>,
) -> Result<Vmcall, ExitError> {
    let status = match Call::from_raw(number) {
        Ok(call) => policy::before_arguments(vcpu, call).unwrap_or(status),
        Err(_) if M::is_call(number) => return hook_call(vcpu, number, mode),
        Err(_) => status,
    };
    complete(vcpu, status, mode)
}

/// A call of the memory's exit hooks (`crate::vcpu::hooks`; only a fuzz
/// build has any: `okernel_abi::fuzz`): RDI is its argument; the reply
/// sets RAX and maybe RDI (a hook that does not know the call after all
/// answers `UnknownCall`).
fn hook_call<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    number: u64,
    mut mode: Option<bool>,
) -> Result<Vmcall, ExitError> {
    let arg = operand(vcpu, vcpu.regs.rdi(), &mut mode)?;
    match M::call(vcpu, number, arg)? {
        Err(status) => complete(vcpu, status, mode),
        Ok(reply) => {
            if let CallReply::Rdi(v) = reply {
                vcpu.regs.set(Gpr::Rdi, v);
            }
            complete(vcpu, Status::Success, mode)
        }
    }
}

/// Sets RAX = `status`: the call completed, and the exit layer moves RIP
/// past the VMCALL ([`Vmcall::Advance`]).
#[inline(always)]
fn complete<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    status: Status,
    mode: Option<bool>,
) -> Result<Vmcall, ExitError> {
    vcpu.regs.set(Gpr::Rax, status.raw());
    Ok(Vmcall::Advance { mode })
}

/// Gives the guest a policy call's answer: the refusal's status, or
/// Success with RDI (after the VMCALL, or at a gate: RIP set there, no
/// advance).
fn answer_policy_call<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    answer: policy::CallResult,
    mode: Option<bool>,
) -> Result<Vmcall, ExitError> {
    match answer {
        Err(status) => complete(vcpu, status, mode),
        Ok(policy::Reply::Done(value)) => {
            if let Some(v) = value {
                vcpu.regs.set(Gpr::Rdi, v);
            }
            complete(vcpu, Status::Success, mode)
        }
        Ok(policy::Reply::Gate { gate, rdi }) => {
            vcpu.regs.set(Gpr::Rax, Status::Success.raw());
            vcpu.regs.set(Gpr::Rdi, rdi);
            // A gate entry never ends the run: only the trusted kernel's
            // Exit does.
            vcpu.enter_gate(&gate)?;
            Ok(Vmcall::Redirected)
        }
    }
}

/// ExitCount(reason): RDI = that reason's exits, RSI = all exits.
fn exit_count<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    reason: ExitReasonSlot,
    mode: Option<bool>,
) -> Result<Vmcall, ExitError> {
    vcpu.regs.set(Gpr::Rdi, vcpu.counters.raw(reason.get()));
    vcpu.regs.set(Gpr::Rsi, vcpu.counters.total());
    complete(vcpu, Status::Success, mode)
}

/// Version: RDI = the packed ABI version.
fn version<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    mode: Option<bool>,
) -> Result<Vmcall, ExitError> {
    vcpu.regs.set(Gpr::Rdi, ABI_VERSION.packed().into());
    complete(vcpu, Status::Success, mode)
}

/// Exit: the outcome and the reason's guest-physical bytes (decoded:
/// the code, the length's bound). A reason that is not readable guest
/// RAM or not UTF-8: `InvalidArgument`, and the run goes on. Only the
/// trusted context (0) ends the run: from an untrusted context a valid
/// request is `PermissionDenied` and audited (kind `hypercall`, action
/// `refused`), so a compromised kernel path can neither stop the monitor
/// nor forge the run's verdict.
fn exit<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    outcome: Outcome,
    reason: Option<ReasonBytes>,
    mode: Option<bool>,
) -> Result<Vmcall, ExitError> {
    let (gpa, len) = reason.map_or((Gpa(0), 0), |r| (Gpa(r.gpa()), r.len()));
    match GuestReason::read(&vcpu.memory, gpa, len) {
        Ok(_) if vcpu.policy.context() != 0 => {
            let record = AuditRecord {
                seq: 0,
                kind: AuditKind::Hypercall,
                context: vcpu.policy.context(),
                gpa: Call::Exit.raw(),
                gva: None,
                access: Access::empty(),
                allowed: Access::empty(),
                qualification: outcome.code().into(),
                rip: vcpu.vmcs.read(GuestNatural::Rip)?,
                cr3: vcpu.vmcs.read(GuestNatural::Cr3)?,
                action: AuditAction::Refused,
            };
            vcpu.audit.record(record);
            complete(vcpu, Status::PermissionDenied, mode)
        }
        Ok(reason) => {
            vcpu.guest_reason = reason;
            Ok(Vmcall::Stop(outcome))
        }
        Err(e) => {
            log::debug!("okernel: Exit hypercall refused: {e}");
            complete(vcpu, Status::InvalidArgument, mode)
        }
    }
}

/// A register as an operand of the guest's mode: outside 64-bit mode only
/// the low 32 bits count. The mode is read (once per exit, into `mode`)
/// only when the upper half is not zero.
#[inline(always)]
fn operand<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &Vcpu<V, C, P, M>,
    value: u64,
    mode: &mut Option<bool>,
) -> Result<u64, ExitError> {
    if value <= u64::from(u32::MAX) || vcpu.mode_once(mode)? {
        Ok(value)
    } else {
        Ok(value & 0xffff_ffff)
    }
}
