//! The protection policy's state: registered regions and their one-way
//! locks (invariant 8), pinned CR bits, locked MSRs, the descriptor-table
//! lock, the live contexts, the gates and the protected pages — fixed-size
//! tables, no allocation. This module holds the data and its pure rules;
//! `policy::apply` turns it into EPT permissions, and `hypercall::policy`
//! validates the calls that change it.

use crate::bits::{
    CR0_PE, CR0_PG, CR0_WP, CR4_FSGSBASE, CR4_OSXSAVE, CR4_PAE, CR4_PGE, CR4_SMAP, CR4_SMEP,
    CR4_UMIP,
};

use okernel_abi::policy::{ExecuteRule, MAX_CONTEXTS, RegionKind};

use super::hooks::PolicyHooks;
use super::patch::PatchSites;
use super::{Decision, Policy};
use crate::hw::msr_bitmap_page::MsrBitmapPage;
use crate::memmap::{Gpa, PhysRange};

/// The most regions the guest can register.
pub const MAX_REGIONS: usize = 32;
/// The most gates.
pub const MAX_GATES: usize = 16;
/// The most protected pages over all contexts.
pub const MAX_PROTECTED_PAGES: usize = 64;
/// The most protected pages one context may own (its quota): the global
/// table shared out between the trusted and every untrusted context, so
/// that no context can exhaust it for the others.
pub const PAGES_PER_CONTEXT: usize = MAX_PROTECTED_PAGES / (MAX_CONTEXTS + 1);
/// The most locked MSRs.
pub const MAX_LOCKED_MSRS: usize = 16;

/// CR0 bits okernel pins: PE, WP, PG.
pub const CR0_PINNABLE: u64 = CR0_PE | CR0_WP | CR0_PG;
/// CR4 bits okernel pins: PAE, PGE, UMIP, FSGSBASE, OSXSAVE, SMEP, SMAP.
pub const CR4_PINNABLE: u64 =
    CR4_PAE | CR4_PGE | CR4_UMIP | CR4_FSGSBASE | CR4_OSXSAVE | CR4_SMEP | CR4_SMAP;

/// A registered region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Guest-physical range, page-aligned.
    pub range: PhysRange,
    /// What it holds.
    pub kind: RegionKind,
    /// Whether its protection is in force (one way).
    pub locked: bool,
}

/// A segment register as the VMCS holds it (SDM Vol. 3C §25.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segment {
    /// The selector.
    pub selector: u16,
    /// The base address.
    pub base: u64,
    /// The limit.
    pub limit: u32,
    /// The access rights (VMCS format: type, S, DPL, P, L, D/B, G,
    /// unusable).
    pub access: u32,
}

/// A gate: where a switch to a less restricted view resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// The guest-linear address (the new RIP).
    pub linear: u64,
    /// The guest-physical address it translated to at registration, in
    /// locked text.
    pub gpa: Gpa,
    /// The RSP the gate starts with; 0: the caller's (ABI 1.0).
    pub stack: u64,
    /// The CR3 the gate starts with and its address is translated
    /// through; 0: the caller's (ABI 1.4).
    pub cr3: u64,
    /// CS and SS as the trusted kernel had them when it registered the
    /// gate: the gate starts with them (its privilege level and mode are
    /// the kernel's, whatever the caller ran in).
    pub cs: Segment,
    /// See `cs`.
    pub ss: Segment,
}

/// A protected page and the context that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtectedPage {
    /// Guest-physical address, page-aligned.
    pub gpa: Gpa,
    /// The only context whose view maps it.
    pub owner: u16,
}

/// What the processor offers the policy, fixed at launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyCaps {
    /// Mode-based execute control for EPT (secondary control bit 22) is
    /// allowed.
    pub mbec: bool,
    /// Descriptor-table exiting (secondary control bit 2) is allowed.
    pub descriptor_table_exiting: bool,
    /// INVEPT all-context is supported (otherwise single-context).
    pub invept_all: bool,
    /// CET (CPUID.7.0:ECX.CET_SS or EDX.CET_IBT): the S_CET/PL0_SSP MSRs
    /// exist.
    pub cet: bool,
    /// The monitor trap flag (primary processor-based control bit 27) is
    /// allowed: validated self-patching needs it to let one write through.
    pub mtf: bool,
}

