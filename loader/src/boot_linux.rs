//! The boot sequence for a Linux guest: the ELF vmlinux by its PVH entry
//! (`loader::linux`). Everything is planned and validated first
//! ([`linux::layout`]); then the modules move clear of the kernel, the
//! segments are copied, the `hvm_start_info` is built, and Linux is
//! entered in 32-bit protected mode with paging off and EBX = the start
//! info: under okernel in VMX non-root mode (the same unrestricted-guest
//! entry as a multiboot ELF32 guest), or with `mode=direct` by the
//! loader itself, which leaves long mode for it ([`arch::protected32`]).

use crate::arch;
use crate::boot::{Failure, POOL_BYTES, launch_monitor, load_segments};
use crate::phys::{self, Identity};
use loader::bootinfo::{BootInfo, Module, PhysMem};
use loader::cmdline::{Mode, Options};
use loader::elf_load::Occupied;
use loader::handoff::Carve;
use loader::linux::{self, LinuxError, start_info};
use loader::memmap::MAX_REGIONS;
use log::info;
use okernel::launch::{GuestMode, MemoryKind, MemoryRange, PhysRange};
use okernel::vmx::regs::{Gpr, GuestRegisters};
use okernel_abi::boot::RegionKind;

/// Boots the Linux kernel `image` (the first module, `kernel`); returns
/// only on failure.
pub fn run(
    bi: &BootInfo<'_>,
    opts: &Options<'_>,
    kernel: &Module<'_>,
    image: &[u8],
    cmdline: &str,
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
    }; 3];
    let mut n = 1;
    for r in bi.info_ranges.iter().flatten() {
        fixed[n] = Occupied {
            what: "the boot information",
            range: *r,
        };
        n += 1;
    }
    let layout = linux::layout(
        image,
        kernel.range,
        initrd.range,
        &bi.memory,
        &fixed[..n],
        POOL_BYTES,
    )
    .map_err(Failure::Linux)?;
    let plan = &layout.plan;
    info!(
        "Linux vmlinux: PVH entry {:#x}, loads at {}",
        plan.entry, plan.extent
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
            kind: RegionKind::Monitor,
        },
        Carve {
            range: layout.start_info,
            kind: RegionKind::BootData,
        },
        Carve {
            range: layout.pool,
            kind: RegionKind::Monitor,
        },
    ];
    // SAFETY: `layout.start_info` was placed in usable RAM clear of
    // everything in use.
    let area = unsafe { phys::bytes_mut(layout.start_info) }
        .and_then(|b| <&mut [u8; start_info::AREA_SIZE]>::try_from(b).ok())
        .ok_or(Failure::ModuleUnreadable(layout.start_info))?;
    let contents = start_info::Contents {
        firmware: &bi.memory,
        carves: &carves,
        cmdline,
        initrd: layout.initrd,
        rsdp: bi.rsdp,
    };
    let info = start_info::build(area, layout.start_info.start, &contents)
        .map_err(|e| Failure::Linux(LinuxError::StartInfo(e)))?;
    info!(
        "Linux start info at {info:#x} (initramfs {}, RSDP {}), frame pool {}",
        layout.initrd,
        if bi.rsdp.is_some() {
            "from the boot loader"
        } else {
            "left to Linux's scan"
        },
        layout.pool
    );

    if opts.mode == Mode::Direct {
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
    let mut regs = GuestRegisters::default();
    regs.gpr[Gpr::Rbx as usize] = info;
    // MMIO Linux touches that firmware maps do not list (the ACPI RSDP
    // scan reads 0xE0000-0xFFFFF; the I/O APIC, HPET and local APIC
    // pages, PCI BARs): every hole below 4 GiB, uncached (`MemoryKind::Mmio`).
    let mut extra = [MemoryRange {
        range: PhysRange::new(0, 0),
        kind: MemoryKind::Mmio,
    }; MAX_REGIONS + 1];
    let mut holes = 0;
    linux::mmio_holes(&bi.memory, 1 << 32, &mut |r| {
        extra[holes].range = PhysRange {
            start: r.start,
            end: r.end,
        };
        holes += 1;
    });
    info!(
        "starting okernel: Linux PVH entry {:#x} in VMX non-root mode (32-bit protected mode, EBX = start info)",
        plan.entry
    );
    launch_monitor(
        bi,
        GuestMode::Protected32,
        plan.entry,
        regs,
        layout.pool,
        &extra[..holes],
    )
}
