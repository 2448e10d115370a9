//! The privileged or VMX instructions the guest's checks execute.

use okernel_abi::hypercall::{Call, Status};

/// What a hypercall returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// RAX: the status (decoded when known).
    pub status: Result<Status, u64>,
    /// RDI.
    pub value0: u64,
    /// RSI.
    pub value1: u64,
}

/// Issues `VMCALL` with a raw call number and arguments (the ABI register
/// convention of [`okernel_abi::hypercall`]).
pub fn hypercall_raw(number: u64, args: [u64; 4]) -> Reply {
    let (rax, rdi, rsi);
    // SAFETY: VMCALL in VMX non-root mode exits to the monitor, which
    // changes only RAX, RDI and RSI (the ABI); outside VMX it raises #UD,
    // which callers run under a probe.
    unsafe {
        core::arch::asm!(
            "vmcall",
            inout("rax") number => rax,
            inout("rdi") args[0] => rdi,
            inout("rsi") args[1] => rsi,
            in("rdx") args[2],
            in("rcx") args[3],
            options(nostack),
        );
    }
    Reply {
        status: Status::from_raw(rax),
        value0: rdi,
        value1: rsi,
    }
}

/// Issues a hypercall of the ABI.
pub fn hypercall(call: Call, args: [u64; 4]) -> Reply {
    hypercall_raw(call.raw(), args)
}

/// Issues the Null hypercall and returns RAX (its status), inline: the
/// bench's timed operation (`crate::bench`), so that what it measures is
/// the monitor's round trip and two guest instructions (the number and the
/// VMCALL), not the out-of-line [`hypercall`] wrapper and its argument
/// array, whose cost moves with the compiler's inlining.
#[inline(always)]
pub fn null_hypercall() -> u64 {
    let mut rax = Call::Null.raw();
    // SAFETY: as in `hypercall_raw`: VMCALL exits to the monitor, which
    // changes only RAX, RDI and RSI; outside VMX it raises #UD, and the
    // bench runs only under a monitor.
    unsafe {
        core::arch::asm!(
            "vmcall",
            inout("rax") rax,
            lateout("rdi") _,
            lateout("rsi") _,
            options(nostack),
        );
    }
    rax
}

/// Executes `VMXON` with a zeroed region pointer (a probe target: the
/// monitor must answer with #UD).
pub extern "C" fn vmxon(region: u64) -> u64 {
    // SAFETY: in non-root mode VMXON always exits; the monitor injects #UD,
    // which the probe catches. It touches no memory the compiler knows of.
    unsafe { core::arch::asm!("vmxon [{}]", in(reg) &region, options(nostack)) };
    0
}

/// Enters VMX operation with the VMXON region at physical `region` and, if
/// that succeeded, leaves it again; returns 1 when VMXON succeeded (CF = ZF
/// = 0, SDM Vol. 3C §31.2 "Conventions"). A probe target for the VMXON
/// negative control: only meaningful with no monitor underneath.
pub extern "C" fn vmxon_vmxoff(region: u64) -> u64 {
    let entered: u8;
    // SAFETY: the caller prepared VMX operation (IA32_FEATURE_CONTROL,
    // CR0/CR4 fixed bits, CR4.VMXE, a VMXON region with the revision id);
    // a failure sets flags or faults, which the probe catches. VMXON and
    // VMXOFF touch only the region and VMX state.
    unsafe {
        core::arch::asm!(
            "vmxon [{region}]",
            "seta {entered}",
            region = in(reg) &region,
            entered = out(reg_byte) entered,
            options(nostack),
        );
        if entered == 1 {
            core::arch::asm!("vmxoff", options(nostack, nomem));
        }
    }
    u64::from(entered)
}

/// Raises #UD (a probe target: an exception that never leaves the guest).
pub extern "C" fn ud2(_: u64) -> u64 {
    // SAFETY: ud2 raises #UD, which the probe's recovery context catches.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    0
}

/// Reads the quadword at `addr` (a probe target).
pub extern "C" fn read_u64(addr: u64) -> u64 {
    // SAFETY: run under a probe: a fault is caught; the address is chosen
    // by the check (guest memory or memory that must be denied).
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

/// The value [`write_marker`] writes.
pub const MARKER: u64 = 0x6f6b_6572_6e65_6c21;

/// Writes [`MARKER`] to `addr` (a probe target).
pub extern "C" fn write_marker(addr: u64) -> u64 {
    // SAFETY: run under a probe: a fault is caught; the address is chosen
    // by the check (guest scratch memory or memory that must be denied).
    unsafe { core::ptr::write_volatile(addr as *mut u64, MARKER) };
    0
}

/// Writes 0 to `addr` (a probe target).
pub extern "C" fn write_zero(addr: u64) -> u64 {
    // SAFETY: run under a probe: a fault is caught; the address is chosen
    // by the check (memory an attack changed, written back).
    unsafe { core::ptr::write_volatile(addr as *mut u64, 0) };
    0
}

/// Reads MSR `msr` (a probe target).
pub extern "C" fn rdmsr(msr: u64) -> u64 {
    // SAFETY: run under a probe: #GP for an absent or hidden MSR is caught.
    unsafe { x86_64::registers::model_specific::Msr::new(msr as u32).read() }
}