/// The protection policy's state. Context 0 is the trusted context (the
/// base view); 1..=[`MAX_CONTEXTS`] are untrusted.
#[derive(Debug)]
pub struct Protection {
    /// What the processor offers.
    pub caps: PolicyCaps,
    /// Regions by id.
    pub regions: [Option<Region>; MAX_REGIONS],
    /// Once a text region is locked: nothing but text is
    /// supervisor-executable in any view (W^X).
    pub wx: bool,
    /// Mode-based execute control is on (with W^X, where the CPU has it).
    pub mbec_active: bool,
    /// What may execute once text is locked (ABI 1.2): W^X is turned on
    /// only under [`ExecuteRule::LockedTextOnly`].
    pub execute: ExecuteRule,
    /// The kernel's patch sites and the write let through now
    /// (validated self-patching, ABI 1.2).
    pub patch: PatchSites,
    /// Pinned CR0 bits.
    pub cr0_pinned: u64,
    /// Pinned CR4 bits.
    pub cr4_pinned: u64,
    /// Locked MSRs and the value they are locked at.
    pub msrs: [Option<(u32, u64)>; MAX_LOCKED_MSRS],
    /// LIDT/LGDT/LLDT/LTR are refused.
    pub descriptor_tables_locked: bool,
    /// Live untrusted contexts (index = context id; 0 is always live).
    pub contexts: [bool; MAX_CONTEXTS + 1],
    /// The context the guest runs in.
    pub current: u16,
    /// How many processors run in each context (index = context id):
    /// each processor's own context, kept by the run loop as it changes
    /// (`launch::run`, [`Protection::moved`]); the caller's is
    /// [`Protection::current`]. `DestroyContext` refuses a context any
    /// processor runs in.
    pub running: [u8; MAX_CONTEXTS + 1],
    /// Whether an untrusted context was ever created: from then on a SIPI
    /// starts no processor (`crate::exit::sipi`), since a kernel path of
    /// an untrusted context can send INIT-SIPI through the xAPIC page and
    /// a started processor runs in the trusted context, at the code the
    /// SIPI's vector names.
    pub untrusted_created: bool,
    /// The local APIC's page while its writes are trapped (read-only in
    /// the trusted context's view) because a processor can still be
    /// started (`crate::exit::xapic`).
    pub xapic_trap: Option<u64>,
    /// Gates by id.
    pub gates: [Option<Gate>; MAX_GATES],
    /// Protected pages.
    pub pages: [Option<ProtectedPage>; MAX_PROTECTED_PAGES],
    /// Pages the trusted kernel gave an untrusted context (by protecting
    /// them for it): the only pages that context may protect itself
    /// (`docs/policy.md`, "Protected pages: ownership and quota").
    pub grants: [Option<ProtectedPage>; MAX_PROTECTED_PAGES],
    /// The MSR bitmap (None: no MSR can be locked).
    pub msr_bitmap: Option<MsrBitmapPage>,
    /// Counts the changes every processor must pick up before it goes on
    /// (issue 17): EPT entries changed (INVEPT on the processor that
    /// changed them, [`Protection::changed`]) and the VMCS controls the
    /// policy sets (CR pins, descriptor-table exiting, mode-based execute
    /// control). Another processor compares it at its next exit
    /// (`crate::exit::vmcs_sync`).
    pub generation: u64,
}

impl Protection {
    /// Nothing registered, nothing locked, only the trusted context.
    pub fn new(caps: PolicyCaps, msr_bitmap: Option<MsrBitmapPage>) -> Self {
        let mut contexts = [false; MAX_CONTEXTS + 1];
        contexts[0] = true;
        Self {
            caps,
            regions: [None; MAX_REGIONS],
            wx: false,
            mbec_active: false,
            execute: ExecuteRule::LockedTextOnly,
            patch: PatchSites::default(),
            cr0_pinned: 0,
            cr4_pinned: 0,
            msrs: [None; MAX_LOCKED_MSRS],
            descriptor_tables_locked: false,
            contexts,
            current: 0,
            running: {
                let mut r = [0; MAX_CONTEXTS + 1];
                r[0] = 1;
                r
            },
            untrusted_created: false,
            xapic_trap: None,
            gates: [None; MAX_GATES],
            pages: [None; MAX_PROTECTED_PAGES],
            grants: [None; MAX_PROTECTED_PAGES],
            msr_bitmap,
            generation: 0,
        }
    }

    /// A processor left context `from` for `to` ([`Protection::running`]).
    pub fn moved(&mut self, from: u16, to: u16) {
        if let Some(n) = self.running.get_mut(usize::from(from)) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = self.running.get_mut(usize::from(to)) {
            *n = n.saturating_add(1);
        }
    }

    /// Records a change other processors must pick up
    /// ([`Protection::generation`]).
    pub fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Whether a text region is locked: the execute rule and the patch
    /// sites are fixed from then on.
    pub fn text_locked(&self) -> bool {
        self.locked_regions().any(|r| r.kind == RegionKind::Text)
    }

