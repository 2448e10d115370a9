//! `loader::bootinfo::parse_pvh` over physical memory that is the input
//! itself (address 0 = first byte; the start info at 0): every pointer in
//! the start info, memory map and module list is fuzzer-controlled.
//! Oracles: no panic, no read outside the buffer (the `PhysMem` trait
//! refuses it), and on success a well-formed `BootInfo`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loader::bootinfo::{MAX_MODULES, parse_pvh};
use okernel_fuzz::{PhysSlice, check_boot_info};

fuzz_target!(|data: &[u8]| {
    match parse_pvh(&PhysSlice(data), 0) {
        Ok(info) => {
            check_boot_info(&info);
            // The parser reads at most 4096 bytes (its MAX_CMDLINE) per string.
            assert!(info.cmdline.len() < 4096);
            assert!(info.modules().count() <= MAX_MODULES);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
