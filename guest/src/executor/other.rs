//! `aps=run` (`cargo xtask fuzz vm --cpus N`): another processor runs the
//! guest while the executor runs its cases, so that every case meets a
//! monitor with a processor in the guest and exiting — each policy change
//! waits for it (the shootdown), each of its exits contends for the run's
//! lock with the executor's. It is started before anything is locked
//! (once a context exists no SIPI starts anything), into 64-bit mode on
//! the loader's page tables (`crate::smp::start_one_in_long_mode`), and
//! runs [`other_processor`], in the kernel's text, for ever: a count, a
//! CPUID (an exit under VMX) and, under okernel, a `Version` hypercall.
//! The oracle: right after each case's check its count must move on
//! within a few poll ticks ([`moves_on`]; a processor the monitor stopped,
//! or one stuck in an exit, is that case's violation; a deadlock shows as
//! the case's timeout).

use crate::arch::instr::hypercall;
use crate::kernel::Pages;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use okernel_abi::boot::MemoryRegion;
use okernel_abi::hypercall::Call;

/// Its stack.
static STACK: Pages<[u8; 16 * 1024]> = Pages::new([0; 16 * 1024]);
/// Its count.
static HEART: AtomicU64 = AtomicU64::new(0);
/// Whether a monitor answers its hypercalls (VMCALL is #UD bare).
static MONITOR: AtomicBool = AtomicBool::new(false);

extern "C" fn other_processor() -> ! {
    let monitor = MONITOR.load(Ordering::SeqCst);
    loop {
        HEART.fetch_add(1, Ordering::Relaxed);
        let _ = core::arch::x86_64::__cpuid(0);
        if monitor {
            let _ = hypercall(Call::Version, [0; 4]);
        }
    }
}

/// Starts it; `monitor`: whether okernel runs the guest.
pub fn start(map: &[MemoryRegion], monitor: bool) -> Result<(), &'static str> {
    MONITOR.store(monitor, Ordering::SeqCst);
    let top = STACK.addr() + core::mem::size_of::<[u8; 16 * 1024]>() as u64;
    crate::smp::start_one_in_long_mode(map, top, other_processor)
}

/// Its count now.
pub fn heartbeat() -> u64 {
    HEART.load(Ordering::SeqCst)
}

/// How long [`moves_on`] waits, in TSC ticks: four of the monitor's poll
/// ticks (`okernel::vcpu::timer::POLL_TSC`, 2^17), in which a running
/// processor makes many rounds.
const PATIENCE: u64 = 4 << 17;

/// Whether its count moves on within [`PATIENCE`] from now: asked right
/// after a case's check, so that a processor the case stopped is that
/// case's finding (not the next one's, after the exchange with the host
/// gave it time to run on).
pub fn moves_on() -> bool {
    let ticks = || {
        // SAFETY: RDTSC has no side effect and does not exit.
        unsafe { core::arch::x86_64::_rdtsc() }
    };
    let before = heartbeat();
    let start = ticks();
    while ticks().wrapping_sub(start) < PATIENCE {
        if heartbeat() != before {
            return true;
        }
        core::hint::spin_loop();
    }
    heartbeat() != before
}
