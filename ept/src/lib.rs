//! Extended page tables (Intel SDM Vol. 3C, chapter 29 "VMX Support for
//! Address Translation").
#![cfg_attr(not(test), no_std)]
