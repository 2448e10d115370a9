//! Validated self-patching (ABI 1.2): the execute rule, the patch-site
//! table's registration, and writes to locked text let through one
//! instruction at a time (EPT violation, then the monitor-trap-flag exit)
//! and judged: legal jump-label rewrites stand, everything else is undone,
//! audited and faulted.

use okernel_abi::policy::{ExecuteRule, PatchFormat, RegionKind};

use super::*;
use crate::bits::{DEBUGCTL_BTF, RFLAGS_IF, RFLAGS_TF};
use crate::memmap::Hpa;
use crate::policy::audit::{AuditAction, AuditKind};
use crate::policy::patch::{NOP2, NOP5, PatchSites, PatchTable, Refusal, SiteSize, judge_page};
use crate::vmx::controls::PrimaryProcBased;
use crate::vmx::fields::{Guest32, Guest64, ReadOnly32, ReadOnly64, ReadOnlyNatural};

/// Where the guest's page tables map the kernel image: linear
/// `KBASE + x` is physical `x` (as Linux maps its image at
/// `__START_KERNEL_map`), so sites are found by a non-identity offset.
pub(super) const KBASE: u64 = 0xffff_ffff_8000_0000;
/// A PDPT for the top 1 GiB (PML4 slot 511, PDPT slot 510 -> [`PD`]).
const PDPT_HI: u64 = 0x10_4000;
/// The jump table, in rodata.
pub(super) const TABLE: u64 = RODATA + 0x80;
/// A 5-byte site on text page 0.
const LONG: u64 = TEXT + 0x100;
/// A 2-byte site on text page 0.
const SHORT: u64 = TEXT + 0x300;
/// A 5-byte site straddling text pages 0 and 1.
const STRADDLE: u64 = TEXT + 0xffe;
/// Each site's jump target.
pub(super) const TARGETS: [u64; 3] = [TEXT + 0x800, SHORT + 0x20, TEXT + 0x1800];
/// A text page with no site.
pub(super) const PLAIN_TEXT: u64 = TEXT + 0x2000;

const P: u64 = 1;
const RW: u64 = 2;
/// EPT-violation qualification: a data write, R and X allowed, linear
/// address valid, a translation (SDM Vol. 3C Table 28-7).
const WRITE_QUAL: u64 = (1 << 1) | (1 << 3) | (1 << 5) | (1 << 7) | (1 << 8);
/// The writing instruction.
const WRITER: u64 = RIP;

pub(super) fn w8(v: &PVcpu, at: u64, bytes: &[u8]) {
    v.memory.phys().write(Hpa(at), bytes);
}

pub(super) fn r(v: &PVcpu, at: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    v.memory.phys().copy(Hpa(at), &mut b);
    b
}

fn entry(site: u64, target: u64, i: u64) -> [u8; 16] {
    let at = KBASE + TABLE + 16 * i;
    let mut e = [0u8; 16];
    e[..4].copy_from_slice(&((KBASE + site).wrapping_sub(at) as i32).to_le_bytes());
    e[4..8].copy_from_slice(&((KBASE + target).wrapping_sub(at + 4) as i32).to_le_bytes());
    e[8..].copy_from_slice(&0x1000i64.to_le_bytes());
    e
}

pub(super) fn jump5(site: u64, target: u64) -> [u8; 5] {
    let rel = ((target as i64) - (site as i64 + 5)) as i32;
    let b = rel.to_le_bytes();
    [0xe9, b[0], b[1], b[2], b[3]]
}

/// A Linux-like guest before its lock: the kernel image mapped high, three
/// sites holding their NOPs, the table in rodata, text registered and
/// rodata locked. Returns the text region's id.
pub(super) fn image(v: &mut PVcpu) -> u64 {
    let w = |v: &PVcpu, at: u64, x: u64| v.memory.phys().write(Hpa(at), &x.to_le_bytes());
    w(v, PML4 + 8 * 511, PDPT_HI | P | RW);
    w(v, PDPT_HI + 8 * 510, PD | P | RW);
    w8(v, LONG, &NOP5);
    w8(v, SHORT, &NOP2);
    w8(v, STRADDLE, &NOP5);
    for (i, (&site, &target)) in [LONG, SHORT, STRADDLE].iter().zip(&TARGETS).enumerate() {
        w8(v, TABLE + 16 * i as u64, &entry(site, target, i as u64));
    }
    let text = ok(
        v,
        Call::RegisterRegion,
        [TEXT, 0x4000, RegionKind::Text as u64],
    );
    lock(v, RODATA, 0x1000, RegionKind::Rodata);
    text
}

/// No monitor trap flag: steps use RFLAGS.TF (Bochs 2.7's Skylake-X).
const NO_MTF: PolicyCaps = PolicyCaps { mtf: false, ..ALL };

/// Both ways a step can come back.
pub(super) const METHODS: [PolicyCaps; 2] = [ALL, NO_MTF];

