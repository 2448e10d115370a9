//! The protection-policy part of the ABI (version 1): what the guest
//! registers, locks and asks for, as argument values and `repr(C)`
//! structures shared by the monitor and the guest.
//!
//! The calls themselves are in [`crate::hypercall::Call`]; their argument
//! rules are documented there and in `docs/hypercall-abi.md`. Every
//! validation failure returns a [`crate::hypercall::Status`] and changes
//! nothing.

/// What a registered region holds, and so how the monitor protects it once
/// locked (invariants 2, 3, 7 of DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
#[non_exhaustive]
pub enum RegionKind {
    /// Kernel text: read + execute in every view; the only memory that is
    /// supervisor-executable once any text region is locked (W^X).
    Text = 1,
    /// Read-only data: read-only in every view.
    Rodata = 2,
    /// Data that becomes read-only after initialisation (at lock).
    RoAfterInit = 3,
    /// Page-table pages: read-only in untrusted views; changed there only
    /// through the validated page-table update call.
    PageTable = 4,
    /// Descriptor tables (IDT, GDT, TSS): read-only in every view.
    DescriptorTable = 5,
    /// Credential pages: read-only in untrusted views.
    Credentials = 6,
    /// The system-call table and similar dispatch tables: read-only in
    /// every view.
    DispatchTable = 7,
}

impl RegionKind {
    /// Every kind, for exhaustive tests.
    pub const ALL: [RegionKind; 7] = [
        RegionKind::Text,
        RegionKind::Rodata,
        RegionKind::RoAfterInit,
        RegionKind::PageTable,
        RegionKind::DescriptorTable,
        RegionKind::Credentials,
        RegionKind::DispatchTable,
    ];

    /// Decodes a kind from a hypercall argument.
    pub const fn from_raw(raw: u64) -> Option<Self> {
        Some(match raw {
            1 => RegionKind::Text,
            2 => RegionKind::Rodata,
            3 => RegionKind::RoAfterInit,
            4 => RegionKind::PageTable,
            5 => RegionKind::DescriptorTable,
            6 => RegionKind::Credentials,
            7 => RegionKind::DispatchTable,
            _ => return None,
        })
    }

    /// A short name for logs and audit records.
    pub const fn name(self) -> &'static str {
        match self {
            RegionKind::Text => "text",
            RegionKind::Rodata => "rodata",
            RegionKind::RoAfterInit => "ro-after-init",
            RegionKind::PageTable => "page-table",
            RegionKind::DescriptorTable => "descriptor-table",
            RegionKind::Credentials => "credentials",
            RegionKind::DispatchTable => "dispatch-table",
        }
    }
}

/// What may execute once a text region is locked (ABI 1.2,
/// [`crate::hypercall::Call::SetExecuteRule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u64)]
#[non_exhaustive]
pub enum ExecuteRule {
    /// Supervisor W^X in EPT: once text is locked, nothing but locked
    /// text is supervisor-executable (user-executable too, without
    /// mode-based execute control). The default; for a kernel that
    /// registers all the code it runs (the demo guest).
    #[default]
    LockedTextOnly = 0,
    /// Execute rights outside locked text are left to the kernel's own
    /// page tables: EPT keeps text read-only and everything locked
    /// unwritable, but does not remove execute from other RAM. For a
    /// kernel that loads modules and JIT-compiles code, on a processor
    /// whose EPT execute right covers user mode too (no mode-based
    /// execute control): Linux.
    GuestPageTables = 1,
}

impl ExecuteRule {
    /// Decodes a rule from a hypercall argument.
    pub const fn from_raw(raw: u64) -> Option<Self> {
        match raw {
            0 => Some(ExecuteRule::LockedTextOnly),
            1 => Some(ExecuteRule::GuestPageTables),
            _ => None,
        }
    }
}

