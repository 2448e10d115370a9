//! Parking every application processor in VMX root before the guest
//! starts (`okernel::launch::park`): the guest runs on this processor
//! only, and no INIT-SIPI-SIPI it sends can start another one outside
//! the monitor.
//!
//! [`plan`] (before anything is placed): read the ACPI MADT's enabled
//! processors (their APIC IDs) and, when there is more than this one,
//! choose a usable page below 1 MiB for the start-up code. That page
//! stays the monitor's for the whole run — out of every EPT view and of
//! the guest's memory map — so a processor that answers late still finds
//! the start-up code, never memory the guest wrote.
//!
//! [`park`] (last, before the monitor starts): build the parked
//! processors' IDT; copy the trampoline (`arch/ap_entry.rs`) to the page;
//! broadcast INIT, SIPI, SIPI to all processors but this one (SDM Vol. 3A
//! §9.4.4.1, "Typical BSP Initialization Sequence"; §11.6.1 for the
//! ICR); wait until every listed processor, by APIC ID, has reported
//! parked, then a grace period for any the MADT does not count. A listed
//! processor not parked, any processor that failed, and more processors
//! than there are slots end the boot with the reason.

use crate::phys::Identity;
use core::fmt;
use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use loader::acpi::{self, AcpiError, Processors};
use loader::bootinfo::BootInfo;
use loader::parking::{self, ARRIVED, NotParked, PARKED, Slot, TAKEN};
use log::{info, warn};
use okernel::bits::{APIC_BASE_ADDRESS, APIC_BASE_EXTD};
use okernel::launch::ap::join_this_processor;
use okernel::launch::park::{self, ParkFailure, park_this_processor};
use okernel::memmap::PhysRange;
use okernel::msrs::{IA32_APIC_BASE, IA32_X2APIC_ICR};
use spin::Once;
use x86_64::VirtAddr;
use x86_64::registers::control::Cr3;
use x86_64::registers::model_specific::Msr;
use x86_64::structures::gdt::SegmentSelector;
use x86_64::structures::idt::InterruptDescriptorTable;

/// The most application processors parked (a 64-processor machine).
pub const MAX_APS: usize = okernel::launch::ap::MAX_APS;
/// Each parked processor's stack.
pub const AP_STACK_BYTES: usize = 16 * 1024;

/// Slots taken: the 64-bit entry takes one with `lock xadd`; a processor
/// that finds them all taken halts outside VMX, which [`park`] refuses
/// (this counter then exceeds [`MAX_APS`]).
pub static AP_NEXT: AtomicU32 = AtomicU32::new(0);

/// Each slot's state (`loader::parking`): [`TAKEN`] (the processor is
/// between the entry and `loader_ap_main`), [`ARRIVED`], [`PARKED`], or a
/// [`ParkFailure::code`].
static STATE: [AtomicU8; MAX_APS] = [const { AtomicU8::new(0) }; MAX_APS];
/// Each slot's APIC ID (published by the [`STATE`] store after it).
static APIC_ID: [AtomicU32; MAX_APS] = [const { AtomicU32::new(0) }; MAX_APS];

static AP_IDT: Once<InterruptDescriptorTable> = Once::new();

/// The code selector of the parked processors' GDT (`ap_gdt` in
/// `arch/ap_entry.rs`), which their IDT's gates name.
const AP_CODE_SELECTOR: u16 = 0x08;

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_trampoline_cr3: u8;
    static ap_trampoline_entry: u8;
    static ap_vmxon_regions: u8;
    /// The processors' loader stacks, `AP_STACK_BYTES` each by slot.
    static ap_stacks: u8;
    fn ap_long_mode_entry();
    fn nmi_return_stub();
}

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
/// One that comes later still runs the start-up code, which stays in
/// place, and parks; it is only not checked.
const GRACE_TICKS: u64 = 1 << 22;

/// Why the processors could not all be parked.
#[derive(Debug, Clone, Copy)]
pub enum SmpError {
    /// The MADT could not be read.
    Acpi(AcpiError),
    /// More enabled processors than [`MAX_APS`] + 1.
    TooMany(u32),
    /// No usable page below 1 MiB for the start-up code.
    NoLowPage,
    /// Not every processor parked.
    NotParked(NotParked),
}

impl SmpError {
    /// Whether this is VMX missing on an application processor: the run
    /// then ends as "VMX unavailable", as it would on this one.
    pub fn vmx_unavailable(&self) -> bool {
        matches!(self, SmpError::NotParked(NotParked::Failed { code, .. }) if *code == ParkFailure::UNAVAILABLE)
    }
}

