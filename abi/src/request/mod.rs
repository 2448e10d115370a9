//! Hypercall requests, decoded: [`Request::decode`] turns the registers a
//! `VMCALL` left into one typed request per call, or the [`Status`] of a
//! malformed one. It is pure (no monitor state, no guest memory), so it is
//! tested and fuzzed on the host (`fuzz/fuzz_targets/hypercall_decode.rs`);
//! the monitor decodes every call but the hot Null once, then dispatches
//! on the [`Request`].
//!
//! # Contract
//!
//! The input is the registers as the guest left them ([`Registers`]) and
//! whether the guest runs in 64-bit mode. Outside 64-bit mode only the low
//! 32 bits of a register are the guest's operand (SDM Vol. 1 §3.4.1.1), so
//! the decoder ignores the upper halves there. Reading the mode costs the
//! monitor VMREADs; [`Registers::needs_mode`] says when it can matter, and
//! when it cannot, any `long_mode` gives the same answer.
//!
//! # What the decoder checks
//!
//! Everything the ABI (`docs/hypercall-abi.md`) requires of an argument
//! that needs no monitor state: the call number, kinds, formats and
//! rules, alignments, lengths and their bounds, reserved bits, canonical
//! addresses, id ranges — in the ABI's order, so that the first failing
//! check decides the status, as it did in the handlers. What depends on
//! the monitor's state (guest RAM, regions, live contexts, the caller's
//! context, what is locked) is for the handlers. Some arguments are
//! therefore passed on unchecked, where the ABI orders a check of state
//! before theirs:
//!
//! * `SwitchContext`: a refused switch is audited with its raw arguments;
//! * `AllocProtectedPage`/`FreeProtectedPage`: the page's alignment
//!   (`Unaligned`) is checked after the context is found live;
//! * `RegisterPatchSites`: the table's wrap-around and the entry bound
//!   come after `Locked` and the free slot;
//! * `LockRegion`, `AuditRead`: ids and buffers are state;
//! * `PinCr`'s pinnable bits and `LockMsr`'s lockable MSRs are the
//!   monitor's tables (the CET MSRs where the processor has CET).
//!
//! A monitor may also answer before the decoder's status: without the
//! protection policy every policy call ([`Call::is_policy`]) is
//! `UnknownCall`, and `RegisterGate` from an untrusted context is
//! `PermissionDenied` whatever its arguments ([`Call::trusted_first`]).

mod args;
mod registers;
#[cfg(test)]
mod tests;

pub use args::{
    Canonical, Context, EntryAddr, ExitReasonSlot, GateCr3, GateStack, PAGE_SIZE, Pages,
    PatchTable, ReasonBytes, is_canonical,
};
pub use registers::Registers;

use crate::hypercall::{Call, Status};
use crate::policy::{ControlRegister, ExecuteRule, RegionKind};
use crate::result::Outcome;

/// A well-formed hypercall: one variant per [`Call`], its arguments typed
/// and checked as far as the ABI allows without monitor state (module
/// docs). [`Request::registers`] encodes it back.
///
/// Not `#[non_exhaustive]` (unlike [`Call`]): the monitor matches it
/// exhaustively, so a new call does not build until it has a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// [`Call::Version`].
    Version,
    /// [`Call::Null`].
    Null,
    /// [`Call::Exit`]: the outcome, and the reason if RDX is not 0.
    Exit {
        /// RDI: the outcome code.
        outcome: Outcome,
        /// RSI, RDX: the reason's bytes (`None`: no reason, RSI ignored).
        reason: Option<ReasonBytes>,
    },
    /// [`Call::RegisterRegion`].
    RegisterRegion {
        /// RDI, RSI: base and length.
        pages: Pages,
        /// RDX: what the region holds.
        kind: RegionKind,
    },
    /// [`Call::LockRegion`].
    LockRegion {
        /// RDI: the region id (the monitor's table decides).
        region: u64,
    },
    /// [`Call::PinCr`].
    PinCr {
        /// RDI: CR0 or CR4.
        cr: ControlRegister,
        /// RSI: the bits, not none (which are pinnable is the monitor's).
        bits: core::num::NonZeroU64,
    },
    /// [`Call::LockMsr`].
    LockMsr {
        /// RDI: the MSR index (which are lockable is the monitor's).
        msr: u32,
    },
    /// [`Call::LockDescriptorTables`].
    LockDescriptorTables,
    /// [`Call::CreateContext`].
    CreateContext,
    /// [`Call::DestroyContext`].
    DestroyContext {
        /// RDI: an untrusted context (not 0).
        context: Context,
    },
    /// [`Call::AllocProtectedPage`].
    AllocProtectedPage {
        /// RDI: the context.
        context: Context,
        /// RSI: the page (alignment checked after the context is live).
        page: u64,
    },
    /// [`Call::FreeProtectedPage`].
    FreeProtectedPage {
        /// RDI: the context.
        context: Context,
        /// RSI: the page (alignment checked after the context is live).
        page: u64,
    },
    /// [`Call::RegisterGate`].
    RegisterGate {
        /// RDI: the gate's guest-linear address.
        linear: Canonical,
        /// RSI: its stack (`None`: the caller's RSP).
        stack: Option<GateStack>,
        /// RDX: its page tables (`None`: the caller's CR3).
        cr3: Option<GateCr3>,
    },
    /// [`Call::SwitchContext`]: both raw, audited as given when refused.
    SwitchContext {
        /// RDI: the context.
        context: u64,
        /// RSI: the gate id.
        gate: u64,
    },
    /// [`Call::UpdatePageTable`].
    UpdatePageTable {
        /// RDI: the entry's guest-physical address.
        entry: EntryAddr,
        /// RSI: the value to write.
        value: u64,
    },
    /// [`Call::AuditCount`].
    AuditCount,
    /// [`Call::AuditRead`].
    AuditRead {
        /// RDI: the record's sequence number.
        sequence: u64,
        /// RSI: the guest-physical buffer.
        buffer: u64,
    },
    /// [`Call::SetExecuteRule`].
    SetExecuteRule {
        /// RDI: the rule.
        rule: ExecuteRule,
    },
    /// [`Call::RegisterPatchSites`].
    RegisterPatchSites {
        /// RDI, RSI, RDX: address, length, format.
        table: PatchTable,
    },
    /// [`Call::ExitCount`].
    ExitCount {
        /// RDI: the basic exit reason.
        reason: ExitReasonSlot,
    },
}

