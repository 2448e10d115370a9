//! The platform devices a kernel reaches by MMIO (local APIC, IOAPIC,
//! HPET: their ID and version registers), the APIC timer and a self-IPI
//! taken as interrupts, and the time-stamp counter.

use crate::cpu;
use crate::report::Checks;
use crate::trap::{IPI_VECTOR, IRQS, SPURIOUS_VECTOR, TIMER_VECTOR};
use core::sync::atomic::Ordering;
use x86_64::instructions::interrupts;
use x86_64::instructions::port::Port;

const APIC: u64 = 0xfee0_0000;
const APIC_ID: u64 = 0x20;
const APIC_VERSION: u64 = 0x30;
const APIC_EOI: u64 = 0xb0;
const APIC_SVR: u64 = 0xf0;
const APIC_ICR_LOW: u64 = 0x300;
const APIC_LVT_TIMER: u64 = 0x320;
const APIC_TIMER_INITIAL: u64 = 0x380;
const APIC_TIMER_CURRENT: u64 = 0x390;
const APIC_TIMER_DIVIDE: u64 = 0x3e0;
const IOAPIC: u64 = 0xfec0_0000;
const HPET: u64 = 0xfed0_0000;
/// How long a wait for an interrupt spins at the most.
const SPIN: u32 = 2_000_000;

