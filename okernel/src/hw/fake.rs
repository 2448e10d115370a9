//! Fakes of [`Vmcs`] and [`Cpu`] for host tests: fixed-size tables, no
//! allocation, so they also build without `std` (feature `fake`).
//!
//! The fakes behave like the hardware where it matters to the monitor:
//! VMREAD/VMWRITE of an encoding the SDM does not define fails with
//! VM-instruction error 12, VMWRITE of a read-only field with error 13, and
//! RDMSR/WRMSR of an MSR the fake CPU does not have panics ("would #GP"),
//! so a test fails if the monitor touches an MSR before proving it exists.

use super::{Cpu, CpuidResult, InveptKind, Vmcs};
use crate::bits::{
    CPUID1_ECX_VMX, CPUID1_ECX_XSAVE, CR0_ET, CR0_MP, CR0_NE, CR0_PE, CR0_PG, CR4_OSXSAVE, CR4_PAE,
    EFER_LMA, EFER_LME, EFER_NXE, EFER_SCE,
};
use crate::vmx::error::{InstructionError, VmFail};
use crate::vmx::fields::{self, Field, Kind};

const VMCS_SLOTS: usize = 192;

/// A fake current VMCS.
#[derive(Debug, Clone)]
pub struct FakeVmcs {
    fields: [(u32, u64); VMCS_SLOTS],
    len: usize,
    /// The number of VMWRITEs performed through [`Vmcs::write_raw`].
    pub writes: usize,
}

impl Default for FakeVmcs {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeVmcs {
    /// An empty VMCS: every field reads as 0.
    pub const fn new() -> Self {
        Self {
            fields: [(0, 0); VMCS_SLOTS],
            len: 0,
            writes: 0,
        }
    }

    fn slot(&self, encoding: u32) -> Option<usize> {
        self.fields[..self.len]
            .iter()
            .position(|&(e, _)| e == encoding)
    }

    /// Sets any field, read-only ones included (the processor's side of a
    /// VM exit: exit reason, qualification, instruction length, ...).
    pub fn set<F: Field>(&mut self, field: F, value: u64) -> &mut Self {
        self.store(field.encoding(), value);
        self
    }

    /// Reads any field without going through [`Vmcs`].
    pub fn get<F: Field>(&self, field: F) -> u64 {
        self.slot(field.encoding()).map_or(0, |i| self.fields[i].1)
    }

    fn store(&mut self, encoding: u32, value: u64) {
        match self.slot(encoding) {
            Some(i) => self.fields[i].1 = value,
            None => {
                assert!(self.len < VMCS_SLOTS, "fake VMCS full");
                self.fields[self.len] = (encoding, value);
                self.len += 1;
            }
        }
    }
}

impl Vmcs for FakeVmcs {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        if !fields::is_known(encoding) {
            return Err(VmFail::Valid(InstructionError::UNSUPPORTED_COMPONENT));
        }
        Ok(self.slot(encoding).map_or(0, |i| self.fields[i].1))
    }

    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        if !fields::is_known(encoding) {
            return Err(VmFail::Valid(InstructionError::UNSUPPORTED_COMPONENT));
        }
        if Kind::of(encoding) == Kind::ReadOnly {
            return Err(VmFail::Valid(InstructionError::VMWRITE_READ_ONLY));
        }
        self.writes += 1;
        self.store(encoding, value);
        Ok(())
    }
}

const CPUID_SLOTS: usize = 32;
const MSR_SLOTS: usize = 96;
const PORT_SLOTS: usize = 16;
const OUT_SLOTS: usize = 64;

/// A fake processor with programmable CPUID leaves and MSRs.
#[derive(Debug, Clone)]
pub struct FakeCpu {
    cpuid: [((u32, u32), CpuidResult); CPUID_SLOTS],
    cpuid_len: usize,
    msrs: [(u32, u64); MSR_SLOTS],
    msr_len: usize,
    /// CR0.
    pub cr0: u64,
    /// CR2.
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// XCR0 as last set by XSETBV.
    pub xcr0: u64,
    /// How many WBINVDs ran.
    pub wbinvds: usize,
    /// How many INVEPTs ran.
    pub invepts: usize,
    /// How many WRMSRs ran.
    pub msr_writes: usize,
    /// How many INVVPIDs ran.
    pub invvpids: usize,
    ports: [(u16, u32); PORT_SLOTS],
    port_len: usize,
    outs: [(u16, u8, u32); OUT_SLOTS],
    out_len: usize,
    /// PCI configuration dwords: (CONFIG_ADDRESS with bit 31 and the
    /// register, value, writable bits), reached by dword accesses to
    /// 0xCFC with CONFIG_ADDRESS (port 0xCF8) selecting them.
    pci: [(u32, u32, u32); PORT_SLOTS],
    pci_len: usize,
    /// The xAPIC's registers (offset / 16), as the monitor last wrote
    /// them (tests set the read-only ones directly).
    pub xapic: [u32; XAPIC_REGISTERS],
    /// How many xAPIC writes the monitor made.
    pub xapic_writes: usize,
}

