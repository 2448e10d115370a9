//! VMX bring-up, generic over the hardware: from the capability probe to a
//! current VMCS ready for VMLAUNCH (SDM Vol. 3C §24.7 "Enabling and
//! Entering VMX Operation", §25.11.3 "Initializing a VMCS", chapter 25 for
//! the fields). [`bring_up`] takes the steps in the order the module
//! documentation of [`mod@crate::launch`] gives and stops at the first that
//! fails, returning a [`LaunchError`] that names it; nothing after it
//! runs, and nothing is undone (the loader reports the error and stops
//! the machine).
//!
//! The processor comes in through [`VmxRoot`] (on the machine
//! `hw::real::RealCpu`), the monitor's memory and the host's descriptor
//! tables through [`Platform`] (on the machine `super::platform`, over
//! the frame pool): the host tests drive this same function over
//! `hw::recorder`'s fakes, which record every operation and fail any one
//! on request (`tests::launch_bringup`). What is left to `launch` is the
//! part that cannot run on a host: the run state on the host stack and
//! the switch onto it.

#![forbid(unsafe_code)]

use crate::bits::{CPUID1_ECX_XSAVE, CPUID7_ECX_CET_SS, CPUID7_EDX_CET_IBT, CPUID80000001_EDX_NX};
use ept::EptCaps;

use super::config::{GuestEntry, LaunchError, VmxStep};
use super::host::{self, HostTables};
use super::setup;
use crate::bits::{CR4_OSXSAVE, CR4_VMXE};
use crate::check::{self, Capabilities};
use crate::hw::{Cpu, InveptKind, Vmcs, VmxRegion, VmxRoot};
use crate::msrs;
use crate::policy::protection::PolicyCaps;
use crate::vcpu::CrConfig;
use crate::vcpu::timer::ConsoleTimer;
use crate::vmx::controls::{PrimaryProcBased, SecondaryProcBased};
use crate::vmx::error::VmFail;
use crate::vmx::fields::HostNatural;

/// What bring-up needs besides the processor: the monitor's memory,
/// prepared once the capabilities are known, and the host's descriptor
/// tables.
pub trait Platform {
    /// What the run keeps of the prepared memory (on the machine: the base
    /// EPT view and the frames `launch` still places things in).
    type Memory;

    /// Allocates and fills the VMXON region, the VMCS region (both with
    /// `caps`' revision identifier), the MSR and I/O bitmaps and the host
    /// stack, and builds the base EPT view for `ept`. Runs after the probe
    /// and before anything changes the processor's state.
    fn prepare(
        &mut self,
        caps: &Capabilities,
        ept: EptCaps,
    ) -> Result<Prepared<Self::Memory>, LaunchError>;

    /// The host's selectors, descriptor tables and exit stub.
    fn host_tables(&mut self) -> HostTables;
}

/// The memory [`Platform::prepare`] set up, by physical address.
#[derive(Debug)]
pub struct Prepared<M> {
    /// The VMXON region.
    pub vmxon: VmxRegion,
    /// The VMCS region.
    pub vmcs: VmxRegion,
    /// The MSR bitmap (configured).
    pub msr_bitmap: u64,
    /// I/O bitmaps A and B (filled).
    pub io_bitmaps: (u64, u64),
    /// The base view's EPT pointer.
    pub eptp: u64,
    /// HOST_RSP: the run state's place at the top of the host stack.
    pub host_rsp: u64,
    /// What the run keeps.
    pub memory: M,
}

/// A VMCS ready for VMLAUNCH, current on the processor, and what the run
/// needs to know of the processor.
#[derive(Debug)]
pub struct Ready<V, M> {
    /// The current VMCS, every field VM entry checks written.
    pub vmcs: V,
    /// The CR0/CR4 guest/host masks and fixed bits.
    pub cr: CrConfig,
    /// The processor's EPT.
    pub ept: EptCaps,
    /// What the processor offers the policy.
    pub policy: PolicyCaps,
    /// [`Prepared::memory`].
    pub memory: M,
    /// The console's timer, as the processor offers it.
    pub timer: ConsoleTimer,
}

/// A VMX instruction failure at `step`.
fn failed(step: VmxStep) -> impl Fn(VmFail) -> LaunchError {
    move |err| LaunchError::Vmx { op: step, err }
}

