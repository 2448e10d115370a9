//! Host tests of the monitor against the fake VMCS and fake CPU: every
//! capability refusal, every exit handler (including malformed exits), the
//! hypercall surface, and the launch-time VMCS and EPT construction.

mod capability;
mod console_tick;
mod entry_checks;
mod exit_reason;
mod exits_all;
mod exits_apic;
mod exits_cpuid_msr;
mod exits_cr;
mod exits_ept;
mod exits_events;
mod exits_io;
mod exits_misc;
mod exits_msr_shared;
mod exits_sipi;
mod fast_path;
mod fuzzing;
mod hypercall;
mod launch;
mod launch_bringup;
mod launch_presence;
mod layers;
mod msr_policy;
mod policy;

use core::ptr::NonNull;

use ept::{FrameAllocator, PhysFrame};

use crate::check;
use crate::exit::handle_exit;
use crate::hw::fake::{FakeCpu, FakeVmcs};
use crate::launch::setup;
use crate::launch::{DescriptorTable, GuestEntry, GuestMode};
use crate::msrs;
use crate::policy::{BasePolicy, Decision, Policy};
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{CrConfig, ExitAction, ExitError, Vcpu};
use crate::vmx::exit_reason::ExitReason;
use crate::vmx::fields::{Control32, GuestNatural, ReadOnly32, ReadOnlyNatural};
use crate::vmx::regs::GuestRegisters;

/// Guest RIP used by the synthetic exits.
pub const RIP: u64 = 0x20_1000;

/// A 64-bit guest entry like the loader's.
pub fn entry64() -> GuestEntry {
    GuestEntry {
        mode: GuestMode::Long64 { cr3: 0x10_0000 },
        rip: RIP,
        rsp: 0x30_0000,
        regs: GuestRegisters::default(),
        gdtr: DescriptorTable {
            base: 0,
            limit: 0xffff,
        },
        idtr: DescriptorTable { base: 0, limit: 0 },
    }
}

/// A policy that refuses every CR and MSR write.
#[derive(Debug, Default)]
pub struct DenyAll;

impl Policy for DenyAll {
    fn cr_write(&mut self, _: u8, _: u64, _: u64) -> Decision {
        Decision::Deny
    }
    fn msr_write(&mut self, _: u32, _: u64) -> Decision {
        Decision::Deny
    }
    fn context(&self) -> u16 {
        7
    }
}

/// A VCPU over the Bochs-like fake CPU, guest state as `launch` writes it.
pub fn vcpu_with<P: Policy>(policy: P, entry: GuestEntry) -> Vcpu<FakeVmcs, FakeCpu, P> {
    let mut cpu = FakeCpu::vmx_capable();
    let caps = check::probe(&mut cpu).expect("the fake CPU is VMX-capable");
    cpu.msr_writes = 0; // the probe locked IA32_FEATURE_CONTROL
    let cr = CrConfig::new(caps.cr0_fixed, caps.cr4_fixed);
    let ept = ept::EptCaps::from_msrs(
        caps.ept.0,
        cpu.read_msr_for_tests(msrs::IA32_VMX_PROCBASED_CTLS2),
        39,
    )
    .unwrap();
    let mut vmcs = FakeVmcs::new();
    setup::write_controls(
        &mut vmcs,
        &caps,
        entry.mode,
        0x5000,
        setup::io_bitmaps(),
        0x601e,
        &cr,
    )
    .unwrap();
    setup::write_guest_state(&mut vmcs, &entry, &cr, true, 0x0007_0406_0007_0406).unwrap();
    Vcpu::new(vmcs, cpu, policy, cr, ept)
}

/// The default VCPU: 64-bit guest, base policy.
pub fn vcpu() -> Vcpu<FakeVmcs, FakeCpu, BasePolicy> {
    vcpu_with(BasePolicy, entry64())
}

std::thread_local! {
    /// The audit lines [`capture_lines`] caught on this test's thread.
    static PRINTED: core::cell::RefCell<Vec<std::string::String>> =
        const { core::cell::RefCell::new(Vec::new()) };
}

fn capture(line: &crate::policy::audit::Line) {
    PRINTED.with(|p| p.borrow_mut().push(std::string::ToString::to_string(line)));
}

/// Sends the lines `audit` prints to this thread's capture instead of the
/// console ([`printed_lines`]).
pub fn capture_lines(audit: &mut crate::policy::audit::AuditLog) {
    audit.set_printer(capture);
}

/// The lines printed to the capture since the last call, oldest first.
pub fn printed_lines() -> Vec<std::string::String> {
    PRINTED.with(|p| core::mem::take(&mut *p.borrow_mut()))
}

