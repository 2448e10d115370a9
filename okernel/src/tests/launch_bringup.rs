//! VMX bring-up (`launch::bringup::bring_up`, the part of `launch` before
//! the switch to the monitor's stack) over the recording fakes of
//! `hw::recorder`: the order of its steps, every field VM entry checks
//! written, a failure injected at each step reported as that step with
//! nothing after it, and the CR0/CR4 bits it sets for VMXON on a
//! processor that does not have them yet.

use crate::arch::descriptors::Selectors;
use crate::bits::{
    CPUID1_ECX_VMX, CPUID1_ECX_XSAVE, CR0_NE, CR4_OSXSAVE, CR4_PAE, CR4_UMIP, CR4_VMXE,
};
use crate::check::{VmxUnavailable, probe};
use crate::hw::VmxRegion;
use crate::hw::fake::FakeCpu;
use crate::hw::recorder::{Journal, Op, RecordingCpu, RecordingVmcs};
use crate::hw::{InveptKind, Vmcs, VmxRoot};
use crate::launch::bringup::{Platform, Prepared, Ready, bring_up};
use crate::launch::host::HostTables;
use crate::launch::{LaunchError, VmxStep};
use crate::msrs;
use crate::vmx::error::{InstructionError, VmFail};
use crate::vmx::fields::{
    Control16, Control32, Control64, ControlNatural, Field, Guest16, Guest32, Guest64,
    GuestNatural, Host16, Host32, Host64, HostNatural, Kind,
};

use super::{RIP, entry64};

const VMXON: u64 = 0x1000;
const VMCS: u64 = 0x2000;
const IO_A: u64 = 0x3000;
const IO_B: u64 = 0x4000;
const MSR_BITMAP: u64 = 0x5000;
const EPTP: u64 = 0x601e;
const HOST_RSP: u64 = 0x2_7fc0;
/// The failure the journal injects.
const FAIL: VmFail = VmFail::Valid(InstructionError(7));

fn region(addr: u64) -> VmxRegion {
    // SAFETY: only the fake CPU sees these regions, and it never touches
    // memory at their addresses.
    unsafe { VmxRegion::new(addr) }
}

/// A platform with fixed addresses; its `prepare` is a journal step, so
/// it can be made to fail (as the pool running out).
struct FakePlatform<'j>(&'j Journal);

impl Platform for FakePlatform<'_> {
    type Memory = ();

    fn prepare(
        &mut self,
        _: &crate::check::Capabilities,
        _: ept::EptCaps,
    ) -> Result<Prepared<()>, LaunchError> {
        self.0
            .step("prepare")
            .map_err(|_| LaunchError::OutOfFrames("VMXON region"))?;
        Ok(Prepared {
            vmxon: region(VMXON),
            vmcs: region(VMCS),
            msr_bitmap: MSR_BITMAP,
            io_bitmaps: (IO_A, IO_B),
            eptp: EPTP,
            host_rsp: HOST_RSP,
            memory: (),
        })
    }

    fn host_tables(&mut self) -> HostTables {
        HostTables {
            selectors: Selectors {
                cs: 0x08,
                ss: 0x10,
                tr: 0x18,
                ..Default::default()
            },
            tr_base: 0x7000,
            gdtr_base: 0x6000,
            rip: 0xdead,
            ..Default::default()
        }
    }
}

type Outcome<'j> = Result<Ready<RecordingVmcs<'j>, ()>, LaunchError>;

/// Brings VMX up on `cpu`, recording into `journal`.
fn bring_up_on(cpu: FakeCpu, journal: &Journal) -> (Outcome<'_>, RecordingCpu<'_>) {
    let mut cpu = RecordingCpu::new(cpu, journal);
    let r = bring_up(&mut cpu, &mut FakePlatform(journal), &entry64());
    (r, cpu)
}

/// The operations of a successful bring-up on the Bochs-like CPU.
fn successful_run() -> Vec<Op> {
    let journal = Journal::new();
    let (r, _) = bring_up_on(FakeCpu::vmx_capable(), &journal);
    r.expect("bring-up succeeds on the Bochs-like CPU");
    journal.ops().to_vec()
}

