//! The validated page-table update (ABI call 27, invariant 7: the remap
//! defence) and the audit calls (28, 29).
//!
//! UpdatePageTable writes one 8-byte entry of a locked page-table page —
//! pages the untrusted views map read-only, so this call is how an
//! untrusted context changes its page tables. The monitor does not know
//! the level of the entry, so it judges the entry by what it could map:
//! a present entry without bit 7 maps (or links to) the 4 KiB frame at
//! bits 51:12; with bit 7 (PS in a PDPTE/PDE, PAT in a PTE) it is taken
//! as the largest page it could be, the 1 GiB around that address.
//!
//! Refused (status `Refused`, audited, nothing written):
//! 1. a present, writable entry whose frame overlaps a protected frame —
//!    a locked region of any kind but page tables, or a protected page
//!    (page-table frames are exempt: links between tables are writable
//!    entries, and the EPT keeps those frames read-only in untrusted
//!    views whatever the guest maps);
//! 2. changing an entry that maps a protected frame (any locked region,
//!    or a protected page) to anything but the same frame and page size —
//!    unmapping included, or the remap would take two calls. From an
//!    untrusted context, to anything but the same entry with A or D
//!    (bits 5, 6) set;
//! 3. changing an entry that links to a page-table frame (no bit 7) to
//!    anything but another link to a page-table frame. From an untrusted
//!    context the link stays the same link: A or D may be set, nothing
//!    else changes — not even its frame.
//!
//! Why the untrusted context is held to the same entry (issue 13, the
//! flag gap): the kernel half of every address space is shared, so an
//! entry mapping text or linking a table is, more often than not, one the
//! trusted kernel walks too. Rules 2 and 3 once compared only the frame
//! and bit 7, and an untrusted context could make the trusted kernel's
//! own text user or execute-disable (its next fetch faults: the host
//! kernel dies) or a registered gate unusable (`Env::gate_target`
//! wants supervisor, executable text), so that a later stop of the
//! context halted the virtual CPU. What may still differ, bit by bit
//! (SDM Vol. 3A §4.5, Tables 4-15 to 4-20; A/D: §4.8):
//! * A and D, set only. The processor sets them itself on the next
//!   access, so setting them changes nothing an access could observe.
//!   Clearing them is refused: the next walk would make the processor
//!   write the entry, and locked tables are read-only in untrusted views
//!   (`docs/policy.md`, guest requirements), so another context's walk
//!   through a shared entry would become an EPT violation;
//!
//! A link does not move either (a review of this rule's first version):
//! the monitor does not walk what the new table maps, and an untrusted
//! context fills locked tables of its own (its address space's) with
//! UpdatePageTable — leaf entries of unprotected frames, and read-only or
//! execute-disable mappings of protected ones, which rules 1 and 2 allow
//! in a slot that mapped nothing. Moving a link the trusted kernel walks
//! (a page directory entry of the kernel's half) to such a table would
//! make the trusted kernel's text execute-disable, or its read-only data
//! RAM the attacker writes: the remap invariant 7 forbids. Linking an
//! empty slot (rule 4) remains: the trusted kernel walks no address
//! through an empty slot.
//!
//! Everything else is refused: P, R/W, U/S, PWT, PCD, PAT/PS and G
//! (permission, caching, size, presence, TLB lifetime), XD and the
//! protection key (bits 59–62), and the bits the processor ignores
//! (9–11, 52–58): the monitor cannot tell what the trusted kernel keeps
//! there. The trusted context owns the tables and keeps rules 1–3 as
//! they were: it may make its text read-only or execute-disable, or
//! change a link's flags.
//!
//! Before those rules, whose table it is (issue 13, class 4): the entry's
//! table must be reachable from the caller's address space (its CR3)
//! through locked page-table pages ([`table_walk`]); from an untrusted
//! context an entry of any other table is refused (audited). The search
//! also gives the table's level, and with it one more rule:
//! 4. a present link entry (any PML4 entry, a PDPT or PD entry without
//!    PS) must link to a locked page-table frame — so an empty slot
//!    cannot be linked to a table the attacker wrote in ordinary memory
//!    (whose entries no rule has seen, e.g. a writable alias of text).
//!
//! The trusted context owns every locked table: outside its own address
//! space (or outside 4-level paging) only rules 1–3 apply to it.
//!
//! The guest invalidates its own TLB (INVLPG) after the call.

