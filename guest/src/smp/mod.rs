//! `scenario=smp`, run on two or more processors: the attacks
//! `ap-start-outside-vmx` and `ap-write-locked-page`. The guest starts
//! the other processors the way an OS does — INIT, SIPI, SIPI to each
//! in turn through its local APIC, in x2APIC mode where the
//! processor offers it (Bochs' does; else through the xAPIC page) — at
//! real-mode start-up code of its own below 1 MiB ([`start_up`]). Under
//! okernel the x2APIC ICR writes exit: the SIPIs to the other processors
//! are sent, the INIT is completed without being sent (`exit::apic`:
//! every other processor already waits for its SIPI under the monitor,
//! and Bochs 2.7 would re-deliver an INIT at every VM entry). That code records that it ran and what
//! CPUID.1:ECX says there, loads an IVT of its own, and writes a page the
//! BSP locked read-only before the SIPIs.
//!
//! `ap-start-outside-vmx` (invariant 1): no processor ran the guest's
//! code outside VMX. Under okernel the loader parked every other
//! processor in VMX root (`okernel::launch::park`), and the monitor
//! enters each in VMX non-root, waiting for its SIPI, with the BSP's EPT
//! and locks: the SIPI starts it at vector << 12 in real mode *under the
//! monitor*, where CPUID hides VMX (invariant 12). Blocked = no
//! processor ran the code with VMX visible; under okernel the check also
//! needs the code to have run (with VMX hidden): not running at all
//! within [`WAIT`] fails it, since the processors are meant to run. The
//! same image with `mode=direct` (no monitor, no parking) is the
//! negative control: the processor runs the code with VMX visible,
//! outside any monitor. The start itself is not audited (ICR writes are
//! not intercepted; the monitor logs each processor it starts).
//!
//! `ap-write-locked-page` (invariant 3: locks set on CPU 0 hold on CPU
//! 1): before the SIPIs the BSP fills [`LOCKED`] with [`FILL`] and, under
//! okernel, locks it read-only (`RegisterRegion` as `Rodata`,
//! `LockRegion`: `attacks::audit::lock_page_read_only`, as the DMA and
//! BAR rows do). The processor's write is an EPT violation: denied,
//! audited, and #GP injected (real mode: no error code), which the
//! code's own #GP handler records with the IP it faulted at. Blocked =
//! the page keeps its bytes; under okernel the #GP at the write and the
//! `ept-violation` record naming the page are required too. Without a
//! monitor nothing locks the page and the pattern lands in it.

mod long_mode;
mod setup;
mod stale;
mod start_up;
mod view;

use crate::report::{Buf, Checks};
use okernel_abi::boot::{EntryMode, GuestMemoryKind, MemoryRegion};
use okernel_abi::policy::{AuditKind, TRUSTED_CONTEXT};
use start_up::Marks;

/// The page the start-up code is copied to (vector 0x08).
const PAGE: u64 = 0x8000;
/// The page the BSP locks and the code writes (DS:0x1000 there).
const LOCKED: u64 = PAGE + start_up::TARGET as u64;
/// The race row's page (DS:0x2000 there).
const RACE_PAGE: u64 = PAGE + start_up::RACE_TARGET as u64;
/// The view-switch row's page (DS:0x3000 there): under okernel a
/// credentials region, writable in the trusted view and read-only in
/// every context's (`docs/policy.md`).
const VIEW_PAGE: u64 = PAGE + start_up::VIEW_TARGET as u64;
/// What [`VIEW_PAGE`] holds before the row, repeated.
const VIEW_FILL: &[u8; 16] = b"OKERNEL-VIEW-CR!";
/// How long the BSP watches the race page after its lock returned, in
/// TSC ticks: four of the monitor's console ticks and 32 of its poll
/// ticks (`okernel::vcpu::timer`, 2^20 and 2^17), so that without the
/// shootdown a processor that keeps writing through its old translation
/// until its next exit does it within the watch.
const RACE_WATCH: u64 = 4 << 20;
/// What [`LOCKED`] holds before the attack, repeated.
const FILL: &[u8; 16] = b"OKERNEL-AP-LOCK!";

