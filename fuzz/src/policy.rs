//! The `policy` target's virtual CPU and oracles: okernel's real
//! [`Protection`] policy over the fake VMCS and CPU, the shared frame pool
//! and a sparse guest memory holding identity-mapping guest page tables,
//! driven by a sequence of operations an attacker in the outer kernel can
//! perform (policy hypercalls 16–31, context switches, CR writes, WRMSRs,
//! LIDT/LGDT, guest accesses checked against the current view). After
//! every operation [`Shadow::check`] asserts the invariants of DESIGN.md
//! §2 the policy promises (docs/policy.md); every assertion message starts
//! with `oracle:` and names the invariant.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ptr::NonNull;

use arbitrary::Arbitrary;
use ept::{Gpa, Hpa, Perms};
use okernel::exit::handle_exit;
use okernel::hw::fake::{FakeCpu, FakeVmcs};
use okernel::hw::msr_bitmap_page::MsrBitmapPage;
use okernel::hw::phys::PhysMemory;
use okernel::launch::ept_view::build_base_view;
use okernel::launch::setup;
use okernel::launch::{GuestMode, PhysRange};
use okernel::mem::ViewMemory;
use okernel::msrs;
use okernel::policy::Protection;
use okernel::policy::protection::PolicyCaps;
use okernel::policy::views::Views;
use okernel::vcpu::{CrConfig, ExitAction, Vcpu};
use okernel::vmx::exit_reason::ExitReason;
use okernel::vmx::fields::{Control32, ControlNatural, GuestNatural, ReadOnly32, ReadOnlyNatural};
use okernel::vmx::regs::Gpr;
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::policy::RegionKind;

use crate::pool::Pool;
use crate::vcpu::{MAP, MONITOR, POOL, RIP, SYSCALL_MSRS, entry};

/// Sparse guest-physical memory: 4 KiB pages created on first touch.
#[derive(Debug, Default)]
pub struct SparsePhys(RefCell<HashMap<u64, Box<[u8; 4096]>>>);

impl PhysMemory for SparsePhys {
    fn copy(&self, hpa: Hpa, buf: &mut [u8]) {
        let hpa = hpa.0;
        let m = self.0.borrow();
        for (i, b) in buf.iter_mut().enumerate() {
            let a = hpa.wrapping_add(i as u64);
            *b = m.get(&(a & !0xfff)).map_or(0, |p| p[(a & 0xfff) as usize]);
        }
    }

    fn write(&self, hpa: Hpa, bytes: &[u8]) {
        let hpa = hpa.0;
        let mut m = self.0.borrow_mut();
        for (i, b) in bytes.iter().enumerate() {
            let a = hpa.wrapping_add(i as u64);
            m.entry(a & !0xfff).or_insert_with(|| Box::new([0; 4096]))[(a & 0xfff) as usize] = *b;
        }
    }
}

/// The guest memory of the policy target.
pub type Memory = ViewMemory<Pool, SparsePhys>;
/// The virtual CPU of the policy target.
pub type PolicyVcpu = Vcpu<FakeVmcs, FakeCpu, Protection, Memory>;

/// The guest's PML4 (then PDPT, PD, and a PT for 6..8 MiB).
pub const PML4: u64 = 0x10_0000;
/// Kernel text.
pub const TEXT: u64 = 0x20_0000;
/// Read-only data.
pub const RODATA: u64 = 0x21_0000;
/// The credential table.
pub const CRED: u64 = 0x30_0000;
/// Ordinary RAM.
pub const DATA: u64 = 0x50_0000;
/// A page to protect.
pub const SECRET: u64 = 0x51_0000;

/// The region bases arguments are drawn from: page tables, text, rodata,
/// credentials, data, a secret page, the 4 KiB-mapped window, monitor
/// memory, the pool, low RAM, reserved memory, MMIO, high RAM.
pub const BASES: [u64; 13] = [
    PML4,
    TEXT,
    RODATA,
    CRED,
    DATA,
    SECRET,
    0x60_0000,
    0x40_0000,
    0x100_0000,
    0x1000,
    0x9_f000,
    0xfee0_0000,
    0x1_0000_0000,
];

