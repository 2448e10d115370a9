//! Every named capability refusal and warning, with fake CPUID/MSR values.

use crate::check::{VmxUnavailable, VmxWarning, enable_feature_control, probe};
use crate::hw::CpuidResult;
use crate::hw::fake::FakeCpu;
use crate::msrs;
use crate::vmx::capability::feature_control;
use crate::vmx::controls::{
    ControlGroup, EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased,
};

fn refuse(cpu: &mut FakeCpu) -> VmxUnavailable {
    probe(cpu).expect_err("the probe must refuse")
}

/// Clears allowed-1 bits of a capability MSR.
fn disallow(cpu: &mut FakeCpu, m: u32, bits: u32) {
    let v = cpu.read_msr_for_tests(m);
    cpu.set_msr(m, v & !(u64::from(bits) << 32));
}

#[test]
fn bochs_like_cpu_passes_with_expected_controls() {
    let mut cpu = FakeCpu::vmx_capable();
    let caps = probe(&mut cpu).unwrap();
    assert!(caps.primary.contains(
        PrimaryProcBased::USE_MSR_BITMAPS
            | PrimaryProcBased::USE_IO_BITMAPS
            | PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS
    ));
    // TRUE controls: the default-1 CR3-load/store exiting bits are cleared.
    assert!(
        !caps
            .primary
            .intersects(PrimaryProcBased::CR3_LOAD_EXITING | PrimaryProcBased::CR3_STORE_EXITING)
    );
    // Nothing on the guest's hot paths exits (port I/O only at the ports
    // of the I/O bitmaps).
    assert!(!caps.primary.intersects(
        PrimaryProcBased::HLT_EXITING
            | PrimaryProcBased::UNCONDITIONAL_IO_EXITING
            | PrimaryProcBased::RDTSC_EXITING
            | PrimaryProcBased::INVLPG_EXITING
            | PrimaryProcBased::MOV_DR_EXITING
    ));
    assert!(
        !caps
            .pin
            .intersects(PinBased::EXTERNAL_INTERRUPT_EXITING | PinBased::NMI_EXITING)
    );
    assert!(caps.secondary.contains(
        SecondaryProcBased::ENABLE_EPT
            | SecondaryProcBased::UNRESTRICTED_GUEST
            | SecondaryProcBased::ENABLE_VPID
            | SecondaryProcBased::ENABLE_RDTSCP
            | SecondaryProcBased::ENABLE_INVPCID
    ));
    assert!(!caps.secondary.contains(SecondaryProcBased::WBINVD_EXITING));
    assert!(
        caps.exit
            .contains(ExitControls::HOST_ADDRESS_SPACE_SIZE | ExitControls::LOAD_EFER)
    );
    assert!(
        !caps
            .exit
            .contains(ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT)
    );
    assert!(caps.entry.contains(EntryControls::LOAD_EFER));
    assert!(
        !caps.entry.contains(EntryControls::IA32E_MODE_GUEST),
        "added per guest mode"
    );
    assert_eq!(caps.basic.revision_id(), 4);
    assert_eq!(caps.warnings.iter().count(), 0);
}

#[test]
fn unlocked_feature_control_is_locked_with_vmx_enabled() {
    let mut cpu = FakeCpu::vmx_capable();
    cpu.set_msr(msrs::IA32_FEATURE_CONTROL, 0);
    probe(&mut cpu).unwrap();
    assert_eq!(
        cpu.read_msr_for_tests(msrs::IA32_FEATURE_CONTROL),
        feature_control::LOCK | feature_control::VMX_OUTSIDE_SMX
    );
}

#[test]
fn locked_feature_control_with_vmx_enabled_is_left_alone() {
    let mut cpu = FakeCpu::vmx_capable();
    cpu.set_msr(msrs::IA32_FEATURE_CONTROL, 0x5);
    enable_feature_control(&mut cpu).unwrap();
    assert_eq!(cpu.msr_writes, 0);
}

