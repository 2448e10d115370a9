//! CPUID exits (CPUID always exits in VMX non-root operation, SDM Vol. 3C
//! §26.1.2): pass-through with VMX hidden, plus the okernel leaves.

use okernel_abi::cpuid as leaves;

use crate::bits::{
    CPUID1_ECX_HYPERVISOR, CPUID1_ECX_OSXSAVE, CPUID1_ECX_SMX, CPUID1_ECX_VMX, CPUID7_ECX_OSPKE,
    CR4_OSXSAVE, CR4_PKE,
};
use crate::hw::{Cpu, CpuidResult, Vmcs};
use crate::policy::Policy;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::fields::GuestNatural;
use crate::vmx::regs::Gpr;

/// The first and last leaf of the hypervisor range.
const HYPERVISOR_RANGE: core::ops::RangeInclusive<u32> = 0x4000_0000..=0x4000_00ff;

/// What the guest sees for CPUID(`leaf`, `subleaf`), given the host's
/// answer source and the guest's CR4.
pub fn guest_view(cpu: &impl Cpu, leaf: u32, subleaf: u32, guest_cr4: u64) -> CpuidResult {
    guest_view_with(cpu, leaf, subleaf, || {
        Ok::<_, core::convert::Infallible>(guest_cr4)
    })
    .unwrap_or_else(|e| match e {})
}

/// [`guest_view`] with the guest's CR4 read only for the leaves that
/// mirror one of its bits (1 and 7).
#[inline]
pub fn guest_view_with<E>(
    cpu: &impl Cpu,
    leaf: u32,
    subleaf: u32,
    guest_cr4: impl FnOnce() -> Result<u64, E>,
) -> Result<CpuidResult, E> {
    if HYPERVISOR_RANGE.contains(&leaf) {
        return Ok(match leaf {
            leaves::LEAF_SIGNATURE => {
                let (ebx, ecx, edx) = leaves::signature_registers();
                CpuidResult {
                    eax: leaves::LEAF_MAX,
                    ebx,
                    ecx,
                    edx,
                }
            }
            leaves::LEAF_VERSION => CpuidResult {
                eax: okernel_abi::ABI_VERSION.packed(),
                ebx: 0,
                ecx: 0,
                edx: 0,
            },
            _ => CpuidResult::default(),
        });
    }
    let mut r = cpu.cpuid(leaf, subleaf);
    match leaf {
        1 => {
            let guest_cr4 = guest_cr4()?;
            // VMX hidden; SMX too (GETSEC is refused); OSXSAVE mirrors
            // the *guest's* CR4.OSXSAVE; "hypervisor present" set.
            r.ecx &= !(CPUID1_ECX_VMX | CPUID1_ECX_SMX | CPUID1_ECX_OSXSAVE);
            r.ecx |= CPUID1_ECX_HYPERVISOR;
            if guest_cr4 & CR4_OSXSAVE != 0 {
                r.ecx |= CPUID1_ECX_OSXSAVE;
            }
        }
        7 if subleaf == 0 => {
            let guest_cr4 = guest_cr4()?;
            // OSPKE mirrors the guest's CR4.PKE.
            r.ecx &= !CPUID7_ECX_OSPKE;
            if guest_cr4 & CR4_PKE != 0 {
                r.ecx |= CPUID7_ECX_OSPKE;
            }
        }
        _ => {}
    }
    Ok(r)
}

/// Handles a CPUID exit: EAX/ECX in, EAX..EDX out (zero-extended, as the
/// instruction does), RIP advanced.
#[inline(always)]
pub fn handle<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    let leaf = vcpu.regs.rax() as u32;
    let subleaf = vcpu.regs.rcx() as u32;
    let vmcs = &vcpu.vmcs;
    let r = guest_view_with(&vcpu.cpu, leaf, subleaf, || vmcs.read(GuestNatural::Cr4))?;
    vcpu.regs.set(Gpr::Rax, r.eax.into());
    vcpu.regs.set(Gpr::Rbx, r.ebx.into());
    vcpu.regs.set(Gpr::Rcx, r.ecx.into());
    vcpu.regs.set(Gpr::Rdx, r.edx.into());
    vcpu.advance_rip()
}
