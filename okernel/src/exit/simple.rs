//! Exits whose handling is one line: cache flushes, and instructions the
//! guest may not use (GETSEC, every VMX instruction: invariant 12).

use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::event::Exception;

/// INVD and WBINVD (INVD always exits, SDM Vol. 3C §26.1.2; WBINVD only
/// with "WBINVD exiting"). Both are performed as WBINVD: an INVD would
/// discard the monitor's own dirty cache lines along with the guest's.
pub fn handle_cache_flush<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    vcpu.cpu.wbinvd();
    vcpu.advance_rip()
}

/// Injects #UD at the exiting instruction: what the guest sees for GETSEC
/// (SMX is hidden) and for VMXON, VMCLEAR, VMLAUNCH, VMPTRLD, VMPTRST,
/// VMREAD, VMRESUME, VMWRITE, VMXOFF, INVEPT, INVVPID and VMFUNC, as on a
/// processor without VMX (CPUID.1:ECX.VMX = 0).
pub fn inject_ud<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    vcpu.inject(Exception::InvalidOpcode, 0)
}