#[test]
fn no_vmx_in_cpuid() {
    let mut cpu = FakeCpu::vmx_capable();
    let mut leaf1 = cpu.cpuid_for_tests(1);
    leaf1.ecx &= !(1 << 5);
    cpu.set_cpuid(1, 0, leaf1);
    // Without VMX the capability MSRs do not exist: the probe must stop
    // before touching them (the fake panics on a missing MSR).
    for m in msrs::IA32_VMX_BASIC..=msrs::IA32_VMX_VMFUNC {
        cpu.remove_msr(m);
    }
    cpu.remove_msr(msrs::IA32_FEATURE_CONTROL);
    let e = refuse(&mut cpu);
    assert_eq!(e, VmxUnavailable::NoVmx);
    assert_eq!(e.to_string(), "CPUID.1:ECX.VMX=0");
}

#[test]
fn no_cpuid_leaf_1() {
    let mut cpu = FakeCpu::vmx_capable();
    cpu.set_cpuid(0, 0, CpuidResult::default());
    assert_eq!(refuse(&mut cpu), VmxUnavailable::NoVmx);
}

#[test]
fn feature_control_locked_without_vmx() {
    let mut cpu = FakeCpu::vmx_capable();
    cpu.set_msr(
        msrs::IA32_FEATURE_CONTROL,
        feature_control::LOCK | feature_control::VMX_INSIDE_SMX,
    );
    let e = refuse(&mut cpu);
    assert_eq!(e, VmxUnavailable::FeatureControlLocked);
    assert_eq!(
        e.to_string(),
        "IA32_FEATURE_CONTROL locked with VMX disabled outside SMX"
    );
    assert_eq!(cpu.msr_writes, 0, "a locked MSR is never written");
}

#[test]
fn no_true_controls() {
    let mut cpu = FakeCpu::vmx_capable();
    let basic = cpu.read_msr_for_tests(msrs::IA32_VMX_BASIC);
    cpu.set_msr(msrs::IA32_VMX_BASIC, basic & !(1 << 55));
    for m in msrs::IA32_VMX_TRUE_PINBASED_CTLS..=msrs::IA32_VMX_TRUE_ENTRY_CTLS {
        cpu.remove_msr(m);
    }
    let e = refuse(&mut cpu);
    assert_eq!(e, VmxUnavailable::NoTrueControls);
    assert_eq!(e.to_string(), "true VMX controls not supported");
}

#[test]
fn vmcs_memory_type_not_write_back() {
    let mut cpu = FakeCpu::vmx_capable();
    let basic = cpu.read_msr_for_tests(msrs::IA32_VMX_BASIC);
    cpu.set_msr(msrs::IA32_VMX_BASIC, basic & !(0xf << 50));
    let e = refuse(&mut cpu);
    assert_eq!(e, VmxUnavailable::VmcsMemoryType(0));
    assert_eq!(e.to_string(), "VMCS memory type 0 is not write-back");
}

#[test]
fn vmcs_region_too_large() {
    let mut cpu = FakeCpu::vmx_capable();
    let basic = cpu.read_msr_for_tests(msrs::IA32_VMX_BASIC);
    cpu.set_msr(
        msrs::IA32_VMX_BASIC,
        (basic & !(0x1fff << 32)) | (0x1800 << 32),
    );
    assert_eq!(refuse(&mut cpu), VmxUnavailable::RegionTooLarge(0x1800));
}

#[test]
fn no_secondary_controls() {
    let mut cpu = FakeCpu::vmx_capable();
    disallow(
        &mut cpu,
        msrs::IA32_VMX_TRUE_PROCBASED_CTLS,
        PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS.bits(),
    );
    // IA32_VMX_PROCBASED_CTLS2 does not exist then: must not be read.
    cpu.remove_msr(msrs::IA32_VMX_PROCBASED_CTLS2);
    cpu.remove_msr(msrs::IA32_VMX_EPT_VPID_CAP);
    let e = refuse(&mut cpu);
    assert_eq!(e, VmxUnavailable::NoSecondaryControls);
    assert_eq!(
        e.to_string(),
        "secondary processor-based VM-execution controls not supported"
    );
}

