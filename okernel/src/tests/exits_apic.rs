//! WRMSR of IA32_APIC_BASE and the x2APIC MSRs (`exit::apic`): no
//! relocation of the APIC page, no SMI/NMI/lowest-priority IPI through
//! the ICR, INIT and SIPI to other processors only (INIT completed, not
//! sent), and never a value the monitor's own WRMSR would fault on.

use super::exits_cpuid_msr::wrmsr;
use super::*;
use crate::bits::CPUID1_ECX_X2APIC;
use crate::bits::{APIC_BASE_BSP, APIC_BASE_EN, APIC_BASE_EXTD};
use crate::exit::apic::{self, Verdict};
use crate::hw::CpuidResult;
use crate::msrs::{
    IA32_APIC_BASE, IA32_X2APIC_EOI, IA32_X2APIC_ICR, IA32_X2APIC_SELF_IPI, IA32_X2APIC_TPR,
    X2APIC_FIRST, X2APIC_LAST,
};
use crate::policy::audit::{AuditAction, AuditKind};

/// The BSP's power-on value: enabled xAPIC at 0xFEE0_0000, BSP flag.
const XAPIC: u64 = 0xfee0_0000 | APIC_BASE_EN | APIC_BASE_BSP;
const X2APIC: u64 = XAPIC | APIC_BASE_EXTD;
const DISABLED: u64 = XAPIC & !APIC_BASE_EN;
/// This processor's x2APIC ID in the tests.
const OWN_ID: u32 = 2;

/// The APIC's vCPU in an untrusted context (`DenyAll` says 7).
fn apic_vcpu(base: u64, x2apic: bool) -> Vcpu<FakeVmcs, FakeCpu, DenyAll> {
    apic_vcpu_for(DenyAll, base, x2apic)
}

/// The APIC's vCPU in the trusted context.
fn trusted_apic_vcpu(base: u64) -> Vcpu<FakeVmcs, FakeCpu, BasePolicy> {
    apic_vcpu_for(BasePolicy, base, true)
}

fn apic_vcpu_for<P: Policy>(policy: P, base: u64, x2apic: bool) -> Vcpu<FakeVmcs, FakeCpu, P> {
    let mut v = vcpu_with(policy, entry64());
    v.cpu.set_msr(IA32_APIC_BASE, base);
    v.cpu
        .set_msr(crate::msrs::IA32_X2APIC_APICID, OWN_ID.into());
    for m in X2APIC_FIRST..=X2APIC_LAST {
        // TPR, EOI, SVR, ICR, LVT timer, SELF IPI.
        if matches!(
            m,
            IA32_X2APIC_TPR
                | IA32_X2APIC_EOI
                | 0x80f
                | IA32_X2APIC_ICR
                | 0x832
                | IA32_X2APIC_SELF_IPI
        ) {
            v.cpu.set_msr(m, 0);
        }
    }
    let ecx = if x2apic { CPUID1_ECX_X2APIC } else { 0 };
    v.cpu.set_cpuid(
        1,
        0,
        CpuidResult {
            ecx,
            ..CpuidResult::default()
        },
    );
    v
}

fn assert_denied_and_audited<P: Policy>(
    v: &Vcpu<FakeVmcs, FakeCpu, P>,
    r: Result<ExitAction, ExitError>,
    index: u32,
    value: u64,
) {
    assert_injected(v, r, GP);
    let rec = v.audit.last().copied().expect("an audit record");
    assert_eq!(rec.kind, AuditKind::MsrLock);
    assert_eq!(rec.gpa, u64::from(index));
    assert_eq!(rec.qualification, value);
    assert_eq!(rec.action, AuditAction::InjectGp);
    assert_eq!(rec.context, v.policy.context());
    assert_eq!(v.cpu.msr_writes, 0, "nothing written");
}

#[test]
fn relocating_the_apic_is_denied_and_audited() {
    // Over a monitor page, below 4 GiB, above: every other base is refused.
    for base in [0x0010_5000, 0x1000, 0xfee0_1000, 0x1_0000_0000] {
        let mut v = apic_vcpu(XAPIC, true);
        let value = base | APIC_BASE_EN | APIC_BASE_BSP;
        let r = wrmsr(&mut v, IA32_APIC_BASE, value);
        assert_denied_and_audited(&v, r, IA32_APIC_BASE, value);
        assert_eq!(v.cpu.read_msr_for_tests(IA32_APIC_BASE), XAPIC);
    }
    // Relocation combined with an otherwise valid mode change: still denied.
    let mut v = apic_vcpu(XAPIC, true);
    let value = 0x5000 | APIC_BASE_EN | APIC_BASE_EXTD | APIC_BASE_BSP;
    let r = wrmsr(&mut v, IA32_APIC_BASE, value);
    assert_denied_and_audited(&v, r, IA32_APIC_BASE, value);
}

