//! The demo container-host kernel: its memory (page-table pool, tasks'
//! pages, kernel stacks), its boot (paging, SMEP/SMAP/UMIP, the SYSCALL
//! MSRs) and the way the trusted kernel runs a request of a ring-3 task.
//!
//! The host-testable halves are in the library: the page-table builder
//! (`guest::paging`, `guest::layout`) and the task table (`guest::tasks`).

pub mod protect;
pub mod syscall;

use crate::arch::traps::Fault;
use crate::arch::{cpu, user};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use guest::attack::Mode;
use guest::layout::{self, Spaces, TaskFrames, USER_CODE, USER_STACK_TOP};
use guest::paging::Pool;
use guest::tasks::{TASKS, data_pattern, secret_pattern, sys};
use okernel_abi::hypercall::{Call, Status};
use spin::Once;

/// The number of tasks.
pub const NTASKS: usize = TASKS.len();
/// Pages in the page-table pool.
const POOL_PAGES: usize = 24;
const KSTACK_SIZE: usize = 16 * 1024;

/// Page-aligned memory the kernel shares with the processor (and the
/// attacks) through raw addresses.
#[repr(C, align(4096))]
pub struct Pages<T>(UnsafeCell<T>);

// SAFETY: one CPU; every access goes through raw pointers with volatile
// reads and writes, as memory the processor and the monitor also see.
unsafe impl<T> Sync for Pages<T> {}

impl<T> Pages<T> {
    /// Wraps a value.
    pub const fn new(v: T) -> Self {
        Self(UnsafeCell::new(v))
    }

    /// The (identity-mapped, so also physical) address.
    pub fn addr(&self) -> u64 {
        self.0.get() as u64
    }

    /// A raw pointer to the contents.
    pub fn get(&self) -> *mut T {
        self.0.get()
    }
}

type Page = [u8; 4096];

#[unsafe(link_section = ".bss.okernel.pagetables")]
static PT_POOL: Pages<[[u64; 512]; POOL_PAGES]> = Pages::new([[0; 512]; POOL_PAGES]);
#[unsafe(link_section = ".bss.okernel.secrets")]
static SECRETS: Pages<[Page; NTASKS]> = Pages::new([[0; 4096]; NTASKS]);
/// Each task's user data and stack pages.
static USER_PAGES: Pages<[[Page; 2]; NTASKS]> = Pages::new([[[0; 4096]; 2]; NTASKS]);
static KSTACKS: Pages<[[u8; KSTACK_SIZE]; NTASKS]> = Pages::new([[0; KSTACK_SIZE]; NTASKS]);
/// A data page the attacks put code in.
pub static DATA_PAGE: Pages<Page> = Pages::new([0; 4096]);
/// A copy of the IDT for the LIDT attack.
pub static FAKE_IDT: Pages<Page> = Pages::new([0; 4096]);
/// The page table an attack writes in ordinary memory.
pub static ATTACKER_TABLE: Pages<[u64; 512]> = Pages::new([0; 512]);
/// Ordinary pages nothing else uses, which an attack may try to protect.
pub static SPARE_PAGES: Pages<[Page; SPARE]> = Pages::new([[0; 4096]; SPARE]);
/// How many [`SPARE_PAGES`]: more than the monitor's protected-page table.
pub const SPARE: usize = 72;

/// What the kernel built at boot.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The address spaces.
    pub spaces: Spaces<NTASKS>,
    /// Each task's frames.
    pub frames: [TaskFrames; NTASKS],
}

static LAYOUT: Once<Layout> = Once::new();
static MODE: AtomicUsize = AtomicUsize::new(0);
/// The task whose request runs.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
/// Each task's context id (0: the trusted context).
static CONTEXTS: [AtomicU64; NTASKS] = [const { AtomicU64::new(0) }; NTASKS];
/// The registered gate id.
static GATE: AtomicU64 = AtomicU64::new(0);

/// The layout built by [`init`].
pub fn layout() -> &'static Layout {
    LAYOUT.get().expect("kernel::init ran")
}

/// The protection mode.
pub fn mode() -> Mode {
    [Mode::Protected, Mode::Unprotected, Mode::NoMonitor][MODE.load(Ordering::SeqCst)]
}

/// The task whose request runs.
pub fn current() -> usize {
    CURRENT.load(Ordering::SeqCst)
}

/// Task `task`'s context id.
pub fn context(task: usize) -> u64 {
    CONTEXTS[task].load(Ordering::SeqCst)
}

/// Records task `task`'s context id.
pub fn set_context(task: usize, id: u64) {
    CONTEXTS[task].store(id, Ordering::SeqCst);
}

/// The registered gate id.
pub fn gate() -> u64 {
    GATE.load(Ordering::SeqCst)
}

/// Records the registered gate id.
pub fn set_gate(id: u64) {
    GATE.store(id, Ordering::SeqCst);
}