#[test]
fn no_msr_bitmaps() {
    let mut cpu = FakeCpu::vmx_capable();
    disallow(
        &mut cpu,
        msrs::IA32_VMX_TRUE_PROCBASED_CTLS,
        PrimaryProcBased::USE_MSR_BITMAPS.bits(),
    );
    let e = refuse(&mut cpu);
    assert_eq!(e, VmxUnavailable::NoMsrBitmaps);
    assert_eq!(e.to_string(), "MSR bitmaps not supported");
}

#[test]
fn no_ept() {
    let mut cpu = FakeCpu::vmx_capable();
    disallow(
        &mut cpu,
        msrs::IA32_VMX_PROCBASED_CTLS2,
        SecondaryProcBased::ENABLE_EPT.bits(),
    );
    cpu.remove_msr(msrs::IA32_VMX_EPT_VPID_CAP);
    let e = refuse(&mut cpu);
    assert_eq!(e, VmxUnavailable::NoEpt);
    assert_eq!(e.to_string(), "EPT not supported");
}

#[test]
fn no_unrestricted_guest() {
    let mut cpu = FakeCpu::vmx_capable();
    disallow(
        &mut cpu,
        msrs::IA32_VMX_PROCBASED_CTLS2,
        SecondaryProcBased::UNRESTRICTED_GUEST.bits(),
    );
    let e = refuse(&mut cpu);
    assert_eq!(e, VmxUnavailable::NoUnrestrictedGuest);
    assert_eq!(e.to_string(), "unrestricted guest not supported");
}

#[test]
fn no_ept_page_walk_4() {
    let mut cpu = FakeCpu::vmx_capable();
    let cap = cpu.read_msr_for_tests(msrs::IA32_VMX_EPT_VPID_CAP);
    cpu.set_msr(msrs::IA32_VMX_EPT_VPID_CAP, cap & !(1 << 6));
    let e = refuse(&mut cpu);
    assert_eq!(e, VmxUnavailable::NoEptPageWalk4);
    assert_eq!(e.to_string(), "EPT 4-level page walk not supported");
}

#[test]
fn no_ept_write_back() {
    let mut cpu = FakeCpu::vmx_capable();
    let cap = cpu.read_msr_for_tests(msrs::IA32_VMX_EPT_VPID_CAP);
    cpu.set_msr(msrs::IA32_VMX_EPT_VPID_CAP, cap & !(1 << 14));
    let e = refuse(&mut cpu);
    assert_eq!(e, VmxUnavailable::NoEptWriteBack);
    assert_eq!(
        e.to_string(),
        "EPT write-back paging-structure memory type not supported"
    );
}

#[test]
fn no_invept() {
    let mut cpu = FakeCpu::vmx_capable();
    let cap = cpu.read_msr_for_tests(msrs::IA32_VMX_EPT_VPID_CAP);
    cpu.set_msr(msrs::IA32_VMX_EPT_VPID_CAP, cap & !((1 << 25) | (1 << 26)));
    let e = refuse(&mut cpu);
    assert_eq!(e, VmxUnavailable::NoInvept);
    assert_eq!(
        e.to_string(),
        "INVEPT (single- or all-context) not supported"
    );
}

#[test]
fn missing_exit_control_is_named() {
    let mut cpu = FakeCpu::vmx_capable();
    disallow(
        &mut cpu,
        msrs::IA32_VMX_TRUE_EXIT_CTLS,
        ExitControls::LOAD_EFER.bits(),
    );
    let e = refuse(&mut cpu);
    assert_eq!(
        e,
        VmxUnavailable::MissingControls {
            group: ControlGroup::Exit,
            missing: 1 << 21
        }
    );
    assert_eq!(
        e.to_string(),
        "required VM-exit controls not supported: 0x200000"
    );
}

#[test]
fn missing_io_bitmaps_are_named() {
    let mut cpu = FakeCpu::vmx_capable();
    disallow(
        &mut cpu,
        msrs::IA32_VMX_TRUE_PROCBASED_CTLS,
        PrimaryProcBased::USE_IO_BITMAPS.bits(),
    );
    let e = refuse(&mut cpu);
    assert_eq!(
        e,
        VmxUnavailable::MissingControls {
            group: ControlGroup::PrimaryProcBased,
            missing: 1 << 25
        }
    );
}