/// The guest's RFLAGS while the kernel writes: IF set, bit 1 fixed.
pub(super) const GUEST_RFLAGS: u64 = 0x202;
/// The exception bitmap the monitor runs with (none intercepted).
pub(super) const BITMAP: u64 = 0;

/// [`image`], the rule and the table registered, text locked.
fn locked() -> PVcpu {
    locked_with(ALL)
}

/// [`locked`] on a processor with `caps`.
fn locked_with(caps: PolicyCaps) -> PVcpu {
    let mut v = pvcpu_with(caps);
    v.vmcs.set(GuestNatural::Rflags, GUEST_RFLAGS);
    v.vmcs.set(Control32::ExceptionBitmap, BITMAP);
    ok(
        &mut v,
        Call::SetExecuteRule,
        [ExecuteRule::GuestPageTables as u64, 0, 0],
    );
    let text = image(&mut v);
    let sites = ok(
        &mut v,
        Call::RegisterPatchSites,
        [KBASE + TABLE, 48, PatchFormat::LinuxJumpEntry as u64],
    );
    assert_eq!(sites, 3);
    ok(&mut v, Call::LockRegion, [text, 0, 0]);
    v
}

fn mtf_on(v: &PVcpu) -> bool {
    v.vmcs.get(Control32::PrimaryProcessorBasedControls)
        & u64::from(PrimaryProcBased::MONITOR_TRAP_FLAG.bits())
        != 0
}

const NMI_BLOCKED: u64 = 1 << 3;

/// Whether a step is armed, by the method the processor allows.
fn armed(v: &PVcpu) -> bool {
    if v.policy.caps.mtf {
        mtf_on(v)
    } else {
        let rflags = v.vmcs.get(GuestNatural::Rflags);
        rflags & RFLAGS_TF != 0
            && rflags & RFLAGS_IF == 0
            && v.vmcs.get(Control32::ExceptionBitmap) == 0xffff_ffff
            && v.vmcs.get(Guest32::InterruptibilityState) & NMI_BLOCKED != 0
    }
}

/// Whether everything a step changed is back as the guest had it.
fn disarmed(v: &PVcpu) -> bool {
    !mtf_on(v)
        && v.vmcs.get(GuestNatural::Rflags) & (RFLAGS_TF | RFLAGS_IF)
            == GUEST_RFLAGS & (RFLAGS_TF | RFLAGS_IF)
        && v.vmcs.get(Control32::ExceptionBitmap) == BITMAP
        && v.vmcs.get(Guest32::InterruptibilityState) & NMI_BLOCKED == 0
}

/// The guest's write at `gpa` faults on the EPT.
pub(super) fn violation(v: &mut PVcpu, gpa: u64) -> Result<ExitAction, ExitError> {
    v.vmcs.set(GuestNatural::Rip, WRITER);
    v.vmcs.set(ReadOnly64::GuestPhysicalAddress, gpa);
    v.vmcs.set(
        ReadOnlyNatural::GuestLinearAddress,
        0x7fff_0000 + (gpa & 0xfff),
    );
    run(v, ExitReason::EptViolation, WRITE_QUAL, 0)
}

/// The instruction ran (moving RIP on by 4) and the step's exit
/// follows: the MTF exit, or the single-step #DB.
pub(super) fn mtf(v: &mut PVcpu) -> Result<ExitAction, ExitError> {
    v.vmcs.set(GuestNatural::Rip, WRITER + 4);
    if v.policy.caps.mtf {
        run(v, ExitReason::MonitorTrapFlag, 0, 0)
    } else {
        // #DB, a hardware exception, valid; qualification BS.
        synth(v, ExitReason::ExceptionOrNmi as u32, 1 << 14, 0);
        v.vmcs.set(ReadOnly32::ExitInterruptionInfo, 0x8000_0301);
        handle_exit(v)
    }
}

/// One instruction writing `bytes` at `gpa`, through the whole step;
/// returns the MTF exit's result.
pub(super) fn write(v: &mut PVcpu, gpa: u64, bytes: &[u8]) -> Result<ExitAction, ExitError> {
    assert_eq!(violation(v, gpa), Ok(ExitAction::Resume), "the page opens");
    assert_eq!(rip(v), WRITER, "the instruction runs again");
    assert!(armed(v), "the step is armed");
    assert!(perms(v, 0, gpa & !0xfff).unwrap().contains(Perms::WRITE));
    w8(v, gpa, bytes);
    let r = mtf(v);
    assert!(disarmed(v), "the guest's state is back");
    assert_eq!(
        perms(v, 0, gpa & !0xfff),
        Some(Perms::RX),
        "the page is closed"
    );
    r
}

