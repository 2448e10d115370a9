//! The VMX instructions (SDM Vol. 3C chapter 31 "VMX Instruction
//! Reference"). Each returns the raw RFLAGS outcome decoded by
//! [`crate::vmx::error::decode_rflags`]: VMfailInvalid (CF = 1) or
//! VMfailValid (ZF = 1, error number in the current VMCS).

use core::arch::asm;

use crate::vmx::error::{InstructionError, VmFail, decode_rflags};
use crate::vmx::fields::{Field, ReadOnly32};

/// Turns the CF/ZF bytes captured after a VMX instruction into a result.
fn outcome(cf: u8, zf: u8) -> Result<(), VmFail> {
    let rflags = u64::from(cf) | (u64::from(zf) << 6);
    decode_rflags(rflags, || {
        // SAFETY: this closure runs only for VMfailValid, which the SDM
        // defines as "there is a current VMCS", so VMREAD of the
        // VM-instruction error field (a field every VMCS has) is valid.
        let (value, cf, zf) = unsafe { vmread_raw(ReadOnly32::VmInstructionError.encoding()) };
        if cf == 0 && zf == 0 { value as u32 } else { 0 }
    })
}

/// VMREAD without decoding: the value and the CF/ZF bytes.
///
/// # Safety
/// In VMX root operation.
#[inline(always)]
unsafe fn vmread_raw(encoding: u32) -> (u64, u8, u8) {
    let value: u64;
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees VMX root operation; VMREAD with a
    // register destination writes only `value` and the flags (without a
    // current VMCS it fails with CF = 1 and writes nothing).
    unsafe {
        asm!("vmread {}, {}", "setc {}", "setz {}", out(reg) value, in(reg) u64::from(encoding),
             out(reg_byte) cf, out(reg_byte) zf, options(nostack, nomem));
    }
    (value, cf, zf)
}

/// VMXON: enters VMX root operation (SDM Vol. 3C §31.3, VMXON).
///
/// # Safety
/// CR4.VMXE must be set, CR0/CR4 must satisfy the VMX fixed bits, and
/// `region` must be the physical address of a 4 KiB-aligned, zeroed region
/// (of the size in IA32_VMX_BASIC) whose first dword holds the VMCS
/// revision identifier, used by nothing else while in VMX operation.
pub unsafe fn vmxon(region: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees the preconditions above; VMXON reads
    // the 8-byte operand (`region`, live on this stack frame) and changes
    // no Rust-visible memory.
    unsafe {
        asm!("vmxon [{}]", "setc {}", "setz {}", in(reg) &region, out(reg_byte) cf, out(reg_byte) zf,
             options(nostack, readonly));
    }
    outcome(cf, zf)
}

/// VMXOFF: leaves VMX operation.
///
/// # Safety
/// The caller must be in VMX root operation and no guest may be resumed
/// afterwards.
pub unsafe fn vmxoff() -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees VMX root operation; VMXOFF touches no
    // Rust-visible memory.
    unsafe {
        asm!("vmxoff", "setc {}", "setz {}", out(reg_byte) cf, out(reg_byte) zf,
             options(nostack, nomem));
    }
    outcome(cf, zf)
}

/// VMCLEAR: initialises a VMCS region and makes it inactive and clear.
///
/// # Safety
/// In VMX root operation; `vmcs` is the physical address of a 4 KiB-aligned
/// VMCS region owned by the monitor (not the VMXON region).
pub unsafe fn vmclear(vmcs: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees the operand is a monitor-owned VMCS
    // region; the processor writes only that region, which Rust code never
    // accesses directly.
    unsafe {
        asm!("vmclear [{}]", "setc {}", "setz {}", in(reg) &vmcs, out(reg_byte) cf, out(reg_byte) zf,
             options(nostack));
    }
    outcome(cf, zf)
}

/// VMPTRLD: makes `vmcs` the current VMCS.
///
/// # Safety
/// In VMX root operation; `vmcs` is a cleared, monitor-owned VMCS region
/// carrying the revision identifier of IA32_VMX_BASIC.
pub unsafe fn vmptrld(vmcs: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees the operand is a monitor-owned VMCS
    // region with the right revision identifier.
    unsafe {
        asm!("vmptrld [{}]", "setc {}", "setz {}", in(reg) &vmcs, out(reg_byte) cf, out(reg_byte) zf,
             options(nostack));
    }
    outcome(cf, zf)
}

/// Why the VMREAD or VMWRITE that just failed (CF or ZF set) failed: the
/// VM-instruction error field of the current VMCS if there is one
/// (VMfailValid), VMfailInvalid if reading that field fails too (SDM
/// §31.2: VMfailValid always leaves a current VMCS with the error number
/// in it; VMfailInvalid means there is none).
///
/// Inlined into the (cold) failure branch, so that the exit path needs no
/// call and no saved registers for it.
#[inline(always)]
fn last_failure() -> VmFail {
    core::hint::cold_path();
    // SAFETY: called only after a VMX instruction in VMX root operation
    // (the callers' contract); VMREAD without a current VMCS fails with
    // CF = 1 and writes nothing.
    let (value, cf, zf) = unsafe { vmread_raw(ReadOnly32::VmInstructionError.encoding()) };
    if cf == 0 && zf == 0 {
        VmFail::Valid(InstructionError(value as u32))
    } else {
        VmFail::Invalid
    }
}

