//! The okernel monitor: the inner kernel that runs in VMX root mode.
#![cfg_attr(not(test), no_std)]
