//! The boot sequence: parse the boot information, find and validate the
//! guest module, load it, build the hand-off, enter the guest.

use crate::phys::{self, Identity};
use core::fmt;
use loader::bootinfo::PhysMem;
use loader::bootinfo::{self, BootInfo, BootInfoError};
use loader::cmdline::{CmdlineError, Mode, Options};
use loader::elf_load::{self, ElfError, ImageKind, Occupied};
use loader::handoff::{self, Carve, HandoffError};
use loader::linux::LinuxError;
use loader::memmap::{FirmwareKind, MAX_REGIONS};
use log::info;
use okernel::launch::{
    DescriptorTable, GuestEntry, GuestMode, LaunchConfig, MemoryKind, MemoryRange, PhysRange,
};
use okernel::vmx::regs::{Gpr, GuestRegisters};
use okernel_abi::boot::{EntryMode, GuestMemoryKind};
use okernel_abi::result::Outcome;

/// The monitor's frame pool: VMXON region, VMCS, MSR bitmap, host stack,
/// EPT tables.
pub const POOL_BYTES: u64 = 4 << 20;

/// The monitor's frame pool for a machine with `smp`'s processors:
/// [`POOL_BYTES`] and each application processor's VMCS and host stack
/// (`okernel::launch::ap::AP_POOL_BYTES`).
pub fn pool_bytes(smp: Option<&crate::smp::Plan>) -> u64 {
    POOL_BYTES + smp.map_or(0, |p| p.application_processors()) * okernel::launch::ap::AP_POOL_BYTES
}

