//! Guard pages below stacks: a page filled with [`PATTERN`] that nothing
//! writes but a stack overflowing into it. Used for the monitor's host
//! stack (`launch::run`) and the loader's boot stack; each checks its
//! guard where an overflow can still be named before it matters.

/// What every word of an armed guard page holds (not zero: stack probes
/// and zeroed locals write zeros).
pub const PATTERN: u64 = 0x5a5a_5a5a_5a5a_5a5a;

/// Words in a guard page.
const WORDS: usize = 4096 / 8;

/// Fills the guard page at `page` with [`PATTERN`].
///
/// # Safety
/// `page` points to a 4 KiB, 8-byte aligned page that belongs to the
/// caller alone and is used as nothing but a guard.
pub unsafe fn arm(page: *mut u64) {
    for i in 0..WORDS {
        // SAFETY: `i` < WORDS: inside the caller's page, aligned.
        unsafe { page.add(i).write_volatile(PATTERN) };
    }
}

/// Whether the guard page at `page` still holds [`PATTERN`] in every
/// word: a frame larger than a page touches the guard anywhere, not only
/// at its top.
///
/// # Safety
/// As for [`arm`], and armed by it.
pub unsafe fn intact(page: *const u64) -> bool {
    (0..WORDS).all(|i| {
        // SAFETY: `i` < WORDS: inside the caller's page, aligned.
        // Volatile: nothing in the program writes it after arming, so a
        // plain read could be folded away.
        unsafe { page.add(i).read_volatile() == PATTERN }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_anywhere_in_the_guard_is_seen() {
        for at in [0, 1, 255, 511] {
            for value in [0, PATTERN ^ 1] {
                let mut page = vec![0u64; WORDS];
                // SAFETY: a page-sized, aligned buffer of this test's alone.
                unsafe { arm(page.as_mut_ptr()) };
                // SAFETY: as above.
                assert!(unsafe { intact(page.as_ptr()) });
                page[at] = value;
                // SAFETY: as above.
                assert!(!unsafe { intact(page.as_ptr()) }, "word {at} = {value:#x}");
            }
        }
    }
}
