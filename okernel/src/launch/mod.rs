//! Bring-up and the run loop: what [`launch()`] does, in order.
//!
//! Steps 1–5 are [`bringup::bring_up`], generic over the hardware
//! ([`crate::hw::VmxRoot`], [`bringup::Platform`]) and host-tested step by
//! step; step 6 is what only the machine can do.
//!
//! 1. Capability checks ([`crate::check::probe`]), which also enable VMX in
//!    IA32_FEATURE_CONTROL when it is unlocked. A refusal ends the run
//!    through the loader's `report` callback with
//!    [`Outcome::VmxUnavailable`] and the named reason.
//! 2. Frames from the pool: VMXON region, VMCS (revision identifier from
//!    IA32_VMX_BASIC), MSR bitmap, host stack; the rest feeds the EPT
//!    (`platform`).
//! 3. The base EPT view ([`ept_view::build_base_view`]).
//! 4. CR0/CR4 fixed bits applied, CR4.VMXE (and CR4.OSXSAVE when XSAVE
//!    exists, so guest XSETBV can be executed for it), VMXON, VMCLEAR,
//!    VMPTRLD, INVEPT.
//! 5. VMCS host state (read from the CPU), controls, guest state, HOST_RSP.
//! 6. Switch to the monitor's stack and run: VMLAUNCH, then exit handling
//!    and VMRESUME until the guest ends the run or a fatal exit happens,
//!    either of which prints the exit counters and calls `report`.

pub mod ap;
pub mod bringup;
pub mod config;
pub mod ept_view;
pub mod frames;
pub mod host;
pub mod park;
mod platform;
pub mod presence;
mod run;
pub mod seam;
pub mod setup;

pub use self::run::print_unprinted_audit_lines;

use core::convert::Infallible;

use okernel_abi::result::Outcome;