/// Registers of the xAPIC page the fake keeps (offsets 0 to 0x3f0).
pub const XAPIC_REGISTERS: usize = 64;

impl Default for FakeCpu {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeCpu {
    /// A processor with no CPUID leaves (all read as zero) and no MSRs.
    pub const fn new() -> Self {
        Self {
            cpuid: [(
                (0, 0),
                CpuidResult {
                    eax: 0,
                    ebx: 0,
                    ecx: 0,
                    edx: 0,
                },
            ); CPUID_SLOTS],
            cpuid_len: 0,
            msrs: [(0, 0); MSR_SLOTS],
            msr_len: 0,
            cr0: CR0_PG | CR0_NE | CR0_ET | CR0_MP | CR0_PE,
            cr2: 0,
            cr3: 0x1000,
            cr4: CR4_PAE,
            xcr0: 1,
            wbinvds: 0,
            invepts: 0,
            msr_writes: 0,
            invvpids: 0,
            ports: [(0, 0); PORT_SLOTS],
            port_len: 0,
            outs: [(0, 0, 0); OUT_SLOTS],
            out_len: 0,
            pci: [(0, 0, 0); PORT_SLOTS],
            pci_len: 0,
            xapic: [0; XAPIC_REGISTERS],
            xapic_writes: 0,
        }
    }

    /// Sets the result of CPUID(`leaf`, `subleaf`).
    pub fn set_cpuid(&mut self, leaf: u32, subleaf: u32, r: CpuidResult) -> &mut Self {
        if let Some(i) = self.cpuid[..self.cpuid_len]
            .iter()
            .position(|e| e.0 == (leaf, subleaf))
        {
            self.cpuid[i].1 = r;
        } else {
            assert!(self.cpuid_len < CPUID_SLOTS, "fake CPUID table full");
            self.cpuid[self.cpuid_len] = ((leaf, subleaf), r);
            self.cpuid_len += 1;
        }
        self
    }

    /// Gives the processor an MSR with a value.
    pub fn set_msr(&mut self, msr: u32, value: u64) -> &mut Self {
        if let Some(i) = self.msrs[..self.msr_len].iter().position(|e| e.0 == msr) {
            self.msrs[i].1 = value;
        } else {
            assert!(self.msr_len < MSR_SLOTS, "fake MSR table full");
            self.msrs[self.msr_len] = (msr, value);
            self.msr_len += 1;
        }
        self
    }

    /// Removes an MSR (accessing it will then "#GP").
    pub fn remove_msr(&mut self, msr: u32) -> &mut Self {
        if let Some(i) = self.msrs[..self.msr_len].iter().position(|e| e.0 == msr) {
            self.msrs.copy_within(i + 1..self.msr_len, i);
            self.msr_len -= 1;
        }
        self
    }

    /// Gives I/O port `port` a value (what IN reads; an OUT replaces it).
    /// An unset port reads all ones, as with no device.
    pub fn set_port(&mut self, port: u16, value: u32) -> &mut Self {
        if let Some(i) = self.ports[..self.port_len].iter().position(|e| e.0 == port) {
            self.ports[i].1 = value;
        } else {
            assert!(self.port_len < PORT_SLOTS, "fake port table full");
            self.ports[self.port_len] = (port, value);
            self.port_len += 1;
        }
        self
    }

    /// Gives the fake a PCI configuration dword at `address` (CONFIG_ADDRESS
    /// form, bit 31 set) holding `value`, of which `writable` bits take
    /// writes (a BAR: its address bits above its size).
    pub fn set_pci(&mut self, address: u32, value: u32, writable: u32) -> &mut Self {
        assert!(self.pci_len < PORT_SLOTS, "fake PCI table full");
        self.pci[self.pci_len] = (address, value, writable);
        self.pci_len += 1;
        self
    }

    /// The PCI configuration dword at `address` (panics if not given).
    pub fn pci(&self, address: u32) -> u32 {
        self.pci[..self.pci_len]
            .iter()
            .find(|e| e.0 == address)
            .map(|e| e.1)
            .expect("a PCI register the test gave")
    }

