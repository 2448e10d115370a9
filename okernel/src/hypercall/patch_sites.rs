//! The calls of ABI 1.2 for a kernel that executes code outside its
//! registered text and patches its own text (Linux): `SetExecuteRule`
//! (30) and `RegisterPatchSites` (31; jump labels since 1.2, static-call
//! sites and trampolines since 1.5). Both are part of the lock:
//! the rule only before any region is locked, the table only before the
//! first text region is, and both only from the trusted context, so that a kernel write primitive used after the
//! lock can neither widen execute rights nor name new patch sites.

use okernel_abi::hypercall::Status;
use okernel_abi::policy::{ExecuteRule, PatchFormat, RegionKind};
use okernel_abi::request::PatchTable as RequestTable;

use super::policy::{CallResult, Env, Reply};
use crate::hw::{Cpu, Vmcs};
use crate::memmap::Gpa;
use crate::policy::patch::{MAX_PATCH_ENTRIES, PatchTable, Site, SiteSize, TRAMPOLINE_SIGNATURE};
use crate::vcpu::ExitError;

/// SetExecuteRule(rule).
pub fn set_execute_rule<V: Vmcs, C: Cpu>(env: &mut Env<'_, V, C>, rule: ExecuteRule) -> CallResult {
    // The rule decides the permissions a lock applies: once any region
    // is locked it could only change them for regions locked later.
    if env.prot.locked_regions().next().is_some() {
        return Err(Status::Locked);
    }
    env.trusted()?;
    env.prot.execute = rule;
    Ok(Reply::Done(None))
}

/// RegisterPatchSites(linear address, length, format): the format, a
/// length of whole entries and the address's alignment decoded. `Err`
/// only for a monitor failure (reading the guest's registers).
pub fn register<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    table: RequestTable,
) -> Result<CallResult, ExitError> {
    let (va, len, format) = (table.va(), table.len(), table.format());
    let size = format.entry_size();
    // The call's own lines (an entry refused, the table taken) come after
    // the audit lines still waiting: the console keeps order.
    env.audit.print_pending();
    if env.prot.text_locked() {
        return Ok(Err(Status::Locked));
    }
    let p = &env.prot.patch;
    let Some(slot) = p.tables.iter().position(Option::is_none) else {
        return Ok(Err(Status::Exhausted));
    };
    let entries = len / size;
    let first = p.entries;
    if u64::from(first) + entries > MAX_PATCH_ENTRIES as u64 {
        return Ok(Err(Status::Exhausted));
    }
    // The table: contiguous in guest-physical memory, wholly inside one
    // locked read-only region (so it cannot change after this call).
    let Some(end) = va.checked_add(len - 1) else {
        return Ok(Err(Status::InvalidArgument));
    };
    let Some(gpa) = env.translate(va)? else {
        return Ok(Err(Status::InvalidArgument));
    };
    // Every further page by count (`end` may lie in the top page of the
    // address space).
    let first_page = va & !0xfff;
    for k in 1..=((end >> 12) - (va >> 12)) {
        let page = first_page + (k << 12);
        if env.translate(page)? != Some(gpa + (page - va)) {
            return Ok(Err(Status::InvalidArgument));
        }
    }
    // Jump labels and static-call sites: a table in locked read-only data.
    // Trampolines: the table is the trampolines, in registered text
    // (not locked yet: no text is, see above), which the lock then fixes.
    let in_place = if format == PatchFormat::LinuxStaticCallTrampoline {
        let text = |a: Gpa| env.prot.region_at(a, RegionKind::Text).is_some();
        text(gpa) && text(Gpa(gpa.0 + len - 1))
    } else {
        env.prot.locked_regions().any(|r| {
            matches!(r.kind, RegionKind::Rodata | RegionKind::RoAfterInit)
                && r.range.contains(gpa.0)
                && r.range.contains(gpa.0 + len - 1)
        })
    };
    if !in_place {
        return Ok(Err(Status::InvalidArgument));
    }
    if let Err(s) = env.trusted() {
        return Ok(Err(s));
    }
    let table = PatchTable {
        format,
        va,
        gpa,
        entries: entries as u32,
        first,
    };
    // Every entry's site: guarded when it lies in registered text, then
    // it must hold a whole legal form now (a static call's call or jump
    // into registered text). The sizes are written into the scratch part
    // of the size map; the table claims them only once every entry passed.
    let (mut guarded, mut bad) = (0u64, None);
    let mut raw = [0u8; 16];
    let raw = &mut raw[..size as usize];
    for i in 0..entries as u32 {
        if env.views.read_phys(gpa + u64::from(i) * size, raw).is_err() {
            bad = Some(Status::InvalidArgument);
            break;
        }
        match entry_size(env, &table, i, raw) {
            Ok(size) => {
                if size != SiteSize::Unguarded {
                    guarded += 1;
                }
                env.prot.patch.set_size(first + i, size);
            }
            Err(s) => {
                bad = Some(s);
                break;
            }
        }
    }
    if let Some(s) = bad {
        return Ok(Err(s));
    }
    let p = &mut env.prot.patch;
    p.tables[slot] = Some(table);
    p.entries = first + entries as u32;
    log::info!(
        "okernel: patch sites: {entries} entries at {va:#x} (gpa {gpa:#x}), {guarded} sites in registered text"
    );
    Ok(Ok(Reply::Done(Some(guarded))))
}