/// xAPIC interrupt command register, low half (SDM Vol. 3A §11.6.1).
const ICR_LOW: u64 = 0x300;
/// The version register: bits 7:0 the version, 0x1X for an integrated
/// APIC (SDM Vol. 3A §11.4.8).
const VERSION: u64 = 0x30;
const ICR_HIGH: u64 = 0x310;
/// The x2APIC ICR (SDM Vol. 3A §11.12.9).
const X2APIC_ICR: u32 = 0x830;
/// ICR: no shorthand, physical destination, level assert, INIT or
/// start-up (SDM Vol. 3A §11.6.1).
const INIT: u32 = 1 << 14 | 0b101 << 8;
const SIPI: u32 = 1 << 14 | 0b110 << 8;
/// The APIC IDs the guest starts, one after the other as Linux does
/// (`do_boot_cpu`): Bochs numbers its processors 0, 1, 2...; an ID no
/// processor has is ignored.
const OTHER_IDS: core::ops::RangeInclusive<u32> = 1..=7;
const PENDING: u32 = 1 << 12;

/// How long the guest waits for the code to finish, in TSC ticks (Bochs:
/// emulated instructions; one emulated second at the runs' rate).
const WAIT: u64 = 20_000_000;
/// How long it then waits for the other processors (the first one's
/// marks are there; more than three run the short code in this).
const SETTLE: u64 = 2_000_000;

fn ticks() -> u64 {
    // SAFETY: RDTSC has no side effect and does not exit.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn wait(n: u64) {
    let t = ticks();
    while ticks().wrapping_sub(t) < n {
        core::hint::spin_loop();
    }
}

/// Writes the ICR for APIC ID `id` and waits (bounded) until the APIC
/// has sent it; whether it did.
fn send(apic: u64, id: u32, low: u32) -> bool {
    // SAFETY: the local APIC's page, identity-mapped by the hand-off page
    // tables (4 GiB) and, under okernel, by the base view's MMIO map.
    unsafe {
        core::ptr::write_volatile((apic + ICR_HIGH) as *mut u32, id << 24);
        core::ptr::write_volatile((apic + ICR_LOW) as *mut u32, low);
        for _ in 0..1_000_000 {
            if core::ptr::read_volatile((apic + ICR_LOW) as *const u32) & PENDING == 0 {
                return true;
            }
        }
    }
    false
}

/// What the BSP's APIC did.
struct Start {
    version: u32,
    /// A positive control: an APIC answers at its base (a write to plain
    /// or unmapped memory would also read back "not pending", and
    /// "blocked" would then prove nothing).
    apic_there: bool,
    sent: bool,
    vector: u32,
}

/// INIT, SIPI, SIPI to each of [`OTHER_IDS`] at [`PAGE`]'s vector, in
/// x2APIC mode where the processor offers it and `x2apic` allows it
/// (else through the xAPIC page, identity-mapped). One processor at a time
/// (as Linux does), not a broadcast: Bochs 2.7 stops delivering a
/// broadcast SIPI at the first processor whose SIPI exits.
fn start_others(x2apic: bool) -> Start {
    use crate::arch::cpu::{APIC_BASE_ADDRESS, APIC_BASE_EXTD, IA32_APIC_BASE, rdmsr, wrmsr};
    let base = rdmsr(IA32_APIC_BASE);
    let apic = base & APIC_BASE_ADDRESS;
    let vector = (PAGE >> 12) as u32;
    // SAFETY: as in `send`; reading the version register has no effect
    // (before x2APIC mode, whose registers are MSRs).
    let version = unsafe { core::ptr::read_volatile((apic + VERSION) as *const u32) };
    let x2apic = x2apic && core::arch::x86_64::__cpuid(1).ecx & (1 << 21) != 0;
    let send: &dyn Fn(u32, u32) -> bool = if x2apic {
        if base & APIC_BASE_EXTD == 0 {
            // SAFETY: the same base and enable bit, EXTD added: the
            // processor's own valid transition (SDM Vol. 3A §11.12.5);
            // nothing in this scenario uses the xAPIC page after it.
            unsafe { wrmsr(IA32_APIC_BASE, base | APIC_BASE_EXTD) };
        }
        &|id, low| {
            // SAFETY: the x2APIC ICR, destination in bits 63:32; x2APIC
            // mode has no delivery-status bit to wait on.
            unsafe { wrmsr(X2APIC_ICR, u64::from(id) << 32 | u64::from(low)) };
            true
        }
    } else {
        &|id, low| send(apic, id, low)
    };
    let mut sent = true;
    for id in OTHER_IDS {
        sent &= send(id, INIT) && {
            wait(200_000);
            send(id, SIPI | vector) && {
                wait(20_000);
                send(id, SIPI | vector)
            }
        };
    }
    Start {
        version,
        apic_there: (0x10..=0x1f).contains(&(version & 0xff)),
        sent,
        vector,
    }
}

