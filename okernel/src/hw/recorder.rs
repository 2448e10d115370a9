//! A recording fake of the processor and the VMCS, for the tests of VMX
//! bring-up (`crate::launch::bringup`): [`RecordingCpu`] wraps a
//! [`FakeCpu`], and the VMCS its VMPTRLD hands out ([`RecordingVmcs`])
//! wraps a [`FakeVmcs`]; both write every operation, in order, into one
//! [`Journal`], which can be told to fail any one of them. No allocation:
//! the journal is a fixed table the test owns and both fakes borrow.
//!
//! Like the other fakes, these behave like the hardware where it matters
//! to bring-up: VMXON with CR4.VMXE clear panics ("would raise #UD"), as
//! does VMXON with CR0 or CR4 outside the VMX fixed bits ("#GP"), and
//! VMCLEAR, VMPTRLD or INVEPT outside VMX operation ("#UD") (SDM Vol. 3C
//! §31.3, each instruction's "Operation").

use core::cell::{Cell, Ref, RefCell};

use super::fake::{FakeCpu, FakeVmcs};
use super::{Cpu, CpuidResult, InveptKind, Vmcs, VmxRegion, VmxRoot};
use crate::bits::CR4_VMXE;
use crate::msrs;
use crate::vmx::capability::FixedBits;
use crate::vmx::error::VmFail;

/// How many operations a [`Journal`] holds.
pub const JOURNAL_SLOTS: usize = 512;

/// One operation on the fake processor or VMCS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// CPUID (leaf, subleaf).
    Cpuid(u32, u32),
    /// RDMSR.
    ReadMsr(u32),
    /// WRMSR (MSR, value).
    WriteMsr(u32, u64),
    /// MOV from CR0, CR3 or CR4 (the register's number).
    ReadCr(u8),
    /// MOV to CR0, CR2 or CR4 (the register's number, value).
    WriteCr(u8, u64),
    /// XSETBV (XCR, value).
    Xsetbv(u32, u64),
    /// WBINVD.
    Wbinvd,
    /// INVEPT.
    Invept(InveptKind),
    /// INVVPID single-context.
    Invvpid(u16),
    /// IN (port, size).
    PortIn(u16, u8),
    /// OUT (port, size, value).
    PortOut(u16, u8, u32),
    /// VMXON (the region's address).
    Vmxon(u64),
    /// VMCLEAR (the region's address).
    Vmclear(u64),
    /// VMPTRLD (the region's address).
    Vmptrld(u64),
    /// VMREAD (encoding).
    Vmread(u32),
    /// VMWRITE (encoding, value).
    Vmwrite(u32, u64),
    /// A step of the test's own (a fake platform's), recorded with
    /// [`Journal::step`].
    Step(&'static str),
}

impl Op {
    /// Whether the operation can be told to fail: the VMX instructions and
    /// the test's own steps.
    pub const fn can_fail(self) -> bool {
        matches!(
            self,
            Op::Invept(_)
                | Op::Invvpid(_)
                | Op::Vmxon(_)
                | Op::Vmclear(_)
                | Op::Vmptrld(_)
                | Op::Vmread(_)
                | Op::Vmwrite(..)
                | Op::Step(_)
        )
    }
}

/// The operations in order, and the one to fail.
#[derive(Debug)]
pub struct Journal {
    ops: RefCell<[Op; JOURNAL_SLOTS]>,
    len: Cell<usize>,
    fail: Cell<Option<(usize, VmFail)>>,
}

impl Default for Journal {
    fn default() -> Self {
        Self::new()
    }
}

impl Journal {
    /// An empty journal that fails nothing.
    pub const fn new() -> Self {
        Self {
            ops: RefCell::new([Op::Wbinvd; JOURNAL_SLOTS]),
            len: Cell::new(0),
            fail: Cell::new(None),
        }
    }

    /// Makes the operation at `index` (counted from 0, as in
    /// [`Journal::ops`]) fail with `how`, if it [can](Op::can_fail).
    pub fn fail_at(&self, index: usize, how: VmFail) {
        self.fail.set(Some((index, how)));
    }

    /// The operations so far, oldest first (the failed one included).
    pub fn ops(&self) -> Ref<'_, [Op]> {
        Ref::map(self.ops.borrow(), |o| &o[..self.len.get()])
    }

    /// Records `op`; fails if it is the operation to fail.
    pub fn record(&self, op: Op) -> Result<(), VmFail> {
        let i = self.len.get();
        assert!(i < JOURNAL_SLOTS, "fake journal full");
        self.ops.borrow_mut()[i] = op;
        self.len.set(i + 1);
        match self.fail.get() {
            Some((at, how)) if at == i && op.can_fail() => Err(how),
            _ => Ok(()),
        }
    }

    /// Records a step of the test's own; fails if it is the one to fail.
    pub fn step(&self, name: &'static str) -> Result<(), VmFail> {
        self.record(Op::Step(name))
    }

    /// Records an operation that cannot fail.
    fn note(&self, op: Op) {
        let _ = self.record(op);
    }
}

/// A [`FakeCpu`] that records every operation in a [`Journal`], with VMX
/// root operation ([`VmxRoot`]).
#[derive(Debug)]
pub struct RecordingCpu<'j> {
    /// The processor.
    pub cpu: FakeCpu,
    journal: &'j Journal,
    in_vmx: bool,
}

impl<'j> RecordingCpu<'j> {
    /// `cpu`, recording into `journal`, outside VMX operation.
    pub fn new(cpu: FakeCpu, journal: &'j Journal) -> Self {
        Self {
            cpu,
            journal,
            in_vmx: false,
        }
    }

    /// Whether VMXON succeeded.
    pub fn in_vmx(&self) -> bool {
        self.in_vmx
    }

