//! Parking every application processor in VMX root before the guest
//! starts (`okernel::launch::park`): the guest runs on this processor
//! only, and no INIT-SIPI-SIPI it sends can start another one outside
//! the monitor.
//!
//! Order: count the processors the ACPI MADT lists; build the parked
//! processors' IDT; copy the trampoline (`arch/ap_entry.rs`) to a low
//! page, saving what was there; broadcast INIT, SIPI, SIPI to all
//! processors but this one (SDM Vol. 3A §9.4.4.1, "Typical BSP
//! Initialization Sequence", and §11.6.1 for the ICR); wait until every
//! listed processor has reported parked or failed; restore the page.
//! Any processor listed but not parked ends the boot with its reason.

use crate::phys::Identity;
use core::fmt;
use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use loader::acpi::{self, AcpiError};
use loader::bootinfo::BootInfo;
use log::{info, warn};
use okernel::launch::park::{ParkFailure, park_this_processor};
use spin::Once;
use x86_64::VirtAddr;
use x86_64::registers::control::Cr3;
use x86_64::registers::model_specific::Msr;
use x86_64::structures::idt::InterruptDescriptorTable;

/// The most application processors parked (a 64-processor machine).
pub const MAX_APS: usize = 63;
/// Each parked processor's stack.
pub const AP_STACK_BYTES: usize = 16 * 1024;

/// The next free slot: the 64-bit entry takes one with `lock xadd`.
pub static AP_NEXT: AtomicU32 = AtomicU32::new(0);
/// Processors that found no free slot (the entry halts them).
pub static AP_OVERFLOW: AtomicU32 = AtomicU32::new(0);

const ARRIVED: u8 = 1;
const PARKED: u8 = 0xff;
/// Each slot's state: 0 unused, [`ARRIVED`], [`PARKED`], or a
/// [`ParkFailure::code`].
static STATE: [AtomicU8; MAX_APS] = [const { AtomicU8::new(0) }; MAX_APS];

static AP_IDT: Once<InterruptDescriptorTable> = Once::new();

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_trampoline_cr3: u8;
    static ap_trampoline_entry: u8;
    static ap_vmxon_regions: u8;
    fn ap_long_mode_entry();
    fn ap_nmi_stub();
    fn ap_stop_stub();
}

/// IA32_APIC_BASE (SDM Vol. 3A §11.4.4): the xAPIC page and EXTD
/// (x2APIC mode, bit 10).
const IA32_APIC_BASE: u32 = 0x1b;
const X2APIC_ICR: u32 = 0x830;
const XAPIC_ICR_LOW: u64 = 0x300;
const XAPIC_ICR_HIGH: u64 = 0x310;
/// ICR: destination shorthand "all excluding self" (bits 19:18 = 11b),
/// level assert (bit 14), delivery mode INIT (101b) or start-up (110b).
const ICR_INIT_ALL_BUT_SELF: u32 = 0b11 << 18 | 1 << 14 | 0b101 << 8;
const ICR_SIPI_ALL_BUT_SELF: u32 = 0b11 << 18 | 1 << 14 | 0b110 << 8;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;

/// How long the processors get to come up, in TSC ticks (about 0.3 s
/// at 3 GHz; in Bochs, where the TSC counts instructions, longer).
const WAIT_TICKS: u64 = 1 << 30;

/// How long processors the MADT does not count get after the counted
/// ones have parked (about 1.4 ms at 3 GHz; start-up takes microseconds).
const GRACE_TICKS: u64 = 1 << 22;

/// Why the processors could not all be parked.
#[derive(Debug, Clone, Copy)]
pub enum SmpError {
    /// The MADT could not be read.
    Acpi(AcpiError),
    /// More processors than [`MAX_APS`] + 1.
    TooMany(u32),
    /// No usable page below 1 MiB for the trampoline.
    NoLowPage,
    /// Fewer processors reported than the MADT lists.
    Missing { listed: u32, parked: u32 },
    /// Processor slot `slot` reported a failure.
    NotParked { slot: usize, code: u8 },
    /// Processors beyond [`MAX_APS`] answered the broadcast.
    Overflow(u32),
}

