//! Check results as the runners read them: one `OKERNEL-CHECK: {json}`
//! line per check, and the run's end.

use crate::kernel::Pages;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use okernel_abi::boot::EntryMode;
use okernel_abi::hypercall::{Call, EXIT_REASON_MAX};
use okernel_abi::result::{CHECK_PREFIX, Outcome};
use okernel_console::println;

pub use okernel_console_fmt::Buf;

/// Counts checks as they are reported.
#[derive(Debug, Default)]
pub struct Checks {
    passed: u32,
    failed: u32,
}

/// Escapes a string for a JSON string literal.
struct Json<'a>(&'a str);

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

impl Checks {
    /// Reports one check: its name, the invariant of DESIGN.md §2 it
    /// supports (0 for none), whether it held, and what was observed.
    pub fn check(&mut self, name: &str, invariant: u8, ok: bool, observed: fmt::Arguments<'_>) {
        self.check_with(name, invariant, ok, observed, format_args!(""));
    }

    /// Reports one attack of the suite: the check line with the fields
    /// `attack`, `mode`, `protected`, `expected`, `result` (`blocked` or
    /// `succeeded`) and `audit` added after the four the runners parse.
    #[allow(clippy::too_many_arguments)]
    pub fn attack(
        &mut self,
        attack: &str,
        invariant: u8,
        ok: bool,
        observed: fmt::Arguments<'_>,
        mode: &str,
        expected: &str,
        blocked: bool,
        audit: fmt::Arguments<'_>,
    ) {
        let mut name = Buf::new();
        name.set(format_args!("attack-{attack}"));
        let mut audit_buf = Buf::new();
        audit_buf.set(audit);
        let result = if blocked { "blocked" } else { "succeeded" };
        self.check_with(
            name.as_str(),
            invariant,
            ok,
            observed,
            format_args!(
                ",\"attack\":\"{}\",\"mode\":\"{mode}\",\"protected\":{},\"expected\":\"{expected}\",\"result\":\"{result}\",\"audit\":\"{}\"",
                Json(attack),
                mode == "protected",
                Json(audit_buf.as_str())
            ),
        );
    }

    /// Prints a check line with `extra` (`,"field":value...`, already
    /// JSON) after the four standard fields.
    fn check_with(
        &mut self,
        name: &str,
        invariant: u8,
        ok: bool,
        observed: fmt::Arguments<'_>,
        extra: fmt::Arguments<'_>,
    ) {
        let mut buf = okernel_console_fmt::Buf::new();
        let _ = buf.write_fmt(observed);
        println!(
            "{CHECK_PREFIX}{{\"check\":\"{}\",\"invariant\":{invariant},\"ok\":{ok},\"observed\":\"{}\"{extra}}}",
            Json(name),
            Json(buf.as_str())
        );
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    /// Ends the run: pass when every check held. Under the monitor the
    /// run ends through the `Exit` hypercall, so the monitor prints its
    /// exit counters and audit summary first.
    pub fn finish(&self, mode: EntryMode) -> ! {
        log::info!("checks: {} passed, {} failed", self.passed, self.failed);
        let outcome = if self.failed == 0 {
            Outcome::Pass
        } else {
            Outcome::Fail
        };
        if mode == EntryMode::NonRoot {
            crate::arch::instr::hypercall(Call::Exit, [u64::from(outcome.code()), 0, 0, 0]);
            // The monitor does not return from Exit; if it does, say so.
        }
        okernel_console::report(
            if mode == EntryMode::NonRoot {
                Outcome::Fail
            } else {
                outcome
            },
            format_args!(
                "guest: {} of {} checks failed",
                self.failed,
                self.passed + self.failed
            ),
        )
    }
}

/// Whether the guest runs under okernel ([`set_entry_mode`]).
static UNDER_MONITOR: AtomicBool = AtomicBool::new(false);

/// Where [`end`] puts the reason it gives the monitor's `Exit`.
static REASON: Pages<[u8; EXIT_REASON_MAX as usize]> = Pages::new([0; EXIT_REASON_MAX as usize]);

/// Records how the guest was entered. Under okernel the console stops
/// mirroring to port 0xE9 (the monitor denies it to the guest) and
/// [`end`] ends the run through the monitor.
pub fn set_entry_mode(mode: EntryMode) {
    let monitor = mode == EntryMode::NonRoot;
    UNDER_MONITOR.store(monitor, Ordering::SeqCst);
    okernel_console::set_debug_port(!monitor);
}

/// Ends the run with `outcome`. Under okernel through the `Exit`
/// hypercall with `detail` as its reason (cut to
/// [`EXIT_REASON_MAX`] bytes): the guest cannot end the run any other
/// way there (okernel denies the emulators' shutdown and result ports),
/// and the monitor prints the marker. If `Exit` is refused (an untrusted
/// context) or without a monitor, the console's report: the marker, the
/// result port, halt.
pub fn end(outcome: Outcome, detail: fmt::Arguments<'_>) -> ! {
    if UNDER_MONITOR.load(Ordering::SeqCst) {
        let mut text = Buf::new();
        text.set(detail);
        // The monitor's marker says `guest: <reason>` itself.
        let s = text.as_str();
        let s = s.strip_prefix("guest: ").unwrap_or(s);
        let mut len = s.len().min(EXIT_REASON_MAX as usize);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        // SAFETY: REASON is this module's page, written only here, on
        // the one CPU the guest runs on.
        unsafe { core::ptr::copy_nonoverlapping(s.as_ptr(), REASON.get().cast::<u8>(), len) };
        crate::arch::instr::hypercall(
            Call::Exit,
            [u64::from(outcome.code()), REASON.addr(), len as u64, 0],
        );
    }
    okernel_console::report(outcome, detail)
}

/// A small fixed buffer for formatting check details without allocation.
mod okernel_console_fmt {
    use core::fmt;

    /// 160 bytes; longer text is cut.
    pub struct Buf {
        bytes: [u8; 160],
        len: usize,
    }

    impl Buf {
        /// An empty buffer.
        pub fn new() -> Self {
            Self {
                bytes: [0; 160],
                len: 0,
            }
        }

        /// Replaces the contents with `args`.
        pub fn set(&mut self, args: fmt::Arguments<'_>) {
            self.len = 0;
            let _ = fmt::Write::write_fmt(self, args);
        }

        /// Puts `head` and `": "` before the contents (an operation's
        /// context before what its judge found).
        pub fn prefix(&mut self, head: fmt::Arguments<'_>) {
            let mut m = Buf::new();
            m.set(format_args!("{head}: {}", self.as_str()));
            *self = m;
        }

        /// The text.
        pub fn as_str(&self) -> &str {
            // Only whole UTF-8 sequences are ever copied in.
            core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
        }
    }

    impl fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for c in s.chars() {
                let mut tmp = [0u8; 4];
                let e = c.encode_utf8(&mut tmp);
                if self.len + e.len() > self.bytes.len() {
                    return Ok(());
                }
                self.bytes[self.len..self.len + e.len()].copy_from_slice(e.as_bytes());
                self.len += e.len();
            }
            Ok(())
        }
    }
}
