//! [`PolicyHooks`]: the few points where a planted-defect proof build
//! changes a policy rule. The deliberate defects themselves live in the
//! fuzz-only file `crate::fuzz::planted_policy`; a production build uses
//! [`AsWritten`], whose methods are the defaults below: each returns the
//! rule as written (the identity, or nothing added) and is inlined away.
//! Which one a build uses is `crate::seam::PolicyDefects`.

use ept::Perms;

use super::protection::Region;
use crate::seam::AsWritten;

/// Where a build may change a policy rule (see the module docs). Every
/// default is the rule as written.
pub trait PolicyHooks {
    /// The pinned bits of a CR that `cr_write` enforces, of `pinned`
    /// (invariant 4): all of them.
    #[inline(always)]
    fn enforced_pins(pinned: u64) -> u64 {
        pinned
    }

    /// The context a SwitchContext counts as leaving, of `from` (the
    /// current one), which decides whether the switch resumes at a gate
    /// (invariant 9): `from` itself.
    #[inline(always)]
    fn switching_from(from: u16) -> u16 {
        from
    }

    /// What LockRegion of the already locked `region` puts in its slot
    /// besides refusing with `Locked`: nothing (`None`: the region stays
    /// as it is).
    #[inline(always)]
    fn relocked(region: Region) -> Option<Region> {
        let _ = region;
        None
    }

    /// The rights a locked text region gets in `ctx`'s view besides read
    /// and execute: none.
    #[inline(always)]
    fn extra_text_rights(ctx: u16) -> Perms {
        let _ = ctx;
        Perms::NONE
    }
}

/// Every policy rule as written: the production build's [`PolicyHooks`]
/// (the marker is the seam's, which names no layer above it).
impl PolicyHooks for AsWritten {}
