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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_land_where_the_sdm_puts_them() {
        let mut page = [0u8; 4096];
        let mut b = MsrBitmap::new(&mut page);
        assert!(b.intercept(crate::msrs::IA32_LSTAR, MsrAccess::Write));
        assert!(!b.intercept(0x1_0000, MsrAccess::Read));
        // LSTAR write: high write bitmap at 3072, index 0x82 -> byte 16, bit 2.
        assert_eq!(page[3072 + 16], 1 << 2);
    }
}
