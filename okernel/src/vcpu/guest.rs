//! The virtual CPU an exit handler or hypercall works on, and the
//! guest-state helpers they share: registers by number, CPL, mode, the
//! entry at a gate, the guest TLB flush. (The RIP advance and event
//! injection, a denied write's #GP included, are added by the exit layer,
//! `crate::exit::rip`, `crate::exit::events`, and called from there and
//! above only.)

use super::ExitError;
use super::counters::ExitCounters;
use super::memory::{GuestMemory, NoGuestMemory};
use super::reason::GuestReason;
use crate::bits::{
    CR0_PE, CR0_PG, CR4_SMXE, CR4_VMXE, EFER_LMA, RFLAGS_AC, RFLAGS_DF, RFLAGS_IF, RFLAGS_IOPL,
    RFLAGS_NT, RFLAGS_RF, RFLAGS_TF, RFLAGS_VM,
};
use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::policy::audit::AuditLog;
use crate::policy::protection::Gate;
use crate::vmx::capability::FixedBits;
use crate::vmx::controls::SecondaryProcBased;
use crate::vmx::error::VmFail;
use crate::vmx::fields::{Control16, Control32, Guest16, Guest32, Guest64, GuestNatural};
use crate::vmx::regs::{Gpr, GuestRegisters};

/// The DPL field (bits 6:5) of segment access rights (SDM Vol. 3C
/// §25.4.1, Table 25-2).
pub const SS_DPL: u32 = 0b11 << 5;

/// The current privilege level for the guest's SS access rights: SS.DPL
/// (SDM Vol. 3C §25.4.1: "the value of the DPL field for SS is always
/// equal to the logical processor's current privilege level").
#[inline(always)]
pub const fn cpl_of(ss_access_rights: u32) -> u8 {
    ((ss_access_rights & SS_DPL) >> 5) as u8
}

/// How the guest's CR0 and CR4 are virtualised (SDM Vol. 3C §26.3
/// "Changes to Instruction Behavior in VMX Non-Root Operation", MOV to CR0/CR4;
/// §25.6.6 "Guest/Host Masks and Read Shadows for CR0 and CR4").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrConfig {
    /// The CR0 bits VMX fixes while the guest runs (PE and PG are free:
    /// unrestricted guest).
    pub cr0_fixed: FixedBits,
    /// The CR4 bits VMX fixes (VMXE is 1).
    pub cr4_fixed: FixedBits,
    /// CR0 guest/host mask: the bits the guest reads from the shadow and
    /// cannot change without an exit.
    pub cr0_mask: u64,
    /// CR4 guest/host mask.
    pub cr4_mask: u64,
}

impl CrConfig {
    /// The configuration for the processor's fixed bits: every bit the
    /// guest may not choose freely (forced to 1 or to 0) is owned by the
    /// monitor, and so are CR4.VMXE and CR4.SMXE (VMX and SMX are hidden).
    pub const fn new(cr0: FixedBits, cr4: FixedBits) -> Self {
        let cr0_fixed = FixedBits {
            fixed0: cr0.fixed0 & !(CR0_PE | CR0_PG),
            fixed1: cr0.fixed1,
        };
        let low = 0xffff_ffff;
        Self {
            cr0_fixed,
            cr4_fixed: cr4,
            cr0_mask: (cr0_fixed.fixed0 | !cr0.fixed1) & low,
            cr4_mask: (cr4.fixed0 | !cr4.fixed1 | CR4_VMXE | CR4_SMXE) & low,
        }
    }

    /// What the guest reads of a control register whose real value is
    /// `real`, read shadow `shadow` and guest/host mask `mask`: the real
    /// bits outside the mask, the shadow's inside it (SDM Vol. 3C
    /// §25.6.6).
    pub const fn visible(real: u64, shadow: u64, mask: u64) -> u64 {
        (real & !mask) | (shadow & mask)
    }

    /// The real CR0 for a guest-visible value.
    pub const fn real_cr0(&self, visible: u64) -> u64 {
        self.cr0_fixed.apply(visible)
    }

    /// The real CR4 for a guest-visible value.
    pub const fn real_cr4(&self, visible: u64) -> u64 {
        self.cr4_fixed.apply(visible)
    }
}

