//! A processor's architectural start-up state, as the guest-state area
//! of a VMCS: where a SIPI starts a processor (SDM Vol. 3A §9.4 "Multiple-
//! Processor (MP) Initialization", Table 10-1 "IA-32 Processor States
//! Following Power-up, Reset, or INIT"; Vol. 3C §27.3.1 for the checks VM
//! entry makes of it), and the wait-for-SIPI state an application
//! processor waits in under the monitor until the guest's INIT-SIPI-SIPI
//! (issue 17).
//!
//! The processor starts in real mode: CS.selector = vector << 8, CS.base =
//! vector << 12, IP = 0. VM entry allows CR0.PE = 0 and CR0.PG = 0 only
//! with "unrestricted guest" (SDM Vol. 3C §27.3.1.1), which okernel always
//! sets (`check::probe` refuses a processor without it).
//!
//! Written here: every register Table 10-1 gives a start-up value that the
//! guest-state area holds, and every guest-state field VM entry checks for
//! a real-mode guest (§27.3.1), the VMCS link pointer included. Left as
//! they are: IA32_PAT and IA32_DEBUGCTL, which INIT does not change (a
//! fresh VMCS gets them from `launch::setup::write_guest_state`); the
//! general-purpose registers but RSP, which are not in the VMCS (the SIPI
//! handler, `crate::exit::sipi`, sets them).

use crate::hw::Vmcs;
use crate::vmx::controls::EntryControls;
use crate::vmx::error::VmFail;
use crate::vmx::fields::{Control32, ControlNatural, Guest16, Guest32, Guest64, GuestNatural};

use super::CrConfig;

/// Where a processor stands with its start by SIPI (`crate::exit::sipi`;
/// per processor, like the registers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Startup {
    /// An application processor no SIPI started yet.
    #[default]
    Never,
    /// The bootstrap processor (no SIPI starts it).
    Bootstrap,
    /// A SIPI started it.
    Started,
    /// A SIPI started it and an INIT exit struck before its first
    /// instruction, passed over (`crate::exit::sipi::just_started`).
    InitPassedOver,
}

/// Guest activity states (SDM Vol. 3C §25.4.2, Table 25-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ActivityState {
    /// Executing instructions.
    Active = 0,
    /// After HLT.
    Hlt = 1,
    /// After a triple fault.
    Shutdown = 2,
    /// Waiting for a start-up IPI.
    WaitForSipi = 3,
}

impl ActivityState {
    /// The state's name, for the console.
    pub const fn name(self) -> &'static str {
        match self {
            ActivityState::Active => "Active",
            ActivityState::Hlt => "Hlt",
            ActivityState::Shutdown => "Shutdown",
            ActivityState::WaitForSipi => "WaitForSipi",
        }
    }
}

/// The guest-visible CR0 at start-up: CD, NW and ET set, PE and PG clear
/// (SDM Vol. 3A Table 10-1: 60000010H).
pub const STARTUP_CR0: u64 = 0x6000_0010;
/// DR7 at start-up: every breakpoint disabled (Table 10-1: 00000400H).
pub const STARTUP_DR7: u64 = 0x400;
/// RFLAGS at start-up: bit 1 only (Table 10-1: 00000002H).
pub const STARTUP_RFLAGS: u64 = 0x2;
/// The real-mode segment limit (Table 10-1: FFFFH).
pub const REAL_MODE_LIMIT: u32 = 0xffff;

/// Segment access rights of the start-up state (SDM Vol. 3C §25.4.1,
/// Table 25-2): DPL 0, byte granularity, 16-bit.
pub mod ar {
    /// CS: present, S, execute/read, accessed.
    pub const CODE: u32 = 0x9b;
    /// DS, ES, FS, GS, SS: present, S, read/write, accessed.
    pub const DATA: u32 = 0x93;
    /// TR: present, busy 32-bit TSS — VM entry requires a busy TSS even in
    /// real mode (§27.3.1.2).
    pub const TSS_BUSY: u32 = 0x8b;
    /// LDTR: unusable (bit 16).
    pub const UNUSABLE: u32 = 1 << 16;
}

/// The CS a SIPI with `vector` starts at: (selector, base) = (vector << 8,
/// vector << 12) (SDM Vol. 3A §9.4.4, Table 10-1).
pub const fn sipi_cs(vector: u8) -> (u16, u64) {
    ((vector as u16) << 8, (vector as u64) << 12)
}

