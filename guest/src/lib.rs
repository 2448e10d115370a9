//! The demo container-host kernel that okernel runs in VMX non-root mode:
//! the host-testable half (the bare-metal half is `src/main.rs`).
#![cfg_attr(not(test), no_std)]

pub mod attack;
pub mod cmdline;
pub mod fuzz;
pub mod layout;
pub mod paging;
pub mod tasks;
