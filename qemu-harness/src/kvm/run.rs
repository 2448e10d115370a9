//! The run loop: enter the vCPU, serve its exit, repeat, until the image
//! stops itself, the guest CPU fails, or the deadline passes.
//!
//! Console output is the bulk of the exits: the image writes each byte to
//! COM1's THR and to port 0xE9 after polling LSR. Where KVM has
//! KVM_CAP_COALESCED_PIO, writes to those two ports do not exit at all:
//! KVM appends them to a ring shared with us, and the loop replays the
//! ring into the devices on every exit *before* serving the exit, so the
//! devices see every access in program order (every access to any other
//! port, the LSR poll included, exits). That leaves one exit per console
//! byte instead of three.

use super::devices::{COM1, DEBUG_PORT, Devices};
use super::{KvmError, RunEnd};
use kvm_bindings::kvm_run;
use kvm_ioctls::{Cap, IoEventAddress, Kvm as KvmFd, VcpuExit, VcpuFd, VmFd};
use std::time::Instant;

/// The ports whose writes are coalesced: write-only from the image's side
/// (THR shares its port with RBR and DLL, which the image never reads; a
/// read would exit and see the ring replayed first anyway).
pub const COALESCED_PORTS: [u16; 2] = [COM1, DEBUG_PORT];

/// Registers [`COALESCED_PORTS`] and maps the ring, where KVM can;
/// returns whether it did.
pub fn coalesce_console(kvm: &KvmFd, vm: &VmFd, vcpu: &mut VcpuFd) -> Result<bool, KvmError> {
    if !kvm.check_extension(Cap::CoalescedPio) {
        return Ok(false);
    }
    for port in COALESCED_PORTS {
        vm.register_coalesced_mmio(IoEventAddress::Pio(u64::from(port)), 1)
            .map_err(KvmError::ioctl("KVM_REGISTER_COALESCED_MMIO"))?;
    }
    vcpu.map_coalesced_mmio_ring()
        .map_err(KvmError::ioctl("mapping the coalesced MMIO ring"))?;
    Ok(true)
}

/// Replays the coalesced writes into the devices, oldest first.
fn drain(vcpu: &mut VcpuFd, devices: &mut Devices, coalesced: bool) -> Result<(), KvmError> {
    if !coalesced {
        return Ok(());
    }
    while let Some(e) = vcpu
        .coalesced_mmio_read()
        .map_err(KvmError::ioctl("reading the coalesced MMIO ring"))?
    {
        let len = (e.len as usize).min(e.data.len());
        // Only ports that never stop the run are coalesced.
        let _ = devices.write_port(e.phys_addr as u16, &e.data[..len]);
        devices.count("io-out (coalesced, no exit)");
    }
    Ok(())
}

/// What an exit asks for, owned, so the ring can be drained before it is
/// served.
enum Step {
    Out(u16, Vec<u8>),
    In(u16, usize),
    Go,
    End(RunEnd),
    Internal,
    Failed(vmm_sys_util::errno::Error),
}

/// Completes a pending `in`: its data lives in the kvm_run page.
fn complete_in(vcpu: &mut VcpuFd, bytes: &[u8]) {
    let run: &mut kvm_run = vcpu.get_kvm_run();
    // SAFETY: the last exit was KVM_EXIT_IO with direction in (Step::In
    // is made only from VcpuExit::IoIn), so `io` is the union member KVM
    // filled in.
    let io = unsafe { run.__bindgen_anon_1.io };
    let len = (usize::from(io.size) * io.count as usize).min(bytes.len());
    let base = std::ptr::from_mut(run).cast::<u8>();
    // SAFETY: KVM puts the `size * count` data bytes at `data_offset`
    // within the vCPU's kvm_run mapping, the same bytes kvm-ioctls handed
    // out as the `IoIn` slice (whose borrow has ended); `run` is the only
    // live reference into that mapping, and `len` does not exceed them.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(io.data_offset as usize), len)
    };
}

/// Runs `vcpu` until the image stops, the guest fails, or `deadline`.
pub fn run_loop(
    vcpu: &mut VcpuFd,
    devices: &mut Devices,
    coalesced: bool,
    deadline: Instant,
) -> Result<RunEnd, KvmError> {
    loop {
        if Instant::now() >= deadline {
            drain(vcpu, devices, coalesced)?;
            return Ok(RunEnd::TimedOut);
        }
        let step = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => Step::Out(port, data.to_vec()),
            Ok(VcpuExit::IoIn(port, data)) => Step::In(port, data.len()),
            Ok(VcpuExit::MmioRead(addr, data)) => {
                devices.count(&format!("mmio-read unknown {addr:#x}"));
                data.fill(0xff);
                Step::Go
            }
            Ok(VcpuExit::MmioWrite(addr, _)) => {
                devices.count(&format!("mmio-write unknown {addr:#x}"));
                Step::Go
            }
            Ok(VcpuExit::Shutdown) => Step::End(RunEnd::TripleFault),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Step::End(RunEnd::FailEntry { reason, cpu }),
            Ok(VcpuExit::InternalError) => Step::Internal,
            Ok(other) => Step::End(RunEnd::Unexpected(format!("{other:?}"))),
            Err(e) => Step::Failed(e),
        };
        drain(vcpu, devices, coalesced)?;
        match step {
            Step::Out(port, data) => {
                if let Some(stop) = devices.io_out(port, &data) {
                    return Ok(RunEnd::Stopped(stop));
                }
            }
            Step::In(port, len) => {
                let mut data = vec![0; len];
                devices.io_in(port, &mut data);
                complete_in(vcpu, &data);
            }
            Step::Go => {}
            Step::End(end) => return Ok(end),
            Step::Internal => {
                // SAFETY: the exit reason was KVM_EXIT_INTERNAL_ERROR, so
                // `internal` is the union member KVM filled in.
                let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                return Ok(RunEnd::Internal { suberror });
            }
            Step::Failed(e) if e.errno() == libc::EINTR => devices.count("kick (EINTR)"),
            Step::Failed(e) if e.errno() == libc::EAGAIN => devices.count("EAGAIN"),
            Step::Failed(e) => return Err(KvmError::ioctl("KVM_RUN")(e)),
        }
    }
}
