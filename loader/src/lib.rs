//! The okernel loader: the host-testable half of the bootable image.
//!
//! Everything here is pure logic over bytes and address ranges, so it runs
//! in host tests; the bare-metal half (entry stub, descriptor tables, the
//! boot sequence) lives in the `okernel-loader` binary (`src/main.rs`).
#![cfg_attr(not(test), no_std)]

pub mod acpi;
pub mod bootinfo;
pub mod chipset;
pub mod cmdline;
pub mod elf_load;
pub mod handoff;
pub mod linux;
pub mod memmap;
pub mod parking;
pub mod pci_bars;
