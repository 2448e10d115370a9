//! Validated self-patching of Linux's static calls (ABI 1.5): the
//! `__static_call_sites` table and the `.static_call.text` trampolines
//! registered, then each rewrite judged as `text_poke_bp` makes it — int3,
//! the tail a byte at a time (`rep movsb`), the head — with a call or jump
//! into locked text, the NOP, `xor eax, eax` and `ret` legal, and a
//! branch out of text, a tail call's form at a call site (and the
//! reverse) or a trampoline's signature refused.

use okernel_abi::policy::{ExecuteRule, PatchFormat};

use super::patch::{
    BITMAP, GUEST_RFLAGS, KBASE, METHODS, TABLE, assert_refused, image, jump5, r, w8, write,
};
use super::*;
use crate::policy::patch::{
    Form, NOP5, PAGE_SITES, PatchSites, PatchTable, RET5, Refusal, Site, SiteSize, XOR5, judge_page,
};

/// An inline call site (not a tail call).
const CALL_SITE: u64 = TEXT + 0x400;
/// An inline tail-call site.
const TAIL_SITE: u64 = TEXT + 0x500;
/// Functions in text the calls go to.
const F: u64 = TEXT + 0x900;
const G: u64 = TEXT + 0xa00;
/// The `__static_call_sites` table, in rodata after the jump table.
const SITES: u64 = RODATA + 0x200;
/// A static-call key in data (its address carries the tail flag).
const KEY: u64 = DATA + 0x40;
/// Two trampolines (8 bytes each) on text page 3.
const TRAMPS: u64 = TEXT + 0x3000;

fn call5(site: u64, target: u64) -> [u8; 5] {
    let mut b = jump5(site, target);
    b[0] = 0xe8;
    b
}

/// A `__static_call_sites` entry at `index`: `{ s32 addr; s32 key; }`,
/// each relative to its own field, bit 0 of the key the tail flag.
fn site_entry(site: u64, tail: bool, index: u64) -> [u8; 8] {
    let at = KBASE + SITES + 8 * index;
    let key = KBASE + KEY + u64::from(tail);
    let mut e = [0u8; 8];
    e[..4].copy_from_slice(&((KBASE + site).wrapping_sub(at) as i32).to_le_bytes());
    e[4..].copy_from_slice(&(key.wrapping_sub(at + 4) as i32).to_le_bytes());
    e
}

/// A trampoline: its 5-byte site, then the signature.
fn trampoline(site: [u8; 5]) -> [u8; 8] {
    let mut t = [0x0f, 0xb9, 0xcc, 0, 0, 0, 0, 0];
    t.rotate_right(5);
    t[..5].copy_from_slice(&site);
    t
}

/// The image of `patch.rs` plus a call site calling F, a tail site
/// jumping to F, a trampoline jumping to F and one returning; the rule
/// set; returns the text region's id (not locked).
fn static_image(v: &mut PVcpu) -> u64 {
    v.vmcs.set(GuestNatural::Rflags, GUEST_RFLAGS);
    v.vmcs.set(Control32::ExceptionBitmap, BITMAP);
    ok(
        v,
        Call::SetExecuteRule,
        [ExecuteRule::GuestPageTables as u64, 0, 0],
    );
    w8(v, CALL_SITE, &call5(CALL_SITE, F));
    w8(v, TAIL_SITE, &jump5(TAIL_SITE, F));
    w8(v, SITES, &site_entry(CALL_SITE, false, 0));
    w8(v, SITES + 8, &site_entry(TAIL_SITE, true, 1));
    w8(v, TRAMPS, &trampoline(jump5(TRAMPS, F)));
    w8(v, TRAMPS + 8, &trampoline(RET5));
    image(v)
}

fn register(v: &mut PVcpu, va: u64, len: u64, format: PatchFormat) -> Status {
    call(v, Call::RegisterPatchSites, [va, len, format as u64])
}

/// [`static_image`] with the jump labels, the static-call sites and the
/// trampolines registered and text locked.
fn locked(caps: PolicyCaps) -> PVcpu {
    let mut v = pvcpu_with(caps);
    let text = static_image(&mut v);
    for (va, len, format, sites) in [
        (KBASE + TABLE, 48, PatchFormat::LinuxJumpEntry, 3),
        (KBASE + SITES, 16, PatchFormat::LinuxStaticCallSite, 2),
        (
            KBASE + TRAMPS,
            16,
            PatchFormat::LinuxStaticCallTrampoline,
            2,
        ),
    ] {
        assert_eq!(register(&mut v, va, len, format), Status::Success);
        assert_eq!(v.regs.rdi(), sites, "{format:?}");
    }
    ok(&mut v, Call::LockRegion, [text, 0, 0]);
    v
}

