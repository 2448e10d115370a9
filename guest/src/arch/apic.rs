//! The local APIC as the guest's kernel paths reach it: its page mapped at
//! an alias-window slot (uncached, supervisor, writable) and its xAPIC
//! registers (SDM Vol. 3A §11.4.1, Table 11-1). Used by the fuzz
//! executor's self-IPIs.

use okernel_abi::hypercall::{Call, Status};

/// The alias-window slot the local APIC's page is mapped at.
pub const APIC_SLOT: usize = 31;

/// xAPIC registers (SDM Vol. 3A Table 11-1).
pub mod reg {
    /// Local APIC ID.
    pub const ID: u64 = 0x20;
    /// End of interrupt.
    pub const EOI: u64 = 0xb0;
    /// Spurious interrupt vector (bit 8: APIC software enable).
    pub const SVR: u64 = 0xf0;
    /// In-service register (eight 32-bit words, 0x10 apart).
    pub const ISR: u64 = 0x100;
    /// Interrupt request register.
    pub const IRR: u64 = 0x200;
    /// Interrupt command register, low half (writing it sends).
    pub const ICR_LOW: u64 = 0x300;
    /// Interrupt command register, high half (destination).
    pub const ICR_HIGH: u64 = 0x310;
}

/// ICR delivery mode NMI (bits 10:8 = 100b), level assert (bit 14),
/// physical destination, no shorthand.
pub const ICR_NMI: u32 = 0b100 << 8 | 1 << 14;

/// The linear address of the APIC's page.
pub fn base() -> u64 {
    guest::layout::alias_va(APIC_SLOT)
}

/// Reads register `r`.
pub fn read(r: u64) -> u32 {
    // SAFETY: the APIC page, mapped at its slot at boot (`map`); register
    // reads have no side effect.
    unsafe { core::ptr::read_volatile((base() + r) as *const u32) }
}

/// Writes register `r`.
pub fn write(r: u64, v: u32) {
    // SAFETY: as for `read`; callers write EOI, SVR's enable bit and the
    // ICR (an IPI to this processor only).
    unsafe { core::ptr::write_volatile((base() + r) as *mut u32, v) }
}

/// Whether vector `v`'s bit is set in the 256-bit register at `r`.
pub fn bit(r: u64, v: u32) -> bool {
    read(r + u64::from(v / 32) * 0x10) & (1 << (v % 32)) != 0
}

/// This processor's APIC ID.
pub fn id() -> u32 {
    read(reg::ID) >> 24
}

/// Maps the local APIC's page (IA32_APIC_BASE) at [`APIC_SLOT`] and
/// software-enables the APIC, from the trusted context: through
/// UpdatePageTable when the page tables are locked, else directly.
pub fn map(locked: bool) -> Result<(), Status> {
    let base_pa = super::cpu::rdmsr(super::cpu::IA32_APIC_BASE) & super::cpu::APIC_BASE_ADDRESS;
    let entry = crate::kernel::layout().spaces.alias_entry(APIC_SLOT);
    // Present, writable, PWT, PCD, accessed, dirty.
    let value = base_pa | 1 | 2 | 8 | 16 | 32 | 64;
    if locked {
        let r = super::instr::hypercall_raw(Call::UpdatePageTable.raw(), [entry, value, 0, 0]);
        if r.status != Ok(Status::Success) {
            return Err(r.status.unwrap_or(Status::Refused));
        }
    } else {
        // SAFETY: the alias window's own page table, identity-mapped and
        // writable while nothing is locked; the slot is the APIC's.
        unsafe { core::ptr::write_volatile(entry as *mut u64, value) };
    }
    super::cpu::invlpg(base());
    write(reg::SVR, read(reg::SVR) | 1 << 8);
    log::info!("local APIC {base_pa:#x} at {:#x}, id {}", base(), id());
    Ok(())
}