fn position(ops: &[Op], want: impl Fn(&Op) -> bool) -> usize {
    ops.iter().position(want).expect("the operation ran")
}

/// The bring-up step a VMWRITE of `encoding` belongs to.
fn step_of_vmwrite(encoding: u32) -> VmxStep {
    let read_shadows = [ControlNatural::Cr0ReadShadow, ControlNatural::Cr4ReadShadow];
    match Kind::of(encoding) {
        _ if encoding == HostNatural::Rsp.encoding() => VmxStep::HostRsp,
        Kind::Host => VmxStep::HostState,
        // The read shadows are what the guest sees of CR0/CR4: written
        // with the guest state.
        Kind::Control if !read_shadows.iter().any(|f| f.encoding() == encoding) => {
            VmxStep::Controls
        }
        _ => VmxStep::GuestState,
    }
}

/// The error bring-up must return when `op` fails.
fn expected_error(op: Op) -> LaunchError {
    let step = match op {
        Op::Step("prepare") => return LaunchError::OutOfFrames("VMXON region"),
        Op::Vmxon(_) => VmxStep::Vmxon,
        Op::Vmclear(_) => VmxStep::Vmclear,
        Op::Vmptrld(_) => VmxStep::Vmptrld,
        Op::Invept(_) => VmxStep::Invept,
        Op::Vmwrite(encoding, _) => step_of_vmwrite(encoding),
        other => panic!("bring-up does not run {other:?}"),
    };
    LaunchError::Vmx {
        op: step,
        err: FAIL,
    }
}

#[test]
fn bring_up_probes_first_then_prepares_then_enters_vmx_root_then_writes_the_vmcs() {
    let ops = successful_run();
    // It starts with the capability probe, exactly as `check::probe`
    // runs alone, before it allocates or changes anything.
    let probe_journal = Journal::new();
    let mut cpu = RecordingCpu::new(FakeCpu::vmx_capable(), &probe_journal);
    probe(&mut cpu).unwrap();
    let probed = probe_journal.ops().to_vec();
    assert_eq!(ops[..probed.len()], probed[..], "the probe comes first");
    // Then the milestones, each once, in this order.
    let milestones: Vec<Op> = ops
        .iter()
        .copied()
        .filter(|op| {
            matches!(
                op,
                Op::Step(_)
                    | Op::WriteCr(..)
                    | Op::Vmxon(_)
                    | Op::Vmclear(_)
                    | Op::Vmptrld(_)
                    | Op::Invept(_)
            )
        })
        .collect();
    let cr0 = FakeCpu::vmx_capable().cr0;
    let cr4 = FakeCpu::vmx_capable().cr4 | CR4_VMXE;
    assert_eq!(
        milestones,
        [
            Op::Step("prepare"),
            Op::WriteCr(0, cr0),
            Op::WriteCr(4, cr4),
            Op::Vmxon(VMXON),
            Op::Vmclear(VMCS),
            Op::Vmptrld(VMCS),
            Op::Invept(InveptKind::AllContext),
        ]
    );
    // Every VMREAD/VMWRITE comes after INVEPT (so after VMPTRLD); HOST_RSP
    // is the last field written.
    let invept = position(&ops, |op| matches!(op, Op::Invept(_)));
    let first_vmcs_access = position(&ops, |op| matches!(op, Op::Vmwrite(..) | Op::Vmread(_)));
    assert!(first_vmcs_access > invept);
    let last_write = ops
        .iter()
        .rev()
        .find(|op| matches!(op, Op::Vmwrite(..)))
        .unwrap();
    assert_eq!(
        *last_write,
        Op::Vmwrite(HostNatural::Rsp.encoding(), HOST_RSP)
    );
}

