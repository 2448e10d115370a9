//! `loader::cmdline::Options::parse` on any UTF-8 line. Oracles: no panic;
//! the guest arguments are a substring of the line and contain no
//! surrounding whitespace; parsing is deterministic; errors render.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loader::cmdline::Options;

fuzz_target!(|line: &str| {
    match Options::parse(line) {
        Ok(o) => {
            assert!(line.contains(o.guest_args));
            assert_eq!(o.guest_args, o.guest_args.trim());
            if !o.guest_args.is_empty() {
                let p = o.guest_args.as_ptr() as usize;
                let base = line.as_ptr() as usize;
                assert!(p >= base && p + o.guest_args.len() <= base + line.len());
            }
            assert_eq!(Options::parse(line), Ok(o));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
