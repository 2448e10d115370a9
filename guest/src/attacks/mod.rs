//! `scenario=attacks`: boots the demo container host, registers and locks
//! it (unless `protect=off`), checks that legitimate work goes on, then
//! runs every attack of [`guest::attack::ATTACKS`] from the kernel path of
//! the untrusted task `container-a` (its vulnerability-emulation call),
//! and reports one check line per attack with what it expected, what it
//! observed and the audit record it found.

pub mod audit;
mod cpu;
mod entry_flags;
mod gate_events;
mod hostile;
mod legit;
mod memory;
mod policy_gaps;

use crate::arch::traps::Fault;
use crate::kernel::{self, protect};
use crate::report::{Buf, Checks};
use core::fmt;
use guest::attack::{self, Expect, Mode};
use guest::tasks::CONTAINER_A;

/// What one attack observed.
pub struct Obs {
    /// Whether it was blocked (see `guest::attack`).
    pub blocked: bool,
    /// The guest-physical page the audit record must name, if any.
    pub gpa: Option<u64>,
    /// What happened, for the check line.
    pub detail: Buf,
    /// False when the outcome cannot count: a refusal without the status
    /// the ABI documents, or an attack whose precondition (a context to
    /// attack) is missing.
    pub counts: bool,
}

impl Obs {
    /// An observation.
    pub fn new(blocked: bool, gpa: Option<u64>, detail: fmt::Arguments<'_>) -> Self {
        let mut d = Buf::new();
        d.set(detail);
        Self {
            blocked,
            gpa,
            detail: d,
            counts: true,
        }
    }
}

/// The result of a vulnerability call, for check lines.
pub struct Shown(pub Option<Result<u64, Fault>>);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => write!(f, "no result (did not return)"),
            Some(Ok(v)) => write!(f, "ok {v:#x}"),
            Some(Err(e)) => write!(f, "{} at {:#x}", e.name(), e.rip),
        }
    }
}

/// The run's state.
pub struct Suite<'a> {
    checks: &'a mut Checks,
    mode: Mode,
    monitor: Option<u64>,
    reg: protect::Registered,
    cr4_bits: u64,
}

impl Suite<'_> {
    /// Runs attack `name` (which must be in the list) unless its mode
    /// skips it, and reports it.
    fn attack(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Obs) {
        let a = attack::by_name(name).expect("every attack run is listed");
        let expected = a.expect(self.mode);
        if expected == Expect::NotRun {
            return;
        }
        // No hypercall without the monitor: VMCALL would raise #UD.
        let before = if a.needs_audit(self.mode) {
            audit::count()
        } else {
            Err(Err(0))
        };
        let obs = f(self);
        let mut text = Buf::new();
        let found = match a.audit {
            Some(kind) if a.needs_audit(self.mode) && obs.blocked => {
                let ctx = kernel::context(CONTAINER_A);
                audit::find(before, kind, ctx, obs.gpa, &mut text)
            }
            Some(_) if a.needs_audit(self.mode) => {
                text.set(format_args!("not looked for: not blocked"));
                false
            }
            _ => {
                text.set(format_args!("not required"));
                false
            }
        };
        let ok = a.judge(self.mode, obs.blocked, found) && obs.counts;
        let mode = match self.mode {
            Mode::Protected => "protected",
            Mode::Unprotected => "unprotected",
            Mode::NoMonitor => "no-monitor",
        };
        let verdict = if obs.blocked { "blocked" } else { "succeeded" };
        self.checks.attack(
            a.name,
            a.invariant,
            ok,
            format_args!("{verdict}: {}", obs.detail.as_str()),
            mode,
            expected.word(),
            obs.blocked,
            format_args!("{}", text.as_str()),
        );
    }
}

/// Runs the scenario. `monitor` is an address in the monitor's memory.
pub fn run(
    checks: &mut Checks,
    mode: Mode,
    ram_top: u64,
    monitor: Option<u64>,
    sel: crate::arch::tables::Selectors,
) {
    let cr4_bits = match kernel::init(mode, ram_top, sel) {
        Ok(b) => b,
        Err(e) => {
            checks.check("kernel-init", 0, false, format_args!("{e}"));
            return;
        }
    };
    log::info!(
        "attacks: mode {mode:?}, CR4 protections {cr4_bits:#x} (SMEP {:#x}, SMAP {:#x}, UMIP {:#x})",
        crate::arch::cpu::CR4_SMEP,
        crate::arch::cpu::CR4_SMAP,
        crate::arch::cpu::CR4_UMIP
    );
    let reg = if mode == Mode::Protected {
        protect::register_and_lock(checks, cr4_bits)
    } else {
        log::info!("attacks: protection off: nothing registered or locked");
        protect::Registered::default()
    };
    let mut s = Suite {
        checks,
        mode,
        monitor,
        reg,
        cr4_bits,
    };
    legit::run(&mut s);
    memory::run(&mut s);
    // Before `cpu::run`, whose last row leaves the APIC in x2APIC mode.
    gate_events::run(&mut s);
    cpu::run(&mut s);
    policy_gaps::run(&mut s);
    entry_flags::run(&mut s);
    hostile::run(&mut s);
    legit::after_attacks(&mut s);
}
