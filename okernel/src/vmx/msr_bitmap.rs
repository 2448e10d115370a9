//! The MSR bitmaps (SDM Vol. 3C §25.6.9 "MSR-Bitmap Address"): one 4 KiB
//! page, four 1 KiB bitmaps. A set bit makes RDMSR/WRMSR of that MSR exit;
//! MSRs outside 0..=0x1FFF and 0xC000_0000..=0xC000_1FFF always exit.

/// Byte offset of the read bitmap for low MSRs.
const READ_LOW: usize = 0;
/// Byte offset of the read bitmap for high MSRs.
const READ_HIGH: usize = 1024;
/// Byte offset of the write bitmap for low MSRs.
const WRITE_LOW: usize = 2048;
/// Byte offset of the write bitmap for high MSRs.
const WRITE_HIGH: usize = 3072;

/// Which access to intercept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrAccess {
    /// RDMSR.
    Read,
    /// WRMSR.
    Write,
}

/// The bit for `msr`: (byte index, bit mask), or `None` outside the ranges.
const fn locate(msr: u32, access: MsrAccess) -> Option<(usize, u8)> {
    let (base, index) = match msr {
        0..=0x1fff => (
            match access {
                MsrAccess::Read => READ_LOW,
                MsrAccess::Write => WRITE_LOW,
            },
            msr,
        ),
        0xc000_0000..=0xc000_1fff => (
            match access {
                MsrAccess::Read => READ_HIGH,
                MsrAccess::Write => WRITE_HIGH,
            },
            msr - 0xc000_0000,
        ),
        _ => return None,
    };
    Some((base + (index / 8) as usize, 1 << (index % 8)))
}

/// A view of an MSR-bitmap page.
#[derive(Debug)]
pub struct MsrBitmap<'a> {
    page: &'a mut [u8; 4096],
}

impl<'a> MsrBitmap<'a> {
    /// Wraps a page and clears it: no MSR access exits.
    pub fn new(page: &'a mut [u8; 4096]) -> Self {
        page.fill(0);
        Self { page }
    }

    /// Wraps a page as it is (nothing cleared).
    pub fn wrap(page: &'a mut [u8; 4096]) -> Self {
        Self { page }
    }

    /// Makes `access` to `msr` exit. Returns false for MSRs outside the
    /// bitmap ranges, which exit anyway.
    pub fn intercept(&mut self, msr: u32, access: MsrAccess) -> bool {
        match locate(msr, access) {
            Some((byte, bit)) => {
                self.page[byte] |= bit;
                true
            }
            None => false,
        }
    }

    /// Lets `access` to `msr` pass without an exit. Returns false for MSRs
    /// outside the bitmap ranges, which exit anyway.
    pub fn pass(&mut self, msr: u32, access: MsrAccess) -> bool {
        match locate(msr, access) {
            Some((byte, bit)) => {
                self.page[byte] &= !bit;
                true
            }
            None => false,
        }
    }

    /// Makes both reads and writes of every MSR in `msrs` exit.
    pub fn intercept_all(&mut self, msrs: impl IntoIterator<Item = u32>) {
        for m in msrs {
            self.intercept(m, MsrAccess::Read);
            self.intercept(m, MsrAccess::Write);
        }
    }

    /// Whether `access` to `msr` exits.
    pub fn exits(&self, msr: u32, access: MsrAccess) -> bool {
        locate(msr, access).is_none_or(|(byte, bit)| self.page[byte] & bit != 0)
    }
}

/// The okernel base configuration: default deny. Every bit is set (every
/// RDMSR and WRMSR in the bitmap ranges exits) except those of the
/// accesses [`crate::exit::msr_table::TABLE`] passes through
/// ([`crate::exit::msr_table::Read::Pass`],
/// [`crate::exit::msr_table::Write::Pass`], and
/// [`crate::exit::msr_table::Write::Lockable`] until the policy locks the
/// MSR). An MSR the table does not list always exits.
pub fn configure_base(page: &mut [u8; 4096]) {
    use crate::exit::msr_table::{Read, TABLE, Write};
    page.fill(0xff);
    let mut b = MsrBitmap::wrap(page);
    for row in TABLE {
        for m in row.first..=row.last {
            if row.read == Read::Pass {
                b.pass(m, MsrAccess::Read);
            }
            if matches!(row.write, Write::Pass | Write::Lockable) {
                b.pass(m, MsrAccess::Write);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_bitmap_is_default_deny() {
        let mut page = [0u8; 4096];
        configure_base(&mut page);
        let b = MsrBitmap { page: &mut page };
        // Unlisted MSRs in both ranges exit both ways.
        for m in [
            0x0,
            0x11,
            0x33,
            0x79,
            0x140,
            0x600,
            0x7ff,
            0x900,
            0x1fff,
            0xc000_0085,
            0xc000_1fff,
        ] {
            assert!(b.exits(m, MsrAccess::Read), "{m:#x}");
            assert!(b.exits(m, MsrAccess::Write), "{m:#x}");
        }
        // Hidden.
        for m in [0x3a, 0x480, 0x48c, 0x491, 0x493, 0x9b] {
            assert!(b.exits(m, MsrAccess::Read), "{m:#x}");
            assert!(b.exits(m, MsrAccess::Write), "{m:#x}");
        }
        // Read passes, write mediated.
        for m in [
            0x10, 0x1b, 0x800, 0x830, 0x8ff, 0x1a0, 0xda0, 0x200, 0x2ff, 0x560, 0x587,
        ] {
            assert!(!b.exits(m, MsrAccess::Read), "{m:#x}");
            assert!(b.exits(m, MsrAccess::Write), "{m:#x}");
        }
        // Hot and harmless, or lockable (passed until locked).
        for m in [
            0x48,
            0x1d9,
            0x277,
            0x6e0,
            0xc000_0080,
            0xc000_0082,
            0xc000_0100,
            0xc000_0102,
        ] {
            assert!(!b.exits(m, MsrAccess::Read), "{m:#x}");
            assert!(!b.exits(m, MsrAccess::Write), "{m:#x}");
        }
        // Outside the ranges: always exits.
        assert!(b.exits(0x4000_0000, MsrAccess::Read));
        assert!(b.exits(0x2000, MsrAccess::Write));
    }

    #[test]
    fn bits_land_where_the_sdm_puts_them() {
        let mut page = [0u8; 4096];
        let mut b = MsrBitmap::new(&mut page);
        assert!(b.intercept(0xc000_0082, MsrAccess::Write));
        assert!(!b.intercept(0x1_0000, MsrAccess::Read));
        // LSTAR write: high write bitmap at 3072, index 0x82 -> byte 16, bit 2.
        assert_eq!(page[3072 + 16], 1 << 2);
    }
}
