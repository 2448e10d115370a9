//! Paging protections (SMEP, SMAP, NX: SDM Vol. 3A §5.6, error codes
//! §5.7) where CPUID lists them, and the canonical boundary: code whose
//! last byte is at 2^47 - 1 completes and the next fetch faults.

use super::{Rip, Want, at, report, run};
use crate::cpu;
use crate::paging::{BOUNDARY_ENTRY, LAB, UMIP_SGDT_ENTRY, WRAP_ENTRY};
use crate::probes::*;
use crate::report::Checks;
use crate::trap::{COMPAT_CS, Fault, USER_CS, USER_SS, probe, rsp0_top};

/// The ring-3 stack pointer of the user probe: in the user data page.
const USER_RSP: u64 = LAB + 0xff0;

core::arch::global_asm!(
    r#"
    .section .text.conf_user, "ax"
    /* u64 conf_to_user(u64 rip): IRETQ to ring 3 at rip, IF clear, on
       USER_RSP; it comes back only through an exception. */
    .global conf_to_user
conf_to_user:
    push {ss}
    push {rsp}
    push 2
    push {cs}
    push rdi
    iretq

    /* u64 conf_to_compat(u64 eip): a far return to compatibility mode
       (ring 0) at eip; it comes back only through an exception. */
    .global conf_to_compat
conf_to_compat:
    push {compat}
    push rdi
    retfq
"#,
    ss = const USER_SS,
    cs = const USER_CS,
    rsp = const USER_RSP,
    compat = const COMPAT_CS,
);

unsafe extern "C" {
    fn conf_to_user(rip: u64) -> u64;
    fn conf_to_compat(eip: u64) -> u64;
}

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
    umip_sgdt_ring3(c, "umip-sgdt-ring3");
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
    // The same from ring 3: the #GP switches to TSS.RSP0 and a null SS
    // (SDM Vol. 3A §7.14.4 "Stack Switching in IA-32e Mode"); the frame
    // holds ring 3's CS, SS and RSP. Under okernel the monitor delivers
    // it (its RIP is not canonical): every part of the frame is compared.
    eip_wrap(c);
    let r = probe(conf_to_user_probe, BOUNDARY_ENTRY);
    let (gp, frame) = match &r {
        Err(f) => (
            f.vector == 13
                && f.error_code == 0
                && f.rip == cpuid_at + 2
                && f.interrupted == [u64::from(USER_CS), u64::from(USER_SS), USER_RSP]
                && f.frame_top == rsp0_top()
                && f.handler_ss == 0,
            Some(f),
        ),
        Ok(_) => (false, None),
    };
    c.line(
        "canonical-boundary-cpuid-ring3",
        gp,
        format_args!(
            "{} cs=0x{:x} ss=0x{:x} rsp-user={} on-rsp0={} handler-ss=0x{:x}",
            super::Seen {
                result: &r,
                at: cpuid_at,
                next: cpuid_at + 2
            },
            frame.map_or(0, |f| f.interrupted[0]),
            frame.map_or(0, |f| f.interrupted[1]),
            frame.is_some_and(|f| f.interrupted[2] == USER_RSP),
            frame.is_some_and(|f| f.frame_top == rsp0_top()),
            frame.map_or(0xffff, |f| f.handler_ss),
        ),
    );
}

/// The same at the top of the 32-bit address space, in compatibility
/// mode: the CPUID completes at 4 GiB − 1 and EIP wraps to 0 (SDM Vol. 1
/// §3.5), where `ud2` raises #UD with the saved RIP 0 and the 32-bit CS
/// in the frame.
fn eip_wrap(c: &mut Checks) {
    let r = probe(conf_to_compat_probe, WRAP_ENTRY);
    let cs = r.as_ref().err().map_or(0, |f| f.interrupted[0]);
    let want = Want {
        vector: 6,
        error: 0,
        rip: Rip::Next,
    };
    // Bochs saves 0x1_0000_0000 here (xtask's table: its reference is not
    // the SDM's); the low 32 bits, EIP, are 0 either way.
    let wrapped = r.as_ref().err().map(|f| {
        Err(Fault {
            rip: f.rip & 0xffff_ffff,
            ..*f
        })
    });
    let ok = cs == u64::from(COMPAT_CS)
        && wrapped.is_some_and(|w| super::matches(&w, Some(want), WRAP_ENTRY + 2, 0));
    c.line(
        "eip-wraps-at-4gib-compat",
        ok,
        format_args!(
            "{} cs=0x{cs:x}",
            super::Seen {
                result: &r,
                at: WRAP_ENTRY + 2,
                next: 0
            }
        ),
    );
}

/// [`conf_to_compat`] as a probe's function.
extern "C" fn conf_to_compat_probe(eip: u64) -> u64 {
    // SAFETY: `eip` is the wrap code, mapped below 4 GiB with linear page
    // 0 holding `ud2`; the 32-bit code segment is in the GDT; the #UD it
    // ends with is caught by the probe, whose landing restores the
    // kernel's 64-bit segments and stack.
    unsafe { conf_to_compat(eip) }
}

/// [`conf_to_user`] as a probe's function.
extern "C" fn conf_to_user_probe(rip: u64) -> u64 {
    // SAFETY: `rip` is the boundary code, mapped for ring 3; the user
    // segments are in the GDT; the exception it ends with is caught by
    // the probe, whose landing restores the kernel's segments and stack.
    unsafe { conf_to_user(rip) }
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

/// SGDT at ring 3 with CR4.UMIP set raises #GP(0) at the SGDT (SDM Vol.
/// 3A §2.5, CR4.UMIP; Vol. 2B SGDT): line `name`, where CPUID lists UMIP
/// (else it says so). Run once before the descriptor tables are locked
/// (the processor's own #GP) and once after (`checks::tables`: under
/// okernel SGDT then exits and the monitor's emulation must raise the
/// same #GP). Without UMIP the store completes and the `ud2` after it
/// comes back.
pub fn umip_sgdt_ring3(c: &mut Checks, name: &str) {
    let [_, _, ecx, _] = cpu::cpuid(7, 0);
    if ecx & (1 << 2) == 0 {
        c.line(name, true, format_args!("no UMIP"));
        return;
    }
    with_cr4(CR4_UMIP, || {
        let r = probe(conf_to_user_probe, UMIP_SGDT_ENTRY);
        report(
            c,
            name,
            &r,
            Some(at(13, 0)),
            UMIP_SGDT_ENTRY,
            UMIP_SGDT_ENTRY + 5,
        );
    });
}
