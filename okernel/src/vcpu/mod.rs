//! The virtual CPU (issue 14's vCPU layer): [`Vcpu`] — the current VMCS,
//! the processor, the guest's registers, its policy, audit log, counters
//! and guest memory — with the guest-state helpers every exit handler
//! and hypercall shares (registers by number, CPL, mode, gate entry, the
//! guest TLB flush), and what a handler returns: [`ExitAction`] or an
//! [`ExitError`].
//!
//! - [`guest`]: [`Vcpu`], [`CrConfig`], [`guest::GateEntry`],
//!   [`guest::cpl_of`].
//! - [`memory`]: [`memory::GuestMemory`], the guest memory a `Vcpu`
//!   reads through, over `crate::mem`.
//! - [`hooks`]: [`hooks::ExitHooks`], what a guest-memory type may add
//!   around the exit path (the fuzz build's seam).
//! - [`counters`]: exits by reason.
//! - [`reason`]: the reason the guest gave with its Exit hypercall.
//! - [`platform_ports`]: the platform's port rules (ACPI sleep, reset).
//! - [`startup`]: a processor's start-up state (after a SIPI) and the
//!   wait-for-SIPI state, [`startup::ActivityState`].
//! - [`timer`]: the console's timer (the VMX-preemption timer's state).
//!
//! Above the policy (a `Vcpu` holds one, and its audit log) and below
//! both `hypercall` and `exit`, which share it without importing each
//! other's types; the RIP advance and event injection are `Vcpu` methods
//! the `exit` layer adds (`crate::exit::rip`, `crate::exit::events`),
//! called from that layer and above only (a hypercall returns what
//! becomes of its VMCALL, `crate::hypercall::Vmcall`, and `exit` advances
//! RIP; `tests/layers` checks that no call climbs).

// Safe code only above the hardware layers (`hw`, `arch`, `launch`):
// issue 14, DESIGN.md §6.
#![forbid(unsafe_code)]

pub mod counters;
pub mod guest;
pub mod hooks;
pub mod memory;
pub mod platform_ports;
pub mod reason;
pub mod startup;
pub mod timer;

use okernel_abi::result::Outcome;
use thiserror::Error;

pub use self::counters::ExitCounters;
pub use self::guest::{CrConfig, Vcpu};
use crate::vmx::error::VmFail;

/// What the run loop does after a handled exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitAction {
    /// Re-enter the guest.
    Resume,
    /// End the run with this outcome (the guest's Exit hypercall).
    Stop(Outcome),
}

/// A fatal exit: the run ends with [`Outcome::Fail`] and this message.
///
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ExitError {
    /// a VMREAD or VMWRITE failed
    #[error("VMCS access failed: {0}")]
    Vmcs(#[from] VmFail),
    /// the VM-exit instruction length is outside 1..=15
    #[error("VM-exit instruction length {0} outside 1..=15")]
    BadInstructionLength(u32),
    /// an exit reason the SDM does not define
    #[error("unknown exit reason {0:#x}")]
    UnknownReason(u32),
    /// an exit the chosen controls should never cause
    #[error("unexpected VM exit: {0}")]
    Unexpected(&'static str),
    /// VM entry failed after loading guest state
    #[error("VM-entry failure: {reason} (qualification {qualification:#x}: {meaning})")]
    EntryFailure {
        /// The exit reason's name.
        reason: &'static str,
        /// The exit qualification.
        qualification: u64,
        /// What the qualification means (SDM §27.8).
        meaning: &'static str,
    },
    /// an EPT paging-structure entry is misconfigured (a monitor bug)
    #[error("EPT misconfiguration at GPA {0:#x}")]
    EptMisconfiguration(u64),
    /// a context had to be stopped on a processor with no inactive
    /// activity state the guest can enter (see [`crate::exit::stop`])
    #[error("virtual CPU stopped ({0}) and no inactive activity state is available")]
    Halted(&'static str),
    /// the EPT-violation qualification could not be decoded
    #[error("EPT violation with a malformed qualification: {0}")]
    MalformedQualification(ept::Error),
    /// an EPT change failed after the policy checked the frame pool
    #[error("EPT change failed after the frame check (a monitor bug): {0}")]
    PolicyEpt(ept::Error),
    /// a refused write to locked text could not be undone (the page was
    /// readable when the write was let through: a monitor bug)
    #[error("could not restore locked text page {0:#x} after a refused patch")]
    PatchRestore(u64),
    /// after a policy change another processor did not leave the guest
    /// within the shootdown's patience (`crate::launch::presence`): the
    /// run ends rather than the hypercall return with its old
    /// translations live
    #[error(
        "shootdown: processor {0} did not leave the guest within the patience after a policy change"
    )]
    Shootdown(usize),
}