    fn require_vmx(&self, what: &str) {
        assert!(
            self.in_vmx,
            "{what} outside VMX operation: the hardware would raise #UD"
        );
    }

    /// The fixed bits of a CR from its capability MSRs, if the CPU has them.
    fn fixed(&self, fixed0: u32, fixed1: u32) -> Option<FixedBits> {
        (self.cpu.has_msr(fixed0) && self.cpu.has_msr(fixed1)).then(|| FixedBits {
            fixed0: self.cpu.read_msr_for_tests(fixed0),
            fixed1: self.cpu.read_msr_for_tests(fixed1),
        })
    }
}

impl Cpu for RecordingCpu<'_> {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        self.journal.note(Op::Cpuid(leaf, subleaf));
        self.cpu.cpuid(leaf, subleaf)
    }
    fn read_msr(&self, msr: u32) -> u64 {
        self.journal.note(Op::ReadMsr(msr));
        self.cpu.read_msr(msr)
    }
    fn write_msr(&mut self, msr: u32, value: u64) {
        self.journal.note(Op::WriteMsr(msr, value));
        self.cpu.write_msr(msr, value);
    }
    fn read_cr0(&self) -> u64 {
        self.journal.note(Op::ReadCr(0));
        self.cpu.read_cr0()
    }
    fn read_cr3(&self) -> u64 {
        self.journal.note(Op::ReadCr(3));
        self.cpu.read_cr3()
    }
    fn read_cr4(&self) -> u64 {
        self.journal.note(Op::ReadCr(4));
        self.cpu.read_cr4()
    }
    fn write_cr0(&mut self, value: u64) {
        self.journal.note(Op::WriteCr(0, value));
        self.cpu.write_cr0(value);
    }
    fn write_cr4(&mut self, value: u64) {
        self.journal.note(Op::WriteCr(4, value));
        self.cpu.write_cr4(value);
    }
    fn write_cr2(&mut self, value: u64) {
        self.journal.note(Op::WriteCr(2, value));
        self.cpu.write_cr2(value);
    }
    fn xsetbv(&mut self, xcr: u32, value: u64) {
        self.journal.note(Op::Xsetbv(xcr, value));
        self.cpu.xsetbv(xcr, value);
    }
    fn wbinvd(&mut self) {
        self.journal.note(Op::Wbinvd);
        self.cpu.wbinvd();
    }
    fn invept(&mut self, kind: InveptKind) -> Result<(), VmFail> {
        self.require_vmx("INVEPT");
        self.journal.record(Op::Invept(kind))?;
        self.cpu.invept(kind)
    }
    fn invvpid_single(&mut self, vpid: u16) -> Result<(), VmFail> {
        self.require_vmx("INVVPID");
        self.journal.record(Op::Invvpid(vpid))?;
        self.cpu.invvpid_single(vpid)
    }
    fn port_in(&mut self, port: u16, size: u8) -> u32 {
        self.journal.note(Op::PortIn(port, size));
        self.cpu.port_in(port, size)
    }
    fn port_out(&mut self, port: u16, size: u8, value: u32) {
        self.journal.note(Op::PortOut(port, size, value));
        self.cpu.port_out(port, size, value);
    }
    fn xapic_read(&self, pa: u64) -> u32 {
        self.cpu.xapic_read(pa)
    }
    fn xapic_write(&mut self, pa: u64, value: u32) {
        self.cpu.xapic_write(pa, value);
    }
}

impl<'j> VmxRoot for RecordingCpu<'j> {
    type Vmcs = RecordingVmcs<'j>;

    fn vmxon(&mut self, region: VmxRegion) -> Result<(), VmFail> {
        assert!(
            self.cpu.cr4 & CR4_VMXE != 0,
            "VMXON with CR4.VMXE clear: the hardware would raise #UD"
        );
        let cr0 = self.fixed(msrs::IA32_VMX_CR0_FIXED0, msrs::IA32_VMX_CR0_FIXED1);
        let cr4 = self.fixed(msrs::IA32_VMX_CR4_FIXED0, msrs::IA32_VMX_CR4_FIXED1);
        assert!(
            cr0.is_none_or(|f| f.accepts(self.cpu.cr0))
                && cr4.is_none_or(|f| f.accepts(self.cpu.cr4)),
            "VMXON with CR0 or CR4 outside the VMX fixed bits: the hardware would raise #GP"
        );
        self.journal.record(Op::Vmxon(region.addr()))?;
        self.in_vmx = true;
        Ok(())
    }

    fn vmclear(&mut self, vmcs: VmxRegion) -> Result<(), VmFail> {
        self.require_vmx("VMCLEAR");
        self.journal.record(Op::Vmclear(vmcs.addr()))
    }

    fn vmptrld(&mut self, vmcs: VmxRegion) -> Result<RecordingVmcs<'j>, VmFail> {
        self.require_vmx("VMPTRLD");
        self.journal.record(Op::Vmptrld(vmcs.addr()))?;
        Ok(RecordingVmcs {
            vmcs: FakeVmcs::new(),
            journal: self.journal,
        })
    }
}

/// A [`FakeVmcs`] that records every VMREAD and VMWRITE in a [`Journal`].
#[derive(Debug)]
pub struct RecordingVmcs<'j> {
    /// The VMCS.
    pub vmcs: FakeVmcs,
    journal: &'j Journal,
}

impl Vmcs for RecordingVmcs<'_> {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        self.journal.record(Op::Vmread(encoding))?;
        self.vmcs.read_raw(encoding)
    }

    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        self.journal.record(Op::Vmwrite(encoding, value))?;
        self.vmcs.write_raw(encoding, value)
    }
}
