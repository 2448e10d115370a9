//! The protection policy: a sequence of operations an attacker in the
//! outer kernel can perform — policy hypercalls 16–29 with plausible or
//! arbitrary arguments, context switches, CR writes, WRMSRs, descriptor-
//! table loads, guest accesses — through okernel's exit handlers with the
//! real `Protection` policy on the fake VMCS and CPU. Oracles
//! (`okernel_fuzz::policy::Shadow`) after every operation: views never
//! loosen after a lock, locks never unlock, pins and MSR locks hold,
//! switches to the trusted view resume at a gate, denials audited once.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use okernel::policy::protection::PolicyCaps;
use okernel_fuzz::policy::{ALL, Op, Shadow, build};

#[derive(Debug, Arbitrary)]
struct Input {
    no_mbec: bool,
    single_invept: bool,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let caps = PolicyCaps {
        mbec: !input.no_mbec,
        invept_all: !input.single_invept,
        ..ALL
    };
    let mut v = build(caps);
    let mut shadow = Shadow::default();
    for &op in input.ops.iter().take(64) {
        shadow.step(&mut v, op);
    }
});