#[test]
fn the_breakpoint_protocol_flips_a_long_site_both_ways() {
    for caps in METHODS {
        let mut v = locked_with(caps);
        let jump = jump5(KBASE + LONG, KBASE + TARGETS[0]);
        for (from, to) in [(NOP5, jump), (jump, NOP5)] {
            assert_eq!(r(&v, LONG, 5), from);
            // int3, the tail, the head: Linux's text_poke_bp_batch.
            assert_eq!(write(&mut v, LONG, &[0xcc]), Ok(ExitAction::Resume));
            assert_eq!(write(&mut v, LONG + 1, &to[1..]), Ok(ExitAction::Resume));
            assert_eq!(write(&mut v, LONG, &to[..1]), Ok(ExitAction::Resume));
            assert_eq!(r(&v, LONG, 5), to);
            assert_eq!(injected(&v), 0);
        }
        assert_eq!(v.policy.patch.validated, 6);
        assert_eq!(v.audit.total(), 0, "legal patches are not violations");
    }
}

#[test]
fn a_short_site_takes_its_short_jump_and_its_nop() {
    for caps in METHODS {
        let mut v = locked_with(caps);
        let rel = (TARGETS[1] - (SHORT + 2)) as u8;
        assert_eq!(write(&mut v, SHORT, &[0xcc]), Ok(ExitAction::Resume));
        assert_eq!(write(&mut v, SHORT + 1, &[rel]), Ok(ExitAction::Resume));
        assert_eq!(write(&mut v, SHORT, &[0xeb]), Ok(ExitAction::Resume));
        assert_eq!(r(&v, SHORT, 2), [0xeb, rel]);
        // Both bytes in one instruction, back to the NOP.
        assert_eq!(write(&mut v, SHORT, &NOP2), Ok(ExitAction::Resume));
        assert_eq!(v.audit.total(), 0);
    }
}

/// Asserts the last step was refused: old bytes back, #GP at the writer,
/// one record naming `gpa`.
pub(super) fn assert_refused(
    v: &PVcpu,
    res: Result<ExitAction, ExitError>,
    gpa: u64,
    records: u64,
) {
    assert_injected(v, res, GP);
    assert_eq!(rip(v), WRITER, "#GP at the writing instruction");
    assert_eq!(v.audit.total(), records);
    let rec = *v.audit.last().unwrap();
    assert_eq!(
        (rec.kind, rec.action, rec.gpa, rec.rip),
        (AuditKind::EptViolation, AuditAction::InjectGp, gpa, WRITER)
    );
}

#[test]
fn a_jump_elsewhere_or_a_torn_site_is_undone_audited_and_faulted() {
    for caps in METHODS {
        let mut v = locked_with(caps);
        let elsewhere = jump5(KBASE + LONG, KBASE + PLAIN_TEXT);
        let res = write(&mut v, LONG, &elsewhere);
        assert_refused(&v, res, LONG, 1);
        assert_eq!(r(&v, LONG, 5), NOP5, "the old bytes are back");
        // A head that does not match the tail: executable garbage.
        v.vmcs.set(Control32::EntryInterruptionInfo, 0);
        let res = write(&mut v, LONG, &[0xe9]);
        assert_refused(&v, res, LONG, 2);
        assert_eq!(r(&v, LONG, 5), NOP5);
        // A short NOP in a long site: the rest would run as instructions.
        v.vmcs.set(Control32::EntryInterruptionInfo, 0);
        let res = write(&mut v, LONG, &NOP2);
        assert_refused(&v, res, LONG, 3);
        assert_eq!(v.policy.patch.validated, 0);
    }
}

#[test]
fn a_byte_outside_every_site_is_undone_even_with_a_legal_site_change() {
    for caps in METHODS {
        let mut v = locked_with(caps);
        // One instruction changes a legal int3 at the site and the byte after.
        let before = r(&v, LONG, 8);
        let res = write(&mut v, LONG, &[0xcc, 0x1f, 0x44, 0x00, 0x00, 0x90]);
        assert_refused(&v, res, LONG + 5, 1);
        assert_eq!(r(&v, LONG, 8), before);
    }
}

#[test]
fn text_without_sites_is_denied_at_once() {
    for caps in METHODS {
        let mut v = locked_with(caps);
        let res = violation(&mut v, PLAIN_TEXT + 8);
        assert_injected(&v, res, GP);
        assert!(!mtf_on(&v), "no step for a page without sites");
        assert!(!v.policy.patch.step.open());
        assert_eq!(v.audit.total(), 1);
    }
}

/// The single-step trap Bochs 2.7 saves as pending when the instruction
/// of an open trap-flag step faults on its second page: dropped when the
/// page opens (else VM entry delivers it before the instruction, the
/// step ends with nothing written and the write faults again, for ever:
/// seen with Linux's static-call updates).
#[test]
fn a_second_page_drops_the_unfinished_instructions_pending_single_step() {
    const BS: u64 = 1 << 14;
    let mut v = locked_with(NO_MTF);
    assert_eq!(violation(&mut v, STRADDLE), Ok(ExitAction::Resume));
    v.vmcs.set(GuestNatural::PendingDebugExceptions, BS | 0x1);
    assert_eq!(violation(&mut v, STRADDLE + 2), Ok(ExitAction::Resume));
    assert_eq!(v.policy.patch.step.count, 2);
    assert_eq!(
        v.vmcs.get(GuestNatural::PendingDebugExceptions),
        0x1,
        "BS dropped, the rest kept"
    );
    w8(&v, STRADDLE, &[0xcc]);
    assert_eq!(mtf(&mut v), Ok(ExitAction::Resume));
    assert_eq!(r(&v, STRADDLE, 1), [0xcc]);
}

