//! EPT benchmark: `cargo bench -p ept --bench ept`.
//!
//! Every figure is compared with a naive build of the same range that uses
//! only 4 KiB pages (the same library with 2M/1G pages switched off in the
//! capabilities), measured in the same run. Times are medians over several
//! samples. The naive 1 TiB builds are not measured by default (2 GiB of
//! tables): their table counts are computed exactly and their times
//! extrapolated linearly from the measured 64 GiB build; set
//! `EPT_BENCH_FULL=1` to measure them too.

#[path = "../tests/common/pool.rs"]
#[allow(dead_code)]
mod pool;

use ept::{Attributes, EptCaps, EptFeatures, Gpa, Perms, View};
use pool::Pool;
use std::hint::black_box;
use std::time::{Duration, Instant};

const K4: u64 = 4096;
const M64: u64 = 64 << 20;
const G: u64 = 1 << 30;
/// Samples per measurement (the median is reported).
const SAMPLES: usize = 7;
/// Each sample runs the operation until at least this much time has passed.
const SAMPLE_TIME: Duration = Duration::from_millis(20);

fn large() -> EptCaps {
    EptCaps::new(EptFeatures::all(), 46).expect("valid caps")
}

fn naive() -> EptCaps {
    large().without(EptFeatures::PAGES_2M | EptFeatures::PAGES_1G)
}