/// The size of the site entry `i` of `table` (its bytes `raw`) names:
/// [`SiteSize::Unguarded`] outside registered text or half in it, else
/// the size of the whole legal form it holds; `Err` when it holds none,
/// or a trampoline entry lacks the trampolines' signature.
fn entry_size<V: Vmcs, C: Cpu>(
    env: &Env<'_, V, C>,
    table: &PatchTable,
    i: u32,
    raw: &[u8],
) -> Result<SiteSize, Status> {
    let (site, form) = table.decode(i, raw).ok_or(Status::InvalidArgument)?;
    if table.format == PatchFormat::LinuxStaticCallTrampoline
        && raw.get(5..8) != Some(&TRAMPOLINE_SIGNATURE[..])
    {
        log::warn!(
            "okernel: patch sites: entry {i}: {site:#x} holds {raw:02x?}, not a static-call trampoline (no {TRAMPOLINE_SIGNATURE:02x?} after its 5 bytes)"
        );
        return Err(Status::InvalidArgument);
    }
    let site_gpa = table.image_gpa(site);
    // The text region holding the site's first byte: its size (and so
    // whether its last byte lies in text too) comes from its bytes.
    let Some(text) = env
        .prot
        .region_at(site_gpa, RegionKind::Text)
        .map(|r| r.range)
    else {
        return Ok(SiteSize::Unguarded);
    };
    let mut bytes = [0u8; 5];
    if env.views.read_phys(site_gpa, &mut bytes).is_err() {
        return Err(Status::InvalidArgument);
    }
    let in_text = |gpa: Gpa| env.prot.region_at(gpa, RegionKind::Text).is_some();
    match Site::size_of(site, site_gpa, form, &bytes, &in_text) {
        Some(s) if text.contains(site_gpa.0 + s.bytes() - 1) => Ok(s),
        // Half in text: not guarded, so a write to it is denied.
        Some(_) => {
            log::warn!(
                "okernel: patch sites: entry {i}: the site at {site:#x} (gpa {site_gpa:#x}) runs past the end of its text region: not guarded"
            );
            Ok(SiteSize::Unguarded)
        }
        None => {
            log::warn!(
                "okernel: patch sites: entry {i}: the site at {site:#x} (gpa {site_gpa:#x}) holds {bytes:02x?}, none of its legal forms ({form:?})"
            );
            Err(Status::InvalidArgument)
        }
    }
}

/// Whether a guarded patch site has a byte on page `page` (for the
/// EPT-violation handler: only such a page may be opened for a write).
pub fn page_has_site<V: Vmcs, C: Cpu>(env: &mut Env<'_, V, C>, page: Gpa) -> bool {
    let views = &*env.views;
    let mut read = |gpa: Gpa, buf: &mut [u8]| views.read_phys(gpa, buf).is_ok();
    env.prot.patch.page_has_site(page, &mut read)
}