pub use self::config::{
    DescriptorTable, GuestEntry, GuestMode, HOST_STACK_BYTES, LaunchConfig, LaunchError,
    MIN_POOL_BYTES, ReportFn, VmxStep,
};
use self::frames::FRAME;
use self::platform::{PoolMemory, PoolPlatform};
use crate::arch;
use crate::fmt::FixedString;
use crate::hw::Vmcs;
use crate::hw::msr_bitmap_page::MsrBitmapPage;
use crate::hw::phys::IdentityMap;
use crate::hw::real::RealCpu;
use crate::mem::{MAX_MONITOR_RANGES, MAX_RAM_RANGES, ViewMemory};
/// The memory map the loader hands over ([`LaunchConfig`]).
pub use crate::memmap::{MemoryKind, MemoryRange, PhysRange};
use crate::policy::Protection;
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
    if config.application_processors > ap::MAX_APS {
        return Err(LaunchError::BadGuest(
            "more than 63 application processors (ap::MAX_APS)",
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

/// The least stack the exit handler keeps below the [`run::CpuFrame`].
const MIN_HANDLER_STACK: u64 = 32 * 1024;

const _: () = assert!(
    core::mem::size_of::<run::SharedRun>() as u64
        + core::mem::size_of::<run::CpuFrame>() as u64
        + 128
        + MIN_HANDLER_STACK
        <= HOST_STACK_BYTES
);
const _: () = assert!(
    core::mem::size_of::<run::CpuFrame>() as u64 + 64 + MIN_HANDLER_STACK <= ap::AP_STACK_BYTES
);
const _: () = assert!(core::mem::align_of::<run::SharedRun>() <= 64);
const _: () = assert!(core::mem::align_of::<run::CpuFrame>() <= 64);

/// How long the bootstrap processor waits for the application processors
/// to join, in TSC ticks (about 0.3 s at 3 GHz; in Bochs, where the TSC
/// counts instructions, longer). One that has not joined by then stays
/// parked.
const AP_PATIENCE_TICKS: u64 = 1 << 30;

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
    // documented contract); the handle is used only as `Cpu` and
    // `VmxRoot` document (by `bringup::bring_up` and the run loop).
    let mut cpu = unsafe { RealCpu::new() };
    // SAFETY: `LaunchConfig`'s documented contract (the frame pool checked
    // by `validate`), the loader's GDT is identity-mapped, and this is the
    // only platform of the run (`bring_up` prepares it once).
    let mut platform = unsafe { PoolPlatform::new(config) };
    let ready = match bringup::bring_up(&mut cpu, &mut platform, &config.guest) {
        Ok(ready) => ready,
        Err(LaunchError::Unavailable(e)) => {
            let msg = FixedString::<160>::from_fmt(format_args!("{e}"));
            log::error!("okernel: VMX unavailable: {msg}");
            (config.report)(Outcome::VmxUnavailable, msg.as_str())
        }
        Err(e) => return Err(e),
    };
    let PoolMemory {
        view,
        msr_bitmap,
        run_addr,
        frame_addr,
        io_bitmaps,
        eptp,
        aps,
    } = ready.memory;

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
    // SAFETY: the MSR bitmap frame is the VMCS's (written by
    // `write_controls`), identity-mapped pool memory used by nothing else.
    let bitmap = unsafe {
        MsrBitmapPage::new(core::ptr::NonNull::new_unchecked(
            core::ptr::with_exposed_provenance_mut::<[u8; 4096]>(msr_bitmap as usize),
        ))
    };
    let policy = Protection::new(ready.policy, Some(bitmap));
    let mut vcpu =
        run::MonitorVcpu::with_memory(ready.vmcs, cpu, policy, ready.cr, ready.ept, memory);
    vcpu.regs = config.guest.regs;
    vcpu.platform = config.platform_ports;
    // Below the warning level no audit line is printed: no ticks for
    // them (the exits hand them to a logger that drops them).
    if log::max_level() >= log::LevelFilter::Warn {
        vcpu.timer = ready.timer;
    }
    let timer = vcpu.timer;
    let run = core::ptr::with_exposed_provenance_mut::<run::SharedRun>(run_addr as usize);
    let frame = core::ptr::with_exposed_provenance_mut::<run::CpuFrame>(frame_addr as usize);
    // SAFETY: `run_addr` and `frame_addr` lie at the top of the host stack
    // (fresh, identity-mapped, exclusive pool memory), suitably aligned
    // (`PoolPlatform::prepare`), with the room the assertion above
    // `launch` guarantees; nothing else uses them yet. `run` is not null:
    // it was just written, and is never freed.
    unsafe {
        run.write(run::SharedRun::new(run::RunState {
            vcpu,
            report: config.report,
            pending: run::Pending::Nothing,
        }));
        frame.write(run::CpuFrame {
            regs: config.guest.regs,
            run: core::ptr::NonNull::new_unchecked(run),
            pending: run::Pending::Nothing,
            own: run::PerCpu::new(timer, crate::vcpu::startup::Startup::Bootstrap),
            cpu: 0,
        });
    }
    run::publish_for_crash_report(run);
    let mut joined = 0;
    // With several processors the VMX-preemption timer is the
    // shootdown's poll (`presence`): without it no AP joins.
    let poll = ready.timer.polling();
    if aps.count() > 0 && poll.is_none() {
        log::warn!(
            "okernel: {} application processor(s) stay parked in VMX root (they run nothing): no VMX-preemption timer or no MWAIT exiting, which the shootdown's poll needs",
            aps.count()
        );
    } else if let Some(poll) = poll.filter(|_| aps.count() > 0) {
        let expected = aps.count();
        let join = ap::Join {
            // SAFETY: just written, never freed.
            run: unsafe { core::ptr::NonNull::new_unchecked(run) },
            kits: aps,
            params: bringup::ApParams {
                guest: config.guest,
                msr_bitmap,
                io_bitmaps,
                eptp,
                cr: ready.cr,
            },
            timer: poll,
            joined: core::sync::atomic::AtomicUsize::new(0),
        };
        joined = ap::publish_and_wait(join, AP_PATIENCE_TICKS);
        // SAFETY: the run state was written above and is never freed; the
        // APs that joined wait for their SIPI, which needs a guest that
        // does not run yet, so the lock is free.
        unsafe {
            let mut state = (*run).lock();
            state.vcpu.policy.running[0] = 1 + joined as u8;
            state.vcpu.joined_aps = joined as u8;
            if joined > 0 {
                state.vcpu.stop_others = Some(run::stop_others);
                trap_xapic_page(&mut state.vcpu);
            }
        }
        if joined == expected {
            log::info!(
                "okernel: {joined} application processor(s) joined: each waits for its SIPI in VMX non-root"
            );
        } else {
            log::warn!(
                "okernel: {joined} of {expected} application processor(s) joined; the others stay parked in VMX root (they run nothing)"
            );
        }
    }
    log::info!(
        "okernel: entering the guest at {:#x} in VMX non-root mode",
        config.guest.rip
    );
    // One processor: the run state's registers at HOST_RSP and the
    // one-processor stub (`run`, no lock); several: this processor's
    // frame and the shared stub.
    // SAFETY: the run state was written above and is never freed; no
    // other processor runs an exit before the guest starts it.
    let solo_regs = unsafe { (&raw mut (*(*run).as_mut_ptr()).vcpu.regs) as u64 };
    let (host_rsp, shared) = if joined > 0 {
        (frame_addr, true)
    } else {
        (solo_regs, false)
    };
    // SAFETY: as above: nothing else uses the run state yet.
    let vmcs = unsafe { &mut (*(*run).as_mut_ptr()).vcpu.vmcs };
    let written = vmcs
        .write(HostNatural::Rsp, host_rsp)
        .and_then(|()| vmcs.write(HostNatural::Rip, arch::run::vm_exit_entry(shared)))
        .and_then(|()| match poll.filter(|_| shared) {
            Some(mut poll) => {
                crate::exit::console_tick::write_controls(vmcs, &mut poll, true)?;
                // SAFETY: the frame was written above; no exit of this
                // processor runs before its VMLAUNCH below.
                unsafe { (*frame).own.timer = poll };
                presence::PRESENCE.entering(0, true);
                Ok(())
            }
            None => Ok(()),
        });
    if let Err(err) = written {
        return Err(LaunchError::Vmx {
            op: VmxStep::HostRsp,
            err,
        });
    }
    // SAFETY: the stack below the frame (below the run state, on one
    // processor) is pool memory, 16-byte aligned, used by nothing else;
    // the entry points never return; the frame and the run state stay
    // valid for the rest of the run (never freed).
    unsafe {
        if shared {
            arch::descriptors::call_on_stack(frame.cast(), run::monitor_main, frame_addr)
        } else {
            let state = (*run).as_mut_ptr().cast::<u8>();
            arch::descriptors::call_on_stack(state, run::monitor_main_solo, frame_addr)
        }
    }
}

/// Write-traps the APIC page while the guest can start the processors that
/// joined (`crate::exit::xapic`), on a processor whose APIC is in xAPIC
/// mode; says what it did.
fn trap_xapic_page(vcpu: &mut run::MonitorVcpu) {
    use crate::hw::Cpu;
    let base = vcpu.cpu.read_msr(crate::msrs::IA32_APIC_BASE);
    let Some(page) = crate::exit::xapic::xapic_page(base) else {
        log::info!("okernel: the APIC is not in xAPIC mode: its page is not trapped");
        return;
    };
    let Some(mut env) = crate::hypercall::policy::Env::of(vcpu) else {
        return;
    };
    match env.open_xapic_trap(page) {
        Ok(true) => log::info!(
            "okernel: the xAPIC page at {page:#x} is write-trapped until every processor started or an untrusted context exists"
        ),
        Ok(false) => log::warn!(
            "okernel: the guest's view does not map the xAPIC page at {page:#x} writable: not trapped"
        ),
        Err(e) => log::warn!("okernel: trapping the xAPIC page at {page:#x} failed: {e:?}"),
    }
}
