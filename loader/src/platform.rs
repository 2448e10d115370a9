//! The platform around the monitor, locked and described before it
//! starts (`docs/boot-flow.md`, step 8): the host bridge's SMRAM control
//! and PCIEXBAR, the ACPI sleep, SMI and reset ports, the PM base
//! register and the FADT's I/O blocks — the monitor's port rules
//! (`okernel::exit::platform_ports`) — and PCI Express configuration
//! space kept from the guest (`loader::acpi::mcfg`).

use crate::boot::Failure;
use crate::phys::{self, Identity};
use loader::bootinfo::{BootInfo, PhysMem};
use loader::chipset::Smram;
use log::info;
use okernel::exit::platform_ports::{PlatformPorts, PortBlock, PortRule};
use okernel::memmap::PhysRange;

/// The ECAM windows kept from the guest: the MCFG's, and the one the
/// host bridge's PCIEXBAR decodes now.
pub(crate) const ECAM_WINDOWS: usize = loader::acpi::mcfg::MAX_WINDOWS + 1;

/// PCI configuration mechanism #1 through ports 0xCF8/0xCFC.
struct Mechanism1;

impl loader::chipset::ConfigSpace for Mechanism1 {
    fn read(&mut self, address: u32) -> u32 {
        // SAFETY: selecting and reading a dword changes nothing; the
        // loader runs alone, before the guest exists.
        unsafe {
            x86_64::instructions::port::Port::<u32>::new(0xcf8).write(address);
            x86_64::instructions::port::Port::<u32>::new(0xcfc).read()
        }
    }
    fn write(&mut self, address: u32, value: u32) {
        // SAFETY: as for `read`; the only writes are the SMRAM lock
        // (`loader::chipset`) and the sizing of 64-bit BARs with memory
        // decoding off, each restored (`loader::pci_bars`), before the
        // guest exists.
        unsafe {
            x86_64::instructions::port::Port::<u32>::new(0xcf8).write(address);
            x86_64::instructions::port::Port::<u32>::new(0xcfc).write(value);
        }
    }
}

/// The device memory above 4 GiB (`loader::pci_bars`), written as MMIO
/// ranges into `out`; returns how many. A range beyond the processor's
/// physical-address width (MAXPHYADDR, CPUID.80000008H:EAX[7:0]), which
/// EPT cannot map, and those past `out`'s room are left out and named.
pub(crate) fn high_mmio(out: &mut [okernel::launch::MemoryRange]) -> usize {
    use core::arch::x86_64::__cpuid;
    let width = if __cpuid(0x8000_0000).eax >= 0x8000_0008 {
        __cpuid(0x8000_0008).eax & 0xff
    } else {
        36
    };
    let limit = 1u64 << width.clamp(36, 52);
    let mut n = 0;
    loader::pci_bars::high_mmio(&mut Mechanism1, &mut |r| {
        if r.end > limit || n == out.len() {
            log::warn!(
                "PCI: device memory {r} above 4 GiB not mapped for the guest ({})",
                if r.end > limit {
                    "beyond MAXPHYADDR"
                } else {
                    "too many ranges"
                }
            );
            return;
        }
        info!("PCI: device memory {r} above 4 GiB mapped for the guest (MMIO, uncached)");
        out[n] = okernel::launch::MemoryRange {
            range: r,
            kind: okernel::launch::MemoryKind::Mmio,
        };
        n += 1;
    });
    n
}