/// Enables SMEP, SMAP and UMIP where CPUID has them; returns CR4's bits.
fn enable_cpu_protections() -> u64 {
    let l7 = core::arch::x86_64::__cpuid_count(7, 0);
    let mut bits = 0;
    if l7.ebx & (1 << 7) != 0 {
        bits |= cpu::CR4_SMEP;
    }
    if l7.ebx & (1 << 20) != 0 {
        bits |= cpu::CR4_SMAP;
    }
    if l7.ecx & (1 << 2) != 0 {
        bits |= cpu::CR4_UMIP;
    }
    // SAFETY: CPUID reports the bits; the kernel never touches user pages
    // through user mappings (SMAP), never runs them in ring 0 (SMEP), and
    // runs SIDT/SGDT only in ring 0 (UMIP).
    unsafe { cpu::cr4_set(bits) };
    bits
}

/// Builds the kernel: page tables (loaded), tasks, credentials, SYSCALL
/// MSRs. `ram_top` is the end of guest RAM.
pub fn init(
    mode: Mode,
    ram_top: u64,
    sel: crate::arch::tables::Selectors,
) -> Result<u64, &'static str> {
    MODE.store(mode as usize, Ordering::SeqCst);
    let cr4_bits = enable_cpu_protections();
    let frame = |task: usize, i: usize| {
        // SAFETY: address arithmetic inside the static.
        unsafe { (&raw const (*USER_PAGES.get())[task][i]) as u64 }
    };
    let frames: [TaskFrames; NTASKS] = core::array::from_fn(|t| TaskFrames {
        code: user::guest_user_stub as *const () as u64,
        data: frame(t, 0),
        stack: frame(t, 1),
        // SAFETY: address arithmetic inside the static.
        secret: unsafe { (&raw const (*SECRETS.get())[t]) as u64 },
    });
    // SAFETY: the pool is touched by nothing else until the tables are
    // loaded; from then on only through raw entry addresses.
    let tables = unsafe { &mut *PT_POOL.get() };
    let mut pool = Pool::new(tables, PT_POOL.addr());
    let spaces = layout::build(&mut pool, ram_top, &frames).map_err(|_| "page tables")?;
    log::info!(
        "kernel: page tables: {} of {POOL_PAGES} pool pages, kernel root {:#x}",
        pool.used(),
        spaces.kernel_root
    );
    for (t, f) in frames.iter().enumerate() {
        // SAFETY: the task's own pages, identity-mapped kernel memory.
        unsafe {
            (f.data as *mut u64).write_volatile(data_pattern(t));
            (f.secret as *mut u64).write_volatile(secret_pattern(t));
        }
    }
    // SAFETY: the new tables identity-map all RAM like the loader's.
    unsafe { cpu::load_cr3(spaces.kernel_root) };
    user::set_kernel_cr3(spaces.kernel_root);
    syscall::init(sel);
    LAYOUT.call_once(|| Layout { spaces, frames });
    // SAFETY: copies of the IDT and code into the kernel's own data pages.
    unsafe {
        let idt = crate::arch::tables::addrs().idt as *const Page;
        FAKE_IDT.get().write_volatile(idt.read_volatile());
        let code = cpu::DATA_CODE;
        core::ptr::copy_nonoverlapping(code.as_ptr(), DATA_PAGE.get().cast::<u8>(), code.len());
    }
    Ok(cr4_bits)
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// The result the task passed to `DONE` (or the gate's magic).
    pub result: u64,
    /// The status of a switch to the task's context that failed.
    pub switch_in: Option<Status>,
    /// The status of a switch back that returned after its `VMCALL`.
    pub fell_through: Option<u64>,
}

/// Runs one request of task `task` in ring 3: RAX, RDI, RSI, RDX.
pub fn run(task: usize, regs: [u64; 4]) -> Done {
    CURRENT.store(task, Ordering::SeqCst);
    let ctx = context(task);
    let mut switch_in = None;
    if ctx != 0 {
        let r = crate::arch::instr::hypercall(Call::SwitchContext, [ctx, 0, 0, 0]);
        if r.status != Ok(Status::Success) {
            switch_in = Some(r.status.unwrap_or(Status::InvalidArgument));
        }
    }
    let l = layout();
    // SAFETY: the task's PML4 shares the kernel's slot 0; its user stub,
    // data and stack pages are mapped; the kernel stack is the task's own
    // and free (one request at a time); syscall::init set the MSRs.
    let result = unsafe {
        let kstack = (&raw const (*KSTACKS.get())[task]) as u64 + KSTACK_SIZE as u64;
        user::enter_user(
            USER_CODE,
            USER_STACK_TOP,
            l.spaces.task_roots[task],
            kstack,
            regs,
        )
    };
    let f = user::gate_fallthrough();
    Done {
        result,
        switch_in,
        fell_through: (f != user::NO_FALLTHROUGH).then_some(f),
    }
}

/// Runs the vulnerability-emulation call from task `task`'s kernel path:
/// `op` of [`guest::tasks::vuln`] on `addr` with `value`. `None` when the
/// request never came back through the call (the gate took it).
pub fn vuln(task: usize, op: u64, addr: u64, value: u64) -> (Option<Result<u64, Fault>>, Done) {
    syscall::clear_vuln_result();
    let done = run(task, [sys::VULN, op, addr, value]);
    (syscall::take_vuln_result(), done)
}
