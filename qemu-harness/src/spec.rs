//! What to boot.

use std::path::PathBuf;
use std::time::Duration;

/// The guest module of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestModule {
    /// No module at all (the image must refuse to go on).
    None,
    /// A file passed as the first boot module.
    File(PathBuf),
    /// A Linux host kernel (ELF vmlinux entered at its PVH entry, or a
    /// bzImage) as the first boot module, its command line the module's
    /// string, and its initramfs as the second. Runs get
    /// [`LINUX_RAM_MIB`] of RAM.
    Linux {
        /// The kernel.
        kernel: PathBuf,
        /// The initramfs.
        initrd: PathBuf,
    },
}

/// Guest RAM of a run, in MiB.
pub const RAM_MIB: u32 = 256;
/// Guest RAM of a Linux run, in MiB: Debian's kernel loads 74 MiB at
/// 16 MiB and wants room for its page cache and the initramfs.
pub const LINUX_RAM_MIB: u32 = 512;

impl GuestModule {
    /// The files the run passes as boot modules, with what each is.
    pub fn files(&self) -> Vec<(&'static str, &PathBuf)> {
        match self {
            GuestModule::None => Vec::new(),
            GuestModule::File(p) => vec![("guest module", p)],
            GuestModule::Linux { kernel, initrd } => {
                vec![("Linux kernel", kernel), ("initramfs", initrd)]
            }
        }
    }

    /// The RAM a run of this module gets, in MiB.
    pub fn ram_mib(&self) -> u32 {
        match self {
            GuestModule::Linux { .. } => LINUX_RAM_MIB,
            _ => RAM_MIB,
        }
    }
}

/// One boot of an okernel image.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// A name for the run directory and tables (`boot`, `corrupt-elf`).
    pub name: String,
    /// The okernel image (the loader ELF).
    pub image: PathBuf,
    /// The guest module.
    pub guest: GuestModule,
    /// The image's command line (`log=info`).
    pub cmdline: String,
    /// The guest's command line (`scenario=boot`).
    pub guest_cmdline: String,
    /// How long to wait for the outcome before the run is killed.
    pub timeout: Duration,
    /// Where the run keeps its artifacts; created if missing.
    pub run_dir: PathBuf,
    /// Wait for a debugger before the first instruction (QEMU `-s -S`).
    pub gdb: bool,
}

impl RunSpec {
    /// Checks that the files the run needs exist.
    pub fn check_files(&self) -> Result<(), crate::HarnessError> {
        if !self.image.is_file() {
            return Err(crate::HarnessError::Missing {
                what: "okernel image",
                path: self.image.clone(),
            });
        }
        for (what, p) in self.guest.files() {
            if !p.is_file() {
                return Err(crate::HarnessError::Missing {
                    what,
                    path: p.clone(),
                });
            }
        }
        Ok(())
    }

    /// Creates the run directory.
    pub fn make_run_dir(&self) -> Result<(), crate::HarnessError> {
        std::fs::create_dir_all(&self.run_dir).map_err(crate::HarnessError::io(&self.run_dir))
    }
}
