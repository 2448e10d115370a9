//! The okernel image entry.
#![no_std]
#![no_main]
