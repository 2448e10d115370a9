//! Runners for okernel images.
//!
//! A [`RunSpec`] says what to boot (the okernel image, the guest module,
//! both command lines) and how long to wait; a [`Backend`] boots it and
//! returns a [`RunReport`]: the outcome the image reported through the
//! run-result protocol ([`okernel_abi::result`]), the console, and where
//! the run's artifacts are. Every backend keeps its artifacts (console
//! log, the command line used, generated configuration, emulator logs) in
//! the run directory.
//!
//! Backends: [`qemu::Qemu`] (KVM or TCG, direct PVH boot),
//! [`bochs::Bochs`] (GRUB ISO, emulated VMX) and [`kvm::Kvm`] (in-process
//! on `/dev/kvm`, direct PVH boot, snapshot and reset).

pub mod bochs;
pub mod fuzz;
mod host;
pub mod kvm;
pub mod probe;
pub mod process;
pub mod qemu;
mod report;
mod spec;

pub use host::{KvmHost, kvm_nested_vmx, kvm_problem, kvm_runs_ring3, kvm_usable};
pub use probe::{Availability, Probed};
pub use report::{Check, Expect, RunReport, Verdict};
pub use spec::{GuestModule, LINUX_RAM_MIB, RAM_MIB, RunSpec};

use std::path::PathBuf;

/// Whether a backend can give the image VMX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmxSupport {
    /// VMX is emulated or passed through: the monitor can run.
    Available,
    /// No VMX: the image must report "VMX unavailable".
    Unavailable,
}

/// A way to boot an okernel image.
pub trait Backend {
    /// A short name for tables and run directories (`bochs`, `qemu-kvm`).
    fn name(&self) -> &str;
    /// Whether the image gets VMX on this backend.
    fn vmx(&self) -> VmxSupport;
    /// Boots `spec` and waits for its outcome or its timeout.
    fn run(&self, spec: &RunSpec) -> Result<RunReport, HarnessError>;
}

/// Why a run could not be carried out at all (as opposed to an image that
/// ran and failed, which is a [`RunReport`]).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A file the run needs does not exist.
    #[error("{what} not found at {path} (run `cargo xtask build` first?)")]
    Missing {
        /// What the file is.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// An external program could not be started.
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An external tool ran and failed.
    #[error("`{command}` failed: {detail}")]
    Tool {
        /// The command line.
        command: String,
        /// What it printed or its status.
        detail: String,
    },
    /// The KVM backend could not boot or run the image.
    #[error("kvm: {0}")]
    Kvm(#[from] crate::kvm::KvmError),
    /// A run-directory file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl HarnessError {
    /// Wraps an I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| HarnessError::Io { path, source }
    }
}