#[test]
fn a_write_straddling_two_pages_opens_both_and_is_judged_whole() {
    for caps in METHODS {
        let mut v = locked_with(caps);
        assert_eq!(violation(&mut v, STRADDLE), Ok(ExitAction::Resume));
        // The same instruction then faults on the second page.
        assert_eq!(violation(&mut v, STRADDLE + 2), Ok(ExitAction::Resume));
        assert_eq!(v.policy.patch.step.count, 2);
        w8(&v, STRADDLE, &[0xcc]);
        assert_eq!(mtf(&mut v), Ok(ExitAction::Resume));
        for page in [TEXT, TEXT + 0x1000] {
            assert_eq!(perms(&v, 0, page), Some(Perms::RX));
        }
        let jump = jump5(KBASE + STRADDLE, KBASE + TARGETS[2]);
        assert_eq!(violation(&mut v, STRADDLE + 1), Ok(ExitAction::Resume));
        assert_eq!(violation(&mut v, STRADDLE + 2), Ok(ExitAction::Resume));
        w8(&v, STRADDLE + 1, &jump[1..]);
        assert_eq!(mtf(&mut v), Ok(ExitAction::Resume));
        assert_eq!(
            r(&v, STRADDLE, 5),
            [0xcc, jump[1], jump[2], jump[3], jump[4]]
        );
        // A torn tail on the second page is undone on both.
        assert_eq!(violation(&mut v, STRADDLE + 1), Ok(ExitAction::Resume));
        assert_eq!(violation(&mut v, STRADDLE + 2), Ok(ExitAction::Resume));
        w8(&v, STRADDLE + 1, &[0x11, 0x22, 0x33, 0x44]);
        let res = mtf(&mut v);
        assert_injected(&v, res, GP);
        assert_eq!(
            r(&v, STRADDLE, 5),
            [0xcc, jump[1], jump[2], jump[3], jump[4]]
        );
        assert_eq!(v.audit.total(), 1);
    }
}

#[test]
fn an_event_delivered_before_the_write_leaves_nothing_to_judge() {
    let mut v = locked();
    assert_eq!(violation(&mut v, LONG), Ok(ExitAction::Resume));
    // An interrupt came first: the MTF exit is at its handler, nothing
    // was written; the page closes and the write will fault again.
    v.vmcs.set(GuestNatural::Rip, 0x9000);
    assert_eq!(
        run(&mut v, ExitReason::MonitorTrapFlag, 0, 0),
        Ok(ExitAction::Resume)
    );
    assert_eq!(rip(&v), 0x9000);
    assert_eq!(perms(&v, 0, TEXT), Some(Perms::RX));
    assert!(!mtf_on(&v));
    assert_eq!((v.policy.patch.validated, v.audit.total()), (0, 0));
}

#[test]
fn a_monitor_trap_flag_exit_without_a_step_just_resumes() {
    let mut v = locked();
    v.vmcs.set(GuestNatural::Rip, 0x9000);
    assert_eq!(
        run(&mut v, ExitReason::MonitorTrapFlag, 0, 0),
        Ok(ExitAction::Resume)
    );
    assert_eq!((rip(&v), v.audit.total()), (0x9000, 0));
}

#[test]
fn a_guest_already_single_stepping_or_in_an_interrupt_shadow_gets_no_trap_flag_step() {
    for (rflags, shadow) in [
        (GUEST_RFLAGS | RFLAGS_TF, 0),
        (GUEST_RFLAGS, 1),
        (GUEST_RFLAGS, 2),
    ] {
        let mut v = locked_with(NO_MTF);
        v.vmcs.set(GuestNatural::Rflags, rflags);
        v.vmcs.set(Guest32::InterruptibilityState, shadow);
        let res = violation(&mut v, LONG);
        assert_injected(&v, res, GP);
        assert!(!v.policy.patch.step.open(), "{rflags:#x} {shadow}");
        assert_eq!(v.vmcs.get(Control32::ExceptionBitmap), BITMAP);
    }
    // With the monitor trap flag neither matters.
    let mut v = locked();
    v.vmcs.set(GuestNatural::Rflags, GUEST_RFLAGS | RFLAGS_TF);
    assert_eq!(violation(&mut v, LONG), Ok(ExitAction::Resume));
}

