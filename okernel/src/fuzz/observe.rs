//! The coverage key of each VM exit, computed once its handler has
//! decided: exit reason × handler outcome × policy decision.
//!
//! The raw key packs
//!
//! | bits | what |
//! |---|---|
//! | 15:0 | the basic exit reason (SDM Vol. 3C Appendix C) |
//! | 23:16 | the [`Outcome`] code |
//! | 24 | the exit wrote an audit record (a policy denial) |
//! | 25 | the exit was unexpected ([`unexpected`]) |
//! | 63:32 | the reason's detail ([`detail`]) |
//!
//! and [`key`] mixes it ([`super::hash::mix`]) so that the low bits the
//! edge index keeps depend on every field.
//!
//! Two hooks feed [`super::coverage::Coverage::record`], both compiled
//! only in a fuzz build: one constant key per hot exit in
//! `exit::handle_fast` ([`NULL_KEY`], [`CPUID_KEY`]: the Null hypercall at
//! CPL 0 and CPUID always advance RIP), and [`slow`] around
//! `exit::handle_slow` for every other exit, which reads what it needs
//! before the handler (RIP, RAX, the audit count) and after it (the
//! VM-entry interruption information, RIP, the instruction length, and
//! the reason's own fields).
//!
//! A successful `CALL_CHECK` clears the map during its own exit; that exit
//! is not recorded, so every case starts from the same state.

use okernel_abi::hypercall::Status;
use okernel_abi::policy::RegionKind;

use super::hash::mix;
use super::inspect::Inspect;
use super::tracked::Fuzzed;
use crate::hw::{Cpu, Vmcs};
use crate::mem::MemoryError;
use crate::memmap::{Gpa, PhysRange};
use crate::policy::Policy;
use crate::policy::protection::Protection;
use crate::vcpu::hooks::SlowExit;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::controls::{PrimaryProcBased, SecondaryProcBased};
use crate::vmx::event::InterruptionInfo;
use crate::vmx::exit_reason::ExitReason;
use crate::vmx::fields::{Control32, GuestNatural, ReadOnly32, ReadOnly64, ReadOnlyNatural};

/// What the handler did with the exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// RIP moved past the instruction.
    Advance,
    /// The guest resumes at the same RIP, nothing injected (a dropped
    /// asynchronous EPT violation).
    InPlace,
    /// The guest resumes elsewhere (a gate).
    Redirect,
    /// An exception is injected (VM-entry interruption information valid,
    /// SDM Vol. 3C §25.8.3: VM exits clear its valid bit, so a valid one
    /// was written by the handler): the vector (#GP 13, #UD 6, #PF 14).
    Inject(u8),
    /// The run ends (the Exit hypercall).
    Stop,
    /// A fatal exit.
    Fatal,
}

impl Outcome {
    /// The key's code: 0–5, or 0x20 + the vector.
    pub const fn code(self) -> u8 {
        match self {
            Outcome::Advance => 0,
            Outcome::InPlace => 1,
            Outcome::Redirect => 2,
            Outcome::Stop => 3,
            Outcome::Fatal => 4,
            Outcome::Inject(v) => 0x20 | (v & 0x1f),
        }
    }
}

/// The key of an exit.
pub const fn key(
    basic: u16,
    outcome: Outcome,
    audited: bool,
    unexpected: bool,
    detail: u32,
) -> u64 {
    let raw = basic as u64
        | (outcome.code() as u64) << 16
        | (audited as u64) << 24
        | (unexpected as u64) << 25
        | (detail as u64) << 32;
    mix(raw)
}

/// The key of the Null hypercall at CPL 0 (the fast path): call 1,
/// `Success`.
pub const NULL_KEY: u64 = key(
    ExitReason::Vmcall as u16,
    Outcome::Advance,
    false,
    false,
    vmcall_detail(1, Status::Success.raw()),
);

/// The key of CPUID (the fast path).
pub const CPUID_KEY: u64 = key(ExitReason::Cpuid as u16, Outcome::Advance, false, false, 0);

