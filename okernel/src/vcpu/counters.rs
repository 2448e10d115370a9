//! Per-exit-reason counters, printed at the end of a run.

use crate::vmx::exit_reason::{ExitReason, REASON_SLOTS};

/// How many exits of each basic reason the run took.
#[derive(Debug, Clone)]
pub struct ExitCounters {
    by_reason: [u64; REASON_SLOTS],
    other: u64,
}

impl Default for ExitCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl ExitCounters {
    /// All zero.
    pub const fn new() -> Self {
        Self {
            by_reason: [0; REASON_SLOTS],
            other: 0,
        }
    }

    /// Counts one exit with basic reason `basic`.
    ///
    /// Counters wrap instead of saturating: at one exit per nanosecond a
    /// `u64` lasts 584 years, and the increment stays one instruction.
    #[inline]
    pub fn record(&mut self, basic: u16) {
        match self.by_reason.get_mut(usize::from(basic)) {
            Some(c) => *c = c.wrapping_add(1),
            None => self.other = self.other.wrapping_add(1),
        }
    }

    /// Counts one exit of a known reason: a plain increment, no bounds
    /// check (every [`ExitReason`] has a slot).
    #[inline]
    pub fn count(&mut self, reason: ExitReason) {
        let c = &mut self.by_reason[reason as usize];
        *c = c.wrapping_add(1);
    }

    /// The count of one reason.
    pub fn get(&self, reason: ExitReason) -> u64 {
        self.by_reason[reason as usize]
    }

    /// Exits whose basic reason is beyond the known range.
    pub const fn other(&self) -> u64 {
        self.other
    }

    /// All exits.
    pub fn total(&self) -> u64 {
        self.by_reason
            .iter()
            .fold(self.other, |a, &c| a.saturating_add(c))
    }

    /// The non-zero counters as (name, count), in reason order; reasons
    /// the SDM does not define show as "reason-N" via [`Self::raw`].
    pub fn nonzero(&self) -> impl Iterator<Item = (Option<ExitReason>, u16, u64)> + '_ {
        self.by_reason
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != 0)
            .map(|(n, c)| (ExitReason::from_raw(n as u16), n as u16, *c))
    }

    /// The count of a raw basic reason number.
    pub fn raw(&self, basic: u16) -> u64 {
        self.by_reason.get(usize::from(basic)).copied().unwrap_or(0)
    }

    /// Logs the counters (`log::info!`), one line per non-zero reason.
    pub fn log(&self) {
        log::info!("okernel: exit counters: total={}", self.total());
        for (reason, n, c) in self.nonzero() {
            match reason {
                Some(r) => log::info!("okernel: exits {:<28} {c}", r.name()),
                None => log::info!("okernel: exits reason-{n:<21} {c}"),
            }
        }
        if self.other != 0 {
            log::info!("okernel: exits {:<28} {}", "out-of-range", self.other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let mut c = ExitCounters::new();
        c.record(10);
        c.record(10);
        c.record(18);
        c.record(35);
        c.record(0xffff);
        assert_eq!(c.get(ExitReason::Cpuid), 2);
        assert_eq!(c.get(ExitReason::Vmcall), 1);
        assert_eq!(c.raw(35), 1);
        assert_eq!(c.other(), 1);
        assert_eq!(c.total(), 5);
        let v: std::vec::Vec<_> = c.nonzero().map(|(_, n, c)| (n, c)).collect();
        assert_eq!(v, [(10, 2), (18, 1), (35, 1)]);
    }
}
