//! The okernel loader.
#![cfg_attr(not(test), no_std)]