impl Request {
    /// Decodes the registers a guest left for a `VMCALL` at CPL 0: the
    /// call (`UnknownCall` outside the ABI), then its arguments
    /// ([`Request::from_args`]). See the module docs for the contract.
    pub const fn decode(regs: Registers, long_mode: bool) -> Result<Self, Status> {
        let regs = regs.in_mode(long_mode);
        match Call::from_raw(regs.rax) {
            Ok(call) => Self::from_args(call, regs.args()),
            Err(s) => Err(s),
        }
    }

    /// Checks the arguments of `call` (RDI, RSI, RDX, already operands of
    /// the guest's mode) in the ABI's order; the first failure's status.
    pub const fn from_args(call: Call, args: [u64; 3]) -> Result<Self, Status> {
        let [a, b, c] = args;
        use Status::{BadContext, InvalidArgument, Unaligned};
        Ok(match call {
            Call::Version => Self::Version,
            Call::Null => Self::Null,
            Call::Exit => {
                let Some(outcome) = outcome(a) else {
                    return Err(InvalidArgument);
                };
                if c == 0 {
                    return Ok(Self::Exit {
                        outcome,
                        reason: None,
                    });
                }
                let Some(reason) = ReasonBytes::new(b, c) else {
                    return Err(InvalidArgument);
                };
                Self::Exit {
                    outcome,
                    reason: Some(reason),
                }
            }
            Call::RegisterRegion => {
                let Some(kind) = RegionKind::from_raw(c) else {
                    return Err(InvalidArgument);
                };
                match Pages::new(a, b) {
                    Ok(pages) => Self::RegisterRegion { pages, kind },
                    Err(s) => return Err(s),
                }
            }
            Call::LockRegion => Self::LockRegion { region: a },
            Call::PinCr => {
                let Some(cr) = ControlRegister::from_raw(a) else {
                    return Err(InvalidArgument);
                };
                let Some(bits) = core::num::NonZeroU64::new(b) else {
                    return Err(InvalidArgument);
                };
                Self::PinCr { cr, bits }
            }
            Call::LockMsr => {
                if a > u32::MAX as u64 {
                    return Err(InvalidArgument);
                }
                Self::LockMsr { msr: a as u32 }
            }
            Call::LockDescriptorTables => Self::LockDescriptorTables,
            Call::CreateContext => Self::CreateContext,
            Call::DestroyContext => match Context::new(a) {
                Some(context) if context.get() != 0 => Self::DestroyContext { context },
                _ => return Err(BadContext),
            },
            Call::AllocProtectedPage | Call::FreeProtectedPage => {
                let Some(context) = Context::new(a) else {
                    return Err(BadContext);
                };
                if matches!(call, Call::AllocProtectedPage) {
                    Self::AllocProtectedPage { context, page: b }
                } else {
                    Self::FreeProtectedPage { context, page: b }
                }
            }
            Call::RegisterGate => {
                let stack = match GateStack::new(b) {
                    Ok(s) => s,
                    Err(s) => return Err(s),
                };
                let cr3 = match GateCr3::new(c) {
                    Ok(c) => c,
                    Err(s) => return Err(s),
                };
                let Some(linear) = Canonical::new(a) else {
                    return Err(InvalidArgument);
                };
                Self::RegisterGate { linear, stack, cr3 }
            }
            Call::SwitchContext => Self::SwitchContext {
                context: a,
                gate: b,
            },
            Call::UpdatePageTable => match EntryAddr::new(a) {
                Some(entry) => Self::UpdatePageTable { entry, value: b },
                None => return Err(Unaligned),
            },
            Call::AuditCount => Self::AuditCount,
            Call::AuditRead => Self::AuditRead {
                sequence: a,
                buffer: b,
            },
            Call::SetExecuteRule => match ExecuteRule::from_raw(a) {
                Some(rule) => Self::SetExecuteRule { rule },
                None => return Err(InvalidArgument),
            },
            Call::RegisterPatchSites => match PatchTable::new(a, b, c) {
                Ok(table) => Self::RegisterPatchSites { table },
                Err(s) => return Err(s),
            },
            Call::ExitCount => match ExitReasonSlot::new(a) {
                Some(reason) => Self::ExitCount { reason },
                None => return Err(InvalidArgument),
            },
        })
    }

