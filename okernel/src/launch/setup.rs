//! Programming the VMCS: controls, host state, guest state (SDM Vol. 3C
//! §25.4-25.8; the checks VM entry applies are §27.2-27.3). Pure functions
//! of their inputs over [`Vmcs`], tested against the fake VMCS.

use super::config::{GuestEntry, GuestMode};
use crate::arch::descriptors::Selectors;
use crate::bits::{
    CR0_ET, CR0_MP, CR0_NE, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, EFER_LMA, EFER_LME, EFER_NXE,
};
use crate::check::Capabilities;
use crate::hw::Vmcs;
use crate::vcpu::CrConfig;
use crate::vmx::controls::{EntryControls, SecondaryProcBased};
use crate::vmx::error::VmFail;
use crate::vmx::fields::{
    Control16, Control32, Control64, ControlNatural, Guest16, Guest32, Guest64, GuestNatural,
    Host16, Host32, Host64, HostNatural,
};

/// A page-aligned I/O bitmap (SDM Vol. 3C §25.6.4: 4 KiB, aligned).
#[repr(C, align(4096))]
struct IoBitmap([u8; 4096]);

/// The base I/O bitmap A (ports 0x0000–0x7FFF), immutable, in the
/// monitor's image (in no EPT view, invariant 1): for runs without
/// platform port rules (host tests, the fuzzers). A real run builds its
/// bitmaps in pool frames (`exit::io::bitmap`). The monitor's image is
/// identity-mapped, so its address is its physical address.
static IO_BITMAP_A: IoBitmap = IoBitmap(crate::exit::io::base_bitmap(false));
/// The base I/O bitmap B (ports 0x8000–0xFFFF).
static IO_BITMAP_B: IoBitmap = IoBitmap(crate::exit::io::base_bitmap(true));

/// The physical addresses of the base I/O bitmaps A and B.
pub fn io_bitmaps() -> (u64, u64) {
    (
        core::ptr::from_ref(&IO_BITMAP_A) as u64,
        core::ptr::from_ref(&IO_BITMAP_B) as u64,
    )
}

/// The VPID okernel gives its guest (0 is reserved for root mode).
pub const GUEST_VPID: u16 = 1;

/// The host state VM exits load: read from the CPU at launch
/// ([`super::host::host_state`]), not assumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostState {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 (VMXE set).
    pub cr4: u64,
    /// The segment selectors and TR.
    pub selectors: Selectors,
    /// IA32_FS_BASE.
    pub fs_base: u64,
    /// IA32_GS_BASE.
    pub gs_base: u64,
    /// TSS base (from the TR descriptor in the GDT).
    pub tr_base: u64,
    /// GDTR base.
    pub gdtr_base: u64,
    /// IDTR base.
    pub idtr_base: u64,
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u32,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// HOST_RIP: the VM-exit entry stub.
    pub rip: u64,
}

/// The base address in a 16-byte 64-bit TSS descriptor (SDM Vol. 3A
/// §8.2.3, Figure 8-4).
pub const fn tss_base(low: u64, high: u64) -> u64 {
    ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | ((high & 0xffff_ffff) << 32)
}

/// Writes the host-state area (HOST_RSP is written by the entry stub).
pub fn write_host_state(vmcs: &mut impl Vmcs, h: &HostState) -> Result<(), VmFail> {
    vmcs.write(HostNatural::Cr0, h.cr0)?;
    vmcs.write(HostNatural::Cr3, h.cr3)?;
    vmcs.write(HostNatural::Cr4, h.cr4)?;
    let sel = &h.selectors;
    vmcs.write(Host16::CsSelector, sel.cs)?;
    vmcs.write(Host16::SsSelector, sel.ss)?;
    vmcs.write(Host16::DsSelector, sel.ds)?;
    vmcs.write(Host16::EsSelector, sel.es)?;
    vmcs.write(Host16::FsSelector, sel.fs)?;
    vmcs.write(Host16::GsSelector, sel.gs)?;
    vmcs.write(Host16::TrSelector, sel.tr)?;
    vmcs.write(HostNatural::FsBase, h.fs_base)?;
    vmcs.write(HostNatural::GsBase, h.gs_base)?;
    vmcs.write(HostNatural::TrBase, h.tr_base)?;
    vmcs.write(HostNatural::GdtrBase, h.gdtr_base)?;
    vmcs.write(HostNatural::IdtrBase, h.idtr_base)?;
    vmcs.write(Host32::SysenterCs, h.sysenter_cs)?;
    vmcs.write(HostNatural::SysenterEsp, h.sysenter_esp)?;
    vmcs.write(HostNatural::SysenterEip, h.sysenter_eip)?;
    vmcs.write(Host64::Efer, h.efer)?;
    vmcs.write(Host64::Pat, h.pat)?;
    vmcs.write(HostNatural::Rip, h.rip)
}