/// The format of a patch-site table (ABI 1.2,
/// [`crate::hypercall::Call::RegisterPatchSites`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
#[non_exhaustive]
pub enum PatchFormat {
    /// Linux x86-64 jump labels (`__jump_table`): 16-byte entries
    /// `{ s32 code; s32 target; s64 key; }`, `code` and `target` relative
    /// to the address of the field itself. A site is 2 or 5 bytes; its
    /// legal forms are the NOP of its size (`66 90`,
    /// `0f 1f 44 00 00`), the jump to its target (`eb rel8`, `e9 rel32`)
    /// and, while the kernel rewrites it, `cc` followed by bytes each of
    /// which is that position's byte of the NOP or of the jump.
    LinuxJumpEntry = 1,
    /// Linux x86-64 inline static calls (`__static_call_sites`, ABI 1.5):
    /// 8-byte entries `{ s32 addr; s32 key; }`, each relative to the
    /// address of the field itself; bit 0 of the key's value marks a tail
    /// call, bit 1 a site in init text. A site is 5 bytes. A call site's
    /// legal forms are a `call rel32` into locked text, the 5-byte NOP
    /// and the 5-byte `xor eax, eax` (`2e 2e 2e 31 c0` or
    /// `66 66 48 31 c0`); a tail-call site's a `jmp rel32` into locked
    /// text and `ret` padded with `int3` (`c3 cc cc cc cc`). While the
    /// kernel rewrites a site its first byte is `cc` and its other four
    /// are not judged (the kernel may write them one by one); the site is
    /// judged whole when its first byte is written.
    LinuxStaticCallSite = 2,
    /// Linux x86-64 static-call trampolines (`.static_call.text`, from
    /// `__static_call_text_start` to `__static_call_text_end`, ABI 1.5):
    /// the table is the trampolines themselves, in registered text that
    /// is not locked yet, 8 bytes each: a 5-byte site with a tail-call
    /// site's legal forms, then the signature `0f b9 cc` (`ud1`).
    LinuxStaticCallTrampoline = 3,
}

impl PatchFormat {
    /// Decodes a format from a hypercall argument.
    pub const fn from_raw(raw: u64) -> Option<Self> {
        match raw {
            1 => Some(PatchFormat::LinuxJumpEntry),
            2 => Some(PatchFormat::LinuxStaticCallSite),
            3 => Some(PatchFormat::LinuxStaticCallTrampoline),
            _ => None,
        }
    }

    /// The size of one table entry in bytes.
    pub const fn entry_size(self) -> u64 {
        match self {
            PatchFormat::LinuxJumpEntry => 16,
            PatchFormat::LinuxStaticCallSite | PatchFormat::LinuxStaticCallTrampoline => 8,
        }
    }
}

/// The trusted context: the view every guest starts in.
pub const TRUSTED_CONTEXT: u64 = 0;

/// The most untrusted contexts the monitor keeps at once.
pub const MAX_CONTEXTS: usize = 8;

/// Which control register a pin applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum ControlRegister {
    /// CR0 (pinnable bits: PE, WP, PG).
    Cr0 = 0,
    /// CR4 (pinnable bits: PAE, PGE, SMEP, SMAP, UMIP, ...).
    Cr4 = 4,
}

impl ControlRegister {
    /// Decodes a register number from a hypercall argument.
    pub const fn from_raw(raw: u64) -> Option<Self> {
        match raw {
            0 => Some(ControlRegister::Cr0),
            4 => Some(ControlRegister::Cr4),
            _ => None,
        }
    }
}

