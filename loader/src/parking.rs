//! The verdict on parking the application processors: whether every
//! processor the MADT lists, and every one that answered, reached VMX
//! root. The image's `smp.rs` starts the processors and collects what
//! each reported in its slot; this is the judgement, host-tested.
//!
//! Processors are identified by APIC ID, not counted: a processor the
//! MADT does not list (or marks disabled) that answers the broadcast must
//! not stand in for a listed one that did not.

/// A slot's state: the processor took it but has not reached the
/// loader's code yet.
pub const TAKEN: u8 = 0;
/// It reached the loader's code.
pub const ARRIVED: u8 = 1;
/// It is in VMX root, halted.
pub const PARKED: u8 = 0xff;

/// One slot as its processor left it: the state ([`TAKEN`], [`ARRIVED`],
/// [`PARKED`], or a failure code of `okernel::launch::park`) and its APIC
/// ID (meaningful from [`ARRIVED`] on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// What the processor reported.
    pub state: u8,
    /// Its APIC ID.
    pub apic_id: u32,
}

/// Why not every processor is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotParked {
    /// More processors answered than there are slots (the rest halted
    /// outside VMX).
    Overflow(u32),
    /// A processor reported a failure.
    Failed {
        /// Its APIC ID.
        apic_id: u32,
        /// Its failure code.
        code: u8,
    },
    /// A processor did not park.
    Missing {
        /// Its APIC ID; `None` for one the MADT does not list that never
        /// reached the loader's code.
        apic_id: Option<u32>,
        /// Its slot's state; `None` when it never took one (a listed
        /// processor that did not answer).
        state: Option<u8>,
    },
}

/// Whether the slot reached the loader's code (its APIC ID is known).
fn known(s: &Slot) -> bool {
    s.state != TAKEN
}

/// Whether every slot has reported its last word (parked or failed).
pub fn settled(slots: &[Slot]) -> bool {
    slots.iter().all(|s| s.state > ARRIVED)
}

/// Whether every processor of `listed` but `me` has parked.
pub fn listed_parked(listed: &[u32], me: u32, slots: &[Slot]) -> bool {
    listed.iter().filter(|&&id| id != me).all(|&id| {
        slots
            .iter()
            .any(|s| known(s) && s.apic_id == id && s.state == PARKED)
    })
}

/// The verdict: `answered` processors took slots (the counter, which may
/// exceed `slots.len()`), `slots` the ones there are; `listed` the MADT's
/// APIC IDs, `me` this processor's. Ok: how many are parked.
pub fn verdict(listed: &[u32], me: u32, answered: u32, slots: &[Slot]) -> Result<u32, NotParked> {
    if answered as usize > slots.len() {
        return Err(NotParked::Overflow(answered));
    }
    let slots = &slots[..answered as usize];
    if let Some(s) = slots
        .iter()
        .find(|s| known(s) && s.state != ARRIVED && s.state != PARKED)
    {
        return Err(NotParked::Failed {
            apic_id: s.apic_id,
            code: s.state,
        });
    }
    for &id in listed.iter().filter(|&&id| id != me) {
        match slots.iter().find(|s| known(s) && s.apic_id == id) {
            Some(s) if s.state == PARKED => {}
            s => {
                return Err(NotParked::Missing {
                    apic_id: Some(id),
                    state: s.map(|s| s.state),
                });
            }
        }
    }
    if let Some(s) = slots.iter().find(|s| s.state != PARKED) {
        // One the MADT does not list, still on its way.
        return Err(NotParked::Missing {
            apic_id: known(s).then_some(s.apic_id),
            state: Some(s.state),
        });
    }
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(id: u32) -> Slot {
        Slot {
            state: PARKED,
            apic_id: id,
        }
    }

    #[test]
    fn every_listed_processor_parked_and_extras_parked_too_pass() {
        let slots = [
            parked(2),
            parked(1),
            parked(9),
            Slot {
                state: 0,
                apic_id: 0,
            },
        ];
        assert_eq!(verdict(&[0, 1, 2], 0, 2, &slots), Ok(2));
        // An unlisted processor that parked is fine.
        assert_eq!(verdict(&[0, 1, 2], 0, 3, &slots), Ok(3));
        assert!(listed_parked(&[0, 1, 2], 0, &slots[..2]));
        assert!(settled(&slots[..3]));
    }

    #[test]
    fn an_unlisted_processor_does_not_stand_in_for_a_listed_one() {
        // The MADT lists 0 (this one) and 1; 1 missed the SIPIs, 7 (not
        // listed) parked: the count matches, the identity does not.
        let slots = [parked(7)];
        assert!(!listed_parked(&[0, 1], 0, &slots));
        assert_eq!(
            verdict(&[0, 1], 0, 1, &slots),
            Err(NotParked::Missing {
                apic_id: Some(1),
                state: None
            })
        );
    }

    #[test]
    fn failures_overflow_and_stragglers_are_refused() {
        let failed = Slot {
            state: 2,
            apic_id: 5,
        };
        assert_eq!(
            verdict(&[0, 5], 0, 1, &[failed]),
            Err(NotParked::Failed {
                apic_id: 5,
                code: 2
            })
        );
        // A failed processor the MADT does not list is refused too.
        assert_eq!(
            verdict(&[0], 0, 2, &[parked(3), failed]),
            Err(NotParked::Failed {
                apic_id: 5,
                code: 2
            })
        );
        // More answered than slots.
        assert_eq!(
            verdict(&[0, 1], 0, 3, &[parked(1), parked(2)]),
            Err(NotParked::Overflow(3))
        );
        // A listed processor stopped between its arrival and VMXON.
        let arrived = Slot {
            state: ARRIVED,
            apic_id: 1,
        };
        assert!(!settled(&[arrived]));
        assert_eq!(
            verdict(&[0, 1], 0, 1, &[arrived]),
            Err(NotParked::Missing {
                apic_id: Some(1),
                state: Some(ARRIVED)
            })
        );
        // An unlisted one that took a slot and never reached the code.
        assert_eq!(
            verdict(
                &[0, 1],
                0,
                2,
                &[
                    parked(1),
                    Slot {
                        state: TAKEN,
                        apic_id: 0
                    }
                ]
            ),
            Err(NotParked::Missing {
                apic_id: None,
                state: Some(TAKEN)
            })
        );
    }
}
