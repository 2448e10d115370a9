//! The hypercall surface: the ABI decoders (`Call::from_raw`,
//! `Status::from_raw`) and okernel's VMCALL handling on the fake VMCS and
//! CPU, a sequence of hypercalls with any numbers and arguments, at CPL 0
//! or 3, in 64-bit or 32-bit mode, with guest memory the Exit call may
//! read a reason from. Oracles: `okernel_fuzz::exits` (a defined status
//! for every call, PermissionDenied at CPL > 0, preserved registers, no
//! copy from monitor memory, no panic).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use okernel::launch::GuestMode;
use okernel_abi::hypercall::{Call, Status};
use okernel_fuzz::exits::{Hypercall, drive};
use okernel_fuzz::vcpu::build;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Decoded on its own by both ABI decoders.
    raw: u64,
    /// A 32-bit protected-mode guest instead of a 64-bit one.
    protected32: bool,
    calls: Vec<Hypercall>,
    /// The guest memory window (reason strings).
    window: Vec<u8>,
}

fn decoders(raw: u64) {
    match Call::from_raw(raw) {
        Ok(c) => {
            assert_eq!(c.raw(), raw);
            assert!(!c.name().is_empty());
        }
        Err(s) => {
            assert_eq!(s, Status::UnknownCall);
            assert!(Call::ALL.iter().all(|c| c.raw() != raw));
        }
    }
    match Status::from_raw(raw) {
        Ok(s) => {
            assert_eq!(s.raw(), raw);
            assert!(!s.name().is_empty());
        }
        Err(v) => assert_eq!(v, raw),
    }
}

fuzz_target!(|input: Input| {
    decoders(input.raw);
    let mode = if input.protected32 {
        GuestMode::Protected32
    } else {
        GuestMode::Long64 { cr3: 0x10_0000 }
    };
    let mut v = build(mode, &input.window);
    for call in input.calls.iter().take(32) {
        let _ = drive(&mut v, &call.exit());
    }
});