/// Median over `samples` of the mean time of `run` (which times its own
/// measured part and returns it), repeated to fill `SAMPLE_TIME`.
fn median(samples: usize, mut run: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let (mut total, mut n) = (Duration::ZERO, 0u32);
            while n == 0 || total < SAMPLE_TIME {
                total += run();
                n += 1;
            }
            total / n
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// A view of `len` bytes identity mapped, with a no-access 4 KiB page every
/// 64 MiB if `holes`, its tables from `pool`.
fn build(pool: &Pool, caps: EptCaps, len: u64, holes: bool) -> View<Pool> {
    let mut view = View::new(pool.clone(), caps).expect("root frame");
    view.identity_map(Gpa(0), len, Attributes::RAM)
        .expect("map");
    if holes {
        for gpa in (0..len).step_by(M64 as usize) {
            view.protect(Gpa(gpa + M64 / 2), K4, Perms::NONE)
                .expect("protect");
        }
    }
    view
}

/// Time to build, and tables used. The pool is warmed by a first build, so
/// the samples reuse its frames (each is zeroed again when allocated, as
/// okernel's allocator must) instead of timing the host's page faults.
fn measure_build(caps: EptCaps, len: u64, holes: bool, samples: usize) -> (Duration, usize) {
    let pool = Pool::new();
    let tables = build(&pool, caps, len, holes).usage().total();
    let time = median(samples, || {
        let start = Instant::now();
        let view = black_box(build(&pool, caps, len, holes));
        let t = start.elapsed();
        drop(view);
        t
    });
    (time, tables)
}

/// Tables of a 4 KiB-only identity map of `len` bytes from 0: PML4, PDPTs,
/// PDs, PTs (holes do not change it).
fn naive_tables(len: u64) -> usize {
    let div = |unit: u64| len.div_ceil(unit) as usize;
    1 + div(512 * G) + div(G) + div(2 << 20)
}

fn fmt_time(d: Duration) -> String {
    let ns = d.as_secs_f64() * 1e9;
    match ns {
        n if n < 1e3 => format!("{n:.0} ns"),
        n if n < 1e6 => format!("{:.1} us", n / 1e3),
        n if n < 1e9 => format!("{:.1} ms", n / 1e6),
        n => format!("{:.2} s", n / 1e9),
    }
}

fn fmt_tables(n: usize) -> String {
    let kib = n as u64 * 4;
    let mem = match kib {
        k if k < 1024 => format!("{k} KiB"),
        k if k < 1 << 20 => format!("{:.1} MiB", k as f64 / 1024.0),
        k => format!("{:.2} GiB", k as f64 / (1u64 << 20) as f64),
    };
    format!("{n} ({mem})")
}

fn row(name: &str, fast: (Duration, usize), slow: (Duration, usize), how: &str) {
    println!(
        "| {name:<30} | {:>9} | {:>19} | {:>9} | {:>22} | {:>9.0}x | {:>9.0}x | {how}",
        fmt_time(fast.0),
        fmt_tables(fast.1),
        fmt_time(slow.0),
        fmt_tables(slow.1),
        slow.0.as_secs_f64() / fast.0.as_secs_f64(),
        slow.1 as f64 / fast.1 as f64,
    );
}

fn builds(full: bool) {
    println!(
        "| {:<30} | {:>9} | {:>19} | {:>9} | {:>22} | {:>10} | {:>10} | naive figures",
        "build (identity map from 0)",
        "time",
        "tables (memory)",
        "4K time",
        "4K tables (memory)",
        "time x",
        "memory x"
    );
    println!(
        "|{:-<32}|{:-<11}|{:-<21}|{:-<11}|{:-<24}|{:-<12}|{:-<12}|{:-<22}",
        "", "", "", "", "", "", "", ""
    );
    for holes in [false, true] {
        let mut naive_64 = Duration::ZERO;
        for gib in [1u64, 64, 1024] {
            let len = gib * G;
            let name = match (gib, holes) {
                (1024, false) => "1 TiB".to_string(),
                (1024, true) => "1 TiB, 4K hole every 64 MiB".to_string(),
                (g, false) => format!("{g} GiB"),
                (g, true) => format!("{g} GiB, 4K hole every 64 MiB"),
            };
            let fast = measure_build(large(), len, holes, SAMPLES);
            let (slow, how) = if gib < 1024 || full {
                let slow = measure_build(naive(), len, holes, if gib < 64 { SAMPLES } else { 3 });
                assert_eq!(slow.1, naive_tables(len), "analytic count is exact");
                if gib == 64 {
                    naive_64 = slow.0;
                }
                (slow, "measured")
            } else {
                (
                    (naive_64 * 16, naive_tables(len)),
                    "time x16 from 64 GiB; tables computed",
                )
            };
            row(&name, fast, slow, how);
        }
    }
}

/// Protects one 4 KiB page inside a 1 GiB page and restores it, over and
/// over; returns (time per protect+restore pair, frames allocated by one
/// protect, tables after restore).
fn protect_restore(caps: EptCaps) -> (Duration, u64, usize) {
    let pool = Pool::new();
    let mut view = View::new(pool.clone(), caps).expect("root");
    view.identity_map(Gpa(0), 4 * G, Attributes::RAM)
        .expect("map");
    let page = Gpa(G + 0x12_3000);
    let before = pool.allocations();
    view.protect(page, K4, Perms::R).expect("protect");
    let allocated = pool.allocations() - before;
    view.protect(page, K4, Perms::RWX).expect("restore");
    let tables = view.usage().total();
    let time = median(SAMPLES, || {
        let start = Instant::now();
        view.protect(page, K4, Perms::R).expect("protect");
        view.protect(page, K4, Perms::RWX).expect("restore");
        start.elapsed()
    });
    (time, allocated, tables)
}

fn protects() {
    let (fast, fast_alloc, fast_tables) = protect_restore(large());
    let (slow, slow_alloc, slow_tables) = protect_restore(naive());
    let per_s = |d: Duration| format!("{:.2} M/s", 2.0 / d.as_secs_f64() / 1e6);
    println!();
    println!("| protect one 4K page in a 1 GiB mapping, then restore | large pages |   naive 4K |");
    println!("|{:-<55}|{:-<13}|{:-<12}|", "", "", "");
    let line = |what: &str, a: String, b: String| println!("| {what:<53} | {a:>11} | {b:>10} |");
    line(
        "frames allocated by the protect",
        fast_alloc.to_string(),
        slow_alloc.to_string(),
    );
    line(
        "tables after the restore (4 GiB view)",
        fast_tables.to_string(),
        slow_tables.to_string(),
    );
    line(
        "time per protect + restore pair",
        fmt_time(fast),
        fmt_time(slow),
    );
    line("protects or restores per second", per_s(fast), per_s(slow));
    line(
        "time x (naive / large pages)",
        format!("{:.2}x", slow.as_secs_f64() / fast.as_secs_f64()),
        "1.00x".to_string(),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // then only a smoke run is wanted.
    if !std::env::args().any(|a| a == "--bench") {
        let view = build(&Pool::new(), large(), 1024 * G, true);
        assert_eq!(view.usage().total(), 1 + 2 + 1024 * 17);
        println!("smoke run ok; use `cargo bench -p ept --bench ept` for figures");
        return;
    }
    let full = std::env::var_os("EPT_BENCH_FULL").is_some();
    println!(
        "ept benchmark: median of {SAMPLES} samples (3 for naive 64 GiB builds); host-memory frames"
    );
    println!(
        "x columns: naive 4K figure / large-page figure, both measured in this run unless noted\n"
    );
    // An optional filter argument picks sections: `-- build` or `-- protect`.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if wanted("build") {
        builds(full);
    }
    if wanted("protect") {
        protects();
    }
}
