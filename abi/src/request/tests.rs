//! The decoder: every call's good request, each class of bad argument,
//! the ABI's check order, the upper halves outside 64-bit mode, and the
//! encoding back.

use core::num::NonZeroU64;

use super::*;
use crate::hypercall::{EXIT_REASON_MAX, EXIT_REASON_SLOTS};
use crate::policy::{MAX_CONTEXTS, PatchFormat};

fn decode(call: Call, args: [u64; 3]) -> Result<Request, Status> {
    Request::decode(Registers::new(call.raw(), args), true)
}

fn status(call: Call, args: [u64; 3]) -> Status {
    decode(call, args).expect_err("malformed")
}

/// One well-formed request of every call, with the registers that make it.
fn good() -> Vec<([u64; 3], Request)> {
    let ctx = |c| Context::new(c).unwrap();
    vec![
        ([0; 3], Request::Version),
        ([0; 3], Request::Null),
        (
            [0x11, 0x5000, 5],
            Request::Exit {
                outcome: Outcome::Fail,
                reason: ReasonBytes::new(0x5000, 5),
            },
        ),
        (
            [0x10, 0, 0],
            Request::Exit {
                outcome: Outcome::Pass,
                reason: None,
            },
        ),
        (
            [0x20_0000, 0x3000, 2],
            Request::RegisterRegion {
                pages: Pages::new(0x20_0000, 0x3000).unwrap(),
                kind: RegionKind::Rodata,
            },
        ),
        ([7, 0, 0], Request::LockRegion { region: 7 }),
        (
            [4, 1 << 20, 0],
            Request::PinCr {
                cr: ControlRegister::Cr4,
                bits: NonZeroU64::new(1 << 20).unwrap(),
            },
        ),
        ([0xc000_0080, 0, 0], Request::LockMsr { msr: 0xc000_0080 }),
        ([0; 3], Request::LockDescriptorTables),
        ([0; 3], Request::CreateContext),
        ([3, 0, 0], Request::DestroyContext { context: ctx(3) }),
        (
            [2, 0x9000, 0],
            Request::AllocProtectedPage {
                context: ctx(2),
                page: 0x9000,
            },
        ),
        (
            [0, 0x9000, 0],
            Request::FreeProtectedPage {
                context: ctx(0),
                page: 0x9000,
            },
        ),
        (
            [0xffff_ffff_8100_0000, 0xffff_c900_0000_4000, 0x10_0018],
            Request::RegisterGate {
                linear: Canonical::new(0xffff_ffff_8100_0000).unwrap(),
                stack: GateStack::new(0xffff_c900_0000_4000).unwrap(),
                cr3: GateCr3::new(0x10_0018).unwrap(),
            },
        ),
        (
            [1, 0, 0],
            Request::SwitchContext {
                context: 1,
                gate: 0,
            },
        ),
        (
            [0x10_0008, 0x20_0003, 0],
            Request::UpdatePageTable {
                entry: EntryAddr::new(0x10_0008).unwrap(),
                value: 0x20_0003,
            },
        ),
        ([0; 3], Request::AuditCount),
        (
            [4, 0x8000, 0],
            Request::AuditRead {
                sequence: 4,
                buffer: 0x8000,
            },
        ),
        (
            [1, 0, 0],
            Request::SetExecuteRule {
                rule: ExecuteRule::GuestPageTables,
            },
        ),
        (
            [0xffff_ffff_8200_0008, 32, 1],
            Request::RegisterPatchSites {
                table: PatchTable::new(0xffff_ffff_8200_0008, 32, 1).unwrap(),
            },
        ),
        (
            [10, 0, 0],
            Request::ExitCount {
                reason: ExitReasonSlot::new(10).unwrap(),
            },
        ),
    ]
}

#[test]
fn every_call_has_a_good_request_that_decodes() {
    let good = good();
    for &call in Call::ALL {
        assert!(good.iter().any(|(_, r)| r.call() == call), "{call:?}");
    }
    for (args, request) in good {
        assert_eq!(decode(request.call(), args), Ok(request), "{args:x?}");
    }
}

#[test]
fn a_decoded_request_encodes_back() {
    for (args, request) in good() {
        let regs = request.registers();
        assert_eq!(regs, Registers::new(request.call().raw(), args));
        assert_eq!(Request::decode(regs, true), Ok(request));
    }
}

#[test]
fn numbers_outside_the_abi_are_unknown_calls() {
    for n in [3, 15, 33, 0x100, 0x101, 1 << 32, u64::MAX] {
        let r = Request::decode(Registers::new(n, [0; 3]), true);
        assert_eq!(r, Err(Status::UnknownCall), "{n:#x}");
    }
}

