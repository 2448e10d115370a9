//! `scenario=smp`, run on two or more processors: the attack
//! `ap-start-outside-vmx`. The guest starts the other processors the way
//! an OS does — INIT, SIPI, SIPI to "all excluding self" (after an NMI,
//! which a parked processor must survive) through its
//! local APIC, whose interrupt command register okernel does not
//! intercept — at real-mode start-up code of its own below 1 MiB. That
//! code records that it ran and what CPUID.1:ECX says there (VMX
//! visible: no monitor hides it). A processor running it is outside VMX:
//! no EPT, no pinned control register, no MSR lock applies to it
//! (invariant 1).
//!
//! Under okernel every other processor was parked in VMX root before the
//! guest started (`okernel::launch::park`): INIT is blocked there, so
//! nothing runs the code and the attack is blocked. The same image with
//! `mode=direct` (no monitor, no parking) is the negative control: the
//! processor runs the code, so "blocked" means the parking held. The
//! INIT-SIPI writes are not intercepted, so there is no audit record
//! (that needs APIC-access virtualization: issue 17).

use crate::report::Checks;
use okernel_abi::boot::{EntryMode, GuestMemoryKind, MemoryRegion};

/// The page the start-up code is copied to (vector 0x08).
const PAGE: u64 = 0x8000;
/// Where in the page the code writes [`RAN`], then CPUID.1:ECX.
const MARK: u64 = 0x800;
const RAN: u32 = 0x5041_5241;

/// Real-mode code (CS = page, IP = 0): DS = CS; EAX = 1; CPUID;
/// [0x804] = ECX; [0x800] = RAN; then CLI; HLT forever.
const START_UP: [u8; 30] = {
    let r = RAN.to_le_bytes();
    [
        0x8c, 0xc8, // mov ax, cs
        0x8e, 0xd8, // mov ds, ax
        0x66, 0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
        0x0f, 0xa2, // cpuid
        0x66, 0x89, 0x0e, 0x04, 0x08, // mov [0x804], ecx
        0x66, 0xc7, 0x06, 0x00, 0x08, r[0], r[1], r[2], r[3], // mov dword [0x800], RAN
        0xfa, // cli
        0xf4, // hlt
        0xeb, 0xfd, // jmp back to hlt
    ]
};

/// xAPIC interrupt command register (SDM Vol. 3A §11.6.1): all
/// excluding self, level assert, INIT or start-up.
const ICR_LOW: u64 = 0x300;
/// The version register: bits 7:0 the version, 0x1X for an integrated
/// APIC (SDM Vol. 3A §11.4.8).
const VERSION: u64 = 0x30;
const ICR_HIGH: u64 = 0x310;
const NMI: u32 = 0b11 << 18 | 1 << 14 | 0b100 << 8;
const INIT: u32 = 0b11 << 18 | 1 << 14 | 0b101 << 8;
const SIPI: u32 = 0b11 << 18 | 1 << 14 | 0b110 << 8;
const PENDING: u32 = 1 << 12;

/// How long the guest waits for the code to run, in TSC ticks (Bochs:
/// emulated instructions; one emulated second at the runs' rate).
const WAIT: u64 = 20_000_000;

fn ticks() -> u64 {
    // SAFETY: RDTSC has no side effect and does not exit.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn wait(n: u64) {
    let t = ticks();
    while ticks().wrapping_sub(t) < n {
        core::hint::spin_loop();
    }
}

/// Writes the ICR and waits (bounded) until the APIC has sent it;
/// whether it did.
fn send(apic: u64, low: u32) -> bool {
    // SAFETY: the local APIC's page, identity-mapped by the hand-off page
    // tables (4 GiB) and, under okernel, by the base view's MMIO map.
    unsafe {
        core::ptr::write_volatile((apic + ICR_HIGH) as *mut u32, 0);
        core::ptr::write_volatile((apic + ICR_LOW) as *mut u32, low);
        for _ in 0..1_000_000 {
            if core::ptr::read_volatile((apic + ICR_LOW) as *const u32) & PENDING == 0 {
                return true;
            }
        }
    }
    false
}

/// Runs the attack and reports it.
pub fn run(checks: &mut Checks, entry: EntryMode, map: &[MemoryRegion]) {
    let usable = map.iter().any(|r| {
        r.kind == GuestMemoryKind::Usable as u32
            && r.base <= PAGE
            && PAGE + 0x1000 <= r.base + r.length
    });
    if !usable {
        checks.check(
            "attack-ap-start-outside-vmx",
            1,
            false,
            format_args!("page {PAGE:#x} is not usable RAM in the hand-off map"),
        );
        return;
    }
    let code = PAGE as *mut u8;
    // SAFETY: usable guest RAM below 1 MiB (checked above), identity-mapped
    // by the hand-off tables, used by nothing else of this kernel.
    unsafe {
        core::ptr::write_bytes(code, 0, 0x1000);
        core::ptr::copy_nonoverlapping(START_UP.as_ptr(), code, START_UP.len());
    }
    let mark = (PAGE + MARK) as *const u32;
    let apic = crate::arch::cpu::rdmsr(crate::arch::cpu::IA32_APIC_BASE)
        & crate::arch::cpu::APIC_BASE_ADDRESS;
    let vector = (PAGE >> 12) as u32;
    // A positive control: the APIC answers here (a write to plain or
    // unmapped memory would also read back "not pending", and "blocked"
    // would then prove nothing).
    // SAFETY: as in `send`; reading the version register has no effect.
    let version = unsafe { core::ptr::read_volatile((apic + VERSION) as *const u32) };
    let apic_there = (0x10..=0x1f).contains(&(version & 0xff));
    // An NMI first: a parked processor must take it and halt again (its
    // IDT returns from NMIs), not stop the machine.
    let sent = send(apic, NMI) && send(apic, INIT) && {
        wait(200_000);
        send(apic, SIPI | vector) && {
            wait(20_000);
            send(apic, SIPI | vector)
        }
    };
    let start = ticks();
    let ran = loop {
        // SAFETY: the page above; another processor may write it, hence
        // the volatile read.
        let v = unsafe { core::ptr::read_volatile(mark) };
        if v == RAN || ticks().wrapping_sub(start) > WAIT {
            break v == RAN;
        }
        core::hint::spin_loop();
    };
    // SAFETY: as above.
    let ecx = unsafe { core::ptr::read_volatile(mark.add(1)) };
    let blocked = !ran;
    let (mode, expected) = match entry {
        EntryMode::NonRoot => ("protected", "blocked"),
        EntryMode::Direct => ("no-monitor", "succeeded"),
    };
    let ok = apic_there && sent && blocked == (entry == EntryMode::NonRoot);
    let mut what = crate::report::Buf::new();
    if ran {
        what.set(format_args!(
            "another processor ran the guest's code (its CPUID.1:ECX {ecx:#x}: VMX {})",
            if ecx & (1 << 5) != 0 {
                "visible"
            } else {
                "hidden"
            }
        ));
    } else {
        what.set(format_args!("no processor ran it within {WAIT} TSC ticks"));
    }
    checks.attack(
        "ap-start-outside-vmx",
        1,
        ok,
        format_args!(
            "local APIC version {version:#x}{}; NMI, INIT, SIPI, SIPI to all but self at vector {vector:#x}: {}; {}",
            if apic_there {
                ""
            } else {
                " (no APIC answers there)"
            },
            if sent {
                "sent"
            } else {
                "the APIC did not send it"
            },
            what.as_str()
        ),
        mode,
        expected,
        blocked,
        format_args!("none (ICR writes are not intercepted)"),
    );
}