use okernel_abi::hypercall::Status;
use okernel_abi::policy::RegionKind;
use okernel_abi::request::EntryAddr;

use super::policy::{CallResult, Env, Reply, memory_status};
use crate::hw::{Cpu, Vmcs};
use crate::memmap::{Gpa, PhysRange};
use crate::policy::Policy;
use crate::policy::audit::{AuditAction, AuditKind};
use crate::policy::guest_paging::{ADDR_MASK, PAGE_SIZE, PRESENT, WRITABLE};
use crate::policy::protection::Protection;
use crate::policy::table_walk::{self, Found, is_link};
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitError, Vcpu};

const GIB: u64 = 1 << 30;

/// The frames a present entry could map: 4 KiB, or 1 GiB with bit 7.
pub fn mapped_range(entry: u64) -> Option<PhysRange> {
    if entry & PRESENT == 0 {
        return None;
    }
    let addr = entry & ADDR_MASK;
    Some(if entry & PAGE_SIZE != 0 {
        PhysRange::new(addr & !(GIB - 1), GIB)
    } else {
        PhysRange::new(addr, 4096)
    })
}

/// The accessed and dirty bits (5, 6), which the processor sets itself.
const ACCESSED_DIRTY: u64 = 1 << 5 | 1 << 6;

/// Who asks for an update: the rules hold an untrusted context to more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The trusted context (0), which owns the tables.
    Trusted,
    /// Any other context.
    Untrusted,
}

impl Caller {
    /// The caller that context `ctx` is.
    pub const fn of(ctx: u16) -> Self {
        if ctx == 0 {
            Caller::Trusted
        } else {
            Caller::Untrusted
        }
    }
}

/// Whether `entry` links to a locked page-table frame (present, no bit 7).
fn links_to_page_table(p: &Protection, entry: u64) -> bool {
    entry & PRESENT != 0
        && entry & PAGE_SIZE == 0
        && p.locked_region_at(Gpa(entry & ADDR_MASK), RegionKind::PageTable)
            .is_some()
}

/// Whether `new` differs from `old` only in bits `free` and in A/D bits
/// it sets (never clears).
const fn keeps_all_but(old: u64, new: u64, free: u64) -> bool {
    (old ^ new) & !(free | ACCESSED_DIRTY) == 0 && old & !new & ACCESSED_DIRTY == 0
}

/// Whether `caller` may write `new` over `old` by the rules of this
/// module.
pub fn allowed(p: &Protection, caller: Caller, old: u64, new: u64) -> bool {
    let untrusted = caller == Caller::Untrusted;
    // Rule 1: no writable mapping of a protected frame.
    if let Some(r) = mapped_range(new)
        && new & WRITABLE != 0
        && p.protects(&r, true)
    {
        return false;
    }
    // Rule 3: a link to a table stays a link to a table (from an
    // untrusted context, the same link).
    if links_to_page_table(p, old) {
        return links_to_page_table(p, new) && (!untrusted || keeps_all_but(old, new, 0));
    }
    // Rule 2: a mapping of a protected frame keeps its frame and size.
    if let Some(r) = mapped_range(old)
        && p.protects(&r, false)
    {
        if untrusted {
            return keeps_all_but(old, new, 0);
        }
        return new & PRESENT != 0
            && new & ADDR_MASK == old & ADDR_MASK
            && new & PAGE_SIZE == old & PAGE_SIZE;
    }
    true
}

