//! Instructions okernel intercepts (CPUID, RDMSR/WRMSR, XSETBV, MOV CR,
//! the VMX instructions) and the RIP advance after them: under okernel
//! the monitor emulates or refuses each, and the guest must see what the
//! processor itself gives bare.

use super::exceptions::{b0_set, bs_set};
use super::{DB_NEXT, at, report, run};
use crate::cpu;
use crate::probes::*;
use crate::report::Checks;
use crate::trap::probe;

/// MSR indexes no x86 processor implements: one inside the ranges the
/// VMX MSR bitmaps cover (SDM Vol. 3C §25.6.9), one outside them (RDMSR
/// and WRMSR of it always exit).
const UNKNOWN_MSRS: [(&str, u64); 2] = [
    ("in-bitmap-range", 0x1234),
    ("outside-bitmaps", 0x8000_1234),
];
const IA32_FEATURE_CONTROL: u64 = 0x3a;
const IA32_APIC_BASE: u64 = 0x1b;
const IA32_VMX_BASIC: u64 = 0x480;
const IA32_EFER: u64 = 0xc000_0080;
const IA32_PAT: u64 = 0x277;
const IA32_MISC_ENABLE: u64 = 0x1a0;
/// CPUID.1:ECX.VMX (bit 5) and the hypervisor-present bit (31).
pub const CPUID1_ECX_VMX: u32 = 1 << 5;
/// CPUID.1:ECX bit 31.
pub const CPUID1_ECX_HV: u32 = 1 << 31;

/// Runs the checks.
pub fn run_all(c: &mut Checks) {
    cpuid_leaves(c);
    // The RIP advance after an exiting instruction, seen through
    // single-step: the #DB must come after exactly that instruction (SDM
    // Vol. 3A §19.2.4 / §19.3.1.4: a single-step trap after each
    // instruction that completes with TF = 1).
    for (name, d) in [
        ("single-step-cpuid", &conf_tf_cpuid),
        ("single-step-cpuid-6-prefixes", &conf_tf_cpuid_prefixed),
        ("single-step-cpuid-15-bytes", &conf_tf_cpuid_15),
    ] {
        let r = run(c, name, d, 0, Some(DB_NEXT));
        let mut dr6 = crate::report::name_buf();
        let _ = core::fmt::Write::write_fmt(&mut dr6, format_args!("{name}-dr6"));
        bs_set(c, dr6.text(), &r);
    }
    if cpu::cr4() & crate::CR4_OSXSAVE != 0 {
        let _ = run(
            c,
            "single-step-xsetbv",
            &conf_tf_xsetbv,
            cpu::xcr0(),
            Some(DB_NEXT),
        );
    }
    let _ = run(c, "single-step-wbinvd", &conf_tf_wbinvd, 0, Some(DB_NEXT));
    let _ = run(
        c,
        "single-step-in-dx-1-byte",
        &conf_tf_in_dx,
        0,
        Some(DB_NEXT),
    );
    let _ = run(
        c,
        "single-step-in-imm-2-bytes",
        &conf_tf_in_imm,
        0,
        Some(DB_NEXT),
    );
    // A faulting instruction owes no single step: the fault is delivered
    // with TF set in the pushed RFLAGS (SDM Vol. 3A §19.3.1.4), the #DB
    // never comes.
    let _ = run(
        c,
        "single-step-vmxoff-ud",
        &conf_tf_vmxoff,
        0,
        Some(at(6, 0)),
    );
    if cpu::cr4() & crate::CR4_OSXSAVE != 0 {
        let _ = run(
            c,
            "single-step-xsetbv-gp",
            &conf_tf_xsetbv_bad,
            0,
            Some(at(13, 0)),
        );
    }
    let _ = run(c, "cpuid-16-bytes", &conf_cpuid_16, 0, Some(at(13, 0)));
    cpu::exec_breakpoint(conf_rf_cpuid.next);
    let r = probe(conf_rf_cpuid.entry(), 0);
    cpu::clear_debug();
    report(
        c,
        "rf-cleared-after-cpuid",
        &r,
        Some(DB_NEXT),
        conf_rf_cpuid.at,
        conf_rf_cpuid.next,
    );
    b0_set(c, "rf-cleared-after-cpuid-dr6", &r.err());

    // Hardware raises #GP(0) for an MSR it does not implement (SDM Vol. 4
    // §2.1; RDMSR/WRMSR "#GP(0) if ECX specifies a reserved or
    // unimplemented MSR address"). The conformance case runs Bochs with
    // `ignore_bad_msrs=0`, so the bare reference raises it too.
    for (range, msr) in UNKNOWN_MSRS {
        for (op, d) in [("rdmsr", &conf_rdmsr), ("wrmsr", &conf_wrmsr)] {
            let mut name = crate::report::name_buf();
            let _ = core::fmt::Write::write_fmt(&mut name, format_args!("{op}-unknown-{range}"));
            let _ = run(c, name.text(), d, msr, Some(at(13, 0)));
        }
    }
    let _ = run(
        c,
        "wrmsr-vmx-basic-read-only",
        &conf_wrmsr,
        IA32_VMX_BASIC,
        Some(at(13, 0)),
    );
    for (name, msr) in [
        ("rdmsr-apic-base", IA32_APIC_BASE),
        ("rdmsr-efer", IA32_EFER),
        ("rdmsr-pat", IA32_PAT),
        ("rdmsr-misc-enable", IA32_MISC_ENABLE),
        ("rdmsr-feature-control", IA32_FEATURE_CONTROL),
        ("rdmsr-vmx-basic", IA32_VMX_BASIC),
    ] {
        // Values as this CPU has them: reported, the comparison judges.
        let r = probe(conf_rdmsr.entry(), msr);
        let seen = super::Seen {
            result: &r,
            at: conf_rdmsr.at,
            next: conf_rdmsr.next,
        };
        match r {
            Ok(v) => c.line(name, true, format_args!("0x{v:x}")),
            Err(_) => c.line(name, true, format_args!("{seen}")),
        }
    }
    let _ = run(c, "rdpmc-bad-counter", &conf_rdpmc, 0x1234, Some(at(13, 0)));

    xsetbv(c);
    let _ = run(
        c,
        "mov-cr4-reserved-bit-40",
        &conf_cr4_or,
        1 << 40,
        Some(at(13, 0)),
    );
    let _ = run(
        c,
        "mov-cr0-reserved-bit-32",
        &conf_cr0_or,
        1 << 32,
        Some(at(13, 0)),
    );
    let _ = run(
        c,
        "mov-cr0-pg-without-pe",
        &conf_cr0_and,
        !1,
        Some(at(13, 0)),
    );
    let _ = run(
        c,
        "mov-cr0-clear-pg-in-long-mode",
        &conf_cr0_and,
        !(1 << 31),
        Some(at(13, 0)),
    );
    for (name, d) in [
        ("vmxon", &conf_vmxon),
        ("vmxoff", &conf_vmxoff),
        ("vmptrst", &conf_vmptrst),
        ("vmread", &conf_vmread),
        ("vmlaunch", &conf_vmlaunch),
    ] {
        // CR4.VMXE is clear as this kernel sees it (bare: really; under
        // okernel: the read shadow): #UD (SDM Vol. 3C §31.3, VMXON).
        let _ = run(c, name, d, 0, Some(at(6, 0)));
    }
}