    /// The call this request makes.
    pub const fn call(&self) -> Call {
        match self {
            Self::Version => Call::Version,
            Self::Null => Call::Null,
            Self::Exit { .. } => Call::Exit,
            Self::RegisterRegion { .. } => Call::RegisterRegion,
            Self::LockRegion { .. } => Call::LockRegion,
            Self::PinCr { .. } => Call::PinCr,
            Self::LockMsr { .. } => Call::LockMsr,
            Self::LockDescriptorTables => Call::LockDescriptorTables,
            Self::CreateContext => Call::CreateContext,
            Self::DestroyContext { .. } => Call::DestroyContext,
            Self::AllocProtectedPage { .. } => Call::AllocProtectedPage,
            Self::FreeProtectedPage { .. } => Call::FreeProtectedPage,
            Self::RegisterGate { .. } => Call::RegisterGate,
            Self::SwitchContext { .. } => Call::SwitchContext,
            Self::UpdatePageTable { .. } => Call::UpdatePageTable,
            Self::AuditCount => Call::AuditCount,
            Self::AuditRead { .. } => Call::AuditRead,
            Self::SetExecuteRule { .. } => Call::SetExecuteRule,
            Self::RegisterPatchSites { .. } => Call::RegisterPatchSites,
            Self::ExitCount { .. } => Call::ExitCount,
        }
    }

    /// The registers that make this request (what a guest passes): the
    /// call number in RAX, the arguments where the ABI puts them, every
    /// register the call does not read 0 (so `Exit` without a reason has
    /// RSI = 0). [`Request::decode`] gives the request back.
    pub const fn registers(&self) -> Registers {
        let args = match *self {
            Self::Version
            | Self::Null
            | Self::LockDescriptorTables
            | Self::CreateContext
            | Self::AuditCount => [0; 3],
            Self::Exit { outcome, reason } => match reason {
                None => [outcome.code() as u64, 0, 0],
                Some(r) => [outcome.code() as u64, r.gpa(), r.len()],
            },
            Self::RegisterRegion { pages, kind } => [pages.base(), pages.len(), kind as u64],
            Self::LockRegion { region } => [region, 0, 0],
            Self::PinCr { cr, bits } => [cr as u64, bits.get(), 0],
            Self::LockMsr { msr } => [msr as u64, 0, 0],
            Self::DestroyContext { context } => [context.raw(), 0, 0],
            Self::AllocProtectedPage { context, page }
            | Self::FreeProtectedPage { context, page } => [context.raw(), page, 0],
            Self::RegisterGate { linear, stack, cr3 } => [
                linear.get(),
                match stack {
                    Some(s) => s.get(),
                    None => 0,
                },
                match cr3 {
                    Some(c) => c.get(),
                    None => 0,
                },
            ],
            Self::SwitchContext { context, gate } => [context, gate, 0],
            Self::UpdatePageTable { entry, value } => [entry.get(), value, 0],
            Self::AuditRead { sequence, buffer } => [sequence, buffer, 0],
            Self::SetExecuteRule { rule } => [rule as u64, 0, 0],
            Self::RegisterPatchSites { table } => [table.va(), table.len(), table.format() as u64],
            Self::ExitCount { reason } => [reason.get() as u64, 0, 0],
        };
        Registers::new(self.call().raw(), args)
    }
}

/// The outcome code in RDI.
const fn outcome(code: u64) -> Option<Outcome> {
    if code > u8::MAX as u64 {
        return None;
    }
    Outcome::from_code(code as u8)
}
