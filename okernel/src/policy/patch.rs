//! Validated self-patching (ABI 1.2, issue 16; `docs/policy.md`,
//! "Validated self-patching"): the rules that let a kernel rewrite its own
//! locked text at the patch sites it listed before the lock, and nowhere
//! else.
//!
//! Linux rewrites kernel text at run time through `text_poke`: static
//! keys (jump labels) flip between a NOP and a jump to a fixed target when
//! a feature is turned on (socket time-stamping, cgroup and BPF features,
//! tracepoints, `sched_schedstats`). The monitor cannot let the kernel
//! write its text freely (any kernel write primitive would then rewrite
//! code), and refusing every write breaks the host. So the kernel names
//! its sites once, in a table inside locked read-only data
//! ([`PatchTable`]); after the lock a write to locked text is let through
//! for one instruction (the monitor trap flag, `crate::exit::patch_step`)
//! and then judged here ([`judge_page`]): every byte it changed must lie
//! in a registered site, and every site it touched must hold one of that
//! site's legal forms ([`Site::legal`]); otherwise the bytes are put back
//! and the write is denied and audited like any other.
//!
//! This module is pure: it sees bytes, addresses and the sites, never
//! the VMCS or the views, so it is host-tested exhaustively.

use core::ops::ControlFlow;

use okernel_abi::policy::PatchFormat;

/// The most patch-site tables the monitor keeps.
pub const MAX_PATCH_TABLES: usize = 2;

/// The most table entries (over all tables) the monitor keeps a size for.
/// Debian's 6.1 kernel has about 18,600 jump-label entries.
pub const MAX_PATCH_ENTRIES: usize = 32768;

/// The most pages one patch step may open (a write that straddles a page
/// boundary opens two).
pub const MAX_STEP_PAGES: usize = 2;

/// The 2-byte NOP Linux writes at a short jump-label site (`x86_nops[2]`).
pub const NOP2: [u8; 2] = [0x66, 0x90];
/// The 5-byte NOP Linux writes at a long jump-label site (`x86_nops[5]`).
pub const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];
/// INT3: the first byte of a site while the kernel rewrites it (its
/// breakpoint protocol: `cc`, then the tail, then the first byte).
pub const INT3: u8 = 0xcc;

/// The size of a site, as the monitor found it when the table was
/// registered (2 bits per entry in [`PatchSites`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteSize {
    /// Not a site the monitor guards: outside registered text when the
    /// table was registered (freed init code, another image).
    Unguarded = 0,
    /// A 2-byte site (`66 90` / `eb rel8`).
    Short = 1,
    /// A 5-byte site (`0f 1f 44 00 00` / `e9 rel32`).
    Long = 2,
}

impl SiteSize {
    /// The number of bytes (0 for an unguarded entry).
    pub const fn bytes(self) -> u64 {
        match self {
            SiteSize::Unguarded => 0,
            SiteSize::Short => 2,
            SiteSize::Long => 5,
        }
    }

    const fn from_bits(b: u64) -> Self {
        match b & 3 {
            1 => SiteSize::Short,
            2 => SiteSize::Long,
            _ => SiteSize::Unguarded,
        }
    }
}

/// One patch site: where it is and where its jump goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// The guest-linear address of its first byte (what the kernel's
    /// relative jump is relative to).
    pub va: u64,
    /// The guest-physical address of its first byte.
    pub gpa: u64,
    /// The guest-linear address its jump goes to.
    pub target: u64,
    /// Its size.
    pub size: SiteSize,
}

impl Site {
    /// The site's NOP, padded to 5 bytes.
    fn nop(&self) -> [u8; 5] {
        match self.size {
            SiteSize::Short => [NOP2[0], NOP2[1], 0, 0, 0],
            _ => NOP5,
        }
    }

