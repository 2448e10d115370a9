//! The exit-information decoders: `ept::EptViolation::decode`,
//! `ept::check_entry`, `ept::Eptp::from_raw`, `ept::EptCaps::from_msrs`,
//! okernel's CR-access and I/O qualification decoders, the exit-reason
//! field, interruption information and the entry-failure qualification.
//! Oracles: no panic, and each decoder agrees with the SDM's bit layout.
#![no_main]

use arbitrary::Arbitrary;
use ept::{Access, EptCaps, EptViolation, Eptp, LinearAccess, Perms};
use libfuzzer_sys::fuzz_target;
use okernel::vmx::event::InterruptionInfo;
use okernel::vmx::exit_reason::{ExitReason, ExitReasonField};
use okernel::vmx::qualification::{CrAccess, IoAccess, entry_failure_meaning};

#[derive(Debug, Arbitrary)]
struct Input {
    qualification: u64,
    ept_vpid_cap: u64,
    procbased_ctls2: u64,
    phys_addr_bits: u8,
    mbec: bool,
    entry: u64,
    level: u8,
    eptp: u64,
    field: u32,
}

/// The fake CPU's capabilities (Bochs-like), when the fuzzed MSRs decode to
/// nothing usable.
fn fallback() -> EptCaps {
    EptCaps::from_msrs(0x0000_0f01_0633_4141, 0x0053_7fff_0000_0000, 39).expect("valid caps")
}

fn ept_violation(q: u64, caps: &EptCaps, mbec: bool) {
    let bit = |n: u32| q & (1 << n) != 0;
    match EptViolation::decode(q, caps, mbec) {
        Ok(v) => {
            assert_eq!(q >> 17, 0, "reserved bits 63:17 accepted");
            assert!(bit(7) || !bit(8), "bit 8 without bit 7 accepted");
            assert_eq!(v.access, Access::from_bits_truncate(q as u8));
            assert_eq!(v.allowed.contains(Perms::READ), bit(3));
            assert_eq!(v.allowed.contains(Perms::WRITE), bit(4));
            assert_eq!(v.allowed.contains(Perms::EXECUTE), bit(5));
            assert_eq!(v.allowed.contains(Perms::USER_EXECUTE), mbec && bit(6));
            assert_eq!(v.linear == LinearAccess::None, !bit(7));
            assert_eq!(v.nmi_unblocking, bit(12));
            assert_eq!(v.asynchronous, bit(16));
            assert_eq!(v.not_present(), v.allowed.is_empty());
        }
        Err(e) => {
            assert!(
                q >> 17 != 0 || (bit(8) && !bit(7)),
                "qualification {q:#x} refused: {e}"
            );
        }
    }
}

fn entry(raw: u64, level: u8, caps: &EptCaps, mbec: bool) {
    let e = ept::Entry::from_raw(raw);
    assert_eq!(e.raw(), raw);
    let _ = e.attributes();
    let _ = e.memory_type();
    let present =
        e.perms().intersects(Perms::RWX) || (mbec && e.perms().contains(Perms::USER_EXECUTE));
    let r = ept::check_entry(e, level, caps, mbec);
    if !present {
        assert!(
            r.is_ok(),
            "a not-present entry {raw:#x} is a misconfiguration: {r:?}"
        );
    }
    if r.is_ok() && present {
        assert!(
            !e.perms().contains(Perms::WRITE) || e.perms().contains(Perms::READ),
            "write-without-read entry {raw:#x} accepted"
        );
    }
}

fn eptp(raw: u64, caps: &EptCaps) {
    if let Ok(p) = Eptp::from_raw(raw, caps) {
        assert_eq!(p.raw(), raw);
        assert_eq!(p.page_walk_length(), 4);
        assert!(p.root().addr() < caps.hpa_limit());
        let _ = (p.memory_type(), p.accessed_dirty());
    }
}

fn okernel_decoders(q: u64, field: u32) {
    let cr = CrAccess::decode(q);
    assert_eq!(u64::from(cr.cr), q & 0xf);
    assert_eq!(cr.gpr as u64, (q >> 8) & 0xf);
    assert_eq!(u64::from(cr.lmsw_source), (q >> 16) & 0xffff);
    let io = IoAccess::decode(q);
    assert!((1..=8).contains(&io.size));
    assert_eq!(u64::from(io.port), (q >> 16) & 0xffff);
    assert!(!entry_failure_meaning(q).is_empty());

    let f = ExitReasonField(field);
    assert_eq!(u32::from(f.basic()), field & 0xffff);
    if let Some(r) = f.reason() {
        assert_eq!(r as u16, f.basic());
        assert!(!r.name().is_empty());
        assert_eq!(ExitReason::from_raw(r as u16), Some(r));
    }
    assert_eq!(f.entry_failure(), field >> 31 == 1);
    let i = InterruptionInfo(field);
    assert_eq!(u32::from(i.vector()), field & 0xff);
    assert!(i.kind() < 8);
    let again = InterruptionInfo(i.for_reinjection());
    assert_eq!(
        (
            again.valid(),
            again.vector(),
            again.kind(),
            again.has_error_code()
        ),
        (i.valid(), i.vector(), i.kind(), i.has_error_code())
    );
}

fuzz_target!(|input: Input| {
    let caps = EptCaps::from_msrs(
        input.ept_vpid_cap,
        input.procbased_ctls2,
        input.phys_addr_bits,
    )
    .unwrap_or_else(|_| fallback());
    let bits = caps.phys_addr_bits();
    assert!((36..=52).contains(&bits), "MAXPHYADDR {bits} accepted");
    ept_violation(input.qualification, &caps, input.mbec);
    entry(input.entry, input.level % 6, &caps, input.mbec);
    eptp(input.eptp, &caps);
    okernel_decoders(input.qualification, input.field);
});
