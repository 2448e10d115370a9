//! The in-guest fuzz executor's language and the host-testable half of its
//! model: how a test case's bytes decode into operations an untrusted
//! kernel path can perform, and what okernel's policy says each must do.
//!
//! Every 8 bytes of a case are one [`Op`] (a shorter tail is ignored), so
//! every byte string is a valid case and a mutation of one byte changes
//! one operation. Byte 0 picks the kind, bytes 1–3 are small selectors,
//! bytes 4–7 a little-endian `u32` operand (an offset, a value, a raw
//! argument). The bare-metal half (`src/fuzz/`) resolves selectors to
//! addresses and runs the operations.

/// Memory an operation can aim at, by what okernel's policy makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A data page of the kernel in no region (executor scratch).
    Scratch,
    /// Locked kernel text.
    Text,
    /// Locked user text (the tasks' code page).
    UserText,
    /// Locked read-only data.
    Rodata,
    /// Locked GDT/IDT/TSS.
    DescriptorTables,
    /// Locked page tables.
    PageTables,
    /// The locked credential table.
    Credentials,
    /// The locked system-call table.
    SyscallTable,
    /// The running context's own protected page.
    OwnSecret,
    /// Another context's protected page.
    OtherSecret,
    /// The monitor's image.
    MonitorImage,
    /// The monitor's frame pool (VMXON region, VMCS, EPT tables).
    MonitorPool,
    /// A non-canonical address.
    NonCanonical,
    /// A spare RAM page in no region (protected-page calls aim at it).
    Spare,
}

impl Class {
    /// Every class, in selector order.
    pub const ALL: [Class; 14] = [
        Class::Scratch,
        Class::Text,
        Class::UserText,
        Class::Rodata,
        Class::DescriptorTables,
        Class::PageTables,
        Class::Credentials,
        Class::SyscallTable,
        Class::OwnSecret,
        Class::OtherSecret,
        Class::MonitorImage,
        Class::MonitorPool,
        Class::NonCanonical,
        Class::Spare,
    ];

    /// The class a selector byte picks.
    pub const fn pick(sel: u8) -> Class {
        Self::ALL[sel as usize % Self::ALL.len()]
    }

    /// A short name for messages.
    pub const fn name(self) -> &'static str {
        match self {
            Class::Scratch => "scratch",
            Class::Text => "text",
            Class::UserText => "user-text",
            Class::Rodata => "rodata",
            Class::DescriptorTables => "descriptor-tables",
            Class::PageTables => "page-tables",
            Class::Credentials => "credentials",
            Class::SyscallTable => "syscall-table",
            Class::OwnSecret => "own-protected-page",
            Class::OtherSecret => "other-protected-page",
            Class::MonitorImage => "monitor-image",
            Class::MonitorPool => "monitor-pool",
            Class::NonCanonical => "non-canonical",
            Class::Spare => "spare",
        }
    }

    /// Whether the class is a region the kernel locks (under protection).
    pub const fn locked_region(self) -> bool {
        matches!(
            self,
            Class::Text
                | Class::UserText
                | Class::Rodata
                | Class::DescriptorTables
                | Class::PageTables
                | Class::Credentials
                | Class::SyscallTable
        )
    }
}

/// A data access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A quadword load.
    Read,
    /// A quadword store.
    Write,
    /// A call (instruction fetch).
    Execute,
}

impl Access {
    /// A short name for messages.
    pub const fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Execute => "execute",
        }
    }
}

/// What the policy says an operation must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// It completes; the monitor writes no audit record.
    Allowed,
    /// The monitor denies it: #GP(0) at the instruction and exactly one
    /// audit record of this [`okernel_abi::policy::AuditKind`] code.
    Denied(u32),
    /// The processor itself faults with this vector; no audit record.
    Faults(u8),
}

