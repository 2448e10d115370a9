//! Why the KVM backend could not boot or run an image: each failure of
//! `/dev/kvm`, of an ioctl, of the image file or of the guest CPU itself,
//! in words that say what to do about it.

use std::path::PathBuf;

/// A failure of the KVM backend (as opposed to an image that ran and
/// reported a failure, which is a [`crate::RunReport`]).
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// The KVM device does not exist.
    #[error("{path} does not exist (no KVM on this host: load kvm_intel or kvm_amd)")]
    NoDevice {
        /// The device path.
        path: PathBuf,
    },
    /// The KVM device exists but this user may not open it read-write.
    #[error("{path} is not accessible (add this user to the `kvm` group): {source}")]
    NoPermission {
        /// The device path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The KVM device could not be opened for another reason.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The device path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file opened is not a KVM device, or speaks another KVM API.
    #[error("{path} is not a KVM device (KVM_GET_API_VERSION: {detail})")]
    NotKvm {
        /// The device path.
        path: PathBuf,
        /// What KVM_GET_API_VERSION answered.
        detail: String,
    },
    /// KVM lacks a capability the backend needs.
    #[error("KVM lacks {0}, which the harness needs (host kernel too old?)")]
    MissingCapability(&'static str),
    /// A KVM ioctl failed.
    #[error("{op} failed: {source}")]
    Ioctl {
        /// The ioctl, in words.
        op: &'static str,
        /// The error KVM returned.
        source: std::io::Error,
    },
    /// The image (or the guest module) cannot be loaded.
    #[error("{path}: {reason}")]
    Image {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Guest memory could not be allocated.
    #[error("cannot map {bytes} bytes of guest memory: {source}")]
    Memory {
        /// The size asked for.
        bytes: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// VM entry failed: KVM_EXIT_FAIL_ENTRY with the hardware reason
    /// (SDM Vol. 3C §28.8 "VM-entry failures during or after loading guest
    /// state": the basic exit reason, bit 31 set).
    #[error(
        "VM entry failed on CPU {cpu}: hardware entry failure reason {reason:#x} \
         (exit reason {basic}{hint}) at RIP {rip:#x}; artifacts in {run_dir}"
    )]
    EntryFailed {
        /// `hardware_entry_failure_reason`.
        reason: u64,
        /// Its basic exit reason (bits 15:0).
        basic: u64,
        /// A few words for the common reasons.
        hint: &'static str,
        /// The host CPU.
        cpu: u32,
        /// The guest RIP.
        rip: u64,
        /// The run directory.
        run_dir: PathBuf,
    },
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    #[error(
        "guest triple fault (KVM_EXIT_SHUTDOWN) at RIP {rip:#x}, CR0 {cr0:#x}; \
         console in {run_dir}/console.log, last lines:\n{last_lines}"
    )]
    TripleFault {
        /// The guest RIP when the CPU shut down.
        rip: u64,
        /// The guest CR0 (whether it was in protected mode, paging).
        cr0: u64,
        /// The run directory.
        run_dir: PathBuf,
        /// The last console lines.
        last_lines: String,
    },
    /// KVM could not emulate something the guest did
    /// (KVM_EXIT_INTERNAL_ERROR).
    #[error(
        "KVM internal error, suberror {suberror} ({hint}) at RIP {rip:#x}; artifacts in {run_dir}"
    )]
    Internal {
        /// `internal.suberror`.
        suberror: u32,
        /// What the suberror means.
        hint: &'static str,
        /// The guest RIP.
        rip: u64,
        /// The run directory.
        run_dir: PathBuf,
    },
    /// KVM returned an exit the backend does not handle.
    #[error("unexpected KVM exit {exit} at RIP {rip:#x}; artifacts in {run_dir}")]
    UnexpectedExit {
        /// The exit, in words.
        exit: String,
        /// The guest RIP.
        rip: u64,
        /// The run directory.
        run_dir: PathBuf,
    },
    /// The harness asked for guest memory outside guest RAM.
    #[error(
        "guest-physical range [{addr:#x}, {addr:#x} + {len:#x}) lies outside guest RAM \
         [0, {ram:#x}) ({what})"
    )]
    OutsideRam {
        /// What the access was for.
        what: &'static str,
        /// The first guest-physical address.
        addr: u64,
        /// The length in bytes.
        len: usize,
        /// The size of guest RAM.
        ram: usize,
    },
    /// A run after a reset did not repeat the first run.
    #[error("run {run} after a reset {why}: the reset does not restore everything")]
    NotReproducible {
        /// Which run (the first is 1).
        run: u32,
        /// How it differed.
        why: String,
    },
}

impl KvmError {
    /// Wraps the error of the ioctl `op`.
    pub(crate) fn ioctl(op: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> Self {
        move |e| KvmError::Ioctl {
            op,
            source: std::io::Error::from_raw_os_error(e.errno()),
        }
    }

    /// Classifies the failure to open the KVM device at `path`.
    pub(crate) fn open(path: PathBuf, source: std::io::Error) -> Self {
        match source.kind() {
            std::io::ErrorKind::NotFound => KvmError::NoDevice { path },
            std::io::ErrorKind::PermissionDenied => KvmError::NoPermission { path, source },
            _ => KvmError::Open { path, source },
        }
    }
}

/// Words for the common VM-entry failure reasons (SDM Vol. 3C Appendix C).
pub(crate) fn entry_failure_hint(basic: u64) -> &'static str {
    match basic {
        33 => ": invalid guest state",
        34 => ": MSR loading",
        41 => ": machine-check event",
        _ => "",
    }
}

/// Words for KVM's internal-error suberrors (`KVM_INTERNAL_ERROR_*`).
pub(crate) fn internal_error_hint(suberror: u32) -> &'static str {
    match suberror {
        1 => "instruction emulation failed",
        2 => "exception while delivering an event (simultaneous #PF?)",
        3 => "unexpected exit during event delivery",
        4 => "unexpected VM exit reason",
        _ => "unknown suberror",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn open_failures_are_classified() {
        let p = PathBuf::from("/dev/kvm");
        let e = KvmError::open(p.clone(), Error::from(ErrorKind::NotFound));
        assert!(matches!(e, KvmError::NoDevice { .. }));
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = KvmError::open(p.clone(), Error::from(ErrorKind::PermissionDenied));
        assert!(e.to_string().contains("not accessible"), "{e}");
        let e = KvmError::open(p, Error::from_raw_os_error(libc::EBUSY));
        assert!(matches!(e, KvmError::Open { .. }), "{e}");
    }

    #[test]
    fn entry_failures_name_the_reason() {
        let e = KvmError::EntryFailed {
            reason: 0x8000_0021,
            basic: 33,
            hint: entry_failure_hint(33),
            cpu: 1,
            rip: 0x10_0000,
            run_dir: PathBuf::from("/tmp/r"),
        };
        let s = e.to_string();
        assert!(
            s.contains("0x80000021") && s.contains("invalid guest state"),
            "{s}"
        );
        assert_eq!(internal_error_hint(1), "instruction emulation failed");
    }
}
