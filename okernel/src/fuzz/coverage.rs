//! The coverage map the monitor fills: AFL-style edges between
//! consecutive VM exits.
//!
//! Every exit has a 64-bit key ([`super::observe`]); the edge from the
//! previous exit (key `prev`) to this one (key `key`) is
//! `((prev >> 1) ^ key) % MONITOR_MAP_SIZE` — the shift keeps A→B and
//! B→A apart. An edge is a bit of a [`MONITOR_MAP_SIZE`]-bit map: the
//! first hit since the last check sets it and appends the index to the
//! hit list (in first-hit order, at most [`MAX_HITS`]; the rest are
//! counted as dropped). Recording an exit is a shift, an xor, a bit test
//! and set and, the first time only, a store: cheap enough for every
//! exit, the fast ones included. A check reads the list and clears only
//! the bits it names (the whole map when some were dropped).

use okernel_abi::fuzz::{MAX_HITS, MONITOR_MAP_SIZE};

const WORDS: usize = MONITOR_MAP_SIZE / 64;
const _: () = assert!(MONITOR_MAP_SIZE.is_power_of_two() && MONITOR_MAP_SIZE <= 1 << 16);

/// The edges hit since the last check, and the exits counted.
#[derive(Debug, Clone)]
pub struct Coverage {
    map: [u64; WORDS],
    hits: [u16; MAX_HITS],
    len: usize,
    dropped: u32,
    exits: u64,
    prev: u64,
}

impl Default for Coverage {
    fn default() -> Self {
        Self::new()
    }
}

impl Coverage {
    /// Empty; the first exit's edge is from key 0.
    pub const fn new() -> Self {
        Self {
            map: [0; WORDS],
            hits: [0; MAX_HITS],
            len: 0,
            dropped: 0,
            exits: 0,
            prev: 0,
        }
    }

    /// The edge index from key `prev` to key `key`.
    #[inline(always)]
    pub const fn edge(prev: u64, key: u64) -> usize {
        ((prev >> 1) ^ key) as usize % MONITOR_MAP_SIZE
    }

    /// Counts one exit with key `key` and marks the edge from the last
    /// one.
    #[inline(always)]
    pub fn record(&mut self, key: u64) {
        self.exits = self.exits.wrapping_add(1);
        let edge = Self::edge(self.prev, key);
        self.prev = key;
        let (word, bit) = (&mut self.map[edge / 64], 1u64 << (edge % 64));
        if *word & bit != 0 {
            return;
        }
        *word |= bit;
        match self.hits.get_mut(self.len) {
            Some(slot) => {
                // MONITOR_MAP_SIZE <= 2^16 (asserted above).
                *slot = edge as u16;
                self.len += 1;
            }
            None => self.dropped = self.dropped.wrapping_add(1),
        }
    }

    /// The distinct edges hit since the last clear, in first-hit order.
    pub fn hits(&self) -> &[u16] {
        &self.hits[..self.len]
    }

    /// Edges hit but not listed (the list was full).
    pub const fn dropped(&self) -> u32 {
        self.dropped
    }

    /// Exits since the last clear.
    pub const fn exits(&self) -> u64 {
        self.exits
    }

    /// Whether edge `edge` was hit since the last clear.
    pub fn is_hit(&self, edge: usize) -> bool {
        self.map
            .get(edge / 64)
            .is_some_and(|w| w & (1 << (edge % 64)) != 0)
    }

    /// Forgets every hit and the exit count, and starts the next edge from
    /// key 0 (so a case's edges do not depend on the case before it).
    pub fn clear(&mut self) {
        if self.dropped != 0 {
            self.map = [0; WORDS];
        } else {
            for &h in &self.hits[..self.len] {
                self.map[usize::from(h) / 64] = 0;
            }
        }
        self.len = 0;
        self.dropped = 0;
        self.exits = 0;
        self.prev = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_listed_once_in_first_hit_order() {
        let mut c = Coverage::new();
        for k in [10u64, 20, 10, 20, 10] {
            c.record(k);
        }
        let e = |p, k| Coverage::edge(p, k) as u16;
        // 0→10, 10→20, 20→10 (then 10→20 and 20→10 again).
        assert_eq!(c.hits(), [e(0, 10), e(10, 20), e(20, 10)]);
        assert_eq!(c.exits(), 5);
        assert_ne!(e(10, 20), e(20, 10), "direction matters");
    }

    #[test]
    fn overflow_is_counted_and_clear_empties_the_map() {
        let mut c = Coverage::new();
        // Far more well-spread keys than the list holds.
        for k in 0..MONITOR_MAP_SIZE as u64 * 4 {
            c.record(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        assert_eq!(c.hits().len(), MAX_HITS);
        assert!(c.dropped() > 0);
        let total = (0..MONITOR_MAP_SIZE).filter(|&e| c.is_hit(e)).count();
        assert_eq!(total, MAX_HITS + c.dropped() as usize);
        c.clear();
        assert_eq!((c.hits().len(), c.dropped(), c.exits()), (0, 0, 0));
        assert!((0..MONITOR_MAP_SIZE).all(|e| !c.is_hit(e)));
        c.record(7);
        assert_eq!(c.hits(), [Coverage::edge(0, 7) as u16], "starts from key 0");
    }
}