/// What an untrusted kernel path may do to memory of `class`, under a
/// monitor whose policy is locked (`docs/policy.md`: W^X, read-only
/// kinds, writable page tables and credentials only in the trusted view,
/// protected pages only in their context's view, monitor memory in no
/// view). Execution is only tried at known code: the text gadget and the
/// scratch page's code.
pub const fn expect_access(class: Class, access: Access) -> Expect {
    const EPT: Expect = Expect::Denied(okernel_abi::policy::AuditKind::EptViolation as u32);
    match (class, access) {
        (Class::NonCanonical, _) => Expect::Faults(13),
        (Class::MonitorImage | Class::MonitorPool | Class::OtherSecret, _) => EPT,
        (_, Access::Read) => Expect::Allowed,
        (Class::Text, Access::Execute) => Expect::Allowed,
        (_, Access::Execute) => EPT,
        (Class::Scratch | Class::OwnSecret | Class::Spare, Access::Write) => Expect::Allowed,
        (_, Access::Write) => EPT,
    }
}

/// Whether a MOV to CR0/CR4 from `old` to `new` must be denied: it clears
/// a pinned bit (invariant 4).
pub const fn cr_write_denied(pinned: u64, old: u64, new: u64) -> bool {
    pinned & old & !new != 0
}

/// Page-table entry bits the remap rules look at.
pub mod pte {
    /// Present.
    pub const PRESENT: u64 = 1;
    /// Writable.
    pub const WRITABLE: u64 = 1 << 1;
    /// Accessed.
    pub const ACCESSED: u64 = 1 << 5;
    /// Dirty.
    pub const DIRTY: u64 = 1 << 6;
    /// Page size (PAT in a 4 KiB entry): the monitor assumes 1 GiB.
    pub const PAGE_SIZE: u64 = 1 << 7;
    /// The frame address.
    pub const ADDR: u64 = 0x000f_ffff_ffff_f000;
}

/// The frames an entry could map, as okernel judges it: `(base, len)`.
pub const fn mapped_range(entry: u64) -> Option<(u64, u64)> {
    const GIB: u64 = 1 << 30;
    if entry & pte::PRESENT == 0 {
        return None;
    }
    let addr = entry & pte::ADDR;
    Some(if entry & pte::PAGE_SIZE != 0 {
        (addr & !(GIB - 1), GIB)
    } else {
        (addr, 4096)
    })
}

/// What the executor knows about protected memory, for the remap rules.
pub trait Protected {
    /// Whether `[base, base + len)` overlaps a locked region other than
    /// page tables, or a protected page.
    fn protected_data(&self, base: u64, len: u64) -> bool;
    /// Whether `[base, base + len)` overlaps a locked page-table region.
    fn page_table(&self, base: u64, len: u64) -> bool;
}

/// Whether UpdatePageTable may write `new` over `old` (invariant 7, the
/// rules of `docs/hypercall-abi.md`): never a writable mapping of
/// protected data; an entry linking to a page table only to another one;
/// an entry mapping protected memory only to the same frame and size.
/// From an `untrusted` context such an entry keeps every bit but A and D,
/// which it may only set — and a link its frame (issue 13's flag gap).
pub fn pte_update_allowed(p: &impl Protected, untrusted: bool, old: u64, new: u64) -> bool {
    let covers =
        |e: u64, f: &dyn Fn(u64, u64) -> bool| mapped_range(e).is_some_and(|(b, l)| f(b, l));
    let data = |b, l| p.protected_data(b, l);
    let table = |b, l| p.page_table(b, l);
    // Only `free` bits differ, and A/D only from clear to set.
    let keeps = |free: u64| {
        let ad = pte::ACCESSED | pte::DIRTY;
        !untrusted || ((old ^ new) & !(free | ad) == 0 && old & !new & ad == 0)
    };
    if new & pte::WRITABLE != 0 && covers(new, &data) {
        return false;
    }
    let links = |e: u64| e & pte::PAGE_SIZE == 0 && covers(e, &table);
    if links(old) {
        return links(new) && keeps(0);
    }
    if covers(old, &data) || covers(old, &table) {
        return new & pte::PRESENT != 0
            && new & pte::ADDR == old & pte::ADDR
            && new & pte::PAGE_SIZE == old & pte::PAGE_SIZE
            && keeps(0);
    }
    true
}

