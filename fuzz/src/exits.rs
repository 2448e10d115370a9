//! Synthetic VM exits for the `hypercall` and `exit` targets, and the
//! oracles checked after each one (DESIGN.md §2 invariants 10, 11, 12).
//!
//! An exit is what the processor leaves in the VMCS (reason,
//! qualification, instruction length, vectoring information, addresses)
//! plus what the guest controls (its registers, its privilege level, the
//! code-segment L bit). [`drive`] writes it into the fake VMCS, runs
//! `okernel::exit::handle_exit`, and checks that the monitor answered with a
//! defined outcome and kept its own state consistent.

use arbitrary::Arbitrary;
use okernel::bits::CR4_VMXE;
use okernel::exit::{handle_exit, rip};
use okernel::vcpu::guest::SS_DPL;
use okernel::vcpu::{ExitAction, ExitError};
use okernel::vmx::capability::feature_control;
use okernel::vmx::exit_reason::ExitReason;
use okernel::vmx::fields::{
    Control32, ControlNatural, Guest32, GuestNatural, ReadOnly32, ReadOnly64, ReadOnlyNatural,
};
use okernel::vmx::regs::Gpr;
use okernel_abi::hypercall::{Call, EXIT_REASON_MAX, Status};

use crate::vcpu::{FuzzVcpu, WINDOW, WINDOW_LEN};

/// A register value: mostly small numbers and addresses in the fuzzer's
/// memory window, sometimes any 64 bits.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Value {
    /// A small number.
    Small(u8),
    /// A guest-physical address inside the memory window.
    Window(u16),
    /// Any value.
    Raw(u64),
}

impl Value {
    /// The register value.
    pub fn get(self) -> u64 {
        match self {
            Value::Small(v) => v.into(),
            Value::Window(o) => WINDOW + u64::from(o) % WINDOW_LEN as u64,
            Value::Raw(v) => v,
        }
    }
}

/// A hypercall number.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Number {
    /// A call of the ABI (index into `Call::ALL`).
    Known(u8),
    /// A call of the ABI with garbage in the upper half (meaningful only
    /// outside 64-bit mode).
    KnownHigh(u8, u32),
    /// Any number.
    Raw(u64),
}

impl Number {
    /// The value for RAX.
    pub fn get(self) -> u64 {
        let known = |i: u8| Call::ALL[usize::from(i) % Call::ALL.len()].raw();
        match self {
            Number::Known(i) => known(i),
            Number::KnownHigh(i, h) => known(i) | (u64::from(h.max(1)) << 32),
            Number::Raw(v) => v,
        }
    }
}

/// A basic exit reason, or any value of the 32-bit exit-reason field.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Reason {
    /// A reason of SDM Appendix C (index into `ExitReason::ALL`).
    Known(u8),
    /// Any exit-reason field (entry-failure and modifier bits included).
    Raw(u32),
}

impl Reason {
    /// The exit-reason field.
    pub fn get(self) -> u32 {
        match self {
            Reason::Known(i) => ExitReason::ALL[usize::from(i) % ExitReason::ALL.len()] as u32,
            Reason::Raw(v) => v,
        }
    }
}

/// What the guest and the processor leave for one exit.
#[derive(Debug, Clone, Arbitrary)]
pub struct Exit {
    /// The exit-reason field.
    pub reason: Reason,
    /// The exit qualification.
    pub qualification: u64,
    /// The VM-exit instruction length (1..=15 is architectural).
    pub len: u8,
    /// The guest's CPL (SS.DPL), low two bits.
    pub cpl: u8,
    /// Guest RIP: `None` keeps it where the last exit left it.
    pub rip: Option<Value>,
    /// Registers the guest set before the exit (number, value).
    pub regs: Vec<(u8, Value)>,
    /// IDT-vectoring information (0 = no event was being delivered).
    pub vectoring: u32,
    /// Guest-physical address (EPT violations).
    pub gpa: u64,
    /// Guest-linear address (EPT violations).
    pub gla: u64,
    /// Flip CS.L (64-bit mode to compatibility mode and back).
    pub flip_cs_l: bool,
}

