//! The boot sequence for a Linux guest (`loader::linux`). Everything is
//! planned and validated first ([`linux::layout`]); then the modules move
//! clear of the kernel, the kernel is copied, and:
//! - the ELF vmlinux gets an `hvm_start_info` and is entered at its PVH
//!   entry in 32-bit protected mode with paging off and EBX = the start
//!   info: under okernel in VMX non-root mode (the same unrestricted-guest
//!   entry as a multiboot ELF32 guest), or with `mode=direct` by the
//!   loader itself, which leaves long mode for it ([`arch::protected32`]);
//! - the bzImage gets a zero page (`boot_params`) and identity page
//!   tables and is entered at its 64-bit entry with RSI = the zero page
//!   (Linux/x86 boot protocol, "64-bit Boot Protocol"), under okernel as a
//!   64-bit guest or directly.

use crate::arch;
use crate::boot::{Failure, launch_monitor, load_segments, pool_bytes};
use crate::phys::{self, Identity};
use loader::bootinfo::{BootInfo, Module, PhysMem};
use loader::cmdline::{Mode, Options};
use loader::elf_load::{ImageKind, Occupied};
use loader::handoff::Carve;
use loader::linux::{self, LinuxError, boot_params, start_info};
use log::info;
use okernel::launch::GuestMode;
use okernel::memmap::PhysRange;
use okernel::vmx::regs::{Gpr, GuestRegisters};
use okernel_abi::boot::GuestMemoryKind;