impl fmt::Display for SmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = "a processor outside the monitor would run the guest's code outside VMX";
        match self {
            SmpError::Acpi(e) => write!(f, "cannot count the processors to park: {e}"),
            SmpError::TooMany(n) => write!(
                f,
                "the MADT lists {n} enabled processors; okernel parks at most {}: limit the processors in the firmware",
                MAX_APS + 1
            ),
            SmpError::NoLowPage => write!(
                f,
                "no usable RAM page below 1 MiB for the other processors' start-up code"
            ),
            SmpError::NotParked(NotParked::Missing { apic_id, state }) => {
                match apic_id {
                    Some(id) => write!(f, "the processor with APIC ID {id} was not parked: ")?,
                    None => write!(f, "a processor the MADT does not list was not parked: ")?,
                }
                write!(
                    f,
                    "{}; {why}",
                    match *state {
                        None => "it did not answer INIT-SIPI-SIPI",
                        Some(TAKEN) => "it started but did not reach the loader's code",
                        Some(_) => "it reached the loader's code but stopped before VMXON",
                    }
                )
            }
            SmpError::NotParked(NotParked::Failed { apic_id, code }) => write!(
                f,
                "the processor with APIC ID {apic_id} could not be parked: {}; {why}",
                ParkFailure::describe(*code)
            ),
            SmpError::NotParked(NotParked::Overflow(n)) => write!(
                f,
                "{n} processors answered the start-up broadcast, more than okernel parks ({MAX_APS} besides this one): {why}"
            ),
        }
    }
}

/// What [`park`] needs: the listed processors and the start-up page.
pub struct Plan {
    cpus: Processors,
    page: PhysRange,
}

impl Plan {
    /// The page the start-up code occupies for the whole run (the
    /// monitor's: out of every view and of the guest's map).
    pub fn page(&self) -> PhysRange {
        self.page
    }

    /// How many application processors the MADT lists (enabled).
    pub fn application_processors(&self) -> u64 {
        u64::from(self.cpus.enabled().saturating_sub(1))
    }
}

/// Reads the MADT and, when it lists other processors, chooses the
/// start-up page clear of `avoid`. `None`: nothing to park (one
/// processor, or no ACPI RSDP to count them with, which is reported).
pub fn plan(bi: &BootInfo<'_>, avoid: &[PhysRange]) -> Result<Option<Plan>, SmpError> {
    let Some(rsdp) = bi.rsdp else {
        warn!(
            "no ACPI RSDP from the boot loader: other processors, if any, are NOT parked (run okernel on one processor)"
        );
        return Ok(None);
    };
    let cpus = acpi::processors(&Identity, rsdp).map_err(SmpError::Acpi)?;
    if cpus.enabled() as usize > MAX_APS + 1 {
        return Err(SmpError::TooMany(cpus.enabled()));
    }
    if cpus.enabled() <= 1 {
        info!("the MADT lists one processor: no application processor to park");
        return Ok(None);
    }
    let page = bi
        .memory
        .find_free(0x1000, 0x1000, 0x1000, avoid)
        .filter(|p| p.end <= 0x10_0000)
        .ok_or(SmpError::NoLowPage)?;
    Ok(Some(Plan { cpus, page }))
}

/// This processor's APIC ID: the x2APIC ID (CPUID 0BH EDX) where the
/// leaf exists, else the initial APIC ID (CPUID.1:EBX[31:24]) (SDM Vol.
/// 3A §11.4.6, §11.12.8).
fn apic_id() -> u32 {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    if __cpuid(0).eax >= 0xb {
        let l = __cpuid_count(0xb, 0);
        if l.ebx & 0xffff != 0 {
            return l.edx;
        }
    }
    __cpuid(1).ebx >> 24
}