thread_local! {
    /// One frame pool for every input: views return their frames when
    /// they drop, so the pool stops growing after the first inputs.
    static FRAMES: Pool = Pool::new();
    /// One MSR-bitmap page for every input (zeroed per input).
    static BITMAP: NonNull<[u8; 4096]> = NonNull::from(Box::leak(Box::new([0u8; 4096])));
    /// The guest page tables, written once.
    static TABLES: Vec<(u64, Box<[u8; 4096]>)> = tables();
    /// The base view over [`MAP`], built once: each input starts from a
    /// copy (copying its few tables is several times cheaper than building
    /// them again, and the policy target's exec rate is what its
    /// planted-defect proofs live on).
    static BASE: ept::View<Pool> = base_view();
}

/// The fake CPU's EPT capabilities and the base view over [`MAP`] with
/// them.
fn base_view() -> ept::View<Pool> {
    let pool = FRAMES.with(Pool::clone);
    pool.set_budget(None);
    build_base_view(pool, fake_ept_caps(), &MAP, &MONITOR, POOL).expect("the base view builds")
}

/// The EPT capabilities of [`FakeCpu::vmx_capable`].
fn fake_ept_caps() -> ept::EptCaps {
    let mut cpu = FakeCpu::vmx_capable();
    let hw = okernel::check::probe(&mut cpu).expect("the fake CPU is VMX-capable");
    ept::EptCaps::from_msrs(
        hw.ept.0,
        cpu.read_msr_for_tests(msrs::IA32_VMX_PROCBASED_CTLS2),
        39,
    )
    .expect("the fake CPU's EPT capabilities decode")
}

fn tables() -> Vec<(u64, Box<[u8; 4096]>)> {
    let phys = SparsePhys::default();
    let w = |at: u64, v: u64| phys.write(Hpa(at), &v.to_le_bytes());
    const P: u64 = 1;
    const RW: u64 = 2;
    const PS: u64 = 0x80;
    let (pdpt, pd, pt) = (PML4 + 0x1000, PML4 + 0x2000, PML4 + 0x3000);
    w(PML4, pdpt | P | RW);
    w(pdpt, pd | P | RW);
    for i in 0..64 {
        w(pd + 8 * i, (i << 21) | P | RW | PS);
    }
    w(pd + 8 * 3, pt | P | RW);
    for i in 0..512 {
        w(pt + 8 * i, (0x60_0000 + (i << 12)) | P | RW);
    }
    phys.0.into_inner().into_iter().collect()
}

/// A 64-bit guest with the protection policy (`caps`), the base view
/// over [`MAP`] and the guest's page tables in place.
pub fn build(caps: PolicyCaps) -> PolicyVcpu {
    let mut cpu = FakeCpu::vmx_capable();
    for m in SYSCALL_MSRS {
        cpu.set_msr(m, 0);
    }
    let hw = okernel::check::probe(&mut cpu).expect("the fake CPU is VMX-capable");
    let cr = CrConfig::new(hw.cr0_fixed, hw.cr4_fixed);
    let ept = fake_ept_caps();
    let mode = GuestMode::Long64 { cr3: PML4 };
    let mut vmcs = FakeVmcs::new();
    setup::write_controls(
        &mut vmcs,
        &hw,
        mode,
        0x5000,
        setup::io_bitmaps(),
        0x601e,
        &cr,
    )
    .expect("controls fit the fake VMCS");
    setup::write_guest_state(&mut vmcs, &entry(mode), &cr, true, 0x0007_0406_0007_0406)
        .expect("guest state fits the fake VMCS");
    FRAMES.with(|p| p.set_budget(None));
    let view = BASE.with(|b| b.try_clone()).expect("the base view copies");
    let phys = SparsePhys::default();
    TABLES.with(|t| {
        let mut m = phys.0.borrow_mut();
        for (a, p) in t {
            m.insert(*a, p.clone());
        }
    });
    let memory = Memory::new(view, &MAP, &MONITOR, POOL, phys).expect("MAP is small");
    let page = BITMAP.with(|p| *p);
    // SAFETY: the leaked page lives forever; only one policy VCPU (the
    // current input's) holds a handle to it at a time; zeroed here.
    let bitmap = unsafe {
        page.as_ptr().write([0; 4096]);
        MsrBitmapPage::new(page)
    };
    let policy = Protection::new(caps, Some(bitmap));
    Vcpu::with_memory(vmcs, cpu, policy, cr, ept, memory)
}

