//! Bring-up and the run loop: what [`launch()`] does, in order.
//!
//! 1. Capability checks ([`crate::check::probe`]), which also enable VMX in
//!    IA32_FEATURE_CONTROL when it is unlocked. A refusal ends the run
//!    through the loader's `report` callback with
//!    [`Outcome::VmxUnavailable`] and the named reason.
//! 2. Frames from the pool: VMXON region, VMCS (revision identifier from
//!    IA32_VMX_BASIC), MSR bitmap, host stack; the rest feeds the EPT.
//! 3. The base EPT view ([`ept_view::build_base_view`]).
//! 4. CR0/CR4 fixed bits applied, CR4.VMXE (and CR4.OSXSAVE when XSAVE
//!    exists, so guest XSETBV can be executed for it), VMXON, VMCLEAR,
//!    VMPTRLD, INVEPT.
//! 5. VMCS host state (read from the CPU), controls, guest state.
//! 6. Switch to the monitor's stack and run: VMLAUNCH, then exit handling
//!    and VMRESUME until the guest ends the run or a fatal exit happens,
//!    either of which prints the exit counters and calls `report`.

pub mod config;
pub mod ept_view;
pub mod frames;
pub mod host;
pub mod park;
mod run;
pub mod seam;
pub mod setup;

use core::convert::Infallible;

use okernel_abi::result::Outcome;

pub use self::config::{
    DescriptorTable, GuestEntry, GuestMode, HOST_STACK_BYTES, LaunchConfig, LaunchError,
    MIN_POOL_BYTES, ReportFn,
};
use self::ept_view::PoolFrames;
use self::frames::{FRAME, FramePool};
use crate::arch;
use crate::bits::{CR4_OSXSAVE, CR4_VMXE};
use crate::check::{self, Capabilities};
use crate::fmt::FixedString;
use crate::hw::msr_bitmap_page::MsrBitmapPage;
use crate::hw::phys::IdentityMap;
use crate::hw::real::{RealCpu, RealVmcs};
use crate::hw::{Cpu, InveptKind, Vmcs};
use crate::mem::{MAX_MONITOR_RANGES, MAX_RAM_RANGES, ViewMemory};
/// The memory map the loader hands over ([`LaunchConfig`]).
pub use crate::memmap::{MemoryKind, MemoryRange, PhysRange};
use crate::msrs;
use crate::policy::Protection;
use crate::policy::protection::PolicyCaps;
use crate::vcpu::CrConfig;
use crate::vmx::controls::{PrimaryProcBased, SecondaryProcBased};
use crate::vmx::fields::HostNatural;

/// Checks the configuration before anything is touched.
pub fn validate(config: &LaunchConfig<'_>) -> Result<(), LaunchError> {
    let p = config.frame_pool;
    let bad = |why| {
        Err(LaunchError::BadFramePool {
            start: p.start,
            end: p.end,
            why,
        })
    };
    if !p.start.is_multiple_of(FRAME) || !p.end.is_multiple_of(FRAME) || p.start == 0 {
        return bad("not 4 KiB aligned (or at address 0)");
    }
    if p.is_empty() || p.len() < MIN_POOL_BYTES {
        return bad("smaller than MIN_POOL_BYTES");
    }
    if p.end > 1 << 32 {
        return bad("not below 4 GiB (the loader's identity map)");
    }
    if config
        .memory_map
        .iter()
        .any(|m| m.kind == MemoryKind::Ram && m.range.is_empty())
    {
        return Err(LaunchError::BadGuest("empty RAM range in the memory map"));
    }
    let ram_ranges = config
        .memory_map
        .iter()
        .filter(|m| m.kind == MemoryKind::Ram)
        .count();
    if ram_ranges > MAX_RAM_RANGES {
        return Err(LaunchError::BadGuest(
            "more than 64 RAM ranges in the memory map",
        ));
    }
    if config.monitor_ranges.len() > MAX_MONITOR_RANGES {
        return Err(LaunchError::BadGuest("more than 8 monitor ranges"));
    }
    match config.guest.mode {
        GuestMode::Long64 { cr3 } if !cr3.is_multiple_of(FRAME) || cr3 == 0 => {
            return Err(LaunchError::BadGuest("CR3 not 4 KiB aligned"));
        }
        GuestMode::Protected32 if config.guest.rip > u64::from(u32::MAX) => {
            return Err(LaunchError::BadGuest("32-bit entry point above 4 GiB"));
        }
        _ => {}
    }
    let entry_mapped = config
        .memory_map
        .iter()
        .any(|m| m.kind == MemoryKind::Ram && m.range.contains(config.guest.rip));
    let entry_in_monitor = config
        .monitor_ranges
        .iter()
        .chain(core::iter::once(&config.frame_pool))
        .any(|r| r.page_aligned_outward().contains(config.guest.rip));
    if !entry_mapped || entry_in_monitor {
        return Err(LaunchError::BadGuest("entry point not in guest RAM"));
    }
    Ok(())
}