/// Waits until a processor finished the code (or [`WAIT`] passed), then
/// [`SETTLE`] for the others; what they left.
fn marks() -> Marks {
    let t = ticks();
    while !Marks::read(PAGE).finished() && ticks().wrapping_sub(t) < WAIT {
        core::hint::spin_loop();
    }
    if Marks::read(PAGE).finished() {
        wait(SETTLE);
    }
    Marks::read(PAGE)
}

fn usable(map: &[MemoryRegion], page: u64) -> bool {
    map.iter().any(|r| {
        r.kind == GuestMemoryKind::Usable as u32
            && r.base <= page
            && page + 0x1000 <= r.base + r.length
    })
}

fn fill_locked() {
    for i in 0..4096u64 {
        // SAFETY: LOCKED is usable RAM below 1 MiB (checked by `run`),
        // identity-mapped, used by nothing else of this kernel; no other
        // processor runs yet.
        unsafe { core::ptr::write_volatile((LOCKED + i) as *mut u8, FILL[(i % 16) as usize]) };
    }
}

/// Whether [`LOCKED`] still holds [`FILL`] only, and its first dword.
fn locked_page() -> (bool, u32) {
    let at = |i: u64| {
        // SAFETY: as in `fill_locked`; reads only.
        unsafe { core::ptr::read_volatile((LOCKED + i) as *const u8) }
    };
    let intact = (0..4096u64).all(|i| at(i) == FILL[(i % 16) as usize]);
    (intact, u32::from_le_bytes([at(0), at(1), at(2), at(3)]))
}

/// Runs the three attacks and reports them; `shootdown`: whether the
/// monitor has its shootdown (`shootdown=off` names the planted-defect
/// build, where the race must succeed).
pub fn run(
    checks: &mut Checks,
    entry: EntryMode,
    map: &[MemoryRegion],
    planted: Option<guest::cmdline::Planted>,
    kernel: (u64, crate::arch::tables::Selectors),
) {
    if !(PAGE..PAGE + 0x7000)
        .step_by(0x1000)
        .all(|p| usable(map, p))
    {
        for (name, invariant) in [
            ("attack-ap-start-outside-vmx", 1),
            ("attack-ap-write-locked-page", 3),
            ("attack-race-write-vs-lock", 3),
            ("attack-race-stale-mapping", 3),
            ("attack-race-view-switch", 3),
        ] {
            checks.check(
                name,
                invariant,
                false,
                format_args!(
                    "the pages {PAGE:#x}..{:#x} are not all usable RAM in the hand-off map",
                    PAGE + 0x7000
                ),
            );
        }
        return;
    }
    start_up::install(PAGE);
    fill_locked();
    let monitor = entry == EntryMode::NonRoot;
    // Under okernel, before any lock (VMCALL is #UD bare).
    let prepared = setup::prepare(entry);
    // Under okernel: lock the page read-only first.
    let locked = monitor.then(|| crate::attacks::audit::lock_page_read_only(LOCKED));
    let before = if monitor {
        crate::attacks::audit::count()
    } else {
        Err(Err(0))
    };
    let start = start_others(true);
    let marks = marks();
    log::info!("smp: the start-up code's marks: {marks:x?}");
    report_start(checks, entry, &start, &marks);
    report_write(checks, entry, locked, before, &marks);
    let mut race = race(entry);
    // The race is over: end the loops no lock stopped (no monitor).
    start_up::post(PAGE, start_up::STOP_AT, 1);
    let kernel = setup::kernel(entry, prepared, kernel);
    let stale = stale::run(entry, kernel, PAGE);
    let view = view::run(entry, kernel, PAGE, VIEW_PAGE, marks.counts[0]);
    // Every processor has halted (CLI, HLT) at the view row's end: a lock
    // now waits for each to leave HLT. (The code page: nothing writes it
    // any more.)
    let marks = Marks::read(PAGE);
    race.halted_lock =
        (entry == EntryMode::NonRoot && marks.race_faults.0 == marks.counts[0] && view.halted)
            .then(|| crate::attacks::audit::lock_page_read_only(PAGE));
    report_race(checks, entry, planted, &race);
    stale::report(
        checks,
        entry,
        planted == Some(guest::cmdline::Planted::NoShootdown),
        &stale,
    );
    view::report(checks, entry, planted, &view);
}