fn mmio_read(addr: u64) -> u32 {
    // SAFETY: `addr` is a 32-bit register of the local APIC, IOAPIC or
    // HPET windows, identity-mapped uncached by `paging::init`; reading
    // their ID/version/counter registers has no side effect.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn mmio_write(addr: u64, v: u32) {
    // SAFETY: `addr` is a local APIC, IOAPIC or HPET register (see
    // `mmio_read`); the writes are the programming sequences of SDM Vol.
    // 3A §13, the IOAPIC's index register and the HPET's enable bit.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

/// Signals end of interrupt to the local APIC.
pub fn eoi() {
    mmio_write(APIC + APIC_EOI, 0);
}

/// Runs the checks.
pub fn run_all(c: &mut Checks) {
    // The firmware's PIC lines stay masked: only the APIC interrupts
    // under test arrive.
    // SAFETY: writing 0xFF to the 8259A data ports (OCW1) masks every
    // line; the kernel uses no PIC interrupt.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
    // Each window is first read under a probe: where it is not reachable
    // (a #GP for an access the EPT does not map), the line says so and
    // the checks that need it do not run.
    // System Control Port A (okernel emulates it: A20 on, no reset).
    // SAFETY: reading port 0x92 has no side effect.
    let port_a = unsafe { Port::<u8>::new(0x92).read() };
    c.line(
        "port-92-in",
        port_a & 0b10 != 0,
        format_args!(
            "0x{port_a:x} (A20 {})",
            if port_a & 0b10 != 0 { "on" } else { "OFF" }
        ),
    );
    // A port nothing decodes in Bochs and okernel denies (default deny: a
    // Super I/O index port, docs/policy.md "Port I/O"): bare, the bus
    // floats and every width reads all ones; under okernel the monitor
    // answers all ones (and audits). Read only: a write of the wrong byte
    // to a real Super I/O chip would enter its configuration mode.
    // SAFETY: reading port 0x2E has no side effect where nothing decodes
    // it, and on a Super I/O chip it reads the index register.
    let (b, w, d) = unsafe {
        (
            Port::<u8>::new(0x2e).read(),
            Port::<u16>::new(0x2e).read(),
            Port::<u32>::new(0x2e).read(),
        )
    };
    c.line(
        "in-denied-port",
        b == 0xff && w == 0xffff && d == 0xffff_ffff,
        format_args!("port 0x2e: 8-bit 0x{b:x}, 16-bit 0x{w:x}, 32-bit 0x{d:x}"),
    );
    let apic = reachable(c, "apic-id-version", APIC + APIC_ID);
    if apic {
        let id = mmio_read(APIC + APIC_ID);
        let version = mmio_read(APIC + APIC_VERSION);
        c.line(
            "apic-id-version",
            true,
            format_args!("id=0x{:x} version=0x{version:x}", id >> 24),
        );
    }
    if reachable(c, "ioapic-id-version", IOAPIC) {
        mmio_write(IOAPIC, 0);
        let io_id = mmio_read(IOAPIC + 0x10);
        mmio_write(IOAPIC, 1);
        let io_version = mmio_read(IOAPIC + 0x10);
        c.line(
            "ioapic-id-version",
            true,
            format_args!("id=0x{io_id:x} version=0x{io_version:x}"),
        );
    }
    if reachable(c, "hpet-capabilities", HPET) {
        c.line(
            "hpet-capabilities",
            true,
            format_args!(
                "low=0x{:x} period=0x{:x}",
                mmio_read(HPET),
                mmio_read(HPET + 4)
            ),
        );
        tsc_rate(c);
    }
    if !apic {
        for name in ["apic-timer", "apic-self-ipi", "apic-spurious"] {
            c.line(
                name,
                false,
                format_args!("not run: the local APIC is unreachable"),
            );
        }
        tsc(c);
        return;
    }

    // Software-enable the APIC with the spurious vector (SDM Vol. 3A
    // §13.9), then a one-shot timer (§13.5.4) and a self-IPI (§13.6.1,
    // destination shorthand "self").
    mmio_write(APIC + APIC_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    mmio_write(APIC + APIC_TIMER_DIVIDE, 0b1011);
    mmio_write(APIC + APIC_LVT_TIMER, u32::from(TIMER_VECTOR));
    mmio_write(APIC + APIC_TIMER_INITIAL, 20_000);
    let fired = wait(0);
    c.line(
        "apic-timer",
        fired == 1 && mmio_read(APIC + APIC_TIMER_CURRENT) == 0,
        format_args!(
            "one-shot fired {fired} times, current count {}",
            mmio_read(APIC + APIC_TIMER_CURRENT)
        ),
    );
    mmio_write(APIC + APIC_ICR_LOW, 1 << 18 | u32::from(IPI_VECTOR));
    let ipis = wait(1);
    c.line(
        "apic-self-ipi",
        ipis == 1,
        format_args!("delivered {ipis} times"),
    );
    c.line(
        "apic-spurious",
        IRQS[2].load(Ordering::SeqCst) == 0,
        format_args!("{} spurious interrupts", IRQS[2].load(Ordering::SeqCst)),
    );
    tsc(c);
}

/// Whether a 32-bit read of `addr` completes; where it faults, prints
/// line `name` with the fault.
fn reachable(c: &mut Checks, name: &str, addr: u64) -> bool {
    let d = &crate::probes::conf_load32;
    let r = crate::trap::probe(d.entry(), addr);
    if r.is_err() {
        super::report(c, name, &r, None, d.at, d.next);
    }
    r.is_ok()
}

/// Opens interrupts until `IRQS[slot]` counts one (bounded), then a
/// little longer (a second delivery would show), and closes them.
fn wait(slot: usize) -> u64 {
    interrupts::enable();
    let mut spun = 0;
    while IRQS[slot].load(Ordering::SeqCst) == 0 && spun < SPIN {
        core::hint::spin_loop();
        spun += 1;
    }
    for _ in 0..10_000 {
        core::hint::spin_loop();
    }
    interrupts::disable();
    IRQS[slot].load(Ordering::SeqCst)
}

/// The TSC never goes back, in a tight loop and across exiting
/// instructions (CPUID); and it advances. No raw value is printed.
fn tsc(c: &mut Checks) {
    let mut back = 0;
    let mut prev = cpu::rdtsc();
    let first = prev;
    for i in 0..2000 {
        if i % 2 == 0 {
            let _ = cpu::cpuid(0, 0);
        }
        let now = cpu::rdtsc();
        if now < prev {
            back += 1;
        }
        prev = now;
    }
    c.line(
        "tsc-monotonic",
        back == 0 && prev > first,
        format_args!(
            "{back} backward steps in 2000 reads (1000 across CPUID), advanced: {}",
            prev > first
        ),
    );
}

/// HPET registers (IA-PC HPET specification 1.0a, §2.3): general
/// configuration (bit 0 ENABLE_CNF) and the main counter.
const HPET_CONFIG: u64 = 0x10;
const HPET_COUNTER: u64 = 0xf0;
/// HPET ticks the rate is measured over (about 7 ms at 14.318 MHz).
const RATE_TICKS: u64 = 100_000;

/// The TSC's rate against the HPET's main counter, whose period the
/// capabilities register gives in femtoseconds: TSC ticks per HPET
/// interval, in kHz to two significant digits (a monitor that offset or
/// scaled the TSC, or lost time across exits, would differ). The HPET is
/// enabled for it.
fn tsc_rate(c: &mut Checks) {
    let period_fs = u64::from(mmio_read(HPET + 4));
    let config = mmio_read(HPET + HPET_CONFIG);
    mmio_write(HPET + HPET_CONFIG, config | 1);
    let counter = || u64::from(mmio_read(HPET + HPET_COUNTER));
    let (h0, t0) = (counter(), cpu::rdtsc());
    let mut h1 = h0;
    let mut spun = 0u64;
    while h1.wrapping_sub(h0) & 0xffff_ffff < RATE_TICKS && spun < 100_000_000 {
        h1 = counter();
        spun += 1;
    }
    let t1 = cpu::rdtsc();
    mmio_write(HPET + HPET_CONFIG, config);
    let ticks = h1.wrapping_sub(h0) & 0xffff_ffff;
    // kHz = TSC ticks / (HPET ticks * period_fs * 1e-15) / 1e3.
    let elapsed_fs = u128::from(ticks) * u128::from(period_fs);
    let khz = (u128::from(t1.wrapping_sub(t0)) * 1_000_000_000_000)
        .checked_div(elapsed_fs)
        .unwrap_or(0) as u64;
    c.line(
        "tsc-rate-vs-hpet",
        ticks >= RATE_TICKS && khz > 0,
        format_args!("{} kHz (2 significant digits)", two_digits(khz)),
    );
}

/// `n` rounded to two significant digits.
fn two_digits(n: u64) -> u64 {
    let mut scale = 1;
    while n / scale >= 100 {
        scale *= 10;
    }
    (n + scale / 2) / scale * scale
}