/// An argument of a policy hypercall: mostly plausible values.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Arg {
    /// A region base of [`BASES`] plus a few pages.
    Base(u8, u8),
    /// A length of a few pages.
    Pages(u8),
    /// A small number (ids, kinds, CR numbers, context ids).
    Small(u8),
    /// A bit mask of one bit.
    Bit(u8),
    /// An MSR number the policy knows.
    Msr(u8),
    /// One CR bit okernel allows pinning (CR0's and CR4's, by index).
    Pinnable(u8),
    /// A guest-linear address in text (an identity map).
    Text(u8),
    /// Any value.
    Raw(u64),
}

/// The bit numbers of CR0 and CR4 okernel pins (`CR0_PINNABLE`,
/// `CR4_PINNABLE`).
pub const PINNABLE: [u8; 10] = [0, 16, 31, 5, 7, 11, 16, 18, 20, 21];

/// The `n`-th set bit of `bits` (round robin), or 0 when none is set.
fn nth_bit(bits: u64, n: u8) -> u64 {
    let count = bits.count_ones();
    if count == 0 {
        return 0;
    }
    let mut rest = bits;
    for _ in 0..u32::from(n) % count {
        rest &= rest - 1;
    }
    rest & rest.wrapping_neg()
}

/// The MSRs arguments and WRMSRs are drawn from.
pub const MSRS: [u32; 10] = [
    0xc000_0080,
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0x174,
    0x175,
    0x176,
    0x277,
    0xc000_0102,
];

impl Arg {
    /// The register value.
    pub fn get(self) -> u64 {
        match self {
            Arg::Base(i, p) => BASES[usize::from(i) % BASES.len()] + u64::from(p % 8) * 0x1000,
            Arg::Pages(n) => u64::from(n % 8) * 0x1000,
            Arg::Small(n) => u64::from(n % 16),
            Arg::Bit(b) => 1 << (b % 64),
            Arg::Msr(i) => MSRS[usize::from(i) % MSRS.len()].into(),
            Arg::Pinnable(i) => 1 << PINNABLE[usize::from(i) % PINNABLE.len()],
            Arg::Text(o) => TEXT + u64::from(o) * 0x40,
            Arg::Raw(v) => v,
        }
    }
}

/// One thing the outer kernel does.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Op {
    /// Policy hypercall `16 + n % 16` (ABI 1.2: 16–31) with three
    /// arguments.
    Call(u8, Arg, Arg, Arg),
    /// Register a region of kind `k` at a base of [`BASES`] and lock it.
    RegisterLock(u8, u8, u8),
    /// SwitchContext(ctx, gate).
    Switch(u8, u8),
    /// PinCr of CR0 (false) or CR4 (true) with one of its pinnable bits
    /// (the `n`-th, round robin).
    Pin(bool, u8),
    /// CreateContext.
    Create,
    /// MOV to CR0 (false) or CR4 (true): toggle one bit of the visible
    /// value, or write any value.
    Cr(bool, Arg),
    /// MOV to CR0 (false) or CR4 (true) of the visible value with one of
    /// its set, pinned bits cleared (the `n`-th, round robin): the write a
    /// pin exists to refuse, so that finding a pin that does not hold
    /// needs no lucky pairing of a `Pin` and a `Cr` of the same bit.
    ClearPinned(bool, u8),
    /// WRMSR of an MSR of [`MSRS`].
    Wrmsr(u8, Arg),
    /// LIDT/LGDT/LLDT/LTR (identity 2 or 3 of either exit).
    DescriptorLoad(bool, bool),
    /// A guest read, write or fetch at an address: checked against the
    /// current view's rights.
    Access(u8, Arg),
}

