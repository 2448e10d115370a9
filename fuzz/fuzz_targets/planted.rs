//! The proof that coverage guidance works: a defect behind an 8-byte magic
//! checked one byte at a time (each byte its own branch: only edge
//! coverage leads there) and then a 64-bit comparison (only comparison
//! tracing leads there). Blind random inputs would need about 2^128 tries;
//! libFuzzer with sanitizer coverage finds it in seconds.
//! `cargo xtask fuzz host` runs it and fails if it is NOT found.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let magic = b"okernel!";
    if data.len() < 16 {
        return;
    }
    for (i, &want) in magic.iter().enumerate() {
        if data[i] != want {
            return;
        }
    }
    let word = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    if word == 0x5eed_f00d_cafe_b0ba {
        panic!("planted defect reached");
    }
});
