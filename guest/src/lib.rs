//! The demo guest kernel.
#![cfg_attr(not(test), no_std)]
