//! Ending a run with the run-result protocol ([`okernel_abi::result`]).

use core::fmt::{self, Write};
use okernel_abi::result::{BOCHS_SHUTDOWN_PORT, EXIT_PORT, MARKER, Outcome};
use x86_64::instructions::port::Port;

/// Writes through to `W` with line breaks turned into spaces.
struct OneLine<'a, W: Write>(&'a mut W);

impl<W: Write> Write for OneLine<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for (i, part) in s.split(['\n', '\r']).enumerate() {
            if i > 0 {
                self.0.write_str(" ")?;
            }
            self.0.write_str(part)?;
        }
        Ok(())
    }
}

/// Prints the result marker, writes the outcome to the exit port (QEMU's
/// `isa-debug-exit`, the KVM harness), then asks Bochs to shut down, and
/// halts if all of those returned (on bare metal the operator reads the
/// marker).
pub fn report(outcome: Outcome, detail: fmt::Arguments<'_>) -> ! {
    crate::println!();
    if outcome == Outcome::Pass {
        crate::println!("{MARKER}{}", outcome.word());
    } else {
        // The marker is one line: runners read it line by line, and a panic
        // message puts the location and the message on separate lines.
        x86_64::instructions::interrupts::without_interrupts(|| {
            let mut console = crate::CONSOLE.lock();
            let mut line = OneLine(&mut *console);
            let _ = write!(line, "{MARKER}{}: {}", outcome.word(), detail);
            let _ = console.write_str("\n");
        });
    }
    x86_64::instructions::interrupts::without_interrupts(|| crate::CONSOLE.lock().drain());
    // SAFETY: EXIT_PORT is the isa-debug-exit port on QEMU and the result
    // port of the KVM harness; elsewhere nothing decodes it, and a write to
    // an unclaimed port is ignored by the chipset.
    unsafe { Port::<u8>::new(EXIT_PORT).write(outcome.code()) };
    let mut shutdown = Port::<u8>::new(BOCHS_SHUTDOWN_PORT);
    for b in b"Shutdown" {
        // SAFETY: 0x8900 is Bochs' shutdown port; other backends ignore it.
        unsafe { shutdown.write(*b) };
    }
    halt_forever()
}

/// Disables interrupts and halts forever.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins_lines() {
        let mut out = String::new();
        let msg = "panicked at a.rs:1:2:\nboom\r\nx";
        write!(OneLine(&mut out), "{msg}").unwrap();
        assert_eq!(out, "panicked at a.rs:1:2: boom  x");
    }
}
