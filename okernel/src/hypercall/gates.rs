//! RegisterGate (ABI call 25; invariant 9): where a switch to a less
//! restricted view — and the stop of an untrusted context
//! ([`crate::exit::stop`]) — resumes the guest, and the state it resumes
//! in besides [`crate::vcpu::guest::GateEntry`]'s fixed part: the gate's
//! stack, its page tables and the trusted kernel's CS and SS.
//!
//! RegisterGate(linear, stack, cr3), trusted context only:
//! * `stack`: 0 (the caller's RSP, ABI 1.0) or canonical and 16-byte
//!   aligned;
//! * `cr3`: 0 (the caller's CR3, which the gate must replace before it
//!   trusts memory) or page tables whose root lies in a locked page-table
//!   region, with no bits set but the address and PWT/PCD (no PCID, no
//!   5-level paging); the monitor then loads it at every entry and drops
//!   the guest's cached translations (INVVPID), and the gate's address is
//!   translated through it;
//! * `linear` must translate (through `cr3`, or the current CR3), in
//!   IA-32e mode, through tables that all lie in locked page-table
//!   regions, to a supervisor, executable page of locked text
//!   (`Env::gate_target`; `NotFound` for a page outside locked text, a
//!   malformed argument or any other failure is `InvalidArgument`). A
//!   switch checks the same again, so a gate whose mapping changed (the
//!   trusted kernel may change the flags of its own text mappings;
//!   UpdatePageTable refuses an untrusted context any flag change there,
//!   `hypercall::page_table` rules 2 and 3) is refused (`Refused`), never
//!   entered with a fault at its first instruction;
//! * CS and SS are taken from the registering kernel (CPL 0, its code
//!   segment): a gate starts in the kernel's privilege level and mode,
//!   whatever the caller ran in — a caller that left 64-bit mode (a
//!   32-bit SYSRET, then a triple fault stopped it) would otherwise make
//!   the VM entry to a 64-bit gate address fail (SDM Vol. 3C §27.3.1.4),
//!   and one at CPL 3 would run the gate at CPL 3.
//!
//! Any call from an untrusted context is `PermissionDenied` first (it
//! learns neither a gate id nor whether an address is locked text). The
//! same address, stack and CR3 again return the existing id.

use okernel_abi::hypercall::Status;
use okernel_abi::policy::RegionKind;
use okernel_abi::request::{Canonical, GateCr3, GateStack};

use super::policy::{CallResult, Env, Reply};
use crate::hw::{Cpu, Vmcs};
use crate::memmap::Gpa;
use crate::policy::protection::{Gate, Segment};
use crate::vcpu::ExitError;
use crate::vmx::fields::{Guest16, Guest32, GuestNatural};

/// Whether `cr3` is acceptable as a gate's page tables: none, or a root
/// in a locked page-table region (its stray bits were decoded).
fn cr3_ok<V: Vmcs, C: Cpu>(env: &Env<'_, V, C>, cr3: Option<GateCr3>) -> bool {
    cr3.is_none_or(|c| {
        env.prot
            .locked_region_at(Gpa(c.root()), RegionKind::PageTable)
            .is_some()
    })
}

/// The registering kernel's CS and SS.
fn segments<V: Vmcs, C: Cpu>(env: &Env<'_, V, C>) -> Result<(Segment, Segment), ExitError> {
    let v = &*env.vmcs;
    Ok((
        Segment {
            selector: v.read(Guest16::CsSelector)?,
            base: v.read(GuestNatural::CsBase)?,
            limit: v.read(Guest32::CsLimit)?,
            access: v.read(Guest32::CsAccessRights)?,
        },
        Segment {
            selector: v.read(Guest16::SsSelector)?,
            base: v.read(GuestNatural::SsBase)?,
            limit: v.read(Guest32::SsLimit)?,
            access: v.read(Guest32::SsAccessRights)?,
        },
    ))
}

/// RegisterGate(linear, stack, cr3) (see the module docs): a canonical
/// address, the stack and the CR3's bits decoded. The trusted context is
/// checked first, as for a malformed request
/// (`super::policy::before_arguments`).
pub fn register<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    linear: Canonical,
    stack: Option<GateStack>,
    cr3: Option<GateCr3>,
) -> Result<CallResult, ExitError> {
    if let Err(s) = env.trusted() {
        return Ok(Err(s));
    }
    if !cr3_ok(env, cr3) {
        return Ok(Err(Status::InvalidArgument));
    }
    let (linear, stack, cr3) = (
        linear.get(),
        stack.map_or(0, GateStack::get),
        cr3.map_or(0, GateCr3::get),
    );
    let Some(gpa) = env.gate_target(cr3, linear)? else {
        return Ok(Err(Status::InvalidArgument));
    };
    if env.prot.locked_region_at(gpa, RegionKind::Text).is_none() {
        return Ok(Err(Status::NotFound));
    }
    if let Some(id) = env
        .prot
        .gates
        .iter()
        .position(|g| g.is_some_and(|g| g.linear == linear && g.stack == stack && g.cr3 == cr3))
    {
        return Ok(Ok(Reply::Done(Some(id as u64))));
    }
    let Some(id) = env.prot.gates.iter().position(Option::is_none) else {
        return Ok(Err(Status::Exhausted));
    };
    let (cs, ss) = segments(env)?;
    env.prot.gates[id] = Some(Gate {
        linear,
        gpa,
        stack,
        cr3,
        cs,
        ss,
    });
    Ok(Ok(Reply::Done(Some(id as u64))))
}
