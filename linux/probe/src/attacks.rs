//! The Linux attack suite (issue 16): each attack asks the test image's
//! vulnerability (`/proc/okernel-vuln`) for one deliberate kernel bug, in
//! a child process, so that a kernel that kills the attacker (the
//! monitor's injected fault makes it oops in the vulnerable write) ends
//! only that child. Without protection (`mode=direct`, bare QEMU) every
//! attack must take effect, proving the primitive; under the monitor with
//! the client's locks every claimed attack must be killed and leave an
//! audit record of its own kind (a write to locked memory, the CR or the
//! MSR it wrote), read from `/proc/okernel-audit`. The "not protected"
//! rows are writes okernel does not stop, shown as such.

use crate::{Checks, VulnAnswer, read, vuln};
use okernel_linux_probe::{
    AuditLine, Expect, Range, StaticCallSite, bss, hex_bytes, illegal_jump_form, iomem_pages,
    jump_site, kallsyms, old_new, redirect_rel32, static_call_key_sites, static_call_sites,
    static_call_sites_of,
};

/// A value no kernel pointer or instruction stream holds.
const POISON: u64 = 0x4141_4141_4141_4141;

/// What an attack's gadget call showed.
enum Effect {
    /// The write took effect (read back changed as asked).
    Written(String),
    /// The kernel killed the attacker in the write.
    Killed(String),
    /// The attack could not be made at all (no symbol, a bad answer):
    /// proves nothing, a failing row in every mode.
    NotMade(String),
    /// The attacker was killed but the monitor left no audit record of
    /// the attack's kind: something else killed it (a failing row).
    Unaudited(String),
}

/// The audit record a blocked attack must leave (`okernel_abi::policy::
/// AuditKind`; the client's `/proc/okernel-audit`).
#[derive(Debug, Clone, Copy)]
enum Record {
    /// A write to locked memory at this kernel virtual address (`None`:
    /// it could not be found, and no record can match): `ept-violation`
    /// (1) with the W access, its gpa in the address's physical page.
    Write(Option<u64>),
    /// A write to control register `n`: `cr-write` (2), gpa = `n`.
    Cr(u64),
    /// A write to MSR `m`: `msr-write` (3), gpa = `m`.
    Msr(u64),
}

impl Record {
    /// Whether `r` is this record; `to_phys` maps a kernel image address
    /// to its physical address.
    fn matches(self, r: &AuditLine, to_phys: &dyn Fn(u64) -> Option<u64>) -> bool {
        match self {
            Record::Write(at) => {
                let page = at.and_then(to_phys).map(|p| p >> 12);
                r.kind == 1 && r.access & 2 != 0 && page == Some(r.gpa >> 12)
            }
            Record::Cr(n) => r.kind == 2 && r.gpa == n,
            Record::Msr(m) => r.kind == 3 && r.gpa == m,
        }
    }
}

/// The monitor's audit records, as the client shows them.
fn audit() -> String {
    read("/proc/okernel-audit")
}

/// Runs `make` and, where the kernel is protected and the attacker was
/// killed, requires a new audit record of kind `want`: the monitor, not
/// some other fault, stopped it.
fn audited(
    protected: bool,
    want: Record,
    to_phys: &dyn Fn(u64) -> Option<u64>,
    make: impl FnOnce() -> Effect,
) -> Effect {
    let before = protected
        .then(|| AuditLine::newer(&audit(), None).last().map(|r| r.seq))
        .flatten();
    match make() {
        Effect::Killed(s) if protected => {
            let new = AuditLine::newer(&audit(), before);
            match new.iter().find(|r| want.matches(r, to_phys)) {
                Some(r) => Effect::Killed(format!(
                    "{s}; audit record #{} kind {} gpa {:#x}",
                    r.seq, r.kind, r.gpa
                )),
                None => Effect::Unaudited(format!(
                    "{s}, but no {want:?} audit record among the {} new ones",
                    new.len()
                )),
            }
        }
        e => e,
    }
}