#[test]
fn cr4_vmxe_is_set_before_vmxon_and_the_host_state_reads_it_back() {
    let journal = Journal::new();
    let (r, cpu) = bring_up_on(FakeCpu::vmx_capable(), &journal);
    let ready = r.unwrap();
    let ops = journal.ops().to_vec();
    let vmxe = position(
        &ops,
        |op| matches!(op, Op::WriteCr(4, v) if v & CR4_VMXE != 0),
    );
    assert!(vmxe < position(&ops, |op| matches!(op, Op::Vmxon(_))));
    assert!(cpu.in_vmx());
    // HOST_CR4 is CR4 as VMXON found it (VM entry requires VMXE there,
    // SDM Vol. 3C §27.2.2), and the guest's CR4 keeps VMXE too.
    let vmcs = &ready.vmcs.vmcs;
    assert_eq!(vmcs.get(HostNatural::Cr4), cpu.cpu.cr4);
    assert_ne!(vmcs.get(HostNatural::Cr4) & CR4_VMXE, 0);
    assert_ne!(vmcs.get(GuestNatural::Cr4) & CR4_VMXE, 0);
    assert_eq!(vmcs.get(HostNatural::Cr0), cpu.cpu.cr0);
}

#[test]
fn every_field_vm_entry_checks_is_written_before_launch() {
    let ops = successful_run();
    let written = |e: u32| {
        ops.iter()
            .any(|op| matches!(op, Op::Vmwrite(w, _) if *w == e))
    };
    fn named<F: Field>(fields: &[F]) -> Vec<(u32, &'static str)> {
        fields.iter().map(|f| (f.encoding(), f.name())).collect()
    }
    // The host-state area whole (SDM Vol. 3C §25.5) but PERF_GLOBAL_CTRL
    // and PKRS (their exit controls are off); the guest-state area (§25.4)
    // but what no VM entry of okernel loads; the controls okernel enables,
    // with the addresses and counts they use (§25.6-25.8).
    let required = [
        named(HostNatural::ALL),
        named(Host16::ALL),
        named(&[Host32::SysenterCs]),
        named(&[Host64::Pat, Host64::Efer]),
        named(GuestNatural::ALL),
        named(&Guest16::ALL[..8]), // ES..TR, not the interrupt status or PML index
        named(&Guest32::ALL[..20]), // limits, access rights, interruptibility, activity
        named(&[Guest32::SysenterCs]),
        named(&Guest64::ALL[..4]),    // link pointer, DEBUGCTL, PAT, EFER
        named(&Control32::ALL[..12]), // pin-based controls .. entry interruption info
        named(&[Control32::SecondaryProcessorBasedControls]),
        named(&Control64::ALL[..3]), // I/O bitmaps A and B, MSR bitmaps
        named(&[Control64::Eptp, Control64::XssExitingBitmap]),
        named(&[Control16::Vpid]),
        named(&ControlNatural::ALL[..4]), // CR0/CR4 guest/host masks and read shadows
    ]
    .concat();
    let missing: Vec<&str> = required
        .iter()
        .filter(|(e, _)| !written(*e))
        .map(|(_, n)| *n)
        .collect();
    assert!(missing.is_empty(), "never written: {missing:?}");

    // And with the values bring-up was given.
    let journal = Journal::new();
    let (r, _) = bring_up_on(FakeCpu::vmx_capable(), &journal);
    let vmcs = r.unwrap().vmcs;
    for (field, value) in [
        (Control64::Eptp.encoding(), EPTP),
        (Control64::MsrBitmaps.encoding(), MSR_BITMAP),
        (Control64::IoBitmapA.encoding(), IO_A),
        (Control64::IoBitmapB.encoding(), IO_B),
        (HostNatural::Rsp.encoding(), HOST_RSP),
        (HostNatural::Rip.encoding(), 0xdead),
        (HostNatural::TrBase.encoding(), 0x7000),
        (GuestNatural::Rip.encoding(), RIP),
    ] {
        assert_eq!(vmcs.vmcs.read_raw(field), Ok(value), "{field:#x}");
    }
}

