//! Deliberate policy defects for the fuzzers' planted-defect proofs (the
//! host proof `cargo xtask fuzz planted-defects`, `docs/fuzzing.md`, and
//! the VM proof `cargo xtask fuzz vm-planted`): each is a cargo feature
//! that is off everywhere but those proofs; each is marked DELIBERATE
//! DEFECT.
//!
//! One seam: `crate::seam::Planted` is the build's
//! `crate::policy::hooks::PolicyHooks` (`crate::seam::PolicyDefects`) when
//! one of the features is on, and
//! overrides only the hook of that defect; the production policy code
//! calls the hooks, whose defaults are the rules as written, so it carries
//! no trace of these defects.
//!
//! | feature | defect | oracle that finds it |
//! |---|---|---|
//! | `planted-text-writable` | locked text is writable in untrusted views | view |
//! | `planted-pin-ignored` | pinned CR bits can be cleared | pin |
//! | `planted-unlock` | locking a locked region unlocks it | lock |
//! | `planted-gate-bypass` | a switch out of an untrusted context needs no gate and resumes at the caller's RIP | gate |

#[cfg(feature = "planted-text-writable")]
use ept::Perms;

use crate::policy::hooks::PolicyHooks;
#[cfg(feature = "planted-unlock")]
use crate::policy::protection::Region;
#[cfg(feature = "planted-pin-ignored")]
use crate::policy::protection::{CR0_PINNABLE, CR4_PINNABLE};
use crate::seam::Planted;

/// The policy rules with this build's planted defect (see the module
/// docs); the marker is the seam's, which the policy can name.
impl PolicyHooks for Planted {
    /// DELIBERATE DEFECT for fuzzing only: pinned bits can be cleared.
    #[cfg(feature = "planted-pin-ignored")]
    #[inline(always)]
    fn enforced_pins(pinned: u64) -> u64 {
        pinned & !(CR0_PINNABLE | CR4_PINNABLE)
    }

    /// DELIBERATE DEFECT for fuzzing only: no gate, resume at the caller's
    /// RIP.
    #[cfg(feature = "planted-gate-bypass")]
    #[inline(always)]
    fn switching_from(from: u16) -> u16 {
        let _ = from;
        0
    }

    /// DELIBERATE DEFECT for fuzzing only: locking a locked region unlocks
    /// it.
    #[cfg(feature = "planted-unlock")]
    #[inline(always)]
    fn relocked(region: Region) -> Option<Region> {
        Some(Region {
            locked: false,
            ..region
        })
    }

    /// DELIBERATE DEFECT for fuzzing only: text writable in untrusted
    /// views.
    #[cfg(feature = "planted-text-writable")]
    #[inline(always)]
    fn extra_text_rights(ctx: u16) -> Perms {
        if ctx != 0 { Perms::WRITE } else { Perms::NONE }
    }
}
