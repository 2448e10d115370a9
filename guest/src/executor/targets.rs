//! Where the executor's operations aim: each [`Class`] of memory resolved
//! to an address range of this boot, and what the executor knows is
//! protected (for the remap rules of [`guest::fuzz::pte_update_allowed`]).

use crate::kernel::{self, Pages, protect};
use guest::fuzz::{Class, Protected};
use guest::tasks::{CONTAINER_A, CONTAINER_B};

/// A page of kernel data in no region: the executor's scratch memory. Its
/// first bytes hold code (`mov eax, 0x1234; ret`) that W^X must refuse to
/// run.
pub static SCRATCH: Pages<[u8; 4096]> = Pages::new([0; 4096]);
/// Spare pages in no region, for the protected-page calls.
pub static SPARE: Pages<[[u8; 4096]; 2]> = Pages::new([[0; 4096]; 2]);

/// A non-canonical address (bit 63 set, bits 62:47 clear).
pub const NON_CANONICAL: u64 = 0x8000_0000_0000_0000;

/// The resolved classes.
#[derive(Debug, Clone, Copy)]
pub struct Targets {
    ranges: [(u64, u64); Class::ALL.len()],
    /// Protected pages allocated during the current case (besides the
    /// tasks' own), which the remap rules also protect.
    pub extra_protected: [Option<u64>; 2],
    /// Whether the case's own protected page is protected (a case may free
    /// it; the reset gives it back).
    pub own_protected: bool,
}

impl Targets {
    /// Resolves every class for this boot: `monitor` and `pool` are pages
    /// of the monitor's image and frame pool from the hand-off map. The
    /// model is the locked policy whether or not this boot locked it (the
    /// negative controls must see violations).
    pub fn new(monitor: Option<u64>, pool: Option<u64>) -> Self {
        let regions = protect::regions();
        let region = |name: &str| {
            regions
                .iter()
                .find(|r| r.name == name)
                .map_or((0, 0), |r| (r.base, r.len))
        };
        let l = kernel::layout();
        let page = |a: Option<u64>| a.map_or((0, 0), |a| (a & !0xfff, 4096));
        let ranges = Class::ALL.map(|c| match c {
            Class::Scratch => (SCRATCH.addr(), 4096),
            Class::Text => region("text"),
            Class::UserText => region("user-text"),
            Class::Rodata => region("rodata"),
            Class::DescriptorTables => region("descriptor-tables"),
            Class::PageTables => region("page-tables"),
            Class::Credentials => region("credentials"),
            Class::SyscallTable => region("syscall-table"),
            Class::OwnSecret => (l.frames[CONTAINER_A].secret, 4096),
            Class::OtherSecret => (l.frames[CONTAINER_B].secret, 4096),
            Class::MonitorImage => page(monitor),
            Class::MonitorPool => page(pool),
            Class::NonCanonical => (NON_CANONICAL, 4096),
            Class::Spare => (SPARE.addr(), 2 * 4096),
        });
        Self {
            ranges,
            extra_protected: [None; 2],
            own_protected: true,
        }
    }

    /// The range of `class` (`len` 0: this boot has none).
    pub fn range(&self, class: Class) -> (u64, u64) {
        self.ranges[class as usize]
    }

    /// An 8-aligned address `offset` into `class` (reduced modulo its
    /// size), or `None` when the class is empty.
    pub fn addr(&self, class: Class, offset: u32) -> Option<u64> {
        let (base, len) = self.range(class);
        (len != 0).then(|| base + ((u64::from(offset) % len) & !7))
    }

    /// A 4 KiB-aligned page `offset` pages into `class`.
    pub fn page(&self, class: Class, offset: u32) -> Option<u64> {
        let (base, len) = self.range(class);
        (len != 0).then(|| base + (u64::from(offset) * 4096) % len.next_multiple_of(4096))
    }

    /// The class whose range holds `addr`.
    pub fn class_of(&self, addr: u64) -> Option<Class> {
        Class::ALL.into_iter().find(|&c| self.overlaps(c, addr, 1))
    }

    fn overlaps(&self, class: Class, base: u64, len: u64) -> bool {
        let (b, l) = self.range(class);
        l != 0 && b < base.saturating_add(len) && base < b + l
    }
}

impl Protected for Targets {
    fn protected_data(&self, base: u64, len: u64) -> bool {
        let regions = [
            Class::Text,
            Class::UserText,
            Class::Rodata,
            Class::DescriptorTables,
            Class::Credentials,
            Class::SyscallTable,
        ];
        regions.iter().any(|&c| self.overlaps(c, base, len))
            || (self.own_protected && self.overlaps(Class::OwnSecret, base, len))
            || self.overlaps(Class::OtherSecret, base, len)
            || self
                .extra_protected
                .iter()
                .flatten()
                .any(|&p| p < base.saturating_add(len) && base < p + 4096)
    }

    fn page_table(&self, base: u64, len: u64) -> bool {
        self.overlaps(Class::PageTables, base, len)
    }
}
