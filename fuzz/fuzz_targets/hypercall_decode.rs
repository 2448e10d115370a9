//! The hypercall decoder, `okernel_abi::Request::decode`, on any
//! registers in either mode. Oracles: no panic; a decoded request names
//! the call RAX names (its operand) and encodes back to registers that
//! decode to it again, in 64-bit mode and, where they fit in 32 bits, in
//! every mode; a refused number is `UnknownCall` exactly when it is no
//! call; where `needs_mode` says the mode cannot matter, both modes
//! answer alike; and registers a call does not read change nothing.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::{Registers, Request};

#[derive(Debug, Arbitrary)]
struct Input {
    rax: u64,
    args: [u64; 3],
    long_mode: bool,
    /// Replaces the registers the call does not read.
    junk: u64,
}

fuzz_target!(|input: Input| {
    let regs = Registers::new(input.rax, input.args);
    let answer = Request::decode(regs, input.long_mode);
    let operands = regs.in_mode(input.long_mode);
    let call = Call::from_raw(operands.rax);
    match answer {
        Ok(request) => {
            assert_eq!(Ok(request.call()), call);
            let encoded = request.registers();
            assert_eq!(Request::decode(encoded, true), Ok(request));
            if !encoded.needs_mode() {
                assert_eq!(Request::decode(encoded, false), Ok(request));
            }
        }
        Err(Status::UnknownCall) => assert!(call.is_err()),
        Err(_) => assert!(call.is_ok()),
    }
    if !regs.needs_mode() {
        assert_eq!(Request::decode(regs, !input.long_mode), answer);
    }
    if let Ok(c) = call {
        let mut args = input.args;
        for a in args.iter_mut().skip(c.arguments()) {
            *a = input.junk;
        }
        let other = Request::decode(Registers::new(input.rax, args), input.long_mode);
        assert_eq!(other, answer);
    }
});