#[test]
fn a_fault_in_the_writing_instruction_ends_the_step_before_its_handler_runs() {
    let mut v = locked_with(NO_MTF);
    assert_eq!(violation(&mut v, LONG), Ok(ExitAction::Resume));
    // The instruction's source read faults: #PF (hardware exception 14,
    // error code valid) exits through the step's exception bitmap.
    synth(&mut v, ExitReason::ExceptionOrNmi as u32, 0xdead_0000, 0);
    v.vmcs.set(ReadOnly32::ExitInterruptionInfo, 0x8000_0b0e);
    v.vmcs.set(ReadOnly32::ExitInterruptionErrorCode, 0);
    assert_eq!(handle_exit(&mut v), Ok(ExitAction::Resume));
    assert!(!v.policy.patch.step.open() && disarmed(&v));
    assert_eq!(
        perms(&v, 0, TEXT),
        Some(Perms::RX),
        "closed before the handler runs"
    );
    assert_eq!(v.cpu.cr2, 0xdead_0000, "the guest's CR2 as a #PF loads it");
    assert_eq!(injected(&v), 0x8000_0b0e, "the #PF is delivered");
    assert_eq!(v.audit.total(), 0);
}

#[test]
fn the_consoles_tick_leaves_an_open_step_open() {
    // The timer's exit is not the guest's: the writing instruction has
    // not run yet (debug traps and pending MTF exits come before the
    // timer's, SDM Vol. 3C §26.2), so the step stays as it was.
    for caps in METHODS {
        let mut v = locked_with(caps);
        assert_eq!(violation(&mut v, LONG), Ok(ExitAction::Resume));
        let before = (perms(&v, 0, TEXT), injected(&v));
        assert_eq!(
            run(&mut v, ExitReason::PreemptionTimer, 0, 0),
            Ok(ExitAction::Resume)
        );
        assert!(v.policy.patch.step.open(), "{caps:?}");
        assert_eq!((perms(&v, 0, TEXT), injected(&v)), before);
        assert_eq!(v.audit.total(), 0);
    }
}

#[test]
fn another_exit_while_a_step_is_open_ends_it_first() {
    for caps in METHODS {
        let mut v = locked_with(caps);
        assert_eq!(violation(&mut v, LONG), Ok(ExitAction::Resume));
        // The write lands outside the site, then a WBINVD exits.
        w8(&v, LONG + 5, &[0xcc]);
        v.vmcs.set(GuestNatural::Rip, RIP);
        let _ = run(&mut v, ExitReason::Wbinvd, 0, 2);
        assert!(!v.policy.patch.step.open() && disarmed(&v));
        assert_eq!(perms(&v, 0, TEXT), Some(Perms::RX));
        assert_eq!(r(&v, LONG + 5, 1), [0x00], "the write was undone");
        assert_eq!(v.audit.total(), 1);
        // A read of monitor memory ends a step the same way.
        assert_eq!(violation(&mut v, LONG), Ok(ExitAction::Resume));
        v.vmcs
            .set(ReadOnly64::GuestPhysicalAddress, MONITOR[0].start);
        let _ = run(&mut v, ExitReason::EptViolation, 0x181, 0);
        assert!(!v.policy.patch.step.open() && disarmed(&v));
        assert_eq!(v.audit.total(), 2, "the violation's own record only");
    }
}

#[test]
fn the_rule_and_the_table_are_refused_when_malformed_late_or_untrusted() {
    let mut v = pvcpu();
    assert_eq!(
        call(&mut v, Call::SetExecuteRule, [2, 0, 0]),
        Status::InvalidArgument
    );
    // The rule only from the trusted context, and only before any lock:
    // it decides what a lock applies.
    ok(&mut v, Call::CreateContext, [0, 0, 0]);
    enter(&mut v, 1);
    assert_eq!(
        call(&mut v, Call::SetExecuteRule, [1, 0, 0]),
        Status::PermissionDenied
    );
    v.policy.current = 0;
    v.memory.set_current(0);
    let text = image(&mut v);
    assert_eq!(
        call(&mut v, Call::SetExecuteRule, [1, 0, 0]),
        Status::Locked,
        "rodata is locked"
    );
    assert_eq!(v.policy.execute, ExecuteRule::LockedTextOnly);
    let reg = |v: &mut PVcpu, args| call(v, Call::RegisterPatchSites, args);
    for (args, status) in [
        ([KBASE + TABLE, 48, 9], Status::InvalidArgument),
        ([KBASE + TABLE, 0, 1], Status::Empty),
        ([KBASE + TABLE, 40, 1], Status::Unaligned),
        ([KBASE + TABLE + 4, 48, 1], Status::Unaligned),
        // Not mapped by the guest's page tables.
        ([0xffff_9000_0000_0000, 48, 1], Status::InvalidArgument),
        // In RAM that is not locked read-only.
        ([KBASE + DATA, 48, 1], Status::InvalidArgument),
        // Ending in the last page of the address space, or past it.
        ([u64::MAX - 0xfff, 0x1000, 1], Status::InvalidArgument),
        ([u64::MAX - 0xf, 0x20, 1], Status::InvalidArgument),
    ] {
        assert_eq!(reg(&mut v, args), status, "{args:x?}");
    }
    // A site that holds neither its NOP nor its jump.
    w8(&v, SHORT, &[0x90, 0x90]);
    assert_eq!(reg(&mut v, [KBASE + TABLE, 48, 1]), Status::InvalidArgument);
    assert!(!v.policy.patch.any(), "a refused table registers nothing");
    w8(&v, SHORT, &NOP2);
    enter(&mut v, 1);
    assert_eq!(
        reg(&mut v, [KBASE + TABLE, 48, 1]),
        Status::PermissionDenied
    );
    v.policy.current = 0;
    v.memory.set_current(0);
    ok(&mut v, Call::LockRegion, [text, 0, 0]);
    // After the text lock neither may change.
    assert_eq!(reg(&mut v, [KBASE + TABLE, 48, 1]), Status::Locked);
    assert_eq!(
        call(&mut v, Call::SetExecuteRule, [1, 0, 0]),
        Status::Locked
    );
}