/// Starts every other processor into the start-up code, where it ends
/// in [`start_up::RACE`]'s loop, for `scenario=bench`: processors that
/// run the guest while the bootstrap processor times its exits. Returns
/// how many ran the code (0 on one processor).
pub fn start_busy_processors(map: &[MemoryRegion]) -> u16 {
    if !usable(map, PAGE) || !usable(map, LOCKED) || !usable(map, RACE_PAGE) {
        return 0;
    }
    start_up::install(PAGE);
    start_others(true);
    marks().counts[0]
}

/// Starts one other processor (the first to take the trampoline's
/// ticket; any more halt) in 64-bit mode on the current page tables, where
/// it calls `entry`, a function of the kernel's text, on the stack below
/// `stack_top`; `scenario=fuzz aps=run`. Through the xAPIC page (the
/// caller's APIC stays in xAPIC mode), which the current page tables must
/// identity-map. Whether it reached its 64-bit code within [`WAIT`].
pub fn start_one_in_long_mode(
    map: &[MemoryRegion],
    stack_top: u64,
    entry: extern "C" fn() -> !,
) -> Result<(), &'static str> {
    if !usable(map, PAGE) {
        return Err("page 0x8000 is not usable RAM");
    }
    long_mode::install(PAGE, crate::arch::cpu::cr3(), stack_top, entry);
    let start = start_others(false);
    if !start.apic_there || !start.sent {
        return Err("the local APIC did not send INIT, SIPI, SIPI");
    }
    let t = ticks();
    while !long_mode::running(PAGE) && ticks().wrapping_sub(t) < WAIT {
        core::hint::spin_loop();
    }
    if long_mode::running(PAGE) {
        Ok(())
    } else {
        Err("no other processor reached 64-bit mode")
    }
}

/// What the race row saw.
struct Race {
    /// The loop's count rose while the BSP watched before its lock (the
    /// processors were writing the page).
    racing: bool,
    /// Under okernel: the lock hypercalls succeeded.
    locked: Option<bool>,
    /// The audit count before the lock.
    before: Result<u64, Result<okernel_abi::hypercall::Status, u64>>,
    /// The page's first dword right after the lock returned, and after
    /// [`RACE_WATCH`].
    at_return: u32,
    after: u32,
    /// The loop's count at the return and after.
    heart: (u32, u32),
    /// The marks after.
    marks: Marks,
    /// Under okernel: a second lock (of the code page) made once the
    /// others, past their race #GP, halted at the view row's end returned,
    /// and succeeded: their VMX-preemption timer brings them out of HLT
    /// for the shootdown.
    halted_lock: Option<bool>,
}