/// Writes the execution, exit and entry controls. Nothing but the
/// instructions that must exit does: exception bitmap 0, I/O bitmaps with
/// only the ports of `exit::io`, no interrupt exiting, MSR bitmaps from
/// the MSR table (`exit::msr_table`).
pub fn write_controls(
    vmcs: &mut impl Vmcs,
    caps: &Capabilities,
    mode: GuestMode,
    msr_bitmap: u64,
    io_bitmaps: (u64, u64),
    eptp: u64,
    cr: &CrConfig,
) -> Result<(), VmFail> {
    vmcs.write(Control32::PinBasedControls, caps.pin.bits())?;
    // "Use I/O bitmaps" (bit 25) is among `caps.primary` (`check`): the
    // ports of `exit::io` exit, every other passes.
    vmcs.write(
        Control32::PrimaryProcessorBasedControls,
        caps.primary.bits(),
    )?;
    let (io_a, io_b) = io_bitmaps;
    vmcs.write(Control64::IoBitmapA, io_a)?;
    vmcs.write(Control64::IoBitmapB, io_b)?;
    vmcs.write(
        Control32::SecondaryProcessorBasedControls,
        caps.secondary.bits(),
    )?;
    vmcs.write(Control32::ExitControls, caps.exit.bits())?;
    let entry = match mode {
        GuestMode::Long64 { .. } => caps.entry | EntryControls::IA32E_MODE_GUEST,
        GuestMode::Protected32 => caps.entry,
    };
    vmcs.write(Control32::EntryControls, entry.bits())?;
    vmcs.write(Control32::ExceptionBitmap, 0)?;
    vmcs.write(Control32::PageFaultErrorCodeMask, 0)?;
    vmcs.write(Control32::PageFaultErrorCodeMatch, 0)?;
    vmcs.write(Control32::Cr3TargetCount, 0)?;
    vmcs.write(Control32::ExitMsrStoreCount, 0)?;
    vmcs.write(Control32::ExitMsrLoadCount, 0)?;
    vmcs.write(Control32::EntryMsrLoadCount, 0)?;
    vmcs.write(Control32::EntryInterruptionInfo, 0)?;
    vmcs.write(Control64::MsrBitmaps, msr_bitmap)?;
    vmcs.write(Control64::Eptp, eptp)?;
    if caps.secondary.contains(SecondaryProcBased::ENABLE_VPID) {
        vmcs.write(Control16::Vpid, GUEST_VPID)?;
    }
    if caps
        .secondary
        .contains(SecondaryProcBased::ENABLE_XSAVES_XRSTORS)
    {
        vmcs.write(Control64::XssExitingBitmap, 0)?;
    }
    vmcs.write(ControlNatural::Cr0GuestHostMask, cr.cr0_mask)?;
    vmcs.write(ControlNatural::Cr4GuestHostMask, cr.cr4_mask)
}

/// Segment access rights (SDM §25.4.1, Table 25-2).
mod ar {
    /// 64-bit code: present, DPL 0, S, execute/read accessed, L.
    pub const CODE64: u32 = 0xa09b;
    /// 32-bit code: present, DPL 0, S, execute/read accessed, D, G.
    pub const CODE32: u32 = 0xc09b;
    /// Data: present, DPL 0, S, read/write accessed, D/B, G.
    pub const DATA: u32 = 0xc093;
    /// Busy 64-bit (or 32-bit) TSS, present.
    pub const TSS_BUSY: u32 = 0x008b;
    /// Unusable segment (bit 16).
    pub const UNUSABLE: u32 = 1 << 16;
}

/// The guest CR0, CR4 and EFER at entry, as the guest sees them.
pub const fn initial_visible(mode: GuestMode) -> (u64, u64, u64) {
    match mode {
        GuestMode::Long64 { .. } => (
            CR0_PG | CR0_WP | CR0_NE | CR0_ET | CR0_MP | CR0_PE,
            CR4_PAE,
            EFER_LME | EFER_LMA | EFER_NXE,
        ),
        GuestMode::Protected32 => (CR0_ET | CR0_PE, 0, 0),
    }
}

