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

/// The okernel base configuration: IA32_FEATURE_CONTROL, the VMX
/// capability MSRs (0x480..=0x493) and IA32_SMM_MONITOR_CTL exit on read
/// and write; IA32_APIC_BASE and the x2APIC MSRs (0x800..=0x8FF) exit on
/// write (`exit::apic`: no relocation of the APIC page, no
/// INIT/SIPI/SMI/NMI IPIs), and so do the MSRs whose state the guest
/// shares with the monitor (`exit::msr_shared`: TSC, MISC_ENABLE, XSS,
/// MTRRs, Intel PT); every other MSR in range passes through.
pub fn configure_base(page: &mut [u8; 4096]) {
    use super::capability::msr;
    use crate::exit::apic;
    let mut b = MsrBitmap::new(page);
    b.intercept_all(core::iter::once(msr::IA32_FEATURE_CONTROL));
    b.intercept_all(msr::IA32_VMX_BASIC..=msr::IA32_VMX_EXIT_CTLS2);
    b.intercept(apic::IA32_APIC_BASE, MsrAccess::Write);
    for m in apic::X2APIC_MSRS.chain(crate::exit::msr_shared::write_intercepted()) {
        b.intercept(m, MsrAccess::Write);
    }
    b.intercept(
        crate::exit::msr_shared::IA32_SMM_MONITOR_CTL,
        MsrAccess::Read,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_bitmap_hides_vmx_msrs_and_mediates_apic_writes() {
        let mut page = [0xffu8; 4096];
        configure_base(&mut page);
        let b = MsrBitmap { page: &mut page };
        for m in [0x3a, 0x480, 0x48c, 0x491, 0x493] {
            assert!(b.exits(m, MsrAccess::Read), "{m:#x}");
            assert!(b.exits(m, MsrAccess::Write), "{m:#x}");
        }
        for m in [0x1b, 0x800, 0x808, 0x830, 0x83f, 0x8ff] {
            assert!(!b.exits(m, MsrAccess::Read), "{m:#x}");
            assert!(b.exits(m, MsrAccess::Write), "{m:#x}");
        }
        for m in [
            0x11,
            0x7ff,
            0x900,
            0x277,
            0x479,
            0x494,
            0xc000_0080,
            0xc000_0082,
            0xc000_0100,
        ] {
            assert!(!b.exits(m, MsrAccess::Read), "{m:#x}");
            assert!(!b.exits(m, MsrAccess::Write), "{m:#x}");
        }
        for m in [
            0x10, 0x1a0, 0xda0, 0x200, 0x21f, 0x250, 0x2ff, 0x560, 0x570, 0x587,
        ] {
            assert!(!b.exits(m, MsrAccess::Read), "{m:#x} read passes");
            assert!(b.exits(m, MsrAccess::Write), "{m:#x} write exits");
        }
        assert!(b.exits(0x9b, MsrAccess::Read) && b.exits(0x9b, MsrAccess::Write));
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