/// Parks every application processor (see the module docs). Ok: how many
/// are parked (slots 0 to that number less one, each about to join the
/// run, `okernel::launch::ap`).
pub fn park(plan: &Plan) -> Result<usize, SmpError> {
    AP_IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        // Every exception reports and ends the run, as on this processor
        // (`arch::exceptions`): a fault of the monitor on an application
        // processor must not halt it silently while it holds the run's
        // lock (the others would then wait for ever). #DF on IST1: each
        // processor's own TSS gives it a stack of its own
        // (`arch::tables::init_ap`), loaded before this IDT.
        crate::arch::exceptions::install(&mut idt, 0);
        let cs = SegmentSelector(AP_CODE_SELECTOR);
        // SAFETY: `nmi_return_stub` is `iretq` (an NMI pushes no error
        // code): an NMI returns where it struck. The selector is the
        // processors' 64-bit code segment (0x08 in `ap_gdt` and in each
        // processor's own GDT).
        unsafe {
            idt.non_maskable_interrupt
                .set_handler_addr(VirtAddr::new(nmi_return_stub as *const () as u64))
                .set_code_selector(cs);
        }
        idt
    });

    // SAFETY: `plan` chose the page in usable RAM below 1 MiB clear of
    // everything placed, and every later placement avoids it: it is the
    // monitor's from now on.
    let low = unsafe { crate::phys::bytes_mut(plan.page) }.ok_or(SmpError::NoLowPage)?;
    let trampoline = trampoline();
    low.fill(0);
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

    let vector = (plan.page.start >> 12) as u32;
    send(ICR_INIT_ALL_BUT_SELF);
    delay(10_000_000);
    for _ in 0..2 {
        send(ICR_SIPI_ALL_BUT_SELF | vector);
        delay(1_000_000);
    }
    let me = apic_id();
    let listed = plan.cpus.ids();
    let start = crate::arch::tsc();
    let waited_out = || crate::arch::tsc().wrapping_sub(start) > WAIT_TICKS;
    let mut slots = [Slot {
        state: TAKEN,
        apic_id: 0,
    }; MAX_APS];
    let read = |slots: &mut [Slot; MAX_APS]| {
        let answered = AP_NEXT.load(Ordering::Acquire);
        for (i, s) in slots.iter_mut().enumerate().take(answered as usize) {
            s.state = STATE[i].load(Ordering::Acquire);
            s.apic_id = APIC_ID[i].load(Ordering::Relaxed);
        }
        answered
    };
    loop {
        let n = (read(&mut slots) as usize).min(MAX_APS);
        let done = parking::listed_parked(listed, me, &slots[..n]) && parking::settled(&slots[..n]);
        if done || waited_out() {
            break;
        }
        core::hint::spin_loop();
    }
    delay(GRACE_TICKS);
    loop {
        let n = (read(&mut slots) as usize).min(MAX_APS);
        if parking::settled(&slots[..n]) || waited_out() {
            break;
        }
        core::hint::spin_loop();
    }
    let answered = read(&mut slots);
    parking::verdict(listed, me, answered, &slots).map_err(SmpError::NotParked)?;
    info!(
        "{answered} application processor(s) parked in VMX root (the MADT lists {} processors enabled, {} not enabled); each joins the run under the monitor; this one is APIC ID {me}; start-up page {}",
        plan.cpus.enabled(),
        plan.cpus.not_enabled,
        plan.page
    );
    Ok((answered as usize).min(MAX_APS))
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
    if base & APIC_BASE_EXTD != 0 {
        // SAFETY: x2APIC mode (EXTD): the ICR is MSR 0x830, destination
        // in the high half (unused with a shorthand).
        unsafe { Msr::new(IA32_X2APIC_ICR).write(u64::from(icr_low)) };
        return;
    }
    let mmio = base & APIC_BASE_ADDRESS;
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
    APIC_ID[slot].store(apic_id(), Ordering::Relaxed);
    STATE[slot].store(ARRIVED, Ordering::Release);
    // The IDT first, so that a fault loading the tables below reports;
    // only its #DF gate needs them (IST1).
    if let Some(idt) = AP_IDT.get() {
        idt.load();
    }
    // Its own GDT and TSS. (No slot past MAX_APS reaches here: the entry
    // refuses it.) The #DF stack: the top of this processor's loader
    // stack, which it leaves for the monitor's when it joins
    // (`join_this_processor` never returns; a #DF before that never
    // returns either).
    let df_top = (&raw const ap_stacks) as u64 + (slot as u64 + 1) * AP_STACK_BYTES as u64;
    let Some(tr) = crate::arch::tables::init_ap(slot, df_top) else {
        okernel_console::halt_forever()
    };
    let region = (&raw const ap_vmxon_regions) as u64 + slot as u64 * 4096;
    // SAFETY: CPL0, long mode on the loader's identity map, interrupts
    // disabled (the trampoline's CLI), the IDT above (NMI returns);
    // `region` is this slot's zeroed, aligned frame in this image's BSS,
    // which the guest never sees.
    if let Err(failure) = unsafe { park_this_processor(region) } {
        STATE[slot].store(failure.code(), Ordering::Release);
        okernel_console::halt_forever()
    }
    STATE[slot].store(PARKED, Ordering::Release);
    // SAFETY: parked just above (VMX root), CPL0 on the identity map with
    // interrupts disabled, this processor's own GDT and TSS
    // (`tables::init_ap`, statics mapped for the whole run) and the IDT
    // loaded.
    let failure = unsafe { join_this_processor(slot, tr) };
    log::error!(
        "the application processor in slot {slot} could not join the run: {failure}; it stays halted in VMX root (INIT blocked)"
    );
    park::halt_here()
}