#[test]
fn a_failure_at_any_step_is_reported_as_that_step_and_nothing_runs_after_it() {
    let ops = successful_run();
    let mut failed = 0;
    for (i, &op) in ops.iter().enumerate().filter(|(_, op)| op.can_fail()) {
        let journal = Journal::new();
        journal.fail_at(i, FAIL);
        let (r, _) = bring_up_on(FakeCpu::vmx_capable(), &journal);
        let err = r
            .err()
            .unwrap_or_else(|| panic!("bring-up survived {op:?}"));
        assert_eq!(err, expected_error(op), "operation {i}: {op:?}");
        assert_eq!(
            journal.ops()[..],
            ops[..=i],
            "operation {i}: {op:?} must be the last"
        );
        failed += 1;
    }
    // prepare, VMXON, VMCLEAR, VMPTRLD, INVEPT and each VMWRITE.
    assert!(failed > 100, "{failed} failable operations");
}

#[test]
fn each_vmx_instruction_failure_names_its_step() {
    let ops = successful_run();
    // (A VMWRITE is found by its field; the value does not matter.)
    for (op, message) in [
        (Op::Vmxon(VMXON), "VMXON failed: "),
        (Op::Vmclear(VMCS), "VMCLEAR failed: "),
        (Op::Vmptrld(VMCS), "VMPTRLD failed: "),
        (Op::Invept(InveptKind::AllContext), "INVEPT failed: "),
        (
            Op::Vmwrite(Host16::CsSelector.encoding(), 0),
            "VMWRITE (host state) failed: ",
        ),
        (
            Op::Vmwrite(Control32::PinBasedControls.encoding(), 0),
            "VMWRITE (controls) failed: ",
        ),
        (
            Op::Vmwrite(GuestNatural::Rip.encoding(), 0),
            "VMWRITE (guest state) failed: ",
        ),
        (
            Op::Vmwrite(HostNatural::Rsp.encoding(), 0),
            "VMWRITE (HOST_RSP) failed: ",
        ),
    ] {
        let journal = Journal::new();
        let same = |o: &Op| match (*o, op) {
            (Op::Vmwrite(a, _), Op::Vmwrite(b, _)) => a == b,
            _ => *o == op,
        };
        journal.fail_at(position(&ops, same), FAIL);
        let (r, cpu) = bring_up_on(FakeCpu::vmx_capable(), &journal);
        let err = r.err().unwrap();
        assert!(err.to_string().starts_with(message), "{op:?}: {err}");
        let after = journal.ops().to_vec();
        // No VMCS access without a current VMCS; no VMX instruction at all
        // after a failed VMXON.
        if matches!(op, Op::Vmxon(_) | Op::Vmclear(_) | Op::Vmptrld(_)) {
            assert!(
                !after
                    .iter()
                    .any(|o| matches!(o, Op::Vmwrite(..) | Op::Vmread(_)))
            );
        }
        assert_eq!(cpu.in_vmx(), !matches!(op, Op::Vmxon(_)));
    }
}

#[test]
fn a_refused_probe_allocates_nothing_and_leaves_cr0_cr4_and_vmx_alone() {
    let mut no_vmx = FakeCpu::vmx_capable();
    let mut r1 = no_vmx.cpuid_for_tests(1);
    r1.ecx &= !CPUID1_ECX_VMX;
    no_vmx.set_cpuid(1, 0, r1);
    let mut no_true_controls = FakeCpu::vmx_capable();
    let basic = no_true_controls.read_msr_for_tests(msrs::IA32_VMX_BASIC);
    no_true_controls.set_msr(msrs::IA32_VMX_BASIC, basic & !(1 << 55));
    for (cpu, why) in [
        (no_vmx, VmxUnavailable::NoVmx),
        (no_true_controls, VmxUnavailable::NoTrueControls),
    ] {
        let journal = Journal::new();
        let (r, _) = bring_up_on(cpu, &journal);
        assert_eq!(r.err(), Some(LaunchError::Unavailable(why)));
        let changed = journal.ops().iter().any(|op| {
            matches!(
                op,
                Op::Step(_) | Op::WriteCr(..) | Op::Vmxon(_) | Op::Vmclear(_) | Op::Vmptrld(_)
            )
        });
        assert!(!changed, "{why:?}: {:?}", journal.ops());
    }
}

