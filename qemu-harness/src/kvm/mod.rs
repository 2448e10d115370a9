//! The KVM backend: boots the okernel image in this process on
//! `/dev/kvm`, without QEMU, so a run takes milliseconds and can be reset
//! to a snapshot for the next one.
//!
//! A run: open the KVM device ([`vm::open`]), decide the mode
//! ([`cpuid::detect`]: nested VMX where KVM offers it, else none), create
//! the VM, load the image's segments and the guest module and write the
//! PVH start info ([`boot`]), enter in 32-bit protected mode ([`vcpu`]),
//! serve COM1, port 0xE9, the exit port and Bochs' shutdown port
//! ([`devices`]) until the image stops or the watchdog ends the run
//! ([`watchdog`]). The run directory gets `console.log` (a `[kvm]` header
//! line naming the mode, then COM1), `debugcon.log` (port 0xE9),
//! `exits.txt` (exit counters) and `command.txt` (the configuration).

mod bench;
pub mod boot;
pub mod cpuid;
pub mod devices;
mod error;
pub mod flat;
pub mod memory;
mod report;
pub mod run;
pub mod snapshot;
pub mod vcpu;
pub mod vm;
pub mod watchdog;

pub use bench::{ResetBench, bench_resets};
pub use cpuid::VmxMode;
pub use error::KvmError;
pub use snapshot::{Snapshot, VcpuState};
pub use vm::{RunEnd, Vm};

use crate::{Backend, GuestModule, HarnessError, RunReport, RunSpec, VmxSupport};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The default KVM device.
pub const DEFAULT_DEVICE: &str = "/dev/kvm";
/// The default guest RAM: 256 MiB, as `cargo xtask qemu` gives QEMU.
pub const DEFAULT_RAM: usize = 256 << 20;

/// The KVM backend.
#[derive(Debug, Clone)]
pub struct Kvm {
    device: PathBuf,
    ram: usize,
    nested_param: PathBuf,
    coalesce: bool,
}

impl Default for Kvm {
    fn default() -> Self {
        Self::new()
    }
}

impl Kvm {
    /// The backend on `/dev/kvm` with [`DEFAULT_RAM`].
    pub fn new() -> Self {
        Self::with_device(DEFAULT_DEVICE)
    }

    /// The backend on another KVM device node (tests use a missing or
    /// unreadable path to check the error messages).
    pub fn with_device(path: impl Into<PathBuf>) -> Self {
        Self {
            device: path.into(),
            ram: DEFAULT_RAM,
            nested_param: PathBuf::from(cpuid::NESTED_PARAM),
            coalesce: true,
        }
    }

    /// The same backend with `bytes` of guest RAM (a multiple of 4 KiB,
    /// at least 2 MiB and at most 3 GiB: RAM stays below the 4 GiB MMIO
    /// hole).
    pub fn with_ram(mut self, bytes: usize) -> Self {
        assert!(
            bytes.is_multiple_of(memory::PAGE_SIZE) && (2 << 20..=3 << 30).contains(&bytes),
            "guest RAM of {bytes} bytes"
        );
        self.ram = bytes;
        self
    }

    /// The same backend with console writes coalesced (the default, where
    /// KVM has KVM_CAP_COALESCED_PIO) or exiting one by one.
    pub fn with_coalescing(mut self, on: bool) -> Self {
        self.coalesce = on;
        self
    }

    /// The KVM device this backend opens.
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// Which mode runs get on this host.
    pub fn mode(&self) -> Result<VmxMode, KvmError> {
        let kvm = vm::open(&self.device)?;
        Ok(cpuid::detect(
            &cpuid::supported(&kvm)?,
            cpuid::nested_param(&self.nested_param).as_deref(),
        ))
    }

    /// Creates the VM for `spec` and loads it, stopped at the PVH entry;
    /// writes `command.txt` in the run directory.
    pub fn boot(&self, spec: &RunSpec) -> Result<Vm, HarnessError> {
        spec.check_files()?;
        spec.make_run_dir()?;
        let kvm = vm::open(&self.device)?;
        let mode = cpuid::detect(
            &cpuid::supported(&kvm)?,
            cpuid::nested_param(&self.nested_param).as_deref(),
        );
        let mut vm = Vm::new(kvm, self.ram, mode, self.coalesce)?;
        let image = std::fs::read(&spec.image).map_err(HarnessError::io(&spec.image))?;
        let (entry, segments) = boot::load_image(&mut vm.ram, &spec.image, &image)?;
        let module = match &spec.guest {
            GuestModule::None => None,
            GuestModule::File(path) => {
                let bytes = std::fs::read(path).map_err(HarnessError::io(path))?;
                Some(boot::load_module(&mut vm.ram, path, &bytes, &segments)?)
            }
            GuestModule::Linux { .. } => {
                return Err(HarnessError::Tool {
                    command: "kvm".into(),
                    detail: "the KVM harness passes one boot module; okernel with Linux \
                             boots from GRUB (Bochs)"
                        .into(),
                });
            }
        };
        let cmdline = full_cmdline(spec);
        let start_info = boot::write_start_info(&mut vm.ram, &cmdline, module)?;
        vcpu::write_gdt(&mut vm.ram);
        let sregs = vcpu::entry_sregs(vm.sregs()?);
        vm.vcpu
            .set_sregs(&sregs)
            .map_err(KvmError::ioctl("KVM_SET_SREGS"))?;
        vm.vcpu
            .set_regs(&vcpu::entry_regs(entry, start_info))
            .map_err(KvmError::ioctl("KVM_SET_REGS"))?;
        let loaded = boot::Loaded {
            entry,
            segments,
            module,
        };
        let config = report::config_text(self, spec, &vm.mode, &loaded, &cmdline, vm.coalesced);
        let path = spec.run_dir.join("command.txt");
        std::fs::write(&path, config).map_err(HarnessError::io(&path))?;
        Ok(vm)
    }
}

/// The image's command line: its own options, then ` -- ` and the guest's
/// (as QEMU's `-append` gets it from the QEMU backend).
pub fn full_cmdline(spec: &RunSpec) -> String {
    let mut line = spec.cmdline.clone();
    if !spec.guest_cmdline.is_empty() {
        line = format!("{line} -- {}", spec.guest_cmdline);
    }
    line.trim().to_string()
}

impl Backend for Kvm {
    fn name(&self) -> &str {
        "kvm"
    }

    fn vmx(&self) -> VmxSupport {
        match self.mode() {
            Ok(m) if m.nested => VmxSupport::Available,
            _ => VmxSupport::Unavailable,
        }
    }

    fn run(&self, spec: &RunSpec) -> Result<RunReport, HarnessError> {
        let start = Instant::now();
        let mut vm = self.boot(spec)?;
        let end = vm.run(start + spec.timeout)?;
        report::finish(spec, &mut vm, end, start.elapsed())
    }
}