/// The platform's port rules for the monitor
/// (`okernel::exit::platform_ports`): the host bridge's SMRAM control
/// locked (`loader::chipset`) and its dword refused; the ACPI PM1a/PM1b
/// control refuse any sleep but `\_S5`'s soft off, SMI_CMD performs
/// only the FADT's values for the OS (S4BIOS_REQ and vendor commands
/// refused), an I/O reset register other than 0xCF9 (which `exit::io`
/// mediates) refuses its reset value, and the PCI register placing the
/// PM I/O block is refused; with ECAM (`ecam`), an Intel host bridge's
/// PCIEXBAR is refused too. Says what it found, and what it cannot
/// mediate; a malformed FADT stops the boot.
pub(crate) fn platform_ports(bi: &BootInfo<'_>, ecam: bool) -> Result<PlatformPorts, Failure> {
    let mut rules =
        [PortRule::RefuseByte { port: 0, value: 0 }; okernel::exit::platform_ports::MAX_RULES];
    let mut n = 0;
    match loader::chipset::lock_smram(&mut Mechanism1) {
        Smram::Locked(address) => {
            info!("SMRAM control locked (D_LCK) at {address:#x}");
            rules[n] = PortRule::PciConfigLocked { address };
            n += 1;
        }
        Smram::NotLocked(address, v) => {
            log::warn!(
                "SMRAM control at {address:#x} reads {v:#x}: D_LCK did not hold; okernel refuses the guest's writes to it"
            );
            rules[n] = PortRule::PciConfigLocked { address };
            n += 1;
        }
        Smram::Unknown(id) => log::warn!(
            "host bridge {id:#x}: okernel does not know its SMRAM control; the firmware must have locked SMRAM (D_LCK)"
        ),
    }
    // The register that places ECAM, whether or not the firmware lists
    // it: moved or enabled, the window would appear where the EPT maps.
    match loader::chipset::pciexbar(&mut Mechanism1) {
        Some(p) => {
            info!(
                "PCIEXBAR at {:x?} locked (the guest's writes refused)",
                p.dwords
            );
            for address in p.dwords {
                rules[n] = PortRule::PciConfigLocked { address };
                n += 1;
            }
        }
        None if ecam => log::warn!(
            "okernel does not know the register placing ECAM on this host bridge: the firmware must have locked it"
        ),
        None => {}
    }
    let Some(rsdp) = bi.rsdp else {
        log::warn!("no ACPI tables: no sleep control to mediate");
        return Ok(PlatformPorts::new(&rules[..n]).unwrap_or_default());
    };
    let c = loader::acpi::sleep::sleep_controls(&Identity, rsdp).map_err(Failure::SleepControls)?;
    if c.dsdt_unreadable {
        log::warn!(
            "the DSDT is unreadable: no sleep type is known, so every PM1 sleep request, power-off included, is refused"
        );
    }
    for (port, off) in c.pm1_cnt.iter().zip([c.s5.map(|s| s.0), c.s5.map(|s| s.1)]) {
        if let Some(port) = *port {
            rules[n] = PortRule::SleepControl { port, off };
            n += 1;
        }
    }
    if let Some((port, _)) = c.smi_cmd {
        rules[n] = PortRule::SmiCommand {
            port,
            allowed: c.smi_values,
        };
        n += 1;
    }
    if let Some((port, value)) = c.reset.filter(|&(port, _)| port != 0xcf9) {
        rules[n] = PortRule::RefuseByte { port, value };
        n += 1;
    }
    let mut read = |address: u32| loader::chipset::ConfigSpace::read(&mut Mechanism1, address);
    let locked = c
        .pm1a_evt
        .map(|evt| loader::acpi::sleep::pm_base_registers(&mut read, evt))
        .unwrap_or_default();
    for address in locked.into_iter().flatten() {
        rules[n] = PortRule::PciConfigLocked { address };
        n += 1;
    }
    let verdict = match (c.pm1_cnt.iter().flatten().count(), c.s5) {
        (0, _) => "no PM1 control to mediate",
        (_, Some(_)) => "sleep refused, soft off allowed",
        (_, None) => "sleep and power-off refused",
    };
    info!(
        "ACPI sleep controls: PM1 control {:x?}, \\_S5 {:?}, \\_S3 {:?}, SMI_CMD {:x?} (values performed {:x?}), reset register {:x?}, PM base locked at {:x?}: {verdict}",
        c.pm1_cnt, c.s5, c.s3, c.smi_cmd, c.smi_values, c.reset, locked
    );
    if c.pm1a_evt.is_some() && locked[0].is_none() {
        log::warn!(
            "the PCI register placing the ACPI PM I/O block was not found: a guest could move PM1 control where okernel does not look; disable S3/S4 in the firmware"
        );
    }
    if c.pm1_in_memory || c.hardware_reduced {
        log::warn!(
            "the ACPI sleep control is in memory or hardware-reduced: okernel cannot refuse sleep there; disable S3/S4 in the firmware"
        );
    }
    if c.s5.is_none() && n > 0 {
        log::warn!("no \\_S5 in the DSDT: ACPI power-off is refused too");
    }
    let blocks = c
        .io_blocks
        .map(|b| b.map(|(first, len)| PortBlock { first, len }));
    let mut passed = [PortBlock { first: 0, len: 0 }; 6];
    let mut k = 0;
    for b in blocks.into_iter().flatten() {
        passed[k] = b;
        k += 1;
    }
    info!(
        "ACPI I/O blocks passed to the guest (PM1 event, PM2, PM timer, GPE0, GPE1): {:x?}; every other port not in okernel's table is denied",
        c.io_blocks
    );
    Ok(PlatformPorts::new(&rules[..n])
        .and_then(|p| p.passing(&passed[..k]))
        .unwrap_or_default())
}