// The messages of `validate` name these limits.
const _: () = assert!(MAX_RAM_RANGES == 64 && MAX_MONITOR_RANGES == 8);

/// The least stack the exit handler keeps below the [`run::RunState`].
const MIN_HANDLER_STACK: u64 = 32 * 1024;

const _: () = assert!(
    core::mem::size_of::<run::RunState>() as u64 + 64 + MIN_HANDLER_STACK <= HOST_STACK_BYTES
);
const _: () = assert!(core::mem::align_of::<run::RunState>() <= 64);

/// Runs the guest in VMX non-root mode under the base EPT view. Never
/// returns on success: the run ends through `config.report` (the guest's
/// Exit hypercall, a fatal exit, or VMX unavailable — reported as
/// [`Outcome::VmxUnavailable`] with the named reason). Returns an error only
/// for failures before the switch to the monitor stack (bad configuration,
/// pool exhausted, EPT construction, VMXON/VMCS instruction failures); the
/// loader then reports it.
///
/// Must be called once, at CPL0, with interrupts disabled, in long mode
/// with the loader's GDT/IDT/TSS loaded, and with memory as
/// [`LaunchConfig`] documents (the frame pool in particular).
pub fn launch(config: &LaunchConfig<'_>) -> Result<Infallible, LaunchError> {
    validate(config)?;
    // SAFETY: the loader calls `launch` at CPL0 on the bare machine (its
    // documented contract); the handle is used only as `Cpu` documents.
    let mut cpu = unsafe { RealCpu::new() };
    let caps = match check::probe(&mut cpu) {
        Ok(c) => c,
        Err(e) => {
            let msg = FixedString::<160>::from_fmt(format_args!("{e}"));
            log::error!("okernel: VMX unavailable: {msg}");
            (config.report)(Outcome::VmxUnavailable, msg.as_str())
        }
    };
    for w in caps.warnings.iter() {
        log::warn!("okernel: {w}");
    }
    let ept_caps = ept::EptCaps::from_msrs(
        caps.ept.0,
        cpu.read_msr(msrs::IA32_VMX_PROCBASED_CTLS2),
        max_phys_addr_bits(&cpu),
    )
    .map_err(LaunchError::Ept)?;

    // SAFETY: `LaunchConfig::frame_pool`'s documented contract: aligned
    // (checked by `validate`), identity-mapped, writable, exclusive.
    let mut pool = unsafe { FramePool::new(config.frame_pool) };
    let vmxon_region = pool
        .allocate()
        .ok_or(LaunchError::OutOfFrames("VMXON region"))?;
    let vmcs_region = pool.allocate().ok_or(LaunchError::OutOfFrames("VMCS"))?;
    let msr_bitmap = pool
        .allocate()
        .ok_or(LaunchError::OutOfFrames("MSR bitmap"))?;
    let mut io_bitmaps = [0u64; 2];
    for (frame, high) in io_bitmaps.iter_mut().zip([false, true]) {
        *frame = pool
            .allocate()
            .ok_or(LaunchError::OutOfFrames("I/O bitmap"))?;
        let page = crate::exit::io::bitmap(high, &config.platform_ports);
        // SAFETY: a fresh pool frame, exclusively this I/O bitmap from now
        // on (the processor only reads it; the pool is in no EPT view).
        unsafe { (*frame as *mut [u8; 4096]).write(page) };
    }
    // The stack and, right below it, a guard frame the slow exit path
    // checks (`run::RunState::stack_guard`).
    let stack_guard = pool
        .allocate_contiguous(HOST_STACK_BYTES / FRAME + 1)
        .ok_or(LaunchError::OutOfFrames("host stack"))?;
    let stack = stack_guard + FRAME;
    // SAFETY: the lowest frame of a fresh pool allocation (identity-mapped,
    // aligned), the monitor's alone, used as nothing but the guard.
    unsafe { crate::hw::guard::arm(core::ptr::with_exposed_provenance_mut(stack_guard as usize)) };
    for region in [vmxon_region, vmcs_region] {
        // SAFETY: a fresh, zeroed, identity-mapped pool frame; the first
        // dword is the revision identifier (SDM §25.2, §25.11.5).
        unsafe { (region as *mut u32).write(caps.basic.revision_id()) };
    }
    // SAFETY: a fresh pool frame, exclusively the MSR bitmap from now on.
    crate::exit::msr_table::configure_base(unsafe { &mut *(msr_bitmap as *mut [u8; 4096]) });
    // The pool's own state moves into one of its frames, where every
    // view's handle finds it for the rest of the run.
    let home = pool
        .allocate()
        .ok_or(LaunchError::OutOfFrames("frame pool state"))?;
    const _: () = assert!(core::mem::size_of::<FramePool>() <= FRAME as usize);
    const _: () = assert!(core::mem::align_of::<FramePool>() <= FRAME as usize);
    let home = core::ptr::with_exposed_provenance_mut::<FramePool>(home as usize);
    // SAFETY: a fresh, zeroed, page-aligned pool frame (large and aligned
    // enough, asserted above), identity-mapped and used for nothing else.
    unsafe { home.write(pool) };
    // SAFETY: the pool now lives at `home` for the whole run (the frame is
    // never freed) and is used only through these handles, one exit at a
    // time.
    let frames = unsafe { PoolFrames::new(core::ptr::NonNull::new_unchecked(home)) };

    let view = ept_view::build_base_view(
        frames,
        ept_caps,
        config.memory_map,
        config.monitor_ranges,
        config.frame_pool,
    )
    .map_err(LaunchError::Ept)?;
    let eptp = view
        .eptp(ept::MemoryType::WriteBack, false)
        .map_err(LaunchError::Ept)?
        .raw();
    log::info!(
        "okernel: base EPT view built: {} tables, {} frames of the pool left",
        view.frames()
            .pool()
            .allocated()
            .saturating_sub(7 + HOST_STACK_BYTES / FRAME),
        view.frames().pool().available()
    );

    enter_vmx_root(&mut cpu, &caps, vmxon_region, vmcs_region)?;
    let invept = if caps.ept.invept_all_context() {
        InveptKind::AllContext
    } else {
        InveptKind::SingleContext(eptp)
    };
    cpu.invept(invept)
        .map_err(|err| LaunchError::Vmx { op: "INVEPT", err })?;

    let cr = CrConfig::new(caps.cr0_fixed, caps.cr4_fixed);
    // SAFETY: VMX root operation with the VMCS just made current; only
    // this function and then the run loop write it.
    let mut vmcs = unsafe { RealVmcs::current() };
    // SAFETY: the loader's GDT is identity-mapped (its page tables).
    let host = unsafe { host::read_host_state(&cpu) };
    let nx = cpu.cpuid(0x8000_0001, 0).edx & (1 << 20) != 0;
    let vmx = |op| move |err| LaunchError::Vmx { op, err };
    setup::write_host_state(&mut vmcs, &host).map_err(vmx("VMWRITE (host state)"))?;
    setup::write_controls(
        &mut vmcs,
        &caps,
        config.guest.mode,
        msr_bitmap,
        (io_bitmaps[0], io_bitmaps[1]),
        eptp,
        &cr,
    )
    .map_err(vmx("VMWRITE (controls)"))?;
    setup::write_guest_state(&mut vmcs, &config.guest, &cr, nx, host.pat)
        .map_err(vmx("VMWRITE (guest state)"))?;

    // The run state at the top of the host stack, 64-byte aligned (HOST_RSP
    // must be 16-byte aligned for the exit stub's call); the stack proper
    // starts right below it.
    let state_addr =
        (stack + HOST_STACK_BYTES - core::mem::size_of::<run::RunState>() as u64) & !63;
    vmcs.write(HostNatural::Rsp, state_addr)
        .map_err(vmx("VMWRITE (HOST_RSP)"))?;
    // SAFETY: the loader's page tables identity-map the first 4 GiB
    // (`LaunchConfig`), and the monitor runs on them for the whole run.
    let phys = unsafe { IdentityMap::new() };
    let memory = ViewMemory::new(
        view,
        config.memory_map,
        config.monitor_ranges,
        config.frame_pool,
        phys,
    )
    .map_err(|_| LaunchError::BadGuest("too many RAM or monitor ranges"))?;
    // The run's memory type: this memory in production, tracked in a fuzz
    // build (`crate::fuzz::tracked`), where the conversion is not the
    // identity.
    #[allow(clippy::useless_conversion)]
    let memory: run::MonitorMemory = memory.into();
    let policy_caps = PolicyCaps {
        mbec: ept_caps.supports(ept::EptFeatures::MODE_BASED_EXECUTE),
        descriptor_table_exiting: (cpu.read_msr(msrs::IA32_VMX_PROCBASED_CTLS2) >> 32)
            & u64::from(SecondaryProcBased::DESCRIPTOR_TABLE_EXITING.bits())
            != 0,
        invept_all: caps.ept.invept_all_context(),
        cet: cpu.cpuid(0, 0).eax >= 7 && {
            let l7 = cpu.cpuid(7, 0);
            l7.ecx & (1 << 7) != 0 || l7.edx & (1 << 20) != 0
        },
        // Allowed-1 settings are the high half (SDM Vol. 3D §A.3.2).
        mtf: (cpu.read_msr(msrs::IA32_VMX_PROCBASED_CTLS) >> 32)
            & u64::from(PrimaryProcBased::MONITOR_TRAP_FLAG.bits())
            != 0,
    };
    log::info!(
        "okernel: policy: mode-based execute control {}, descriptor-table exiting {}, INVEPT {}, monitor trap flag {}",
        if policy_caps.mbec { "yes" } else { "no" },
        if policy_caps.descriptor_table_exiting {
            "yes"
        } else {
            "no"
        },
        if policy_caps.invept_all {
            "all-context"
        } else {
            "single-context"
        },
        if policy_caps.mtf { "yes" } else { "no" },
    );
    // SAFETY: the MSR bitmap frame is the VMCS's (written by
    // `write_controls`), identity-mapped pool memory used by nothing else.
    let bitmap = unsafe {
        MsrBitmapPage::new(core::ptr::NonNull::new_unchecked(
            core::ptr::with_exposed_provenance_mut::<[u8; 4096]>(msr_bitmap as usize),
        ))
    };
    let policy = Protection::new(policy_caps, Some(bitmap));
    let mut vcpu = run::MonitorVcpu::with_memory(vmcs, cpu, policy, cr, ept_caps, memory);
    vcpu.regs = config.guest.regs;
    vcpu.platform = config.platform_ports;
    let state = core::ptr::with_exposed_provenance_mut::<run::RunState>(state_addr as usize);
    // SAFETY: `state_addr` lies in the host stack (fresh, identity-mapped,
    // exclusive pool memory), suitably aligned (above), with the room the
    // assertion above `launch` guarantees; nothing else uses it.
    unsafe {
        state.write(run::RunState {
            vcpu,
            report: config.report,
            pending: run::Pending::Nothing,
            stack_guard,
        });
    }
    log::info!(
        "okernel: entering the guest at {:#x} in VMX non-root mode",
        config.guest.rip
    );
    // SAFETY: the stack below the run state is pool memory, 16-byte
    // aligned, used by nothing else; `run::monitor_main` never returns;
    // the run state stays valid for the rest of the run (it is never
    // freed).
    unsafe { arch::descriptors::call_on_stack(state.cast(), run::monitor_main, state_addr) }
}