/// `text_poke_bp`'s three steps, the tail written a byte at a time;
/// returns the last step's result (the earlier ones must pass).
fn poke(v: &mut PVcpu, site: u64, to: [u8; 5]) -> Result<ExitAction, ExitError> {
    assert_eq!(write(v, site, &[0xcc]), Ok(ExitAction::Resume));
    for (k, b) in to[1..].iter().enumerate() {
        assert_eq!(
            write(v, site + 1 + k as u64, &[*b]),
            Ok(ExitAction::Resume),
            "tail byte {k}: the transitional form is legal"
        );
    }
    write(v, site, &to[..1])
}

#[test]
fn calls_move_between_functions_in_text_the_nop_and_return_zero() {
    for caps in METHODS {
        let mut v = locked(caps);
        for to in [
            call5(CALL_SITE, G),
            NOP5,
            XOR5[0],
            XOR5[1],
            call5(CALL_SITE, F),
        ] {
            assert_eq!(poke(&mut v, CALL_SITE, to), Ok(ExitAction::Resume));
            assert_eq!(r(&v, CALL_SITE, 5), to);
        }
        for to in [RET5, jump5(TAIL_SITE, G)] {
            assert_eq!(poke(&mut v, TAIL_SITE, to), Ok(ExitAction::Resume));
            assert_eq!(r(&v, TAIL_SITE, 5), to);
        }
        // The trampolines: the NULL one gets a function, the other loses
        // its own; one instruction may write a whole site too.
        assert_eq!(
            write(&mut v, TRAMPS + 8, &jump5(TRAMPS + 8, G)),
            Ok(ExitAction::Resume)
        );
        assert_eq!(poke(&mut v, TRAMPS, RET5), Ok(ExitAction::Resume));
        assert_eq!(injected(&v), 0);
        assert_eq!(v.audit.total(), 0, "legal patches are not violations");
    }
}

#[test]
fn a_branch_out_of_text_is_undone_audited_and_faulted() {
    for caps in METHODS {
        let mut v = locked(caps);
        // Into data and into rodata: the tail is not judged while the
        // head is int3, the head that makes it a call is refused.
        let mut records = 0;
        for target in [DATA + 0x100, RODATA] {
            let res = poke(&mut v, CALL_SITE, call5(CALL_SITE, target));
            records += 1;
            assert_refused(&v, res, CALL_SITE, records);
            assert_eq!(r(&v, CALL_SITE, 1), [0xcc], "the head is back (int3)");
            v.vmcs.set(Control32::EntryInterruptionInfo, 0);
        }
        // Back to a legal call: the site recovers.
        assert_eq!(
            write(&mut v, CALL_SITE, &call5(CALL_SITE, G)),
            Ok(ExitAction::Resume)
        );
        let res = write(&mut v, TRAMPS, &jump5(TRAMPS, DATA));
        records += 1;
        assert_refused(&v, res, TRAMPS, records);
        assert_eq!(r(&v, TRAMPS, 5), jump5(TRAMPS, F), "the old jump is back");
    }
}

#[test]
fn a_call_site_takes_no_tail_form_and_a_tail_site_no_call_form() {
    for caps in METHODS {
        let mut v = locked(caps);
        let mut records = 0;
        for (site, form) in [
            (CALL_SITE, jump5(CALL_SITE, G)),
            (CALL_SITE, RET5),
            (CALL_SITE, [0x90; 5]),
            (TAIL_SITE, call5(TAIL_SITE, G)),
            (TAIL_SITE, NOP5),
            (TAIL_SITE, XOR5[0]),
            (TRAMPS + 8, call5(TRAMPS + 8, G)),
        ] {
            let old = r(&v, site, 5);
            let res = write(&mut v, site, &form);
            records += 1;
            assert_refused(&v, res, site, records);
            assert_eq!(r(&v, site, 5), old, "{form:02x?} at {site:#x}");
            v.vmcs.set(Control32::EntryInterruptionInfo, 0);
        }
    }
}

#[test]
fn a_trampolines_signature_is_outside_its_site() {
    let mut v = locked(ALL);
    let res = write(&mut v, TRAMPS + 5, &[0x90]);
    assert_refused(&v, res, TRAMPS + 5, 1);
    assert_eq!(r(&v, TRAMPS + 5, 3), [0x0f, 0xb9, 0xcc]);
}