/// Writes the guest-state area for `entry`. `nx` says whether EFER.NXE may
/// be set (CPUID.80000001H:EDX.NX); `pat` is the guest's initial IA32_PAT.
pub fn write_guest_state(
    vmcs: &mut impl Vmcs,
    entry: &GuestEntry,
    cr: &CrConfig,
    nx: bool,
    pat: u64,
) -> Result<(), VmFail> {
    let (cr0, cr4, mut efer) = initial_visible(entry.mode);
    if !nx {
        efer &= !crate::bits::EFER_NXE;
    }
    let (cr3, code_ar) = match entry.mode {
        GuestMode::Long64 { cr3 } => (cr3, ar::CODE64),
        GuestMode::Protected32 => (0, ar::CODE32),
    };
    vmcs.write(GuestNatural::Cr0, cr.real_cr0(cr0))?;
    vmcs.write(ControlNatural::Cr0ReadShadow, cr0)?;
    vmcs.write(GuestNatural::Cr4, cr.real_cr4(cr4))?;
    vmcs.write(ControlNatural::Cr4ReadShadow, cr4)?;
    vmcs.write(GuestNatural::Cr3, cr3)?;
    vmcs.write(Guest64::Efer, efer)?;
    vmcs.write(Guest64::Pat, pat)?;
    vmcs.write(Guest64::Debugctl, 0)?;
    vmcs.write(Guest64::VmcsLinkPointer, u64::MAX)?;
    vmcs.write(GuestNatural::Dr7, 0x400)?;
    vmcs.write(GuestNatural::Rip, entry.rip)?;
    vmcs.write(GuestNatural::Rsp, entry.rsp)?;
    vmcs.write(GuestNatural::Rflags, 0x2)?;
    vmcs.write(GuestNatural::PendingDebugExceptions, 0)?;
    vmcs.write(Guest32::InterruptibilityState, 0)?;
    vmcs.write(Guest32::ActivityState, 0)?;
    vmcs.write(Guest32::SysenterCs, 0)?;
    vmcs.write(GuestNatural::SysenterEsp, 0)?;
    vmcs.write(GuestNatural::SysenterEip, 0)?;

    let flat = [
        (
            Guest16::EsSelector,
            Guest32::EsLimit,
            Guest32::EsAccessRights,
            GuestNatural::EsBase,
            0x10,
            ar::DATA,
        ),
        (
            Guest16::CsSelector,
            Guest32::CsLimit,
            Guest32::CsAccessRights,
            GuestNatural::CsBase,
            0x08,
            code_ar,
        ),
        (
            Guest16::SsSelector,
            Guest32::SsLimit,
            Guest32::SsAccessRights,
            GuestNatural::SsBase,
            0x10,
            ar::DATA,
        ),
        (
            Guest16::DsSelector,
            Guest32::DsLimit,
            Guest32::DsAccessRights,
            GuestNatural::DsBase,
            0x10,
            ar::DATA,
        ),
        (
            Guest16::FsSelector,
            Guest32::FsLimit,
            Guest32::FsAccessRights,
            GuestNatural::FsBase,
            0x10,
            ar::DATA,
        ),
        (
            Guest16::GsSelector,
            Guest32::GsLimit,
            Guest32::GsAccessRights,
            GuestNatural::GsBase,
            0x10,
            ar::DATA,
        ),
    ];
    for (sel, limit, rights, base, selector, access) in flat {
        vmcs.write(sel, selector)?;
        vmcs.write(limit, 0xffff_ffff)?;
        vmcs.write(rights, access)?;
        vmcs.write(base, 0)?;
    }
    vmcs.write(Guest16::LdtrSelector, 0)?;
    vmcs.write(Guest32::LdtrLimit, 0)?;
    vmcs.write(Guest32::LdtrAccessRights, ar::UNUSABLE)?;
    vmcs.write(GuestNatural::LdtrBase, 0)?;
    vmcs.write(Guest16::TrSelector, 0x18)?;
    vmcs.write(Guest32::TrLimit, 0x67)?;
    vmcs.write(Guest32::TrAccessRights, ar::TSS_BUSY)?;
    vmcs.write(GuestNatural::TrBase, 0)?;
    vmcs.write(GuestNatural::GdtrBase, entry.gdtr.base)?;
    vmcs.write(Guest32::GdtrLimit, entry.gdtr.limit.into())?;
    vmcs.write(GuestNatural::IdtrBase, entry.idtr.base)?;
    vmcs.write(Guest32::IdtrLimit, entry.idtr.limit.into())
}