/// What the oracles remember between operations.
#[derive(Debug, Default)]
pub struct Shadow {
    locked: Vec<(usize, PhysRange, RegionKind)>,
    cr0_pinned: u64,
    cr4_pinned: u64,
    msrs: Vec<(u32, u64)>,
    dt_locked: bool,
}

/// `#GP(0)` as VM-entry interruption information.
const GP: u64 = 0x8000_0b0d;

fn visible_cr(v: &PolicyVcpu, cr4: bool) -> u64 {
    let (real, shadow, mask) = if cr4 {
        (
            GuestNatural::Cr4,
            ControlNatural::Cr4ReadShadow,
            v.cr.cr4_mask,
        )
    } else {
        (
            GuestNatural::Cr0,
            ControlNatural::Cr0ReadShadow,
            v.cr.cr0_mask,
        )
    };
    (v.vmcs.get(real) & !mask) | (v.vmcs.get(shadow) & mask)
}

fn exit(v: &mut PolicyVcpu, reason: ExitReason, qual: u64, len: u32) -> Option<ExitAction> {
    v.vmcs
        .set(GuestNatural::Rip, RIP)
        .set(ReadOnly32::ExitReason, reason as u32 as u64)
        .set(ReadOnlyNatural::ExitQualification, qual)
        .set(ReadOnly32::ExitInstructionLength, len.into())
        .set(ReadOnly32::IdtVectoringInfo, 0)
        .set(Control32::EntryInterruptionInfo, 0);
    handle_exit(v).ok()
}

/// Makes hypercall `call`; returns its status (asserting it is defined)
/// or None when the exit did not resume the guest.
pub fn hypercall(v: &mut PolicyVcpu, call: u64, args: [u64; 3]) -> Option<Status> {
    v.regs.set(Gpr::Rax, call);
    v.regs.set(Gpr::Rdi, args[0]);
    v.regs.set(Gpr::Rsi, args[1]);
    v.regs.set(Gpr::Rdx, args[2]);
    let a = exit(v, ExitReason::Vmcall, 0, 3)?;
    if a != ExitAction::Resume {
        return None;
    }
    let raw = v.regs.rax();
    Some(Status::from_raw(raw).unwrap_or_else(|_| {
        panic!("oracle: hypercall {call} {args:x?} returned undefined status {raw:#x}")
    }))
}