    /// The site's jump to its target, padded to 5 bytes; `None` for a
    /// short site whose target a short jump cannot reach.
    fn jump(&self) -> Option<[u8; 5]> {
        match self.size {
            SiteSize::Short => {
                let rel = self.target.wrapping_sub(self.va.wrapping_add(2)) as i64;
                let rel = i8::try_from(rel).ok()?;
                Some([0xeb, rel as u8, 0, 0, 0])
            }
            _ => {
                let rel = self.target.wrapping_sub(self.va.wrapping_add(5)) as i64;
                let rel = i32::try_from(rel).ok()?.to_le_bytes();
                Some([0xe9, rel[0], rel[1], rel[2], rel[3]])
            }
        }
    }

    /// Whether `bytes` (the site's bytes, at least its length) are a
    /// legal form of this site: its NOP, its jump, or the breakpoint
    /// protocol's transitional form (`cc`, then at each other position
    /// that position's byte of the NOP or of the jump).
    pub fn legal(&self, bytes: &[u8]) -> bool {
        let n = self.size.bytes() as usize;
        if n == 0 || bytes.len() < n {
            return false;
        }
        let b = &bytes[..n];
        let nop = self.nop();
        let jump = self.jump();
        if b == &nop[..n] || jump.is_some_and(|j| b == &j[..n]) {
            return true;
        }
        b[0] == INT3 && (1..n).all(|i| b[i] == nop[i] || jump.is_some_and(|j| b[i] == j[i]))
    }

    /// The size of the site at `va` jumping to `target` whose bytes are
    /// `bytes` (5 of them) when the table is registered: the size whose
    /// NOP or jump they are; `None` when they are neither (the kernel's
    /// text does not hold what its table says).
    pub fn size_of(va: u64, target: u64, bytes: &[u8; 5]) -> Option<SiteSize> {
        [SiteSize::Long, SiteSize::Short].into_iter().find(|&size| {
            let s = Site {
                va,
                gpa: 0,
                target,
                size,
            };
            let n = size.bytes() as usize;
            bytes[..n] == s.nop()[..n] || s.jump().is_some_and(|j| bytes[..n] == j[..n])
        })
    }
}

/// A registered table of patch sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchTable {
    /// Its format.
    pub format: PatchFormat,
    /// The guest-linear address of its first entry.
    pub va: u64,
    /// The guest-physical address of its first entry (the table is
    /// contiguous in both).
    pub gpa: u64,
    /// Its number of entries.
    pub entries: u32,
    /// The index of its first entry in [`PatchSites`]' size map.
    pub first: u32,
}

impl PatchTable {
    /// The guest-physical address of linear address `va` in the kernel
    /// image the table belongs to: the image is mapped linearly (x86-64
    /// Linux maps its image at `__START_KERNEL_map + phys_base`), so the
    /// table's own translation gives every site's.
    pub const fn image_gpa(&self, va: u64) -> u64 {
        va.wrapping_sub(self.va).wrapping_add(self.gpa)
    }

    /// Decodes entry `i` (its 16 bytes `raw`): the site's linear address
    /// and its jump target (`{ s32 code; s32 target; s64 key; }`, each
    /// relative to its own field's address).
    pub fn decode(&self, i: u32, raw: &[u8; 16]) -> (u64, u64) {
        let at = self.va.wrapping_add(u64::from(i) * 16);
        let field = |o: usize| i32::from_le_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
        let code = at.wrapping_add(field(0) as i64 as u64);
        let target = at.wrapping_add(4).wrapping_add(field(4) as i64 as u64);
        (code, target)
    }
}

/// How the monitor gets control back after the one instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepMethod {
    /// The monitor trap flag (SDM Vol. 3C §26.5.2): nothing the guest can
    /// see changes.
    #[default]
    MonitorTrap,
    /// Where the processor has no monitor trap flag (Bochs 2.7's
    /// Skylake-X): the guest's RFLAGS.TF with #DB and every other
    /// exception intercepted, maskable interrupts held off (IF cleared)
    /// and NMIs blocked for the instruction, all restored afterwards.
    TrapFlag,
}

/// The guest state a [`StepMethod::TrapFlag`] step changes, as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Saved {
    /// RFLAGS (its TF and IF are put back).
    pub rflags: u64,
    /// The exception bitmap.
    pub exceptions: u32,
    /// The page-fault error-code mask and match.
    pub pfec: (u32, u32),
    /// The interruptibility state (its NMI blocking is put back).
    pub interruptibility: u32,
    /// IA32_DEBUGCTL (its BTF is put back: with BTF set TF traps on the
    /// next branch, not after the instruction, SDM Vol. 3A §18.4.3).
    pub debugctl: u64,
}

