//! The machine's [`Platform`]: the monitor's memory from the loader's
//! frame pool (VMXON region, VMCS, MSR and I/O bitmaps, the host stack
//! with its guard frame, the base EPT view) and the host's descriptor
//! tables as this processor has them loaded. The raw-memory half of
//! bring-up; the order of the steps is [`super::bringup`]'s.

use super::ap::{AP_STACK_BYTES, ApKit, ApKits};
use super::bringup::{Platform, Prepared};
use super::config::{HOST_STACK_BYTES, LaunchConfig, LaunchError};
use super::ept_view::{self, PoolFrames};
use super::frames::{FRAME, FramePool};
use super::host::{self, HostTables};
use super::run::{CpuFrame, SharedRun};
use crate::check::Capabilities;
use crate::hw::VmxRegion;
use crate::hw::guard::HOST_GUARD_PAGES;

/// The frame pool and the descriptor tables of [`LaunchConfig`].
pub(super) struct PoolPlatform<'c, 'a> {
    config: &'c LaunchConfig<'a>,
}

impl<'c, 'a> PoolPlatform<'c, 'a> {
    /// The platform `config` describes.
    ///
    /// # Safety
    /// `config` satisfies [`LaunchConfig`]'s documented contract (the
    /// frame pool in particular: aligned, checked by `validate`;
    /// identity-mapped, writable, exclusive), the loader's GDT is mapped,
    /// the processor runs at CPL0 on the loader's identity map, whose page
    /// tables are monitor memory (`prepare` unmaps the host stack's guard
    /// page in them), and [`Platform::prepare`] is called at most once.
    pub(super) unsafe fn new(config: &'c LaunchConfig<'a>) -> Self {
        Self { config }
    }
}

/// What the run keeps of the pool.
pub(super) struct PoolMemory {
    /// The base EPT view.
    pub(super) view: ept::View<PoolFrames>,
    /// The MSR bitmap frame.
    pub(super) msr_bitmap: u64,
    /// Where the run's shared state goes (the top of the host stack).
    pub(super) run_addr: u64,
    /// HOST_RSP: where this processor's [`CpuFrame`] goes.
    pub(super) frame_addr: u64,
    /// I/O bitmaps A and B (the application processors' VMCS use them too).
    pub(super) io_bitmaps: (u64, u64),
    /// The base view's EPT pointer.
    pub(super) eptp: u64,
    /// The application processors' VMCS regions and stacks.
    pub(super) aps: ApKits,
}

/// A host stack of `bytes` from `pool` and, right below it, guard frames
/// made not present in the monitor's page tables (`crate::hw::guard`): an
/// overflow faults there before it reaches the frames below. Returns the
/// stack's lowest address.
fn guarded_stack(pool: &mut FramePool, bytes: u64, what: &'static str) -> Result<u64, LaunchError> {
    let stack_guard = pool
        .allocate_contiguous(bytes / FRAME + HOST_GUARD_PAGES)
        .ok_or(LaunchError::OutOfFrames(what))?;
    let mut guard_tables = [0; HOST_GUARD_PAGES as usize];
    for table in &mut guard_tables {
        *table = pool
            .allocate()
            .ok_or(LaunchError::OutOfFrames("guard page table"))?;
    }
    // SAFETY: `PoolPlatform::new`'s contract: CPL0 on the loader's
    // identity map, whose tables are monitor memory (shared by every
    // processor); the guard is the lowest frames of a fresh pool
    // allocation, used as nothing but the guard, and `guard_tables` fresh
    // zeroed pool frames given up for good.
    unsafe { crate::hw::guard::unmap(stack_guard, guard_tables) }.map_err(LaunchError::Guard)?;
    Ok(stack_guard + HOST_GUARD_PAGES * FRAME)
}

/// Where a [`CpuFrame`] goes right below `top`: 64-byte aligned.
fn frame_below(top: u64) -> u64 {
    (top - core::mem::size_of::<CpuFrame>() as u64) & !63
}

impl Platform for PoolPlatform<'_, '_> {
    type Memory = PoolMemory;

