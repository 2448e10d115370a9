//! The guest's machine-dependent code.

mod entry;