/// Runs the gadget `cmd`, whose answer is `old O new N`; `wanted(old)` is
/// the value the write asked for.
fn gadget(cmd: &str, wanted: impl Fn(u64) -> u64) -> Effect {
    match vuln(cmd) {
        VulnAnswer::Answer(a) => match old_new(&a) {
            Some((old, new)) if new == wanted(old) && new != old => {
                Effect::Written(format!("{cmd}: {a} (the write took effect)"))
            }
            Some(_) => Effect::NotMade(format!("{cmd}: {a} (nothing changed)")),
            None => Effect::NotMade(format!("{cmd}: answered `{a}`")),
        },
        VulnAnswer::Killed(how) => {
            Effect::Killed(format!("{cmd}: the attacker was killed ({how})"))
        }
        VulnAnswer::Failed(e) => Effect::NotMade(format!("{cmd}: {e}")),
    }
}

fn poke(addr: u64, value: u64) -> Effect {
    gadget(&format!("poke {addr:x} {value:x}"), |_| value)
}

/// The attacks; `protected`: the client's locks are in place.
pub fn run(c: &mut Checks, mode: Expect, protected: bool, kallsyms_text: &str, iomem: &str) {
    let sym = |name: &str| kallsyms(kallsyms_text, name);
    // A kernel image address's physical address: the image's virtual
    // start (`_text`) maps to "Kernel code"'s physical start.
    let text = sym("_text");
    let code = iomem_pages(iomem, "Kernel code");
    let to_phys = |virt: u64| -> Option<u64> {
        let offset = virt.checked_sub(text?)?;
        code.as_ref()?.start.checked_add(offset)
    };
    let attack = |c: &mut Checks, name: &str, invariant: u8, want, make: &dyn Fn() -> Effect| {
        let e = audited(protected, want, &to_phys, make);
        report(c, mode, protected, name, invariant, e);
    };
    let poke_sym = |name: &str, value: u64| match sym(name) {
        Some(a) => poke(a, value),
        None => Effect::NotMade(format!("no {name} in /proc/kallsyms")),
    };
    // Invariant 2: kernel text, through the vulnerability's writable
    // alias (a fresh kernel mapping of the text's physical page).
    attack(
        c,
        "text-overwrite-function",
        2,
        Record::Write(sym("__x64_sys_reboot")),
        &|| poke_sym("__x64_sys_reboot", 0xcccc_cccc_cccc_cccc),
    );
    // Invariant 3: rodata, ro-after-init data, the IDT.
    attack(
        c,
        "rodata-sys-call-table",
        3,
        Record::Write(sym("sys_call_table")),
        &|| poke_sym("sys_call_table", POISON),
    );
    attack(
        c,
        "ro-after-init-lsm-hook-head",
        3,
        Record::Write(sym("security_hook_heads")),
        &|| poke_sym("security_hook_heads", POISON),
    );
    attack(c, "idt-entry", 3, Record::Write(sym("idt_table")), &|| {
        poke_sym("idt_table", POISON)
    });
    // Invariant 2 (validated self-patching): a listed site, illegal form.
    attack(
        c,
        "jump-label-illegal-form",
        2,
        Record::Write(jump_label_site(&sym).ok()),
        &|| jump_label(&sym),
    );
    // Invariant 2 (validated self-patching): a static call redirected to
    // writable kernel data (.bss), at an inline site and at its
    // trampoline.
    let sc = static_call_target(&sym, kallsyms_text);
    let data = bss(kallsyms_text);
    let redirect_at = |at: Option<u64>| -> Effect {
        match (&sc, at, data) {
            (Err(e), _, _) => Effect::NotMade(e.clone()),
            (_, _, None) => Effect::NotMade("no __bss_start/__bss_stop in /proc/kallsyms".into()),
            (Ok(_), None, _) => Effect::NotMade("no address".into()),
            (Ok(t), Some(at), Some(data)) => redirect(&t.name, at, data),
        }
    };
    let site = sc.as_ref().ok().map(|t| t.site.addr);
    attack(
        c,
        "static-call-site-redirect",
        2,
        Record::Write(site),
        &|| redirect_at(site),
    );
    let tramp = sc.as_ref().ok().map(|t| t.tramp);
    attack(
        c,
        "static-call-trampoline-redirect",
        2,
        Record::Write(tramp),
        &|| redirect_at(tramp),
    );
    // Invariant 4: pinned control-register bits, through `mov cr`.
    let cr = |n: u8, clear: u64| gadget(&format!("cr {n} {clear:x}"), move |old| old & !clear);
    attack(c, "cr4-clear-smep-smap", 4, Record::Cr(4), &|| {
        cr(4, (1 << 20) | (1 << 21))
    });
    attack(c, "cr0-clear-wp", 4, Record::Cr(0), &|| cr(0, 1 << 16));
    // Invariant 5: locked MSRs, through `wrmsr`.
    let msr = |m: u32, mask: u64| gadget(&format!("msrxor {m:x} {mask:x}"), move |old| old ^ mask);
    attack(c, "msr-lstar", 5, Record::Msr(0xc000_0082), &|| {
        msr(0xc000_0082, 0x10)
    });
    attack(
        c,
        "msr-efer-clear-sce",
        5,
        Record::Msr(0xc000_0080),
        &|| msr(0xc000_0080, 1),
    );
    hypercalls(c, mode, protected, kallsyms_text, iomem);
    // Not protected: writable kernel data and slab memory.
    not_protected(
        c,
        "modprobe-path",
        "modprobe_path is writable kernel data (.data): okernel locks text, rodata and ro-after-init only",
        poke_sym("modprobe_path", u64::from_le_bytes(*b"/tmp/pw\0")),
    );
    let cred = match vuln("cred") {
        VulnAnswer::Answer(a) => match u64::from_str_radix(a.trim(), 16) {
            Ok(addr) => poke(addr, 0x0000_0001_0000_0001),
            Err(_) => Effect::NotMade(format!("cred: answered `{a}`")),
        },
        VulnAnswer::Killed(h) => Effect::NotMade(format!("cred: killed ({h})")),
        VulnAnswer::Failed(e) => Effect::NotMade(format!("cred: {e}")),
    };
    not_protected(
        c,
        "credentials-uid",
        "struct cred is slab memory: no region covers it (credential pages are a demo-guest feature)",
        cred,
    );
}