#[test]
fn without_all_context_invept_the_base_view_is_invalidated_by_its_eptp() {
    let mut cpu = FakeCpu::vmx_capable();
    let cap = cpu.read_msr_for_tests(msrs::IA32_VMX_EPT_VPID_CAP);
    cpu.set_msr(msrs::IA32_VMX_EPT_VPID_CAP, cap & !(1 << 26));
    let journal = Journal::new();
    let (r, _) = bring_up_on(cpu, &journal);
    let ready = r.unwrap();
    assert!(!ready.policy.invept_all);
    assert!(
        journal
            .ops()
            .contains(&Op::Invept(InveptKind::SingleContext(EPTP)))
    );
}

/// The Bochs-like CPU before its control registers are fit for VMXON:
/// CR0.NE clear, which IA32_VMX_CR0_FIXED0 requires (0x8000_0021: PG, NE,
/// PE); CR4.OSXSAVE clear though CPUID offers XSAVE; and CR4.UMIP set,
/// which IA32_VMX_CR4_FIXED1 (0x0037_27ff) does not allow in VMX
/// operation (SDM Vol. 3C §24.8, Vol. 3D §A.7-A.8).
fn unfit_for_vmxon() -> FakeCpu {
    let mut cpu = FakeCpu::vmx_capable();
    cpu.cr0 &= !CR0_NE;
    cpu.cr4 = CR4_PAE | CR4_UMIP;
    assert_ne!(cpu.cpuid_for_tests(1).ecx & CPUID1_ECX_XSAVE, 0);
    cpu
}

/// The values of bring-up's two CR writes, CR0's then CR4's.
fn cr_writes(ops: &[Op]) -> Vec<(u8, u64)> {
    ops.iter()
        .filter_map(|op| match *op {
            Op::WriteCr(cr, v) => Some((cr, v)),
            _ => None,
        })
        .collect()
}

#[test]
fn bring_up_applies_the_fixed_bits_and_sets_osxsave_before_vmxon() {
    let start = unfit_for_vmxon();
    let journal = Journal::new();
    // (The recording VMXON panics, "would raise #GP", if CR0 or CR4 is
    // still outside the fixed bits.)
    let (r, cpu) = bring_up_on(start.clone(), &journal);
    let ready = r.expect("bring-up succeeds once CR0/CR4 are fixed up");
    let ops = journal.ops().to_vec();
    // CR0 gains NE (fixed 1), CR4 gains VMXE (fixed 1) and OSXSAVE (XSAVE
    // offered) and loses UMIP (fixed 0); each written once, before VMXON.
    let cr0 = start.cr0 | CR0_NE;
    let cr4 = CR4_PAE | CR4_VMXE | CR4_OSXSAVE;
    assert_eq!(cr_writes(&ops), [(0, cr0), (4, cr4)]);
    let vmxon = position(&ops, |op| matches!(op, Op::Vmxon(_)));
    assert!(position(&ops, |op| matches!(op, Op::WriteCr(4, _))) < vmxon);
    assert!(cpu.in_vmx());
    assert_eq!((cpu.cpu.cr0, cpu.cpu.cr4), (cr0, cr4));
    // The host state is CR0/CR4 as VMXON found them.
    let vmcs = &ready.vmcs.vmcs;
    assert_eq!(vmcs.get(HostNatural::Cr0), cr0);
    assert_eq!(vmcs.get(HostNatural::Cr4), cr4);
}

#[test]
fn without_xsave_in_cpuid_bring_up_leaves_osxsave_clear() {
    let mut start = unfit_for_vmxon();
    let mut leaf1 = start.cpuid_for_tests(1);
    leaf1.ecx &= !CPUID1_ECX_XSAVE;
    start.set_cpuid(1, 0, leaf1);
    let journal = Journal::new();
    let (r, cpu) = bring_up_on(start.clone(), &journal);
    r.expect("bring-up succeeds without XSAVE");
    let ops = journal.ops().to_vec();
    assert_eq!(
        cr_writes(&ops),
        [(0, start.cr0 | CR0_NE), (4, CR4_PAE | CR4_VMXE)]
    );
    assert_eq!(cpu.cpu.cr4 & CR4_OSXSAVE, 0);
}

