//! Ending a run with the run-result protocol ([`okernel_abi::result`]).

use okernel_abi::result::{BOCHS_SHUTDOWN_PORT, EXIT_PORT, MARKER, Outcome};
use x86_64::instructions::port::Port;

/// Prints the result marker, writes the outcome to the exit port (QEMU's
/// `isa-debug-exit`, the KVM harness), then asks Bochs to shut down, and
/// halts if all of those returned (on bare metal the operator reads the
/// marker).
pub fn report(outcome: Outcome, detail: core::fmt::Arguments<'_>) -> ! {
    crate::println!();
    if outcome == Outcome::Pass {
        crate::println!("{MARKER}{}", outcome.word());
    } else {
        crate::println!("{MARKER}{}: {}", outcome.word(), detail);
    }
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
