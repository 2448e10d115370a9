//! Hypercalls: the guest asks the monitor for a service with `VMCALL`.
//!
//! # Register convention (version 0.1)
//!
//! | register | in                         | out                        |
//! |----------|----------------------------|----------------------------|
//! | RAX      | call number ([`Call`])     | [`Status`] (0 = success)   |
//! | RDI      | argument 0                 | value 0                    |
//! | RSI      | argument 1                 | value 1                    |
//! | RDX      | argument 2                 | unchanged                  |
//! | RCX      | argument 3                 | unchanged                  |
//!
//! All other registers are preserved. `VMCALL` executed at CPL > 0 fails
//! with [`Status::PermissionDenied`] and changes nothing. A call number the
//! monitor does not know fails with [`Status::UnknownCall`].

/// A hypercall number, passed in RAX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u64)]
pub enum Call {
    /// Returns the packed ABI version ([`crate::Version::packed`]) in RDI.
    Version = 0,
    /// Does nothing and succeeds: the round-trip cost of a hypercall.
    Null = 1,
    /// Ends the run with an outcome and, optionally, a reason:
    ///
    /// | register | in |
    /// |----------|----|
    /// | RDI | the [`crate::result::Outcome`] code |
    /// | RSI | guest-physical address of the reason, UTF-8 |
    /// | RDX | its length in bytes: 0 = no reason (RSI is ignored), at most [`EXIT_REASON_MAX`] |
    ///
    /// On success the monitor prints its exit counters and reports the
    /// outcome with the reason (`OKERNEL-RESULT: fail: guest: <reason>`;
    /// without a reason, `guest ended the run (<outcome>)`; a `pass`
    /// marker carries no detail, the monitor logs the reason); it does not
    /// return to the guest. It fails with [`Status::InvalidArgument`], and
    /// the run goes on, when the outcome code is unknown, the length is
    /// above [`EXIT_REASON_MAX`], the bytes are not UTF-8, or any byte of
    /// the reason is not guest RAM that the guest's current EPT view maps
    /// readable (monitor memory, MMIO, reserved or unmapped memory never
    /// is). Control characters in the reason are printed as spaces.
    Exit = 2,