#[test]
fn x2apic_enable_disable_and_rewrite_at_the_same_base_are_written() {
    for (from, to) in [
        (XAPIC, XAPIC),
        (XAPIC, X2APIC),
        (X2APIC, X2APIC),
        (X2APIC, DISABLED),
        (XAPIC, DISABLED),
        (DISABLED, XAPIC),
    ] {
        let mut v = apic_vcpu(from, true);
        let r = wrmsr(&mut v, IA32_APIC_BASE, to);
        assert_advanced(&v, r, 2);
        assert_eq!(
            v.cpu.read_msr_for_tests(IA32_APIC_BASE),
            to,
            "{from:#x} -> {to:#x}"
        );
        assert!(v.audit.last().is_none());
    }
}

#[test]
fn invalid_transitions_and_reserved_bits_raise_gp_without_audit() {
    for (from, to, x2) in [
        (X2APIC, XAPIC, true),                    // x2APIC -> xAPIC: invalid
        (XAPIC, DISABLED | APIC_BASE_EXTD, true), // EN = 0, EXTD = 1: invalid
        (DISABLED, X2APIC, true),                 // disabled -> x2APIC: refused
        (XAPIC, X2APIC, false),                   // no x2APIC on this CPU
        (XAPIC, XAPIC | 1, true),                 // reserved bit 0
        (XAPIC, XAPIC & !APIC_BASE_BSP, true),    // BSP flag
        (XAPIC, XAPIC | (1 << 9), true),          // reserved bit 9
    ] {
        let mut v = apic_vcpu(from, x2);
        let r = wrmsr(&mut v, IA32_APIC_BASE, to);
        assert_injected(&v, r, GP);
        assert!(v.audit.last().is_none(), "{from:#x} -> {to:#x}");
        assert_eq!(v.cpu.msr_writes, 0);
    }
}

#[test]
fn every_mode_transition_is_judged_as_the_sdm_draws_it() {
    let modes = [DISABLED, XAPIC, DISABLED | APIC_BASE_EXTD, X2APIC];
    // Rows: from; columns: to (disabled, xAPIC, invalid, x2APIC).
    let allowed = [
        [true, true, false, false],
        [true, true, false, true],
        [false, false, false, false],
        [true, false, false, true],
    ];
    for (i, from) in modes.iter().enumerate() {
        for (j, to) in modes.iter().enumerate() {
            let want = if allowed[i][j] {
                Verdict::Write
            } else {
                Verdict::Fault
            };
            assert_eq!(apic::apic_base_write(*from, *to, true), want, "{i} -> {j}");
        }
    }
}

#[test]
fn x2apic_msrs_fault_outside_x2apic_mode() {
    for base in [XAPIC, DISABLED] {
        let mut v = apic_vcpu(base, true);
        let r = wrmsr(&mut v, IA32_X2APIC_ICR, 0x4_0000 | 0x30);
        assert_injected(&v, r, GP);
        assert!(v.audit.last().is_none());
        assert_eq!(v.cpu.msr_writes, 0);
    }
}

#[test]
fn icr_sends_fixed_ipis_only() {
    let mut v = apic_vcpu(X2APIC, true);
    // Fixed, vector 0x30, shorthand self.
    let r = wrmsr(&mut v, IA32_X2APIC_ICR, 0x4_0030);
    assert_advanced(&v, r, 2);
    assert_eq!(v.cpu.read_msr_for_tests(IA32_X2APIC_ICR), 0x4_0030);
    // Lowest priority, SMI, NMI (and the reserved modes 3 and 7), to
    // self and to others: refused and audited.
    for mode in [1u64, 2, 3, 4, 7] {
        for shorthand in [0u64, 1, 2, 3] {
            let mut v = apic_vcpu(X2APIC, true);
            let value = (shorthand << 18) | (mode << 8) | 0x4000;
            let r = wrmsr(&mut v, IA32_X2APIC_ICR, value);
            assert_denied_and_audited(&v, r, IA32_X2APIC_ICR, value);
        }
    }
    // Reserved bits (delivery status 12, 13, 16, 20): #GP, nothing audited.
    for bit in [12, 13, 16, 17, 20, 31] {
        let mut v = apic_vcpu(X2APIC, true);
        let r = wrmsr(&mut v, IA32_X2APIC_ICR, (1 << bit) | 0x30);
        assert_injected(&v, r, GP);
        assert!(v.audit.last().is_none(), "bit {bit}");
    }
}

