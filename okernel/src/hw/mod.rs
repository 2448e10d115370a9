//! The hardware-access traits: everything above [`crate::arch`] reaches the
//! CPU and the current VMCS through [`Vmcs`] and [`Cpu`] (and VMX bring-up
//! through [`VmxRoot`]), so every exit handler, the capability checks and
//! the launch sequence run on the host against `fake` implementations, and
//! on the machine against [`real`] ones.

#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod guard;
pub mod msr_bitmap_page;
pub mod phys;
pub mod real;
#[cfg(any(test, feature = "fake"))]
pub mod recorder;

pub use crate::arch::cpu::CpuidResult;
use crate::vmx::error::VmFail;
use crate::vmx::fields::{Field, FieldValue};

/// The current VMCS.
pub trait Vmcs {
    /// VMREAD of a raw encoding.
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail>;
    /// VMWRITE of a raw encoding.
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail>;

    /// Reads a typed field.
    #[inline(always)]
    fn read<F: Field>(&self, field: F) -> Result<F::Value, VmFail>
    where
        Self: Sized,
    {
        self.read_raw(field.encoding()).map(F::Value::from_u64)
    }

    /// Writes a typed field.
    #[inline(always)]
    fn write<F: Field>(&mut self, field: F, value: F::Value) -> Result<(), VmFail>
    where
        Self: Sized,
    {
        self.write_raw(field.encoding(), value.to_u64())
    }
}

/// The INVEPT invalidation types (SDM Vol. 3C §31.3, INVEPT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InveptKind {
    /// Invalidate the mappings of one EPTP.
    SingleContext(u64),
    /// Invalidate the mappings of every EPTP.
    AllContext,
}

/// The processor, as the monitor uses it.
///
/// Methods are safe: the real implementation is created by an `unsafe`
/// constructor whose contract covers them (CPL0, VMX root operation once
/// VMXON succeeded), and callers only pass MSR numbers the capability checks
/// proved present and values they validated.
pub trait Cpu {
    /// CPUID with EAX = `leaf`, ECX = `subleaf`.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult;
    /// RDMSR of an MSR known to exist.
    fn read_msr(&self, msr: u32) -> u64;
    /// WRMSR of a validated value.
    fn write_msr(&mut self, msr: u32, value: u64);
    /// Reads CR0.
    fn read_cr0(&self) -> u64;
    /// Reads CR3.
    fn read_cr3(&self) -> u64;
    /// Reads CR4.
    fn read_cr4(&self) -> u64;
    /// Writes CR0 (only VMX fixed-bit adjustments of the current value).
    fn write_cr0(&mut self, value: u64);
    /// Writes CR4 (only VMX fixed-bit adjustments, VMXE and OSXSAVE).
    fn write_cr4(&mut self, value: u64);
    /// Writes CR2: the guest's page-fault address for a #PF the monitor
    /// re-injects after intercepting it (a #PF VM exit leaves CR2 as it
    /// was, SDM Vol. 3C §27.1; the processor does not switch CR2 on VM
    /// entry or exit, so the value reaches the guest).
    fn write_cr2(&mut self, value: u64);
    /// XSETBV of a value validated by [`crate::exit::xsetbv`].
    fn xsetbv(&mut self, xcr: u32, value: u64);
    /// WBINVD.
    fn wbinvd(&mut self);
    /// INVEPT.
    fn invept(&mut self, kind: InveptKind) -> Result<(), VmFail>;
    /// INVVPID single-context: drops every translation tagged with `vpid`.
    fn invvpid_single(&mut self, vpid: u16) -> Result<(), VmFail>;
    /// IN of `size` bytes (1, 2 or 4) from `port`, for a guest access
    /// [`crate::exit::io`] validated.
    fn port_in(&mut self, port: u16, size: u8) -> u32;
    /// OUT of the low `size` bytes (1, 2 or 4) of `value` to `port`, a
    /// guest write [`crate::exit::io`] validated.
    fn port_out(&mut self, port: u16, size: u8, value: u32);
    /// Reads the 32-bit xAPIC register at physical address `pa`: this
    /// processor's APIC page (IA32_APIC_BASE, below 4 GiB) plus a
    /// register offset [`crate::exit::xapic`] validated.
    fn xapic_read(&self, pa: u64) -> u32;
    /// Writes the 32-bit xAPIC register at `pa` (as for
    /// [`Self::xapic_read`]) with a guest write [`crate::exit::xapic`]
    /// validated.
    fn xapic_write(&mut self, pa: u64, value: u32);
}

/// A VMXON region or a VMCS region: the operand of VMXON, VMCLEAR and
/// VMPTRLD (SDM Vol. 3C §25.2, §25.11.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmxRegion(u64);

impl VmxRegion {
    /// The region at physical address `phys`.
    ///
    /// # Safety
    /// `phys` is a 4 KiB-aligned, zeroed frame (at least the region size of
    /// IA32_VMX_BASIC) whose first dword holds the VMCS revision
    /// identifier, which belongs to the monitor alone for the rest of the
    /// run: never mapped for the guest, and not accessed by Rust code once
    /// the processor may use it.
    pub const unsafe fn new(phys: u64) -> Self {
        Self(phys)
    }

    /// The physical address.
    pub const fn addr(self) -> u64 {
        self.0
    }
}

/// Entering VMX root operation and making a VMCS current: the processor's
/// part of VMX bring-up (SDM Vol. 3C §24.7 "Enabling and Entering VMX
/// Operation", §25.11.3; the instructions in §31.3).
///
/// Methods are safe for the reason [`Cpu`]'s are: the operands are
/// [`VmxRegion`]s, whose constructor's contract makes them the monitor's,
/// and callers execute VMXON only with CR0/CR4 satisfying the VMX fixed
/// bits and CR4.VMXE set, VMCLEAR and VMPTRLD only after it.
pub trait VmxRoot: Cpu {
    /// The handle to the VMCS [`VmxRoot::vmptrld`] makes current.
    type Vmcs: Vmcs;
    /// VMXON: enters VMX root operation with `region` as the VMXON region.
    fn vmxon(&mut self, region: VmxRegion) -> Result<(), VmFail>;
    /// VMCLEAR: makes the VMCS at `vmcs` clear and inactive.
    fn vmclear(&mut self, vmcs: VmxRegion) -> Result<(), VmFail>;
    /// VMPTRLD: makes the VMCS at `vmcs` current; returns the handle
    /// through which it is read and written (so no VMREAD or VMWRITE can
    /// come before it).
    fn vmptrld(&mut self, vmcs: VmxRegion) -> Result<Self::Vmcs, VmFail>;
}