/// Why the boot stopped; each names its cause.
pub enum Failure {
    /// The boot information was refused.
    BootInfo(BootInfoError),
    /// The command line was refused.
    Cmdline(CmdlineError<'static>),
    /// No guest module was passed.
    NoGuestModule,
    /// The guest module lies outside the identity map.
    ModuleUnreadable(PhysRange),
    /// The guest image was refused.
    Elf(ElfError),
    /// No room for the hand-off area.
    NoRoomForHandoff,
    /// The hand-off could not be built.
    Handoff(HandoffError),
    /// No room for the monitor's frame pool.
    NoRoomForPool,
    /// The monitor refused to start.
    Launch(okernel::LaunchError),
    /// `mode=direct` was asked for a 32-bit guest.
    DirectNeeds64Bit,
    /// The Linux guest was refused.
    Linux(LinuxError),
    /// Not every application processor could be parked.
    Smp(crate::smp::SmpError),
    /// The FADT is malformed: the sleep controls cannot be mediated.
    SleepControls(loader::acpi::AcpiError),
    /// The MCFG is malformed: PCI Express configuration space could not
    /// be kept from the guest.
    Ecam(loader::acpi::AcpiError),
}

impl Failure {
    /// The run's outcome: VMX missing on an application processor is
    /// "VMX unavailable", as on this one; everything else a failure.
    pub fn outcome(&self) -> Outcome {
        match self {
            Failure::Smp(e) if e.vmx_unavailable() => Outcome::VmxUnavailable,
            _ => Outcome::Fail,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::BootInfo(e) => write!(f, "{e}"),
            Failure::Cmdline(e) => write!(f, "{e}"),
            Failure::NoGuestModule => write!(
                f,
                "no guest module: pass the guest kernel as the first boot module \
                 (GRUB `module2`, QEMU `-initrd`)"
            ),
            Failure::ModuleUnreadable(r) => write!(f, "guest module at {r} lies above 4 GiB"),
            Failure::Elf(e) => write!(f, "{e}"),
            Failure::NoRoomForHandoff => write!(f, "no free RAM for the guest hand-off area"),
            Failure::Handoff(e) => write!(f, "{e}"),
            Failure::NoRoomForPool => write!(
                f,
                "no {} KiB of free RAM for the monitor's frame pool",
                POOL_BYTES / 1024
            ),
            Failure::Launch(e) => write!(f, "okernel: {e}"),
            Failure::DirectNeeds64Bit => write!(f, "mode=direct enters only 64-bit (ELF64) guests"),
            Failure::Linux(e) => write!(f, "{e}"),
            Failure::Smp(e) => write!(f, "okernel: {e}"),
            Failure::SleepControls(e) => write!(
                f,
                "okernel: cannot mediate ACPI sleep ({e}): a guest could put the machine to sleep and be resumed outside VMX"
            ),
            Failure::Ecam(e) => write!(
                f,
                "okernel: cannot keep PCI Express configuration (ECAM) from the guest ({e}): it could move BARs and unlock chipset registers around the monitor"
            ),
        }
    }
}

/// Runs the boot sequence; returns only on failure.
pub fn run(magic: u32, info_addr: u32) -> Result<core::convert::Infallible, Failure> {
    let bi = parse_boot_info(magic, info_addr).map_err(Failure::BootInfo)?;
    let opts = Options::parse(bi.cmdline).map_err(Failure::Cmdline)?;
    log::set_max_level(opts.log);
    info!(
        "okernel v{} booted by {} (ABI {}.{})",
        env!("CARGO_PKG_VERSION"),
        bi.protocol.name(),
        okernel_abi::ABI_VERSION.major,
        okernel_abi::ABI_VERSION.minor
    );
    info!("command line: `{}`", bi.cmdline);
    if cfg!(feature = "fuzz") {
        log::error!(
            "TEST BUILD (feature `fuzz`): fuzzing calls enabled; never boot this image in production"
        );
    }
    if cfg!(any(
        feature = "planted-text-writable",
        feature = "planted-pin-ignored",
        feature = "planted-unlock",
        feature = "planted-gate-bypass",
        feature = "planted-no-shootdown",
        feature = "planted-shared-context"
    )) {
        log::error!(
            "TEST BUILD with a DELIBERATE DEFECT (a `planted-*` feature): for the fuzzers' and the SMP rows' proofs only"
        );
    }
    print_memory_map(&bi);

    let module = *bi.modules().next().ok_or(Failure::NoGuestModule)?;
    // The other processors' start-up page, chosen before anything else
    // is placed so that every later placement avoids it (none with
    // `mode=direct`, which parks nothing).
    let smp = if opts.mode == Mode::Direct {
        None
    } else {
        let mut avoid = [phys::image_range(); 3 + bootinfo::MAX_MODULES];
        let mut n = 1;
        for r in bi
            .info_ranges
            .iter()
            .flatten()
            .copied()
            .chain(bi.modules().map(|m| m.range))
        {
            avoid[n] = r;
            n += 1;
        }
        crate::smp::plan(&bi, &avoid[..n]).map_err(Failure::Smp)?
    };
    info!(
        "guest module: {} ({} KiB) `{}`",
        module.range,
        module.range.len() / 1024,
        module.cmdline
    );
    let image = Identity
        .bytes(module.range.start, module.range.len() as usize)
        .ok_or(Failure::ModuleUnreadable(module.range))?;

    let guest_cmdline = if module.cmdline.is_empty() {
        opts.guest_args
    } else {
        module.cmdline
    };
    info!("guest command line: `{guest_cmdline}`");

    if loader::linux::pvh_entry(image).is_some() || loader::linux::is_bzimage(image) {
        return crate::boot_linux::run(&bi, &opts, &module, image, guest_cmdline, smp.as_ref());
    }

    let mut occupied = [Occupied {
        what: "the okernel image",
        range: phys::image_range(),
    }; 6];
    occupied[1] = Occupied {
        what: "the guest module",
        range: module.range,
    };
    let mut n = 2;
    for r in bi.info_ranges.iter().flatten() {
        occupied[n] = Occupied {
            what: "the boot information",
            range: *r,
        };
        n += 1;
    }
    if let Some(p) = &smp {
        occupied[n] = Occupied {
            what: "the other processors' start-up page",
            range: p.page(),
        };
        n += 1;
    }
    let occupied = &occupied[..n];

    let plan = elf_load::plan(image, &bi.memory, occupied).map_err(Failure::Elf)?;
    for (i, seg) in plan.segments().enumerate() {
        info!(
            "guest segment {i}: {} ({} bytes from the file)",
            seg.dest,
            seg.file.len()
        );
    }

    // Place the hand-off area and the monitor's frame pool before writing
    // anything, so a failure leaves memory as it was.
    let mut avoid = [PhysRange::new(0, 0); 8];
    for (a, o) in avoid.iter_mut().zip(occupied) {
        *a = o.range;
    }
    avoid[n] = plan.extent;
    let area = bi
        .memory
        .find_free(handoff::AREA_SIZE as u64, 0x1000, 1 << 20, &avoid[..=n])
        .ok_or(Failure::NoRoomForHandoff)?;
    avoid[n + 1] = area;
    let pool = bi
        .memory
        .find_free(pool_bytes(smp.as_ref()), 0x1000, 1 << 20, &avoid[..n + 2])
        .ok_or(Failure::NoRoomForPool)?;

    // SAFETY: the plan checked that every destination is usable RAM that
    // overlaps neither this image, nor the module, nor the boot
    // information, nor another segment.
    unsafe { load_segments(&plan, image) }?;

    let carves = [
        Carve {
            range: phys::image_range(),
            kind: GuestMemoryKind::Monitor,
        },
        Carve {
            range: plan.extent,
            kind: GuestMemoryKind::GuestImage,
        },
        Carve {
            range: area,
            kind: GuestMemoryKind::BootData,
        },
        Carve {
            range: pool,
            kind: GuestMemoryKind::Monitor,
        },
        Carve {
            range: smp.as_ref().map_or(PhysRange::new(0, 0), |p| p.page()),
            kind: GuestMemoryKind::Monitor,
        },
    ];
    let carves = &carves[..if smp.is_some() { 5 } else { 4 }];
    // SAFETY: `area` was chosen in usable RAM clear of everything in use.
    let bytes = unsafe { phys::bytes_mut(area) }.ok_or(Failure::NoRoomForHandoff)?;
    let bytes: &mut [u8; handoff::AREA_SIZE] =
        bytes.try_into().map_err(|_| Failure::NoRoomForHandoff)?;
    if opts.mode == Mode::Direct {
        return enter_direct(&plan, bytes, area, &bi, carves, guest_cmdline);
    }
    let mut regs = GuestRegisters::default();
    let mode = match plan.kind {
        ImageKind::Elf64 => {
            let (cr3, boot_info) = handoff::build(
                bytes,
                area.start,
                EntryMode::NonRoot,
                &bi.memory,
                carves,
                guest_cmdline,
            )
            .map_err(Failure::Handoff)?;
            regs.gpr[Gpr::Rdi as usize] = boot_info;
            GuestMode::Long64 { cr3 }
        }
        ImageKind::Multiboot32 => {
            // The multiboot2 machine state (specification §3.3): EAX =
            // magic, EBX = information, protected mode, paging off.
            let mbi =
                handoff::build_multiboot2(bytes, area.start, &bi.memory, carves, guest_cmdline)
                    .map_err(Failure::Handoff)?;
            regs.gpr[Gpr::Rax as usize] = u64::from(bootinfo::MULTIBOOT2_MAGIC);
            regs.gpr[Gpr::Rbx as usize] = mbi;
            GuestMode::Protected32
        }
        // `elf_load::plan` never returns it: Linux takes `boot_linux`.
        ImageKind::LinuxPvh | ImageKind::LinuxBzImage => {
            return Err(Failure::Linux(LinuxError::NoPvhNote));
        }
    };

    info!(
        "starting okernel: {} guest entry {:#x} in VMX non-root mode, hand-off at {area}, monitor frame pool {pool}",
        match plan.kind {
            ImageKind::Elf64 => "64-bit",
            ImageKind::Multiboot32 => "multiboot2 32-bit protected-mode",
            ImageKind::LinuxPvh | ImageKind::LinuxBzImage => "Linux",
        },
        plan.entry
    );
    launch_monitor(&bi, mode, plan.entry, regs, pool, smp.as_ref())
}

/// Copies the segments of `plan` from `image` and zeroes the rest of
/// each.
///
/// # Safety
///
/// Every destination must be RAM that nothing else uses (`image`
/// included).
pub unsafe fn load_segments(plan: &elf_load::LoadPlan, image: &[u8]) -> Result<(), Failure> {
    for seg in plan.segments() {
        // SAFETY: forwarded from the caller.
        let dest =
            unsafe { phys::bytes_mut(seg.dest) }.ok_or(Failure::ModuleUnreadable(seg.dest))?;
        let (copied, zeroed) = dest.split_at_mut(seg.file.len());
        copied.copy_from_slice(&image[seg.file.clone()]);
        zeroed.fill(0);
    }
    Ok(())
}

/// How many ranges of device memory above 4 GiB (64-bit BARs, bridge
/// windows: `crate::platform::high_mmio`) the base view maps at most.
pub(crate) const HIGH_MMIO: usize = 16;

/// Starts okernel with the guest entered at `rip` in `mode` with `regs`;
/// the base EPT view maps the firmware memory map plus every hole of it
/// below 4 GiB as MMIO, uncached, and the device memory the PCI scan finds
/// above 4 GiB: the firmware map does not list the MMIO
/// a guest touches (Linux's ACPI RSDP scan of 0xE0000-0xFFFFF, the I/O
/// APIC, HPET and local APIC pages, PCI BARs), and a guest of any kind
/// sees the machine's devices as it would bare (`docs/vmx-core.md`).
pub fn launch_monitor(
    bi: &BootInfo<'_>,
    mode: GuestMode,
    rip: u64,
    regs: GuestRegisters,
    pool: PhysRange,
    smp: Option<&crate::smp::Plan>,
) -> Result<core::convert::Infallible, Failure> {
    let mut holes = [MemoryRange {
        range: PhysRange::new(0, 0),
        kind: MemoryKind::Mmio,
    }; MAX_REGIONS + 1 + HIGH_MMIO];
    let mut n_holes = 0;
    loader::linux::mmio_holes(&bi.memory, 1 << 32, &mut |r| {
        holes[n_holes].range = r;
        n_holes += 1;
    });
    n_holes += crate::platform::high_mmio(&mut holes[n_holes..]);
    let extra = &holes[..n_holes];
    let mut memory = [MemoryRange {
        range: PhysRange::new(0, 0),
        kind: MemoryKind::Reserved,
    }; 2 * MAX_REGIONS + 1 + HIGH_MMIO];
    let firmware = bi.memory.regions().iter().map(|r| MemoryRange {
        range: r.range,
        kind: match r.kind {
            FirmwareKind::Usable => MemoryKind::Ram,
            _ => MemoryKind::Reserved,
        },
    });
    let mut n = 0;
    for (m, r) in memory.iter_mut().zip(firmware.chain(extra.iter().copied())) {
        *m = r;
        n += 1;
    }
    let mut monitor = [PhysRange::new(0, 0); 2 + crate::platform::ECAM_WINDOWS];
    monitor[0] = phys::image_range();
    let mut n_monitor = 1;
    if let Some(page) = smp.map(|p| p.page()) {
        monitor[n_monitor] = page;
        n_monitor += 1;
    }
    let ecam = crate::platform::hide_ecam(bi)?;
    for (start, end) in ecam.into_iter().flatten() {
        monitor[n_monitor] = PhysRange { start, end };
        n_monitor += 1;
    }
    let monitor = &monitor[..n_monitor];
    let config = LaunchConfig {
        guest: GuestEntry {
            mode,
            rip,
            rsp: 0,
            regs,
            gdtr: DescriptorTable { base: 0, limit: 0 },
            idtr: DescriptorTable { base: 0, limit: 0 },
        },
        memory_map: &memory[..n],
        monitor_ranges: monitor,
        frame_pool: pool,
        platform_ports: crate::platform::platform_ports(bi, ecam.iter().any(Option::is_some))?,
        report: report_outcome,
        application_processors: 0,
    };
    okernel::launch::validate(&config).map_err(Failure::Launch)?;
    // Every other processor into VMX root first: once the guest runs, an
    // INIT-SIPI-SIPI of its own would start one outside the monitor. The
    // monitor then has each join the run (`okernel::launch::ap`).
    let mut config = config;
    if let Some(plan) = smp {
        let parked = crate::smp::park(plan).map_err(Failure::Smp)?;
        // The pool holds frames for the processors the MADT lists
        // (`pool_bytes`); one it does not list that parked too stays
        // parked (it gets no frames, `okernel::launch::ap`).
        config.application_processors = parked.min(plan.application_processors() as usize);
    }
    okernel::launch(&config).map_err(Failure::Launch)
}

/// `mode=direct`: enters a 64-bit guest in root mode with no monitor.
/// Nothing is protected; this exists to debug the boot path on machines
/// without VMX and to run the guest's negative controls.
fn enter_direct(
    plan: &elf_load::LoadPlan,
    area_bytes: &mut [u8; handoff::AREA_SIZE],
    area: PhysRange,
    bi: &BootInfo<'_>,
    carves: &[Carve],
    cmdline: &str,
) -> Result<core::convert::Infallible, Failure> {
    if plan.kind != ImageKind::Elf64 {
        return Err(Failure::DirectNeeds64Bit);
    }
    let (cr3, boot_info) = handoff::build(
        area_bytes,
        area.start,
        EntryMode::Direct,
        &bi.memory,
        carves,
        cmdline,
    )
    .map_err(Failure::Handoff)?;
    log::warn!(
        "mode=direct: entering the guest at {:#x} in VMX root mode with NO monitor: nothing is protected",
        plan.entry
    );
    // SAFETY: the entry lies in a segment just loaded from a validated
    // ELF64 x86-64 image; CR3 points at the hand-off's identity tables for
    // the first 4 GiB, which also map this code.
    unsafe { jump_to_guest(plan.entry, cr3, boot_info) }
}

/// Switches to the hand-off page tables and jumps to a 64-bit guest entry
/// with RDI = the boot information.
///
/// # Safety
///
/// `entry` must be the entry of a loaded guest image mapped by the page
/// tables at `cr3`, which must also map the code doing the switch.
unsafe fn jump_to_guest(entry: u64, cr3: u64, boot_info: u64) -> ! {
    use x86_64::PhysAddr;
    use x86_64::registers::control::{Cr3, Cr3Flags};
    use x86_64::structures::paging::PhysFrame;
    let frame = PhysFrame::from_start_address(PhysAddr::new(cr3))
        .unwrap_or_else(|_| panic!("hand-off page tables at {cr3:#x} are not page-aligned"));
    // SAFETY: forwarded from the caller: the new tables identity-map the
    // first 4 GiB, this code included.
    unsafe { Cr3::write(frame, Cr3Flags::empty()) };
    // SAFETY: forwarded from the caller; the guest entry ABI is SysV with
    // the BootInfo address in RDI, and it never returns.
    let guest: extern "sysv64" fn(u64) -> ! = unsafe { core::mem::transmute(entry as usize) };
    guest(boot_info)
}

/// The monitor's way to end the run.
fn report_outcome(outcome: Outcome, detail: &str) -> ! {
    if !crate::arch::stack_guard_intact() {
        log::error!(
            "the loader's boot stack overflowed into its guard page: the identity map below it may be damaged"
        );
    }
    okernel_console::report(outcome, format_args!("{detail}"))
}

fn parse_boot_info(magic: u32, addr: u32) -> Result<BootInfo<'static>, BootInfoError> {
    match magic {
        bootinfo::MULTIBOOT2_MAGIC => {
            // SAFETY: a multiboot2 loader put the structure at `addr`, in
            // identity-mapped memory below 4 GiB that no one writes again.
            unsafe { bootinfo::parse_multiboot2(addr as usize as *const _) }
        }
        bootinfo::PVH_MAGIC => bootinfo::parse_pvh(&Identity, u64::from(addr)),
        other => Err(BootInfoError::UnknownProtocol(other)),
    }
}

fn print_memory_map(bi: &BootInfo<'_>) {
    info!("memory map ({} regions):", bi.memory.regions().len());
    for r in bi.memory.regions() {
        info!(
            "  {} {:>8} KiB  {}",
            r.range,
            r.range.len() / 1024,
            r.kind.name()
        );
    }
}
