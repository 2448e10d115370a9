//! The guest's machine-dependent code: entry stub, descriptor tables,
//! exception stubs and probes, the PIC and the interrupt the fuzz link
//! waits for, ring-3 entry and exit, and the privileged operations of the
//! demo kernel (the guest's only assembly).

pub mod apic;
pub mod canonical;
pub mod cpu;
mod entry;
pub mod instr;
pub mod irq;
pub mod ops;
pub mod tables;
pub mod traps;
pub mod user;
pub mod wake;