    /// The selected PCI configuration dword, for a dword at 0xCFC.
    /// The register an xAPIC access at `pa` reaches: the page
    /// IA32_APIC_BASE names, at a register's start (what `exit::xapic`
    /// promises; anything else is a monitor bug the tests must see).
    fn xapic_register(&self, pa: u64) -> usize {
        let base = self.read_msr(crate::msrs::IA32_APIC_BASE) & crate::bits::APIC_BASE_ADDRESS;
        let offset = pa.wrapping_sub(base);
        assert!(
            offset < (XAPIC_REGISTERS as u64) * 16 && offset.is_multiple_of(16),
            "xAPIC access at {pa:#x} outside the registers of the page at {base:#x}"
        );
        (offset / 16) as usize
    }

    fn pci_slot(&self, port: u16, size: u8) -> Option<usize> {
        if port != 0xcfc || size != 4 {
            return None;
        }
        let address = self.ports[..self.port_len].iter().find(|e| e.0 == 0xcf8)?.1;
        self.pci[..self.pci_len].iter().position(|e| e.0 == address)
    }

    /// The OUTs performed, oldest first: (port, size, value).
    pub fn outs(&self) -> &[(u16, u8, u32)] {
        &self.outs[..self.out_len]
    }

    /// Whether the processor has the MSR.
    pub fn has_msr(&self, msr: u32) -> bool {
        self.msrs[..self.msr_len].iter().any(|e| e.0 == msr)
    }
}

impl Cpu for FakeCpu {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        self.cpuid[..self.cpuid_len]
            .iter()
            .find(|e| e.0 == (leaf, subleaf))
            .map_or(CpuidResult::default(), |e| e.1)
    }

    fn read_msr(&self, msr: u32) -> u64 {
        match self.msrs[..self.msr_len].iter().find(|e| e.0 == msr) {
            Some(e) => e.1,
            None => panic!("RDMSR {msr:#x}: MSR not present, the hardware would raise #GP"),
        }
    }

    fn write_msr(&mut self, msr: u32, value: u64) {
        assert!(
            self.has_msr(msr),
            "WRMSR {msr:#x}: MSR not present, the hardware would raise #GP"
        );
        self.msr_writes += 1;
        self.set_msr(msr, value);
    }

    fn read_cr0(&self) -> u64 {
        self.cr0
    }

    fn read_cr3(&self) -> u64 {
        self.cr3
    }

    fn read_cr4(&self) -> u64 {
        self.cr4
    }

    fn write_cr0(&mut self, value: u64) {
        self.cr0 = value;
    }

    fn write_cr4(&mut self, value: u64) {
        self.cr4 = value;
    }

    fn write_cr2(&mut self, value: u64) {
        self.cr2 = value;
    }

    fn xsetbv(&mut self, xcr: u32, value: u64) {
        assert_eq!(xcr, 0, "XSETBV of XCR{xcr}: the hardware would raise #GP");
        self.xcr0 = value;
    }

    fn wbinvd(&mut self) {
        self.wbinvds += 1;
    }

    fn invept(&mut self, _kind: InveptKind) -> Result<(), VmFail> {
        self.invepts += 1;
        Ok(())
    }

    fn invvpid_single(&mut self, _vpid: u16) -> Result<(), VmFail> {
        self.invvpids += 1;
        Ok(())
    }

    fn port_in(&mut self, port: u16, size: u8) -> u32 {
        if let Some(i) = self.pci_slot(port, size) {
            return self.pci[i].1;
        }
        let v = self.ports[..self.port_len]
            .iter()
            .find(|e| e.0 == port)
            .map_or(u32::MAX, |e| e.1);
        match size {
            1 => v & 0xff,
            2 => v & 0xffff,
            _ => v,
        }
    }

    fn xapic_read(&self, pa: u64) -> u32 {
        self.xapic[self.xapic_register(pa)]
    }

    fn xapic_write(&mut self, pa: u64, value: u32) {
        let r = self.xapic_register(pa);
        self.xapic[r] = value;
        self.xapic_writes += 1;
    }

    fn port_out(&mut self, port: u16, size: u8, value: u32) {
        assert!(self.out_len < OUT_SLOTS, "fake OUT log full");
        self.outs[self.out_len] = (port, size, value);
        self.out_len += 1;
        if let Some(i) = self.pci_slot(port, size) {
            let (_, old, writable) = self.pci[i];
            self.pci[i].1 = (value & writable) | (old & !writable);
            return;
        }
        self.set_port(port, value);
    }
}