/// One operation of a test case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A memory access at `offset` into memory of `class`.
    Memory {
        /// Read, write or execute.
        access: Access,
        /// Where.
        class: Class,
        /// The offset (reduced modulo the class's size).
        offset: u32,
        /// Bits a write flips (never 0).
        flip: u64,
    },
    /// A hypercall: `call` selects the number, `args` the argument
    /// selectors, `raw` a raw operand.
    Hypercall {
        /// The call selector.
        call: u8,
        /// The argument selectors.
        args: [u8; 2],
        /// A raw operand.
        raw: u32,
    },
    /// MOV to CR0 (`cr4` false) or CR4 flipping bit selector `bit`.
    ControlRegister {
        /// CR4 rather than CR0.
        cr4: bool,
        /// The bit selector.
        bit: u8,
    },
    /// WRMSR (`write`) or RDMSR of MSR selector `msr`, flipping `flip`.
    Msr {
        /// Write rather than read.
        write: bool,
        /// The MSR selector.
        msr: u8,
        /// Bits a write flips (low 32 bits, never 0).
        flip: u32,
    },
    /// A descriptor-table instruction (selector: LIDT, LGDT, LLDT, LTR,
    /// SIDT, SGDT, SLDT, STR).
    DescriptorTable {
        /// The instruction selector.
        instr: u8,
    },
    /// A VMX instruction (selector).
    Vmx {
        /// The instruction selector.
        instr: u8,
    },
    /// UpdatePageTable of alias slot `slot` with a value built from a
    /// frame of `class` and flag selector `flags`.
    PageTable {
        /// The alias slot selector.
        slot: u8,
        /// The frame's class.
        class: Class,
        /// The flags selector.
        flags: u8,
        /// The offset of the frame inside the class.
        offset: u32,
    },
    /// A load or store through alias slot `slot`.
    Alias {
        /// The alias slot selector.
        slot: u8,
        /// Write rather than read.
        write: bool,
        /// The offset into the page.
        offset: u32,
    },
    /// SwitchContext with context and gate selectors.
    Switch {
        /// The context selector.
        ctx: u8,
        /// The gate selector.
        gate: u8,
        /// A raw operand.
        raw: u32,
    },
    /// An exception or interrupt (selector).
    Exception {
        /// The kind selector.
        kind: u8,
    },
    /// Allocate (`alloc`) or free a protected page.
    ProtectedPage {
        /// Allocate rather than free.
        alloc: bool,
        /// The context selector.
        ctx: u8,
        /// The page's class.
        class: Class,
    },
    /// CPUID of leaf selector `leaf`.
    Cpuid {
        /// The leaf selector.
        leaf: u8,
        /// A raw leaf when the selector says so.
        raw: u32,
    },
    /// Port I/O: entry `sel` of the executor's port table (System Control
    /// Port A, the keyboard controller, reset control, PCI configuration).
    Port {
        /// The port-table selector.
        sel: u8,
        /// A raw operand.
        raw: u32,
    },
    /// Debug state (RFLAGS.TF, a DR7 breakpoint) set before a hypercall.
    Debug {
        /// What to set.
        what: u8,
        /// The hypercall selector.
        call: u8,
    },
    /// A self-IPI through the local APIC (fixed vector, or NMI), alone or
    /// pending across a SwitchContext, or an NMI the gate sends itself
    /// before its first IRET.
    Ipi {
        /// The IPI selector.
        what: u8,
        /// The hypercall selector.
        call: u8,
    },
}

/// The number of operation kinds.
pub const KINDS: u8 = 17;

impl Op {
    /// The size of one encoded operation.
    pub const SIZE: usize = 8;