#[test]
fn a_table_in_the_last_page_of_the_address_space_registers_without_overflow() {
    // The guest maps rodata a second time at the very top (PML4 511,
    // PDPT 511, PD 511, PT 511).
    const PD_TOP: u64 = 0x10_5000;
    const PT_TOP: u64 = 0x10_6000;
    const TOP: u64 = 0xffff_ffff_ffff_f000;
    let mut v = pvcpu();
    v.vmcs.set(GuestNatural::Rflags, GUEST_RFLAGS);
    v.vmcs.set(Control32::ExceptionBitmap, BITMAP);
    ok(
        &mut v,
        Call::SetExecuteRule,
        [ExecuteRule::GuestPageTables as u64, 0, 0],
    );
    let text = image(&mut v);
    for (at, entry) in [
        (PDPT_HI + 8 * 511, PD_TOP),
        (PD_TOP + 8 * 511, PT_TOP),
        (PT_TOP + 8 * 511, RODATA),
    ] {
        v.memory
            .phys()
            .write(Hpa(at), &(entry | P | RW).to_le_bytes());
    }
    // Past the end of the address space.
    assert_eq!(
        call(&mut v, Call::RegisterPatchSites, [TOP + 0x80, 0x1000, 1]),
        Status::InvalidArgument
    );
    // The same table through its alias: entries are relative, so the
    // sites are the same.
    assert_eq!(ok(&mut v, Call::RegisterPatchSites, [TOP + 0x80, 48, 1]), 3);
    ok(&mut v, Call::LockRegion, [text, 0, 0]);
    let res = write(&mut v, LONG, &[0xcc]);
    assert_eq!(res, Ok(ExitAction::Resume));
    assert_eq!(v.policy.patch.validated, 1);
}

#[test]
fn a_site_half_in_text_is_not_guarded() {
    // A 2-byte site in the last byte of the text region: its NOP is found,
    // but its second byte is not text, so it is no site (a write to it is
    // denied like any other write to text).
    let mut v = pvcpu();
    let end = TEXT + 0x4000;
    w8(&v, end - 1, &NOP2);
    w8(&v, TABLE, &entry(end - 1, end + 0x10, 0));
    let text = ok(
        &mut v,
        Call::RegisterRegion,
        [TEXT, 0x4000, RegionKind::Text as u64],
    );
    for (at, entry) in [(PML4 + 8 * 511, PDPT_HI), (PDPT_HI + 8 * 510, PD)] {
        v.memory
            .phys()
            .write(Hpa(at), &(entry | P | RW).to_le_bytes());
    }
    lock(&mut v, RODATA, 0x1000, RegionKind::Rodata);
    assert_eq!(
        ok(&mut v, Call::RegisterPatchSites, [KBASE + TABLE, 16, 1]),
        0
    );
    ok(&mut v, Call::LockRegion, [text, 0, 0]);
    let res = violation(&mut v, end - 1);
    assert_injected(&v, res, GP);
    assert!(!v.policy.patch.step.open());
}

#[test]
fn a_branch_trace_guest_is_single_stepped_by_instruction() {
    // IA32_DEBUGCTL.BTF would make TF trap at the next branch, the page
    // open until then: the step clears it and puts it back.
    const LBR: u64 = 1;
    let mut v = locked_with(NO_MTF);
    v.vmcs.set(Guest64::Debugctl, DEBUGCTL_BTF | LBR);
    assert_eq!(violation(&mut v, LONG), Ok(ExitAction::Resume));
    assert!(armed(&v));
    assert_eq!(v.vmcs.get(Guest64::Debugctl), LBR, "BTF off for the step");
    w8(&v, LONG, &[0xcc]);
    assert_eq!(mtf(&mut v), Ok(ExitAction::Resume));
    assert!(disarmed(&v));
    assert_eq!(
        v.vmcs.get(Guest64::Debugctl),
        DEBUGCTL_BTF | LBR,
        "BTF back"
    );
}