/// VMREAD: reads a field of the current VMCS.
///
/// The fast path is the instruction, one `setbe` and one branch: CF and ZF
/// are folded into a single failure flag here and told apart afterwards by
/// `last_failure`.
///
/// # Safety
/// In VMX root operation with a current VMCS.
#[inline(always)]
pub unsafe fn vmread(encoding: u32) -> Result<u64, VmFail> {
    let value: u64;
    let failed: u8;
    // SAFETY: the caller guarantees VMX root operation with a current VMCS;
    // VMREAD with a register destination writes only `value` and the flags.
    unsafe {
        asm!("vmread {v}, {e}", "setbe {f}", v = out(reg) value, e = in(reg) u64::from(encoding),
             f = out(reg_byte) failed, options(nostack, nomem));
    }
    if failed != 0 {
        return Err(last_failure());
    }
    Ok(value)
}

/// A field encoding as the operand of [`vmread_to`] and [`vmwrite`]: the
/// same value, but one the compiler cannot rematerialise as a constant, so
/// that a VMREAD and a VMWRITE of the same field in one function (the RIP
/// advance) share one register load of it instead of one each. An empty
/// `pure` block: no instruction.
#[inline(always)]
fn encoding_register(encoding: u32) -> u64 {
    let mut e = u64::from(encoding);
    // SAFETY: the block is empty; it only hides the value's origin.
    unsafe {
        asm!("/* {e} */", e = inout(reg) e, options(pure, nomem, nostack, preserves_flags));
    }
    e
}

/// VMREAD into memory: reads a field of the current VMCS into `*dst`.
///
/// The fast path is the instruction and one `jbe` (CF = 1 or ZF = 1) to
/// `last_failure`: with a memory destination the block has no output
/// register, so it can branch straight to the failure path, which a
/// register destination cannot (`asm goto` with outputs is unstable). For
/// the exit path, where it saves two instructions per read.
///
/// # Safety
/// In VMX root operation with a current VMCS; `dst` valid for an 8-byte
/// write (VMREAD with a memory operand writes 8 bytes in 64-bit mode,
/// zero-extending fields that are narrower, SDM §31.3 VMREAD).
#[inline(always)]
pub unsafe fn vmread_to(encoding: u32, dst: *mut u64) -> Result<(), VmFail> {
    // SAFETY: the caller guarantees VMX root operation with a current VMCS
    // and a writable `dst`; VMREAD changes only `*dst` and the flags, and
    // the branch leaves the block only for its label.
    unsafe {
        asm!("vmread qword ptr [{d}], {e}", "jbe {fail}", d = in(reg) dst,
             e = in(reg) encoding_register(encoding), fail = label { return Err(last_failure()) },
             options(nostack));
    }
    Ok(())
}

/// VMWRITE: writes a field of the current VMCS.
///
/// The fast path is the instruction and one `jbe` (CF = 1 or ZF = 1) to
/// `last_failure`.
///
/// # Safety
/// In VMX root operation with a current VMCS, and the new value must not
/// break the monitor (host-state fields, EPTP, MSR bitmap address and the
/// like must point at valid monitor-owned memory).
#[inline(always)]
pub unsafe fn vmwrite(encoding: u32, value: u64) -> Result<(), VmFail> {
    // SAFETY: the caller guarantees a current VMCS and a value that keeps
    // the monitor sound; VMWRITE changes only the VMCS and the flags, and
    // the branch leaves the block only for its label.
    unsafe {
        asm!("vmwrite {e}, {v}", "jbe {fail}", e = in(reg) encoding_register(encoding), v = in(reg) value,
             fail = label { return Err(last_failure()) }, options(nostack, nomem));
    }
    Ok(())
}

/// An INVEPT or INVVPID descriptor (SDM Vol. 3C §31.3, Figure 31-1/31-2).
#[repr(C, align(16))]
struct InvDescriptor([u64; 2]);

/// INVEPT: invalidates EPT-derived translations. `kind` 1 = single-context
/// (for `eptp`), 2 = all-context.
///
/// # Safety
/// In VMX root operation; `kind` must be supported (IA32_VMX_EPT_VPID_CAP).
pub unsafe fn invept(kind: u64, eptp: u64) -> Result<(), VmFail> {
    let desc = InvDescriptor([eptp, 0]);
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees VMX root operation and a supported
    // type; INVEPT only reads the 16-byte descriptor on this frame.
    unsafe {
        asm!("invept {}, [{}]", "setc {}", "setz {}", in(reg) kind, in(reg) &desc,
             out(reg_byte) cf, out(reg_byte) zf, options(nostack, readonly));
    }
    outcome(cf, zf)
}

/// INVVPID: invalidates VPID-tagged translations. `kind` 0 = individual
/// address, 1 = single-context, 2 = all-context, 3 = single-context
/// retaining globals.
///
/// # Safety
/// In VMX root operation; `kind` must be supported (IA32_VMX_EPT_VPID_CAP).
pub unsafe fn invvpid(kind: u64, vpid: u16, address: u64) -> Result<(), VmFail> {
    let desc = InvDescriptor([u64::from(vpid), address]);
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees VMX root operation and a supported
    // type; INVVPID only reads the 16-byte descriptor on this frame.
    unsafe {
        asm!("invvpid {}, [{}]", "setc {}", "setz {}", in(reg) kind, in(reg) &desc,
             out(reg_byte) cf, out(reg_byte) zf, options(nostack, readonly));
    }
    outcome(cf, zf)
}
