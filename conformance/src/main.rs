//! The conformance kernel (issue 18): a small 64-bit kernel the okernel
//! loader boots the same way bare (`mode=direct`) and under the monitor.
//! It prints one `OKERNEL-CHECK` line per check, each deterministic, and
//! `cargo xtask test`'s `conformance` case compares the two runs' lines:
//! a difference outside the documented by-design table
//! (`docs/vmx-core.md`, "What a guest can observe of okernel") fails.
#![no_std]
#![no_main]

mod checks;
mod cpu;
mod paging;
mod probes;
mod report;
mod trap;

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};
use okernel_abi::boot::{BOOT_MAGIC, BootInfo, EntryMode};
use okernel_abi::hypercall::Call;
use okernel_abi::result::Outcome;
use okernel_console::{println, report};

/// CR4.OSFXSR, OSXMMEXCPT, OSXSAVE.
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// CR4.OSXSAVE.
pub const CR4_OSXSAVE: u64 = 1 << 18;
const EFER: u32 = 0xc000_0080;
const EFER_NXE: u64 = 1 << 11;

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    mov rsp, offset conf_stack_top
    xor ebp, ebp
    call conf_main
1:
    hlt
    jmp 1b

    .section .bss.conf_stack, "aw", @nobits
    .balign 4096
    .skip 65536
conf_stack_top:
"#
);

/// Called by the entry stub with the loader's hand-off (RDI = BootInfo).
#[unsafe(no_mangle)]
extern "C" fn conf_main(boot_info: u64) -> ! {
    trap::init();
    // SAFETY: the boot protocol (okernel_abi::boot) puts a BootInfo at
    // RDI, identity-mapped and owned by the kernel; read before CR3
    // changes (the new tables map the same first 4 GiB anyway).
    let bi: BootInfo = unsafe { core::ptr::read(boot_info as *const BootInfo) };
    let mode = match EntryMode::from_raw(bi.entry_mode) {
        Some(m) if bi.magic == BOOT_MAGIC => m,
        _ => report(Outcome::Fail, format_args!("conformance: bad boot info")),
    };
    // Under okernel port 0xE9 is the monitor's (denied to the guest), and
    // the run ends only through Exit.
    UNDER_MONITOR.store(mode == EntryMode::NonRoot, Ordering::SeqCst);
    okernel_console::set_debug_port(mode != EntryMode::NonRoot);
    println!(
        "conformance kernel v{}: entered {}",
        env!("CARGO_PKG_VERSION"),
        match mode {
            EntryMode::Direct => "bare (mode=direct, no monitor)",
            EntryMode::NonRoot => "under okernel (VMX non-root)",
        }
    );
    paging::init();
    let avx = enable_extended_state();
    let mut c = report::Checks::default();
    checks::exceptions::run_all(&mut c);
    checks::intercepts::run_all(&mut c);
    checks::control::run_all(&mut c);
    checks::paging::run_all(&mut c);
    checks::platform::run_all(&mut c);
    checks::state::run_all(&mut c, avx);
    checks::tables::run_all(&mut c, mode);
    finish(&c, mode)
}

/// Turns on SSE (and its exceptions), XSAVE with the x87/SSE/AVX state
/// where CPUID lists them, and EFER.NXE; true when AVX is usable.
fn enable_extended_state() -> bool {
    let [_, _, ecx, _] = cpu::cpuid(1, 0);
    let xsave = ecx & (1 << 26) != 0;
    let avx = xsave && ecx & (1 << 28) != 0;
    let mut cr4 = cpu::cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT;
    if xsave {
        cr4 |= CR4_OSXSAVE;
    }
    // SAFETY: these bits only enable SSE/XSAVE instructions and #XM
    // delivery, which the kernel's checks use and handle.
    unsafe { cpu::set_cr4(cr4) };
    if xsave {
        let xcr0: u64 = if avx { 0b111 } else { 0b11 };
        // SAFETY: CR4.OSXSAVE is set; x87|SSE(|AVX) is a legal XCR0 where
        // CPUID lists AVX (SDM Vol. 1 §13.3).
        unsafe {
            core::arch::asm!("xsetbv", in("ecx") 0, in("eax") xcr0 as u32, in("edx") 0,
                options(nomem, nostack))
        };
    }
    // SAFETY: EFER exists in every 64-bit CPU; setting NXE (CPUID lists
    // XD on every CPU okernel runs on) keeps LME/LMA as they are.
    unsafe {
        let efer = cpu::rdmsr(EFER);
        if efer & EFER_NXE == 0 {
            cpu::wrmsr(EFER, efer | EFER_NXE);
        }
    }
    avx
}

/// Ends the run: pass when every check held. Under okernel through the
/// `Exit` hypercall (the monitor prints its exit counters, then the
/// result); bare with the result line itself.
fn finish(c: &report::Checks, mode: EntryMode) -> ! {
    println!("conformance: {} passed, {} failed", c.passed, c.failed);
    let outcome = if c.failed == 0 {
        Outcome::Pass
    } else {
        Outcome::Fail
    };
    if mode == EntryMode::NonRoot {
        exit(outcome);
    }
    report(
        if mode == EntryMode::NonRoot {
            Outcome::Fail
        } else {
            outcome
        },
        format_args!(
            "conformance: {} of {} checks failed",
            c.failed,
            c.passed + c.failed
        ),
    )
}

/// Whether the kernel runs under okernel (set once at entry).
static UNDER_MONITOR: AtomicBool = AtomicBool::new(false);

/// Asks okernel to end the run with `outcome` (its `Exit` call); returns
/// only if it refused.
fn exit(outcome: Outcome) {
    // SAFETY: VMCALL in non-root mode exits to okernel, which ends the
    // run on Exit and does not return; RAX carries the call and RDI
    // the outcome (okernel_abi::hypercall).
    unsafe {
        core::arch::asm!("vmcall",
            in("rax") Call::Exit.raw(), in("rdi") u64::from(outcome.code()),
            in("rsi") 0, in("rdx") 0, in("rcx") 0, options(nostack))
    };
}

/// Ends the run after an unexpected event: its line, then under okernel
/// `Exit` (the guest cannot end the run another way there), else the
/// console's result.
pub fn end(outcome: Outcome, detail: core::fmt::Arguments<'_>) -> ! {
    if UNDER_MONITOR.load(Ordering::SeqCst) {
        println!("{detail}");
        exit(outcome);
    }
    report(outcome, detail)
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    end(Outcome::Panic, format_args!("conformance: {info}"))
}