    // ---- The protection policy (ABI 1.0, DESIGN.md §2 invariants 2–10).
    // Every argument is validated; any failure returns an error status and
    // changes nothing. Addresses are guest-physical unless said otherwise.
    /// Registers a region: RDI = base (4 KiB-aligned), RSI = length (a
    /// non-zero multiple of 4 KiB), RDX = a [`crate::policy::RegionKind`].
    /// RDI out = the region id. The region must be guest RAM, not overlap
    /// another region, and not touch monitor memory. It is not protected
    /// until locked.
    RegisterRegion = 16,
    /// Locks region RDI: its protection takes effect in every view, one
    /// way (invariant 8). Locking a locked region fails with `Locked`.
    LockRegion = 17,
    /// Pins bits RSI of control register RDI (0 = CR0, 4 = CR4): from now
    /// on a guest write that clears a pinned bit is denied and audited.
    /// Only bits that are set now and that okernel allows pinning (CR0.PE,
    /// CR0.WP, CR0.PG; CR4.PAE, PGE, SMEP, SMAP, UMIP, OSXSAVE, FSGSBASE)
    /// are accepted.
    PinCr = 18,
    /// Locks MSR RDI at its current value: writes are denied and audited.
    /// Allowed MSRs: EFER, STAR, LSTAR, CSTAR, SFMASK, SYSENTER_CS/ESP/EIP,
    /// PAT, and the S_CET/PL0_SSP family where present.
    LockMsr = 19,
    /// From now on LIDT, LGDT, LLDT and LTR exit and are refused.
    LockDescriptorTables = 20,
    /// Creates an untrusted context: a new EPT view derived from the
    /// locked policy. RDI out = the context id (non-zero).
    CreateContext = 21,
    /// Destroys context RDI (not the current one, not 0): its view and its
    /// protected pages are returned.
    DestroyContext = 22,
    /// Makes page RSI (4 KiB-aligned guest RAM, in no region) a protected
    /// page of context RDI: mapped in that context's view only.
    AllocProtectedPage = 23,
    /// Returns protected page RSI of context RDI to every view, zeroed.
    FreeProtectedPage = 24,
    /// Registers RDI (a guest-linear address in locked text) as a gate:
    /// where a switch to a less restricted view resumes, with RSP = RSI
    /// (ABI 1.1: canonical and 16-byte aligned; 0 keeps the caller's RSP,
    /// the ABI 1.0 behaviour, where RSI had to be 0). RDI out = the gate
    /// id.
    RegisterGate = 25,
    /// Switches the current context to RDI. To a more restricted view the
    /// guest resumes after the VMCALL; to a less restricted one (an
    /// untrusted context to the trusted one) it resumes at gate RSI —
    /// never at the caller's RIP (invariant 9) — on the gate's stack, with
    /// interrupts, single-step, resume, alignment-check and direction
    /// flags clear, DR7 reset and no pending debug exception (ABI 1.1).
    SwitchContext = 26,
    /// The validated page-table update (a virtual MMU): writes the 8-byte
    /// entry at RDI (8-aligned, inside a locked `PageTable` region) with
    /// RSI. Refused with `Refused` when the entry maps a protected frame
    /// writable, or remaps an entry that points at a protected frame to
    /// another frame (invariant 7).
    UpdatePageTable = 27,
    /// RDI out = the number of audit records written so far.
    AuditCount = 28,
    /// Copies audit record RDI (a sequence number still in the ring) as a
    /// [`crate::policy::AuditRecord`] to the 64 bytes at RSI, which must be
    /// guest RAM writable in the current view.
    AuditRead = 29,

    // ---- ABI 1.2: a host kernel that patches its own text (Linux).
    /// Chooses what may execute once text is locked: RDI = a
    /// [`crate::policy::ExecuteRule`]. Only before any region is locked
    /// (`Locked` after: the rule decides what each lock applies) and only
    /// from the trusted context.
    SetExecuteRule = 30,
    /// Registers a table of the kernel's own patch sites, for validated
    /// self-patching of locked text: RDI = the table's guest-linear
    /// address, RSI = its length in bytes (a non-zero multiple of the
    /// entry size), RDX = a [`crate::policy::PatchFormat`]. The table must
    /// lie, contiguously, in a *locked* rodata or ro-after-init region
    /// (so neither it nor the sites it names can change later) — a
    /// trampoline table (ABI 1.5) instead lies in registered text that is
    /// not locked yet; every site it names inside a registered text region
    /// must hold one of its legal forms now. Only before the first text region is locked
    /// (`Locked` after) and only from the trusted context. RDI out = the
    /// number of sites inside registered text. Once text is locked, a
    /// write to it is allowed only where every byte it changes lies in
    /// such a site and every site it touches then holds a legal form
    /// (`docs/policy.md`, "Validated self-patching").
    RegisterPatchSites = 31,

    // ---- ABI 1.3: what the monitor costs a running kernel.
    /// The monitor's exit counters: RDI = a basic exit reason (SDM Vol. 3D
    /// Appendix C, 0–[`EXIT_REASON_SLOTS`] − 1). RDI out = the number of
    /// VM exits with that reason so far (this call's own VMCALL included),
    /// RSI out = the number of all VM exits. A reason out of range is
    /// `InvalidArgument`. Any context may call it: counts reveal no
    /// memory.
    ExitCount = 32,
}

/// How many basic exit reasons [`Call::ExitCount`] answers for.
pub const EXIT_REASON_SLOTS: u64 = 80;