/// What an audit record says was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
#[non_exhaustive]
pub enum AuditKind {
    /// An access the EPT view denied.
    EptViolation = 1,
    /// A write that would clear a pinned CR bit.
    CrPin = 2,
    /// A write to a locked MSR.
    MsrLock = 3,
    /// LIDT/LGDT/LLDT/LTR after the descriptor tables were locked.
    DescriptorTable = 4,
    /// A page-table update the monitor refused (remap defence).
    PageTableUpdate = 5,
    /// A context switch the monitor refused or redirected to a gate.
    ContextSwitch = 6,
    /// A hypercall only the trusted context may make (`Exit`), refused
    /// to another context (ABI 1.1).
    Hypercall = 7,
    /// A VM exit the context could not go on from (a triple fault, an
    /// INIT signal, an event whose delivery needed a task switch after a
    /// double fault): the context was stopped (ABI 1.1, issue 13).
    Exit = 8,
}

impl AuditKind {
    /// The name the monitor's log and the clients print.
    pub const fn name(self) -> &'static str {
        match self {
            AuditKind::EptViolation => "ept-violation",
            AuditKind::CrPin => "cr-write",
            AuditKind::MsrLock => "msr-write",
            AuditKind::DescriptorTable => "descriptor-table",
            AuditKind::PageTableUpdate => "page-table-update",
            AuditKind::ContextSwitch => "context-switch",
            AuditKind::Hypercall => "hypercall",
            AuditKind::Exit => "exit",
        }
    }
}

/// What the monitor did about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
#[non_exhaustive]
pub enum AuditAction {
    /// The instruction was skipped; nothing happened.
    Skip = 1,
    /// #GP(0) was injected at the instruction.
    InjectGp = 2,
    /// #PF was injected.
    InjectPf = 3,
    /// The hypercall failed with an error status.
    Refused = 4,
    /// The context was stopped.
    Stop = 5,
    /// The guest resumed at a registered gate instead of after its
    /// instruction (a switch to a less restricted view, invariant 9).
    Gate = 6,
    /// #DF was injected: the denied access was made while the processor
    /// delivered a contributory exception or a page fault (SDM Vol. 3A
    /// Table 6-5; ABI 1.1, issue 18).
    InjectDf = 7,
}

impl AuditAction {
    /// The name the monitor's log and the clients print.
    pub const fn name(self) -> &'static str {
        match self {
            AuditAction::Skip => "drop",
            AuditAction::InjectGp => "inject-#GP",
            AuditAction::InjectPf => "inject-#PF",
            AuditAction::Refused => "refused",
            AuditAction::Stop => "stop",
            AuditAction::Gate => "gate",
            AuditAction::InjectDf => "inject-#DF",
        }
    }
}

/// One audit record as the `AuditRead` call copies it into guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct AuditRecord {
    /// Sequence number (0 for the first record of the run).
    pub sequence: u64,
    /// An [`AuditKind`] value.
    pub kind: u32,
    /// An [`AuditAction`] value.
    pub action: u32,
    /// The context that made the attempt.
    pub context: u64,
    /// Guest-physical address involved (0 when none).
    pub gpa: u64,
    /// Guest-linear address involved (0 when not valid).
    pub gva: u64,
    /// Access attempted: bit 0 read, bit 1 write, bit 2 execute.
    pub access: u64,
    /// Guest RIP of the attempt.
    pub rip: u64,
    /// The VM-exit qualification (or the refused value for CR/MSR writes).
    pub qualification: u64,
}

impl AuditRecord {
    /// All zero: no record.
    pub const EMPTY: Self = Self {
        sequence: 0,
        kind: 0,
        action: 0,
        context: 0,
        gpa: 0,
        gva: 0,
        access: 0,
        rip: 0,
        qualification: 0,
    };
}

const _: () = assert!(core::mem::size_of::<AuditRecord>() == 64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_unknown_values_are_refused() {
        for k in RegionKind::ALL {
            assert_eq!(RegionKind::from_raw(k as u64), Some(k));
        }
        assert_eq!(RegionKind::from_raw(0), None);
        assert_eq!(RegionKind::from_raw(8), None);
        assert_eq!(ControlRegister::from_raw(3), None);
        assert_eq!(ControlRegister::from_raw(4), Some(ControlRegister::Cr4));
    }
}
