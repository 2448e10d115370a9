//! The APIC page's write trap (issue 17, `exit::xapic`): open while a
//! processor can be started, each write decoded from the guest's code,
//! judged and performed on the (fake) APIC or refused; closed by the last
//! start or the first untrusted context.

use super::*;
use crate::exit::xapic;
use crate::hypercall::policy::Env;
use crate::vcpu::startup::{ActivityState, Startup};
use crate::vmx::fields::{Guest32, ReadOnly64, ReadOnlyNatural};
use okernel_abi::policy::{AuditKind, RegionKind};

const PAGE: u64 = 0xfee0_0000;
/// Where the writing instructions lie (ordinary RAM, identity-mapped).
const CODE: u64 = DATA;
/// A write by a data access with a valid linear address (qualification
/// bits 1, 3 (readable), 7, 8).
const WRITE_QUAL: u64 = (1 << 1) | (1 << 3) | (1 << 7) | (1 << 8);
/// `mov %esi,0x300(%rax)`.
const MOV_ESI_ICR: [u8; 6] = [0x89, 0xb0, 0x00, 0x03, 0x00, 0x00];
/// `movl $0,0xb0(%rax)` (EOI).
const MOVL_0_EOI: [u8; 10] = [0xc7, 0x80, 0xb0, 0, 0, 0, 0, 0, 0, 0];
/// ICR low: INIT (level assert), physical destination.
const INIT: u64 = 0b101 << 8 | 1 << 14;
/// ICR low: SIPI, vector 0x9a.
const SIPI: u64 = 0b110 << 8 | 0x9a;
/// ICR low: NMI.
const NMI: u64 = 0b100 << 8;

fn trapped() -> PVcpu {
    let mut v = pvcpu();
    // The processor set the accessed flags fetching the instruction (the
    // monitor reads it as an implicit access, which needs them set).
    const ACCESSED: u64 = 1 << 5;
    for (entry, value) in [
        (PML4, PDPT | 3),
        (PDPT, PD | 3),
        (PD + 8 * (CODE >> 21), (CODE & !0x1f_ffff) | 3 | 0x80),
    ] {
        v.memory
            .phys()
            .write(Hpa(entry), &(value | ACCESSED).to_le_bytes());
    }
    v.joined_aps = 1;
    let mut env = Env::of(&mut v).unwrap();
    assert_eq!(env.open_xapic_trap(PAGE), Ok(true));
    v
}

fn perms(v: &mut PVcpu, ctx: u16) -> Perms {
    let env = Env::of(v).unwrap();
    env.views
        .translate(ctx, Gpa(PAGE))
        .unwrap()
        .page
        .attrs
        .perms
}

/// The guest runs `code` at [`CODE`], which writes `offset` of the APIC
/// page: the EPT violation it takes.
fn write(v: &mut PVcpu, code: &[u8], offset: u64) -> Result<ExitAction, ExitError> {
    v.memory.phys().write(Hpa(CODE), code);
    v.vmcs.set(GuestNatural::Rip, CODE);
    v.vmcs.set(ReadOnly64::GuestPhysicalAddress, PAGE + offset);
    v.vmcs.set(
        ReadOnlyNatural::GuestLinearAddress,
        0xffff_ffff_ff5f_c000 + offset,
    );
    run(v, ExitReason::EptViolation, WRITE_QUAL, 0)
}

fn icr(v: &mut PVcpu, low: u64, destination: u32) -> Result<ExitAction, ExitError> {
    v.cpu.xapic[(xapic::ICR_HIGH / 16) as usize] = destination << 24;
    v.regs.set(Gpr::Rsi, low);
    write(v, &MOV_ESI_ICR, xapic::ICR_LOW)
}

#[test]
fn the_trap_makes_the_page_read_only_in_the_trusted_view_only_while_open() {
    let mut v = pvcpu();
    assert_eq!(perms(&mut v, 0), Perms::RW);
    let invepts = v.cpu.invepts;
    let mut env = Env::of(&mut v).unwrap();
    assert_eq!(env.open_xapic_trap(PAGE), Ok(true));
    assert_eq!(perms(&mut v, 0), Perms::READ);
    assert_eq!(v.policy.xapic_trap, Some(PAGE));
    assert!(
        v.cpu.invepts > invepts,
        "cached writable translations dropped"
    );
    let mut env = Env::of(&mut v).unwrap();
    env.close_xapic_trap().unwrap();
    assert_eq!(perms(&mut v, 0), Perms::RW);
    assert_eq!(v.policy.xapic_trap, None);
}

#[test]
fn an_init_to_another_processor_is_completed_without_being_sent() {
    let mut v = trapped();
    assert_eq!(icr(&mut v, INIT, 1), Ok(ExitAction::Resume));
    assert_eq!(rip(&v), CODE + 6, "RIP past the decoded MOV");
    assert_eq!(v.cpu.xapic_writes, 0, "not sent");
    assert_eq!(injected(&v), 0);
    assert_eq!(v.audit.total(), 0);
}

