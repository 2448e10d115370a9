//! [`Registers`]: what a hypercall reads, as the guest left them, and
//! the operands they are in the guest's mode.

use crate::hypercall::Call;

/// The registers a hypercall reads, as the guest left them: RAX (the
/// call number) and RDI, RSI, RDX (arguments 0 to 2). RCX (argument 3)
/// is part of the convention, but no call reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Registers {
    /// The call number.
    pub rax: u64,
    /// Argument 0.
    pub rdi: u64,
    /// Argument 1.
    pub rsi: u64,
    /// Argument 2.
    pub rdx: u64,
}

const LOW_HALF: u64 = 0xffff_ffff;

impl Registers {
    /// RAX = `call`, the arguments in RDI, RSI, RDX.
    pub const fn new(call: u64, args: [u64; 3]) -> Self {
        Self {
            rax: call,
            rdi: args[0],
            rsi: args[1],
            rdx: args[2],
        }
    }

    /// The arguments, RDI, RSI, RDX.
    pub const fn args(self) -> [u64; 3] {
        [self.rdi, self.rsi, self.rdx]
    }

    /// The registers as operands of a guest in 64-bit mode (`long_mode`,
    /// unchanged) or not (the low 32 bits).
    pub const fn in_mode(self, long_mode: bool) -> Self {
        if long_mode {
            return self;
        }
        Self {
            rax: self.rax & LOW_HALF,
            rdi: self.rdi & LOW_HALF,
            rsi: self.rsi & LOW_HALF,
            rdx: self.rdx & LOW_HALF,
        }
    }

    /// Whether the guest's mode can change what [`super::Request::decode`]
    /// answers: RAX, or an argument the call reads
    /// ([`Call::arguments`]), has a non-zero upper half. Every call
    /// number fits in 32 bits, so a number with a zero upper half names
    /// the same call in every mode.
    pub const fn needs_mode(self) -> bool {
        if self.rax > LOW_HALF {
            return true;
        }
        let n = match Call::from_raw(self.rax) {
            Ok(call) => call.arguments(),
            Err(_) => 0,
        };
        let args = self.args();
        let mut i = 0;
        while i < n {
            if args[i] > LOW_HALF {
                return true;
            }
            i += 1;
        }
        false
    }
}