impl Shadow {
    /// Runs `op` on `v`, then checks every oracle.
    pub fn step(&mut self, v: &mut PolicyVcpu, op: Op) {
        let audit_before = v.audit.total();
        let from = v.policy.current;
        // Whether the operation was a refused guest instruction (one
        // audit record), or may audit at most once (hypercalls).
        let mut denied = None;
        match op {
            Op::Call(n, a, b, c) => {
                let call = 16 + u64::from(n % 16);
                let s = hypercall(v, call, [a.get(), b.get(), c.get()]);
                if call == Call::SwitchContext.raw() {
                    self.check_switch(v, from, s);
                }
            }
            Op::RegisterLock(k, base, pages) => {
                let kind = 1 + u64::from(k % 7);
                let base = Arg::Base(base, 0).get();
                let len = u64::from(pages % 4 + 1) * 0x1000;
                if hypercall(v, Call::RegisterRegion.raw(), [base, len, kind])
                    == Some(Status::Success)
                {
                    let id = v.regs.rdi();
                    let _ = hypercall(v, Call::LockRegion.raw(), [id, 0, 0]);
                }
            }
            Op::Switch(ctx, gate) => {
                let s = hypercall(
                    v,
                    Call::SwitchContext.raw(),
                    [u64::from(ctx % 10), u64::from(gate % 18), 0],
                );
                self.check_switch(v, from, s);
            }
            Op::Pin(cr4, i) => {
                // A bit pinnable in *this* register (the other's, and any
                // other bit, are `Op::Call`'s to try): a pin that takes,
                // so that a `ClearPinned` after it tests it.
                let pinnable = if cr4 {
                    okernel::policy::protection::CR4_PINNABLE
                } else {
                    okernel::policy::protection::CR0_PINNABLE
                };
                let bit = nth_bit(pinnable, i);
                let _ = hypercall(v, Call::PinCr.raw(), [if cr4 { 4 } else { 0 }, bit, 0]);
            }
            Op::Create => {
                let _ = hypercall(v, Call::CreateContext.raw(), [0; 3]);
            }
            Op::Cr(..) | Op::ClearPinned(..) => {
                let cr4 = matches!(op, Op::Cr(true, _) | Op::ClearPinned(true, _));
                let old = visible_cr(v, cr4);
                let new = match op {
                    Op::Cr(_, Arg::Bit(b)) => old ^ (1 << (b % 32)),
                    Op::Cr(_, value @ Arg::Pinnable(_)) => old ^ value.get(),
                    Op::Cr(_, other) => other.get(),
                    Op::ClearPinned(_, n) => {
                        let pinned = if cr4 {
                            self.cr4_pinned
                        } else {
                            self.cr0_pinned
                        };
                        old & !nth_bit(pinned & old, n)
                    }
                    _ => unreachable!("matched above"),
                };
                v.regs.set(Gpr::Rax, new);
                let a = exit(v, ExitReason::CrAccess, if cr4 { 4 } else { 0 }, 3);
                let gp = v.vmcs.get(Control32::EntryInterruptionInfo) == GP;
                let pinned = if cr4 {
                    self.cr4_pinned
                } else {
                    self.cr0_pinned
                };
                if a == Some(ExitAction::Resume) {
                    assert!(
                        gp || pinned & old & !new == 0,
                        "oracle: pin: a write of {new:#x} clearing a pinned bit of CR{} was allowed",
                        if cr4 { 4 } else { 0 }
                    );
                    // Refused architecturally (no record) or by the pin
                    // (one record); allowed: none.
                    if !gp {
                        denied = Some(false);
                    }
                }
            }
            Op::Wrmsr(i, value) => {
                let m = MSRS[usize::from(i) % MSRS.len()];
                let value = value.get();
                v.regs.set(Gpr::Rcx, m.into());
                v.regs.set(Gpr::Rax, value & 0xffff_ffff);
                v.regs.set(Gpr::Rdx, value >> 32);
                let a = exit(v, ExitReason::Wrmsr, 0, 2);
                let gp = v.vmcs.get(Control32::EntryInterruptionInfo) == GP;
                if let Some(&(_, locked)) = self.msrs.iter().find(|(x, _)| *x == m)
                    && value != locked
                    && a == Some(ExitAction::Resume)
                {
                    assert!(gp, "oracle: WRMSR {m:#x} of a locked MSR was not refused");
                    denied = Some(true);
                }
            }
            Op::DescriptorLoad(ldtr, lidt) => {
                let reason = if ldtr {
                    ExitReason::LdtrTrAccess
                } else {
                    ExitReason::GdtrIdtrAccess
                };
                let identity: u32 = if lidt { 3 } else { 2 };
                // 64-bit address size, DS, base = RBX, no index.
                let info = (2 << 7) | (3 << 15) | (1 << 22) | (3 << 23) | (identity << 28);
                v.vmcs.set(ReadOnly32::ExitInstructionInfo, info.into());
                let a = exit(v, reason, 0, 3);
                if self.dt_locked && a == Some(ExitAction::Resume) {
                    let gp = v.vmcs.get(Control32::EntryInterruptionInfo) == GP;
                    assert!(
                        gp,
                        "oracle: a descriptor-table load after the lock was not refused"
                    );
                    denied = Some(true);
                }
            }
            Op::Access(kind, at) => {
                let gpa = at.get();
                let ctx = v.policy.current;
                let p = Views::translate(&v.memory, ctx, Gpa(gpa)).map(|t| t.page.attrs.perms);
                let want = match kind % 3 {
                    0 => Perms::READ,
                    1 => Perms::WRITE,
                    _ => Perms::EXECUTE,
                };
                if p.is_some_and(|p| p.contains(want)) {
                    self.access_allowed(v, ctx, gpa, want);
                }
            }
        }
        let delta = v.audit.total() - audit_before;
        match denied {
            Some(true) => assert_eq!(delta, 1, "oracle: a denial wrote {delta} audit records"),
            Some(false) => assert_eq!(delta, 0, "oracle: an allowed operation was audited"),
            None => assert!(
                delta <= 1,
                "oracle: one operation wrote {delta} audit records"
            ),
        }
        self.check(v);
    }

