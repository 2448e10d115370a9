//! The hardware implementations of [`Vmcs`], [`Cpu`] and [`VmxRoot`] over
//! [`crate::arch`].

use core::cell::Cell;

use super::{Cpu, CpuidResult, InveptKind, Vmcs, VmxRegion, VmxRoot};
use crate::arch;
use crate::vmx::error::VmFail;

/// The current VMCS of this processor.
///
/// VMREADs go through `scratch`, a memory destination in the handle
/// itself ([`arch::vmx::vmread_to`]): the cheapest form of a checked
/// VMREAD.
#[derive(Debug)]
pub struct RealVmcs {
    scratch: Cell<u64>,
}

impl RealVmcs {
    /// A handle to the current VMCS.
    ///
    /// # Safety
    /// The processor must be in VMX root operation with a current VMCS for
    /// as long as the handle is used, and only the monitor may write fields
    /// through it (writes to host state, EPTP or bitmap addresses must keep
    /// pointing at monitor-owned memory).
    pub unsafe fn current() -> Self {
        Self {
            scratch: Cell::new(0),
        }
    }
}

impl Vmcs for RealVmcs {
    #[inline(always)]
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        // SAFETY: `RealVmcs::current`'s contract: VMX root operation with a
        // current VMCS; `scratch` is this handle's own 8 bytes, written only
        // here (a `Cell`: no reference to its contents is ever handed out).
        unsafe { arch::vmx::vmread_to(encoding, self.scratch.as_ptr()) }?;
        Ok(self.scratch.get())
    }

    #[inline(always)]
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        // SAFETY: `RealVmcs::current`'s contract: a current VMCS, written
        // only by the monitor with values that keep it sound.
        unsafe { arch::vmx::vmwrite(encoding, value) }
    }
}

/// The processor the monitor runs on.
#[derive(Debug)]
pub struct RealCpu {
    _private: (),
}

impl RealCpu {
    /// A handle to this processor.
    ///
    /// # Safety
    /// The caller runs at CPL0 on the bare machine (the monitor), and uses
    /// the handle only as [`Cpu`] and [`VmxRoot`] document: MSRs known to
    /// exist, values validated, CR writes that only adjust VMX bits, VMXON
    /// only with CR0/CR4 satisfying the VMX fixed bits and CR4.VMXE set,
    /// VMCLEAR, VMPTRLD and INVEPT only after VMXON.
    pub unsafe fn new() -> Self {
        Self { _private: () }
    }
}

