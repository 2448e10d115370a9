//! VMCALL: the hypercall ABI of [`okernel_abi::hypercall`] (register
//! convention there). [`handle_vmcall`] checks the caller's privilege and
//! dispatches on the call number, one arm per call; each arm sets RAX (and
//! what the call returns) and advances RIP, or ends the run (Exit). The
//! exit path runs the CPL check and the Null arm in line
//! ([`handle_vmcall_fast`]) and the rest out of line
//! ([`handle_vmcall_at`]). Exit's reason is read from guest memory through
//! [`GuestMemory`].
//!
//! Every malformed call gets a status code (invariant 11): a call number
//! outside the ABI [`Status::UnknownCall`], a bad argument
//! [`Status::InvalidArgument`], a caller at CPL > 0
//! [`Status::PermissionDenied`] (and nothing else happens).

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
use okernel_abi::result::Outcome;

use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::policy::audit::{Access, AuditAction, AuditKind, AuditRecord};
use crate::vcpu::guest::{SS_DPL, cpl_of};
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::reason::GuestReason;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::fields::{Guest32, GuestNatural};
use crate::vmx::regs::Gpr;

/// Handles a VMCALL exit.
///
/// Outside 64-bit mode only the low 32 bits of a register count. Every
/// call number of the ABI fits in 32 bits, so it means the same in every
/// mode: the mode (two VMREADs) is read only for a RAX with a non-zero
/// upper half, or for an argument with one that the call reads.
pub fn handle_vmcall<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    match handle_vmcall_fast(vcpu) {
        Fast::Done(r) => r,
        Fast::Continue { cpl } => handle_vmcall_at(vcpu, cpl),
    }
}

/// What [`handle_vmcall_fast`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// It handled the call (it was Null at CPL 0), or reading the CPL
    /// failed.
    Done(Result<ExitAction, ExitError>),
    /// [`handle_vmcall_at`] handles it.
    Continue {
        /// The caller's privilege level.
        cpl: u8,
    },
}

/// The part of [`handle_vmcall`] the exit path runs in line: the CPL, and
/// the Null call at CPL 0 — exactly what [`handle_vmcall_at`] does for it
/// (RAX = Success, RIP advanced; its number fits in 32 bits, so no mode).
#[inline(always)]
pub fn handle_vmcall_fast<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Fast {
    let ss = match vcpu.vmcs.read(Guest32::SsAccessRights) {
        Ok(ar) => ar,
        Err(e) => return Fast::Done(Err(e.into())),
    };
    if ss & SS_DPL != 0 {
        core::hint::cold_path();
        return Fast::Continue { cpl: cpl_of(ss) };
    }
    if vcpu.regs.rax() != Call::Null.raw() {
        core::hint::cold_path();
        return Fast::Continue { cpl: 0 };
    }
    Fast::Done(complete(vcpu, Status::Success, None))
}

/// [`handle_vmcall`] once the caller's CPL is known.
pub fn handle_vmcall_at<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    cpl: u8,
) -> Result<ExitAction, ExitError> {
    if cpl != 0 {
        return complete(vcpu, Status::PermissionDenied, None);
    }
    let number = vcpu.regs.rax();
    dispatch(vcpu, number, None)
}

/// Calls the handler of call `number` (already reduced to the guest's
/// operand size if `mode` is known). CPL is 0.
fn dispatch<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    number: u64,
    mode: Option<bool>,
) -> Result<ExitAction, ExitError> {
    match Call::from_raw(number) {
        Ok(Call::Null) => complete(vcpu, Status::Success, mode),
        Ok(Call::Version) => version(vcpu, mode),
        Ok(Call::Exit) => exit(vcpu, mode),
        Ok(Call::ExitCount) => exit_count(vcpu, mode),
        Ok(call) => policy_call(vcpu, call, mode),
        Err(_) if M::is_call(number) => hook_call(vcpu, number, mode),
        Err(_) => outside_abi(vcpu, number, mode),
    }
}

/// A call of the memory's exit hooks (`crate::vcpu::hooks`; only a fuzz
/// build has any: `okernel_abi::fuzz`): RDI is its argument; the reply
/// sets RAX and maybe RDI.
fn hook_call<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    number: u64,
    mut mode: Option<bool>,
) -> Result<ExitAction, ExitError> {
    let arg = operand(vcpu, vcpu.regs.rdi(), &mut mode)?;
    match M::call(vcpu, number, arg)? {
        None => complete(vcpu, Status::UnknownCall, mode),
        Some(Err(status)) => complete(vcpu, status, mode),
        Some(Ok(value)) => {
            if let Some(v) = value {
                vcpu.regs.set(Gpr::Rdi, v);
            }
            complete(vcpu, Status::Success, mode)
        }
    }
}

