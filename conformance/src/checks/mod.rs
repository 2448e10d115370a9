//! The checks, by subject. Each prints one line; a line's `ok` says
//! whether the observation is what the SDM prescribes for this CPU (so
//! both runs must hold), and its `observed` text is what the differential
//! run compares between the bare boot and the boot under okernel.

pub mod control;
pub mod exceptions;
pub mod intercepts;
pub mod paging;
pub mod platform;
pub mod state;
pub mod tables;

use crate::probes::Desc;
use crate::report::Checks;
use crate::trap::{Fault, probe};
use core::fmt;

/// RFLAGS.IF, TF and RF.
const IF: u64 = 1 << 9;
const TF: u64 = 1 << 8;
const RF: u64 = 1 << 16;
/// DR6.BS (single step) and B0 (breakpoint 0).
pub const DR6_BS: u64 = 1 << 14;
/// DR6.B0.
pub const DR6_B0: u64 = 1;

/// Where a saved RIP points, relative to the probe's instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rip {
    /// At the instruction (a fault).
    At,
    /// At the next instruction (a trap, or a fault on the next one).
    Next,
}

/// What an exception must look like.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    /// The vector.
    pub vector: u8,
    /// The error code.
    pub error: u64,
    /// Where RIP must point.
    pub rip: Rip,
}

/// A fault `#V(err)` at the instruction.
pub const fn at(vector: u8, error: u64) -> Want {
    Want {
        vector,
        error,
        rip: Rip::At,
    }
}

/// `#DB` after the instruction (single step or the next one's
/// breakpoint).
pub const DB_NEXT: Want = Want {
    vector: 1,
    error: 0,
    rip: Rip::Next,
};

/// A probe's outcome, printed: "no fault", or the vector, error code,
/// where RIP points, the RF/TF/IF bits of the saved RFLAGS, whether the
/// frame was 16-byte aligned, and CR2 or DR6 where they matter.
pub struct Seen<'a> {
    result: &'a Result<u64, Fault>,
    at: u64,
    next: u64,
}

impl fmt::Display for Seen<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fault = match self.result {
            Ok(_) => return f.write_str("no fault"),
            Err(fault) => fault,
        };
        write!(f, "{}(0x{:x}) rip=", fault.name(), fault.error_code)?;
        if fault.rip == self.at {
            f.write_str("at")?;
        } else if fault.rip == self.next {
            f.write_str("next")?;
        } else {
            write!(f, "0x{:x}", fault.rip)?;
        }
        let bit = |b| u8::from(fault.rflags & b != 0);
        write!(
            f,
            " rf={} tf={} if={} frame={}",
            bit(RF),
            bit(TF),
            bit(IF),
            if fault.aligned {
                "aligned"
            } else {
                "MISALIGNED"
            }
        )?;
        match fault.vector {
            14 => write!(f, " cr2=0x{:x}", fault.cr2),
            1 => write!(f, " dr6=0x{:x}", fault.dr6),
            _ => Ok(()),
        }
    }
}

/// Whether `result` is the exception `want` describes (at `at`/`next`),
/// pushed from an aligned stack.
pub fn matches(result: &Result<u64, Fault>, want: Option<Want>, at: u64, next: u64) -> bool {
    match (result, want) {
        (Ok(_), None) => true,
        (Err(f), Some(w)) => {
            let rip = match w.rip {
                Rip::At => at,
                Rip::Next => next,
            };
            f.vector == w.vector && f.error_code == w.error && f.rip == rip && f.aligned
        }
        _ => false,
    }
}

/// Runs probe `d` with `arg` and prints the line `name`: it holds when
/// the outcome is `want` (None: no exception). The exception, if any.
pub fn run(c: &mut Checks, name: &str, d: &Desc, arg: u64, want: Option<Want>) -> Option<Fault> {
    let result = probe(d.entry(), arg);
    report(c, name, &result, want, d.at, d.next);
    result.err()
}

/// Prints the line `name` for `result` (see [`run`]), with the
/// instruction at `at` and the next one at `next`.
pub fn report(
    c: &mut Checks,
    name: &str,
    result: &Result<u64, Fault>,
    want: Option<Want>,
    at: u64,
    next: u64,
) {
    let ok = matches(result, want, at, next);
    c.line(name, ok, format_args!("{}", Seen { result, at, next }));
}