#[test]
#[should_panic(expected = "VMXON with CR0 or CR4 outside the VMX fixed bits")]
fn the_recording_vmxon_faults_with_cr0_outside_the_fixed_bits() {
    let journal = Journal::new();
    let mut cpu = FakeCpu::vmx_capable();
    cpu.cr0 &= !CR0_NE;
    cpu.cr4 |= CR4_VMXE;
    let _ = RecordingCpu::new(cpu, &journal).vmxon(region(VMXON));
}

#[test]
#[should_panic(expected = "VMXON with CR0 or CR4 outside the VMX fixed bits")]
fn the_recording_vmxon_faults_with_cr4_outside_the_fixed_bits() {
    let journal = Journal::new();
    let mut cpu = FakeCpu::vmx_capable();
    cpu.cr4 |= CR4_VMXE | CR4_UMIP;
    let _ = RecordingCpu::new(cpu, &journal).vmxon(region(VMXON));
}

#[test]
fn an_application_processor_gets_its_own_vmcs_over_the_shared_frames_waiting_for_sipi() {
    use crate::hw::Cpu;
    use crate::launch::bringup::{ApParams, bring_up_ap};
    use crate::vcpu::startup::ActivityState;
    let journal = Journal::new();
    let (r, _) = bring_up_on(FakeCpu::vmx_capable(), &journal);
    let params = ApParams {
        guest: entry64(),
        msr_bitmap: MSR_BITMAP,
        io_bitmaps: (IO_A, IO_B),
        eptp: EPTP,
        cr: r.unwrap().cr,
    };
    // Parked first (`launch::park`): in VMX root already.
    let journal = Journal::new();
    let mut cpu = RecordingCpu::new(FakeCpu::vmx_capable(), &journal);
    let caps = probe(&mut cpu).unwrap();
    let cr0 = caps.cr0_fixed.apply(cpu.read_cr0());
    cpu.write_cr0(cr0);
    let cr4 = caps.cr4_fixed.apply(cpu.read_cr4() | CR4_VMXE);
    cpu.write_cr4(cr4);
    cpu.vmxon(region(VMXON)).unwrap();
    let parked = journal.ops().len();
    let tables = HostTables {
        selectors: Selectors {
            cs: 0x08,
            ss: 0x10,
            tr: 0x18,
            ..Default::default()
        },
        tr_base: 0x9000,
        gdtr_base: 0x6000,
        rip: 0xdead,
        ..Default::default()
    };
    let vmcs = bring_up_ap(&mut cpu, &params, region(0xa000), 0xb_ffc0, &tables).unwrap();
    let ops = journal.ops()[parked..].to_vec();
    assert!(
        !ops.iter().any(|op| matches!(op, Op::Vmxon(_))),
        "no second VMXON"
    );
    let clear = position(&ops, |op| *op == Op::Vmclear(0xa000));
    let load = position(&ops, |op| *op == Op::Vmptrld(0xa000));
    let invept = position(&ops, |op| matches!(op, Op::Invept(_)));
    assert!(clear < load && load < invept);
    for (field, value) in [
        (Control64::Eptp.encoding(), EPTP),
        (Control64::MsrBitmaps.encoding(), MSR_BITMAP),
        (Control64::IoBitmapA.encoding(), IO_A),
        (Control64::IoBitmapB.encoding(), IO_B),
        (HostNatural::Rsp.encoding(), 0xb_ffc0),
        (HostNatural::Rip.encoding(), 0xdead),
        (Host16::TrSelector.encoding(), 0x18),
        (HostNatural::TrBase.encoding(), 0x9000),
        (
            Guest32::ActivityState.encoding(),
            ActivityState::WaitForSipi as u64,
        ),
        (Guest16::CsSelector.encoding(), 0),
        (GuestNatural::Rip.encoding(), 0),
    ] {
        assert_eq!(vmcs.vmcs.read_raw(field), Ok(value), "{field:#x}");
    }
    let entry = vmcs
        .vmcs
        .read_raw(Control32::EntryControls.encoding())
        .unwrap();
    assert_eq!(entry & (1 << 9), 0, "not an IA-32e mode guest");
}
