//! The hashes of the oracles: a word hash for locked regions (run over
//! every locked byte after every test case, so it must be cheap in Bochs,
//! where each instruction costs the same) and a mixing fold for the
//! policy fingerprints.
//!
//! # Why the word hash is enough
//!
//! [`WordHash`] reads 8 bytes at a time into one of four lanes, lane =
//! `lane.rotate_left(5) ^ word` (three instructions per word: load,
//! rotate, xor; the lanes are independent so they overlap), and mixes the
//! lanes with a bijective multiply-xorshift at the end ([`mix`]). Every
//! step is a bijection of the changed lane, so **any change confined to
//! one 64-bit word changes the hash** — one flipped bit, one stray store,
//! a changed pointer or instruction. Changes to several words cancel only
//! if their differences satisfy an exact rotate relation (the hash is
//! linear over GF(2) until [`mix`]); the fuzzer's writes are not chosen
//! to do that, so a random multi-word change escapes with probability
//! 2^-64. It is an oracle's checksum, not a MAC: a guest that knew the
//! hash could forge a collision, which no test case does by accident.

/// A 64-bit bijective finalizer (the `splitmix64` output function): every
/// input bit affects every output bit.
#[inline]
pub const fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Folds `word` into `h`: a bijection of `h` for a fixed `word` and of
/// `word` for a fixed `h`, so a sequence that differs in one word gives
/// another value. For the policy fingerprints (a few dozen words).
#[inline]
pub const fn fold(h: u64, word: u64) -> u64 {
    mix(h.rotate_left(5) ^ word)
}

/// An order-independent fingerprint of a set: the wrapping sum of each
/// element's [`fold`]. Equal sets give equal sums whatever the slots
/// they sit in (a protected page freed and allocated again elsewhere).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetHash(pub u64);

impl SetHash {
    /// Adds an element given as words.
    pub fn add(&mut self, words: &[u64]) {
        let h = words.iter().fold(0x5e7, |h, &w| fold(h, w));
        self.0 = self.0.wrapping_add(h);
    }
}

/// The streaming word hash of a range of bytes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WordHash {
    lanes: [u64; 4],
    len: u64,
}

impl Default for WordHash {
    fn default() -> Self {
        Self::new()
    }
}

impl WordHash {
    /// The empty hash (distinct lane seeds, so an all-zero range does not
    /// hash like an empty one).
    pub const fn new() -> Self {
        Self {
            lanes: [
                0x243f_6a88_85a3_08d3,
                0x1319_8a2e_0370_7344,
                0xa409_3822_299f_31d0,
                0x082e_fa98_ec4e_6c89,
            ],
            len: 0,
        }
    }

    /// Hashes `bytes` (32 at a time; a tail is zero-padded to a word, and
    /// the length counts, so padding cannot collide with real zeros).
    /// The loop takes 256 bytes a turn, so its own add, compare and
    /// branch cost 3 instructions per 32 words, next to 2 per word (a
    /// rotate and an xor from memory) for the hash.
    #[inline]
    pub fn update(&mut self, bytes: &[u8]) {
        let mut lanes = self.lanes;
        let mut turns = bytes.chunks_exact(256);
        for turn in &mut turns {
            for blk in turn.chunks_exact(32) {
                round(&mut lanes, blk);
            }
        }
        let mut blocks = turns.remainder().chunks_exact(32);
        for blk in &mut blocks {
            round(&mut lanes, blk);
        }
        for word in blocks.remainder().chunks(8) {
            let mut x = [0u8; 8];
            x[..word.len()].copy_from_slice(word);
            lanes[0] = lanes[0].rotate_left(5) ^ u64::from_le_bytes(x);
        }
        self.lanes = lanes;
        self.len = self.len.wrapping_add(bytes.len() as u64);
    }

    /// The hash so far.
    pub const fn finish(&self) -> u64 {
        let [a, b, c, d] = self.lanes;
        mix(a ^ b.rotate_left(16) ^ c.rotate_left(32) ^ d.rotate_left(48) ^ mix(self.len))
    }
}

/// Folds one 32-byte block into the lanes, word `i` into lane `i`.
#[inline(always)]
fn round(lanes: &mut [u64; 4], blk: &[u8]) {
    for (i, lane) in lanes.iter_mut().enumerate() {
        let mut x = [0u8; 8];
        x.copy_from_slice(&blk[8 * i..8 * i + 8]);
        *lane = lane.rotate_left(5) ^ u64::from_le_bytes(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(bytes: &[u8]) -> u64 {
        let mut h = WordHash::new();
        h.update(bytes);
        h.finish()
    }

    #[test]
    fn any_single_word_change_is_seen() {
        let base = [0x5au8; 256];
        let h0 = hash(&base);
        for word in 0..base.len() / 8 {
            for bit in [0, 7, 31, 63] {
                let mut b = base;
                b[word * 8 + bit / 8] ^= 1 << (bit % 8);
                assert_ne!(hash(&b), h0, "word {word} bit {bit}");
            }
        }
    }

    #[test]
    fn length_and_chunking() {
        assert_ne!(hash(&[0; 32]), hash(&[0; 40]), "zero padding vs zeros");
        assert_ne!(hash(&[]), hash(&[0; 8]));
        let bytes: Vec<u8> = (0..=255).collect();
        let mut h = WordHash::new();
        h.update(&bytes[..128]);
        h.update(&bytes[128..]);
        assert_eq!(h.finish(), hash(&bytes), "page-sized chunks hash as one");
    }

    #[test]
    fn sets_ignore_order_but_not_content() {
        let (mut x, mut y, mut z) = (SetHash::default(), SetHash::default(), SetHash::default());
        x.add(&[1, 2]);
        x.add(&[3, 4]);
        y.add(&[3, 4]);
        y.add(&[1, 2]);
        z.add(&[1, 2]);
        z.add(&[3, 5]);
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_ne!(fold(fold(0, 1), 2), fold(fold(0, 2), 1));
    }
}