/// UpdatePageTable(entry address, value): the address 8-aligned
/// (decoded).
pub fn update<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    entry: EntryAddr,
    value: u64,
) -> Result<CallResult, ExitError> {
    let entry = Gpa(entry.get());
    if env
        .prot
        .locked_region_at(entry, RegionKind::PageTable)
        .is_none()
    {
        return Ok(Err(Status::NotFound));
    }
    let mut old = [0u8; 8];
    if let Err(e) = env.views.read_phys(entry, &mut old) {
        return Ok(Err(memory_status(e)));
    }
    let old = u64::from_le_bytes(old);
    let level = match table_level(env, entry)? {
        Found::Level(l) => Some(l),
        Found::NotReachable | Found::TooLarge => None,
    };
    // Not the caller's table; the trusted kernel owns every locked table.
    let foreign = level.is_none() && env.prot.current != 0;
    let links_elsewhere =
        level.is_some_and(|l| is_link(l, value) && !links_to_page_table(env.prot, value));
    let caller = Caller::of(env.prot.current);
    if foreign || links_elsewhere || !allowed(env.prot, caller, old, value) {
        env.audit(
            AuditKind::PageTableUpdate,
            entry.0,
            value,
            AuditAction::Refused,
        )?;
        return Ok(Err(Status::Refused));
    }
    if let Err(e) = env.views.write_phys(entry, &value.to_le_bytes()) {
        return Ok(Err(memory_status(e)));
    }
    Ok(Ok(Reply::Done(None)))
}

/// The level of the table holding `entry` in the address space the
/// guest runs on (its CR3), through locked page-table pages
/// ([`table_walk::find`]); `NotReachable` outside 4-level paging.
fn table_level<V: Vmcs, C: Cpu>(env: &Env<'_, V, C>, entry: Gpa) -> Result<Found, ExitError> {
    let paging = env.paging()?;
    let four_level = paging.cr0 & (1 << 31) != 0
        && paging.cr4 & (1 << 5) != 0
        && paging.cr4 & (1 << 12) == 0
        && paging.efer & (1 << 10) != 0;
    if !four_level {
        return Ok(Found::NotReachable);
    }
    let is_table = |gpa: Gpa| {
        env.prot
            .locked_region_at(gpa, RegionKind::PageTable)
            .is_some()
    };
    let read = |gpa: Gpa| env.read_u64(gpa);
    Ok(table_walk::find(
        paging.cr3,
        entry.page_base(),
        &is_table,
        &read,
    ))
}

/// The 64 bytes of an ABI audit record, little-endian, in `repr(C)`
/// field order.
pub fn record_bytes(r: &okernel_abi::policy::AuditRecord) -> [u8; 64] {
    let mut out = [0u8; 64];
    let mut put = |at: usize, bytes: &[u8]| out[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &r.sequence.to_le_bytes());
    put(8, &r.kind.to_le_bytes());
    put(12, &r.action.to_le_bytes());
    put(16, &r.context.to_le_bytes());
    put(24, &r.gpa.to_le_bytes());
    put(32, &r.gva.to_le_bytes());
    put(40, &r.access.to_le_bytes());
    put(48, &r.rip.to_le_bytes());
    put(56, &r.qualification.to_le_bytes());
    out
}

/// AuditRead(seq, buffer): the record, if the ring still holds it, into
/// 64 bytes of guest RAM the current view maps writable.
pub fn audit_read<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    seq: u64,
    buffer: Gpa,
) -> Result<CallResult, ExitError> {
    if vcpu.memory.views_ref().is_none() || vcpu.policy.protection().is_none() {
        return Ok(Err(Status::UnknownCall));
    }
    let Some(record) = vcpu.audit.get(seq) else {
        return Ok(Err(Status::NotFound));
    };
    let bytes = record_bytes(&record.to_abi());
    match vcpu.memory.write(buffer, &bytes) {
        Ok(()) => Ok(Ok(Reply::Done(None))),
        Err(e) => Ok(Err(memory_status(e))),
    }
}
