//! VMCALL: the hypercall ABI of [`okernel_abi::hypercall`] (register
//! convention there). Decoding and dispatch are pure functions of the
//! guest's registers; [`handle_vmcall`] applies the result.
//!
//! Every malformed call gets a status code (invariant 11): a call number
//! outside the ABI [`Status::UnknownCall`], a bad argument
//! [`Status::InvalidArgument`], a caller at CPL > 0
//! [`Status::PermissionDenied`] (and nothing else happens).

use okernel_abi::ABI_VERSION;
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::result::Outcome;

use crate::exit::{ExitAction, ExitError, Vcpu};
use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::vmx::regs::Gpr;

/// A hypercall as the guest issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// RAX.
    pub number: u64,
    /// RDI, RSI, RDX, RCX.
    pub args: [u64; 4],
    /// The caller's privilege level.
    pub cpl: u8,
}

/// What the monitor answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// RAX.
    pub status: Status,
    /// New RDI, if the call returns a value there.
    pub value0: Option<u64>,
    /// New RSI, if the call returns a value there.
    pub value1: Option<u64>,
    /// Set when the call ends the run (the guest is not resumed).
    pub stop: Option<Outcome>,
}

impl Reply {
    const fn status(status: Status) -> Self {
        Self {
            status,
            value0: None,
            value1: None,
            stop: None,
        }
    }
}

/// Decides a hypercall.
pub fn dispatch(req: &Request) -> Reply {
    if req.cpl != 0 {
        return Reply::status(Status::PermissionDenied);
    }
    let call = match Call::from_raw(req.number) {
        Ok(c) => c,
        Err(status) => return Reply::status(status),
    };
    match call {
        Call::Version => Reply {
            value0: Some(ABI_VERSION.packed().into()),
            ..Reply::status(Status::Success)
        },
        Call::Null => Reply::status(Status::Success),
        Call::Exit => match u8::try_from(req.args[0]).ok().and_then(Outcome::from_code) {
            Some(outcome) => Reply {
                stop: Some(outcome),
                ..Reply::status(Status::Success)
            },
            None => Reply::status(Status::InvalidArgument),
        },
        // Calls a newer ABI adds before this monitor implements them.
        #[allow(unreachable_patterns)]
        _ => Reply::status(Status::UnknownCall),
    }
}

/// Whether a call reads its argument registers (RDI, RSI, RDX, RCX).
const fn takes_arguments(call: Call) -> bool {
    match call {
        Call::Version | Call::Null => false,
        Call::Exit => true,
        // Calls a newer ABI adds: assume they do.
        #[allow(unreachable_patterns)]
        _ => true,
    }
}

/// Handles a VMCALL exit.
///
/// Outside 64-bit mode only the low 32 bits of a register count. The mode
/// costs two VMREADs, so it is read (once) only when it can matter: when a
/// register the call reads has a non-zero upper half.
#[inline]
pub fn handle_vmcall<V: Vmcs, C: Cpu, P: Policy>(
    vcpu: &mut Vcpu<V, C, P>,
) -> Result<ExitAction, ExitError> {
    let cpl = vcpu.cpl()?;
    let mut mode = None;
    let mut operand = |value: u64, vcpu: &Vcpu<V, C, P>| -> Result<u64, ExitError> {
        if value <= u64::from(u32::MAX) || vcpu.mode_once(&mut mode)? {
            Ok(value)
        } else {
            Ok(value & 0xffff_ffff)
        }
    };
    let number = operand(vcpu.regs.rax(), vcpu)?;
    let args = match Call::from_raw(number) {
        Ok(call) if takes_arguments(call) => {
            let r = vcpu.regs;
            [
                operand(r.rdi(), vcpu)?,
                operand(r.rsi(), vcpu)?,
                operand(r.rdx(), vcpu)?,
                operand(r.rcx(), vcpu)?,
            ]
        }
        // Not read by the call (or refused before its arguments count).
        _ => [0; 4],
    };
    let reply = dispatch(&Request { number, args, cpl });
    if let Some(outcome) = reply.stop {
        return Ok(ExitAction::Stop(outcome));
    }
    vcpu.regs.set(Gpr::Rax, reply.status.raw());
    if let Some(v) = reply.value0 {
        vcpu.regs.set(Gpr::Rdi, v);
    }
    if let Some(v) = reply.value1 {
        vcpu.regs.set(Gpr::Rsi, v);
    }
    vcpu.advance_rip_in(&mut mode)
}
