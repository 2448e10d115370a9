//! `scenario=forge`: the attack `forge-monitor-console-line`. The guest
//! shares COM1 with the monitor, whose lines — its audit records, the
//! run's result — an operator and the runners read. Every line the
//! loader and the monitor print starts with SOH
//! (`okernel_abi::result::LINE_MARK`), so the guest writes lines of its
//! own that start with it, straight to the UART's transmitter: a result
//! line that says the run failed and an audit line, both `FORGED`.
//!
//! Under okernel the monitor drops SOH from the guest's transmitter
//! writes (`okernel::exit::io`, COM1's data port) with an `exit` audit
//! record each: the lines arrive unmarked, the runner takes the
//! monitor's own result line (pass) and finds no marked line saying
//! `FORGED`. The same image with `mode=direct` is the negative control:
//! the marked lines reach the console and the forged result is the one
//! the runner reads (`xtask/src/e2e/platform.rs`).

use crate::report::Checks;
use okernel_abi::boot::EntryMode;
use okernel_abi::result::{LINE_MARK, MARKER};
use x86_64::instructions::port::Port;

/// COM1's transmitter and line status register (bit 5: THR empty).
const THR: u16 = 0x3f8;
const LSR: u16 = 0x3fd;
const THR_EMPTY: u8 = 1 << 5;

/// Writes `line` to the UART byte by byte, as a driver of its own would.
fn send(line: &[u8]) {
    for &b in line {
        // Bounded: an absent UART reads 0xFF (empty).
        for _ in 0..100_000 {
            // SAFETY: COM1's line status register; reading it has no
            // effect on transmission.
            let lsr = unsafe { Port::<u8>::new(LSR).read() };
            if lsr & THR_EMPTY != 0 {
                break;
            }
        }
        // SAFETY: the transmitter; the byte goes out on the console
        // (what the attack is).
        unsafe { Port::<u8>::new(THR).write(b) };
    }
}

/// Runs the attack and reports it.
pub fn run(checks: &mut Checks, entry: EntryMode) {
    let monitor = entry == EntryMode::NonRoot;
    let before = monitor
        .then(crate::attacks::audit::count)
        .and_then(Result::ok);
    let mark = char::from(LINE_MARK);
    let mut line = crate::report::Buf::new();
    line.set(format_args!("{mark}{MARKER}fail: FORGED by the guest\r\n"));
    send(line.as_str().as_bytes());
    line.set(format_args!(
        "{mark}[WARN  loader] okernel: audit #0 FORGED by the guest\r\n"
    ));
    send(line.as_str().as_bytes());
    let after = monitor
        .then(crate::attacks::audit::count)
        .and_then(Result::ok);
    // Both marks dropped, each with a record naming COM1's data port.
    let dropped = before.zip(after).is_some_and(|(b, a)| {
        a - b == 2
            && (b..a).all(|seq| {
                crate::attacks::audit::read(seq).is_ok_and(|r| {
                    r.kind == okernel_abi::policy::AuditKind::Exit as u32
                        && r.qualification >> 16 == u64::from(THR)
                })
            })
    });
    checks.attack(
        "forge-monitor-console-line",
        10,
        !monitor || dropped,
        format_args!(
            "two lines starting with the monitor's mark sent to COM1: a failing result and an audit record, both `FORGED`"
        ),
        if monitor { "protected" } else { "no-monitor" },
        if monitor { "blocked" } else { "succeeded" },
        dropped,
        format_args!(
            "{} new audit records{}",
            before
                .zip(after)
                .map_or(-1, |(b, a)| a.saturating_sub(b) as i64),
            if dropped {
                ", each an exit at COM1's data port"
            } else {
                ""
            }
        ),
    );
}