/// Sets RAX = `status` and moves past the VMCALL.
#[inline(always)]
fn complete<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    status: Status,
    mut mode: Option<bool>,
) -> Result<ExitAction, ExitError> {
    vcpu.regs.set(Gpr::Rax, status.raw());
    vcpu.advance_rip_in(&mut mode)
}

/// A number the ABI does not define as it stands: if its upper half is
/// set and the guest is outside 64-bit mode, the low half is the number;
/// otherwise it is an unknown call.
fn outside_abi<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    number: u64,
    mut mode: Option<bool>,
) -> Result<ExitAction, ExitError> {
    let low = operand(vcpu, number, &mut mode)?;
    if low != number {
        return dispatch(vcpu, low, mode);
    }
    complete(vcpu, Status::UnknownCall, mode)
}

/// A protection-policy call (16–29, [`policy`]): RDI, RSI, RDX are its
/// arguments; the reply sets RAX, maybe RDI, and RIP (after the VMCALL,
/// or a gate).
fn policy_call<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    call: Call,
    mut mode: Option<bool>,
) -> Result<ExitAction, ExitError> {
    let r = vcpu.regs;
    let args = [
        operand(vcpu, r.rdi(), &mut mode)?,
        operand(vcpu, r.rsi(), &mut mode)?,
        operand(vcpu, r.rdx(), &mut mode)?,
    ];
    match policy::handle(vcpu, call, args)? {
        None => complete(vcpu, Status::UnknownCall, mode),
        Some(Err(status)) => complete(vcpu, status, mode),
        Some(Ok(policy::Reply::Done(value))) => {
            if let Some(v) = value {
                vcpu.regs.set(Gpr::Rdi, v);
            }
            complete(vcpu, Status::Success, mode)
        }
        Some(Ok(policy::Reply::Gate { gate, rdi })) => {
            vcpu.regs.set(Gpr::Rax, Status::Success.raw());
            vcpu.regs.set(Gpr::Rdi, rdi);
            vcpu.enter_gate(&gate)
        }
    }
}

/// ExitCount(reason): RDI = that reason's exits, RSI = all exits.
fn exit_count<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    mut mode: Option<bool>,
) -> Result<ExitAction, ExitError> {
    let reason = operand(vcpu, vcpu.regs.rdi(), &mut mode)?;
    let Ok(basic) = u16::try_from(reason) else {
        return complete(vcpu, Status::InvalidArgument, mode);
    };
    if u64::from(basic) >= okernel_abi::hypercall::EXIT_REASON_SLOTS {
        return complete(vcpu, Status::InvalidArgument, mode);
    }
    vcpu.regs.set(Gpr::Rdi, vcpu.counters.raw(basic));
    vcpu.regs.set(Gpr::Rsi, vcpu.counters.total());
    complete(vcpu, Status::Success, mode)
}

/// Version: RDI = the packed ABI version.
fn version<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    mode: Option<bool>,
) -> Result<ExitAction, ExitError> {
    vcpu.regs.set(Gpr::Rdi, ABI_VERSION.packed().into());
    complete(vcpu, Status::Success, mode)
}

/// Exit: RDI = outcome code, RSI/RDX = the reason's guest-physical
/// address and length (0 = none). Anything wrong: `InvalidArgument`, and
/// the run goes on. Only the trusted context (0) ends the run: from an
/// untrusted context a valid request is `PermissionDenied` and audited
/// (kind `hypercall`, action `refused`), so a compromised kernel path
/// can neither stop the monitor nor forge the run's verdict.
fn exit<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    mut mode: Option<bool>,
) -> Result<ExitAction, ExitError> {
    let r = vcpu.regs;
    let code = operand(vcpu, r.rdi(), &mut mode)?;
    let Some(outcome) = u8::try_from(code).ok().and_then(Outcome::from_code) else {
        return complete(vcpu, Status::InvalidArgument, mode);
    };
    let gpa = operand(vcpu, r.rsi(), &mut mode)?;
    let len = operand(vcpu, r.rdx(), &mut mode)?;
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
                qualification: code,
                rip: vcpu.vmcs.read(GuestNatural::Rip)?,
                cr3: vcpu.vmcs.read(GuestNatural::Cr3)?,
                action: AuditAction::Refused,
            };
            vcpu.audit.record(record);
            complete(vcpu, Status::PermissionDenied, mode)
        }
        Ok(reason) => {
            vcpu.guest_reason = reason;
            Ok(ExitAction::Stop(outcome))
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