/// A VMCALL's detail: the call number's class (the number below 0x40,
/// 0x40/0x41 for the fuzz calls, 0x7f for any other) and the returned
/// status (0xff when none was returned).
pub const fn vmcall_detail(number: u64, status: u64) -> u32 {
    let class = match number {
        0..0x40 => number as u32,
        0x100 | 0x101 => 0x40 | (number as u32 & 1),
        _ => 0x7f,
    };
    let status = if status < 0xff { status as u32 } else { 0xff };
    class | status << 8
}

/// What the guest had before the handler ran.
#[derive(Debug, Clone, Copy)]
struct Before {
    rip: u64,
    rax: u64,
    audit: u64,
    checks: u64,
}

/// Runs `handle` (the slow half of exit handling) and records the exit's
/// key. The handler's result is returned as it is.
#[inline(always)]
pub fn slow<V: Vmcs, C: Cpu, P: Policy, M: Fuzzed>(
    vcpu: &mut Vcpu<V, C, P, M>,
    rest: SlowExit,
    handle: impl FnOnce(&mut Vcpu<V, C, P, M>) -> Result<ExitAction, ExitError>,
) -> Result<ExitAction, ExitError> {
    let before = Before {
        rip: vcpu.vmcs.read(GuestNatural::Rip).unwrap_or(0),
        rax: vcpu.regs.rax(),
        audit: vcpu.audit.total(),
        checks: vcpu.hooks.checks,
    };
    let result = super::planted::around(vcpu, rest, handle);
    after(vcpu, before, rest, &result);
    result
}

/// The second half of [`slow`], out of line: the key of the exit, once
/// the handler has decided.
#[inline(never)]
fn after<V: Vmcs, C: Cpu, P: Policy, M: Fuzzed>(
    vcpu: &mut Vcpu<V, C, P, M>,
    before: Before,
    rest: SlowExit,
    result: &Result<ExitAction, ExitError>,
) {
    let audited = vcpu.audit.total() != before.audit;
    if audited {
        super::mirror::update(vcpu);
    }
    super::watch::after_exit(vcpu);
    if vcpu.hooks.checks != before.checks {
        return;
    }
    let basic = match rest {
        SlowExit::Vmcall { .. } => ExitReason::Vmcall as u16,
        SlowExit::Other(field) => field.basic(),
    };
    let outcome = match result {
        Ok(ExitAction::Resume) => resumed(vcpu, before.rip),
        Ok(ExitAction::Stop(_)) => Outcome::Stop,
        Err(_) => Outcome::Fatal,
    };
    let unexpected = result.is_ok() && unexpected(vcpu, basic);
    if unexpected {
        let (n, first) = vcpu.hooks.unexpected;
        vcpu.hooks.unexpected = (n.saturating_add(1), if n == 0 { basic } else { first });
    }
    // The case's coverage is the bootstrap processor's, which runs the
    // executor: another processor's exits (`aps=run`'s loop) would mix
    // their keys into its edges and its exit count.
    if vcpu.cpu_index == 0 {
        let detail = detail(vcpu, basic, before.rax, outcome);
        vcpu.hooks
            .coverage
            .record(key(basic, outcome, audited, unexpected, detail));
    }
}

/// How a resumed guest resumes.
fn resumed<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &Vcpu<V, C, P, M>,
    rip: u64,
) -> Outcome {
    let info = InterruptionInfo(
        vcpu.vmcs
            .read(Control32::EntryInterruptionInfo)
            .unwrap_or(0),
    );
    if info.valid() {
        return Outcome::Inject(info.vector());
    }
    let now = vcpu.vmcs.read(GuestNatural::Rip).unwrap_or(0);
    let len = u64::from(
        vcpu.vmcs
            .read(ReadOnly32::ExitInstructionLength)
            .unwrap_or(0),
    );
    if now == rip {
        Outcome::InPlace
    } else if now == rip.wrapping_add(len) || now == rip.wrapping_add(len) & 0xffff_ffff {
        Outcome::Advance
    } else {
        Outcome::Redirect
    }
}