#[test]
fn registration_wants_each_table_in_its_place_and_every_site_in_a_legal_form() {
    use PatchFormat::{LinuxStaticCallSite as Sites, LinuxStaticCallTrampoline as Tramps};
    let mut v = pvcpu();
    let text = static_image(&mut v);
    // Sites are a table in locked rodata; trampolines lie in text.
    assert_eq!(
        register(&mut v, KBASE + TRAMPS, 16, Sites),
        Status::InvalidArgument
    );
    assert_eq!(
        register(&mut v, KBASE + SITES, 16, Tramps),
        Status::InvalidArgument
    );
    // A call site calling into data when the table is registered.
    w8(&v, CALL_SITE, &call5(CALL_SITE, DATA));
    assert_eq!(
        register(&mut v, KBASE + SITES, 16, Sites),
        Status::InvalidArgument
    );
    w8(&v, CALL_SITE, &call5(CALL_SITE, F));
    // A trampoline without its signature.
    w8(&v, TRAMPS + 13, &[0x90]);
    assert_eq!(
        register(&mut v, KBASE + TRAMPS, 16, Tramps),
        Status::InvalidArgument
    );
    w8(&v, TRAMPS + 13, &[0x0f]);
    // A length that is not a whole number of entries.
    assert_eq!(
        register(&mut v, KBASE + SITES, 12, Sites),
        Status::Unaligned
    );
    assert_eq!(register(&mut v, KBASE + SITES, 16, Sites), Status::Success);
    assert_eq!(
        register(&mut v, KBASE + TRAMPS, 16, Tramps),
        Status::Success
    );
    // Nothing more once text is locked.
    ok(&mut v, Call::LockRegion, [text, 0, 0]);
    assert_eq!(register(&mut v, KBASE + TRAMPS, 16, Tramps), Status::Locked);
}

#[test]
fn the_legal_forms_of_each_kind_of_site() {
    let text = |gpa: Gpa| (TEXT..TEXT + 0x4000).contains(&gpa.0);
    let site = |form| Site {
        va: KBASE + CALL_SITE,
        gpa: Gpa(CALL_SITE),
        form,
        size: SiteSize::Long,
    };
    let call = site(Form::StaticCall);
    let tail = site(Form::StaticTail);
    let into = |op: u8, to: u64| {
        let mut b = jump5(CALL_SITE, to);
        b[0] = op;
        b
    };
    assert!(call.whole(&into(0xe8, F), &text));
    assert!(
        !call.whole(&into(0xe8, TEXT + 0x4000), &text),
        "one past text"
    );
    assert!(call.whole(&into(0xe8, TEXT), &text));
    assert!(!call.whole(&into(0xe9, F), &text));
    assert!(tail.whole(&into(0xe9, F), &text));
    assert!(!tail.whole(&into(0xe8, F), &text));
    // Transitional: int3 and any tail; not whole.
    for s in [call, tail] {
        assert!(s.legal(&[0xcc, 1, 2, 3, 4], &text));
        assert!(!s.whole(&[0xcc, 1, 2, 3, 4], &text));
        assert!(!s.legal(&[0xcd, 1, 2, 3, 4], &text));
        assert!(!s.legal(&[0xcc, 1, 2, 3], &text), "too short");
    }
    assert_eq!(
        Site::size_of(
            KBASE + CALL_SITE,
            Gpa(CALL_SITE),
            Form::StaticCall,
            &NOP5,
            &text
        ),
        Some(SiteSize::Long)
    );
    // A 2-byte NOP never makes a static call short.
    assert_eq!(
        Site::size_of(
            KBASE + CALL_SITE,
            Gpa(CALL_SITE),
            Form::StaticCall,
            &[0x66, 0x90, 0, 0, 0],
            &text
        ),
        None
    );
}

#[test]
fn a_static_call_entry_decodes_its_site_and_tail_flag() {
    let t = PatchTable {
        format: PatchFormat::LinuxStaticCallSite,
        va: KBASE + SITES,
        gpa: Gpa(SITES),
        entries: 2,
        first: 0,
    };
    assert_eq!(
        t.decode(0, &site_entry(CALL_SITE, false, 0)),
        Some((KBASE + CALL_SITE, Form::StaticCall))
    );
    assert_eq!(
        t.decode(1, &site_entry(TAIL_SITE, true, 1)),
        Some((KBASE + TAIL_SITE, Form::StaticTail))
    );
    let tramps = PatchTable {
        format: PatchFormat::LinuxStaticCallTrampoline,
        va: KBASE + TRAMPS,
        ..t
    };
    assert_eq!(
        tramps.decode(1, &trampoline(RET5)),
        Some((KBASE + TRAMPS + 8, Form::StaticTail))
    );
}