#[test]
fn no_exit_takes_the_fast_path_around_an_open_step() {
    for caps in METHODS {
        let mut v = locked_with(caps);
        for reason in [ExitReason::Cpuid, ExitReason::Vmcall] {
            assert_eq!(violation(&mut v, LONG), Ok(ExitAction::Resume));
            w8(&v, LONG + 5, &[0xcc]);
            v.regs.set(Gpr::Rax, Call::Null.raw());
            v.vmcs.set(GuestNatural::Rip, RIP);
            let _ = run(&mut v, reason, 0, 3);
            assert!(!v.policy.patch.step.open() && disarmed(&v), "{reason:?}");
            assert_eq!(r(&v, LONG + 5, 1), [0x00], "{reason:?}: undone");
            assert_eq!(perms(&v, 0, TEXT), Some(Perms::RX));
        }
        assert_eq!(v.audit.total(), 2);
    }
}

#[test]
fn sites_that_share_bytes_are_each_judged() {
    // Two sites of one table overlap: a long jump at A whose rel32 ends
    // in `66 90`, which is also the NOP of a short site at A + 3. With the
    // long site in its transitional form, `00 00` there is legal for it
    // and illegal for the short one: the write is refused.
    const A: u64 = 0x1000;
    const TVA: u64 = 0xffff_ffff_8200_0000;
    const TGPA: u64 = 0x8000;
    // The image maps linearly: the table's translation gives every site's.
    const A_VA: u64 = TVA - TGPA + A;
    let rel = 0x9066_0010u32 as i32;
    let r = rel.to_le_bytes();
    assert_eq!(r[2..], NOP2, "the short site's NOP inside the jump");
    let mut mem = vec![0u8; 0x10000];
    let mut put = |at: u64, bytes: &[u8]| mem[at as usize..][..bytes.len()].copy_from_slice(bytes);
    let field = |at: u64, to: u64| (to.wrapping_sub(at) as i32).to_le_bytes();
    let long_target = A_VA.wrapping_add(5).wrapping_add(rel as i64 as u64);
    put(TGPA, &field(TVA, A_VA));
    put(TGPA + 4, &field(TVA + 4, long_target));
    put(TGPA + 16, &field(TVA + 16, A_VA + 3));
    put(TGPA + 20, &field(TVA + 20, A_VA + 0x20));
    put(A, &[0xcc, r[0], r[1], r[2], r[3]]);
    let mut sites = PatchSites::default();
    sites.tables[0] = Some(PatchTable {
        format: PatchFormat::LinuxJumpEntry,
        va: TVA,
        gpa: Gpa(TGPA),
        entries: 2,
        first: 0,
    });
    sites.set_size(0, SiteSize::Long);
    sites.set_size(1, SiteSize::Short);
    let page = Gpa(A).page_base();
    let mut before = [0u8; 4096];
    before.copy_from_slice(&mem[page.0 as usize..][..4096]);
    // The transitional long site's tail takes its NOP's bytes.
    mem[A as usize + 3..][..2].copy_from_slice(&[0x00, 0x00]);
    let judge = |sites: &PatchSites| {
        let read = |gpa: Gpa, buf: &mut [u8]| {
            buf.copy_from_slice(&mem[gpa.0 as usize..][..buf.len()]);
            true
        };
        judge_page(sites, page, &before, &mut { read }, &mut { read }, &|_| {
            false
        })
    };
    assert_eq!(judge(&sites), Err(Refusal::IllegalForm(Gpa(A + 3))));
    // The same bytes with the long site alone are legal.
    sites.set_size(1, SiteSize::Unguarded);
    assert_eq!(judge(&sites), Ok(1));
}

#[test]
fn the_execute_rule_decides_whether_other_ram_and_locked_data_keep_execute() {
    for (rule, data, rodata) in [
        (
            ExecuteRule::LockedTextOnly,
            Perms::RW | Perms::USER_EXECUTE,
            Perms::R,
        ),
        (ExecuteRule::GuestPageTables, Perms::RWX, Perms::RX),
    ] {
        let mut v = pvcpu();
        ok(&mut v, Call::SetExecuteRule, [rule as u64, 0, 0]);
        lock(&mut v, RODATA, 0x1000, RegionKind::Rodata);
        lock(&mut v, TEXT, 0x4000, RegionKind::Text);
        assert_eq!(perms(&v, 0, DATA), Some(data), "{rule:?}");
        assert_eq!(
            perms(&v, 0, RODATA),
            Some(rodata),
            "{rule:?}: never writable"
        );
        assert_eq!(v.policy.wx, rule == ExecuteRule::LockedTextOnly);
        assert!(!perms(&v, 0, TEXT).unwrap().contains(Perms::WRITE));
    }
}

