//! Support shared by okernel's host fuzz targets (`fuzz_targets/`): a
//! budgeted frame pool for EPT views, a fake virtual CPU built the way
//! okernel's own host tests build one, fake guest memory, and a physical
//! memory buffer for the loader's parsers.
//!
//! The targets run on libFuzzer (`libfuzzer-sys`) with sanitizer-coverage
//! instrumentation; `cargo xtask fuzz host` builds and runs them, and
//! `docs/fuzzing.md` describes targets, oracles and flags.

pub mod ept_model;
pub mod exits;
pub mod policy;
pub mod pool;
pub mod vcpu;

use loader::bootinfo::PhysMem;

/// Physical memory for the loader's parsers: `bytes` at physical `base`;
/// everything else is unreadable.
#[derive(Debug, Clone)]
pub struct PhysBuf {
    /// The physical address of `bytes[0]`.
    pub base: u64,
    /// The contents.
    pub bytes: Vec<u8>,
}

impl PhysMem for PhysBuf {
    fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        self.bytes.get(start..start.checked_add(len)?)
    }
}

/// Physical memory that is one borrowed buffer starting at address 0.
#[derive(Debug, Clone, Copy)]
pub struct PhysSlice<'a>(pub &'a [u8]);

impl PhysMem for PhysSlice<'_> {
    fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr).ok()?;
        self.0.get(start..start.checked_add(len)?)
    }
}

/// Checks what every parser of boot information promises on success: a
/// memory map with usable RAM and at most `MAX_REGIONS` regions, sorted,
/// none wrapping; at most `MAX_MODULES` modules, none empty.
pub fn check_boot_info(info: &loader::bootinfo::BootInfo<'_>) {
    let regions = info.memory.regions();
    assert!(regions.len() <= loader::memmap::MAX_REGIONS);
    assert!(
        info.memory.require_usable().is_ok(),
        "no usable RAM accepted"
    );
    for w in regions.windows(2) {
        assert!(
            w[0].range.start <= w[1].range.start,
            "memory map not sorted"
        );
    }
    for r in regions {
        assert!(
            r.range.start < r.range.end,
            "empty or wrapping region {r:?}"
        );
    }
    let modules: Vec<_> = info.modules().collect();
    assert!(modules.len() <= loader::bootinfo::MAX_MODULES);
    for m in modules {
        assert!(!m.range.is_empty(), "empty module {m:?}");
    }
}

/// A copy of `bytes` in 8-aligned memory (what multiboot2 requires), with
/// at least 8 bytes so the header can always be read.
pub fn aligned_copy(bytes: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; bytes.len().div_ceil(8).max(1)];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_le_bytes(b);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phys_buf_reads_only_inside() {
        let m = PhysBuf {
            base: 0x1000,
            bytes: vec![1, 2, 3, 4],
        };
        assert_eq!(m.bytes(0x1001, 2), Some(&[2u8, 3][..]));
        assert_eq!(m.bytes(0x1003, 2), None);
        assert_eq!(m.bytes(0xfff, 1), None);
        assert_eq!(m.bytes(u64::MAX, 1), None);
        assert_eq!(m.bytes(0x1000, usize::MAX), None);
    }

    #[test]
    fn aligned_copy_keeps_the_bytes() {
        let w = aligned_copy(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(w, vec![0x0807_0605_0403_0201, 9]);
        assert_eq!(aligned_copy(&[]), vec![0]);
    }
}