impl FakeCpu {
    /// A processor shaped like Bochs' `corei7_skylake_x` model: VMX with
    /// TRUE controls, EPT (4-level, WB, 2M and 1G pages, INVEPT), VPID,
    /// unrestricted guest, XSAVE, and IA32_FEATURE_CONTROL unlocked (as
    /// without firmware). Each capability test removes one feature.
    pub fn vmx_capable() -> Self {
        use crate::msrs::*;
        let mut c = Self::new();
        c.set_cpuid(
            0,
            0,
            CpuidResult {
                eax: 0xd,
                ebx: 0x756e_6547,
                ecx: 0x6c65_746e,
                edx: 0x4965_6e69,
            },
        )
        .set_cpuid(
            1,
            0,
            CpuidResult {
                eax: 0x5_0654,
                ebx: 0x0001_0800,
                ecx: CPUID1_ECX_VMX | CPUID1_ECX_XSAVE | 1, // and SSE3
                edx: 0x0f8b_fbff,
            },
        )
        .set_cpuid(
            0xd,
            0,
            CpuidResult {
                eax: 0x7,
                ebx: 0x340,
                ecx: 0x340,
                edx: 0,
            },
        )
        .set_msr(IA32_FEATURE_CONTROL, 0)
        .set_msr(
            IA32_VMX_BASIC,
            (1 << 55) | (1 << 54) | (6 << 50) | (0x1000 << 32) | 4,
        )
        .set_msr(IA32_VMX_PINBASED_CTLS, 0x0000_007f_0000_0016)
        .set_msr(IA32_VMX_PROCBASED_CTLS, 0xfff9_fffe_0401_e172)
        .set_msr(IA32_VMX_EXIT_CTLS, 0x01ff_ffff_0003_6dff)
        .set_msr(IA32_VMX_ENTRY_CTLS, 0x0003_ffff_0000_11ff)
        .set_msr(IA32_VMX_MISC, 0x0000_0000_0300_0020)
        .set_msr(IA32_VMX_CR0_FIXED0, 0x8000_0021)
        .set_msr(IA32_VMX_CR0_FIXED1, 0xffff_ffff)
        .set_msr(IA32_VMX_CR4_FIXED0, 0x2000)
        .set_msr(IA32_VMX_CR4_FIXED1, 0x0037_27ff)
        .set_msr(IA32_VMX_VMCS_ENUM, 0x2e)
        .set_msr(IA32_VMX_PROCBASED_CTLS2, 0x0053_7fff_0000_0000)
        .set_msr(IA32_VMX_EPT_VPID_CAP, 0x0000_0f01_0633_4141)
        .set_msr(IA32_VMX_TRUE_PINBASED_CTLS, 0x0000_007f_0000_0016)
        .set_msr(IA32_VMX_TRUE_PROCBASED_CTLS, 0xfff9_fffe_0400_6172)
        .set_msr(IA32_VMX_TRUE_EXIT_CTLS, 0x01ff_ffff_0003_6dfb)
        .set_msr(IA32_VMX_TRUE_ENTRY_CTLS, 0x0003_ffff_0000_11fb)
        .set_msr(IA32_VMX_VMFUNC, 1)
        .set_msr(IA32_EFER, EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE)
        .set_msr(IA32_PAT, 0x0007_0406_0007_0406)
        .set_msr(IA32_FS_BASE, 0)
        .set_msr(IA32_GS_BASE, 0)
        .set_msr(IA32_SYSENTER_CS, 0)
        .set_msr(IA32_SYSENTER_ESP, 0)
        .set_msr(IA32_SYSENTER_EIP, 0)
        .set_msr(IA32_DEBUGCTL, 0);
        // CPUID.1:EDX.MTRR is set above: the MTRRs exist (IA32_MTRRCAP:
        // 8 variable ranges, fixed ranges, WC; the default type WB, on).
        c.set_msr(IA32_MTRRCAP, 0x508)
            .set_msr(IA32_MTRR_DEF_TYPE, 0xc06);
        // What the monitor's WRMSR handlers read back: the APIC base (the
        // BSP's xAPIC, enabled), MISC_ENABLE (fast strings), TSC_ADJUST
        // and XSS (the fuzz targets write any of them).
        c.set_msr(IA32_APIC_BASE, 0xfee0_0900)
            .set_msr(IA32_MISC_ENABLE, 1)
            .set_msr(IA32_TSC_ADJUST, 0)
            .set_msr(IA32_XSS, 0);
        for msr in (0x200..=0x20f)
            .chain([0x250, 0x258, 0x259])
            .chain(0x268..=0x26f)
        {
            c.set_msr(msr, 0);
        }
        c.cr4 = CR4_PAE | CR4_OSXSAVE;
        c
    }
}

impl FakeCpu {
    /// RDMSR without the trait (tests that build fixtures).
    pub fn read_msr_for_tests(&self, msr: u32) -> u64 {
        Cpu::read_msr(self, msr)
    }
}

impl FakeCpu {
    /// CPUID leaf `leaf`, subleaf 0, without the trait.
    pub fn cpuid_for_tests(&self, leaf: u32) -> CpuidResult {
        Cpu::cpuid(self, leaf, 0)
    }
}