/// `race-write-vs-lock`: with the other processors in [`start_up::RACE`]
/// (each writing its loop count to [`RACE_PAGE`] as fast as it can), the
/// BSP locks the page read-only, reads it the moment the lock returns,
/// watches it for [`RACE_WATCH`] and reads it again.
fn race(entry: EntryMode) -> Race {
    let heart = || Marks::read(PAGE).heart;
    let first = heart();
    wait(SETTLE);
    let racing = heart() != first;
    // The page is in every processor's TLB, writable: it wrote it.
    let monitor = entry == EntryMode::NonRoot;
    let before = if monitor {
        crate::attacks::audit::count()
    } else {
        Err(Err(0))
    };
    let locked = monitor.then(|| crate::attacks::audit::lock_page_read_only(RACE_PAGE));
    let dword = || {
        // SAFETY: RACE_PAGE is usable RAM below 1 MiB (checked by `run`),
        // identity-mapped; the other processors write it, hence volatile.
        unsafe { core::ptr::read_volatile(RACE_PAGE as *const u32) }
    };
    let at_return = dword();
    let heart_at_return = heart();
    wait(RACE_WATCH);
    let after = dword();
    let heart_after = heart();
    let marks = Marks::read(PAGE);
    Race {
        racing,
        locked,
        before,
        at_return,
        after,
        heart: (heart_at_return, heart_after),
        marks,
        halted_lock: None,
    }
}

fn modes(entry: EntryMode) -> (&'static str, &'static str) {
    match entry {
        EntryMode::NonRoot => ("protected", "blocked"),
        EntryMode::Direct => ("no-monitor", "succeeded"),
    }
}

/// `ap-start-outside-vmx`.
fn report_start(checks: &mut Checks, entry: EntryMode, start: &Start, marks: &Marks) {
    let (mode, expected) = modes(entry);
    let outside = marks.ran && marks.vmx_visible();
    let blocked = !outside;
    let ok = start.apic_there
        && start.sent
        && marks.ran
        && match entry {
            EntryMode::NonRoot => !marks.vmx_visible(),
            EntryMode::Direct => marks.vmx_visible(),
        };
    let mut what = Buf::new();
    if marks.ran {
        what.set(format_args!(
            "{} ran the code: CPUID.1:ECX {:#x}, VMX {}",
            marks.counts[0],
            marks.ecx,
            if outside {
                "visible (outside VMX)"
            } else {
                "hidden (under the monitor)"
            }
        ));
    } else {
        what.set(format_args!("none ran the code within {WAIT} TSC ticks"));
    }
    checks.attack(
        "ap-start-outside-vmx",
        1,
        ok,
        format_args!(
            "APIC version {:#x}{}; INIT, SIPI x2 to APIC IDs 1-7 in turn, vector {:#x}: {}; {}",
            start.version,
            if start.apic_there { "" } else { " (no APIC)" },
            start.vector,
            if start.sent { "sent" } else { "NOT SENT" },
            what.as_str()
        ),
        mode,
        expected,
        blocked,
        format_args!(
            "none{}",
            if entry == EntryMode::NonRoot {
                " (a start is no denial; the monitor logs each one)"
            } else {
                ""
            }
        ),
    );
}

/// Under okernel, when the write was blocked: whether an `ept-violation`
/// record of the trusted context names `page` since `before` (what it
/// found, or why it did not look, into `audit`).
fn denied_write_audited(
    entry: EntryMode,
    blocked: bool,
    before: Result<u64, Result<okernel_abi::hypercall::Status, u64>>,
    page: u64,
    audit: &mut Buf,
) -> bool {
    match entry {
        EntryMode::NonRoot if blocked => crate::attacks::audit::find(
            before,
            AuditKind::EptViolation,
            TRUSTED_CONTEXT,
            Some(page),
            audit,
        ),
        EntryMode::NonRoot => {
            audit.set(format_args!("not looked for: not blocked"));
            false
        }
        EntryMode::Direct => {
            audit.set(format_args!("none (no monitor)"));
            false
        }
    }
}