/// A writing instruction that ends at the top of the canonical half: the
/// step's exit (MTF, or the single-step #DB) saves RIP 2^47, which VM
/// entry cannot load (SDM Vol. 3C §27.3.1.4). Legal or refused, the guest
/// gets the fetch's #GP — here, with no IDT the monitor could deliver
/// through, at the writing instruction — and the monitor never resumes at
/// the non-canonical RIP (found by the review of `exit::deliver`).
#[test]
fn a_step_ending_at_the_canonical_boundary_never_resumes_there() {
    const TOP48: u64 = 0x0000_8000_0000_0000;
    let writer = TOP48 - 4;
    for caps in METHODS {
        for (bytes, legal) in [(&[0xcc][..], true), (&[0x90][..], false)] {
            let mut v = locked_with(caps);
            v.vmcs.set(GuestNatural::Rip, writer);
            v.vmcs.set(ReadOnly64::GuestPhysicalAddress, LONG);
            v.vmcs.set(
                ReadOnlyNatural::GuestLinearAddress,
                0x7fff_0000 + (LONG & 0xfff),
            );
            assert_eq!(
                run(&mut v, ExitReason::EptViolation, WRITE_QUAL, 0),
                Ok(ExitAction::Resume)
            );
            assert!(armed(&v), "the step is armed");
            w8(&v, LONG, bytes);
            v.vmcs.set(GuestNatural::Rip, TOP48);
            let r = if v.policy.caps.mtf {
                run(&mut v, ExitReason::MonitorTrapFlag, 0, 0)
            } else {
                synth(&mut v, ExitReason::ExceptionOrNmi as u32, 1 << 14, 0);
                v.vmcs.set(ReadOnly32::ExitInterruptionInfo, 0x8000_0301);
                handle_exit(&mut v)
            };
            assert_eq!(r, Ok(ExitAction::Resume), "legal {legal}");
            assert_eq!(rip(&v), writer, "legal {legal}: never 2^47");
            assert_eq!(injected(&v), GP, "legal {legal}");
            assert_eq!(v.policy.patch.validated, u64::from(legal), "legal {legal}");
        }
    }
}

thread_local! {
    /// The processors a test's `stop_others` hook was asked to stop for.
    static STOPPED_FOR: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn stops(me: usize) -> Result<(), usize> {
    STOPPED_FOR.with(|s| s.borrow_mut().push(me));
    Ok(())
}

fn never_stops(_: usize) -> Result<(), usize> {
    Err(1)
}

#[test]
fn with_other_processors_a_step_stops_them_before_its_page_opens() {
    for caps in METHODS {
        STOPPED_FOR.with(|s| s.borrow_mut().clear());
        let mut v = locked_with(caps);
        v.joined_aps = 1;
        v.stop_others = Some(stops);
        v.cpu_index = 2;
        let generation = v.policy.generation;
        let res = violation(&mut v, LONG);
        assert_eq!(res, Ok(ExitAction::Resume));
        assert!(v.policy.patch.step.open());
        assert_eq!(STOPPED_FOR.with(|s| s.borrow().clone()), [2]);
        assert!(v.policy.generation > generation, "the shootdown runs");
        assert_eq!(v.audit.total(), 0);
        // One that does not stop: the page stays closed, the run ends.
        let mut v = locked_with(caps);
        v.stop_others = Some(never_stops);
        let res = violation(&mut v, LONG);
        assert_eq!(res, Err(ExitError::Shootdown(1)));
        assert!(!v.policy.patch.step.open());
        assert_eq!(perms(&v, 0, LONG & !0xfff), Some(Perms::RX));
    }
}

#[test]
fn a_step_whose_processor_halted_ends_at_the_next_tick() {
    for caps in METHODS {
        let mut v = locked_with(caps);
        assert_eq!(violation(&mut v, LONG), Ok(ExitAction::Resume));
        assert!(v.policy.patch.step.open());
        // A tick while the processor still runs keeps the step.
        let _ = run(&mut v, ExitReason::PreemptionTimer, 0, 0);
        assert!(v.policy.patch.step.open(), "open across a tick");
        v.vmcs.set(Guest32::ActivityState, 1);
        let _ = run(&mut v, ExitReason::PreemptionTimer, 0, 0);
        assert!(!v.policy.patch.step.open(), "ended in HLT");
        assert_eq!(perms(&v, 0, LONG & !0xfff), Some(Perms::RX));
    }
}

#[test]
fn a_paging_structure_write_opens_no_step() {
    for caps in METHODS {
        let mut v = locked_with(caps);
        v.vmcs.set(GuestNatural::Rip, WRITER);
        v.vmcs.set(ReadOnly64::GuestPhysicalAddress, LONG);
        // Bit 8 clear: the processor's write of an entry's A/D flags.
        let res = run(&mut v, ExitReason::EptViolation, WRITE_QUAL & !(1 << 8), 0);
        assert_eq!((res, injected(&v)), (Ok(ExitAction::Resume), GP));
        assert!(!v.policy.patch.step.open());
    }
}