impl fmt::Display for SmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = "a processor left out would run the guest's code outside VMX";
        match self {
            SmpError::Acpi(e) => write!(f, "cannot count the processors to park: {e}"),
            SmpError::TooMany(n) => write!(
                f,
                "the MADT lists {n} processors; okernel parks at most {}: limit the processors in the firmware",
                MAX_APS + 1
            ),
            SmpError::NoLowPage => write!(
                f,
                "no usable RAM page below 1 MiB for the processors' start-up code"
            ),
            SmpError::Missing { listed, parked } => write!(
                f,
                "the MADT lists {listed} application processors, {parked} reached VMX root: {why}"
            ),
            SmpError::NotParked { slot, code } => write!(
                f,
                "application processor {slot} could not be parked: {}; {why}",
                ParkFailure::describe(*code)
            ),
            SmpError::Overflow(n) => write!(
                f,
                "{n} processors more than the MADT's answered the start-up broadcast (at most {MAX_APS} parked): {why}"
            ),
        }
    }
}

/// Parks every application processor (see the module docs). Without an
/// ACPI RSDP from the boot loader there is nothing to count them with:
/// that is reported, and none is started.
pub fn park_application_processors(bi: &BootInfo<'_>) -> Result<(), SmpError> {
    let Some(rsdp) = bi.rsdp else {
        warn!(
            "no ACPI RSDP from the boot loader: other processors, if any, are NOT parked (run okernel on one processor)"
        );
        return Ok(());
    };
    let cpus = acpi::processors(&Identity, rsdp).map_err(SmpError::Acpi)?;
    if cpus.usable as usize > MAX_APS + 1 {
        return Err(SmpError::TooMany(cpus.usable));
    }
    let listed = cpus.usable.saturating_sub(1);
    if listed == 0 {
        info!("the MADT lists one processor: no application processor to park");
        return Ok(());
    }
    AP_IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        let stop = VirtAddr::new(ap_stop_stub as *const () as u64);
        // SAFETY: `ap_nmi_stub` is `iretq` (an NMI pushes no error
        // code); `ap_stop_stub` never returns, so any frame suits it.
        unsafe {
            idt.non_maskable_interrupt
                .set_handler_addr(VirtAddr::new(ap_nmi_stub as *const () as u64));
            idt.double_fault.set_handler_addr(stop);
            idt.machine_check.set_handler_addr(stop);
            idt.general_protection_fault.set_handler_addr(stop);
            idt.page_fault.set_handler_addr(stop);
            idt.invalid_opcode.set_handler_addr(stop);
        }
        idt
    });

    let page = bi
        .memory
        .find_free(0x1000, 0x1000, 0x1000, &[])
        .filter(|p| p.end <= 0x10_0000)
        .ok_or(SmpError::NoLowPage)?;
    // SAFETY: usable RAM below 1 MiB; what it holds is saved here and
    // written back before this function returns, and nothing else runs
    // meanwhile but the processors started on it.
    let low = unsafe { crate::phys::bytes_mut(page) }.ok_or(SmpError::NoLowPage)?;
    let mut saved = [0u8; 4096];
    saved.copy_from_slice(low);
    let trampoline = trampoline();
    low[..trampoline.len()].copy_from_slice(trampoline);
    let cr3 = Cr3::read().0.start_address().as_u64();
    let at = |sym: *const u8| sym as usize - trampoline.as_ptr() as usize;
    let (cr3_at, entry_at) = (
        at(&raw const ap_trampoline_cr3),
        at(&raw const ap_trampoline_entry),
    );
    low[cr3_at..cr3_at + 8].copy_from_slice(&cr3.to_le_bytes());
    low[entry_at..entry_at + 8]
        .copy_from_slice(&(ap_long_mode_entry as *const () as u64).to_le_bytes());

    let vector = (page.start >> 12) as u32;
    send(ICR_INIT_ALL_BUT_SELF);
    delay(10_000_000);
    for _ in 0..2 {
        send(ICR_SIPI_ALL_BUT_SELF | vector);
        delay(1_000_000);
    }
    let start = crate::arch::tsc();
    let settled =
        |n: u32| (0..(n as usize).min(MAX_APS)).all(|i| STATE[i].load(Ordering::Acquire) > ARRIVED);
    let waited_out = || crate::arch::tsc().wrapping_sub(start) > WAIT_TICKS;
    let all_listed = || {
        let n = AP_NEXT.load(Ordering::Acquire);
        n >= listed && settled(n)
    };
    while !all_listed() && !waited_out() {
        core::hint::spin_loop();
    }
    // Processors the MADT marks disabled or does not list answer the
    // broadcast too, where they exist: time for them to arrive and park
    // before the page goes back (after that one would run whatever the
    // page then holds, in real mode).
    delay(GRACE_TICKS);
    while !settled(AP_NEXT.load(Ordering::Acquire)) && !waited_out() {
        core::hint::spin_loop();
    }
    low.copy_from_slice(&saved);

    let arrived = (AP_NEXT.load(Ordering::Acquire) as usize).min(MAX_APS);
    if let Some(slot) = (0..arrived).find(|&i| STATE[i].load(Ordering::Acquire) != PARKED) {
        let code = STATE[slot].load(Ordering::Acquire);
        return Err(SmpError::NotParked { slot, code });
    }
    let overflow = AP_OVERFLOW.load(Ordering::Acquire);
    if overflow != 0 {
        return Err(SmpError::Overflow(overflow));
    }
    let parked = arrived as u32;
    if parked < listed {
        return Err(SmpError::Missing { listed, parked });
    }
    info!(
        "{parked} application processor(s) parked in VMX root (the MADT lists {} processors, {} disabled); the guest runs on this one",
        cpus.usable, cpus.disabled
    );
    Ok(())
}

