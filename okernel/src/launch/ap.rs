//! Application processors under the monitor (issue 17).
//!
//! The model: every processor runs the guest in VMX non-root operation
//! with a VMCS of its own, and none runs guest code outside it.
//!
//! 1. The loader starts every application processor (AP) before the
//!    guest exists and parks it in VMX root operation
//!    ([`super::park`]): from then on INIT is blocked on it and no
//!    INIT-SIPI-SIPI of the guest's can start it outside the monitor.
//! 2. [`crate::launch()`] on the bootstrap processor (BSP) prepares, from
//!    the frame pool, a VMCS region and a guarded host stack per AP
//!    ([`ApKits`]), builds its own VMCS and the run's shared state, then
//!    publishes what the APs need (`Join`) and waits (bounded) until
//!    each AP has joined, before its own VMLAUNCH.
//! 3. Each parked AP, waiting in [`join_this_processor`], builds its VMCS
//!    ([`super::bringup::bring_up_ap`]): the BSP's controls, the shared MSR
//!    and I/O bitmaps, the base EPT view, its own host state and host
//!    stack, and the guest in the **wait-for-SIPI** activity state; then
//!    VMLAUNCH. It runs no guest instruction until the guest's own
//!    INIT-SIPI-SIPI: the SIPI exits (SDM Vol. 3C §26.2, reason 4) and the
//!    monitor starts the processor in real mode at the SIPI's vector, as
//!    the hardware would (`crate::exit::sipi`), in the trusted context,
//!    with the policy's VMCS controls (`crate::exit::vmcs_sync`). A stock
//!    kernel's SMP start-up code runs unchanged.
//!
//! Shared and per-processor state: the policy, views, contexts, audit log
//! and counters are one run state behind one lock (`super::run`); every
//! exit of every processor takes it, so exits and hypercalls are
//! serialized, and none holds it across a VM entry. Each processor keeps
//! its VMCS, its registers, its current context and its console timer.
//! An AP that cannot join stays parked in VMX root (INIT blocked): it
//! runs nothing, and the run goes on without it.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use spin::Once;

use super::bringup::{self, ApParams};
use super::config::LaunchError;
use super::host;
use super::run::{self, CpuFrame, Pending, PerCpu, SharedRun};
use crate::arch;
use crate::hw::VmxRegion;
use crate::hw::real::RealCpu;
use crate::vcpu::timer::ConsoleTimer;
use crate::vmx::regs::GuestRegisters;

/// The most application processors that join (a 64-processor machine).
pub const MAX_APS: usize = 63;

/// Each application processor's host stack (its exits run the same
/// handlers as the BSP's, below a `CpuFrame` instead of the run state).
pub const AP_STACK_BYTES: u64 = 64 * 1024;

/// The frame pool each application processor needs: its VMCS region, its
/// host stack, the stack's guard frames and a page table for each
/// (`crate::hw::guard`).
pub const AP_POOL_BYTES: u64 = (1 + 2 * crate::hw::guard::HOST_GUARD_PAGES) * 4096 + AP_STACK_BYTES;

/// One application processor's frames: its VMCS region (revision
/// identifier written) and where its `CpuFrame` goes, at the top of its
/// guarded host stack.
#[derive(Debug, Clone, Copy)]
pub struct ApKit {
    pub(super) vmcs: VmxRegion,
    pub(super) frame_addr: u64,
}

/// The kits `launch::platform` prepared, one per application processor
/// the loader reported parked, by its slot.
#[derive(Debug)]
pub struct ApKits {
    pub(super) kits: [Option<ApKit>; MAX_APS],
}

impl Default for ApKits {
    fn default() -> Self {
        Self {
            kits: [None; MAX_APS],
        }
    }
}

impl ApKits {
    /// How many processors have frames.
    pub(super) fn count(&self) -> usize {
        self.kits.iter().flatten().count()
    }
}

/// What the BSP publishes for the application processors.
pub(super) struct Join {
    /// The run's shared state.
    pub(super) run: NonNull<SharedRun>,
    /// The frames, by slot.
    pub(super) kits: ApKits,
    /// What their VMCS share with the BSP's.
    pub(super) params: ApParams,
    /// The console timer as the BSP found it (unarmed).
    pub(super) timer: ConsoleTimer,
    /// How many have joined (about to VMLAUNCH), and [`CLOSED`] once the
    /// BSP stopped waiting: no processor joins after that (the BSP may
    /// then run alone, with no lock, no poll and no shootdown).
    pub(super) joined: AtomicUsize,
}

/// The bit of [`Join::joined`] the BSP sets when it stops waiting.
const CLOSED: usize = 1 << (usize::BITS - 1);

// SAFETY: the run pointer is used only through the run's lock (`run`),
// the kits only by the processor whose slot they are, the rest is read.
unsafe impl Sync for Join {}
// SAFETY: as above.
unsafe impl Send for Join {}

static JOIN: Once<Join> = Once::new();

/// Publishes `join` for the parked application processors, then waits
/// until each of them has joined or `patience` TSC ticks have passed.
/// Returns how many joined.
pub(super) fn publish_and_wait(join: Join, patience: u64) -> usize {
    let expected = join.kits.count();
    let join = JOIN.call_once(|| join);
    let start = arch::cpu::tsc();
    loop {
        let joined = join.joined.load(Ordering::Acquire);
        if joined >= expected || arch::cpu::tsc().wrapping_sub(start) > patience {
            return close(&join.joined);
        }
        core::hint::spin_loop();
    }
}

