//! The protection-policy hypercalls (ABI calls 16–31), the common part:
//! the environment every call works in, the answers that come before the
//! arguments, and the region calls (16, 17). The arguments arrive decoded
//! and checked as far as no state is needed
//! ([`okernel_abi::request::Request`]). CR pins, MSR locks and the
//! descriptor-table lock are in [`super::locks`]; contexts in
//! [`super::contexts`], protected pages in [`super::protected_pages`],
//! gates in [`super::gates`]; the page-table update and the audit calls
//! in [`super::page_table`]; the calls of a self-patching kernel in
//! [`super::patch_sites`].
//!
//! Every call validates all its arguments and the policy state first and
//! changes nothing on an error (invariant 11). A call that would succeed
//! but comes from an untrusted context is `PermissionDenied` unless the
//! ABI lets untrusted contexts make it (SwitchContext, UpdatePageTable,
//! the audit calls, and protected pages of the caller's own context): so
//! a caller gets the same error for a malformed request whatever its
//! context, and an untrusted kernel path can neither widen its rights nor
//! lock memory it does not own.

use okernel_abi::hypercall::{Call, Status};
use okernel_abi::policy::{ExecuteRule, RegionKind};
use okernel_abi::request::Pages;

use crate::hw::{Cpu, Vmcs};
use crate::mem::MemoryError;
use crate::memmap::{Gpa, PhysRange};
use crate::policy::apply::{self, Class};
use crate::policy::audit::{Access, AuditAction, AuditKind, AuditLog, AuditRecord};
use crate::policy::hooks::PolicyHooks;
use crate::policy::protection::{Gate, Protection, Region};
use crate::policy::views::Views;
use crate::policy::{Policy, guest_paging, xapic_trap};
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{CrConfig, ExitError, Vcpu};
use crate::vmx::controls::SecondaryProcBased;
use crate::vmx::fields::{Control32, Control64, GuestNatural};

/// What a successful policy call gives the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// RAX = Success, RDI = the value if any; RIP after the VMCALL.
    Done(Option<u64>),
    /// RAX = Success, RDI = `rdi`; the guest resumes at `gate` in its
    /// entry state.
    Gate {
        /// The gate.
        gate: Gate,
        /// The context the guest switched from.
        rdi: u64,
    },
}

/// A call's answer to the guest: a reply, or the status of the refusal
/// (the guest's request was bad, or the policy refuses it). A handler
/// returns it inside `Result<CallResult, ExitError>`, whose `Err` is
/// only a broken monitor invariant, which ends the run.
pub type CallResult = Result<Reply, Status>;

/// Everything a policy call works on (disjoint parts of the [`Vcpu`]).
pub struct Env<'a, V: Vmcs, C: Cpu> {
    /// The policy state.
    pub prot: &'a mut Protection,
    /// The EPT views and guest RAM.
    pub views: &'a mut dyn Views,
    /// The current VMCS.
    pub vmcs: &'a mut V,
    /// The processor.
    pub cpu: &'a mut C,
    /// The audit log.
    pub audit: &'a mut AuditLog,
    /// CR0/CR4 virtualisation (the masks grow with pins).
    pub cr: &'a mut CrConfig,
    /// The policy generation this processor reflects
    /// ([`Vcpu::seen_generation`]).
    pub seen_generation: &'a mut u64,
}

impl<'a, V: Vmcs, C: Cpu> Env<'a, V, C> {
    /// The environment of `vcpu`'s parts; None when its monitor has no
    /// protection policy or no views.
    pub fn of<P: Policy, M: GuestMemory>(vcpu: &'a mut Vcpu<V, C, P, M>) -> Option<Self> {
        let Vcpu {
            policy,
            memory,
            vmcs,
            cpu,
            audit,
            cr,
            seen_generation,
            ..
        } = vcpu;
        let (Some(prot), Some(views)) = (policy.protection(), memory.views()) else {
            return None;
        };
        Some(Env {
            prot,
            views,
            vmcs,
            cpu,
            audit,
            cr,
            seen_generation,
        })
    }

    /// Records a change every other processor must pick up
    /// ([`Protection::generation`], `crate::exit::vmcs_sync`); this
    /// processor, which makes it, applies it itself (its INVEPT, its VMCS
    /// writes).
    pub fn changed(&mut self) {
        self.prot.changed();
        *self.seen_generation = self.prot.generation;
    }

    /// `PermissionDenied` unless the guest runs in the trusted context.
    pub fn trusted(&self) -> Result<(), Status> {
        if self.prot.current == 0 {
            Ok(())
        } else {
            Err(Status::PermissionDenied)
        }
    }

    /// Makes the trusted context (0) current, as a stop
    /// (`crate::exit::stop`) and a SIPI (`crate::exit::sipi`) return the
    /// processor to it: its view's EPTP in the VMCS, context 0 current for
    /// the views and the policy. False, and nothing changed, when context
    /// 0 has no view.
    pub fn enter_trusted(&mut self) -> Result<bool, ExitError> {
        let Some(eptp) = self.views.eptp(0) else {
            return Ok(false);
        };
        self.vmcs.write(Control64::Eptp, eptp)?;
        self.views.set_current(0);
        self.prot.current = 0;
        Ok(true)
    }

