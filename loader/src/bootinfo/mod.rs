//! Boot information: what the boot loader (GRUB via multiboot2, or QEMU,
//! the KVM harness and other PVH loaders) tells the image about memory,
//! modules and its command line, reduced to one protocol-neutral form.

mod multiboot2;
mod pvh;

pub use multiboot2::{MULTIBOOT2_MAGIC, acpi_rsdp, parse_multiboot2};
pub use pvh::{PVH_MAGIC, PhysMem, StartInfo, parse_pvh};

use crate::memmap::{MapError, MemoryMap};
use core::fmt;
use okernel::memmap::PhysRange;

/// The boot protocol the image was entered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Multiboot2 (GRUB).
    Multiboot2,
    /// Xen PVH direct boot (QEMU `-kernel`, the KVM harness).
    Pvh,
}

impl Protocol {
    /// The protocol's name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Multiboot2 => "multiboot2",
            Protocol::Pvh => "PVH",
        }
    }
}

/// A module the boot loader placed in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module<'a> {
    /// Where its bytes lie.
    pub range: PhysRange,
    /// Its command line (empty when none).
    pub cmdline: &'a str,
}

/// The most modules okernel accepts.
pub const MAX_MODULES: usize = 8;

/// The protocol-neutral boot information.
#[derive(Debug, Clone)]
pub struct BootInfo<'a> {
    /// How the image was entered.
    pub protocol: Protocol,
    /// The firmware memory map.
    pub memory: MemoryMap,
    /// The image's own command line.
    pub cmdline: &'a str,
    /// Where the boot-information structures themselves lie (they must
    /// survive until the loader is done with them).
    pub info_ranges: [Option<PhysRange>; 2],
    /// A copy of the ACPI RSDP the boot loader passed (multiboot2 ACPI
    /// tags), for a Linux guest's start info; `None` when there is none.
    pub rsdp: Option<&'a [u8]>,
    modules: [Option<Module<'a>>; MAX_MODULES],
}

impl<'a> BootInfo<'a> {
    fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            memory: MemoryMap::new(),
            cmdline: "",
            info_ranges: [None; 2],
            rsdp: None,
            modules: [None; MAX_MODULES],
        }
    }

    fn push_module(&mut self, module: Module<'a>) -> Result<(), BootInfoError> {
        if module.range.is_empty() {
            return Err(BootInfoError::EmptyModule {
                index: self.modules().count(),
            });
        }
        let slot = self
            .modules
            .iter_mut()
            .find(|m| m.is_none())
            .ok_or(BootInfoError::TooManyModules)?;
        *slot = Some(module);
        Ok(())
    }

    /// The modules, in the order the boot loader listed them.
    pub fn modules(&self) -> impl Iterator<Item = &Module<'a>> {
        self.modules.iter().flatten()
    }
}

/// Why the boot information was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootInfoError {
    /// The image was entered by an unknown boot protocol (magic in EAX/EBX).
    UnknownProtocol(u32),
    /// The multiboot2 information structure is malformed or truncated.
    Multiboot2(&'static str),
    /// The PVH start-info magic is wrong.
    BadPvhMagic(u32),
    /// The PVH start info is older than version 1 and has no memory map.
    PvhNoMemoryMap(u32),
    /// A boot-information structure points outside readable memory.
    Unreadable {
        /// What was being read.
        what: &'static str,
        /// Its physical address.
        addr: u64,
    },
    /// A string in the boot information is not valid UTF-8 or has no end.
    BadString(&'static str),
    /// The boot information has no memory map.
    NoMemoryMap,
    /// The memory map is unusable.
    Map(MapError),
    /// More modules than okernel accepts.
    TooManyModules,
    /// A module is empty or ends before it starts.
    EmptyModule {
        /// The module's position in the list.
        index: usize,
    },
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::UnknownProtocol(m) => {
                write!(f, "entered by an unknown boot protocol (magic {m:#x})")
            }
            BootInfoError::Multiboot2(why) => write!(f, "malformed multiboot2 information: {why}"),
            BootInfoError::BadPvhMagic(m) => write!(f, "bad PVH start-info magic {m:#x}"),
            BootInfoError::PvhNoMemoryMap(v) => {
                write!(
                    f,
                    "PVH start info version {v} has no memory map (need version 1)"
                )
            }
            BootInfoError::Unreadable { what, addr } => {
                write!(
                    f,
                    "boot information: {what} at {addr:#x} is outside readable memory"
                )
            }
            BootInfoError::BadString(what) => {
                write!(f, "boot information: {what} is not a valid string")
            }
            BootInfoError::NoMemoryMap => write!(f, "boot information has no memory map"),
            BootInfoError::Map(e) => write!(f, "boot information: {e}"),
            BootInfoError::TooManyModules => write!(f, "more than {MAX_MODULES} boot modules"),
            BootInfoError::EmptyModule { index } => write!(f, "boot module {index} is empty"),
        }
    }
}

impl From<MapError> for BootInfoError {
    fn from(e: MapError) -> Self {
        BootInfoError::Map(e)
    }
}