impl Call {
    /// Every call of this ABI version, for exhaustive tests.
    pub const ALL: &'static [Call] = &[
        Call::Version,
        Call::Null,
        Call::Exit,
        Call::RegisterRegion,
        Call::LockRegion,
        Call::PinCr,
        Call::LockMsr,
        Call::LockDescriptorTables,
        Call::CreateContext,
        Call::DestroyContext,
        Call::AllocProtectedPage,
        Call::FreeProtectedPage,
        Call::RegisterGate,
        Call::SwitchContext,
        Call::UpdatePageTable,
        Call::AuditCount,
        Call::AuditRead,
        Call::SetExecuteRule,
        Call::RegisterPatchSites,
        Call::ExitCount,
    ];

    /// Decodes a call number from RAX.
    pub const fn from_raw(raw: u64) -> Result<Self, Status> {
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i] as u64 == raw {
                return Ok(Self::ALL[i]);
            }
            i += 1;
        }
        Err(Status::UnknownCall)
    }

    /// The call number as it goes in RAX.
    pub const fn raw(self) -> u64 {
        self as u64
    }

    /// How many of the argument registers RDI, RSI, RDX the call reads
    /// (always the first ones): 0 to 3.
    pub const fn arguments(self) -> usize {
        match self {
            Call::Version
            | Call::Null
            | Call::LockDescriptorTables
            | Call::CreateContext
            | Call::AuditCount => 0,
            Call::LockRegion
            | Call::LockMsr
            | Call::DestroyContext
            | Call::SetExecuteRule
            | Call::ExitCount => 1,
            Call::PinCr
            | Call::AllocProtectedPage
            | Call::FreeProtectedPage
            | Call::SwitchContext
            | Call::UpdatePageTable
            | Call::AuditRead => 2,
            Call::Exit | Call::RegisterRegion | Call::RegisterGate | Call::RegisterPatchSites => 3,
        }
    }

    /// Whether the call belongs to the protection policy (16 to 31): a
    /// monitor without the policy answers it `UnknownCall`, whatever its
    /// arguments. Every call is listed (no wildcard), so a new call must
    /// be placed on one side.
    pub const fn is_policy(self) -> bool {
        match self {
            Call::RegisterRegion
            | Call::LockRegion
            | Call::PinCr
            | Call::LockMsr
            | Call::LockDescriptorTables
            | Call::CreateContext
            | Call::DestroyContext
            | Call::AllocProtectedPage
            | Call::FreeProtectedPage
            | Call::RegisterGate
            | Call::SwitchContext
            | Call::UpdatePageTable
            | Call::AuditCount
            | Call::AuditRead
            | Call::SetExecuteRule
            | Call::RegisterPatchSites => true,
            Call::Version | Call::Null | Call::Exit | Call::ExitCount => false,
        }
    }

    /// Whether a caller outside the trusted context is refused
    /// (`PermissionDenied`) before the arguments are looked at, so that
    /// it learns nothing from them (ABI 1.4: `RegisterGate`). Every other
    /// call answers a malformed request alike in every context.
    pub const fn trusted_first(self) -> bool {
        matches!(self, Call::RegisterGate)
    }

    /// A short name for logs and audit records.
    pub const fn name(self) -> &'static str {
        match self {
            Call::Version => "version",
            Call::Null => "null",
            Call::Exit => "exit",
            Call::RegisterRegion => "register-region",
            Call::LockRegion => "lock-region",
            Call::PinCr => "pin-cr",
            Call::LockMsr => "lock-msr",
            Call::LockDescriptorTables => "lock-descriptor-tables",
            Call::CreateContext => "create-context",
            Call::DestroyContext => "destroy-context",
            Call::AllocProtectedPage => "alloc-protected-page",
            Call::FreeProtectedPage => "free-protected-page",
            Call::RegisterGate => "register-gate",
            Call::SwitchContext => "switch-context",
            Call::UpdatePageTable => "update-page-table",
            Call::AuditCount => "audit-count",
            Call::AuditRead => "audit-read",
            Call::SetExecuteRule => "set-execute-rule",
            Call::RegisterPatchSites => "register-patch-sites",
            Call::ExitCount => "exit-count",
        }
    }
}

