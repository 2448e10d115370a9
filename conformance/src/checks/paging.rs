//! Paging protections (SMEP, SMAP, NX: SDM Vol. 3A §5.6, error codes
//! §5.7) where CPUID lists them, and the canonical boundary: code whose
//! last byte is at 2^47 - 1 completes and the next fetch faults.

use super::{at, report, run};
use crate::cpu;
use crate::paging::{BOUNDARY_ENTRY, LAB};
use crate::probes::*;
use crate::report::Checks;
use crate::trap::probe;

const CR4_UMIP: u64 = 1 << 11;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
/// #PF error code: present, instruction fetch.
const PF_P_FETCH: u64 = 0x11;
/// #PF error code: present, read, supervisor.
const PF_P: u64 = 0x1;

/// Runs the checks.
pub fn run_all(c: &mut Checks) {
    let [_, ebx, ecx, _] = cpu::cpuid(7, 0);
    let user_code = LAB + 0x1000;
    let nx_code = LAB + 0x2000;
    if ebx & (1 << 7) != 0 {
        with_cr4(CR4_SMEP, || {
            let r = probe(conf_call.entry(), user_code);
            report(
                c,
                "smep-fetch-user-page",
                &r,
                Some(at(14, PF_P_FETCH)),
                user_code,
                0,
            );
        });
    } else {
        c.line("smep-fetch-user-page", true, format_args!("no SMEP"));
    }
    if ebx & (1 << 20) != 0 {
        with_cr4(CR4_SMAP, || {
            let _ = run(
                c,
                "smap-read-user-page",
                &conf_load,
                LAB,
                Some(at(14, PF_P)),
            );
            let _ = run(c, "smap-read-user-page-ac", &conf_load_stac, LAB, None);
        });
    } else {
        c.line("smap-read-user-page", true, format_args!("no SMAP"));
    }
    let r = probe(conf_call.entry(), nx_code);
    report(c, "nx-fetch", &r, Some(at(14, PF_P_FETCH)), nx_code, 0);
    c.line(
        "umip-la57-listed",
        true,
        format_args!(
            "umip={} la57={} cr4.umip={}",
            u8::from(ecx & (1 << 2) != 0),
            u8::from(ecx & (1 << 16) != 0),
            u8::from(cpu::cr4() & CR4_UMIP != 0)
        ),
    );
    // `xor eax, eax; cpuid` ends at 2^47 - 1: the CPUID completes, the
    // fetch at 2^47 raises #GP(0) (SDM Vol. 1 §3.3.7.1). Which RIP the
    // frame holds is the line's content.
    let cpuid_at = BOUNDARY_ENTRY + 2;
    let r = probe(conf_call.entry(), BOUNDARY_ENTRY);
    let gp = matches!(r, Err(f) if f.vector == 13 && f.error_code == 0);
    c.line(
        "canonical-boundary-cpuid",
        gp,
        format_args!(
            "{}",
            super::Seen {
                result: &r,
                at: cpuid_at,
                next: cpuid_at + 2
            }
        ),
    );
}

/// Runs `f` with `bits` set in CR4, then clears them again.
fn with_cr4(bits: u64, f: impl FnOnce()) {
    let old = cpu::cr4();
    // SAFETY: SMEP and SMAP only restrict supervisor accesses to user
    // pages, which this kernel makes only inside the probes of `f`.
    unsafe { cpu::set_cr4(old | bits) };
    f();
    // SAFETY: restores the value read above.
    unsafe { cpu::set_cr4(old) };
}