/// Brings VMX up on `cpu` for `guest`: the capability probe, the EPT
/// capabilities, [`Platform::prepare`], CR0/CR4 and VMXON, VMCLEAR and
/// VMPTRLD, INVEPT, then the VMCS (host state read now, with CR4.VMXE
/// set; controls; guest state; HOST_RSP). A refused probe returns
/// [`LaunchError::Unavailable`] before anything is allocated or changed.
pub fn bring_up<C: VmxRoot, P: Platform>(
    cpu: &mut C,
    platform: &mut P,
    guest: &GuestEntry,
) -> Result<Ready<C::Vmcs, P::Memory>, LaunchError> {
    let caps = check::probe(cpu)?;
    for w in caps.warnings.iter() {
        log::warn!("okernel: {w}");
    }
    let ept_caps = EptCaps::from_msrs(
        caps.ept.0,
        cpu.read_msr(msrs::IA32_VMX_PROCBASED_CTLS2),
        max_phys_addr_bits(cpu),
    )
    .map_err(LaunchError::Ept)?;
    let prepared = platform.prepare(&caps, ept_caps)?;

    let mut vmcs = enter_vmx_root(cpu, &caps, prepared.vmxon, prepared.vmcs)?;
    let invept = if caps.ept.invept_all_context() {
        InveptKind::AllContext
    } else {
        InveptKind::SingleContext(prepared.eptp)
    };
    cpu.invept(invept).map_err(failed(VmxStep::Invept))?;

    let cr = CrConfig::new(caps.cr0_fixed, caps.cr4_fixed);
    let host = host::host_state(cpu, &platform.host_tables());
    let nx = cpu.cpuid(0x8000_0001, 0).edx & CPUID80000001_EDX_NX != 0;
    setup::write_host_state(&mut vmcs, &host).map_err(failed(VmxStep::HostState))?;
    setup::write_controls(
        &mut vmcs,
        &caps,
        guest.mode,
        prepared.msr_bitmap,
        prepared.io_bitmaps,
        prepared.eptp,
        &cr,
    )
    .map_err(failed(VmxStep::Controls))?;
    setup::write_guest_state(&mut vmcs, guest, &cr, nx, host.pat)
        .map_err(failed(VmxStep::GuestState))?;
    vmcs.write(HostNatural::Rsp, prepared.host_rsp)
        .map_err(failed(VmxStep::HostRsp))?;

    let policy = policy_caps(cpu, &caps, ept_caps);
    log::info!(
        "okernel: policy: mode-based execute control {}, descriptor-table exiting {}, INVEPT {}, monitor trap flag {}",
        if policy.mbec { "yes" } else { "no" },
        if policy.descriptor_table_exiting {
            "yes"
        } else {
            "no"
        },
        if policy.invept_all {
            "all-context"
        } else {
            "single-context"
        },
        if policy.mtf { "yes" } else { "no" },
    );
    Ok(Ready {
        vmcs,
        cr,
        ept: ept_caps,
        policy,
        memory: prepared.memory,
        timer: ConsoleTimer::new(caps.preemption_timer, caps.mwait_exiting),
    })
}

/// What an application processor's VMCS shares with the bootstrap
/// processor's ([`bring_up_ap`]): the bitmaps, the base view, the CR0/CR4
/// configuration, and the guest entry whose state is written first (and
/// then replaced by the start-up state).
#[derive(Debug, Clone, Copy)]
pub struct ApParams {
    /// The guest's entry on the bootstrap processor.
    pub guest: GuestEntry,
    /// The MSR bitmap (shared: every processor's MSR locks are one page).
    pub msr_bitmap: u64,
    /// I/O bitmaps A and B (shared).
    pub io_bitmaps: (u64, u64),
    /// The base view's EPT pointer (the trusted context's).
    pub eptp: u64,
    /// The CR0/CR4 configuration at bring-up (the policy's pins reach
    /// the VMCS at its first exit, `crate::exit::vmcs_sync`).
    pub cr: CrConfig,
}

