//! okernel's VM fuzz driver: a LibAFL fuzzer whose executor runs each test
//! case in a booted okernel image, through the in-guest executor and the
//! sessions of `qemu_harness::fuzz` (Bochs or KVM), with the monitor's
//! and the executor's oracles as the objective. See docs/fuzzing.md.

pub mod backends;
pub mod campaign;
pub mod cli;
pub mod executor;
pub mod mock;
pub mod ops;

#[cfg(test)]
mod tests;
