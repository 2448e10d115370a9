//! The okernel ABI: everything that crosses the boundary between the
//! okernel image, the guest kernel it runs, and the host-side runners.
//!
//! This crate is `no_std`, has no hardware dependency and no unsafe code, so
//! the monitor, the guest and the harness all share one definition.
//!
//! - [`hypercall`]: VMCALL call numbers, register convention, status codes.
//! - [`request`]: a hypercall's registers decoded into a typed [`Request`]
//!   (or the status of a malformed call), the check shared by the monitor,
//!   the tests and the fuzz targets.
//! - [`cpuid`]: the okernel signature leaves in the hypervisor CPUID range.
//! - [`result`]: the run-result protocol every backend understands.
//! - [`boot`]: the hand-off structure the loader gives the guest kernel.
//! - [`policy`]: region kinds, audit records and other values of the
//!   protection-policy calls.
//! - [`fuzz`]: the VM-fuzzing protocol (monitor calls of fuzz builds, the
//!   coverage map, the case and result frames).
//!
//! The ABI is versioned from day one: [`ABI_VERSION`].
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod boot;
pub mod cpuid;
pub mod fuzz;
pub mod hypercall;
pub mod policy;
pub mod request;
pub mod result;

pub use request::{Registers, Request};

/// An ABI version: `major` changes break callers, `minor` adds calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Incompatible changes.
    pub major: u16,
    /// Backwards-compatible additions.
    pub minor: u16,
}

impl Version {
    /// Packs the version as `major << 16 | minor`, the form hypercalls return.
    pub const fn packed(self) -> u32 {
        ((self.major as u32) << 16) | self.minor as u32
    }

    /// Unpacks a version packed by [`Version::packed`].
    pub const fn from_packed(v: u32) -> Self {
        Self {
            major: (v >> 16) as u16,
            minor: v as u16,
        }
    }
}

/// The version of the ABI this crate describes.
///
/// 1.1: `RegisterGate` takes the gate's stack pointer in RSI (0 keeps
/// the 1.0 meaning) and a redirect to a gate starts from a defined
/// processor state (`docs/hypercall-abi.md`).
///
/// 1.2: `SetExecuteRule` and `RegisterPatchSites`, for a host kernel
/// that executes code outside its registered text and patches its own
/// text (Linux).
///
/// 1.3: `ExitCount`, the monitor's exit counters for a running kernel
/// (what its locks cost).
///
/// 1.4: `RegisterGate` takes the gate's page tables (RDX); a gate starts
/// with the registering kernel's CS/SS, its CR3, NMIs blocked until its
/// first IRET, NT/IOPL/VM clear and the processor active.
///
/// 1.5: `RegisterPatchSites` takes Linux's static-call sites and
/// trampolines (`PatchFormat::LinuxStaticCallSite`,
/// `PatchFormat::LinuxStaticCallTrampoline`).
pub const ABI_VERSION: Version = Version { major: 1, minor: 5 };

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_round_trips() {
        let v = Version { major: 3, minor: 7 };
        assert_eq!(v.packed(), 0x0003_0007);
        assert_eq!(Version::from_packed(v.packed()), v);
    }
}