/// 16 bytes at kernel address `a`, read through the vulnerability.
fn read16(a: u64) -> Option<Vec<u8>> {
    match vuln(&format!("rvirt {a:x}")) {
        VulnAnswer::Answer(h) => hex_bytes(&h).filter(|b| b.len() == 16),
        _ => None,
    }
}

/// The first `__jump_table` entry's site address, or why not.
fn jump_label_site(sym: &dyn Fn(&str) -> Option<u64>) -> Result<u64, String> {
    let entry = sym("__start___jump_table")
        .ok_or_else(|| "no __start___jump_table in /proc/kallsyms".to_string())?;
    read16(entry)
        .and_then(|b| jump_site(entry, &b))
        .ok_or_else(|| format!("cannot read the jump entry at {entry:#x}"))
}

/// The first `__jump_table` entry's site, rewritten to `jmp .+2`.
fn jump_label(sym: &dyn Fn(&str) -> Option<u64>) -> Effect {
    let site = match jump_label_site(sym) {
        Ok(s) => s,
        Err(e) => return Effect::NotMade(e),
    };
    match read16(site).and_then(|b| illegal_jump_form(&b)) {
        Some(v) => poke(site, v),
        None => Effect::NotMade(format!("cannot read the jump site at {site:#x}")),
    }
}

/// 8 bytes at kernel address `a` (not within 8 bytes of its page's end),
/// read through the vulnerability (whose reads take 16 bytes of one page).
fn read8(a: u64) -> Option<[u8; 8]> {
    let at = a.min((a & !0xfff) + 0xff0);
    let off = usize::try_from(a - at).ok()?;
    read16(at)?.get(off..off + 8)?.try_into().ok()
}

/// Static calls of perf's x86 PMU that nothing calls during the run
/// (`perf_guest_get_msrs` is KVM's; the PMU's NMI handler calls
/// `x86_pmu_handle_irq` only with active perf events): the first with a
/// usable inline site is attacked.
const STATIC_CALLS: &[&str] = &["x86_pmu_guest_get_msrs", "x86_pmu_handle_irq"];

/// A static call to attack: an inline site of it and its trampoline.
struct StaticCall {
    name: String,
    site: StaticCallSite,
    tramp: u64,
}

