//! Issue 17: a SIPI exit starts the virtual CPU the way the hardware
//! starts a processor (`exit/sipi.rs`), in the start-up state of
//! `vcpu/startup.rs`, which passes the VM-entry checks
//! ([`super::entry_checks`]); the wait-for-SIPI state an application
//! processor waits in.

use okernel_abi::hypercall::Call;

use super::entry_checks::violations;
use super::policy::{enter, ok, pvcpu};
use super::*;
use crate::bits::{CR0_PE, CR0_PG};
use crate::hw::Vmcs;
use crate::policy::views::Views;
use crate::vcpu::startup::{ActivityState, STARTUP_CR0, write_wait_for_sipi};
use crate::vmx::controls::EntryControls;
use crate::vmx::fields::{Control64, ControlNatural, Field, Guest16, Guest32, Guest64};

/// IA32_VMX_MISC with every inactive activity state (bits 6–8).
const MISC_ALL_STATES: u64 = 0x0300_01e0;
/// The fake processor's CPUID.1:EAX (its signature).
const SIGNATURE: u64 = 0x5_0654;

/// The default VCPU (a 64-bit guest) on a processor that offers
/// wait-for-SIPI.
fn vcpu() -> Vcpu<FakeVmcs, FakeCpu, BasePolicy> {
    let mut v = super::vcpu();
    v.cpu.set_msr(crate::msrs::IA32_VMX_MISC, MISC_ALL_STATES);
    v
}

/// The guest's registers before a SIPI: none of them zero.
fn scribbled() -> GuestRegisters {
    GuestRegisters {
        gpr: core::array::from_fn(|i| 0x1111 * (i as u64 + 1)),
    }
}

