//! The loader's machine-dependent code: the entry stub and exception stubs
//! (the only assembly outside `okernel/src/arch`) and descriptor tables.

mod entry;
mod exceptions;
pub mod protected32;
pub mod tables;