/// The first static call of [`STATIC_CALLS`] with an inline site outside
/// init text that holds its call (`e8`, a tail call's `e9`) and that the
/// gadget can write (not within 8 bytes of a page's end), found by
/// decoding `__static_call_sites` through the vulnerability's read; or
/// why none.
fn static_call_target(
    sym: &dyn Fn(&str) -> Option<u64>,
    kallsyms_text: &str,
) -> Result<StaticCall, String> {
    let table = static_call_sites(kallsyms_text).ok_or_else(|| {
        "no __start_static_call_sites/__stop_static_call_sites in /proc/kallsyms".to_string()
    })?;
    let mut why = Vec::new();
    for name in STATIC_CALLS {
        let (Some(key), Some(tramp)) = (
            sym(&format!("__SCK__{name}")),
            sym(&format!("__SCT__{name}")),
        ) else {
            why.push(format!("no __SCK__/__SCT__{name} in /proc/kallsyms"));
            continue;
        };
        let hint = read16(key).and_then(|k| static_call_key_sites(&k));
        let sites = match static_call_sites_of(table, key, hint, 16, &mut read8) {
            Ok(s) => s,
            Err(e) => {
                why.push(format!("{name}: {e}"));
                continue;
            }
        };
        let usable = sites.iter().find(|s| {
            !s.init
                && s.addr & 0xfff <= 0xff8
                && read8(s.addr).is_some_and(|b| b[0] == if s.tail { 0xe9 } else { 0xe8 })
        });
        match usable {
            Some(&site) => {
                return Ok(StaticCall {
                    name: (*name).to_string(),
                    site,
                    tramp,
                });
            }
            None => why.push(format!(
                "{name}: none of its {} sites is a call in text the gadget can write",
                sites.len()
            )),
        }
    }
    Err(why.join("; "))
}