/// Boots the Linux kernel `image` (the first module, `kernel`); returns
/// only on failure.
pub fn run(
    bi: &BootInfo<'_>,
    opts: &Options<'_>,
    kernel: &Module<'_>,
    image: &[u8],
    cmdline: &str,
    smp: Option<&crate::smp::Plan>,
) -> Result<core::convert::Infallible, Failure> {
    let initrd = bi
        .modules()
        .nth(1)
        .ok_or(Failure::Linux(LinuxError::InitrdMissing))?;
    info!(
        "Linux initramfs: {} ({} KiB)",
        initrd.range,
        initrd.range.len() / 1024
    );
    let mut fixed = [Occupied {
        what: "the okernel image",
        range: phys::image_range(),
    }; 4];
    let mut n = 1;
    for r in bi.info_ranges.iter().flatten() {
        fixed[n] = Occupied {
            what: "the boot information",
            range: *r,
        };
        n += 1;
    }
    if let Some(p) = smp {
        fixed[n] = Occupied {
            what: "the other processors' start-up page",
            range: p.page(),
        };
        n += 1;
    }
    let layout = linux::layout(
        image,
        kernel.range,
        initrd.range,
        &bi.memory,
        &fixed[..n],
        pool_bytes(smp),
    )
    .map_err(Failure::Linux)?;
    let plan = &layout.plan;
    linux::check_handover(image, plan, cmdline, bi.rsdp).map_err(Failure::Linux)?;
    info!(
        "Linux {}: loads at {}",
        match plan.kind {
            ImageKind::LinuxBzImage => "bzImage (boot protocol)",
            _ => "vmlinux (PVH)",
        },
        plan.extent
    );

    // Nothing was written so far; from here on the plan holds. The
    // initramfs moves first: its destination avoids the kernel module.
    for m in [layout.initrd_move, layout.kernel_move]
        .into_iter()
        .flatten()
    {
        info!("moving a module from {} to {}", m.from, m.to);
        // SAFETY: `layout` placed `m.to` in usable RAM clear of this image,
        // the boot information, both modules and the kernel's load range.
        unsafe { phys::copy(m.from, m.to) }.ok_or(Failure::ModuleUnreadable(m.to))?;
    }
    let source = layout.kernel_source(kernel.range);
    let image = Identity
        .bytes(source.start, source.len() as usize)
        .ok_or(Failure::ModuleUnreadable(source))?;
    // SAFETY: the plan checked that every destination is usable RAM clear
    // of this image, the boot information and the other segments; the
    // vmlinux is read from `source`, which `layout` placed clear of the
    // load range.
    unsafe { load_segments(plan, image) }?;

    let carves = [
        Carve {
            range: phys::image_range(),
            kind: GuestMemoryKind::Monitor,
        },
        Carve {
            range: layout.area,
            kind: GuestMemoryKind::BootData,
        },
        Carve {
            range: layout.pool,
            kind: GuestMemoryKind::Monitor,
        },
        Carve {
            range: smp.map_or(PhysRange::new(0, 0), |p| p.page()),
            kind: GuestMemoryKind::Monitor,
        },
    ];
    let carves = &carves[..if smp.is_some() { 4 } else { 3 }];
    // SAFETY: `layout.area` was placed in usable RAM clear of everything
    // in use.
    let area =
        unsafe { phys::bytes_mut(layout.area) }.ok_or(Failure::ModuleUnreadable(layout.area))?;
    let contents = start_info::Contents {
        firmware: &bi.memory,
        carves,
        cmdline,
        initrd: layout.initrd,
        rsdp: bi.rsdp,
    };
    info!(
        "Linux initramfs at {}, ACPI RSDP {}, frame pool {}",
        layout.initrd,
        if bi.rsdp.is_some() {
            "from the boot loader"
        } else {
            "left to Linux's scan"
        },
        layout.pool
    );
    let mut regs = GuestRegisters::default();
    let mode = if plan.kind == ImageKind::LinuxBzImage {
        let area = <&mut [u8; boot_params::AREA_SIZE]>::try_from(area)
            .map_err(|_| Failure::ModuleUnreadable(layout.area))?;
        let (cr3, zero_page) = boot_params::build(area, layout.area.start, image, plan, &contents)
            .map_err(Failure::Linux)?;
        info!(
            "Linux boot_params at {zero_page:#x}, 64-bit entry {:#x}",
            plan.entry
        );
        if opts.mode == Mode::Direct {
            info!("Linux hand-off at TSC {}", arch::tsc());
            log::warn!(
                "mode=direct: entering Linux at {:#x} in 64-bit mode with NO monitor: \
                 nothing is protected",
                plan.entry
            );
            // SAFETY: the entry is the 64-bit entry of the kernel just
            // loaded and validated; CR3 identity-maps the first 4 GiB, this
            // code, the kernel, the zero page and the initramfs included.
            unsafe { enter_64(plan.entry, cr3, zero_page) }
        }
        regs.gpr[Gpr::Rsi as usize] = zero_page;
        GuestMode::Long64 { cr3 }
    } else {
        let area = <&mut [u8; start_info::AREA_SIZE]>::try_from(area)
            .map_err(|_| Failure::ModuleUnreadable(layout.area))?;
        let info = start_info::build(area, layout.area.start, &contents)
            .map_err(|e| Failure::Linux(LinuxError::StartInfo(e)))?;
        info!("Linux start info at {info:#x}, PVH entry {:#x}", plan.entry);
        if opts.mode == Mode::Direct {
            info!("Linux hand-off at TSC {}", arch::tsc());
            log::warn!(
                "mode=direct: entering Linux at {:#x} in 32-bit protected mode with NO monitor: \
                 nothing is protected",
                plan.entry
            );
            // SAFETY: the entry lies in the kernel just loaded and validated
            // (`layout`, below 4 GiB), the start info describes memory in
            // which this image and the pool are reserved, and nothing of the
            // loader runs after the jump.
            unsafe { arch::protected32::enter(plan.entry as u32, info as u32) }
        }
        regs.gpr[Gpr::Rbx as usize] = info;
        GuestMode::Protected32
    };
    info!(
        "starting okernel: Linux entry {:#x} in VMX non-root mode ({})",
        plan.entry,
        match mode {
            GuestMode::Protected32 => "32-bit protected mode, EBX = start info",
            GuestMode::Long64 { .. } => "64-bit mode, RSI = boot_params",
        }
    );
    info!("Linux hand-off at TSC {}", arch::tsc());
    launch_monitor(bi, mode, plan.entry, regs, layout.pool, smp)
}

/// Switches to the page tables at `cr3` and jumps to a Linux 64-bit entry
/// with RSI = the zero page (boot protocol: "64-bit Boot Protocol").
///
/// # Safety
///
/// `entry` must be the 64-bit entry of a loaded bzImage whose zero page is
/// at `zero_page`; the tables at `cr3` must identity-map it, the kernel's
/// load range and this code.
unsafe fn enter_64(entry: u64, cr3: u64, zero_page: u64) -> ! {
    use x86_64::PhysAddr;
    use x86_64::registers::control::{Cr3, Cr3Flags};
    use x86_64::structures::paging::PhysFrame;
    let frame = PhysFrame::from_start_address(PhysAddr::new(cr3))
        .unwrap_or_else(|_| panic!("boot page tables at {cr3:#x} are not page-aligned"));
    // SAFETY: forwarded from the caller: the new tables identity-map the
    // first 4 GiB, this code included.
    unsafe { Cr3::write(frame, Cr3Flags::empty()) };
    // SAFETY: forwarded from the caller; SysV puts the second argument in
    // RSI, where the boot protocol wants the zero page; it never returns.
    let kernel: extern "sysv64" fn(u64, u64) -> ! = unsafe { core::mem::transmute(entry as usize) };
    kernel(0, zero_page)
}