/// The state a redirect to a gate starts the guest in (invariant 9): the
/// caller of `SwitchContext` must not be able to make the processor act in
/// the less restricted view before the gate's first instruction, nor
/// choose the stack it acts on.
///
/// * RSP: the gate's registered stack (SDM Vol. 3C §25.4.1; loaded by VM
///   entry, §27.3.2.1); CR3: the gate's registered page tables, if any
///   (the caller's cached translations dropped); CS and SS: the
///   registering kernel's (its CPL and mode), [`crate::hypercall::gates`].
/// * RFLAGS: IF clear (no maskable interrupt, a pending self-IPI
///   included, is delivered until the gate sets it), TF clear (no
///   single-step trap after the gate's first instruction), RF clear (an
///   instruction breakpoint is not suppressed), AC clear (no alignment
///   check), DF clear (string operations go up, as the SysV ABI expects),
///   IOPL 0, NT clear (IRET works); bit 1 stays set (SDM Vol. 1 §3.4.3,
///   Vol. 3C §27.3.1.4).
/// * Activity state: active (a caller stopped in HLT does not leave the
///   gate halted).
/// * DR7 = 0x400, its reset value: every breakpoint disabled, DR0–DR3
///   inert (SDM Vol. 3B §18.2.4 "Debug Control Register"; VM entry loads DR7 with "load debug
///   controls", §27.3.2.1).
/// * Pending debug exceptions = 0: no #DB (a single-step trap the VMCALL
///   left pending, a data breakpoint) is delivered at the gate before its
///   first instruction (SDM Vol. 3C §25.4.2, §27.7.3).
/// * Interruptibility: blocking by STI and by MOV SS clear, as completing
///   the VMCALL would (§25.4.2); blocking by NMI set. An NMI that arrives
///   before the gate has loaded its state (its CR3, GS) is held pending
///   until the gate's first IRET, which ends NMI blocking (SDM Vol. 3A
///   §6.7.1 "Handling Multiple NMIs"; VM entry loads the blocking from the
///   interruptibility-state field, §27.7.1; the checks allow it with
///   "virtual NMIs" off, §27.3.1.5). The blocking ends at the next IRET
///   the processor executes — the gate's own (an IRETQ to its next
///   instruction, once it trusts its state) or that of an exception
///   handler that ran first, so a gate must not fault before. okernel
///   runs with "NMI exiting" and "virtual NMIs" off (`check::probe`
///   refuses a processor that forces them), so bit 3 is the processor's
///   real NMI blocking.
pub struct GateEntry;

impl GateEntry {
    /// RFLAGS bit 1, always 1.
    pub const FIXED1: u64 = 1 << 1;
    /// The RFLAGS bits a gate always starts with clear: TF, IF, DF, RF,
    /// AC and IOPL; NT, since with it set IRET in IA-32e mode raises #GP
    /// (SDM Vol. 2A, IRET), so a caller could make the gate's IRET — how
    /// it takes NMIs again — fault; VM, since a virtual-8086 caller
    /// (outside IA-32e mode; a gate needs it, `Env::gate_target`) must not
    /// make VM entry apply the virtual-8086 segment checks to the gate's
    /// CS and SS.
    pub const CLEARED: u64 = RFLAGS_TF
        | RFLAGS_IF
        | RFLAGS_DF
        | RFLAGS_RF
        | RFLAGS_AC
        | RFLAGS_IOPL
        | RFLAGS_NT
        | RFLAGS_VM;
    /// Activity state "active" (SDM Vol. 3C Table 25-3): a gate runs, even
    /// if the caller was stopped in HLT (an INIT taken there).
    pub const ACTIVE: u32 = 0;
    /// DR7's reset value.
    pub const DR7: u64 = 0x400;
    /// Interruptibility: blocking by STI (bit 0) and by MOV SS (bit 1),
    /// cleared at a gate.
    pub const STI_MOV_SS: u32 = 0b11;
    /// Interruptibility: blocking by NMI (bit 3), set at a gate.
    pub const NMI_BLOCKING: u32 = 1 << 3;

    /// The interruptibility state a gate starts with, from the caller's.
    pub const fn interruptibility(caller: u32) -> u32 {
        (caller & !Self::STI_MOV_SS) | Self::NMI_BLOCKING
    }

    /// The RFLAGS a gate starts with, from the caller's.
    pub const fn rflags(caller: u64) -> u64 {
        (caller & !Self::CLEARED) | Self::FIXED1
    }
}