/// Makes the fake VMCS look like the processor just exited for `reason`.
pub fn synth<P: Policy, M: GuestMemory>(
    v: &mut Vcpu<FakeVmcs, FakeCpu, P, M>,
    reason: u32,
    qualification: u64,
    len: u32,
) {
    v.vmcs
        .set(ReadOnly32::ExitReason, reason.into())
        .set(ReadOnlyNatural::ExitQualification, qualification)
        .set(ReadOnly32::ExitInstructionLength, len.into())
        .set(ReadOnly32::IdtVectoringInfo, 0)
        .set(Control32::EntryInterruptionInfo, 0);
}

/// Synthesises an exit and handles it.
pub fn run<P: Policy, M: GuestMemory>(
    v: &mut Vcpu<FakeVmcs, FakeCpu, P, M>,
    reason: ExitReason,
    qualification: u64,
    len: u32,
) -> Result<ExitAction, ExitError> {
    synth(v, reason as u32, qualification, len);
    handle_exit(v)
}

/// The injected event (VM-entry interruption information).
pub fn injected<P: Policy, M: GuestMemory>(v: &Vcpu<FakeVmcs, FakeCpu, P, M>) -> u64 {
    v.vmcs.get(Control32::EntryInterruptionInfo)
}

/// Guest RIP.
pub fn rip<P: Policy, M: GuestMemory>(v: &Vcpu<FakeVmcs, FakeCpu, P, M>) -> u64 {
    v.vmcs.get(GuestNatural::Rip)
}

/// #UD injection value.
pub const UD: u64 = 0x8000_0306;
/// #GP(0) injection value (with error code).
pub const GP: u64 = 0x8000_0b0d;
/// #PF injection value (with error code).
pub const PF: u64 = 0x8000_0b0e;
/// #DF(0) injection value.
pub const DF: u64 = 0x8000_0b08;

/// Asserts the exit resumed the guest at the faulting instruction with `event`.
pub fn assert_injected<P: Policy, M: GuestMemory>(
    v: &Vcpu<FakeVmcs, FakeCpu, P, M>,
    r: Result<ExitAction, ExitError>,
    event: u64,
) {
    assert_eq!(r, Ok(ExitAction::Resume));
    assert_eq!(injected(v), event);
    assert_eq!(rip(v), RIP, "a fault must not advance RIP");
}

/// Asserts the exit resumed after the instruction, nothing injected.
pub fn assert_advanced<P: Policy, M: GuestMemory>(
    v: &Vcpu<FakeVmcs, FakeCpu, P, M>,
    r: Result<ExitAction, ExitError>,
    len: u64,
) {
    assert_eq!(r, Ok(ExitAction::Resume));
    assert_eq!(injected(v), 0);
    assert_eq!(rip(v), RIP + len);
}

/// Heap frames for EPT views, shared by every clone of the handle;
/// "physical" address = index * 4096 + 4096. `limit` caps the frames in
/// use (to test exhaustion).
#[derive(Clone, Default)]
pub struct Heap(std::rc::Rc<std::cell::RefCell<HeapFrames>>);

/// The frames behind a [`Heap`].
#[derive(Default)]
pub struct HeapFrames {
    frames: Vec<Box<[u64; 512]>>,
    free: Vec<u64>,
    /// The most frames in use at once (`None`: unlimited).
    pub limit: Option<usize>,
}

impl Heap {
    /// Frames in use.
    pub fn in_use(&self) -> usize {
        let f = self.0.borrow();
        f.frames.len() - f.free.len()
    }

    /// Caps the frames in use at `in_use() + extra`.
    pub fn allow_more(&self, extra: usize) {
        let n = self.in_use() + extra;
        self.0.borrow_mut().limit = Some(n);
    }
}

// SAFETY: each frame is a distinct heap box, zeroed when handed out, that
// lives as long as any handle (the boxes are never dropped before the
// `Rc`); it is only accessed through `table_ptr`, and a freed frame is
// handed out again only after it was given back.
unsafe impl FrameAllocator for Heap {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        let mut f = self.0.borrow_mut();
        if f.limit.is_some_and(|l| f.frames.len() - f.free.len() >= l) {
            return None;
        }
        if let Some(addr) = f.free.pop() {
            *f.frames[(addr / 4096 - 1) as usize] = [0; 512];
            return PhysFrame::new(addr);
        }
        f.frames.push(Box::new([0; 512]));
        PhysFrame::new(f.frames.len() as u64 * 4096)
    }
    fn free_frame(&mut self, frame: PhysFrame) {
        self.0.borrow_mut().free.push(frame.addr());
    }
    fn table_ptr(&self, frame: PhysFrame) -> NonNull<[u64; 512]> {
        NonNull::from(&*self.0.borrow().frames[(frame.addr() / 4096 - 1) as usize])
    }
}

impl crate::policy::views::SharedFrames for Heap {
    fn available(&self) -> u64 {
        let f = self.0.borrow();
        match f.limit {
            Some(l) => l.saturating_sub(f.frames.len() - f.free.len()) as u64,
            None => u64::MAX,
        }
    }
}
