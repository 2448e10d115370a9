//! The okernel image: boot-protocol entry, then the boot sequence of
//! [`boot`], which ends by entering the guest or reporting why not.
#![no_std]
#![no_main]

mod arch;
mod boot;
mod boot_linux;
mod phys;
mod platform;
mod smp;

use okernel_abi::result::Outcome;

/// Called by the 32-bit entry stub once in long mode, with the protocol
/// magic and the physical address of the boot information.
#[unsafe(no_mangle)]
extern "C" fn loader_main(magic: u32, info: u32) -> ! {
    arch::arm_stack_guard();
    okernel_console::set_line_mark(true);
    okernel_console::init_logger("loader", log::LevelFilter::Info);
    arch::tables::init();
    match boot::run(magic, info) {
        Ok(never) => match never {},
        Err(failure) => okernel_console::report(failure.outcome(), format_args!("{failure}")),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: a panic never returns (it reports and ends the run). Another
    // processor may be printing a line: `break_lock` waits for it, bounded,
    // and breaks a lock still held after that (this processor's own, in a
    // panic inside a `log!` call, a `Display` that panics, which would
    // otherwise wait for it for ever).
    unsafe { okernel_console::break_lock() };
    // SAFETY: as above: whatever the panic interrupted never runs again.
    unsafe { okernel::launch::print_unprinted_audit_lines() };
    okernel_console::report(Outcome::Panic, format_args!("loader: {info}"))
}