/// Whether a survived exit is one that no control in force causes: MOV
/// to or from CR3 without CR3-load or CR3-store exiting (SDM Vol. 3C
/// §26.1.3; okernel leaves both off, `exit::cr` handles CR3 anyway), a
/// VMX-preemption timer exit where okernel has no console timer
/// (`exit::console_tick`), WBINVD without WBINVD exiting, and every exit reason no control
/// okernel sets causes at all ([`crate::exit::other::never_caused`]: they
/// get a defined outcome and the run goes on). An undefined exit reason
/// is fatal (`ExitError::UnknownReason`) and never reaches a check.
pub fn unexpected<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &Vcpu<V, C, P, M>,
    basic: u16,
) -> bool {
    let read = |f| vcpu.vmcs.read(f).unwrap_or(0);
    if basic == ExitReason::CrAccess as u16 {
        let q = vcpu
            .vmcs
            .read(ReadOnlyNatural::ExitQualification)
            .unwrap_or(0);
        let control = match (q & 0xf, (q >> 4) & 3) {
            (3, 0) => PrimaryProcBased::CR3_LOAD_EXITING,
            (3, 1) => PrimaryProcBased::CR3_STORE_EXITING,
            _ => return false,
        };
        read(Control32::PrimaryProcessorBasedControls) & control.bits() == 0
    } else if basic == ExitReason::PreemptionTimer as u16 {
        // The console's timer: armed only where the processor offers it
        // (the state after the tick cannot tell: the tick may disarm it).
        vcpu.timer.ticks().is_none()
    } else if basic == ExitReason::Mwait as u16 {
        // MWAIT exiting goes with the console's timer where it is used.
        !vcpu.timer.mwait
    } else if basic == ExitReason::Wbinvd as u16 {
        read(Control32::SecondaryProcessorBasedControls) & SecondaryProcBased::WBINVD_EXITING.bits()
            == 0
    } else {
        ExitReason::from_raw(basic).is_some_and(crate::exit::other::never_caused)
    }
}

/// The policy-decision part of the key, by reason: the call class and
/// status of a VMCALL; the access (qualification bits 2:0, 8:7, SDM Vol.
/// 3C Table 28-7) and [`memory_class`] of an EPT violation; the CR number
/// and access type (qualification bits 5:0, Table 28-3) of a CR access;
/// the [`msr_class`] of RDMSR/WRMSR, with bit 8 = locked; the instruction
/// identity (instruction information bits 29:28, Tables 28-10/11) of a
/// descriptor-table exit; 0 for the rest.
pub fn detail<V: Vmcs, C: Cpu, P: Policy, M: Fuzzed>(
    vcpu: &mut Vcpu<V, C, P, M>,
    basic: u16,
    rax: u64,
    outcome: Outcome,
) -> u32 {
    const VMCALL: u16 = ExitReason::Vmcall as u16;
    const EPT: u16 = ExitReason::EptViolation as u16;
    const CR: u16 = ExitReason::CrAccess as u16;
    const RDMSR: u16 = ExitReason::Rdmsr as u16;
    const WRMSR: u16 = ExitReason::Wrmsr as u16;
    const GDTR_IDTR: u16 = ExitReason::GdtrIdtrAccess as u16;
    const LDTR_TR: u16 = ExitReason::LdtrTrAccess as u16;
    let qualification = || {
        vcpu.vmcs
            .read(ReadOnlyNatural::ExitQualification)
            .unwrap_or(0)
    };
    match basic {
        VMCALL => {
            let status = match outcome {
                Outcome::Advance | Outcome::Redirect => vcpu.regs.rax(),
                _ => u64::MAX,
            };
            vmcall_detail(rax, status)
        }
        EPT => {
            let q = qualification();
            let access = (q & 7) | ((q >> 7) & 3) << 3;
            let gpa = Gpa(vcpu
                .vmcs
                .read(ReadOnly64::GuestPhysicalAddress)
                .unwrap_or(0));
            let class = memory_class(
                vcpu.policy.protection().map(|p| &*p),
                Some(&vcpu.memory),
                gpa,
            );
            (access | u64::from(class) << 8) as u32
        }
        CR => (qualification() & 0x3f) as u32,
        RDMSR | WRMSR => {
            let msr = vcpu.regs.rcx() as u32;
            let locked = vcpu.policy.locked_msr(msr).is_some();
            u32::from(msr_class(msr)) | u32::from(locked) << 8
        }
        GDTR_IDTR | LDTR_TR => {
            let info = vcpu.vmcs.read(ReadOnly32::ExitInstructionInfo).unwrap_or(0);
            (info >> 28) & 3
        }
        _ => 0,
    }
}

