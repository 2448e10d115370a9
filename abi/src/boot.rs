//! The hand-off from the okernel loader to the guest kernel.
//!
//! The guest ELF64 image is entered at its ELF entry point in 64-bit mode,
//! with interrupts disabled, paging on with the first 4 GiB identity-mapped
//! (CR0 with PE, MP, NE, WP and PG set; CD and NW as the firmware left
//! them), and RDI holding the physical address of a [`BootInfo`]. The guest must
//! switch to its own stack, GDT, IDT and page tables before relying on them.
//! Every address in these structures is a physical address.

/// The value of [`BootInfo::magic`]: `"OKBOOT01"` in little-endian.
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"OKBOOT01");

/// How the guest was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum EntryMode {
    /// Entered directly, in VMX root mode (no monitor underneath).
    Direct = 0,
    /// Entered in VMX non-root mode under the okernel monitor.
    NonRoot = 1,
}

impl EntryMode {
    /// Decodes [`BootInfo::entry_mode`].
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(EntryMode::Direct),
            1 => Some(EntryMode::NonRoot),
            _ => None,
        }
    }
}

/// The structure RDI points to at guest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BootInfo {
    /// [`BOOT_MAGIC`].
    pub magic: u64,
    /// The packed ABI version ([`crate::Version::packed`]) of the loader.
    pub abi_version: u32,
    /// An [`EntryMode`] value.
    pub entry_mode: u32,
    /// The guest command line (UTF-8, not NUL-terminated); 0 when none.
    pub cmdline_addr: u64,
    /// Length of the command line in bytes.
    pub cmdline_len: u64,
    /// An array of [`MemoryRegion`] describing RAM the guest may use.
    pub memory_map_addr: u64,
    /// Number of entries in the memory map.
    pub memory_map_len: u64,
}

/// What a [`MemoryRegion`] of the hand-off map holds: the guest's view of
/// physical memory, with the monitor's, the loader's and its own image
/// told apart.
///
/// Not the firmware's E820 types the loader reads (`FirmwareKind` in the
/// loader's `memmap`, which keeps the ACPI kinds this map folds into
/// [`GuestMemoryKind::Reserved`]), nor the monitor's EPT classes
/// (`okernel::memmap::MemoryKind`), nor a locked region's kind in the
/// protection policy ([`crate::policy::RegionKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum GuestMemoryKind {
    /// Free RAM the guest may use.
    Usable = 1,
    /// Firmware, MMIO or anything else the guest must leave alone.
    Reserved = 2,
    /// Memory of the okernel monitor (never accessible to the guest).
    Monitor = 3,
    /// The guest's own image, as loaded.
    GuestImage = 4,
    /// The loader's hand-off to the guest: boot page tables, this
    /// structure, the memory map and the command line.
    BootData = 5,
}

/// One entry of the memory map handed to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct MemoryRegion {
    /// First physical address.
    pub base: u64,
    /// Length in bytes.
    pub length: u64,
    /// A [`GuestMemoryKind`] value.
    pub kind: u32,
    /// Zero.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<BootInfo>() == 48);
const _: () = assert!(core::mem::size_of::<MemoryRegion>() == 24);