/// Closes the join, atomically with its count: one that comes later
/// finds it closed and stays parked (`JoinFailure::Late`). Returns how
/// many got in.
fn close(joined: &AtomicUsize) -> usize {
    joined.fetch_or(CLOSED, Ordering::AcqRel) & !CLOSED
}

/// Counts this processor in, unless the BSP has stopped waiting.
fn count_in(joined: &AtomicUsize) -> bool {
    joined
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n & CLOSED == 0).then_some(n + 1)
        })
        .is_ok()
}

/// Why an application processor could not join. It stays parked in VMX
/// root (INIT blocked): outside the guest, running nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinFailure {
    /// The BSP prepared no frames for this slot.
    #[error("no VMCS and stack were prepared for slot {0}")]
    NoKit(usize),
    /// Its VMCS could not be brought up.
    #[error("VMCS bring-up failed: {0}")]
    BringUp(LaunchError),
    /// It was ready after the BSP stopped waiting for it.
    #[error("ready after the bootstrap processor stopped waiting (the run goes on without it)")]
    Late,
}

impl JoinFailure {
    /// A one-byte code for the loader's slot state (beside
    /// `super::park::ParkFailure::code`'s).
    pub fn code(&self) -> u8 {
        match self {
            JoinFailure::NoKit(_) => 4,
            JoinFailure::BringUp(_) => 5,
            JoinFailure::Late => 6,
        }
    }
}

/// Waits until the BSP publishes the run, then joins it: brings this
/// processor's VMCS up for its `slot` and enters the guest in the
/// wait-for-SIPI state. Never returns when it joins; returns why not
/// otherwise.
///
/// `tr` is the host TR this processor's VM exits load (selector, TSS
/// base): the loader gives each application processor a GDT and TSS of
/// its own, whose IST gives its #DF a stack of its own. A VM exit loads
/// TR's selector and base from the VMCS without reading the descriptor
/// (SDM Vol. 3C §28.5.2), so the base must be this processor's TSS.
///
/// # Safety
/// Called once per application processor, after
/// [`super::park::park_this_processor`] succeeded on it, at CPL0 on the
/// loader's identity map with interrupts disabled and this processor's
/// GDT and IDT loaded; `tr.1` is the address of a TSS that stays mapped.
pub unsafe fn join_this_processor(slot: usize, tr: (u16, u64)) -> JoinFailure {
    let join = loop {
        if let Some(j) = JOIN.get() {
            break j;
        }
        core::hint::spin_loop();
    };
    let Some(kit) = join.kits.kits.get(slot).copied().flatten() else {
        return JoinFailure::NoKit(slot);
    };
    // SAFETY: the caller's contract (CPL0, VMX root operation on this
    // processor); the handle is used as `VmxRoot` documents, by
    // `bring_up_ap` on this processor only.
    let mut cpu = unsafe { RealCpu::new() };
    // SAFETY: the caller's contract: this processor's GDT is loaded and
    // mapped.
    let mut tables = unsafe { host::read_host_tables() };
    tables.selectors.tr = tr.0;
    tables.tr_base = tr.1;
    tables.rip = crate::arch::run::vm_exit_entry(true);
    if let Err(e) = bringup::bring_up_ap(&mut cpu, &join.params, kit.vmcs, kit.frame_addr, &tables)
    {
        return JoinFailure::BringUp(e);
    }
    // The shootdown's poll, armed before the first VM entry (`presence`).
    let mut timer = join.timer;
    // SAFETY: `bring_up_ap` left this slot's VMCS current on this
    // processor, in VMX root; the handle writes only the timer's controls.
    let mut vmcs = unsafe { crate::hw::real::RealVmcs::current() };
    if let Err(e) = crate::exit::console_tick::write_controls(&mut vmcs, &mut timer, true) {
        return JoinFailure::BringUp(LaunchError::Vmx {
            op: super::config::VmxStep::Controls,
            err: e,
        });
    }
    let frame = core::ptr::with_exposed_provenance_mut::<CpuFrame>(kit.frame_addr as usize);
    // SAFETY: the frame's place is the top of this slot's host stack
    // (fresh, identity-mapped, exclusive pool memory, 64-byte aligned by
    // `platform`); nothing else uses it.
    unsafe {
        frame.write(CpuFrame {
            regs: GuestRegisters::default(),
            run: join.run,
            pending: Pending::Nothing,
            own: PerCpu::new(timer, crate::vcpu::startup::Startup::Never),
            cpu: slot + 1,
        });
    }
    if !count_in(&join.joined) {
        return JoinFailure::Late;
    }
    // SAFETY: the stack below the frame is this slot's, 16-byte aligned,
    // used by nothing else; `run::monitor_main` never returns; the frame
    // stays valid for the rest of the run.
    unsafe { arch::descriptors::call_on_stack(frame.cast(), run::monitor_main, kit.frame_addr) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_processor_counts_in_once_the_join_is_closed() {
        let joined = AtomicUsize::new(0);
        assert!(count_in(&joined));
        assert!(count_in(&joined));
        assert_eq!(close(&joined), 2);
        assert!(!count_in(&joined), "late: stays parked");
        assert_eq!(close(&joined), 2, "the count the BSP runs with holds");
    }
}