/// A VMCALL exit: the hypercall `number` with arguments, at `cpl`.
#[derive(Debug, Clone, Arbitrary)]
pub struct Hypercall {
    /// RAX.
    pub number: Number,
    /// RDI, RSI, RDX, RCX.
    pub args: [Value; 4],
    /// The caller's CPL (low two bits), mostly 0.
    pub cpl3: bool,
    /// A VM-exit instruction length other than VMCALL's 3.
    pub len: Option<u8>,
}

impl Hypercall {
    /// The exit that delivers this hypercall.
    pub fn exit(&self) -> Exit {
        let [rdi, rsi, rdx, rcx] = self.args;
        Exit {
            reason: Reason::Raw(ExitReason::Vmcall as u32),
            qualification: 0,
            len: self.len.unwrap_or(3),
            cpl: if self.cpl3 { 3 } else { 0 },
            rip: None,
            regs: vec![
                (Gpr::Rax as u8, Value::Raw(self.number.get())),
                (Gpr::Rdi as u8, rdi),
                (Gpr::Rsi as u8, rsi),
                (Gpr::Rdx as u8, rdx),
                (Gpr::Rcx as u8, rcx),
            ],
            vectoring: 0,
            gpa: 0,
            gla: 0,
            flip_cs_l: false,
        }
    }
}

const CS_L: u64 = 1 << 13;

/// Writes `e` into the fake VMCS and the registers, handles the exit, and
/// checks the oracles; panics (a finding) when one fails. Returns the
/// handler's result.
pub fn drive(v: &mut FuzzVcpu, e: &Exit) -> Result<ExitAction, ExitError> {
    // The guest's side: registers, CPL, CS.L, RIP.
    for &(r, value) in e.regs.iter().take(16) {
        let r = Gpr::from_index(r & 0xf);
        if r != Gpr::Rsp {
            v.regs.set(r, value.get());
        }
    }
    let ss = v.vmcs.get(Guest32::SsAccessRights) & !u64::from(SS_DPL);
    v.vmcs
        .set(Guest32::SsAccessRights, ss | (u64::from(e.cpl & 3) << 5));
    if e.flip_cs_l {
        let cs = v.vmcs.get(Guest32::CsAccessRights);
        v.vmcs.set(Guest32::CsAccessRights, cs ^ CS_L);
    }
    if let Some(rip) = e.rip {
        v.vmcs.set(GuestNatural::Rip, rip.get());
    }
    // The processor's side.
    v.vmcs
        .set(ReadOnly32::ExitReason, e.reason.get().into())
        .set(ReadOnlyNatural::ExitQualification, e.qualification)
        .set(ReadOnly32::ExitInstructionLength, e.len.into())
        .set(ReadOnly32::IdtVectoringInfo, e.vectoring.into())
        .set(ReadOnly64::GuestPhysicalAddress, e.gpa)
        .set(ReadOnlyNatural::GuestLinearAddress, e.gla)
        .set(Control32::EntryInterruptionInfo, 0);

    let before = Snapshot::take(v);
    let result = handle_exit(v);
    check(v, e, &before, &result);
    result
}

/// What the oracles compare against.
struct Snapshot {
    regs: [u64; 16],
    rip: u64,
    audit: u64,
    exits: u64,
    wide: bool,
    cr_ok: bool,
}

impl Snapshot {
    fn take(v: &FuzzVcpu) -> Self {
        Self {
            regs: v.regs.gpr,
            rip: v.vmcs.get(GuestNatural::Rip),
            audit: v.audit.total(),
            exits: v.counters.total(),
            wide: v.in_64bit_mode().expect("the fake VMCS reads"),
            cr_ok: cr_valid(v),
        }
    }
}

