//! Validated self-patching (ABI 1.2, issue 16; `docs/policy.md`,
//! "Validated self-patching"): the rules that let a kernel rewrite its own
//! locked text at the patch sites it listed before the lock, and nowhere
//! else.
//!
//! Linux rewrites kernel text at run time through `text_poke`: static
//! keys (jump labels) flip between a NOP and a jump to a fixed target when
//! a feature is turned on (socket time-stamping, cgroup and BPF features,
//! tracepoints, `sched_schedstats`), and static calls (ABI 1.5) move
//! their trampolines' jumps and their inline call sites' calls to a new
//! function (`/sys/kernel/debug/sched/preempt`, tracepoint probes). The
//! monitor cannot let the kernel
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

use crate::memmap::Gpa;

/// The most patch-site tables the monitor keeps.
pub const MAX_PATCH_TABLES: usize = 4;

/// The most table entries (over all tables) the monitor keeps a size for.
/// Debian's 6.1 kernel has about 18,600 jump-label entries, about 4,000
/// static-call sites and 685 static-call trampolines.
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
    /// A 2-byte site (a jump label's `66 90` / `eb rel8`).
    Short = 1,
    /// A 5-byte site (a jump label's `0f 1f 44 00 00` / `e9 rel32`,
    /// every static-call site and trampoline).
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

/// The kind of a patch site, which decides its legal forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A jump label (`__jump_table`): its NOP or its jump to `target`
    /// (a guest-linear address fixed by the table).
    JumpLabel {
        /// Where its jump goes.
        target: u64,
    },
    /// An inline static call (`__static_call_sites`, not a tail call):
    /// `call rel32` into locked text, the 5-byte NOP, or the 5-byte
    /// `xor eax, eax` a call of `__static_call_return0` becomes.
    StaticCall,
    /// A static tail call or a static-call trampoline: `jmp rel32` into
    /// locked text (with return thunks a "return" is a jump to the thunk)
    /// or `ret` padded with `int3`.
    StaticTail,
}

/// One patch site: where it is and what it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// The guest-linear address of its first byte (what the kernel's
    /// relative jump is relative to).
    pub va: u64,
    /// The guest-physical address of its first byte.
    pub gpa: Gpa,
    /// Its kind.
    pub form: Form,
    /// Its size.
    pub size: SiteSize,
}

/// `cs cs cs xor eax, eax` and `data16 data16 xor rax, rax`: the 5-byte
/// "return 0" Linux writes at a static-call site whose function is
/// `__static_call_return0` (the first since 5.19, the second before).
pub const XOR5: [[u8; 5]; 2] = [
    [0x2e, 0x2e, 0x2e, 0x31, 0xc0],
    [0x66, 0x66, 0x48, 0x31, 0xc0],
];
/// `ret; int3; int3; int3; int3`: a static tail call or trampoline of a
/// NULL function, without return thunks.
pub const RET5: [u8; 5] = [0xc3, INT3, INT3, INT3, INT3];
/// `call rel32`.
const CALL: u8 = 0xe8;
/// `jmp rel32`.
const JMP: u8 = 0xe9;
/// The signature after every static-call trampoline's 5-byte site
/// (`ud1 %esp, %ecx`).
pub const TRAMPOLINE_SIGNATURE: [u8; 3] = [0x0f, 0xb9, 0xcc];

impl Site {
    /// The site's NOP, padded to 5 bytes.
    fn nop(&self) -> [u8; 5] {
        match self.size {
            SiteSize::Short => [NOP2[0], NOP2[1], 0, 0, 0],
            _ => NOP5,
        }
    }

    /// A jump label's jump to its target, padded to 5 bytes; `None` for
    /// a short site whose target a short jump cannot reach, and for
    /// static calls.
    fn jump(&self) -> Option<[u8; 5]> {
        let Form::JumpLabel { target } = self.form else {
            return None;
        };
        match self.size {
            SiteSize::Short => {
                let rel = target.wrapping_sub(self.va.wrapping_add(2)) as i64;
                let rel = i8::try_from(rel).ok()?;
                Some([0xeb, rel as u8, 0, 0, 0])
            }
            _ => {
                let rel = target.wrapping_sub(self.va.wrapping_add(5)) as i64;
                let rel = i32::try_from(rel).ok()?.to_le_bytes();
                Some([JMP, rel[0], rel[1], rel[2], rel[3]])
            }
        }
    }