/// Keeps PCI Express configuration space (ECAM) from the guest
/// (`loader::acpi::mcfg`): removes the MCFG from the RSDT and the XSDT
/// the firmware left in memory, so that the guest's OS uses configuration
/// mechanism #1 (mediated by the monitor), and returns the windows, which
/// the caller keeps out of every EPT view. No MCFG: nothing to do.
pub(crate) fn hide_ecam(bi: &BootInfo<'_>) -> Result<[Option<(u64, u64)>; ECAM_WINDOWS], Failure> {
    use loader::acpi::mcfg;
    let Some(rsdp) = bi.rsdp else {
        let live = loader::chipset::pciexbar(&mut Mechanism1).and_then(|p| p.window);
        let mut windows = [None; ECAM_WINDOWS];
        windows[mcfg::MAX_WINDOWS] = live;
        return Ok(windows);
    };
    let mcfg_windows = mcfg::windows(&Identity, rsdp).map_err(Failure::Ecam)?;
    // The window the host bridge decodes now, which the MCFG may not
    // describe (or not list at all).
    let live = loader::chipset::pciexbar(&mut Mechanism1).and_then(|p| p.window);
    let mut windows = [None; ECAM_WINDOWS];
    windows[..mcfg::MAX_WINDOWS].copy_from_slice(&mcfg_windows);
    windows[mcfg::MAX_WINDOWS] = live;
    if mcfg_windows.iter().all(Option::is_none) {
        if live.is_some() {
            info!(
                "PCI Express ECAM {live:x?} (PCIEXBAR, no MCFG): kept from the guest (in no EPT view)"
            );
        }
        return Ok(windows);
    }
    // The root tables, checked as the OS will check them (signature,
    // bounded length, checksum): only those are edited.
    let mut removed = 0;
    for (root, entry) in mcfg::roots(&Identity, rsdp).into_iter().flatten() {
        // The MCFG entries' addresses first, read-only: the root table is
        // then the only memory written, and only its checked length.
        let Ok(t) = loader::acpi::table(&Identity, root, "root table") else {
            continue;
        };
        let len = t.len() as u64;
        let mut targets = [0u64; 8];
        let mut n = 0;
        for e in t[36..].chunks_exact(entry) {
            let a = loader::acpi::entry_address(e);
            if n < targets.len() && Identity.bytes(a, 4).is_some_and(|sig| sig == b"MCFG") {
                targets[n] = a;
                n += 1;
            }
        }
        // SAFETY: the firmware's RSDT/XSDT (checked above: signature,
        // length up to the ACPI module's bound, checksum), identity-mapped
        // ACPI memory that nothing else uses while the loader runs; the
        // guest finds it changed (these are the tables it reads).
        if let Some(bytes) = unsafe {
            phys::bytes_mut(PhysRange {
                start: root,
                end: root + len,
            })
        } {
            removed += mcfg::remove_entries(bytes, entry, |a| targets[..n].contains(&a));
        }
    }
    info!(
        "PCI Express ECAM {:x?}: kept from the guest (MCFG removed from {removed} root table(s), the windows in no EPT view); its PCI configuration goes through ports 0xCF8/0xCFC",
        windows
    );
    Ok(windows)
}