#[test]
fn missing_entry_control_is_named() {
    let mut cpu = FakeCpu::vmx_capable();
    disallow(
        &mut cpu,
        msrs::IA32_VMX_TRUE_ENTRY_CTLS,
        EntryControls::IA32E_MODE_GUEST.bits(),
    );
    assert_eq!(
        refuse(&mut cpu),
        VmxUnavailable::MissingControls {
            group: ControlGroup::Entry,
            missing: 1 << 9
        }
    );
}

#[test]
fn no_1g_pages_is_a_warning_not_a_refusal() {
    let mut cpu = FakeCpu::vmx_capable();
    let cap = cpu.read_msr_for_tests(msrs::IA32_VMX_EPT_VPID_CAP);
    cpu.set_msr(msrs::IA32_VMX_EPT_VPID_CAP, cap & !(1 << 17));
    let caps = probe(&mut cpu).unwrap();
    assert!(caps.warnings.contains(VmxWarning::NoEpt1GPages));
    assert_eq!(
        VmxWarning::NoEpt1GPages.to_string(),
        "1G EPT pages not supported (falling back to 2M)"
    );
}

#[test]
fn no_2m_pages_is_a_warning() {
    let mut cpu = FakeCpu::vmx_capable();
    let cap = cpu.read_msr_for_tests(msrs::IA32_VMX_EPT_VPID_CAP);
    cpu.set_msr(msrs::IA32_VMX_EPT_VPID_CAP, cap & !((1 << 16) | (1 << 17)));
    let caps = probe(&mut cpu).unwrap();
    assert!(caps.warnings.contains(VmxWarning::NoEpt2MPages));
    assert!(caps.warnings.contains(VmxWarning::NoEpt1GPages));
}

#[test]
fn no_vpid_runs_untagged_with_a_warning() {
    let mut cpu = FakeCpu::vmx_capable();
    disallow(
        &mut cpu,
        msrs::IA32_VMX_PROCBASED_CTLS2,
        SecondaryProcBased::ENABLE_VPID.bits(),
    );
    let caps = probe(&mut cpu).unwrap();
    assert!(!caps.vpid());
    assert!(caps.warnings.contains(VmxWarning::NoVpid));
    // VPID allowed but INVVPID missing: not used either.
    let mut cpu = FakeCpu::vmx_capable();
    let cap = cpu.read_msr_for_tests(msrs::IA32_VMX_EPT_VPID_CAP);
    cpu.set_msr(msrs::IA32_VMX_EPT_VPID_CAP, cap & !(1 << 32));
    let caps = probe(&mut cpu).unwrap();
    assert!(!caps.vpid());
}

#[test]
fn no_pat_switching_is_a_warning() {
    let mut cpu = FakeCpu::vmx_capable();
    disallow(
        &mut cpu,
        msrs::IA32_VMX_TRUE_ENTRY_CTLS,
        EntryControls::LOAD_PAT.bits(),
    );
    let caps = probe(&mut cpu).unwrap();
    assert!(caps.warnings.contains(VmxWarning::NoPatSwitching));
}

#[test]
fn a_processor_that_forces_nmi_exiting_or_virtual_nmis_is_refused() {
    for forced in [PinBased::NMI_EXITING, PinBased::VIRTUAL_NMIS] {
        let mut cpu = FakeCpu::vmx_capable();
        // Allowed-0 bits (31:0) set: the control must be 1 (SDM Vol. 3D
        // Appendix A.3.1); allowed-1 (63:32) too, or the MSR contradicts
        // itself.
        let v = cpu.read_msr_for_tests(msrs::IA32_VMX_TRUE_PINBASED_CTLS);
        let bits = u64::from(forced.bits());
        cpu.set_msr(msrs::IA32_VMX_TRUE_PINBASED_CTLS, v | bits | bits << 32);
        match refuse(&mut cpu) {
            VmxUnavailable::NmiControlsForced(pin) => {
                assert_ne!(pin & forced.bits(), 0, "{forced:?}");
            }
            e => panic!("{forced:?}: {e}"),
        }
    }
}