    /// Whether the 5 bytes `b`, a `call`/`jmp rel32` at this site
    /// (`opcode`), go into locked text: `text(gpa)` says whether a
    /// guest-physical address lies in locked text, and the target's is
    /// the site's by the image's linear mapping ([`PatchTable::image_gpa`]).
    fn branch_into_text(&self, b: &[u8], opcode: u8, text: &dyn Fn(Gpa) -> bool) -> bool {
        if b[0] != opcode {
            return false;
        }
        let rel = i32::from_le_bytes([b[1], b[2], b[3], b[4]]);
        let offset = 5i64.wrapping_add(i64::from(rel)) as u64;
        text(Gpa(self.gpa.0.wrapping_add(offset)))
    }

    /// Whether `bytes` (the site's bytes, at least its length) are a
    /// whole legal form of this site (not a transitional one). For a jump
    /// label: its NOP or its jump. For a static call: a call into locked
    /// text, the NOP or a [`XOR5`]; for a tail call or trampoline: a jump
    /// into locked text or [`RET5`]. `text(gpa)` says whether a
    /// guest-physical address lies in locked text.
    pub fn whole(&self, bytes: &[u8], text: &dyn Fn(Gpa) -> bool) -> bool {
        let n = self.size.bytes() as usize;
        if n == 0 || bytes.len() < n {
            return false;
        }
        let b = &bytes[..n];
        match self.form {
            Form::JumpLabel { .. } => {
                b == &self.nop()[..n] || self.jump().is_some_and(|j| b == &j[..n])
            }
            Form::StaticCall => {
                b == NOP5 || XOR5.iter().any(|x| b == x) || self.branch_into_text(b, CALL, text)
            }
            Form::StaticTail => b == RET5 || self.branch_into_text(b, JMP, text),
        }
    }

    /// Whether `bytes` are a legal form of this site: a whole one
    /// ([`Site::whole`]) or the breakpoint protocol's transitional form.
    /// For a jump label that is `cc`, then at each other position that
    /// position's byte of the NOP or of the jump (the kernel may write the
    /// tail a byte at a time, and both forms are known). For a static call
    /// it is `cc` and any four bytes: the new form's `rel32` is not known
    /// until the first byte is written, and every mix of an old and a new
    /// `rel32` occurs while the kernel writes the tail a byte at a time
    /// (`rep movsb`), so the site is judged whole when its first byte
    /// leaves `cc`.
    pub fn legal(&self, bytes: &[u8], text: &dyn Fn(Gpa) -> bool) -> bool {
        let n = self.size.bytes() as usize;
        if n == 0 || bytes.len() < n {
            return false;
        }
        if self.whole(bytes, text) {
            return true;
        }
        let b = &bytes[..n];
        if b[0] != INT3 {
            return false;
        }
        match self.form {
            Form::JumpLabel { .. } => {
                let nop = self.nop();
                let jump = self.jump();
                (1..n).all(|i| b[i] == nop[i] || jump.is_some_and(|j| b[i] == j[i]))
            }
            Form::StaticCall | Form::StaticTail => true,
        }
    }

