//! The calls of ABI 1.2 for a kernel that executes code outside its
//! registered text and patches its own text (Linux): `SetExecuteRule`
//! (30) and `RegisterPatchSites` (31). Both are part of the lock:
//! the rule only before any region is locked, the table only before the
//! first text region is, and both only from the trusted context, so that a kernel write primitive used after the
//! lock can neither widen execute rights nor name new patch sites.

use okernel_abi::hypercall::Status;
use okernel_abi::policy::{ExecuteRule, PatchFormat, RegionKind};

use super::policy::{CallResult, Env, Reply};
use crate::exit::ExitError;
use crate::hw::{Cpu, Vmcs};
use crate::policy::patch::{MAX_PATCH_ENTRIES, PatchTable, Site, SiteSize};

/// SetExecuteRule(rule).
pub fn set_execute_rule<V: Vmcs, C: Cpu>(env: &mut Env<'_, V, C>, rule: u64) -> CallResult {
    let rule = ExecuteRule::from_raw(rule).ok_or(Status::InvalidArgument)?;
    // The rule decides the permissions a lock applies: once any region
    // is locked it could only change them for regions locked later.
    if env.prot.locked_regions().next().is_some() {
        return Err(Status::Locked);
    }
    env.trusted()?;
    env.prot.execute = rule;
    Ok(Reply::Done(None))
}

/// RegisterPatchSites(linear address, length, format). `Err` only for a
/// monitor failure (reading the guest's registers).
pub fn register<V: Vmcs, C: Cpu>(
    env: &mut Env<'_, V, C>,
    va: u64,
    len: u64,
    format: u64,
) -> Result<CallResult, ExitError> {
    let Some(format) = PatchFormat::from_raw(format) else {
        return Ok(Err(Status::InvalidArgument));
    };
    if len == 0 {
        return Ok(Err(Status::Empty));
    }
    let size = format.entry_size();
    if !len.is_multiple_of(size) || !va.is_multiple_of(8) {
        return Ok(Err(Status::Unaligned));
    }
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
    let in_locked_ro = env.prot.locked_regions().any(|r| {
        matches!(r.kind, RegionKind::Rodata | RegionKind::RoAfterInit)
            && r.range.contains(gpa)
            && r.range.contains(gpa + len - 1)
    });
    if !in_locked_ro {
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
    // it must hold its NOP or its jump now. The sizes are written into
    // the scratch part of the size map; the table claims them only once
    // every entry passed.
    let (mut guarded, mut bad) = (0u64, None);
    let mut raw = [0u8; 16];
    for i in 0..entries as u32 {
        if env
            .views
            .read_phys(gpa + u64::from(i) * 16, &mut raw)
            .is_err()
        {
            bad = Some(Status::InvalidArgument);
            break;
        }
        let (site, target) = table.decode(i, &raw);
        let site_gpa = table.image_gpa(site);
        // The text region holding the site's first byte: its size (and so
        // whether its last byte lies in text too) comes from its bytes.
        let text = env
            .prot
            .regions
            .iter()
            .flatten()
            .find(|r| r.kind == RegionKind::Text && r.range.contains(site_gpa))
            .map(|r| r.range);
        let size = if let Some(text) = text {
            let mut bytes = [0u8; 5];
            if env.views.read_phys(site_gpa, &mut bytes).is_err() {
                bad = Some(Status::InvalidArgument);
                break;
            }
            match Site::size_of(site, target, &bytes) {
                Some(s) if text.contains(site_gpa + s.bytes() - 1) => s,
                // Half in text: not guarded, so a write to it is denied.
                Some(_) => {
                    log::warn!(
                        "okernel: patch sites: entry {i}: the site at {site:#x} (gpa {site_gpa:#x}) runs past the end of its text region: not guarded"
                    );
                    SiteSize::Unguarded
                }
                None => {
                    log::warn!(
                        "okernel: patch sites: entry {i}: the site at {site:#x} (gpa {site_gpa:#x}) holds {bytes:02x?}, neither its NOP nor its jump to {target:#x}"
                    );
                    bad = Some(Status::InvalidArgument);
                    break;
                }
            }
        } else {
            SiteSize::Unguarded
        };
        if size != SiteSize::Unguarded {
            guarded += 1;
        }
        env.prot.patch.set_size(first + i, size);
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

/// Whether a guarded patch site has a byte on page `page` (for the
/// EPT-violation handler: only such a page may be opened for a write).
pub fn page_has_site<V: Vmcs, C: Cpu>(env: &Env<'_, V, C>, page: u64) -> bool {
    let views = &*env.views;
    let mut read = |gpa: u64, buf: &mut [u8]| views.read_phys(gpa, buf).is_ok();
    env.prot.patch.page_has_site(page, &mut read)
}
