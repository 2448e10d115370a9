//! Reading the monitor's audit log back (`AuditCount`, `AuditRead`) to
//! check that a blocked attack left the record it must (invariant 10).
//! (The fuzz executor reads each operation's records from its audit
//! mirror instead: `crate::executor`.)

use crate::arch::instr::hypercall;
use crate::kernel::Pages;
use crate::report::Buf;
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::policy::{AuditKind, AuditRecord};

/// Where `AuditRead` copies a record.
static RECORD: Pages<AuditRecord> = Pages::new(AuditRecord::EMPTY);

/// The number of records written so far, or the call's failure.
pub fn count() -> Result<u64, Result<Status, u64>> {
    let r = hypercall(Call::AuditCount, [0; 4]);
    match r.status {
        Ok(Status::Success) => Ok(r.value0),
        other => Err(other),
    }
}

/// Record `seq` (AuditRead), or the call's failure.
pub fn read(seq: u64) -> Result<AuditRecord, Result<Status, u64>> {
    let r = hypercall(Call::AuditRead, [seq, RECORD.addr(), 0, 0]);
    if r.status != Ok(Status::Success) {
        return Err(r.status);
    }
    // SAFETY: the monitor just copied a record there; nothing else writes
    // the page.
    Ok(unsafe { RECORD.get().read_volatile() })
}

fn status_name(s: Result<Status, u64>) -> &'static str {
    match s {
        Ok(s) => s.name(),
        Err(_) => "undefined status",
    }
}

/// Looks for a record of `kind` by context `ctx` (naming page `gpa`'s
/// frame when given) among those written since `before`; describes what
/// it found in `out`.
pub fn find(
    before: Result<u64, Result<Status, u64>>,
    kind: AuditKind,
    ctx: u64,
    gpa: Option<u64>,
    out: &mut Buf,
) -> bool {
    let (from, to) = match (before, count()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(s), _) | (_, Err(s)) => {
            out.set(format_args!("AuditCount: {}", status_name(s)));
            return false;
        }
    };
    let mut last = None;
    for seq in from..to {
        let rec = match read(seq) {
            Ok(rec) => rec,
            Err(s) => {
                out.set(format_args!("AuditRead #{seq}: {}", status_name(s)));
                return false;
            }
        };
        let page_ok = gpa.is_none_or(|g| rec.gpa & !0xfff == g & !0xfff);
        if rec.kind == kind as u32 && rec.context == ctx && page_ok {
            out.set(format_args!(
                "#{} kind {} ctx {} gpa {:#x} gva {:#x} access {:#x} rip {:#x} action {}",
                rec.sequence,
                rec.kind,
                rec.context,
                rec.gpa,
                rec.gva,
                rec.access,
                rec.rip,
                rec.action
            ));
            return true;
        }
        last = Some(rec);
    }
    match last {
        Some(r) => out.set(format_args!(
            "none of kind {} ctx {ctx} in #{from}..#{to}; last kind {} ctx {} gpa {:#x}",
            kind as u32, r.kind, r.context, r.gpa
        )),
        None => out.set(format_args!("no record written (#{from}..#{to})")),
    }
    false
}

/// Under okernel: registers the page at `page` as read-only data and locks
/// it (what the platform attacks aim at); whether both calls succeeded.
pub fn lock_page_read_only(page: u64) -> bool {
    let r = hypercall(
        Call::RegisterRegion,
        [
            page,
            4096,
            okernel_abi::policy::RegionKind::Rodata as u64,
            0,
        ],
    );
    r.status == Ok(Status::Success)
        && hypercall(Call::LockRegion, [r.value0, 0, 0, 0]).status == Ok(Status::Success)
}

/// Whether one of the records `from..to` is an `exit` record of an I/O
/// exit at `port` (the qualification's bits 31:16, SDM Vol. 3C Table
/// 28-5).
pub fn has_port_exit(from: u64, to: u64, port: u16) -> bool {
    (from..to).any(|seq| {
        read(seq).is_ok_and(|r| {
            r.kind == AuditKind::Exit as u32 && r.qualification >> 16 == u64::from(port)
        })
    })
}