#[test]
fn exit_needs_an_outcome_and_a_bounded_reason() {
    for code in [0, 0x14, 0x110, u64::MAX] {
        assert_eq!(status(Call::Exit, [code, 0, 0]), Status::InvalidArgument);
    }
    // RSI is ignored without a length; a reason of the maximum is fine.
    assert!(decode(Call::Exit, [0x10, u64::MAX, 0]).is_ok());
    assert!(decode(Call::Exit, [0x10, 0x1000, EXIT_REASON_MAX]).is_ok());
    for (gpa, len) in [
        (0x1000, EXIT_REASON_MAX + 1),
        (u64::MAX - 3, 8),
        (0, u64::MAX),
    ] {
        assert_eq!(
            status(Call::Exit, [0x10, gpa, len]),
            Status::InvalidArgument
        );
    }
}

#[test]
fn register_region_checks_kind_then_alignment_then_length() {
    let s = |a| status(Call::RegisterRegion, a);
    assert_eq!(s([0x1000, 0x1000, 0]), Status::InvalidArgument);
    assert_eq!(s([0x1000, 0x1000, 8]), Status::InvalidArgument);
    assert_eq!(s([0x1001, 0, 9]), Status::InvalidArgument, "kind first");
    assert_eq!(s([0x1001, 0x1000, 1]), Status::Unaligned);
    assert_eq!(s([0x1001, 0, 1]), Status::Unaligned, "base before length");
    assert_eq!(s([0x1000, 0, 1]), Status::Empty);
    assert_eq!(s([0x1000, 0x1800, 1]), Status::Unaligned);
    let top = !0xfff_u64;
    assert_eq!(s([top, 0x2000, 1]), Status::OutOfRam);
    assert!(decode(Call::RegisterRegion, [top, 0x1000, 1]).is_err());
    assert!(decode(Call::RegisterRegion, [top - 0x1000, 0x1000, 1]).is_ok());
}

#[test]
fn pin_cr_needs_cr0_or_cr4_and_some_bits() {
    for cr in [1, 2, 3, 8, 1 << 32] {
        assert_eq!(status(Call::PinCr, [cr, 1, 0]), Status::InvalidArgument);
    }
    assert_eq!(status(Call::PinCr, [0, 0, 0]), Status::InvalidArgument);
    // Which bits are pinnable (and set) is the monitor's to say.
    assert!(decode(Call::PinCr, [0, u64::MAX, 0]).is_ok());
}

#[test]
fn lock_msr_takes_a_32_bit_index() {
    assert_eq!(
        status(Call::LockMsr, [1 << 32 | 0x80, 0, 0]),
        Status::InvalidArgument
    );
    assert!(decode(Call::LockMsr, [u64::from(u32::MAX), 0, 0]).is_ok());
}

#[test]
fn context_ids_are_bounded() {
    let max = MAX_CONTEXTS as u64;
    for c in [max + 1, 1 << 16, u64::MAX] {
        assert_eq!(status(Call::DestroyContext, [c, 0, 0]), Status::BadContext);
        assert_eq!(
            status(Call::AllocProtectedPage, [c, 0x1001, 0]),
            Status::BadContext,
            "the context before the page"
        );
        assert_eq!(
            status(Call::FreeProtectedPage, [c, 0, 0]),
            Status::BadContext
        );
    }
    assert_eq!(status(Call::DestroyContext, [0, 0, 0]), Status::BadContext);
    assert!(decode(Call::DestroyContext, [max, 0, 0]).is_ok());
    // An unaligned page is the handler's (after the context is live).
    assert!(decode(Call::AllocProtectedPage, [max, 0x1001, 0]).is_ok());
}

#[test]
fn register_gate_checks_stack_cr3_and_address() {
    let s = |a| status(Call::RegisterGate, a);
    let text = 0xffff_ffff_8100_0000;
    for stack in [8, 0x8000_0000_0000_0000, 0x0000_8000_0000_0000, 1] {
        assert_eq!(s([text, stack, 0]), Status::InvalidArgument, "{stack:#x}");
    }
    for cr3 in [1, 1 << 63, 1 << 52, 0x10_0000 | 1 << 5, 0xfff] {
        assert_eq!(s([text, 0, cr3]), Status::InvalidArgument, "{cr3:#x}");
    }
    assert_eq!(s([0x0000_8000_0000_0000, 0, 0]), Status::InvalidArgument);
    let Ok(Request::RegisterGate { stack, cr3, .. }) = decode(Call::RegisterGate, [text, 0, 0])
    else {
        panic!("a gate without stack and page tables");
    };
    assert_eq!((stack, cr3), (None, None));
    let Ok(Request::RegisterGate { cr3: Some(c), .. }) =
        decode(Call::RegisterGate, [text, 0, 0x12_3018])
    else {
        panic!("PWT, PCD");
    };
    assert_eq!(c.root(), 0x12_3000);
}

#[test]
fn update_page_table_needs_an_aligned_entry() {
    for entry in [1, 4, 0x1007] {
        assert_eq!(
            status(Call::UpdatePageTable, [entry, 0, 0]),
            Status::Unaligned
        );
    }
}