/// The memory class of a plain RAM page in [`memory_class`].
pub const PLAIN: u8 = 0;
/// A protected page of the current context.
pub const OWN_PROTECTED: u8 = 16;
/// A protected page of another context.
pub const OTHER_PROTECTED: u8 = 17;
/// Monitor memory (image, stacks, VMCS: the loader's ranges).
pub const MONITOR: u8 = 18;
/// The monitor's frame pool (EPT tables).
pub const POOL: u8 = 19;
/// Not guest RAM (reserved, MMIO, unmapped, beyond the identity map).
pub const NOT_RAM: u8 = 20;

/// What kind of memory `gpa` is: a locked region's kind (1–7), an
/// unlocked registered region's (9–15), or one of the constants above.
pub fn memory_class(prot: Option<&Protection>, views: Option<&dyn Inspect>, gpa: Gpa) -> u8 {
    let page = PhysRange::new(gpa.page_base().0, 0x1000);
    if let Some(views) = views {
        let monitor = views.monitor();
        if let Some(i) = monitor.iter().position(|m| m.overlaps(&page)) {
            return if i + 1 == monitor.len() {
                POOL
            } else {
                MONITOR
            };
        }
        if let Err(MemoryError::NotRam(_) | MemoryError::Unreachable(_)) =
            views.check_ram(Gpa(page.start), 0x1000)
        {
            return NOT_RAM;
        }
    }
    let Some(p) = prot else {
        return PLAIN;
    };
    if let Some(pg) = p.protected_pages().find(|pg| pg.gpa == gpa.page_base()) {
        return if pg.owner == p.current {
            OWN_PROTECTED
        } else {
            OTHER_PROTECTED
        };
    }
    match p.regions.iter().flatten().find(|r| r.range.contains(gpa.0)) {
        Some(r) => region_code(r.kind) | if r.locked { 0 } else { 8 },
        None => PLAIN,
    }
}

const fn region_code(kind: RegionKind) -> u8 {
    kind as u64 as u8
}

/// A small class of MSR `msr` (so a random index does not make a new
/// edge): EFER 1, STAR/LSTAR/CSTAR/FMASK 2–5, KERNEL_GS_BASE 6,
/// SYSENTER_CS/ESP/EIP 7–9, PAT 10, FEATURE_CONTROL 11, the VMX
/// capability MSRs 12, the CET MSRs 13, IA32_APIC_BASE 14, the x2APIC
/// MSRs 15, any other 0.
pub const fn msr_class(msr: u32) -> u8 {
    use crate::msrs::{
        IA32_APIC_BASE, IA32_EFER, IA32_FEATURE_CONTROL, IA32_FMASK, IA32_INTERRUPT_SSP_TABLE_ADDR,
        IA32_KERNEL_GS_BASE, IA32_PAT, IA32_STAR, IA32_SYSENTER_CS, IA32_SYSENTER_EIP, IA32_U_CET,
        IA32_VMX_BASIC, IA32_VMX_EXIT_CTLS2, X2APIC_FIRST, X2APIC_LAST,
    };
    match msr {
        IA32_EFER => 1,
        IA32_STAR..=IA32_FMASK => 2 + (msr - IA32_STAR) as u8,
        IA32_KERNEL_GS_BASE => 6,
        IA32_SYSENTER_CS..=IA32_SYSENTER_EIP => 7 + (msr - IA32_SYSENTER_CS) as u8,
        IA32_PAT => 10,
        IA32_FEATURE_CONTROL => 11,
        IA32_VMX_BASIC..=IA32_VMX_EXIT_CTLS2 => 12,
        IA32_U_CET..=IA32_INTERRUPT_SSP_TABLE_ADDR => 13,
        IA32_APIC_BASE => 14,
        X2APIC_FIRST..=X2APIC_LAST => 15,
        _ => 0,
    }
}