/// Redirects the call or jump at `at` (a site or the trampoline of static
/// call `name`) into `data` through the gadget, which restores the old
/// bytes at once, interrupts off ([`redirect_rel32`]: only the rel32's top
/// byte changes), then reads the bytes back: unchanged, whether the write
/// was refused or restored.
fn redirect(name: &str, at: u64, data: Range) -> Effect {
    let Some(old) = read8(at) else {
        return Effect::NotMade(format!("cannot read {name}'s bytes at {at:#x}"));
    };
    let Some((value, target)) = redirect_rel32(at, &old, data) else {
        return Effect::NotMade(format!(
            "{name} at {at:#x} holds {}: no call or jump to redirect into [{:#x}, {:#x})",
            hex(&old),
            data.start,
            data.end
        ));
    };
    let e = poke(at, value);
    let back = match read8(at) {
        Some(b) if b == old => format!(
            "{name} at {at:#x} ({} to {target:#x} in .bss) reads back unchanged {}",
            if old[0] == 0xe8 { "call" } else { "jmp" },
            hex(&old)
        ),
        Some(b) => {
            return Effect::NotMade(format!(
                "{name} at {at:#x} reads back {} where it held {} ({})",
                hex(&b),
                hex(&old),
                match e {
                    Effect::Written(s)
                    | Effect::Killed(s)
                    | Effect::NotMade(s)
                    | Effect::Unaudited(s) => s,
                }
            ));
        }
        None => return Effect::NotMade(format!("cannot read {name}'s bytes back at {at:#x}")),
    };
    match e {
        Effect::Written(s) => Effect::Written(format!("{s}; {back}")),
        Effect::Killed(s) => Effect::Killed(format!("{s}; {back}")),
        other => other,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Invariant 8: okernel's own hypercalls from the kernel cannot undo or
/// redo the locks. Without okernel VMCALL is #UD: the row only shows that
/// the instruction means nothing there.
fn hypercalls(c: &mut Checks, mode: Expect, protected: bool, kallsyms_text: &str, iomem: &str) {
    if !protected {
        let e = vuln("vmcall 0 0 0 0");
        let ok = matches!(e, VulnAnswer::Killed(_));
        return c.report(
            &format!("baseline-vmcall-faults-without-okernel-{}", mode_name(mode)),
            0,
            ok,
            &format!("vmcall (okernel's Version): {} (meaningless without okernel: no hypercall to attack)", e.describe()),
        );
    }
    let text = iomem_pages(iomem, "Kernel code");
    let table = kallsyms(kallsyms_text, "__start___jump_table");
    let calls = [
        // RegisterRegion over the locked text, as text.
        text.map(|t| format!("vmcall 10 {:x} 1000 1", t.start)),
        // SetExecuteRule after the lock.
        Some("vmcall 1e 0 0 0".to_string()),
        // RegisterPatchSites after the lock (one 16-byte entry).
        table.map(|t| format!("vmcall 1f {t:x} 10 0")),
    ];
    let mut seen = Vec::new();
    let mut ok = true;
    for call in calls {
        let Some(call) = call else {
            ok = false;
            seen.push("an address was missing".to_string());
            continue;
        };
        match vuln(&call) {
            VulnAnswer::Answer(a) => {
                let status = a.split_whitespace().nth(1).unwrap_or("?");
                ok &= status != "0" && status != "?";
                seen.push(format!("{call}: {a}"));
            }
            other => {
                ok = false;
                seen.push(format!("{call}: {}", other.describe()));
            }
        }
    }
    c.report("attack-hypercall-relock-refused", 8, ok, &seen.join("; "));
}

fn mode_name(mode: Expect) -> &'static str {
    match mode {
        Expect::Monitor => "monitor",
        Expect::Direct => "direct",
        Expect::Bare => "bare",
    }
}

fn report(c: &mut Checks, mode: Expect, protected: bool, name: &str, invariant: u8, e: Effect) {
    let (row, ok, seen) = match (protected, e) {
        (true, Effect::Killed(s)) => (format!("attack-{name}"), true, s),
        (true, Effect::Written(s)) => {
            (format!("attack-{name}"), false, format!("NOT BLOCKED: {s}"))
        }
        (false, Effect::Written(s)) => (
            format!("negative-control-{name}-{}", mode_name(mode)),
            true,
            s,
        ),
        (false, Effect::Killed(s)) => (
            format!("negative-control-{name}-{}", mode_name(mode)),
            false,
            format!("the primitive failed without protection: {s}"),
        ),
        (true, Effect::NotMade(s) | Effect::Unaudited(s)) => (format!("attack-{name}"), false, s),
        (false, Effect::NotMade(s) | Effect::Unaudited(s)) => (
            format!("negative-control-{name}-{}", mode_name(mode)),
            false,
            s,
        ),
    };
    c.report(&row, invariant, ok, &seen);
}

fn not_protected(c: &mut Checks, name: &str, why: &str, e: Effect) {
    let (ok, seen) = match e {
        Effect::Written(s) => (true, format!("NOT PROTECTED ({why}): {s}")),
        Effect::Killed(s) | Effect::NotMade(s) | Effect::Unaudited(s) => {
            (false, format!("expected the write to succeed ({why}): {s}"))
        }
    };
    c.report(&format!("not-protected-{name}"), 0, ok, &seen);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kind: u32, gpa: u64, access: u64) -> AuditLine {
        AuditLine {
            seq: 1,
            kind,
            gpa,
            access,
        }
    }

    #[test]
    fn a_write_record_must_name_the_attacked_page() {
        // The image's `_text` at 0xffffffff81000000 is physical 16 MiB.
        let to_phys = |v: u64| v.checked_sub(0xffff_ffff_8100_0000).map(|o| 0x100_0000 + o);
        let want = Record::Write(Some(0xffff_ffff_8120_0123));
        assert!(want.matches(&line(1, 0x120_0ff8, 2), &to_phys));
        // Another page, a read, another kind, an unknown target: no.
        assert!(!want.matches(&line(1, 0x120_1000, 2), &to_phys));
        assert!(!want.matches(&line(1, 0x120_0123, 1), &to_phys));
        assert!(!want.matches(&line(2, 0x120_0123, 2), &to_phys));
        assert!(!Record::Write(None).matches(&line(1, 0x120_0123, 2), &to_phys));
        assert!(Record::Msr(0xc000_0082).matches(&line(3, 0xc000_0082, 2), &to_phys));
        assert!(!Record::Cr(4).matches(&line(2, 0, 2), &to_phys));
    }
}
