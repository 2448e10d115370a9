//! `loader::bootinfo::parse_multiboot2` (the `multiboot2` crate's loader
//! plus okernel's reduction) over an 8-aligned copy of the input. The
//! copy is zero-padded to the `total_size` the header announces (at most
//! 64 KiB; a larger one is cut to the input), which is the parser's
//! safety contract: the structure is readable for `total_size` bytes.
//! Oracles: no panic, and on success a well-formed `BootInfo` whose
//! strings lie inside the structure.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loader::bootinfo::parse_multiboot2;
use okernel_fuzz::{aligned_copy, check_boot_info};

/// The largest `total_size` honoured by padding.
const MAX_TOTAL: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if bytes.len() < 8 {
        bytes.resize(8, 0);
    }
    let total = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    if total > bytes.len() {
        if total <= MAX_TOTAL {
            bytes.resize(total, 0);
        } else {
            let len = bytes.len() as u32;
            bytes[..4].copy_from_slice(&len.to_le_bytes());
        }
    }
    let words = aligned_copy(&bytes);
    let start = words.as_ptr() as usize;
    let end = start + bytes.len();
    // SAFETY: `words` is 8-aligned, holds at least the `total_size` bytes
    // the header announces (padded or patched above), and is neither
    // changed nor freed while `info` (which borrows from it) lives.
    let parsed = unsafe { parse_multiboot2(words.as_ptr().cast()) };
    match parsed {
        Ok(info) => {
            check_boot_info(&info);
            let inside = |s: &str| {
                s.is_empty() || {
                    let p = s.as_ptr() as usize;
                    p >= start && p + s.len() <= end
                }
            };
            assert!(
                inside(info.cmdline),
                "the command line lies outside the structure"
            );
            for m in info.modules() {
                assert!(
                    inside(m.cmdline),
                    "a module command line lies outside the structure"
                );
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    drop(words);
});