    /// The size of the site at `va` (guest-physical `gpa`) of kind `form`
    /// whose bytes are `bytes` (5 of them) when the table is registered:
    /// the size of the whole legal form they hold (a jump label's NOP or
    /// jump of either size; static calls are 5 bytes); `None` when they
    /// hold none (the kernel's text does not hold what its table says).
    pub fn size_of(
        va: u64,
        gpa: Gpa,
        form: Form,
        bytes: &[u8; 5],
        text: &dyn Fn(Gpa) -> bool,
    ) -> Option<SiteSize> {
        [SiteSize::Long, SiteSize::Short].into_iter().find(|&size| {
            let s = Site {
                va,
                gpa,
                form,
                size,
            };
            (size == SiteSize::Long || matches!(form, Form::JumpLabel { .. }))
                && s.whole(bytes, text)
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
    pub gpa: Gpa,
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
    pub const fn image_gpa(&self, va: u64) -> Gpa {
        Gpa(va.wrapping_sub(self.va).wrapping_add(self.gpa.0))
    }

    /// The guest-linear address of entry `i`.
    pub fn entry_va(&self, i: u32) -> u64 {
        self.va
            .wrapping_add(u64::from(i) * self.format.entry_size())
    }

    /// Decodes entry `i` (its bytes `raw`, [`PatchFormat::entry_size`] of
    /// them): the site's linear address and kind. A jump-label entry is
    /// `{ s32 code; s32 target; s64 key; }`, a static-call site
    /// `{ s32 addr; s32 key; }` with the tail-call flag in bit 0 of the
    /// key's address (each field relative to its own address); a
    /// trampoline entry is the trampoline itself. `None` for a format
    /// this module does not know (it names no site).
    pub fn decode(&self, i: u32, raw: &[u8]) -> Option<(u64, Form)> {
        let at = self.entry_va(i);
        let field = |o: usize| {
            let b = raw.get(o..o + 4).unwrap_or(&[0; 4]);
            i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])) as u64
        };
        Some(match self.format {
            PatchFormat::LinuxJumpEntry => (
                at.wrapping_add(field(0)),
                Form::JumpLabel {
                    target: at.wrapping_add(4).wrapping_add(field(4)),
                },
            ),
            PatchFormat::LinuxStaticCallSite => {
                let key = at.wrapping_add(4).wrapping_add(field(4));
                let form = if key & 1 != 0 {
                    Form::StaticTail
                } else {
                    Form::StaticCall
                };
                (at.wrapping_add(field(0)), form)
            }
            PatchFormat::LinuxStaticCallTrampoline => (at, Form::StaticTail),
            _ => return None,
        })
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
    /// The pages opened (page-aligned), `count` of them.
    pub pages: [Gpa; MAX_STEP_PAGES],
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
    pub fn pages(&self) -> &[Gpa] {
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
    /// The sites of the page last looked up.
    index: PageSites,
}

/// The most sites the monitor indexes for one page (the page a patch
/// step opens); a page with more is walked in full each time.
pub const PAGE_SITES: usize = 32;

/// The guarded sites on one page, found by one walk of the tables.
/// Linux writes a site in three steps or more (`cc`, the tail — a byte at
/// a time with `rep movsb` —, the head) and a static-call update moves
/// hundreds of sites one after the other; each step asks twice which
/// sites a page holds (to open it, to judge it), and a walk reads every
/// entry of every table (some 23,000 for Debian's kernel). Tables and
/// sizes never change once registered, so an index never goes stale;
/// registering a table clears it all the same.
#[derive(Debug, Clone, Copy)]
struct PageSites {
    /// The page (`None`: nothing indexed).
    page: Option<Gpa>,
    /// How many of `sites` hold its sites.
    count: usize,
    /// Its sites, when there are at most [`PAGE_SITES`].
    sites: [Site; PAGE_SITES],
    /// It has more than [`PAGE_SITES`] sites: walk the tables.
    overflow: bool,
}

impl Default for PageSites {
    fn default() -> Self {
        const NONE: Site = Site {
            va: 0,
            gpa: Gpa(0),
            form: Form::StaticCall,
            size: SiteSize::Unguarded,
        };
        Self {
            page: None,
            count: 0,
            sites: [NONE; PAGE_SITES],
            overflow: false,
        }
    }
}

impl Default for PatchSites {
    fn default() -> Self {
        Self {
            tables: [None; MAX_PATCH_TABLES],
            entries: 0,
            sizes: [0; MAX_PATCH_ENTRIES / 32],
            step: Step {
                pages: [Gpa(0); MAX_STEP_PAGES],
                count: 0,
                before: [[0; 4096]; MAX_STEP_PAGES],
                writer: Writer::default(),
            },
            validated: 0,
            index: PageSites::default(),
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
        // Forget the indexed page (its other fields are read only while
        // it matches): registering writes every entry's size.
        self.index.page = None;
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
        read: &mut dyn FnMut(Gpa, &mut [u8]) -> bool,
        f: &mut dyn FnMut(Site) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let mut chunk = [0u8; 1024];
        for t in self.tables.iter().flatten() {
            let size = t.format.entry_size() as usize;
            let per_chunk = (chunk.len() / size) as u32;
            let mut i = 0;
            while i < t.entries {
                let n = (t.entries - i).min(per_chunk);
                let buf = &mut chunk[..size * n as usize];
                if !read(t.gpa + u64::from(i) * size as u64, buf) {
                    break;
                }
                for (k, raw) in buf.chunks_exact(size).enumerate() {
                    let e = i + k as u32;
                    let site_size = self.size(t.first + e);
                    if site_size == SiteSize::Unguarded {
                        continue;
                    }
                    let Some((va, form)) = t.decode(e, raw) else {
                        continue;
                    };
                    f(Site {
                        va,
                        gpa: t.image_gpa(va),
                        form,
                        size: site_size,
                    })?;
                }
                i += n;
            }
        }
        ControlFlow::Continue(())
    }

    /// Whether a guarded site has a byte on page `page`; indexes the
    /// page's sites for [`judge_page`].
    pub fn page_has_site(
        &mut self,
        page: Gpa,
        read: &mut dyn FnMut(Gpa, &mut [u8]) -> bool,
    ) -> bool {
        if self.index.page != Some(page) {
            let mut index = PageSites {
                page: Some(page),
                ..PageSites::default()
            };
            let _ = self.for_each_site(read, &mut |s| {
                if touches_page(&s, page) {
                    match index.sites.get_mut(index.count) {
                        Some(slot) => {
                            *slot = s;
                            index.count += 1;
                        }
                        None => {
                            index.overflow = true;
                            return ControlFlow::Break(());
                        }
                    }
                }
                ControlFlow::Continue(())
            });
            self.index = index;
        }
        self.index.count != 0 || self.index.overflow
    }

    /// Whether guest-physical `gpa` lies inside a guarded site, after its
    /// first byte: where a write may put bytes of the writer's choosing
    /// (a static call's `cc` and any tail, a `rel32`), so no static call
    /// may branch there (`docs/policy.md`). From the index when it holds
    /// the page, else by a walk.
    pub fn inside_a_site(&self, gpa: Gpa, read: &mut dyn FnMut(Gpa, &mut [u8]) -> bool) -> bool {
        self.for_each_site_on(gpa.page_base(), read, &mut |s| {
            if gpa > s.gpa && gpa.0 < s.gpa.0.saturating_add(s.size.bytes()) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .is_break()
    }

    /// Calls `f` with every guarded site that has a byte on page `page`:
    /// from the index when it holds the page, else by a walk.
    fn for_each_site_on(
        &self,
        page: Gpa,
        read: &mut dyn FnMut(Gpa, &mut [u8]) -> bool,
        f: &mut dyn FnMut(Site) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if self.index.page == Some(page) && !self.index.overflow {
            for s in &self.index.sites[..self.index.count] {
                f(*s)?;
            }
            return ControlFlow::Continue(());
        }
        self.for_each_site(read, &mut |s| {
            if touches_page(&s, page) {
                f(s)
            } else {
                ControlFlow::Continue(())
            }
        })
    }
}

/// Whether site `s` has a byte on page `page`.
fn touches_page(s: &Site, page: Gpa) -> bool {
    s.gpa.0 < page.0.saturating_add(4096) && s.gpa.0.saturating_add(s.size.bytes()) > page.0
}

/// Why a write to a page of locked text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The byte at this guest-physical address changed and lies in no
    /// guarded site.
    OutsideSites(Gpa),
    /// The site at this guest-physical address was left in a form that
    /// is not one of its legal forms.
    IllegalForm(Gpa),
}

impl Refusal {
    /// The guest-physical address the refusal names.
    pub const fn gpa(self) -> Gpa {
        match self {
            Refusal::OutsideSites(a) | Refusal::IllegalForm(a) => a,
        }
    }
}

/// Judges what one instruction did to page `page`: `before` is what it
/// held, `now(gpa, buf)` reads guest memory as it is now (any page: a
/// site may straddle), `table` reads the registered tables and `text(gpa)`
/// says whether a guest-physical address lies in locked text (where a
/// static call may go). `Ok(n)`: the write is legal and touched `n` sites
/// (0: nothing changed).
pub fn judge_page(
    sites: &PatchSites,
    page: Gpa,
    before: &[u8; 4096],
    now: &mut dyn FnMut(Gpa, &mut [u8]) -> bool,
    table: &mut dyn FnMut(Gpa, &mut [u8]) -> bool,
    text: &dyn Fn(Gpa) -> bool,
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
    let _ = sites.for_each_site_on(page, table, &mut |s| {
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
        if !now(s.gpa, &mut bytes[..n]) || !s.legal(&bytes[..n], text) {
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