/// Whether the guest's real CR0/CR4 satisfy the VMX fixed bits (VM entry
/// would fail otherwise) and the CR4 read shadow hides VMXE (invariant 12).
fn cr_valid(v: &FuzzVcpu) -> bool {
    v.cr.cr0_fixed.accepts(v.vmcs.get(GuestNatural::Cr0))
        && v.cr.cr4_fixed.accepts(v.vmcs.get(GuestNatural::Cr4))
        && v.vmcs.get(ControlNatural::Cr4ReadShadow) & CR4_VMXE == 0
}

/// CR4.LA57: 57-bit canonical addresses (5-level paging).
const CR4_LA57: u64 = 1 << 12;
/// The VM-entry interruption information of an injected #GP(0): valid,
/// hardware exception, error code delivered, vector 13 (SDM Vol. 3C
/// §25.8.3).
const GP0: u64 = 0x8000_0b0d;

/// RIP after an instruction of `len` bytes at `rip`, as the guest's mode
/// computes it.
fn next_rip(rip: u64, len: u8, wide: bool) -> u64 {
    if wide {
        rip.wrapping_add(len.into())
    } else {
        u64::from((rip as u32).wrapping_add(len.into()))
    }
}

/// The effective hypercall number: the low half outside 64-bit mode.
fn effective(rax: u64, wide: bool) -> u64 {
    if wide { rax } else { rax & 0xffff_ffff }
}

fn check(v: &FuzzVcpu, e: &Exit, before: &Snapshot, result: &Result<ExitAction, ExitError>) {
    let field = e.reason.get();
    let vmcall = field == ExitReason::Vmcall as u32;
    let rip = v.vmcs.get(GuestNatural::Rip);
    let injected = v.vmcs.get(Control32::EntryInterruptionInfo);
    let len_ok = (1..=15).contains(&e.len);

    // Every exit is counted, exactly once (the exit counters).
    assert_eq!(
        v.counters.total(),
        before.exits + 1,
        "exit {field:#x} was not counted exactly once"
    );
    // Whatever happened, the guest's CR0/CR4 stay enterable and VMX stays
    // hidden.
    if before.cr_ok {
        assert!(
            cr_valid(v),
            "exit {field:#x}: guest CR0/CR4 violate the VMX fixed bits or the CR4 shadow shows VMXE"
        );
    }
    if let Ok(ExitAction::Resume) = result {
        // The guest resumes at the instruction (a fault was injected or
        // nothing happened) or after it; never anywhere else — but where
        // a SIPI starts a processor: IP 0 of the vector's segment
        // (`okernel::exit::sipi`).
        let next = next_rip(before.rip, e.len, before.wide);
        // (The basic reason: bits 15:0; the fuzzer sets the others too.)
        let sipi_start = field & 0xffff == ExitReason::Sipi as u32 && rip == 0;
        assert!(
            rip == before.rip || (len_ok && rip == next) || sipi_start,
            "exit {field:#x}: RIP {:#x} -> {rip:#x} with length {}",
            before.rip,
            e.len
        );
        if injected != 0 {
            assert!(
                injected & (1 << 31) != 0,
                "an injected event without the valid bit: {injected:#x}"
            );
            assert_eq!(rip, before.rip, "a fault was injected but RIP advanced");
        }
    }
    if let Ok(ExitAction::Stop(_)) = result {
        assert!(
            vmcall && e.cpl & 3 == 0 && effective(before.regs[0], before.wide) == Call::Exit.raw(),
            "exit {field:#x} ended the run, but only the Exit hypercall at CPL 0 may"
        );
        assert!(v.guest_reason.as_str().len() as u64 <= EXIT_REASON_MAX);
        assert_eq!(rip, before.rip, "Exit moved RIP");
    }
    // Invariant 10: every EPT violation is audited.
    if field == ExitReason::EptViolation as u32 {
        assert_eq!(
            v.audit.total(),
            before.audit + 1,
            "an EPT violation was not audited"
        );
    }
    // Invariant 12: CPUID leaf 1 never shows VMX.
    if field == ExitReason::Cpuid as u32 && before.regs[0] as u32 == 1 && result.is_ok() {
        assert_eq!(v.regs.rcx() & (1 << 5), 0, "CPUID.1:ECX.VMX is visible");
    }
    // Invariant 12: IA32_FEATURE_CONTROL reads as VMX disabled.
    if field == ExitReason::Rdmsr as u32
        && before.regs[1] as u32 == okernel::msrs::IA32_FEATURE_CONTROL
        && rip != before.rip
    {
        let value = v.regs.rax() | (v.regs.rdx() << 32);
        let vmx = feature_control::VMX_INSIDE_SMX | feature_control::VMX_OUTSIDE_SMX;
        assert_eq!(value & vmx, 0, "IA32_FEATURE_CONTROL shows VMX enabled");
    }
    if vmcall {
        check_vmcall(v, e, before, result);
    }
}

