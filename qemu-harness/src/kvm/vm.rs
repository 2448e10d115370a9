//! One VM: the KVM device, a VM with one memory slot (dirty-logged, for
//! fast resets), the in-kernel interrupt controllers, one vCPU, and the run
//! loop that serves its exits until the image stops or the watchdog fires.

use super::cpuid::{self, VmxMode};
use super::devices::{Devices, Stop};
use super::memory::GuestRam;
use super::{KvmError, run, watchdog};
use kvm_bindings::{KVM_API_VERSION, KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use kvm_ioctls::{Cap, Kvm as KvmFd, VcpuFd, VmFd};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::Path;
use std::time::Instant;

/// Where KVM may put the three pages it needs for real-mode emulation on
/// hosts without unrestricted guest (just below the 4 GiB BIOS area, as
/// QEMU and Firecracker do); outside guest RAM.
const TSS_ADDR: usize = 0xfffb_d000;

/// How a run ended, before it is turned into a report or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The image stopped itself through a device.
    Stopped(Stop),
    /// The deadline passed.
    TimedOut,
    /// KVM_EXIT_SHUTDOWN: the guest triple-faulted.
    TripleFault,
    /// KVM_EXIT_FAIL_ENTRY.
    FailEntry {
        /// `hardware_entry_failure_reason`.
        reason: u64,
        /// The host CPU.
        cpu: u32,
    },
    /// KVM_EXIT_INTERNAL_ERROR.
    Internal {
        /// `internal.suberror`.
        suberror: u32,
    },
    /// Any other exit.
    Unexpected(String),
}

/// Opens the KVM device at `path` and checks that it is KVM.
pub fn open(path: &Path) -> Result<KvmFd, KvmError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| KvmError::open(path.to_path_buf(), e))?;
    // SAFETY: `into_raw_fd` hands over sole ownership of a valid open
    // descriptor, which `KvmFd` then owns and closes.
    let kvm = unsafe { KvmFd::from_raw_fd(file.into_raw_fd()) };
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION as i32 {
        let detail = if version < 0 {
            std::io::Error::last_os_error().to_string()
        } else {
            format!("API version {version}, the harness speaks {KVM_API_VERSION}")
        };
        return Err(KvmError::NotKvm {
            path: path.to_path_buf(),
            detail,
        });
    }
    for (cap, name) in [
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        (Cap::VcpuEvents, "KVM_CAP_VCPU_EVENTS"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCapability(name));
        }
    }
    Ok(kvm)
}

/// A VM with its memory, its devices and its one vCPU.
pub struct Vm {
    // Field order is drop order: the vCPU and the VM go before the RAM
    // their memory slot points into.
    pub(super) vcpu: VcpuFd,
    pub(super) vm: VmFd,
    pub(super) kvm: KvmFd,
    /// Guest RAM, guest-physical 0 at offset 0.
    pub ram: GuestRam,
    /// The devices and their output.
    pub devices: Devices,
    /// The mode the vCPU runs in.
    pub mode: VmxMode,
    /// Whether console writes are coalesced (see [`run`]).
    pub coalesced: bool,
}

