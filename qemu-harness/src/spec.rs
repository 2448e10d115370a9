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
        if let GuestModule::File(p) = &self.guest
            && !p.is_file()
        {
            return Err(crate::HarnessError::Missing {
                what: "guest module",
                path: p.clone(),
            });
        }
        Ok(())
    }

    /// Creates the run directory.
    pub fn make_run_dir(&self) -> Result<(), crate::HarnessError> {
        std::fs::create_dir_all(&self.run_dir).map_err(crate::HarnessError::io(&self.run_dir))
    }
}