    /// Writes and logs an audit record of a refused or redirected call.
    pub fn audit(
        &mut self,
        kind: AuditKind,
        gpa: u64,
        qualification: u64,
        action: AuditAction,
    ) -> Result<(), ExitError> {
        let record = AuditRecord {
            seq: 0,
            kind,
            context: self.prot.current,
            gpa,
            gva: None,
            access: Access::WRITE,
            allowed: Access::empty(),
            qualification,
            rip: self.vmcs.read(GuestNatural::Rip)?,
            cr3: self.vmcs.read(GuestNatural::Cr3)?,
            action,
        };
        self.audit.record(record);
        Ok(())
    }

    /// INVEPT for every view after a change.
    pub fn invalidate(&mut self) -> Result<(), ExitError> {
        self.changed();
        apply::invalidate(self.cpu, self.prot.caps.invept_all, self.views)?;
        Ok(())
    }

    /// Opens the APIC page's write trap on the page at `page`
    /// (`crate::exit::xapic`, `crate::policy::xapic_trap::open`), every
    /// view invalidated; `Ok(false)`: the trusted view does not map the
    /// page writable (nothing to trap).
    pub fn open_xapic_trap(&mut self, page: u64) -> Result<bool, ExitError> {
        let opened = xapic_trap::open(self.prot, self.views, page).map_err(ExitError::PolicyEpt)?;
        if opened {
            self.invalidate()?;
        }
        Ok(opened)
    }

    /// Closes the APIC page's write trap if it is open, every view
    /// invalidated: whether it was open.
    pub fn close_xapic_trap(&mut self) -> Result<bool, ExitError> {
        let closed = xapic_trap::close(self.prot, self.views).map_err(ExitError::PolicyEpt)?;
        if closed {
            self.invalidate()?;
        }
        Ok(closed)
    }

    /// The guest's paging state (real CR0/CR4: what its walks use).
    pub fn paging(&self) -> Result<guest_paging::PagingState, ExitError> {
        Ok(guest_paging::PagingState::of(&*self.vmcs)?)
    }

    /// The quadword of guest RAM at `gpa` (None: not readable).
    pub fn read_u64(&self, gpa: Gpa) -> Option<u64> {
        let mut b = [0u8; 8];
        self.views
            .read_phys(gpa, &mut b)
            .ok()
            .map(|()| u64::from_le_bytes(b))
    }

    /// Whether gate `g` can be entered: its address still translates to
    /// the page it was registered with, as [`Env::gate_target`] requires.
    pub fn gate_usable(&self, g: &Gate) -> Result<bool, ExitError> {
        Ok(self.gate_target(g.cr3, g.linear)? == Some(g.gpa))
    }

    /// Where a gate at `linear` would run, through the page tables at
    /// `cr3` (0: the current ones): the guest-physical address, if the
    /// guest is in IA-32e mode with 4-level paging (a gate's CS is 64-bit
    /// code), every table of the walk lies in a locked page-table region
    /// (no context can change it but through UpdatePageTable), and the
    /// page is supervisor and executable — so the processor fetches the
    /// gate's first instruction without a fault, which would run a
    /// handler in the trusted view with the caller's registers and end
    /// the gate's NMI blocking with its IRET.
    pub fn gate_target(&self, cr3: u64, linear: u64) -> Result<Option<Gpa>, ExitError> {
        let mut state = self.paging()?;
        if !state.long_mode() {
            return Ok(None);
        }
        if cr3 != 0 {
            state.cr3 = cr3;
        }
        let Ok(m) = guest_paging::translate(state, linear, |gpa| self.read_u64(gpa)) else {
            return Ok(None);
        };
        // Every table the walk read, at GPA 0 too (until session 13 a
        // table there was taken for "no table" and not checked).
        let locked = m.tables.iter().flatten().all(|&t| {
            self.prot
                .locked_region_at(t, okernel_abi::policy::RegionKind::PageTable)
                .is_some()
        });
        Ok((locked && !m.user && m.executable).then_some(m.gpa))
    }

    /// Translates a guest-linear address through the guest's page tables
    /// (entries read from guest RAM).
    pub fn translate(&self, linear: u64) -> Result<Option<Gpa>, ExitError> {
        self.translate_in(0, linear)
    }

    /// Translates a guest-linear address through the page tables at
    /// `cr3` (0: the guest's current CR3), in the guest's paging mode.
    pub fn translate_in(&self, cr3: u64, linear: u64) -> Result<Option<Gpa>, ExitError> {
        let mut state = self.paging()?;
        if cr3 != 0 {
            state.cr3 = cr3;
        }
        Ok(
            guest_paging::translate(state, linear, |gpa| self.read_u64(gpa))
                .ok()
                .map(|m| m.gpa),
        )
    }
}

