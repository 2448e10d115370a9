//! VM-exit handling: a sequence of exits with any exit-reason field,
//! qualification, instruction length, CPL, registers, vectoring
//! information and addresses, through `okernel::exit::handle_exit` on the
//! fake VMCS and CPU. Oracles: `okernel_fuzz::exits` (no panic, no "would
//! #GP" access to a missing MSR, every exit counted, RIP only at or after
//! the instruction, EPT violations audited, VMX hidden, CR0/CR4 enterable).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use okernel::launch::GuestMode;
use okernel_fuzz::exits::{Exit, drive};
use okernel_fuzz::vcpu::build;

#[derive(Debug, Arbitrary)]
struct Input {
    protected32: bool,
    regs: [u64; 16],
    exits: Vec<Exit>,
    window: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let mode = if input.protected32 {
        GuestMode::Protected32
    } else {
        GuestMode::Long64 { cr3: 0x10_0000 }
    };
    let mut v = build(mode, &input.window);
    v.regs.gpr = input.regs;
    for e in input.exits.iter().take(32) {
        let _ = drive(&mut v, e);
    }
});