/// A start-up state field: its encoding, name and value.
type Expected = (u32, &'static str, u64);

fn expect<F: Field>(field: F, value: u64) -> Expected {
    (field.encoding(), field.name(), value)
}

/// The start-up state of `vector` (SDM Vol. 3A Table 10-1), field by
/// field: all but the real CR0 and CR4 (the processor's fixed bits are
/// in them) and the activity state.
fn startup_fields(vector: u8) -> Vec<Expected> {
    let v = u64::from(vector);
    let mut fields = vec![
        expect(Guest16::CsSelector, v << 8),
        expect(GuestNatural::CsBase, v << 12),
        expect(Guest32::CsLimit, 0xffff),
        expect(Guest32::CsAccessRights, 0x9b),
        expect(GuestNatural::Rip, 0),
        expect(GuestNatural::Rsp, 0),
        expect(GuestNatural::Rflags, 2),
        expect(ControlNatural::Cr0ReadShadow, STARTUP_CR0),
        expect(ControlNatural::Cr4ReadShadow, 0),
        expect(GuestNatural::Cr3, 0),
        expect(GuestNatural::Dr7, 0x400),
        expect(Guest64::Efer, 0),
        expect(Guest16::TrSelector, 0),
        expect(GuestNatural::TrBase, 0),
        expect(Guest32::TrLimit, 0xffff),
        expect(Guest32::TrAccessRights, 0x8b),
        expect(Guest16::LdtrSelector, 0),
        expect(GuestNatural::LdtrBase, 0),
        expect(Guest32::LdtrLimit, 0xffff),
        expect(Guest32::LdtrAccessRights, 1 << 16),
        expect(GuestNatural::GdtrBase, 0),
        expect(Guest32::GdtrLimit, 0xffff),
        expect(GuestNatural::IdtrBase, 0),
        expect(Guest32::IdtrLimit, 0xffff),
        expect(Guest32::SysenterCs, 0),
        expect(GuestNatural::SysenterEsp, 0),
        expect(GuestNatural::SysenterEip, 0),
        expect(Guest32::InterruptibilityState, 0),
        expect(GuestNatural::PendingDebugExceptions, 0),
        expect(Control32::EntryInterruptionInfo, 0),
        expect(Guest64::VmcsLinkPointer, u64::MAX),
    ];
    for (sel, base, limit, ar) in [
        (
            Guest16::SsSelector,
            GuestNatural::SsBase,
            Guest32::SsLimit,
            Guest32::SsAccessRights,
        ),
        (
            Guest16::DsSelector,
            GuestNatural::DsBase,
            Guest32::DsLimit,
            Guest32::DsAccessRights,
        ),
        (
            Guest16::EsSelector,
            GuestNatural::EsBase,
            Guest32::EsLimit,
            Guest32::EsAccessRights,
        ),
        (
            Guest16::FsSelector,
            GuestNatural::FsBase,
            Guest32::FsLimit,
            Guest32::FsAccessRights,
        ),
        (
            Guest16::GsSelector,
            GuestNatural::GsBase,
            Guest32::GsLimit,
            Guest32::GsAccessRights,
        ),
    ] {
        fields.extend([
            expect(sel, 0),
            expect(base, 0),
            expect(limit, 0xffff),
            expect(ar, 0x93),
        ]);
    }
    fields
}

/// Asserts the VMCS holds `vector`'s start-up state (activity state
/// aside), which VM entry would load on `cpu`.
fn assert_startup_state(vm: &FakeVmcs, cr: &CrConfig, cpu: &FakeCpu, vector: u8) {
    for (encoding, name, value) in startup_fields(vector) {
        assert_eq!(vm.read_raw(encoding), Ok(value), "{name}");
    }
    let entry = EntryControls::from_bits_retain(vm.get(Control32::EntryControls) as u32);
    assert!(!entry.contains(EntryControls::IA32E_MODE_GUEST));
    // The guest sees CR0 = 60000010H (PE and PG clear, CD, NW, ET set);
    // the real CR0 is real mode too, with the fixed bits (NE); the real
    // CR4 has only its fixed bits (VMXE).
    let cr0 = vm.get(GuestNatural::Cr0);
    assert_eq!(cr0 & (CR0_PE | CR0_PG), 0, "real mode");
    assert_eq!(cr0 & STARTUP_CR0, STARTUP_CR0, "{cr0:#x}");
    assert!(cr.cr0_fixed.accepts(cr0), "{cr0:#x}");
    assert_eq!(vm.get(GuestNatural::Cr4), cr.cr4_fixed.fixed0);
    assert_eq!(violations(vm, cpu), Vec::<&str>::new());
}

/// Asserts the VCPU runs at `vector`'s start-up state: active, every
/// general-purpose register 0 but EDX, the processor's signature
/// (Table 10-1).
fn assert_started<P: Policy, M: GuestMemory>(v: &Vcpu<FakeVmcs, FakeCpu, P, M>, vector: u8) {
    assert_startup_state(&v.vmcs, &v.cr, &v.cpu, vector);
    assert_eq!(
        v.vmcs.get(Guest32::ActivityState),
        ActivityState::Active as u64
    );
    let mut expected = GuestRegisters::default();
    expected.gpr[2] = SIGNATURE;
    assert_eq!(v.regs, expected);
}

/// An INIT: the context is stopped, the virtual CPU halted in
/// wait-for-SIPI (`exit/stop.rs`), its registers left as they were
/// ([`scribbled`]).
fn init<P: Policy, M: GuestMemory>(v: &mut Vcpu<FakeVmcs, FakeCpu, P, M>) {
    v.regs = scribbled();
    assert_eq!(run(v, ExitReason::InitSignal, 0, 0), Ok(ExitAction::Resume));
    assert_eq!(
        v.vmcs.get(Guest32::ActivityState),
        ActivityState::WaitForSipi as u64
    );
}

#[test]
fn a_sipi_starts_a_waiting_processor_at_its_vector_in_real_mode() {
    let mut v = vcpu();
    // The trusted context halted by an INIT.
    v.vmcs.set(Guest32::InterruptibilityState, 0b1000);
    init(&mut v);
    v.vmcs.set(GuestNatural::Rsp, 0x7000);
    let flushes = v.cpu.invvpids;
    assert_eq!(
        run(&mut v, ExitReason::Sipi, 0x08, 0),
        Ok(ExitAction::Resume)
    );
    assert_started(&v, 0x08);
    assert_eq!(
        (
            v.vmcs.get(Guest16::CsSelector),
            v.vmcs.get(GuestNatural::CsBase)
        ),
        (0x800, 0x8000)
    );
    assert_eq!(
        v.vmcs.get(Guest32::InterruptibilityState),
        0,
        "NMIs unblocked"
    );
    assert_eq!(v.cpu.invvpids, flushes + 1, "the old translations dropped");
    assert_eq!(v.counters.get(ExitReason::Sipi), 1);
}

#[test]
fn a_sipi_exit_starts_the_processor_whatever_activity_state_it_saved() {
    // A SIPI exits only in wait-for-SIPI; Bochs 2.7 saves "active" (and
    // blocking by SMI and NMI) for it.
    let mut v = vcpu();
    v.vmcs
        .set(Guest32::ActivityState, ActivityState::Active as u64);
    v.vmcs.set(Guest32::InterruptibilityState, 0b1100);
    v.regs = scribbled();
    assert_eq!(
        run(&mut v, ExitReason::Sipi, 0x08, 0),
        Ok(ExitAction::Resume)
    );
    assert_started(&v, 0x08);
    assert_eq!(v.vmcs.get(Guest32::InterruptibilityState), 0);
}

#[test]
fn no_sipi_starts_a_processor_once_an_untrusted_context_has_existed() {
    // An untrusted context's kernel path INITs a processor (no gate: it
    // halts in wait-for-SIPI) and SIPIs it: it must not start in the
    // trusted context at the vector's code.
    let mut v = pvcpu();
    v.cpu.set_msr(crate::msrs::IA32_VMX_MISC, MISC_ALL_STATES);
    ok(&mut v, Call::CreateContext, [0; 3]);
    enter(&mut v, 1);
    let untrusted = Views::eptp(&v.memory, 1).unwrap();
    init(&mut v);
    // As Bochs saves it (`a_sipi_exit_starts_the_processor_whatever_...`).
    v.vmcs
        .set(Guest32::ActivityState, ActivityState::Active as u64);
    v.vmcs.set(Guest32::InterruptibilityState, 0b1100);
    let records = v.audit.total();
    assert_eq!(
        run(&mut v, ExitReason::Sipi, 0x9a, 0),
        Ok(ExitAction::Resume)
    );
    assert_eq!(
        v.vmcs.get(Guest32::ActivityState),
        ActivityState::WaitForSipi as u64,
        "still waiting"
    );
    assert_eq!(
        v.vmcs.get(Guest32::InterruptibilityState),
        0b1000,
        "no blocking by SMI outside SMM"
    );
    assert_eq!(v.regs, scribbled(), "nothing started");
    assert_eq!(
        (v.policy.current, v.vmcs.get(Control64::Eptp)),
        (1, untrusted)
    );
    assert_eq!(v.audit.total(), records + 1);
    let rec = *v.audit.last().unwrap();
    assert_eq!(
        (rec.kind, rec.gpa, rec.qualification, rec.action),
        (
            crate::policy::audit::AuditKind::Exit,
            ExitReason::Sipi as u64,
            0x9a,
            crate::policy::audit::AuditAction::Refused
        )
    );
    // The same in the trusted context once the untrusted one is gone.
    let mut v = pvcpu();
    v.cpu.set_msr(crate::msrs::IA32_VMX_MISC, MISC_ALL_STATES);
    ok(&mut v, Call::CreateContext, [0; 3]);
    ok(&mut v, Call::DestroyContext, [1, 0, 0]);
    init(&mut v);
    run(&mut v, ExitReason::Sipi, 0x08, 0).unwrap();
    assert_eq!(
        v.vmcs.get(Guest32::ActivityState),
        ActivityState::WaitForSipi as u64
    );
    // Before any context, the trusted kernel starts its processors.
    let mut v = pvcpu();
    v.cpu.set_msr(crate::msrs::IA32_VMX_MISC, MISC_ALL_STATES);
    init(&mut v);
    run(&mut v, ExitReason::Sipi, 0x08, 0).unwrap();
    assert_started(&v, 0x08);
}

#[test]
fn an_application_processor_waits_for_sipi_in_the_startup_state_of_vector_0() {
    // Over the 64-bit guest state launch writes, every field of the
    // start-up state scribbled first (an event pending injection too):
    // each is written.
    let mut v = vcpu();
    for (encoding, name, value) in startup_fields(0) {
        let other = if value == 0 { 0x2000 } else { value ^ 0x1 };
        v.vmcs.write_raw(encoding, other).expect(name);
    }
    write_wait_for_sipi(&mut v.vmcs, &v.cr).unwrap();
    assert_eq!(
        v.vmcs.get(Guest32::ActivityState),
        ActivityState::WaitForSipi as u64
    );
    assert_startup_state(&v.vmcs, &v.cr, &v.cpu, 0);
    // Only where IA32_VMX_MISC offers the state (bit 8).
    let mut without = v.cpu.clone();
    without.set_msr(crate::msrs::IA32_VMX_MISC, MISC_ALL_STATES & !(1 << 8));
    assert_eq!(violations(&v.vmcs, &without), ["activity state supported"]);
    // The guest's SIPI starts it.
    v.regs = scribbled();
    assert_eq!(
        run(&mut v, ExitReason::Sipi, 0x10, 0),
        Ok(ExitAction::Resume)
    );
    assert_started(&v, 0x10);
}

#[test]
fn the_entry_check_model_accepts_launch_states_and_refuses_broken_ones() {
    // What launch writes passes (64-bit and 32-bit guests).
    let v = vcpu();
    assert_eq!(violations(&v.vmcs, &v.cpu), Vec::<&str>::new());
    let mut e = entry64();
    e.mode = crate::launch::GuestMode::Protected32;
    let p = vcpu_with(BasePolicy, e);
    assert_eq!(violations(&p.vmcs, &p.cpu), Vec::<&str>::new());
    // Each break of the start-up state is caught by the check it breaks.
    let mut started = vcpu();
    write_wait_for_sipi(&mut started.vmcs, &started.cr).unwrap();
    /// A change that breaks one check.
    type Break = fn(&mut FakeVmcs);
    let cases: [(&str, Break); 7] = [
        ("TR type: a busy TSS", |vm| {
            vm.set(Guest32::TrAccessRights, 0x89);
        }),
        ("IA32_EFER.LMA = IA-32e mode guest", |vm| {
            let e = vm.get(Control32::EntryControls);
            let ia32e = EntryControls::IA32E_MODE_GUEST.bits();
            vm.set(Control32::EntryControls, e | u64::from(ia32e));
        }),
        ("CR0 fixed bits", |vm| {
            let cr0 = vm.get(GuestNatural::Cr0);
            vm.set(GuestNatural::Cr0, cr0 & !0x20);
        }),
        ("SS.DPL 0 in real mode", |vm| {
            vm.set(Guest32::SsAccessRights, 0xf3);
        }),
        ("LDTR type and S", |vm| {
            vm.set(Guest32::LdtrAccessRights, 0x93);
        }),
        ("event injection into wait-for-SIPI", |vm| {
            vm.set(Control32::EntryInterruptionInfo, 0x8000_0b0d);
        }),
        ("VMCS link pointer", |vm| {
            vm.set(Guest64::VmcsLinkPointer, 0);
        }),
    ];
    for (check, break_it) in cases {
        let mut vm = started.vmcs.clone();
        break_it(&mut vm);
        let found = violations(&vm, &started.cpu);
        assert!(found.contains(&check), "{check}: {found:?}");
    }
}

#[test]
fn the_init_that_strikes_right_after_the_start_is_passed_over_once() {
    let mut v = vcpu();
    v.cpu.set_msr(crate::msrs::IA32_VMX_MISC, MISC_ALL_STATES);
    init(&mut v);
    run(&mut v, ExitReason::Sipi, 0x08, 0).unwrap();
    assert_started(&v, 0x08);
    // The INIT held while the processor waited: the start goes on.
    let stops = v.audit.total();
    v.vmcs.set(Guest32::InterruptibilityState, 0b1100);
    assert_eq!(
        run(&mut v, ExitReason::InitSignal, 0, 0),
        Ok(ExitAction::Resume)
    );
    assert_eq!(
        v.vmcs.get(Guest32::ActivityState),
        ActivityState::Active as u64
    );
    assert_eq!(v.vmcs.get(Guest32::InterruptibilityState), 0);
    assert_eq!(v.audit.total(), stops, "nothing stopped");
    // Another one there (Bochs 2.7 re-delivers it at every entry): the
    // processor stops, as for any INIT.
    assert_eq!(
        run(&mut v, ExitReason::InitSignal, 0, 0),
        Ok(ExitAction::Resume)
    );
    assert_eq!(
        v.vmcs.get(Guest32::ActivityState),
        ActivityState::WaitForSipi as u64
    );
    assert_eq!(v.audit.total(), stops + 1);
    // An INIT once the processor ran stops it at once.
    let mut v = vcpu();
    v.cpu.set_msr(crate::msrs::IA32_VMX_MISC, MISC_ALL_STATES);
    init(&mut v);
    run(&mut v, ExitReason::Sipi, 0x08, 0).unwrap();
    v.vmcs.set(GuestNatural::Rip, 0x10);
    run(&mut v, ExitReason::InitSignal, 0, 0).unwrap();
    assert_eq!(
        v.vmcs.get(Guest32::ActivityState),
        ActivityState::WaitForSipi as u64
    );
}

#[test]
fn a_processor_starts_once_and_the_bootstrap_processor_never() {
    use crate::vcpu::startup::Startup;
    // Started, stopped by an INIT, SIPI again: refused (it would come up
    // with the pinned bits and locked MSRs at their reset values).
    let mut v = vcpu();
    v.cpu.set_msr(crate::msrs::IA32_VMX_MISC, MISC_ALL_STATES);
    init(&mut v);
    run(&mut v, ExitReason::Sipi, 0x08, 0).unwrap();
    assert_started(&v, 0x08);
    v.vmcs.set(GuestNatural::Rip, 0x10);
    init(&mut v);
    let records = v.audit.total();
    run(&mut v, ExitReason::Sipi, 0x09, 0).unwrap();
    assert_eq!(
        v.vmcs.get(Guest32::ActivityState),
        ActivityState::WaitForSipi as u64
    );
    assert_eq!(v.audit.total(), records + 1, "audited");
    assert_eq!(v.started_aps, 1);
    // The bootstrap processor, halted by an INIT: no SIPI starts it.
    let mut v = vcpu();
    v.startup = Startup::Bootstrap;
    v.cpu.set_msr(crate::msrs::IA32_VMX_MISC, MISC_ALL_STATES);
    init(&mut v);
    run(&mut v, ExitReason::Sipi, 0x08, 0).unwrap();
    assert_eq!(
        v.vmcs.get(Guest32::ActivityState),
        ActivityState::WaitForSipi as u64
    );
    assert_eq!(v.started_aps, 0);
}