#[test]
fn set_execute_rule_knows_two_rules() {
    for rule in [2, 1 << 32, u64::MAX] {
        assert_eq!(
            status(Call::SetExecuteRule, [rule, 0, 0]),
            Status::InvalidArgument
        );
    }
    assert!(decode(Call::SetExecuteRule, [0, 0, 0]).is_ok());
}

#[test]
fn register_patch_sites_checks_format_then_length_then_alignment() {
    let s = |a| status(Call::RegisterPatchSites, a);
    assert_eq!(s([0x1000, 16, 0]), Status::InvalidArgument);
    assert_eq!(s([0x1001, 0, 4]), Status::InvalidArgument, "format first");
    assert_eq!(s([0x1001, 0, 1]), Status::Empty, "length before alignment");
    assert_eq!(s([0x1000, 8, 1]), Status::Unaligned, "16-byte entries");
    assert_eq!(s([0x1004, 16, 1]), Status::Unaligned);
    assert!(decode(Call::RegisterPatchSites, [0x1000, 8, 2]).is_ok());
    let Ok(Request::RegisterPatchSites { table }) =
        decode(Call::RegisterPatchSites, [0x1000, 48, 3])
    else {
        panic!("trampolines");
    };
    assert_eq!(
        (table.format(), table.entries()),
        (PatchFormat::LinuxStaticCallTrampoline, 6)
    );
}

#[test]
fn exit_count_is_bounded_by_the_slots() {
    for reason in [EXIT_REASON_SLOTS, 0x1_0000, u64::MAX] {
        assert_eq!(
            status(Call::ExitCount, [reason, 0, 0]),
            Status::InvalidArgument
        );
    }
    assert!(decode(Call::ExitCount, [EXIT_REASON_SLOTS - 1, 0, 0]).is_ok());
}

/// Sets the upper half of every register.
fn dirty(r: Registers) -> Registers {
    let up = |v: u64| v | 0xdead_beef_0000_0000;
    Registers {
        rax: up(r.rax),
        rdi: up(r.rdi),
        rsi: up(r.rsi),
        rdx: up(r.rdx),
    }
}

#[test]
fn upper_halves_are_ignored_outside_64_bit_mode() {
    for (args, request) in good() {
        // Requests whose arguments fit in 32 bits: in a 32-bit guest the
        // same request whatever the upper halves hold.
        if args.iter().any(|&a| a > 0xffff_ffff) {
            continue;
        }
        let regs = dirty(Registers::new(request.call().raw(), args));
        assert!(regs.needs_mode());
        assert_eq!(Request::decode(regs, false), Ok(request), "{regs:x?}");
        // In 64-bit mode the number is not a call at all.
        assert_eq!(Request::decode(regs, true), Err(Status::UnknownCall));
    }
    // An argument: ExitCount(2^32 + 5) is reason 5 outside 64-bit mode.
    let regs = Registers::new(Call::ExitCount.raw(), [1 << 32 | 5, 0, 0]);
    assert!(regs.needs_mode());
    assert_eq!(
        Request::decode(regs, false),
        Ok(Request::ExitCount {
            reason: ExitReasonSlot::new(5).unwrap()
        })
    );
    assert_eq!(Request::decode(regs, true), Err(Status::InvalidArgument));
}

#[test]
fn the_mode_matters_only_where_needs_mode_says() {
    let values = [0, 1, 0x10, 0x1000, 0xffff_ffff, 1 << 32, u64::MAX];
    let numbers = Call::ALL
        .iter()
        .map(|c| c.raw())
        .chain([3, 0x100, 1 << 32 | 2]);
    for n in numbers {
        for &a in &values {
            for &b in &values {
                for &c in &values {
                    let regs = Registers::new(n, [a, b, c]);
                    let (long, short) = (Request::decode(regs, true), Request::decode(regs, false));
                    if !regs.needs_mode() {
                        assert_eq!(long, short, "{regs:x?}");
                    }
                    if let Ok(r) = long {
                        assert_eq!(Request::decode(r.registers(), true), Ok(r));
                    }
                }
            }
        }
    }
}

#[test]
fn arguments_count_what_the_call_reads() {
    // A register beyond the call's arguments changes nothing.
    for (args, request) in good() {
        let call = request.call();
        let mut junk = args;
        for a in junk.iter_mut().skip(call.arguments()) {
            *a = u64::MAX;
        }
        assert_eq!(decode(call, junk), Ok(request), "{call:?}");
    }
}

#[test]
fn policy_calls_and_trusted_first() {
    for &c in Call::ALL {
        assert_eq!(c.is_policy(), (16..=31).contains(&c.raw()), "{c:?}");
        assert_eq!(c.trusted_first(), c == Call::RegisterGate);
    }
}
