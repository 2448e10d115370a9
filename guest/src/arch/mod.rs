//! The guest's machine-dependent code: entry stub, descriptor tables,
//! exception stubs and probes (the guest's only assembly).

mod entry;
pub mod instr;
pub mod tables;
pub mod traps;