    /// A guest access the current view allows: it must not reach
    /// anything the policy protects from it.
    fn access_allowed(&self, v: &PolicyVcpu, ctx: u16, gpa: u64, want: Perms) {
        let in_monitor = MONITOR
            .iter()
            .chain(std::iter::once(&POOL))
            .any(|r| (r.start & !0xfff) <= gpa && gpa < r.end);
        assert!(
            !in_monitor,
            "oracle: view: context {ctx} can access monitor memory at {gpa:#x}"
        );
        if want == Perms::WRITE {
            for r in v.policy.locked_regions() {
                let writable_kind =
                    matches!(r.kind, RegionKind::PageTable | RegionKind::Credentials) && ctx == 0;
                assert!(
                    !r.range.contains(gpa) || writable_kind,
                    "oracle: view: context {ctx} can write locked {:?} region at {gpa:#x}",
                    r.kind
                );
            }
        }
        for pg in v.policy.protected_pages() {
            assert!(
                !(pg.owner != ctx && (pg.gpa.0..pg.gpa.0 + 4096).contains(&gpa)),
                "oracle: view: context {ctx} can access context {}'s protected page {gpa:#x}",
                pg.owner
            );
        }
    }

    fn check_switch(&self, v: &PolicyVcpu, from: u16, s: Option<Status>) {
        let to = v.policy.current;
        if s == Some(Status::Success) && from != 0 && to == 0 {
            let rip = v.vmcs.get(GuestNatural::Rip);
            let gate = v.policy.gates.iter().flatten().any(|g| g.linear == rip);
            assert!(
                gate,
                "oracle: gate: a switch from context {from} to the trusted context resumed at {rip:#x}, not a gate"
            );
        }
    }

    /// The invariants that hold between any two operations.
    pub fn check(&mut self, v: &PolicyVcpu) {
        let p = &v.policy;
        // Locks never unlock.
        for &(id, range, kind) in &self.locked {
            let r = p.regions[id];
            assert!(
                r.is_some_and(|r| r.locked && r.range == range && r.kind == kind),
                "oracle: lock: locked region {id} ({kind:?} {range:x?}) is now {r:?}"
            );
        }
        for (id, r) in p.regions.iter().enumerate() {
            if let Some(r) = r
                && r.locked
                && !self.locked.iter().any(|l| l.0 == id)
            {
                self.locked.push((id, r.range, r.kind));
            }
        }
        // Pins only grow, and pinned bits stay set.
        assert_eq!(
            (
                p.cr0_pinned & self.cr0_pinned,
                p.cr4_pinned & self.cr4_pinned
            ),
            (self.cr0_pinned, self.cr4_pinned),
            "oracle: pin: a pinned CR bit was unpinned"
        );
        self.cr0_pinned = p.cr0_pinned;
        self.cr4_pinned = p.cr4_pinned;
        let (cr0, cr4) = (visible_cr(v, false), visible_cr(v, true));
        assert_eq!(
            cr0 & self.cr0_pinned,
            self.cr0_pinned,
            "oracle: pin: pinned CR0 bit clear ({cr0:#x})"
        );
        assert_eq!(
            cr4 & self.cr4_pinned,
            self.cr4_pinned,
            "oracle: pin: pinned CR4 bit clear ({cr4:#x})"
        );
        // Locked MSRs keep their lock value.
        for &(m, val) in &self.msrs {
            assert_eq!(
                p.locked_msr(m),
                Some(val),
                "oracle: msr: MSR {m:#x} lock changed"
            );
        }
        for (m, val) in p.msrs.iter().flatten() {
            if !self.msrs.iter().any(|(x, _)| x == m) {
                self.msrs.push((*m, *val));
            }
        }
        assert!(
            !self.dt_locked || p.descriptor_tables_locked,
            "oracle: lock: the descriptor-table lock was released"
        );
        self.dt_locked = p.descriptor_tables_locked;
        // Every live view's rights (invariants 1, 2, 3, 6, 7): the same
        // oracle the monitor's CALL_CHECK runs in a VM-fuzzing build.
        if let Some(bad) = okernel::fuzz::oracle::too_permissive(p, &v.memory) {
            panic!(
                "oracle: view: context {}'s view gives {:?} page {:#x} rights {:?}: invariant {}",
                bad.ctx,
                bad.what,
                bad.gpa,
                bad.perms,
                bad.what.invariant()
            );
        }
    }
}