/// The longest reason [`Call::Exit`] accepts, in bytes.
pub const EXIT_REASON_MAX: u64 = 128;

/// The status a hypercall returns in RAX. Zero is success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u64)]
pub enum Status {
    /// The call succeeded.
    Success = 0,
    /// The call number is not part of the ABI.
    UnknownCall = 1,
    /// An argument is out of range or malformed.
    InvalidArgument = 2,
    /// The caller is not allowed to make this call (for example CPL > 0).
    PermissionDenied = 3,
    /// An address or length is not 4 KiB-aligned (8 for page-table
    /// entries).
    Unaligned = 4,
    /// A length is zero.
    Empty = 5,
    /// The range overlaps a registered region or a protected page.
    Overlap = 6,
    /// The range is not (wholly) guest RAM.
    OutOfRam = 7,
    /// The range touches monitor memory.
    MonitorMemory = 8,
    /// The object is locked (one way, invariant 8), or the call would undo
    /// a lock.
    Locked = 9,
    /// No region, gate or protected page with that id or address.
    NotFound = 10,
    /// No live context with that id, or the context may not be used so.
    BadContext = 11,
    /// A fixed-size table (regions, contexts, gates, frames) is full.
    Exhausted = 12,
    /// The policy refuses the request (for example a remap of a protected
    /// page, or a pin of a bit okernel does not pin).
    Refused = 13,
}

impl Status {
    /// Decodes RAX after a hypercall; unknown values stay visible as `Err`.
    pub const fn from_raw(raw: u64) -> Result<Self, u64> {
        Ok(match raw {
            0 => Status::Success,
            1 => Status::UnknownCall,
            2 => Status::InvalidArgument,
            3 => Status::PermissionDenied,
            4 => Status::Unaligned,
            5 => Status::Empty,
            6 => Status::Overlap,
            7 => Status::OutOfRam,
            8 => Status::MonitorMemory,
            9 => Status::Locked,
            10 => Status::NotFound,
            11 => Status::BadContext,
            12 => Status::Exhausted,
            13 => Status::Refused,
            other => return Err(other),
        })
    }

    /// The value as it goes in RAX.
    pub const fn raw(self) -> u64 {
        self as u64
    }

    /// A short name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::UnknownCall => "unknown call",
            Status::InvalidArgument => "invalid argument",
            Status::PermissionDenied => "permission denied",
            Status::Unaligned => "unaligned",
            Status::Empty => "empty",
            Status::Overlap => "overlap",
            Status::OutOfRam => "not guest RAM",
            Status::MonitorMemory => "monitor memory",
            Status::Locked => "locked",
            Status::NotFound => "not found",
            Status::BadContext => "bad context",
            Status::Exhausted => "exhausted",
            Status::Refused => "refused by policy",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_round_trips() {
        for &c in Call::ALL {
            assert_eq!(Call::from_raw(c.raw()), Ok(c));
        }
    }

    #[test]
    fn call_numbers_are_stable() {
        assert_eq!(Call::Exit.raw(), 2);
        assert_eq!(Call::RegisterRegion.raw(), 16);
        assert_eq!(Call::AuditRead.raw(), 29);
        for raw in 3..16 {
            assert_eq!(Call::from_raw(raw), Err(Status::UnknownCall));
        }
    }

    #[test]
    fn unknown_calls_are_refused() {
        assert_eq!(Call::from_raw(3), Err(Status::UnknownCall));
        assert_eq!(Call::from_raw(u64::MAX), Err(Status::UnknownCall));
    }

    #[test]
    fn status_round_trips() {
        for raw in 0..=13 {
            let s = Status::from_raw(raw).expect("0..=13 are all defined");
            assert_eq!(s.raw(), raw);
            assert!(!s.name().is_empty());
        }
        assert_eq!(Status::from_raw(99), Err(99));
    }
}
