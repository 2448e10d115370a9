//! `scenario=bench`: the cost of exit round trips, timed with RDTSC in the
//! guest against a plain loop measured in the same run.
//!
//! Under Bochs (`clock: sync=none`) the TSC advances with emulated
//! instructions, so the figures count instructions, root mode included;
//! on hardware or nested KVM they are cycles. Each operation runs
//! `ITERATIONS` times after a warm-up; the reported cost per operation is
//! the loop's total minus the baseline loop's total, divided by the count.

use crate::arch::instr::{self, MARKER};
use crate::arch::traps::probe;
use core::hint::black_box;
use okernel_abi::result::BENCH_PREFIX;
use okernel_console::println;

const ITERATIONS: u64 = 2_000;
const WARMUP: u64 = 50;

fn ticks() -> u64 {
    // SAFETY: RDTSC has no side effect; it does not exit (RDTSC exiting is
    // off) so it measures without disturbing.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Total ticks for `n` runs of `op`.
fn time(n: u64, op: &mut dyn FnMut()) -> u64 {
    for _ in 0..WARMUP {
        op();
    }
    let start = ticks();
    for _ in 0..n {
        op();
    }
    ticks() - start
}

fn report(name: &str, what: &str, total: u64, baseline: u64) {
    let per_op = total.saturating_sub(baseline) / ITERATIONS;
    let base_per_op = baseline / ITERATIONS;
    println!(
        "{BENCH_PREFIX}{{\"bench\":\"{name}\",\"what\":\"{what}\",\"iterations\":{ITERATIONS},\"ticks_per_op\":{per_op},\"baseline_ticks_per_op\":{base_per_op}}}"
    );
}

/// Runs the benchmarks; `monitor` is an address the EPT denies. On more
/// than one processor the others are started first and kept busy
/// (`smp::start_busy_processors`: a loop of writes), so every figure is
/// the monitor's cost with them running: its exits take the run's lock,
/// and a view change waits for each of them to leave the guest
/// (`view-change`, the shootdown).
pub fn run(monitor: u64, map: &[okernel_abi::boot::MemoryRegion]) {
    let others = crate::smp::start_busy_processors(map);
    println!("bench: {} other processor(s) running", others);
    let mut x = 0u64;
    let baseline = time(ITERATIONS, &mut || x = black_box(x + 1));
    report(
        "loop",
        "the baseline: one iteration of an empty loop",
        baseline,
        0,
    );

    let t = time(ITERATIONS, &mut || {
        black_box(instr::null_hypercall());
    });
    report(
        "null-hypercall",
        "VMCALL round trip with full dispatch",
        t,
        baseline,
    );

    let t = time(ITERATIONS, &mut || {
        black_box(core::arch::x86_64::__cpuid(
            okernel_abi::cpuid::LEAF_SIGNATURE,
        ));
    });
    report("cpuid", "CPUID exit round trip (okernel leaf)", t, baseline);

    let scratch = black_box(&raw mut x) as u64;
    let guest_only = time(ITERATIONS, &mut || {
        let _ = black_box(probe(instr::ud2, 0));
    });
    report(
        "guest-fault",
        "#UD taken and recovered in the guest (no exit)",
        guest_only,
        baseline,
    );

    let t = time(ITERATIONS, &mut || {
        let _ = black_box(probe(instr::write_marker, monitor));
    });
    report(
        "ept-violation",
        "denied write: EPT exit, audit, #GP injection, guest recovery, minus guest-fault",
        t,
        guest_only,
    );
    let _ = black_box(probe(instr::write_marker, scratch));
    debug_assert_eq!(x, MARKER);

    view_changes(baseline);

    // 62 bursts of 16: under the 1,024 distinct records the console
    // prints in full (then it thins out).
    let (n, t) = distinct_denials(62);
    let per_op = t / n - baseline / ITERATIONS;
    println!(
        "{BENCH_PREFIX}{{\"bench\":\"denial-printed\",\"what\":\"denied port write whose audit line the console prints (each a new port), in bursts of 16 with a line of guest output between\",\"iterations\":{n},\"ticks_per_op\":{per_op},\"baseline_ticks_per_op\":{}}}",
        baseline / ITERATIONS
    );
}

/// How many protected-page allocations and frees `view-change` times:
/// each waits for the other processors (up to a tick of their
/// VMX-preemption timer, 2^20 TSC cycles), so far fewer than
/// [`ITERATIONS`].
const VIEW_CHANGES: u64 = 40;

/// A page of the guest's own that `view-change` makes a protected page
/// and frees again (guest RAM in no region).
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut VIEW_PAGE: Page = Page([0; 4096]);

/// `view-change`: an untrusted context, then [`VIEW_CHANGES`] times
/// `AllocProtectedPage` and `FreeProtectedPage` of one page: each changes
/// the views (the page leaves every view but the context's, then comes
/// back), so each INVEPTs and, with several processors, waits until
/// every other one has left the guest. The figure is per hypercall.
fn view_changes(baseline: u64) {
    use okernel_abi::hypercall::{Call, Status};
    let ctx = instr::hypercall(Call::CreateContext, [0; 4]);
    if ctx.status != Ok(Status::Success) {
        println!("bench: view-change: CreateContext failed: {:?}", ctx.status);
        return;
    }
    let page = (&raw const VIEW_PAGE) as u64;
    let start = ticks();
    for _ in 0..VIEW_CHANGES {
        let a = instr::hypercall(Call::AllocProtectedPage, [ctx.value0, page, 0, 0]);
        let f = instr::hypercall(Call::FreeProtectedPage, [ctx.value0, page, 0, 0]);
        if a.status != Ok(Status::Success) || f.status != Ok(Status::Success) {
            println!(
                "bench: view-change: AllocProtectedPage {:?}, FreeProtectedPage {:?}",
                a.status, f.status
            );
            return;
        }
    }
    let n = 2 * VIEW_CHANGES;
    let per_op = (ticks() - start) / n - baseline / ITERATIONS;
    println!(
        "{BENCH_PREFIX}{{\"bench\":\"view-change\",\"what\":\"AllocProtectedPage or FreeProtectedPage: a view change, INVEPT, the wait for the other processors\",\"iterations\":{n},\"ticks_per_op\":{per_op},\"baseline_ticks_per_op\":{}}}",
        baseline / ITERATIONS
    );
}

/// Ports no Bochs device decodes and okernel denies (default deny):
/// each write is a distinct audit record (its port in the
/// qualification), so each has its own console line.
const DENIED_PORTS: u16 = 0x2000;

/// `bursts` bursts of 16 distinct denied port writes, a line printed
/// between bursts (not timed): the writes and their ticks. Under okernel
/// each write's line is queued, and printed before the guest's next
/// byte; the figure is what the exit costs the guest, the line included
/// when the exit prints it.
fn distinct_denials(bursts: u64) -> (u64, u64) {
    const BURST: u64 = 16;
    let mut total = 0;
    for burst in 0..bursts {
        let first = DENIED_PORTS + (burst * BURST) as u16;
        let start = ticks();
        for port in first..first + BURST as u16 {
            // SAFETY: no device decodes these ports (Bochs' devices sit
            // below 0x1000 and their PCI BARs at 0xC000 and above), and
            // okernel drops the write: nothing changes but the audit log.
            unsafe { x86_64::instructions::port::Port::<u8>::new(port).write(0) };
        }
        total += ticks() - start;
        println!("bench: burst {burst} of distinct denials done");
    }
    (bursts * BURST, total)
}
