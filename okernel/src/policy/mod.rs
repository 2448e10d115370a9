//! Policy: what the monitor allows the guest, and the record of what it
//! denied. This issue provides the audit log and the hooks; the policy
//! issue (regions, locks, contexts/views, gates) fills them in.

pub mod audit;

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
}

/// The policy before the guest registers anything: every architecturally
/// legal CR and MSR write is allowed (EPT still denies all access to the
/// monitor).
#[derive(Debug, Clone, Copy, Default)]
pub struct BasePolicy;

impl Policy for BasePolicy {}