/// The writing instruction of a step, for the audit record and the #GP
/// of a refused write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Writer {
    /// How control comes back.
    pub method: StepMethod,
    /// What the trap-flag method changed.
    pub saved: Saved,
    /// The context whose view opened the pages.
    pub ctx: u16,
    /// Its RIP.
    pub rip: u64,
    /// RSP when the step began.
    pub rsp: u64,
    /// The linear address of its first faulting write.
    pub gva: Option<u64>,
    /// The EPT-violation qualification of that write.
    pub qualification: u64,
}

/// A write to locked text let through for one instruction: the pages it
/// opened and what they held before. No step is open while `count` is 0
/// (the buffers live in the policy state, never on the monitor's stack).
#[derive(Debug, Clone)]
pub struct Step {
    /// The pages opened (guest-physical, page-aligned), `count` of them.
    pub pages: [u64; MAX_STEP_PAGES],
    /// How many of `pages` are open.
    pub count: usize,
    /// Each open page's bytes before the write.
    pub before: [[u8; 4096]; MAX_STEP_PAGES],
    /// The instruction that opened them.
    pub writer: Writer,
}

impl Step {
    /// Whether a step is open.
    pub const fn open(&self) -> bool {
        self.count != 0
    }

    /// The open pages.
    pub fn pages(&self) -> &[u64] {
        &self.pages[..self.count]
    }
}

/// The patch-site state of the policy.
#[derive(Debug, Clone)]
pub struct PatchSites {
    /// Registered tables.
    pub tables: [Option<PatchTable>; MAX_PATCH_TABLES],
    /// Entries used in the size map.
    pub entries: u32,
    /// 2 bits per entry: its [`SiteSize`].
    sizes: [u64; MAX_PATCH_ENTRIES / 32],
    /// The write let through now (if [`Step::open`]).
    pub step: Step,
    /// Writes judged legal so far.
    pub validated: u64,
}

impl Default for PatchSites {
    fn default() -> Self {
        Self {
            tables: [None; MAX_PATCH_TABLES],
            entries: 0,
            sizes: [0; MAX_PATCH_ENTRIES / 32],
            step: Step {
                pages: [0; MAX_STEP_PAGES],
                count: 0,
                before: [[0; 4096]; MAX_STEP_PAGES],
                writer: Writer::default(),
            },
            validated: 0,
        }
    }
}

impl PatchSites {
    /// The size recorded for entry `index` (over all tables).
    pub fn size(&self, index: u32) -> SiteSize {
        let i = index as usize;
        match self.sizes.get(i / 32) {
            Some(w) => SiteSize::from_bits(w >> (2 * (i % 32))),
            None => SiteSize::Unguarded,
        }
    }

    /// Records the size of entry `index`. Indices at or above
    /// [`Self::entries`] are scratch until a table claims them.
    pub fn set_size(&mut self, index: u32, size: SiteSize) {
        let i = index as usize;
        if let Some(w) = self.sizes.get_mut(i / 32) {
            let shift = 2 * (i % 32);
            *w = (*w & !(3 << shift)) | ((size as u64) << shift);
        }
    }

    /// Whether any table is registered.
    pub fn any(&self) -> bool {
        self.tables.iter().any(Option::is_some)
    }