/// Brings an application processor's VMCS up, on that processor, already
/// in VMX root operation (parked, `super::park`): CR4.OSXSAVE where XSAVE
/// exists, VMCLEAR and VMPTRLD of `vmcs_region`, INVEPT, then the VMCS as
/// [`bring_up`] writes it with `params`' shared frames and this
/// processor's host state (`tables`), the guest in the wait-for-SIPI
/// activity state ([`crate::vcpu::startup::write_wait_for_sipi`]), and
/// HOST_RSP = `host_rsp`.
pub fn bring_up_ap<C: VmxRoot>(
    cpu: &mut C,
    params: &ApParams,
    vmcs_region: VmxRegion,
    host_rsp: u64,
    tables: &HostTables,
) -> Result<C::Vmcs, LaunchError> {
    let caps = check::probe(cpu)?;
    if cpu.cpuid(1, 0).ecx & CPUID1_ECX_XSAVE != 0 {
        let cr4 = cpu.read_cr4();
        cpu.write_cr4(cr4 | CR4_OSXSAVE);
    }
    cpu.vmclear(vmcs_region).map_err(failed(VmxStep::Vmclear))?;
    let mut vmcs = cpu.vmptrld(vmcs_region).map_err(failed(VmxStep::Vmptrld))?;
    let invept = if caps.ept.invept_all_context() {
        InveptKind::AllContext
    } else {
        InveptKind::SingleContext(params.eptp)
    };
    cpu.invept(invept).map_err(failed(VmxStep::Invept))?;
    let host = host::host_state(cpu, tables);
    let nx = cpu.cpuid(0x8000_0001, 0).edx & CPUID80000001_EDX_NX != 0;
    setup::write_host_state(&mut vmcs, &host).map_err(failed(VmxStep::HostState))?;
    setup::write_controls(
        &mut vmcs,
        &caps,
        params.guest.mode,
        params.msr_bitmap,
        params.io_bitmaps,
        params.eptp,
        &params.cr,
    )
    .map_err(failed(VmxStep::Controls))?;
    setup::write_guest_state(&mut vmcs, &params.guest, &params.cr, nx, host.pat)
        .map_err(failed(VmxStep::GuestState))?;
    crate::vcpu::startup::write_wait_for_sipi(&mut vmcs, &params.cr)
        .map_err(failed(VmxStep::GuestState))?;
    vmcs.write(HostNatural::Rsp, host_rsp)
        .map_err(failed(VmxStep::HostRsp))?;
    Ok(vmcs)
}

/// MAXPHYADDR (CPUID.80000008H:EAX\[7:0\]; 36 when the leaf is missing).
fn max_phys_addr_bits(cpu: &impl Cpu) -> u8 {
    if cpu.cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        cpu.cpuid(0x8000_0008, 0).eax as u8
    } else {
        36
    }
}

/// Applies the VMX fixed bits to CR0/CR4, sets CR4.VMXE (and OSXSAVE when
/// XSAVE exists, so guest XSETBV can be executed for it), executes VMXON,
/// and makes the VMCS current (SDM Vol. 3C §24.7, §24.8, §25.11.3).
fn enter_vmx_root<C: VmxRoot>(
    cpu: &mut C,
    caps: &Capabilities,
    vmxon_region: VmxRegion,
    vmcs_region: VmxRegion,
) -> Result<C::Vmcs, LaunchError> {
    let cr0 = caps.cr0_fixed.apply(cpu.read_cr0());
    cpu.write_cr0(cr0);
    let xsave = cpu.cpuid(1, 0).ecx & CPUID1_ECX_XSAVE != 0;
    let cr4 = caps
        .cr4_fixed
        .apply(cpu.read_cr4() | CR4_VMXE | if xsave { CR4_OSXSAVE } else { 0 });
    cpu.write_cr4(cr4);
    cpu.vmxon(vmxon_region).map_err(failed(VmxStep::Vmxon))?;
    cpu.vmclear(vmcs_region).map_err(failed(VmxStep::Vmclear))?;
    cpu.vmptrld(vmcs_region).map_err(failed(VmxStep::Vmptrld))
}

/// What the processor offers the policy.
fn policy_caps(cpu: &impl Cpu, caps: &Capabilities, ept: EptCaps) -> PolicyCaps {
    PolicyCaps {
        mbec: ept.supports(ept::EptFeatures::MODE_BASED_EXECUTE),
        descriptor_table_exiting: (cpu.read_msr(msrs::IA32_VMX_PROCBASED_CTLS2) >> 32)
            & u64::from(SecondaryProcBased::DESCRIPTOR_TABLE_EXITING.bits())
            != 0,
        invept_all: caps.ept.invept_all_context(),
        cet: cpu.cpuid(0, 0).eax >= 7 && {
            let l7 = cpu.cpuid(7, 0);
            l7.ecx & CPUID7_ECX_CET_SS != 0 || l7.edx & CPUID7_EDX_CET_IBT != 0
        },
        // Allowed-1 settings are the high half (SDM Vol. 3D §A.3.2).
        mtf: (cpu.read_msr(msrs::IA32_VMX_PROCBASED_CTLS) >> 32)
            & u64::from(PrimaryProcBased::MONITOR_TRAP_FLAG.bits())
            != 0,
    }
}
