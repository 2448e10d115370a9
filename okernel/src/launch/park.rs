//! Parking an application processor in VMX root operation: the first
//! half of its start under the monitor (the second is joining the run,
//! [`super::ap`]).
//!
//! An application processor left in the firmware's wait-for-SIPI state
//! is started by any INIT-SIPI-SIPI the guest writes to its local APIC's
//! interrupt command register (which does not exit), and then runs guest
//! code with no EPT, no pinned control registers and no MSR locks: every
//! invariant falls (DESIGN.md invariant 1).
//!
//! So the loader starts each application processor before the guest
//! exists, and the processor calls [`park_this_processor`]: it enters
//! VMX root operation (VMXON) with interrupts disabled, and from then on
//! stays in VMX operation — waiting to join the run, then running the
//! guest in VMX non-root under its own VMCS, or, if it cannot join,
//! halted in VMX root for good. In VMX root operation INIT is blocked
//! (SDM Vol. 3C §24.8, "Restrictions on VMX Operation": "INIT signals are
//! blocked whenever a logical processor is in VMX root operation"; in
//! non-root operation an INIT exits instead, §26.2) and a SIPI is ignored
//! outside the wait-for-SIPI state (SDM Vol. 3A §9.4, "Multiple-Processor
//! (MP) Initialization"); a fixed or external interrupt finds IF=0; an
//! NMI (or SMI) returns to where it struck; a machine check (CR4.MCE is
//! set by the start-up code) stops the processor where it is. Nothing the
//! guest can send through an APIC moves such a processor out of the
//! monitor.

use crate::bits::CR4_VMXE;
use crate::check::{self, VmxUnavailable};
use crate::hw::real::RealCpu;
use crate::hw::{Cpu, VmxRegion, VmxRoot};
use crate::vmx::error::VmFail;

/// Why an application processor could not be parked. The loader then
/// refuses to start the guest: that processor is outside the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParkFailure {
    /// The processor cannot enter VMX operation.
    #[error("VMX unavailable: {0}")]
    Unavailable(VmxUnavailable),
    /// VMXON failed.
    #[error("VMXON failed: {0}")]
    Vmxon(VmFail),
}

impl ParkFailure {
    /// [`ParkFailure::code`] of [`ParkFailure::Unavailable`].
    pub const UNAVAILABLE: u8 = 2;
    /// [`ParkFailure::code`] of [`ParkFailure::Vmxon`].
    pub const VMXON: u8 = 3;

    /// A one-byte code, for a processor that cannot print (the loader
    /// keeps one per processor; 0, 1 and 0xff are its own states).
    pub fn code(self) -> u8 {
        match self {
            ParkFailure::Unavailable(_) => Self::UNAVAILABLE,
            ParkFailure::Vmxon(_) => Self::VMXON,
        }
    }

    /// The words for [`ParkFailure::code`]'s value.
    pub fn describe(code: u8) -> &'static str {
        match code {
            Self::UNAVAILABLE => {
                "VMX unavailable on it (CPUID, IA32_FEATURE_CONTROL or the VMX capability MSRs)"
            }
            Self::VMXON => "VMXON failed on it",
            _ => "it stopped in an unknown state",
        }
    }
}

/// Enters VMX root operation on this processor with `vmxon_region`,
/// interrupts disabled. Once it returns `Ok`, the processor is in VMX
/// root operation for good: the caller joins the run
/// ([`super::ap::join_this_processor`]) or halts there.
///
/// # Safety
///
/// Called once per application processor, at CPL0, in long mode on the
/// loader's identity map, with interrupts disabled and an IDT whose NMI
/// gate returns (`iretq`). `vmxon_region` is a zeroed, 4 KiB-aligned
/// frame that belongs to this processor alone and is never mapped for
/// the guest (SDM Vol. 3C §25.11.5).
pub unsafe fn park_this_processor(vmxon_region: u64) -> Result<(), ParkFailure> {
    // SAFETY: forwarded from the caller (CPL0 on the bare machine); the
    // handle only reads capability MSRs, sets IA32_FEATURE_CONTROL when
    // it is unlocked (as on the bootstrap processor), adjusts the VMX
    // bits of CR0/CR4 and then executes VMXON (with them set).
    let mut cpu = unsafe { RealCpu::new() };
    let caps = check::probe(&mut cpu).map_err(ParkFailure::Unavailable)?;
    // SAFETY: the caller's frame: zeroed, aligned, this processor's
    // alone; the first dword is the revision identifier (SDM §25.11.5).
    unsafe { (vmxon_region as *mut u32).write(caps.basic.revision_id()) };
    // SAFETY: the caller's frame (zeroed, 4 KiB-aligned, never mapped for
    // the guest, this processor's alone), its revision identifier just
    // written; no Rust code touches it again: the processor stays in VMX
    // operation, or returns the failure with the frame unused.
    let region = unsafe { VmxRegion::new(vmxon_region) };
    let cr0 = caps.cr0_fixed.apply(cpu.read_cr0());
    cpu.write_cr0(cr0);
    let cr4 = caps.cr4_fixed.apply(cpu.read_cr4() | CR4_VMXE);
    cpu.write_cr4(cr4);
    // CR0/CR4 satisfy the fixed bits with VMXE set (just written), as
    // `RealCpu::new`'s contract asks of VMXON.
    cpu.vmxon(region).map_err(ParkFailure::Vmxon)
}

/// Halts this processor for good, interrupts disabled (in VMX root
/// operation after [`park_this_processor`]: INIT blocked).
pub fn halt_here() -> ! {
    crate::arch::cpu::halt_in_root()
}
