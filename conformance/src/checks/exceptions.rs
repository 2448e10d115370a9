//! Exceptions raised the architectural way, by instructions okernel never
//! intercepts: the reference for how a frame looks (vector, error code,
//! saved RIP, RF/TF/IF, alignment), and single-step and instruction
//! breakpoints around an instruction that completes in the CPU.

use super::{DB_NEXT, DR6_B0, DR6_BS, Rip, Want, at, report, run};
use crate::cpu;
use crate::paging::UNMAPPED;
use crate::probes::*;
use crate::report::Checks;
use crate::trap::{Fault, probe};

/// A non-canonical address (48-bit linear addresses).
pub const NON_CANONICAL: u64 = 0x8000_0000_0000;

/// Runs the checks.
pub fn run_all(c: &mut Checks) {
    let _ = run(c, "ud2", &conf_ud2, 0, Some(at(6, 0)));
    let _ = run(
        c,
        "int3",
        &conf_int3,
        0,
        Some(Want {
            vector: 3,
            error: 0,
            rip: Rip::Next,
        }),
    );
    let _ = run(c, "div-zero", &conf_div0, 0, Some(at(0, 0)));
    // The gate for vector 0x80 is not present: #NP with the IDT bit set
    // in the error code (SDM Vol. 3A §7.13, "Error Code"; §7.15,
    // "Interrupt 11").
    let _ = run(
        c,
        "int-not-present-gate",
        &conf_int80,
        0,
        Some(at(11, 0x80 << 3 | 2)),
    );
    let _ = run(
        c,
        "load-non-canonical",
        &conf_load,
        NON_CANONICAL,
        Some(at(13, 0)),
    );
    let _ = run(
        c,
        "stack-non-canonical",
        &conf_stack_noncanonical,
        0,
        Some(at(12, 0)),
    );
    let _ = run(c, "load-not-present", &conf_load, UNMAPPED, Some(at(14, 0)));
    let _ = run(
        c,
        "store-not-present",
        &conf_store,
        UNMAPPED,
        Some(at(14, 2)),
    );
    let _ = run(c, "device-not-available", &conf_nm, 0, Some(at(7, 0)));
    // SAFETY: CLTS clears CR0.TS, which the probe set and its landing
    // left set; nothing else depends on TS.
    unsafe { core::arch::asm!("clts", options(nomem, nostack)) };
    let _ = run(c, "simd-divide-by-zero", &conf_xm, 0, Some(at(19, 0)));
    restore_mxcsr();
    let r = run(c, "single-step-nop", &conf_tf_nop, 0, Some(DB_NEXT));
    bs_set(c, "single-step-nop-dr6", &r);
    // RF = 1 suppresses the breakpoint on the instruction it returns to
    // and is cleared when that instruction completes (SDM Vol. 3A
    // §19.3.1.1): a breakpoint on the next one fires.
    cpu::exec_breakpoint(conf_rf_nop.at);
    let r = probe(conf_rf_nop.entry(), 0);
    cpu::clear_debug();
    report(
        c,
        "rf-suppresses-breakpoint",
        &r,
        None,
        conf_rf_nop.at,
        conf_rf_nop.next,
    );
    cpu::exec_breakpoint(conf_rf_nop.next);
    let r = probe(conf_rf_nop.entry(), 0);
    cpu::clear_debug();
    report(
        c,
        "rf-cleared-after-nop",
        &r,
        Some(DB_NEXT),
        conf_rf_nop.at,
        conf_rf_nop.next,
    );
    b0_set(c, "rf-cleared-after-nop-dr6", &r.err());
}

fn restore_mxcsr() {
    let v: u32 = 0x1f80;
    // SAFETY: 0x1F80 is MXCSR's reset value (all exceptions masked, SDM
    // Vol. 1 §10.2.3.1); CR4.OSFXSR is set by main before any check.
    unsafe { core::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, readonly)) };
}

/// Prints whether a #DB reported a single step (DR6.BS).
pub fn bs_set(c: &mut Checks, name: &str, r: &Option<Fault>) {
    dr6_bit(c, name, r, DR6_BS, "BS");
}

/// Prints whether a #DB reported breakpoint 0 (DR6.B0).
pub fn b0_set(c: &mut Checks, name: &str, r: &Option<Fault>) {
    dr6_bit(c, name, r, DR6_B0, "B0");
}

fn dr6_bit(c: &mut Checks, name: &str, r: &Option<Fault>, bit: u64, what: &str) {
    let set = matches!(r, Some(f) if f.vector == 1 && f.dr6 & bit != 0);
    c.line(
        name,
        set,
        format_args!("DR6.{what} {}", if set { "set" } else { "clear" }),
    );
}
