//! The two monitor calls of VM fuzzing, `CALL_BASELINE` (0x100) and
//! `CALL_CHECK` (0x101), exactly as `okernel_abi::fuzz` documents them.
//! `hypercall::dispatch` reaches them through the exit hooks of
//! [`super::tracked::Tracked`] (fuzz builds only) for a number outside
//! the ABI, at CPL 0 (any other CPL was refused before, with
//! nothing changed). Both need the protection policy and the views; a
//! monitor without them answers `UnknownCall`, as one without the
//! feature does.

use core::mem::{offset_of, size_of};

use ept::Perms;
use okernel_abi::fuzz::{CALL_BASELINE, CALL_CHECK, CheckReport};
use okernel_abi::hypercall::Status;

use super::LastFull;
use super::baseline::Baseline;
use super::check::{Finding, Machine, Scope, check};
use super::inspect::Inspect;
use super::tracked::{Fuzzed, Tracking};
use crate::hw::{Cpu, Vmcs};
use crate::memmap::Gpa;
use crate::policy::Policy;
use crate::vcpu::hooks::CallReply;
use crate::vcpu::{ExitError, Vcpu};

/// At most this many checks in a row are incremental: every
/// `FULL_CHECK_EVERY`-th check since the last full one is full whatever
/// the views watch and the write log say, so a change the incremental rule
/// cannot see (guest RAM changed other than through the views or the
/// monitor's logged writes: the assumption broken) is still found within
/// this many checks.
pub const FULL_CHECK_EVERY: u32 = 64;

/// Whether `number` is one of the fuzz calls.
pub const fn is_fuzz_call(number: u64) -> bool {
    number == CALL_BASELINE || number == CALL_CHECK
}

/// Runs fuzz call `number` with RDI = `arg` (reduced to the guest's
/// operand size): the reply, or the refusal's status (`UnknownCall`:
/// this monitor has no policy state, the call is unknown to it).
pub fn handle<V: Vmcs, C: Cpu, P: Policy, M: Fuzzed>(
    vcpu: &mut Vcpu<V, C, P, M>,
    number: u64,
    arg: u64,
) -> Result<Result<CallReply, Status>, ExitError> {
    let Vcpu {
        policy,
        memory,
        vmcs,
        cpu,
        hooks: fuzz,
        audit,
        ..
    } = vcpu;
    let Some(prot) = policy.protection() else {
        return Ok(Err(Status::UnknownCall));
    };
    let views: &dyn Tracking = &*memory;
    if prot.current != 0 {
        return Ok(Err(Status::PermissionDenied));
    }
    if number == CALL_BASELINE {
        if arg != 0 && !report_page(views, arg) {
            return Ok(Err(Status::InvalidArgument));
        }
        let base = Baseline::record(prot, views, vmcs)?;
        let bytes = base.bytes;
        fuzz.baseline = Some(base);
        fuzz.last_full = None;
        fuzz.watch.restart(views);
        fuzz.mirror = (arg != 0).then_some(arg);
        super::mirror::update(vcpu);
        vcpu.memory.clear_write_log();
        return Ok(Ok(CallReply::Rdi(bytes)));
    }
    if !report_page(views, arg) {
        return Ok(Err(Status::InvalidArgument));
    }
    let Some(base) = fuzz.baseline.as_ref() else {
        return Ok(Err(Status::NotFound));
    };
    let mut machine = Machine {
        prot,
        views,
        vmcs,
        cpu,
        unexpected: fuzz.unexpected,
    };
    let scope = scope(fuzz, views);
    let mut finding = check(base, &mut machine, scope)?;
    if finding == Finding::INTACT
        && let Some(f) = fuzz.watch.finding
    {
        finding = f;
    }
    fuzz.watch.restart(views);
    fuzz.last_full = match (finding == Finding::INTACT, scope, fuzz.last_full) {
        (false, ..) => None,
        (true, Scope::Incremental, Some(l)) => Some(LastFull {
            incremental: l.incremental + 1,
        }),
        (true, ..) => Some(LastFull { incremental: 0 }),
    };
    let mut report = [0u8; size_of::<CheckReport>()];
    let len = encode(&finding, fuzz, audit.total(), &mut report);
    // `report_page` accepted the page as guest RAM; the check changed
    // nothing. The log restarts with the report's own page.
    memory.clear_write_log();
    if memory.write_phys(Gpa(arg), &report[..len]).is_err() {
        return Ok(Err(Status::InvalidArgument));
    }
    fuzz.coverage.clear();
    fuzz.unexpected = (0, 0);
    fuzz.checks = fuzz.checks.wrapping_add(1);
    Ok(Ok(CallReply::Done))
}

/// The scope of the next check: full after the baseline, after a finding,
/// when the views watch missed a view change or saw a too-permissive view
/// (`super::watch`), when the write log overflowed, and every
/// [`FULL_CHECK_EVERY`] checks; else incremental.
fn scope(fuzz: &super::FuzzState, views: &dyn Tracking) -> Scope {
    match fuzz.last_full {
        Some(l)
            if fuzz.watch.all_seen(views)
                && !views.dirty().overflowed()
                && l.incremental + 1 < FULL_CHECK_EVERY =>
        {
            Scope::Incremental
        }
        _ => Scope::Full,
    }
}

/// Whether `page` can take a report: 4 KiB-aligned guest RAM outside
/// monitor memory and below the identity map, mapped readable and
/// writable by the trusted view (whichever view the guest runs in).
fn report_page(views: &dyn Inspect, page: u64) -> bool {
    page.is_multiple_of(4096)
        && views.check_ram(Gpa(page), 4096).is_ok()
        && views.rights_at(0, Gpa(page)).0.contains(Perms::RW)
}

/// Encodes the [`CheckReport`] for `finding`, the coverage of `fuzz` and
/// the audit log's record total into `out` (`repr(C)`, little-endian) up
/// to its last valid hit, and returns that length: the entries of `hit`
/// past `hits` are not written (the page keeps what an earlier report
/// left there), which saves writing 2 KiB of zeros after every case.
pub fn encode(
    finding: &Finding,
    fuzz: &super::FuzzState,
    audit_total: u64,
    out: &mut [u8; size_of::<CheckReport>()],
) -> usize {
    let mut put = |at: usize, bytes: &[u8]| out[at..at + bytes.len()].copy_from_slice(bytes);
    let cov = &fuzz.coverage;
    put(
        offset_of!(CheckReport, verdict),
        &(finding.verdict as u32).to_le_bytes(),
    );
    put(
        offset_of!(CheckReport, subject),
        &finding.subject.to_le_bytes(),
    );
    put(
        offset_of!(CheckReport, expected),
        &finding.expected.to_le_bytes(),
    );
    put(
        offset_of!(CheckReport, actual),
        &finding.actual.to_le_bytes(),
    );
    put(offset_of!(CheckReport, exits), &cov.exits().to_le_bytes());
    put(
        offset_of!(CheckReport, audit_total),
        &audit_total.to_le_bytes(),
    );
    // At most MAX_HITS entries.
    let hits = cov.hits();
    put(
        offset_of!(CheckReport, hits),
        &(hits.len() as u32).to_le_bytes(),
    );
    put(
        offset_of!(CheckReport, dropped),
        &cov.dropped().to_le_bytes(),
    );
    let at = offset_of!(CheckReport, hit);
    for (slot, h) in out[at..at + 2 * hits.len()].chunks_exact_mut(2).zip(hits) {
        slot.copy_from_slice(&h.to_le_bytes());
    }
    at + 2 * hits.len()
}