    /// Decodes one operation (every 8 bytes decode).
    pub fn decode(b: [u8; 8]) -> Op {
        let raw = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let flip = (u64::from(b[2]) | u64::from(b[3]) << 8)
            .max(1)
            .rotate_left(u32::from(b[1] % 64));
        match b[0] % KINDS {
            k @ 0..=2 => Op::Memory {
                access: [Access::Read, Access::Write, Access::Execute][k as usize],
                class: Class::pick(b[1]),
                offset: raw,
                flip,
            },
            3 => Op::Hypercall {
                call: b[1],
                args: [b[2], b[3]],
                raw,
            },
            4 => Op::ControlRegister {
                cr4: b[1] & 1 != 0,
                bit: b[2],
            },
            5 => Op::Msr {
                write: b[1] & 1 != 0,
                msr: b[2],
                flip: raw.max(1),
            },
            6 => Op::DescriptorTable { instr: b[1] },
            7 => Op::Vmx { instr: b[1] },
            8 => Op::PageTable {
                slot: b[1],
                class: Class::pick(b[2]),
                flags: b[3],
                offset: raw,
            },
            9 => Op::Alias {
                slot: b[1],
                write: b[2] & 1 != 0,
                offset: raw,
            },
            10 => Op::Switch {
                ctx: b[1],
                gate: b[2],
                raw,
            },
            11 => Op::Exception { kind: b[1] },
            12 => Op::ProtectedPage {
                alloc: b[1] & 1 != 0,
                ctx: b[2],
                class: Class::pick(b[3]),
            },
            13 => Op::Cpuid { leaf: b[1], raw },
            14 => Op::Port { sel: b[1], raw },
            15 => Op::Debug {
                what: b[1],
                call: b[2],
            },
            _ => Op::Ipi {
                what: b[1],
                call: b[2],
            },
        }
    }