    /// The locked regions.
    pub fn locked_regions(&self) -> impl Iterator<Item = &Region> + '_ {
        self.regions.iter().flatten().filter(|r| r.locked)
    }

    /// The protected pages.
    pub fn protected_pages(&self) -> impl Iterator<Item = &ProtectedPage> + '_ {
        self.pages.iter().flatten()
    }

    /// Whether the trusted kernel gave page `gpa` to context `ctx`.
    pub fn granted(&self, ctx: u16, gpa: Gpa) -> bool {
        self.grants
            .contains(&Some(ProtectedPage { gpa, owner: ctx }))
    }

    /// The pages context `ctx` owns towards its quota: its grants (an
    /// untrusted context) or its protected pages (the trusted one).
    pub fn owned_pages(&self, ctx: u16) -> usize {
        let list = if ctx == 0 { &self.pages } else { &self.grants };
        list.iter().flatten().filter(|p| p.owner == ctx).count()
    }

    /// Drops every grant to `ctx`.
    pub fn revoke_grants(&mut self, ctx: u16) {
        for g in &mut self.grants {
            if g.is_some_and(|g| g.owner == ctx) {
                *g = None;
            }
        }
    }

    /// Whether `range` overlaps a registered region or a protected page.
    pub fn overlaps(&self, range: &PhysRange) -> bool {
        self.regions
            .iter()
            .flatten()
            .any(|r| r.range.overlaps(range))
            || self
                .protected_pages()
                .any(|p| PhysRange::new(p.gpa.0, 4096).overlaps(range))
    }

    /// Whether any byte of `range` is protected: a locked region of any
    /// kind or a protected page. With `except_page_tables`, locked
    /// page-table regions do not count.
    pub fn protects(&self, range: &PhysRange, except_page_tables: bool) -> bool {
        self.locked_regions()
            .filter(|r| !(except_page_tables && r.kind == RegionKind::PageTable))
            .any(|r| r.range.overlaps(range))
            || self
                .protected_pages()
                .any(|p| PhysRange::new(p.gpa.0, 4096).overlaps(range))
    }

    /// The locked region of kind `kind` containing `gpa`.
    pub fn locked_region_at(&self, gpa: Gpa, kind: RegionKind) -> Option<&Region> {
        self.locked_regions()
            .find(|r| r.kind == kind && r.range.contains(gpa.0))
    }

    /// The registered region of `kind` (locked or not) holding
    /// guest-physical address `gpa`.
    pub fn region_at(&self, gpa: Gpa, kind: RegionKind) -> Option<&Region> {
        self.regions
            .iter()
            .flatten()
            .find(|r| r.kind == kind && r.range.contains(gpa.0))
    }

    /// Whether `ctx` is a live context (0 always is).
    pub fn is_live(&self, ctx: u64) -> bool {
        usize::try_from(ctx)
            .ok()
            .and_then(|i| self.contexts.get(i))
            .copied()
            .unwrap_or(false)
    }

    /// The value MSR `msr` is locked at.
    pub fn locked_msr(&self, msr: u32) -> Option<u64> {
        self.msrs
            .iter()
            .flatten()
            .find(|(m, _)| *m == msr)
            .map(|&(_, v)| v)
    }

    /// The number of protect calls a full recomputation of one view makes
    /// (see `policy::apply`).
    pub fn protects_per_view(&self, ram_ranges: usize) -> u64 {
        let regions = self.locked_regions().count();
        let pages = self.protected_pages().count();
        let trap = usize::from(self.xapic_trap.is_some());
        (1 + ram_ranges + regions + pages + trap) as u64
    }
}

impl Policy for Protection {
    /// Denies a write that clears a pinned bit (invariant 4).
    fn cr_write(&mut self, cr: u8, old: u64, new: u64) -> Decision {
        let pinned = match cr {
            0 => self.cr0_pinned,
            4 => self.cr4_pinned,
            _ => 0,
        };
        // All of them (a planted-defect build may say otherwise:
        // `crate::fuzz::planted_policy`).
        let pinned = <crate::seam::PolicyDefects as PolicyHooks>::enforced_pins(pinned);
        if pinned & old & !new != 0 {
            Decision::Deny
        } else {
            Decision::Allow
        }
    }

    fn context(&self) -> u16 {
        self.current
    }

    fn locked_msr(&self, msr: u32) -> Option<u64> {
        Protection::locked_msr(self, msr)
    }

    fn descriptor_tables_locked(&self) -> bool {
        self.descriptor_tables_locked
    }

    fn mbec_active(&self) -> bool {
        self.mbec_active
    }

    fn protection(&mut self) -> Option<&mut Protection> {
        Some(self)
    }

    fn generation(&self) -> u64 {
        self.generation
    }
}
