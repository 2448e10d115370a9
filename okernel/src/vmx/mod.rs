//! The VMX architecture as data: VMCS field encodings, controls, capability
//! MSRs, exit reasons and qualifications, event injection, instruction
//! errors. No hardware access here (that is [`crate::arch`] and
//! [`crate::hw`]).

// Safe code only above the hardware layers (`hw`, `arch`, `launch`):
// issue 14, DESIGN.md §6.
#![forbid(unsafe_code)]

pub mod capability;
pub mod controls;
pub mod delivery;
pub mod error;
pub mod event;
pub mod exit_reason;
pub mod fields;
mod fields_list;
pub mod msr_bitmap;
pub mod qualification;
pub mod regs;