impl Vm {
    /// Creates a VM with `ram_bytes` of RAM and one vCPU whose CPUID
    /// follows `mode`; console writes are coalesced when `coalesce` is set
    /// and KVM can.
    pub fn new(
        kvm: KvmFd,
        ram_bytes: usize,
        mode: VmxMode,
        coalesce: bool,
    ) -> Result<Self, KvmError> {
        let vm = kvm.create_vm().map_err(KvmError::ioctl("KVM_CREATE_VM"))?;
        vm.set_tss_address(TSS_ADDR)
            .map_err(KvmError::ioctl("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip()
            .map_err(KvmError::ioctl("KVM_CREATE_IRQCHIP"))?;
        let ram = GuestRam::new(ram_bytes)?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: KVM_MEM_LOG_DIRTY_PAGES,
            guest_phys_addr: 0,
            memory_size: ram.len() as u64,
            userspace_addr: ram.host_addr(),
        };
        // SAFETY: the region is `ram`'s whole mapping, which lives as long
        // as this `Vm` and is unmapped only after the VM is dropped (field
        // order above); no other slot overlaps it.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(KvmError::ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        let mut vcpu = vm
            .create_vcpu(0)
            .map_err(KvmError::ioctl("KVM_CREATE_VCPU"))?;
        let supported = cpuid::supported(&kvm)?;
        vcpu.set_cpuid2(&cpuid::for_guest(&supported, &mode))
            .map_err(KvmError::ioctl("KVM_SET_CPUID2"))?;
        let coalesced = coalesce && run::coalesce_console(&kvm, &vm, &mut vcpu)?;
        let vm = Self {
            vcpu,
            vm,
            kvm,
            ram,
            devices: Devices::default(),
            mode,
            coalesced,
        };
        if vm.mode.nested {
            // No firmware: IA32_FEATURE_CONTROL starts unlocked, so okernel
            // can enable VMX outside SMX and lock it (SDM Vol. 3C §24.7).
            vm.set_msrs(&[(super::snapshot::MSR_IA32_FEATURE_CONTROL, 0)])?;
        }
        Ok(vm)
    }

    /// Runs the vCPU until the image stops, the guest fails, or
    /// `deadline`.
    pub fn run(&mut self, deadline: Instant) -> Result<RunEnd, KvmError> {
        let Self {
            vcpu,
            devices,
            coalesced,
            ..
        } = self;
        let body = || run::run_loop(vcpu, devices, *coalesced, deadline);
        watchdog::with_watchdog(deadline, body).map_err(|e| KvmError::Ioctl {
            op: "installing the watchdog signal handler",
            source: e,
        })?
    }

    /// The general registers.
    pub fn regs(&self) -> Result<kvm_bindings::kvm_regs, KvmError> {
        self.vcpu
            .get_regs()
            .map_err(KvmError::ioctl("KVM_GET_REGS"))
    }

    /// The segment and control registers.
    pub fn sregs(&self) -> Result<kvm_bindings::kvm_sregs, KvmError> {
        self.vcpu
            .get_sregs()
            .map_err(KvmError::ioctl("KVM_GET_SREGS"))
    }

    /// Whether the vCPU sleeps in `hlt` (KVM_MP_STATE_HALTED).
    pub fn halted(&self) -> Result<bool, KvmError> {
        let mp = self
            .vcpu
            .get_mp_state()
            .map_err(KvmError::ioctl("KVM_GET_MP_STATE"))?;
        Ok(mp.mp_state == kvm_bindings::KVM_MP_STATE_HALTED)
    }

    /// The guest RAM at `[addr, addr + len)`; `what` names the access in
    /// the error when any of it lies outside RAM.
    pub fn read_guest(&self, what: &'static str, addr: u64, len: usize) -> Result<&[u8], KvmError> {
        self.ram.get(addr, len).ok_or(KvmError::OutsideRam {
            what,
            addr,
            len,
            ram: self.ram.len(),
        })
    }

    /// Writes `bytes` to guest RAM at `addr` (nothing when any of them
    /// lies outside RAM: the error names `what`). Writes by the harness
    /// are not in KVM's dirty log (see [`super::snapshot`]).
    pub fn write_guest(
        &mut self,
        what: &'static str,
        addr: u64,
        bytes: &[u8],
    ) -> Result<(), KvmError> {
        if self.ram.write(addr, bytes) {
            Ok(())
        } else {
            Err(KvmError::OutsideRam {
                what,
                addr,
                len: bytes.len(),
                ram: self.ram.len(),
            })
        }
    }

    /// Completes the I/O exit the run stopped at (an `out` to a port that
    /// ended the run): KVM finishes a KVM_EXIT_IO, and advances RIP past
    /// the instruction, only on the next KVM_RUN (the KVM API docs,
    /// "KVM_RUN": the state is consistent only after re-entering with
    /// `immediate_exit` set). This enters with `immediate_exit`, so the
    /// guest runs no instruction; take a snapshot only after it.
    pub fn complete_io(&mut self) -> Result<(), KvmError> {
        self.vcpu.set_kvm_immediate_exit(1);
        let result = self.vcpu.run().map(drop);
        self.vcpu.set_kvm_immediate_exit(0);
        match result {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(e) => Err(KvmError::ioctl("KVM_RUN (immediate_exit, completing I/O)")(
                e,
            )),
            Ok(()) => Err(KvmError::Ioctl {
                op: "KVM_RUN (immediate_exit, completing I/O)",
                source: std::io::Error::other("KVM ran the guest despite immediate_exit"),
            }),
        }
    }
}