/// A virtual CPU: the current VMCS, the processor, the guest's registers,
/// and the monitor state exit handlers update.
///
/// `repr(C)` with the registers first: the exit stub
/// ([`crate::arch::run`]) stores the guest's registers at HOST_RSP, which
/// is the address of the run loop's `Vcpu`.
#[derive(Debug)]
#[repr(C)]
pub struct Vcpu<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory = NoGuestMemory> {
    /// The guest's general-purpose registers (not RSP).
    pub regs: GuestRegisters,
    /// The current VMCS.
    pub vmcs: V,
    /// The processor.
    pub cpu: C,
    /// The policy hooks.
    pub policy: P,
    /// Denied operations.
    pub audit: AuditLog,
    /// Exits by reason.
    pub counters: ExitCounters,
    /// CR0/CR4 virtualisation.
    pub cr: CrConfig,
    /// The EPT capabilities (for decoding violation qualifications).
    pub ept: ept::EptCaps,
    /// Guest memory, as hypercalls may read it (through the current view).
    pub memory: M,
    /// The reason the guest gave with its Exit hypercall (empty if none).
    pub guest_reason: GuestReason,
    /// The platform's port rules (ACPI sleep and reset), which
    /// [`crate::exit::io`] applies beside its fixed ports.
    pub platform: super::platform_ports::PlatformPorts,
    /// The console's timer (none until the launch finds one).
    pub timer: super::timer::ConsoleTimer,
    /// Whether a SIPI started this processor (`crate::exit::sipi`; per
    /// processor, like the registers): its exits clear a saved blocking
    /// by SMI (`crate::exit::sipi::clear_saved_smi_blocking`).
    pub startup: super::startup::Startup,
    /// How many application processors a SIPI started
    /// (`crate::exit::sipi`; shared by every processor, unlike the
    /// per-processor fields): with one or more, a processor that halts
    /// leaves the audit lines it queued to the others (`crate::exit::stop`);
    /// the last start closes the APIC page's write trap
    /// (`crate::exit::xapic`).
    pub started_aps: u8,
    /// How many application processors joined the run (set once, at
    /// launch, before any guest instruction; shared): with one or more
    /// the run is shared.
    pub joined_aps: u8,
    /// This processor's number in the run (0 the bootstrap processor,
    /// `crate::launch::presence`; per processor, like the registers).
    pub cpu_index: usize,
    /// With several processors: makes every other one leave the guest
    /// and stay out until this processor's patch step closed, before the
    /// step opens its page (`crate::exit::patch_step`); `Err` names one
    /// that did not leave in time. Set once at launch (shared); `None` on
    /// one processor.
    pub stop_others: Option<fn(usize) -> Result<(), usize>>,
    /// The policy generation this processor's VMCS and TLB reflect
    /// (`crate::policy::Policy::generation`; per processor, like the
    /// registers).
    pub seen_generation: u64,
    /// What the memory's exit hooks keep ([`super::hooks::ExitHooks`]):
    /// nothing (`()`) for the production memories; coverage and the
    /// oracles' baseline in a fuzz build (`crate::fuzz::FuzzState`).
    pub hooks: <M as super::hooks::ExitHooks>::State,
}

impl<V: Vmcs, C: Cpu, P: Policy> Vcpu<V, C, P> {
    /// A virtual CPU with empty counters and audit log, which reads no
    /// guest memory.
    pub fn new(vmcs: V, cpu: C, policy: P, cr: CrConfig, ept: ept::EptCaps) -> Self {
        Self::with_memory(vmcs, cpu, policy, cr, ept, NoGuestMemory)
    }
}

impl<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory> Vcpu<V, C, P, M> {
    /// A virtual CPU with empty counters and audit log, reading guest
    /// memory through `memory`.
    pub fn with_memory(
        vmcs: V,
        cpu: C,
        policy: P,
        cr: CrConfig,
        ept: ept::EptCaps,
        memory: M,
    ) -> Self {
        Self {
            regs: GuestRegisters::default(),
            vmcs,
            cpu,
            policy,
            audit: AuditLog::new(),
            counters: ExitCounters::new(),
            cr,
            ept,
            memory,
            guest_reason: GuestReason::none(),
            platform: super::platform_ports::PlatformPorts::default(),
            timer: super::timer::ConsoleTimer::new(None, false),
            seen_generation: 0,
            started_aps: 0,
            joined_aps: 0,
            cpu_index: 0,
            stop_others: None,
            startup: super::startup::Startup::Never,
            hooks: Default::default(),
        }
    }

    /// The guest's current privilege level ([`cpl_of`] the SS access
    /// rights). One VMREAD.
    #[inline(always)]
    pub fn cpl(&self) -> Result<u8, ExitError> {
        Ok(cpl_of(self.vmcs.read(Guest32::SsAccessRights)?))
    }

    /// Whether the guest executes in 64-bit mode (IA32_EFER.LMA and CS.L).
    #[inline(always)]
    pub fn in_64bit_mode(&self) -> Result<bool, VmFail> {
        let lma = self.vmcs.read(Guest64::Efer)? & EFER_LMA != 0;
        let cs_l = self.vmcs.read(Guest32::CsAccessRights)? & (1 << 13) != 0;
        Ok(lma && cs_l)
    }