const INIT: u64 = 0b101 << 8 | 0x4000;
const SIPI: u64 = 0b110 << 8 | 0x08;
const ALL_BUT_SELF: u64 = 0b11 << 18;

#[test]
fn sipi_to_other_processors_is_sent_init_to_them_completed_unsent() {
    let others = [
        ALL_BUT_SELF,
        // A physical destination that is not this processor.
        3 << 32,
        0,
    ];
    for dest in others {
        let mut v = trusted_apic_vcpu(X2APIC);
        v.cpu.set_msr(IA32_X2APIC_ICR, 0x1234);
        let r = wrmsr(&mut v, IA32_X2APIC_ICR, dest | INIT);
        assert_advanced(&v, r, 2);
        assert_eq!(
            v.cpu.read_msr_for_tests(IA32_X2APIC_ICR),
            0x1234,
            "INIT not sent ({dest:#x})"
        );
        let mut v = trusted_apic_vcpu(X2APIC);
        let r = wrmsr(&mut v, IA32_X2APIC_ICR, dest | SIPI);
        assert_advanced(&v, r, 2);
        assert_eq!(v.cpu.read_msr_for_tests(IA32_X2APIC_ICR), dest | SIPI);
        assert!(v.audit.last().is_none());
    }
}

#[test]
fn init_and_sipi_that_reach_this_processor_are_refused_and_audited() {
    for mode in [INIT, SIPI] {
        for dest in [
            // Self, all including self, this processor's ID, broadcast,
            // a logical destination (may name this processor).
            0b01 << 18,
            0b10 << 18,
            u64::from(OWN_ID) << 32,
            u64::from(u32::MAX) << 32,
            3 << 32 | 1 << 11,
        ] {
            let mut v = trusted_apic_vcpu(X2APIC);
            let r = wrmsr(&mut v, IA32_X2APIC_ICR, dest | mode);
            assert_denied_and_audited(&v, r, IA32_X2APIC_ICR, dest | mode);
        }
    }
}

#[test]
fn an_untrusted_context_sends_no_init_or_sipi() {
    for mode in [INIT, SIPI] {
        let mut v = apic_vcpu(X2APIC, true);
        let value = ALL_BUT_SELF | mode;
        let r = wrmsr(&mut v, IA32_X2APIC_ICR, value);
        assert_denied_and_audited(&v, r, IA32_X2APIC_ICR, value);
        assert_eq!(
            apic::x2apic_write(
                IA32_X2APIC_ICR,
                value,
                X2APIC,
                apic::IcrWriter {
                    trusted: true,
                    own_id: OWN_ID
                }
            ),
            if mode == INIT {
                Verdict::Drop
            } else {
                Verdict::Write
            },
            "the same write from the trusted context goes through"
        );
    }
}

#[test]
fn tpr_eoi_and_self_ipi_are_written_other_registers_refused() {
    for (index, value) in [
        (IA32_X2APIC_TPR, 0x20),
        (IA32_X2APIC_EOI, 0),
        (IA32_X2APIC_SELF_IPI, 0x31),
    ] {
        let mut v = apic_vcpu(X2APIC, true);
        let r = wrmsr(&mut v, index, value);
        assert_advanced(&v, r, 2);
        assert_eq!(v.cpu.read_msr_for_tests(index), value);
    }
    for (index, value) in [
        (IA32_X2APIC_TPR, 0x100),
        (IA32_X2APIC_EOI, 1),
        (IA32_X2APIC_SELF_IPI, 0x100),
    ] {
        let mut v = apic_vcpu(X2APIC, true);
        let r = wrmsr(&mut v, index, value);
        assert_injected(&v, r, GP);
        assert!(v.audit.last().is_none());
    }
    // SVR, LVT timer, a read-only register, an undefined one: not
    // mediated, refused and audited.
    for index in [0x80f, 0x832, 0x802, 0x8ff] {
        let mut v = apic_vcpu(X2APIC, true);
        let r = wrmsr(&mut v, index, 0x1ff);
        assert_denied_and_audited(&v, r, index, 0x1ff);
    }
}