/// Writes the start-up state of a processor a SIPI with `vector` starts
/// (see the module documentation), in the active state. `cr` gives the
/// real CR0 and CR4 for the visible values (the VMX fixed bits: CR0.NE,
/// CR4.VMXE) — the read shadows hold the visible ones. The VM-entry
/// control "IA-32e mode guest" is cleared (with IA32_EFER = 0, as VM
/// entry requires, §27.3.1.1). No event is left to inject.
pub fn write_startup_state<V: Vmcs>(vmcs: &mut V, cr: &CrConfig, vector: u8) -> Result<(), VmFail> {
    vmcs.write(GuestNatural::Cr0, cr.real_cr0(STARTUP_CR0))?;
    vmcs.write(ControlNatural::Cr0ReadShadow, STARTUP_CR0)?;
    vmcs.write(GuestNatural::Cr4, cr.real_cr4(0))?;
    vmcs.write(ControlNatural::Cr4ReadShadow, 0)?;
    vmcs.write(GuestNatural::Cr3, 0)?;
    vmcs.write(GuestNatural::Dr7, STARTUP_DR7)?;
    vmcs.write(Guest64::Efer, 0)?;
    let entry = EntryControls::from_bits_retain(vmcs.read(Control32::EntryControls)?);
    vmcs.write(
        Control32::EntryControls,
        (entry - EntryControls::IA32E_MODE_GUEST).bits(),
    )?;
    vmcs.write(GuestNatural::Rflags, STARTUP_RFLAGS)?;
    vmcs.write(GuestNatural::Rip, 0)?;
    vmcs.write(GuestNatural::Rsp, 0)?;

    let (cs, cs_base) = sipi_cs(vector);
    let segments = [
        (
            Guest16::CsSelector,
            Guest32::CsLimit,
            Guest32::CsAccessRights,
            GuestNatural::CsBase,
            cs,
            cs_base,
            ar::CODE,
        ),
        (
            Guest16::SsSelector,
            Guest32::SsLimit,
            Guest32::SsAccessRights,
            GuestNatural::SsBase,
            0,
            0,
            ar::DATA,
        ),
        (
            Guest16::DsSelector,
            Guest32::DsLimit,
            Guest32::DsAccessRights,
            GuestNatural::DsBase,
            0,
            0,
            ar::DATA,
        ),
        (
            Guest16::EsSelector,
            Guest32::EsLimit,
            Guest32::EsAccessRights,
            GuestNatural::EsBase,
            0,
            0,
            ar::DATA,
        ),
        (
            Guest16::FsSelector,
            Guest32::FsLimit,
            Guest32::FsAccessRights,
            GuestNatural::FsBase,
            0,
            0,
            ar::DATA,
        ),
        (
            Guest16::GsSelector,
            Guest32::GsLimit,
            Guest32::GsAccessRights,
            GuestNatural::GsBase,
            0,
            0,
            ar::DATA,
        ),
        (
            Guest16::TrSelector,
            Guest32::TrLimit,
            Guest32::TrAccessRights,
            GuestNatural::TrBase,
            0,
            0,
            ar::TSS_BUSY,
        ),
    ];
    for (sel, limit, rights, base, selector, base_value, access) in segments {
        vmcs.write(sel, selector)?;
        vmcs.write(base, base_value)?;
        vmcs.write(limit, REAL_MODE_LIMIT)?;
        vmcs.write(rights, access)?;
    }
    vmcs.write(Guest16::LdtrSelector, 0)?;
    vmcs.write(GuestNatural::LdtrBase, 0)?;
    vmcs.write(Guest32::LdtrLimit, REAL_MODE_LIMIT)?;
    vmcs.write(Guest32::LdtrAccessRights, ar::UNUSABLE)?;
    vmcs.write(GuestNatural::GdtrBase, 0)?;
    vmcs.write(Guest32::GdtrLimit, REAL_MODE_LIMIT)?;
    vmcs.write(GuestNatural::IdtrBase, 0)?;
    vmcs.write(Guest32::IdtrLimit, REAL_MODE_LIMIT)?;

    vmcs.write(Guest32::SysenterCs, 0)?;
    vmcs.write(GuestNatural::SysenterEsp, 0)?;
    vmcs.write(GuestNatural::SysenterEip, 0)?;
    vmcs.write(Guest64::VmcsLinkPointer, u64::MAX)?;
    // No blocking (STI, MOV SS, SMI, NMI), no pending #DB, no event to
    // inject (§25.4.2, §25.8.3).
    vmcs.write(Guest32::InterruptibilityState, 0)?;
    vmcs.write(GuestNatural::PendingDebugExceptions, 0)?;
    vmcs.write(Control32::EntryInterruptionInfo, 0)?;
    vmcs.write(Guest32::ActivityState, ActivityState::Active as u32)
}

/// Writes the state of an application processor that waits for the
/// guest's SIPI under the monitor: the start-up state for vector 0, in
/// the wait-for-SIPI activity state (SDM Vol. 3C Table 25-3; VM entry
/// allows it where IA32_VMX_MISC bit 8 says so, Vol. 3D Appendix A.6).
/// The SIPI exit ([`crate::exit::sipi`]) then writes the state for the
/// guest's vector.
pub fn write_wait_for_sipi<V: Vmcs>(vmcs: &mut V, cr: &CrConfig) -> Result<(), VmFail> {
    write_startup_state(vmcs, cr, 0)?;
    vmcs.write(Guest32::ActivityState, ActivityState::WaitForSipi as u32)
}