    /// Calls `f` with every guarded site, reading each table's entries
    /// with `read(gpa, buf)` (`false`: unreadable, the table is skipped).
    /// `f` may stop the walk.
    pub fn for_each_site(
        &self,
        read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
        f: &mut dyn FnMut(Site) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let mut chunk = [0u8; 16 * 64];
        for t in self.tables.iter().flatten() {
            let mut i = 0;
            while i < t.entries {
                let n = (t.entries - i).min(64);
                let buf = &mut chunk[..16 * n as usize];
                if !read(t.gpa + u64::from(i) * 16, buf) {
                    break;
                }
                for (k, raw) in buf.chunks_exact(16).enumerate() {
                    let e = i + k as u32;
                    let size = self.size(t.first + e);
                    if size == SiteSize::Unguarded {
                        continue;
                    }
                    let raw: &[u8; 16] = raw.try_into().unwrap_or(&[0; 16]);
                    let (va, target) = t.decode(e, raw);
                    f(Site {
                        va,
                        gpa: t.image_gpa(va),
                        target,
                        size,
                    })?;
                }
                i += n;
            }
        }
        ControlFlow::Continue(())
    }

    /// Whether a guarded site has a byte on page `page`.
    pub fn page_has_site(&self, page: u64, read: &mut dyn FnMut(u64, &mut [u8]) -> bool) -> bool {
        self.for_each_site(read, &mut |s| {
            if touches_page(&s, page) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .is_break()
    }
}

/// Whether site `s` has a byte on page `page`.
fn touches_page(s: &Site, page: u64) -> bool {
    s.gpa < page.saturating_add(4096) && s.gpa.saturating_add(s.size.bytes()) > page
}

/// Why a write to a page of locked text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The byte at this guest-physical address changed and lies in no
    /// guarded site.
    OutsideSites(u64),
    /// The site at this guest-physical address was left in a form that
    /// is not one of its legal forms.
    IllegalForm(u64),
}

impl Refusal {
    /// The guest-physical address the refusal names.
    pub const fn gpa(self) -> u64 {
        match self {
            Refusal::OutsideSites(a) | Refusal::IllegalForm(a) => a,
        }
    }
}

/// Judges what one instruction did to page `page`: `before` is what it
/// held, `now(gpa, buf)` reads guest memory as it is now (any page: a
/// site may straddle). `Ok(n)`: the write is legal and touched `n` sites
/// (0: nothing changed).
pub fn judge_page(
    sites: &PatchSites,
    page: u64,
    before: &[u8; 4096],
    now: &mut dyn FnMut(u64, &mut [u8]) -> bool,
    table: &mut dyn FnMut(u64, &mut [u8]) -> bool,
) -> Result<u32, Refusal> {
    let mut after = [0u8; 4096];
    if !now(page, &mut after) {
        // The page cannot be read back: nothing can be shown legal.
        return Err(Refusal::OutsideSites(page));
    }
    // `diff`: the bytes that changed; `uncovered`: those no site
    // explains yet. Every site is tested against `diff`, so two sites
    // that share a byte are both judged.
    let mut diff = [0u64; 64];
    for (i, (a, b)) in after.iter().zip(before.iter()).enumerate() {
        if a != b {
            diff[i / 64] |= 1 << (i % 64);
        }
    }
    if diff.iter().all(|w| *w == 0) {
        return Ok(0);
    }
    let mut uncovered = diff;
    let mut touched = 0u32;
    let mut illegal = None;
    let _ = sites.for_each_site(table, &mut |s| {
        if !touches_page(&s, page) {
            return ControlFlow::Continue(());
        }
        let mut changed = false;
        for k in 0..s.size.bytes() {
            let a = s.gpa + k;
            if a >= page && a < page + 4096 {
                let o = (a - page) as usize;
                if diff[o / 64] & (1 << (o % 64)) != 0 {
                    changed = true;
                    uncovered[o / 64] &= !(1 << (o % 64));
                }
            }
        }
        if !changed {
            return ControlFlow::Continue(());
        }
        touched += 1;
        let mut bytes = [0u8; 5];
        let n = s.size.bytes() as usize;
        if !now(s.gpa, &mut bytes[..n]) || !s.legal(&bytes[..n]) {
            illegal = Some(s.gpa);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    if let Some(gpa) = illegal {
        return Err(Refusal::IllegalForm(gpa));
    }
    if let Some((w, bits)) = uncovered.iter().enumerate().find(|(_, b)| **b != 0) {
        let o = w * 64 + bits.trailing_zeros() as usize;
        return Err(Refusal::OutsideSites(page + o as u64));
    }
    Ok(touched)
}