/// The trampoline's bytes, in this image.
fn trampoline() -> &'static [u8] {
    let start = &raw const ap_trampoline_start;
    let end = &raw const ap_trampoline_end;
    // SAFETY: both symbols delimit the trampoline in this image's
    // read-only data (`arch/ap_entry.rs`), start before end.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}

/// Busy-waits `ticks` TSC ticks.
fn delay(ticks: u64) {
    let start = crate::arch::tsc();
    while crate::arch::tsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

/// Sends one IPI through this processor's local APIC, in x2APIC or xAPIC
/// mode, and waits (bounded) until the xAPIC has sent it.
fn send(icr_low: u32) {
    // SAFETY: IA32_APIC_BASE exists on every processor with an APIC
    // (all x86-64 ones); reading it has no side effect.
    let base = unsafe { Msr::new(IA32_APIC_BASE).read() };
    if base & 1 << 10 != 0 {
        // SAFETY: x2APIC mode (EXTD): the ICR is MSR 0x830, destination
        // in the high half (unused with a shorthand).
        unsafe { Msr::new(X2APIC_ICR).write(u64::from(icr_low)) };
        return;
    }
    let mmio = base & 0x000f_ffff_ffff_f000;
    let reg = |r: u64| (mmio + r) as *mut u32;
    // SAFETY: the xAPIC page (below 4 GiB on every machine okernel boots:
    // the identity map) of this processor; ICR writes send the IPI, reads
    // of ICR low have no side effect.
    unsafe {
        core::ptr::write_volatile(reg(XAPIC_ICR_HIGH), 0);
        core::ptr::write_volatile(reg(XAPIC_ICR_LOW), icr_low);
        for _ in 0..1_000_000 {
            if core::ptr::read_volatile(reg(XAPIC_ICR_LOW)) & ICR_DELIVERY_PENDING == 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }
}

/// Where the 64-bit entry sends an application processor, on its own
/// stack, with its slot.
#[unsafe(no_mangle)]
extern "C" fn loader_ap_main(slot: u32) -> ! {
    let slot = slot as usize;
    STATE[slot].store(ARRIVED, Ordering::Release);
    if let Some(idt) = AP_IDT.get() {
        idt.load();
    }
    let region = (&raw const ap_vmxon_regions) as u64 + slot as u64 * 4096;
    // SAFETY: CPL0, long mode on the loader's identity map, interrupts
    // disabled (the trampoline's CLI), the IDT above (NMI returns);
    // `region` is this slot's zeroed, aligned frame in this image's BSS,
    // which the guest never sees.
    let failure =
        unsafe { park_this_processor(region, || STATE[slot].store(PARKED, Ordering::Release)) };
    STATE[slot].store(failure.code(), Ordering::Release);
    okernel_console::halt_forever()
}