/// Invariant 11 for hypercalls: a VMCALL with an architectural instruction
/// length, at any RIP, always gets an answer — a defined status in RAX and
/// RIP past the VMCALL — or ends the run (Exit);
/// a caller at CPL > 0 gets `PermissionDenied` and nothing else changes.
fn check_vmcall(v: &FuzzVcpu, e: &Exit, before: &Snapshot, result: &Result<ExitAction, ExitError>) {
    let rax = v.regs.rax();
    match result {
        Ok(ExitAction::Resume) => {
            let status = Status::from_raw(rax);
            assert!(status.is_ok(), "VMCALL answered RAX {rax:#x}: no status");
            assert!(
                len_ok(e),
                "VMCALL resumed with instruction length {}",
                e.len
            );
            // In 64-bit mode a VMCALL whose next RIP is not canonical
            // completes, and the next fetch faults: the guest gets #GP(0)
            // at the VMCALL (okernel::exit::rip); otherwise no event, and
            // RIP moves on.
            let width = if v.vmcs.get(GuestNatural::Cr4) & CR4_LA57 != 0 {
                57
            } else {
                48
            };
            let next_faults =
                before.wide && rip::next_rip(before.rip, e.len.into(), width).is_none();
            let injected = v.vmcs.get(Control32::EntryInterruptionInfo);
            if next_faults {
                assert_eq!(injected, GP0, "VMCALL before a non-canonical RIP: #GP(0)");
                assert_eq!(v.vmcs.get(GuestNatural::Rip), before.rip);
            } else {
                assert_eq!(injected, 0, "VMCALL injected an event");
                assert_ne!(
                    v.vmcs.get(GuestNatural::Rip),
                    before.rip,
                    "VMCALL answered but RIP did not move"
                );
            }
            // RBX, RBP and R8..R15 are preserved by every call (RSP lives
            // in the VMCS); RDX and RCX too (the ABI's "unchanged").
            for r in [1usize, 2, 3, 5, 8, 9, 10, 11, 12, 13, 14, 15] {
                assert_eq!(
                    v.regs.gpr[r],
                    before.regs[r],
                    "VMCALL changed register {}",
                    Gpr::from_index(r as u8).name()
                );
            }
            if e.cpl & 3 != 0 {
                assert_eq!(
                    status,
                    Ok(Status::PermissionDenied),
                    "VMCALL at CPL {}",
                    e.cpl & 3
                );
                assert_eq!(
                    v.regs.gpr[6..8],
                    before.regs[6..8],
                    "a CPL>0 VMCALL changed RSI/RDI"
                );
            }
        }
        Ok(ExitAction::Stop(_)) => {}
        Err(err) => {
            // The RIP advance follows the architecture at every boundary
            // (a non-canonical or wrapped next RIP is the guest's #GP on
            // its next fetch, not the monitor's failure): only a length
            // outside 1..=15 is fatal.
            assert!(
                !len_ok(e),
                "VMCALL at RIP {:#x} with length {} failed fatally: {err}",
                before.rip,
                e.len
            );
            assert!(
                matches!(err, ExitError::BadInstructionLength(_)),
                "VMCALL failed with {err:?}"
            );
        }
    }
}

fn len_ok(e: &Exit) -> bool {
    (1..=15).contains(&e.len)
}
