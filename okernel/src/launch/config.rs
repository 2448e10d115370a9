//! What the loader hands to [`crate::launch()`].

use crate::vcpu::platform_ports::PlatformPorts;
use okernel_abi::result::Outcome;
use thiserror::Error;

use crate::check::VmxUnavailable;
use crate::memmap::{MemoryRange, PhysRange};
use crate::vmx::error::VmFail;
use crate::vmx::regs::GuestRegisters;

/// The mode the guest starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestMode {
    /// 64-bit mode (IA-32e), paging on with `cr3` (page tables the loader
    /// built in guest RAM), CR4.PAE, EFER.LME/LMA, CS.L = 1.
    Long64 {
        /// Guest CR3.
        cr3: u64,
    },
    /// 32-bit protected mode with paging off, flat 4 GiB segments (the
    /// multiboot machine state), entered through unrestricted guest.
    Protected32,
}

/// A GDTR or IDTR value for the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorTable {
    /// Base (guest-linear).
    pub base: u64,
    /// Limit.
    pub limit: u16,
}

/// The guest's state at its first instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestEntry {
    /// The mode.
    pub mode: GuestMode,
    /// Entry point (guest-linear = physical with the identity map).
    pub rip: u64,
    /// Initial RSP (0 if the guest sets its own before using the stack).
    pub rsp: u64,
    /// Initial general-purpose registers: for the okernel 64-bit protocol
    /// RDI = physical address of the [`okernel_abi::boot::BootInfo`]; for
    /// multiboot, EAX = magic and EBX = the information structure.
    pub regs: GuestRegisters,
    /// GDTR at entry. Segment registers are loaded with flat descriptors
    /// (CS = 0x08, SS/DS/ES/FS/GS = 0x10, TR = 0x18) directly in the VMCS,
    /// so the table need not contain them until the guest reloads a
    /// selector; a guest that does so first loads its own GDT.
    pub gdtr: DescriptorTable,
    /// IDTR at entry (limit 0 = no IDT: interrupts are disabled at entry).
    pub idtr: DescriptorTable,
}

/// The loader's callback that ends the run: prints the result marker
/// (`okernel_abi::result`) with the detail and stops the machine.
pub type ReportFn = fn(Outcome, &str) -> !;

/// Everything [`crate::launch()`] needs.
#[derive(Debug, Clone, Copy)]
pub struct LaunchConfig<'a> {
    /// The guest's entry state.
    pub guest: GuestEntry,
    /// The physical memory map: every range the guest may see, with its
    /// kind. Gaps are not mapped. At most
    /// [`MAX_RAM_RANGES`](crate::mem::MAX_RAM_RANGES) RAM
    /// entries. The monitor reads guest RAM (hypercall arguments) only
    /// below 4 GiB, through the loader's identity map, which must cover
    /// the first 4 GiB (virtual = physical) for the whole run.
    pub memory_map: &'a [MemoryRange],
    /// Memory the monitor owns and the guest must never reach (invariant 1):
    /// the loader image (code, data, its stacks, GDT/IDT/TSS, page tables),
    /// anything else the loader keeps. The frame pool is excluded
    /// automatically and need not be listed. At most
    /// [`MAX_MONITOR_RANGES`](crate::mem::MAX_MONITOR_RANGES).
    pub monitor_ranges: &'a [PhysRange],
    /// 4 KiB-aligned physical memory, identity-mapped in the loader's page
    /// tables (virtual = physical), used for nothing else: the monitor
    /// allocates its VMXON region, VMCS, MSR bitmap, host stack and EPT
    /// tables here. [`MIN_POOL_BYTES`] is the least it accepts.
    pub frame_pool: PhysRange,
    /// The platform's ACPI sleep and reset ports and what is refused
    /// there (read by the loader from the FADT and DSDT; empty: none).
    pub platform_ports: PlatformPorts,
    /// Ends the run (see [`ReportFn`]).
    pub report: ReportFn,
    /// How many application processors the loader parked in VMX root
    /// (`crate::launch::park`); each joins the run in the wait-for-SIPI
    /// state (`crate::launch::ap`). At most
    /// [`MAX_APS`](crate::launch::ap::MAX_APS).
    pub application_processors: usize,
}

/// Host stack size (allocated from the frame pool).
pub const HOST_STACK_BYTES: u64 = 128 * 1024;
/// The smallest frame pool [`crate::launch()`] accepts: VMXON region, VMCS,
/// MSR bitmap, the two I/O bitmaps, the pool's own state, the host stack's
/// guard frames and a page table for each (`crate::hw::guard`), the host
/// stack and 48 EPT tables.
pub const MIN_POOL_BYTES: u64 =
    (6 + 2 * crate::hw::guard::HOST_GUARD_PAGES) * 4096 + HOST_STACK_BYTES + 48 * 4096;

/// Why [`crate::launch()`] returned instead of running the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LaunchError {
    /// VMX is unavailable (also reported through the callback)
    #[error("VMX unavailable: {0}")]
    Unavailable(#[from] VmxUnavailable),
    /// the frame pool is not 4 KiB aligned, too small, or overlaps a monitor range
    #[error("frame pool {start:#x}..{end:#x} unusable: {why}")]
    BadFramePool {
        /// Pool start.
        start: u64,
        /// Pool end.
        end: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// the frame pool ran out
    #[error("frame pool exhausted while allocating the {0}")]
    OutOfFrames(&'static str),
    /// the guest entry state is unusable
    #[error("bad guest entry: {0}")]
    BadGuest(&'static str),
    /// building the base EPT view failed
    #[error("EPT view: {0}")]
    Ept(ept::Error),
    /// the host stack's guard page could not be unmapped
    #[error("host stack guard: {0}")]
    Guard(crate::hw::guard::UnmapError),
    /// a VMX instruction failed during bring-up
    #[error("{op} failed: {err}")]
    Vmx {
        /// The step of bring-up.
        op: VmxStep,
        /// How it failed.
        err: VmFail,
    },
}

/// The step of VMX bring-up whose instruction failed
/// ([`LaunchError::Vmx`]); its name is the instruction (and, for VMWRITE,
/// the part of the VMCS being written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmxStep {
    /// VMXON.
    Vmxon,
    /// VMCLEAR of the VMCS.
    Vmclear,
    /// VMPTRLD of the VMCS.
    Vmptrld,
    /// INVEPT of the base view.
    Invept,
    /// VMWRITE of the host-state area.
    HostState,
    /// VMWRITE of the execution, exit and entry controls.
    Controls,
    /// VMWRITE of the guest-state area.
    GuestState,
    /// VMWRITE of HOST_RSP (the run state on the host stack).
    HostRsp,
}

impl VmxStep {
    /// The step's name, as the error message gives it.
    pub const fn name(self) -> &'static str {
        match self {
            VmxStep::Vmxon => "VMXON",
            VmxStep::Vmclear => "VMCLEAR",
            VmxStep::Vmptrld => "VMPTRLD",
            VmxStep::Invept => "INVEPT",
            VmxStep::HostState => "VMWRITE (host state)",
            VmxStep::Controls => "VMWRITE (controls)",
            VmxStep::GuestState => "VMWRITE (guest state)",
            VmxStep::HostRsp => "VMWRITE (HOST_RSP)",
        }
    }
}

impl core::fmt::Display for VmxStep {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}