#[test]
fn a_sipi_and_the_registers_an_os_programs_are_written_to_the_apic() {
    let mut v = trapped();
    assert_eq!(icr(&mut v, SIPI, 1), Ok(ExitAction::Resume));
    assert_eq!(v.cpu.xapic[(xapic::ICR_LOW / 16) as usize], SIPI as u32);
    assert_eq!(v.cpu.xapic_writes, 1);
    assert_eq!(rip(&v), CODE + 6);
    v.cpu.xapic[0xb] = 0xdead;
    assert_eq!(write(&mut v, &MOVL_0_EOI, 0xb0), Ok(ExitAction::Resume));
    assert_eq!((v.cpu.xapic[0xb], v.cpu.xapic_writes), (0, 2));
    assert_eq!(rip(&v), CODE + 10);
    assert_eq!(v.audit.total(), 0);
}

#[test]
fn what_the_policy_refuses_is_audited_and_faults_unwritten() {
    // An NMI, an INIT to this processor (APIC ID 0), the APIC ID, a store
    // the monitor does not decode (a 16-bit MOV), a write not at a
    // register's start.
    let cases: [(&[u8], u64, u64, u32); 5] = [
        (&MOV_ESI_ICR, xapic::ICR_LOW, NMI, 1),
        (&MOV_ESI_ICR, xapic::ICR_LOW, INIT, 0),
        (&MOV_ESI_ICR, xapic::ID, 5 << 24, 0),
        (&[0x66, 0x89, 0x30], xapic::ICR_LOW, INIT, 1),
        (&MOV_ESI_ICR, xapic::ICR_LOW + 4, 0, 1),
    ];
    for (code, offset, value, destination) in cases {
        let mut v = trapped();
        v.cpu.xapic[(xapic::ICR_HIGH / 16) as usize] = destination << 24;
        v.regs.set(Gpr::Rsi, value);
        let r = write(&mut v, code, offset);
        assert_eq!((r, injected(&v)), (Ok(ExitAction::Resume), GP));
        assert_eq!(rip(&v), CODE, "{code:02x?} at {offset:#x}: not completed");
        assert_eq!(v.cpu.xapic_writes, 0);
        assert_eq!(v.audit.total(), 1, "one record");
        let rec = *v.audit.last().unwrap();
        assert_eq!(
            (rec.kind, rec.gpa),
            (AuditKind::EptViolation, PAGE + offset)
        );
    }
}

#[test]
fn a_write_that_is_no_stores_or_outside_xapic_mode_is_refused() {
    // The processor's own A/D write of a paging-structure entry on the
    // page (qualification bit 8 clear).
    let mut v = trapped();
    v.regs.set(Gpr::Rsi, SIPI);
    v.memory.phys().write(Hpa(CODE), &MOV_ESI_ICR);
    v.vmcs.set(GuestNatural::Rip, CODE);
    v.vmcs
        .set(ReadOnly64::GuestPhysicalAddress, PAGE + xapic::ICR_LOW);
    let r = run(&mut v, ExitReason::EptViolation, WRITE_QUAL & !(1 << 8), 0);
    assert_eq!(
        (r, injected(&v), v.cpu.xapic_writes),
        (Ok(ExitAction::Resume), GP, 0)
    );
    assert_eq!(v.audit.total(), 1);
    // The APIC switched to x2APIC mode while the trap was open.
    let mut v = trapped();
    v.cpu.set_msr(crate::msrs::IA32_APIC_BASE, 0xfee0_0d00);
    let r = icr(&mut v, SIPI, 1);
    assert_eq!(
        (r, injected(&v), v.cpu.xapic_writes),
        (Ok(ExitAction::Resume), GP, 0)
    );
    assert_eq!(v.audit.total(), 1);
}

#[test]
fn a_write_after_the_trap_closed_runs_again() {
    let mut v = trapped();
    let mut env = Env::of(&mut v).unwrap();
    env.close_xapic_trap().unwrap();
    // This processor cached the read-only translation before the close.
    assert_eq!(icr(&mut v, INIT, 1), Ok(ExitAction::Resume));
    assert_eq!(rip(&v), CODE, "executed again, not completed");
    assert_eq!((v.cpu.xapic_writes, injected(&v)), (0, 0));
    assert_eq!(v.audit.total(), 0);
}

#[test]
fn locking_text_keeps_the_trap() {
    let mut v = trapped();
    let id = ok(
        &mut v,
        Call::RegisterRegion,
        [TEXT, 0x4000, RegionKind::Text as u64],
    );
    ok(&mut v, Call::LockRegion, [id, 0, 0]);
    assert!(v.policy.wx, "the view was recomputed");
    assert_eq!(perms(&mut v, 0), Perms::READ);
}

#[test]
fn the_first_untrusted_context_closes_the_trap() {
    let mut v = trapped();
    ok(&mut v, Call::CreateContext, [0; 3]);
    assert_eq!(v.policy.xapic_trap, None);
    assert_eq!(perms(&mut v, 0), Perms::RW);
    assert_eq!(perms(&mut v, 1), Perms::RW);
}

#[test]
fn the_last_start_closes_the_trap() {
    let mut v = trapped();
    v.joined_aps = 2;
    for started in 1..=2 {
        v.startup = Startup::Never;
        v.vmcs
            .set(Guest32::ActivityState, ActivityState::WaitForSipi as u64);
        assert_eq!(
            run(&mut v, ExitReason::Sipi, 0x9a, 0),
            Ok(ExitAction::Resume)
        );
        assert_eq!(v.started_aps, started);
        assert_eq!(
            v.policy.xapic_trap.is_some(),
            started < 2,
            "after {started}"
        );
    }
    assert_eq!(perms(&mut v, 0), Perms::RW);
}
