//! The image's own GDT (with a TSS whose IST gives `#DF` a known-good
//! stack) and IDT, replacing the boot stub's minimal GDT.
//!
//! Selectors: 0x08 64-bit code, 0x10 data, 0x18 TSS; okernel reads them
//! back from the CPU when it fills the VMCS host-state area.
//!
//! Each application processor gets the same layout in tables of its own
//! ([`init_ap`]): a GDT whose TSS descriptor names its own TSS, whose IST
//! gives its `#DF` a stack of its own — the loader's stack of that
//! processor, unused once it runs on the monitor's (a `#DF` never
//! returns) — so that a host stack overflow on it (into its guard page)
//! reports and ends the run instead of triple-faulting (issue 17). A VM exit loads TR's base from the VMCS
//! (SDM Vol. 3C §28.5.2), which `okernel::launch::ap` sets to that TSS.

use crate::smp::MAX_APS;
use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::structures::tss::TaskStateSegment;

unsafe extern "C" {
    /// `iretq` (`ap_entry.rs`).
    fn nmi_return_stub();
}

const DF_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct Stack(core::cell::UnsafeCell<[u8; DF_STACK_SIZE]>);

// SAFETY: the program never reads or writes the stack; only the processor
// does, through the TSS, on one processor at a time (a #DF ends the run).
unsafe impl Sync for Stack {}

/// The `#DF` stack: only ever used by the CPU through the TSS. Interior
/// mutability puts it in writable memory (`.bss`), not `.rodata`.
static DF_STACK: Stack = Stack(core::cell::UnsafeCell::new([0; DF_STACK_SIZE]));

static AP_TSS: [Once<TaskStateSegment>; MAX_APS] = [const { Once::new() }; MAX_APS];
static AP_GDT: [Once<(GlobalDescriptorTable, [SegmentSelector; 3])>; MAX_APS] =
    [const { Once::new() }; MAX_APS];

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, [SegmentSelector; 3])> = Once::new();
static IDT: Once<InterruptDescriptorTable> = Once::new();

/// A TSS whose IST slot 0 (IST1) is `df_stack_top`.
fn tss_with_df_stack(df_stack_top: VirtAddr) -> TaskStateSegment {
    let mut tss = TaskStateSegment::new();
    tss.interrupt_stack_table[0] = df_stack_top;
    tss
}

/// A GDT of 64-bit code, data and `tss`, in that order (0x08, 0x10,
/// 0x18).
fn gdt_with(tss: &'static TaskStateSegment) -> (GlobalDescriptorTable, [SegmentSelector; 3]) {
    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss_sel = gdt.append(Descriptor::tss_segment(tss));
    (gdt, [code, data, tss_sel])
}

/// Loads `gdt`, its segments and its TSS.
fn load(gdt: &'static GlobalDescriptorTable, [code, data, tss_sel]: [SegmentSelector; 3]) {
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, whose descriptors
    // are a 64-bit code segment, a data segment and an available TSS that
    // live for the rest of the run ('static).
    unsafe {
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        load_tss(tss_sel);
    }
}

/// Loads application processor `slot`'s own GDT and TSS, with
/// `df_stack_top` in IST1 for its `#DF`; returns the TSS's selector and
/// address, the host TR of its VMCS. Call once per slot, on that
/// processor. `None` for a slot past [`MAX_APS`].
pub fn init_ap(slot: usize, df_stack_top: u64) -> Option<(u16, u64)> {
    let tss = AP_TSS
        .get(slot)?
        .call_once(|| tss_with_df_stack(VirtAddr::new(df_stack_top)));
    let (gdt, selectors) = AP_GDT[slot].call_once(|| gdt_with(tss));
    load(gdt, *selectors);
    Some((selectors[2].0, core::ptr::from_ref(tss) as u64))
}

/// Loads the GDT, TSS and IDT. Call once, early.
pub fn init() {
    let tss = TSS.call_once(|| {
        tss_with_df_stack(VirtAddr::from_ptr(DF_STACK.0.get()) + DF_STACK_SIZE as u64)
    });
    let (gdt, selectors) = GDT.call_once(|| gdt_with(tss));
    load(gdt, *selectors);
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        super::exceptions::install(&mut idt, 0);
        // An NMI returns where it struck: with other processors running
        // the guest, one can send this processor an NMI (through the
        // xAPIC page, which does not exit) while the monitor handles an
        // exit here, in VMX root, where it reaches this IDT; reporting it
        // as a fault would let the guest end the run. The NMI is lost for
        // the guest (docs/smp.md).
        // SAFETY: `nmi_return_stub` is `iretq` (an NMI pushes no error
        // code), in this image's text; the selector is the one loaded
        // above (the crate fills in CS).
        unsafe {
            idt.non_maskable_interrupt
                .set_handler_addr(VirtAddr::new(nmi_return_stub as *const () as u64));
        }
        idt
    });
    // The gates use the code selector loaded above (the crate fills in CS).
    idt.load();
}
