//! Policy: what the monitor allows the guest, and the record of what it
//! denied.
//!
//! - [`audit`]: the ring of audit records (invariant 10).
//! - [`protection`]: the state the guest registers and locks — regions,
//!   CR pins, MSR locks, the descriptor-table lock, contexts, gates,
//!   protected pages — and the [`Policy`] hooks it answers.
//! - [`apply`]: the EPT permissions that state gives each view.
//! - [`views`]: the views themselves, as the policy reaches them.
//! - [`guest_paging`]: the guest's own page tables, walked for gates and
//!   emulated descriptor-table stores.
//! - [`table_walk`]: whose table a page-table entry is in, and its level.
//! - [`patch`]: validated self-patching: the kernel's patch sites and
//!   the legal forms a write to locked text may leave them in.
//!
//! `docs/policy.md` describes the policy per invariant.

// Safe code only above the hardware layers (`hw`, `arch`, `launch`):
// issue 14, DESIGN.md §6.
#![forbid(unsafe_code)]

pub mod apply;
pub mod audit;
pub mod guest_paging;
pub mod hooks;
pub mod patch;
pub mod protection;
pub mod table_walk;
pub mod views;
pub mod xapic_trap;

pub use self::protection::Protection;

/// What a policy hook decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let the guest's operation take effect.
    Allow,
    /// Refuse it: the guest gets #GP(0) and an audit record is written.
    Deny,
}

/// The hooks exit handlers consult before a guest operation takes effect.
///
/// Every hook sees an operation that already passed the architectural
/// checks (the values are legal for the CPU); it only decides whether the
/// guest may do it now (for example CR pinning after the lock point).
pub trait Policy {
    /// A guest write to CR0 (`cr` = 0) or CR4 (`cr` = 4) as the guest sees
    /// it: `old` and `new` are guest-visible values (read shadows applied).
    fn cr_write(&mut self, cr: u8, old: u64, new: u64) -> Decision {
        let _ = (cr, old, new);
        Decision::Allow
    }

    /// A guest WRMSR that the MSR bitmap intercepts and the monitor could
    /// otherwise perform.
    fn msr_write(&mut self, msr: u32, value: u64) -> Decision {
        let _ = (msr, value);
        Decision::Allow
    }

    /// The EPT view id recorded in audit records (0 = the base view).
    fn context(&self) -> u16 {
        0
    }

    /// The value MSR `msr` is locked at, if it is locked: a WRMSR of any
    /// other value is denied (#GP and an audit record), one of this value
    /// is skipped.
    fn locked_msr(&self, msr: u32) -> Option<u64> {
        let _ = msr;
        None
    }

    /// Whether LIDT/LGDT/LLDT/LTR are refused.
    fn descriptor_tables_locked(&self) -> bool {
        false
    }

    /// Whether mode-based execute control is on (EPT-violation
    /// qualification bit 6 then means user-execute).
    fn mbec_active(&self) -> bool {
        false
    }

    /// The protection state, for the policy hypercalls; `None`: the
    /// monitor answers them `UnknownCall`.
    fn protection(&mut self) -> Option<&mut Protection> {
        None
    }

    /// The policy's generation ([`Protection::generation`]): a processor
    /// that last saw another one brings its VMCS and TLB in line before
    /// its exit is handled (`crate::exit::vmcs_sync`). Never changes for a
    /// policy that sets nothing.
    fn generation(&self) -> u64 {
        0
    }
}

/// The policy before the guest registers anything: every architecturally
/// legal CR and MSR write is allowed (EPT still denies all access to the
/// monitor).
#[derive(Debug, Clone, Copy, Default)]
pub struct BasePolicy;

impl Policy for BasePolicy {}