    /// The operations of a case.
    pub fn decode_all(case: &[u8]) -> impl Iterator<Item = Op> + '_ {
        case.chunks_exact(Self::SIZE)
            .map(|c| Op::decode([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
    }

    /// The kind's index (for coverage).
    pub const fn kind(&self) -> u8 {
        match self {
            Op::Memory { access, .. } => *access as u8,
            Op::Hypercall { .. } => 3,
            Op::ControlRegister { .. } => 4,
            Op::Msr { .. } => 5,
            Op::DescriptorTable { .. } => 6,
            Op::Vmx { .. } => 7,
            Op::PageTable { .. } => 8,
            Op::Alias { .. } => 9,
            Op::Switch { .. } => 10,
            Op::Exception { .. } => 11,
            Op::ProtectedPage { .. } => 12,
            Op::Cpuid { .. } => 13,
            Op::Port { .. } => 14,
            Op::Debug { .. } => 15,
            Op::Ipi { .. } => 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use okernel_abi::policy::AuditKind;

    #[test]
    fn every_kind_decodes_and_reports_its_kind() {
        for k in 0..KINDS {
            let op = Op::decode([k, 1, 2, 3, 4, 5, 6, 7]);
            assert_eq!(op.kind(), k, "{op:?}");
        }
        assert_eq!(Op::decode([KINDS, 0, 0, 0, 0, 0, 0, 0]).kind(), 0);
        assert_eq!(Op::decode_all(&[0u8; 23]).count(), 2);
    }

    #[test]
    fn writes_always_flip_something() {
        for b in [
            [1u8, 0, 0, 0, 0, 0, 0, 0],
            [1, 63, 0, 0, 0, 0, 0, 0],
            [1, 9, 255, 255, 0, 0, 0, 0],
        ] {
            let Op::Memory { flip, access, .. } = Op::decode(b) else {
                panic!("not a memory op")
            };
            assert_eq!(access, Access::Write);
            assert_ne!(flip, 0);
        }
    }

    #[test]
    fn the_access_model_follows_the_policy() {
        let ept = Expect::Denied(AuditKind::EptViolation as u32);
        assert_eq!(expect_access(Class::Text, Access::Write), ept);
        assert_eq!(expect_access(Class::Text, Access::Read), Expect::Allowed);
        assert_eq!(expect_access(Class::Text, Access::Execute), Expect::Allowed);
        assert_eq!(expect_access(Class::Scratch, Access::Execute), ept);
        assert_eq!(
            expect_access(Class::Scratch, Access::Write),
            Expect::Allowed
        );
        assert_eq!(
            expect_access(Class::OwnSecret, Access::Write),
            Expect::Allowed
        );
        assert_eq!(expect_access(Class::OtherSecret, Access::Read), ept);
        assert_eq!(expect_access(Class::MonitorPool, Access::Read), ept);
        assert_eq!(expect_access(Class::Credentials, Access::Write), ept);
        assert_eq!(
            expect_access(Class::PageTables, Access::Read),
            Expect::Allowed
        );
        assert_eq!(
            expect_access(Class::NonCanonical, Access::Read),
            Expect::Faults(13)
        );
        for c in Class::ALL {
            assert_eq!(
                Class::pick(Class::ALL.iter().position(|&x| x == c).unwrap() as u8),
                c
            );
            if c.locked_region() {
                assert_eq!(expect_access(c, Access::Write), ept, "{c:?}");
            }
        }
    }

    #[test]
    fn cr_pins() {
        assert!(cr_write_denied(1 << 16, 1 << 16 | 1, 1));
        assert!(!cr_write_denied(1 << 16, 1 << 16 | 1, 1 << 16));
        assert!(!cr_write_denied(1 << 16, 1, 1 << 16));
        assert!(!cr_write_denied(0, u64::MAX, 0));
    }

    struct Map;
    impl Protected for Map {
        fn protected_data(&self, base: u64, len: u64) -> bool {
            base < 0x20_0000 && base + len > 0x10_0000
        }
        fn page_table(&self, base: u64, len: u64) -> bool {
            base < 0x30_0000 && base + len > 0x2f_0000
        }
    }

    #[test]
    fn the_remap_rules() {
        let text = 0x10_0000 | pte::PRESENT;
        let data = 0x50_0000 | pte::PRESENT;
        let table = 0x2f_0000 | pte::PRESENT | pte::WRITABLE;
        let m = Map;
        for untrusted in [false, true] {
            let allowed = |old, new| pte_update_allowed(&m, untrusted, old, new);
            assert!(allowed(0, text), "read-only map of text");
            assert!(!allowed(0, text | pte::WRITABLE), "writable text");
            assert!(allowed(0, data | pte::WRITABLE));
            assert!(allowed(data, 0), "unmap plain data");
            assert!(allowed(data, data | 1 << 63), "plain data's flags");
            assert!(!allowed(text, 0), "unmap text");
            assert!(!allowed(text, data), "remap text elsewhere");
            assert!(allowed(text, text | pte::ACCESSED), "A set");
            assert!(!allowed(table, data), "link to table replaced");
            assert_eq!(
                allowed(table, 0x2f_1000 | pte::PRESENT | pte::WRITABLE),
                !untrusted,
                "link to another table, same flags: the trusted context's only"
            );
            assert!(
                !allowed(0, data | pte::WRITABLE | pte::PAGE_SIZE),
                "a writable 1 GiB page covers text"
            );
        }
        // The flags of a protected entry: the trusted context's to change.
        for flags in [1 << 63, 1 << 2, 1 << 4, 1 << 8] {
            assert!(pte_update_allowed(&m, false, text, text | flags));
            assert!(!pte_update_allowed(&m, true, text, text | flags));
            assert!(pte_update_allowed(&m, false, table, table | flags));
            assert!(!pte_update_allowed(&m, true, table, table | flags));
        }
        let a = pte::ACCESSED;
        assert!(pte_update_allowed(&m, false, text | a, text), "A cleared");
        assert!(!pte_update_allowed(&m, true, text | a, text), "A cleared");
        assert!(
            !pte_update_allowed(&m, true, table, 0x2f_1000 | pte::PRESENT),
            "relinked read-only"
        );
    }
}