fn cpuid_leaves(c: &mut Checks) {
    let [max, b, cx, d] = cpu::cpuid(0, 0);
    let vendor = |r: u32| {
        r.to_le_bytes()
            .map(|b| if b.is_ascii_graphic() { b } else { b'?' })
    };
    let (vb, vd, vc) = (vendor(b), vendor(d), vendor(cx));
    c.line(
        "cpuid-0",
        true,
        format_args!(
            "max=0x{max:x} vendor={}{}{}",
            core::str::from_utf8(&vb).unwrap_or("?"),
            core::str::from_utf8(&vd).unwrap_or("?"),
            core::str::from_utf8(&vc).unwrap_or("?")
        ),
    );
    let [a, b, ecx, d] = cpu::cpuid(1, 0);
    let ecx_rest = ecx & !(CPUID1_ECX_VMX | CPUID1_ECX_HV);
    c.line(
        "cpuid-1",
        true,
        format_args!("eax=0x{a:x} ebx=0x{b:x} ecx-but-vmx-hv=0x{ecx_rest:x} edx=0x{d:x}"),
    );
    c.line(
        "cpuid-1-vmx",
        true,
        format_args!("{}", u8::from(ecx & CPUID1_ECX_VMX != 0)),
    );
    c.line(
        "cpuid-1-hypervisor",
        true,
        format_args!("{}", u8::from(ecx & CPUID1_ECX_HV != 0)),
    );
    for (name, leaf, sub) in [
        ("cpuid-7-0", 7, 0),
        ("cpuid-d-0", 0xd, 0),
        ("cpuid-d-1", 0xd, 1),
        ("cpuid-80000000", 0x8000_0000, 0),
        ("cpuid-80000001", 0x8000_0001, 0),
        ("cpuid-80000008", 0x8000_0008, 0),
        ("cpuid-40000000", 0x4000_0000, 0),
    ] {
        let [a, b, cx, d] = cpu::cpuid(leaf, sub);
        c.line(
            name,
            true,
            format_args!("eax=0x{a:x} ebx=0x{b:x} ecx=0x{cx:x} edx=0x{d:x}"),
        );
    }
}

/// XSETBV: the #GP(0) cases of SDM Vol. 2D (XSETBV, "Protected Mode
/// Exceptions") and a legal value read back.
fn xsetbv(c: &mut Checks) {
    if cpu::cr4() & crate::CR4_OSXSAVE == 0 {
        c.line("xsetbv", true, format_args!("no XSAVE"));
        return;
    }
    let good = cpu::xcr0();
    let _ = run(c, "xsetbv-x87-clear", &conf_xsetbv, 0, Some(at(13, 0)));
    let _ = run(
        c,
        "xsetbv-avx-without-sse",
        &conf_xsetbv,
        0b101,
        Some(at(13, 0)),
    );
    let _ = run(
        c,
        "xsetbv-xcr1",
        &conf_xsetbv,
        1 << 32 | 0b11,
        Some(at(13, 0)),
    );
    let _ = run(c, "xsetbv-legal", &conf_xsetbv, good, None);
    c.line(
        "xgetbv-after-xsetbv",
        cpu::xcr0() == good,
        format_args!("xcr0=0x{:x}", cpu::xcr0()),
    );
}