    fn prepare(
        &mut self,
        caps: &Capabilities,
        ept_caps: ept::EptCaps,
    ) -> Result<Prepared<PoolMemory>, LaunchError> {
        let config = self.config;
        // SAFETY: `PoolPlatform::new`'s contract: the pool is aligned,
        // identity-mapped, writable, exclusive, and this is its only pool.
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
            // SAFETY: a fresh pool frame, exclusively this I/O bitmap from
            // now on (the processor only reads it; the pool is in no EPT
            // view).
            unsafe { (*frame as *mut [u8; 4096]).write(page) };
        }
        let stack = guarded_stack(&mut pool, HOST_STACK_BYTES, "host stack")?;
        // Each application processor's VMCS and host stack
        // (`super::ap`), from the pool now, before the EPT takes the rest.
        let mut aps = ApKits::default();
        for kit in aps.kits.iter_mut().take(config.application_processors) {
            let vmcs = pool
                .allocate()
                .ok_or(LaunchError::OutOfFrames("application processor VMCS"))?;
            // SAFETY: a fresh, zeroed, identity-mapped pool frame; the
            // first dword is the revision identifier (SDM §25.2).
            unsafe { (vmcs as *mut u32).write(caps.basic.revision_id()) };
            let stack = guarded_stack(&mut pool, AP_STACK_BYTES, "application processor stack")?;
            *kit = Some(ApKit {
                // SAFETY: as for the VMCS region below.
                vmcs: unsafe { VmxRegion::new(vmcs) },
                frame_addr: frame_below(stack + AP_STACK_BYTES),
            });
        }
        for region in [vmxon_region, vmcs_region] {
            // SAFETY: a fresh, zeroed, identity-mapped pool frame; the
            // first dword is the revision identifier (SDM §25.2, §25.11.5).
            unsafe { (region as *mut u32).write(caps.basic.revision_id()) };
        }
        // SAFETY: a fresh pool frame, exclusively the MSR bitmap from now on.
        crate::exit::msr_table::configure_base(unsafe { &mut *(msr_bitmap as *mut [u8; 4096]) });
        // Every frame so far (and the pool's home below) is the monitor's
        // own; the EPT tables come after.
        let own_frames = pool.allocated() + 1;
        // The pool's own state moves into one of its frames, where every
        // view's handle finds it for the rest of the run.
        let home = pool
            .allocate()
            .ok_or(LaunchError::OutOfFrames("frame pool state"))?;
        const _: () = assert!(core::mem::size_of::<FramePool>() <= FRAME as usize);
        const _: () = assert!(core::mem::align_of::<FramePool>() <= FRAME as usize);
        let home = core::ptr::with_exposed_provenance_mut::<FramePool>(home as usize);
        // SAFETY: a fresh, zeroed, page-aligned pool frame (large and
        // aligned enough, asserted above), identity-mapped and used for
        // nothing else.
        unsafe { home.write(pool) };
        // SAFETY: the pool now lives at `home` for the whole run (the frame
        // is never freed) and is used only through these handles, one exit
        // at a time.
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
            view.frames().pool().allocated().saturating_sub(own_frames),
            view.frames().pool().available()
        );
        // The run state at the top of the host stack and this
        // processor's frame right below it, each 64-byte aligned (HOST_RSP
        // must be 16-byte aligned for the exit stub's call); the stack
        // proper starts below the frame.
        let run_addr = (stack + HOST_STACK_BYTES - core::mem::size_of::<SharedRun>() as u64) & !63;
        let frame_addr = frame_below(run_addr);
        Ok(Prepared {
            // SAFETY: fresh, zeroed, aligned pool frames with the revision
            // identifier (written above); the pool is in no EPT view and
            // nothing else uses them.
            vmxon: unsafe { VmxRegion::new(vmxon_region) },
            // SAFETY: as for the VMXON region.
            vmcs: unsafe { VmxRegion::new(vmcs_region) },
            msr_bitmap,
            io_bitmaps: (io_bitmaps[0], io_bitmaps[1]),
            eptp,
            host_rsp: frame_addr,
            memory: PoolMemory {
                view,
                msr_bitmap,
                run_addr,
                frame_addr,
                io_bitmaps: (io_bitmaps[0], io_bitmaps[1]),
                eptp,
                aps,
            },
        })
    }

    fn host_tables(&mut self) -> HostTables {
        // SAFETY: `PoolPlatform::new`'s contract: the loader's GDT is
        // mapped (identity-mapped in its page tables).
        unsafe { host::read_host_tables() }
    }
}