/// MAXPHYADDR (CPUID.80000008H:EAX[7:0]; 36 when the leaf is missing).
fn max_phys_addr_bits(cpu: &impl Cpu) -> u8 {
    if cpu.cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        cpu.cpuid(0x8000_0008, 0).eax as u8
    } else {
        36
    }
}

/// Applies the VMX fixed bits to CR0/CR4, sets CR4.VMXE (and OSXSAVE),
/// executes VMXON, and makes the VMCS current (SDM Vol. 3C §24.7, §24.8).
fn enter_vmx_root(
    cpu: &mut RealCpu,
    caps: &Capabilities,
    vmxon_region: u64,
    vmcs_region: u64,
) -> Result<(), LaunchError> {
    let cr0 = caps.cr0_fixed.apply(cpu.read_cr0());
    cpu.write_cr0(cr0);
    let xsave = cpu.cpuid(1, 0).ecx & (1 << 26) != 0;
    let cr4 = caps
        .cr4_fixed
        .apply(cpu.read_cr4() | CR4_VMXE | if xsave { CR4_OSXSAVE } else { 0 });
    cpu.write_cr4(cr4);
    let vmx = |op| move |err| LaunchError::Vmx { op, err };
    // SAFETY: CR0/CR4 satisfy the fixed bits with VMXE set (just written);
    // the region is a zeroed pool frame with the revision identifier,
    // 4 KiB aligned, never mapped for the guest and used for nothing else.
    unsafe { arch::vmx::vmxon(vmxon_region) }.map_err(vmx("VMXON"))?;
    // SAFETY: VMX root operation; a monitor-owned VMCS region with the
    // revision identifier.
    unsafe { arch::vmx::vmclear(vmcs_region) }.map_err(vmx("VMCLEAR"))?;
    // SAFETY: as above, and now clear.
    unsafe { arch::vmx::vmptrld(vmcs_region) }.map_err(vmx("VMPTRLD"))?;
    Ok(())
}
