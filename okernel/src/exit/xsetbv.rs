//! XSETBV exits (XSETBV always exits in VMX non-root operation, SDM Vol. 3C
//! §26.1.2). XCR0 is not switched by VM entry/exit, so the monitor executes
//! the guest's XSETBV on the real register — after checking every condition
//! under which the instruction raises #GP or #UD (SDM Vol. 2D, XSETBV), so
//! the monitor itself can never fault on it. The monitor is built without
//! SSE/AVX and does not depend on XCR0.

use crate::bits::{CPUID1_ECX_XSAVE, CR4_OSXSAVE};
use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::event::Exception;
use crate::vmx::fields::GuestNatural;

/// Why an XCR0 value is refused, or `Ok` if XSETBV would accept it, given
/// the XCR0 bits the processor supports (CPUID.(EAX=0DH,ECX=0):EDX:EAX).
pub fn validate_xcr0(value: u64, supported: u64) -> Result<(), &'static str> {
    const X87: u64 = 1 << 0;
    const SSE: u64 = 1 << 1;
    const AVX: u64 = 1 << 2;
    const BNDREGS: u64 = 1 << 3;
    const BNDCSR: u64 = 1 << 4;
    const AVX512: u64 = 0b111 << 5;
    const XTILECFG: u64 = 1 << 17;
    const XTILEDATA: u64 = 1 << 18;
    if value & !supported != 0 {
        return Err("unsupported XCR0 bit");
    }
    if value & X87 == 0 {
        return Err("XCR0.X87 clear");
    }
    if value & AVX != 0 && value & SSE == 0 {
        return Err("XCR0.AVX without SSE");
    }
    if (value & BNDREGS == 0) != (value & BNDCSR == 0) {
        return Err("XCR0.BNDREGS and BNDCSR differ");
    }
    if value & AVX512 != 0 && (value & AVX512 != AVX512 || value & (SSE | AVX) != SSE | AVX) {
        return Err("XCR0 AVX-512 bits incomplete");
    }
    if (value & XTILECFG == 0) != (value & XTILEDATA == 0) {
        return Err("XCR0.XTILECFG and XTILEDATA differ");
    }
    Ok(())
}

/// Handles an XSETBV exit: #UD if XSAVE is unavailable or the guest's
/// CR4.OSXSAVE is clear, #GP at CPL > 0, for ECX != 0 or an invalid value;
/// otherwise XCR0 is written and RIP advanced.
pub fn handle<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    let host_xsave = vcpu.cpu.cpuid(1, 0).ecx & CPUID1_ECX_XSAVE != 0;
    let guest_osxsave = vcpu.vmcs.read(GuestNatural::Cr4)? & CR4_OSXSAVE != 0;
    if !host_xsave || !guest_osxsave {
        return vcpu.inject(Exception::InvalidOpcode, 0);
    }
    if vcpu.cpl()? != 0 || vcpu.regs.rcx() as u32 != 0 {
        return vcpu.inject(Exception::GeneralProtection, 0);
    }
    let value = (vcpu.regs.rdx() << 32) | (vcpu.regs.rax() & 0xffff_ffff);
    let leaf = vcpu.cpu.cpuid(0xd, 0);
    let supported = (u64::from(leaf.edx) << 32) | u64::from(leaf.eax);
    if validate_xcr0(value, supported).is_err() {
        return vcpu.inject(Exception::GeneralProtection, 0);
    }
    vcpu.cpu.xsetbv(0, value);
    vcpu.advance_rip()
}