/// Every capability on.
pub const ALL: PolicyCaps = PolicyCaps {
    mbec: true,
    descriptor_table_exiting: true,
    invept_all: true,
    cet: false,
    mtf: true,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Pin a CR4 bit, then try to clear it: refused and audited.
    #[test]
    fn pinned_bit_cannot_be_cleared() {
        let mut v = build(ALL);
        let mut s = Shadow::default();
        let pge = Arg::Pinnable(4);
        if visible_cr(&v, true) & (1 << 7) == 0 {
            s.step(&mut v, Op::Cr(true, pge));
        }
        assert_ne!(visible_cr(&v, true) & (1 << 7), 0, "PGE set");
        let st = hypercall(&mut v, 18, [4, 1 << 7, 0]);
        assert_eq!(st, Some(Status::Success));
        s.check(&v);
        s.step(&mut v, Op::Cr(true, pge));
        assert_ne!(visible_cr(&v, true) & (1 << 7), 0);
        assert_eq!(v.audit.total(), 1);
    }

    /// The operation that clears a pinned bit: refused and audited.
    #[test]
    fn clear_pinned_is_refused_while_the_pin_holds() {
        let mut v = build(ALL);
        let mut s = Shadow::default();
        let wp = 1 << 16;
        assert_ne!(visible_cr(&v, false) & wp, 0, "WP set");
        assert_eq!(hypercall(&mut v, 18, [0, wp, 0]), Some(Status::Success));
        s.check(&v);
        s.step(&mut v, Op::ClearPinned(false, 7));
        assert_ne!(visible_cr(&v, false) & wp, 0);
        assert_eq!(v.audit.total(), 1);
    }

    #[test]
    fn nth_bit_goes_round_the_set_bits() {
        assert_eq!(nth_bit(0, 3), 0);
        assert_eq!(nth_bit(0b1010_0100, 0), 0b100);
        assert_eq!(nth_bit(0b1010_0100, 1), 0b10_0000);
        assert_eq!(nth_bit(0b1010_0100, 2), 0b1000_0000);
        assert_eq!(nth_bit(0b1010_0100, 3), 0b100);
        assert_eq!(nth_bit(1 << 63, 200), 1 << 63);
    }

    /// Lock text, create a context, switch there and back through a gate.
    #[test]
    fn switch_back_resumes_at_the_gate() {
        let mut v = build(ALL);
        let mut s = Shadow::default();
        s.step(&mut v, Op::RegisterLock(0, 1, 0));
        assert!(v.policy.wx);
        // A gate is reached only through locked page tables (session 9).
        s.step(&mut v, Op::RegisterLock(3, 0, 3));
        assert_eq!(
            hypercall(&mut v, 25, [TEXT + 0x40, 0, 0]),
            Some(Status::Success)
        );
        let gate = v.regs.rdi();
        assert_eq!(hypercall(&mut v, 21, [0; 3]), Some(Status::Success));
        let ctx = v.regs.rdi();
        s.step(&mut v, Op::Switch(ctx as u8, 0));
        assert_eq!(v.policy.current, ctx as u16);
        s.step(&mut v, Op::Switch(0, gate as u8));
        assert_eq!(v.policy.current, 0);
        assert_eq!(v.vmcs.get(GuestNatural::Rip), TEXT + 0x40);
    }
}
