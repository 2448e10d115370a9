//! The console's timer: the VMX-preemption timer (SDM Vol. 3C §26.5.1),
//! which the exit layer arms while the console owes lines
//! (`crate::policy::audit`) so that they come out while the guest neither
//! prints nor ends (`crate::exit::console_tick`). It is armed with "save
//! VMX-preemption timer value" (§25.7.1, exit control bit 22), so the
//! exits in between do not restart its count; that control needs
//! "activate VMX-preemption timer" (§27.2.1.2), so the two are set and
//! cleared together.
//!
//! With more than one processor the timer is also the shootdown's poll
//! (`docs/smp.md`): every processor keeps it armed for the whole run
//! ([`ConsoleTimer::polling`]), so every processor in VMX non-root
//! operation exits at least once per tick — also from HLT, where it
//! counts (C1, §26.5.1) — and a hypercall that changed the policy waits
//! (`crate::launch::presence`) until each has left the guest and so will
//! catch up before it enters again (`crate::exit::vmcs_sync`).

/// TSC cycles between two ticks: about 0.35 ms at 3 GHz.
pub const TICK_TSC: u64 = 1 << 20;

/// TSC cycles between two ticks of the shootdown's poll
/// ([`ConsoleTimer::polling`]): about 44 µs at 3 GHz. A view change with
/// other processors running waits up to one of them (`cargo xtask bench
/// vmx`, `view-change`); each processor exits once per tick (a few
/// thousand cycles: about 2% of its time).
pub const POLL_TSC: u64 = TICK_TSC >> POLL_SHIFT;
const POLL_SHIFT: u32 = 3;

/// Whether the processor offers the timer, its count per tick, and
/// whether it is armed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleTimer {
    /// The timer's count for one tick, when the processor offers it.
    ticks: Option<u32>,
    /// Whether "MWAIT exiting" is set with the timer: the timer does not
    /// count in C-states deeper than C2 (§26.5.1), which MWAIT can enter,
    /// so while it is armed an MWAIT exits and the lines go out first
    /// (`crate::exit::console_tick::mwait`).
    pub mwait: bool,
    /// Whether the controls are set.
    pub armed: bool,
    /// Whether the timer stays armed for good: the shootdown's poll
    /// (several processors).
    pub poll: bool,
}

impl ConsoleTimer {
    /// The timer of a processor whose VMX-preemption timer counts down
    /// once every 2^`rate` TSC cycles (IA32_VMX_MISC\[4:0\], §A.6), or
    /// none: `None` when the processor lacks the two controls (lines then
    /// wait for the guest's next console byte or the end of the run).
    pub const fn new(rate: Option<u8>, mwait: bool) -> Self {
        let ticks = match rate {
            // A rate past 31 is no processor's; it would make every tick
            // zero, and the guest would not run between ticks.
            Some(r) if r < 32 => Some(((TICK_TSC >> r) as u32) | 1),
            _ => None,
        };
        Self {
            ticks,
            mwait: mwait && ticks.is_some(),
            armed: false,
            poll: false,
        }
    }

    /// This timer as the shootdown's poll, with the shorter tick
    /// [`POLL_TSC`]: armed for good (once the
    /// launch armed it, `crate::exit::console_tick::write_controls`); an
    /// MWAIT then exits and is passed over
    /// (`crate::exit::console_tick::mwait`). `None` without the timer, or
    /// without MWAIT exiting (an MWAIT into a C-state deeper than C2
    /// would stop the timer, §26.5.1, and the shootdown would wait in
    /// vain): there is then no poll, and no shootdown.
    pub const fn polling(self) -> Option<Self> {
        if self.ticks.is_none() || !self.mwait {
            return None;
        }
        Some(Self {
            poll: true,
            ticks: match self.ticks {
                Some(t) => Some((t >> POLL_SHIFT) | 1),
                None => None,
            },
            ..self
        })
    }

    /// The count to load for one tick, when the processor offers the
    /// timer.
    pub const fn ticks(&self) -> Option<u32> {
        self.ticks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_is_the_tsc_period_scaled_by_the_rate() {
        assert_eq!(ConsoleTimer::new(None, true).ticks(), None);
        assert_eq!(ConsoleTimer::new(Some(0), true).ticks(), Some(1 << 20 | 1));
        assert_eq!(ConsoleTimer::new(Some(5), true).ticks(), Some(1 << 15 | 1));
        // Never zero: a zero count would exit before every instruction.
        assert_eq!(ConsoleTimer::new(Some(31), true).ticks(), Some(1));
        assert_eq!(ConsoleTimer::new(Some(32), true).ticks(), None);
    }

    #[test]
    fn only_a_timer_the_processor_offers_polls() {
        assert_eq!(ConsoleTimer::new(None, true).polling(), None);
        assert_eq!(
            ConsoleTimer::new(Some(5), false).polling(),
            None,
            "no MWAIT exiting"
        );
        let poll = ConsoleTimer::new(Some(5), true).polling().unwrap();
        assert!(poll.poll && !poll.armed);
        assert_eq!(poll.ticks(), Some(1 << 12 | 1), "POLL_TSC >> 5");
        assert_eq!(POLL_TSC, 1 << 17);
        assert_eq!(
            ConsoleTimer::new(Some(31), true).polling().unwrap().ticks(),
            Some(1)
        );
    }
}