/// The status for a range [`Views::check_ram`] or guest memory refused.
pub const fn memory_status(e: MemoryError) -> Status {
    match e {
        MemoryError::Monitor(_) => Status::MonitorMemory,
        MemoryError::NotRam(_) | MemoryError::Wraps(..) | MemoryError::Unreachable(_) => {
            Status::OutOfRam
        }
        MemoryError::NotReadable(_) | MemoryError::NotWritable(_) => Status::InvalidArgument,
    }
}

/// A fatal EPT failure after the frame check (a monitor bug).
fn fatal(e: ept::Error) -> ExitError {
    ExitError::PolicyEpt(e)
}

/// Runs `f`, a policy call's handler, in `vcpu`'s [`Env`]; a monitor
/// without the protection policy answers `UnknownCall`.
pub fn with_env<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    f: impl FnOnce(&mut Env<'_, V, C>) -> Result<CallResult, ExitError>,
) -> Result<CallResult, ExitError> {
    match Env::of(vcpu) {
        Some(mut env) => f(&mut env),
        None => Ok(Err(Status::UnknownCall)),
    }
}

/// The answer to `call` that comes before its arguments are looked at
/// (`None`: the arguments decide): a policy call to a monitor without the
/// protection policy is `UnknownCall`; a call the ABI refuses untrusted
/// callers first ([`Call::trusted_first`]: RegisterGate) is
/// `PermissionDenied` from an untrusted context. The handlers answer the
/// same for a well-formed request.
pub fn before_arguments<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    call: Call,
) -> Option<Status> {
    if !call.is_policy() {
        return None;
    }
    let Some(env) = Env::of(vcpu) else {
        return Some(Status::UnknownCall);
    };
    if call.trusted_first() {
        env.trusted().err()
    } else {
        None
    }
}

/// RegisterRegion(pages, kind): kind, alignment and length decoded.
pub fn register_region<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    pages: Pages,
    kind: RegionKind,
) -> CallResult {
    let (base, len) = (pages.base(), pages.len());
    env.views.check_ram(Gpa(base), len).map_err(memory_status)?;
    let range = PhysRange::new(base, len);
    if env.prot.overlaps(&range) {
        return Err(Status::Overlap);
    }
    let id = env
        .prot
        .regions
        .iter()
        .position(Option::is_none)
        .ok_or(Status::Exhausted)?;
    env.trusted()?;
    env.prot.regions[id] = Some(Region {
        range,
        kind,
        locked: false,
    });
    Ok(Reply::Done(Some(id as u64)))
}

/// LockRegion(id): its rights in every view; the first text region turns
/// W^X on (and mode-based execute control where the CPU has it) unless
/// the execute rule leaves execute rights to the guest's page tables.
pub fn lock_region<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    id: u64,
) -> Result<CallResult, ExitError> {
    let Some(region) = usize::try_from(id)
        .ok()
        .and_then(|i| env.prot.regions.get(i).copied().flatten())
    else {
        return Ok(Err(Status::NotFound));
    };
    if region.locked {
        // Stays as it is (a planted-defect build may say otherwise:
        // `crate::fuzz::planted_policy`).
        if let Some(r) = <crate::seam::PolicyDefects as PolicyHooks>::relocked(region) {
            env.prot.regions[id as usize] = Some(r);
        }
        return Ok(Err(Status::Locked));
    }
    let wx_on = region.kind == RegionKind::Text
        && !env.prot.wx
        && env.prot.execute == ExecuteRule::LockedTextOnly;
    let views = apply::live_count(env.views);
    let calls = if wx_on {
        views * (env.prot.protects_per_view(env.views.ram().len()) + 1)
    } else {
        views
    };
    if let Err(s) = apply::check_frames(env.views, calls) {
        return Ok(Err(s));
    }
    if let Err(s) = env.trusted() {
        return Ok(Err(s));
    }
    let locked = Region {
        locked: true,
        ..region
    };
    env.prot.regions[id as usize] = Some(locked);
    if wx_on {
        env.prot.wx = true;
        if env.prot.caps.mbec {
            let s = env.vmcs.read(Control32::SecondaryProcessorBasedControls)?;
            let s = s | SecondaryProcBased::MODE_BASED_EXECUTE_CONTROL.bits();
            env.vmcs
                .write(Control32::SecondaryProcessorBasedControls, s)?;
            env.prot.mbec_active = true;
        }
        for c in 0..=okernel_abi::policy::MAX_CONTEXTS as u16 {
            if env.views.is_live(c) {
                apply::recompute_view(env.prot, env.views, c).map_err(fatal)?;
            }
        }
    } else {
        apply::apply_range(
            env.prot,
            env.views,
            locked.range,
            Class::Region(locked.kind),
        )
        .map_err(fatal)?;
    }
    env.invalidate()?;
    Ok(Ok(Reply::Done(None)))
}