/// `ap-write-locked-page`.
fn report_write(
    checks: &mut Checks,
    entry: EntryMode,
    locked: Option<bool>,
    before: Result<u64, Result<okernel_abi::hypercall::Status, u64>>,
    marks: &Marks,
) {
    let (mode, expected) = modes(entry);
    let (intact, first) = locked_page();
    let blocked = intact;
    let mut audit = Buf::new();
    let audited = denied_write_audited(entry, blocked, before, LOCKED, &mut audit);
    let ok = match entry {
        EntryMode::NonRoot => {
            locked == Some(true) && blocked && marks.gp == Some(start_up::WRITE_IP) && audited
        }
        EntryMode::Direct => !blocked && first == start_up::PATTERN && marks.wrote,
    };
    let mut fault = Buf::new();
    match (marks.gp, marks.other) {
        (Some(ip), _) => fault.set(format_args!("#GP at IP {ip:#x} x{}", marks.counts[1])),
        (None, Some(ip)) => fault.set(format_args!("another vector at IP {ip:#x}")),
        (None, None) => fault.set(format_args!("no fault")),
    }
    checks.attack(
        "ap-write-locked-page",
        3,
        ok,
        format_args!(
            "page {LOCKED:#x} locked read-only: {}; the AP's real-mode write (IP {:#x}): {}, wrote x{}; the page {}",
            match locked {
                Some(true) => "yes",
                Some(false) => "REFUSED",
                None => "no monitor",
            },
            start_up::WRITE_IP,
            fault.as_str(),
            marks.counts[2],
            if intact {
                "keeps its bytes"
            } else if first == start_up::PATTERN {
                "holds the pattern"
            } else {
                "changed"
            }
        ),
        mode,
        expected,
        blocked,
        format_args!("{}", audit.as_str()),
    );
}

/// `race-write-vs-lock`.
fn report_race(
    checks: &mut Checks,
    entry: EntryMode,
    planted: Option<guest::cmdline::Planted>,
    race: &Race,
) {
    let shootdown = planted != Some(guest::cmdline::Planted::NoShootdown);
    let (mode, expected) = match entry {
        EntryMode::NonRoot if !shootdown => ("planted-no-shootdown", "succeeded"),
        _ => modes(entry),
    };
    // Blocked: no write landed after the lock returned.
    let blocked = race.after == race.at_return;
    let (faults, fault_ip) = race.marks.race_faults;
    let mut audit = Buf::new();
    let audited = denied_write_audited(entry, blocked, race.before, RACE_PAGE, &mut audit);
    // The last lock needs every other processor halted at the view rows'
    // end; under `planted-shared-context` the view row destroys the
    // context they run in (that defect's finding), and they never get
    // there: that build's row leaves the check out.
    let halted_lock_held =
        race.halted_lock == Some(true) || planted == Some(guest::cmdline::Planted::SharedContext);
    let ok = race.racing
        && match (entry, shootdown) {
            (EntryMode::NonRoot, true) => {
                race.locked == Some(true)
                    && blocked
                    && faults > 0
                    && fault_ip == start_up::RACE_WRITE_IP
                    && audited
                    && halted_lock_held
            }
            (EntryMode::NonRoot, false) => race.locked == Some(true) && !blocked,
            (EntryMode::Direct, _) => !blocked,
        };
    checks.attack(
        "race-write-vs-lock",
        3,
        ok,
        format_args!(
            "page {RACE_PAGE:#x} looped: {}; locked: {}; at return {:#x} (#{}), later {:#x} (#{}): {}; race #GP x{} at {:#x}; lock, all halted: {}",
            if race.racing { "yes" } else { "NO" },
            match race.locked {
                Some(true) => "yes",
                Some(false) => "REFUSED",
                None => "no monitor",
            },
            race.at_return,
            race.heart.0,
            race.after,
            race.heart.1,
            if blocked { "no write after" } else { "WROTE after" },
            faults,
            fault_ip,
            match race.halted_lock {
                Some(true) => "yes",
                Some(false) => "REFUSED",
                None => "-",
            },
        ),
        mode,
        expected,
        blocked,
        format_args!("{}", audit.as_str()),
    );
}