#[test]
fn a_page_is_judged_the_same_from_the_index_and_by_a_walk() {
    for n in [4, PAGE_SITES as u64 + 8] {
        judge_many_sites(n);
    }
}

/// `n` call sites 8 bytes apart on one page, each calling into text, the
/// table (8-byte entries) on another page; linear = physical. A page with
/// more than [`PAGE_SITES`] sites is not indexed but walked.
fn judge_many_sites(n: u64) {
    let (page, table) = (0x1000u64, 0x3000u64);
    let mut mem = vec![0u8; 0x4000];
    for i in 0..n {
        let site = page + 8 * i;
        mem[site as usize..][..5].copy_from_slice(&call5(site, 0x2000));
        let at = table + 8 * i;
        let addr = (site.wrapping_sub(at) as i32).to_le_bytes();
        let key = (0x3f00u64.wrapping_sub(at + 4) as i32).to_le_bytes();
        mem[at as usize..][..4].copy_from_slice(&addr);
        mem[at as usize + 4..][..4].copy_from_slice(&key);
    }
    let mut sites = PatchSites::default();
    sites.tables[0] = Some(PatchTable {
        format: PatchFormat::LinuxStaticCallSite,
        va: table,
        gpa: Gpa(table),
        entries: n as u32,
        first: 0,
    });
    for i in 0..n as u32 {
        sites.set_size(i, SiteSize::Long);
    }
    let text = |gpa: Gpa| (0x1000..0x3000).contains(&gpa.0);
    let mut before = [0u8; 4096];
    before.copy_from_slice(&mem[page as usize..][..4096]);
    let last = page + 8 * (n - 1);
    for (target, verdict) in [
        (0x2100, Ok(1)),
        (0x3f00, Err(Refusal::IllegalForm(Gpa(last)))),
    ] {
        let mut now = mem.clone();
        now[last as usize..][..5].copy_from_slice(&call5(last, target));
        let read = |gpa: Gpa, buf: &mut [u8]| {
            buf.copy_from_slice(&now[gpa.0 as usize..][..buf.len()]);
            true
        };
        assert!(sites.page_has_site(Gpa(page), &mut { read }));
        assert!(!sites.page_has_site(Gpa(0x2000), &mut { read }));
        assert!(sites.page_has_site(Gpa(page), &mut { read }));
        let judged = judge_page(
            &sites,
            Gpa(page),
            &before,
            &mut { read },
            &mut { read },
            &text,
        );
        assert_eq!(judged, verdict, "{n} sites, a call to {target:#x}");
    }
}

/// A review's bypass: a static call into the bytes of another site, which
/// a write primitive chooses — the tail of a site left at `cc`
/// (`ff e7`: `jmp *%rdi`), or the `rel32` of a legal jump — would run
/// them and branch out of text. Refused: no static call goes inside a
/// site (after its first byte).
#[test]
fn a_static_call_into_another_sites_bytes_is_refused() {
    for caps in METHODS {
        let mut v = locked(caps);
        // The tail site left in the transitional form with a gadget tail.
        assert_eq!(write(&mut v, TAIL_SITE, &[0xcc]), Ok(ExitAction::Resume));
        for (k, b) in [0xffu8, 0xe7, 0x90, 0x90].iter().enumerate() {
            assert_eq!(
                write(&mut v, TAIL_SITE + 1 + k as u64, &[*b]),
                Ok(ExitAction::Resume)
            );
        }
        let res = poke(&mut v, CALL_SITE, call5(CALL_SITE, TAIL_SITE + 1));
        assert_refused(&v, res, CALL_SITE, 1);
        v.vmcs.set(Control32::EntryInterruptionInfo, 0);
        // A trampoline's legal jump whose rel32 is the gadget.
        let gadget = jump5(TRAMPS, TEXT + 0x1804);
        assert_eq!(gadget[1..3], [0xff, 0xe7], "rel32 -6145: ff e7 ff ff");
        assert_eq!(write(&mut v, TRAMPS, &gadget), Ok(ExitAction::Resume));
        let res = write(&mut v, CALL_SITE, &call5(CALL_SITE, TRAMPS + 1));
        assert_refused(&v, res, CALL_SITE, 2);
        // Another site's first byte stays a legal target (a function may
        // begin with a patch site); the sites' forms are legal there.
        v.vmcs.set(Control32::EntryInterruptionInfo, 0);
        assert_eq!(
            write(&mut v, CALL_SITE, &call5(CALL_SITE, TRAMPS + 8)),
            Ok(ExitAction::Resume)
        );
    }
}