    /// [`Self::in_64bit_mode`], read at most once per exit: `known` caches
    /// the answer for the rest of the exit.
    #[inline(always)]
    pub fn mode_once(&self, known: &mut Option<bool>) -> Result<bool, VmFail> {
        if let Some(wide) = *known {
            return Ok(wide);
        }
        let wide = self.in_64bit_mode()?;
        *known = Some(wide);
        Ok(wide)
    }

    /// Reads a general-purpose register by number (RSP from the VMCS).
    pub fn gpr(&self, r: Gpr) -> Result<u64, ExitError> {
        match r {
            Gpr::Rsp => Ok(self.vmcs.read(GuestNatural::Rsp)?),
            _ => Ok(self.regs.get(r)),
        }
    }

    /// Writes a general-purpose register by number (RSP into the VMCS).
    pub fn set_gpr(&mut self, r: Gpr, value: u64) -> Result<(), ExitError> {
        match r {
            Gpr::Rsp => self.vmcs.write(GuestNatural::Rsp, value)?,
            _ => self.regs.set(r, value),
        }
        Ok(())
    }

    /// The operand of a register source as the guest's mode sees it: the
    /// low 32 bits outside 64-bit mode.
    pub fn operand(&self, r: Gpr) -> Result<u64, ExitError> {
        let v = self.gpr(r)?;
        Ok(if self.in_64bit_mode()? {
            v
        } else {
            v & 0xffff_ffff
        })
    }

    /// Resumes the guest at gate `g` instead of after the exiting
    /// instruction, in the state [`GateEntry`] defines: on its registered
    /// stack (or the caller's RSP for a gate registered without one), its
    /// registered page tables (or the caller's CR3) and the registering
    /// kernel's CS and SS. Nothing advances RIP after it (a hypercall
    /// answers `crate::hypercall::Vmcall::Redirected`).
    pub fn enter_gate(&mut self, g: &Gate) -> Result<(), ExitError> {
        self.vmcs.write(GuestNatural::Rip, g.linear)?;
        if g.stack != 0 {
            self.vmcs.write(GuestNatural::Rsp, g.stack)?;
        }
        if g.cr3 != 0 {
            self.vmcs.write(GuestNatural::Cr3, g.cr3)?;
            // No MOV to CR3 ran: drop what the caller's tables left in the
            // TLB (with VPID it survives VM entry).
            flush_guest_tlb(self)?;
        }
        for (seg, selector, base, limit, access) in [
            (
                &g.cs,
                Guest16::CsSelector,
                GuestNatural::CsBase,
                Guest32::CsLimit,
                Guest32::CsAccessRights,
            ),
            (
                &g.ss,
                Guest16::SsSelector,
                GuestNatural::SsBase,
                Guest32::SsLimit,
                Guest32::SsAccessRights,
            ),
        ] {
            self.vmcs.write(selector, seg.selector)?;
            self.vmcs.write(base, seg.base)?;
            self.vmcs.write(limit, seg.limit)?;
            self.vmcs.write(access, seg.access)?;
        }
        let rflags = self.vmcs.read(GuestNatural::Rflags)?;
        self.vmcs
            .write(GuestNatural::Rflags, GateEntry::rflags(rflags))?;
        self.vmcs.write(GuestNatural::Dr7, GateEntry::DR7)?;
        self.vmcs.write(GuestNatural::PendingDebugExceptions, 0)?;
        let interruptibility = self.vmcs.read(Guest32::InterruptibilityState)?;
        self.vmcs.write(
            Guest32::InterruptibilityState,
            GateEntry::interruptibility(interruptibility),
        )?;
        self.vmcs.write(Guest32::ActivityState, GateEntry::ACTIVE)?;
        Ok(())
    }
}

/// Drops the guest's translations the processor would have dropped
/// (INVLPG, a MOV to CR0/CR4 the monitor performed, SDM Vol. 3A
/// §4.10.4.1): with VPID they survive VM entry, so INVVPID single context
/// (SDM Vol. 3C §29.4.3.3); without VPID every VM entry flushes them.
pub fn flush_guest_tlb<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<(), ExitError> {
    let secondary = SecondaryProcBased::from_bits_retain(
        vcpu.vmcs.read(Control32::SecondaryProcessorBasedControls)?,
    );
    if secondary.contains(SecondaryProcBased::ENABLE_VPID) {
        vcpu.cpu.invvpid_single(vcpu.vmcs.read(Control16::Vpid)?)?;
    }
    Ok(())
}