impl Cpu for RealCpu {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        arch::cpu::cpuid(leaf, subleaf)
    }

    fn read_msr(&self, msr: u32) -> u64 {
        // SAFETY: `RealCpu::new`'s contract: CPL0 and `msr` exists.
        unsafe { arch::cpu::rdmsr(msr) }
    }

    fn write_msr(&mut self, msr: u32, value: u64) {
        // SAFETY: `RealCpu::new`'s contract: CPL0, `msr` exists and the
        // value was validated by the caller.
        unsafe { arch::cpu::wrmsr(msr, value) }
    }

    fn read_cr0(&self) -> u64 {
        arch::cpu::read_cr0()
    }

    fn read_cr3(&self) -> u64 {
        arch::cpu::read_cr3()
    }

    fn read_cr4(&self) -> u64 {
        arch::cpu::read_cr4()
    }

    fn write_cr0(&mut self, value: u64) {
        // SAFETY: `RealCpu::new`'s contract: only VMX fixed-bit adjustments
        // of the current CR0 (which the fixed bits keep valid).
        unsafe { arch::cpu::write_cr0(value) }
    }

    fn write_cr4(&mut self, value: u64) {
        // SAFETY: `RealCpu::new`'s contract: only VMX fixed bits, VMXE and
        // (when CPUID reports XSAVE) OSXSAVE are changed.
        unsafe { arch::cpu::write_cr4(value) }
    }

    fn write_cr2(&mut self, value: u64) {
        // SAFETY: CR2 only reports page-fault addresses; the monitor takes
        // no page faults but the one that ends the run (its memory is
        // mapped; the host stack's not-present guard, `hw::guard`), so the
        // value stays the guest's until the guest's next page fault.
        unsafe { arch::cpu::write_cr2(value) }
    }

    fn xsetbv(&mut self, xcr: u32, value: u64) {
        // SAFETY: `RealCpu::new`'s contract: the value was validated by
        // `exit::xsetbv` against CPUID leaf 0xD, and host CR4.OSXSAVE is set
        // whenever the CPU reports XSAVE.
        unsafe { arch::cpu::xsetbv(xcr, value) }
    }

    fn wbinvd(&mut self) {
        // SAFETY: `RealCpu::new`'s contract: CPL0.
        unsafe { arch::cpu::wbinvd() }
    }

    fn invept(&mut self, kind: InveptKind) -> Result<(), VmFail> {
        let (t, eptp) = match kind {
            InveptKind::SingleContext(eptp) => (1, eptp),
            InveptKind::AllContext => (2, 0),
        };
        // SAFETY: `RealCpu::new`'s contract: INVEPT only after VMXON; the
        // launch path checks the type is supported before using it.
        unsafe { arch::vmx::invept(t, eptp) }
    }

    fn invvpid_single(&mut self, vpid: u16) -> Result<(), VmFail> {
        // SAFETY: `RealCpu::new`'s contract: after VMXON; the probe enables
        // VPID only when single-context INVVPID is supported.
        unsafe { arch::vmx::invvpid(1, vpid, 0) }
    }

    fn port_in(&mut self, port: u16, size: u8) -> u32 {
        // SAFETY: `RealCpu::new`'s contract: CPL0; `exit::io` reads only
        // the ports the guest itself was reading, on its behalf.
        unsafe { arch::port::port_in(port, size) }
    }

    fn port_out(&mut self, port: u16, size: u8, value: u32) {
        // SAFETY: `RealCpu::new`'s contract: CPL0; `exit::io` writes only
        // guest writes it validated (no reset, no A20 change).
        let write = || unsafe { arch::port::port_out(port, size, value) };
        // The console's UART: under its lock, so that with several
        // processors a guest byte never lands inside a line of the
        // monitor's that another prints outside the run's lock (a
        // report from an exception handler), after its line mark.
        let com1 = okernel_console::COM1;
        if (com1..com1 + 8).contains(&port) {
            okernel_console::with_lock(write)
        } else {
            write()
        }
    }

    fn xapic_read(&self, pa: u64) -> u32 {
        // SAFETY: `exit::xapic` passes this processor's APIC page
        // (IA32_APIC_BASE, which the monitor keeps where it was, below
        // 4 GiB: the loader's identity map, which the monitor runs on)
        // plus an aligned register offset; a register read has no side
        // effect the guest's own read would not have.
        unsafe { core::ptr::read_volatile(pa as *const u32) }
    }

    fn xapic_write(&mut self, pa: u64, value: u32) {
        // SAFETY: as for `xapic_read`; the write is a guest write
        // `exit::xapic` judged harmless to the monitor (no INIT to another
        // processor, no SIPI or NMI from an untrusted context).
        unsafe { core::ptr::write_volatile(pa as *mut u32, value) }
    }
}

impl VmxRoot for RealCpu {
    type Vmcs = RealVmcs;

    fn vmxon(&mut self, region: VmxRegion) -> Result<(), VmFail> {
        // SAFETY: `RealCpu::new`'s contract: CR0/CR4 satisfy the fixed bits
        // with VMXE set; `VmxRegion::new`'s: a zeroed, aligned frame with
        // the revision identifier, the monitor's alone.
        unsafe { arch::vmx::vmxon(region.addr()) }
    }

    fn vmclear(&mut self, vmcs: VmxRegion) -> Result<(), VmFail> {
        // SAFETY: `RealCpu::new`'s contract: after VMXON; `VmxRegion::new`'s:
        // a monitor-owned region no Rust code accesses.
        unsafe { arch::vmx::vmclear(vmcs.addr()) }
    }

    fn vmptrld(&mut self, vmcs: VmxRegion) -> Result<RealVmcs, VmFail> {
        // SAFETY: as in `vmclear`; the region carries the revision
        // identifier (`VmxRegion::new`).
        unsafe { arch::vmx::vmptrld(vmcs.addr()) }?;
        // SAFETY: VMPTRLD just succeeded: VMX root operation with this
        // region as the current VMCS; only the monitor writes it. A later
        // VMCLEAR or VMPTRLD would make the handle refer to whatever VMCS
        // is current then (VMREAD/VMWRITE fail without one): launch makes
        // one VMCS current, once.
        Ok(unsafe { RealVmcs::current() })
    }
}
