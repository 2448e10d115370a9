//! The guest kernel's own descriptor tables, in its own memory: a GDT with
//! kernel and user segments and a TSS (whose IST gives `#DF` a stack), and
//! an IDT routing exceptions to the probe-aware handler.
//!
//! The guest must not keep using the loader's tables: under okernel they
//! lie in monitor memory, which no EPT view maps.
//!
//! Selectors (the order SYSCALL/SYSRET need, SDM Vol. 3A §5.8.8): 0x08
//! kernel code, 0x10 kernel data, 0x18 user data, 0x20 user code, 0x28 TSS.

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::structures::tss::TaskStateSegment;

const DF_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct Stack([u8; DF_STACK_SIZE]);

/// The `#DF` stack: only ever used by the CPU through the TSS.
static DF_STACK: Stack = Stack([0; DF_STACK_SIZE]);

/// The guest's selectors.
#[derive(Debug, Clone, Copy)]
pub struct Selectors {
    /// Kernel code.
    pub kernel_code: SegmentSelector,
    /// Kernel data.
    pub kernel_data: SegmentSelector,
    /// The TSS.
    pub tss: SegmentSelector,
}

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();
static IDT: Once<InterruptDescriptorTable> = Once::new();

/// Loads the guest's GDT, TSS and IDT. Call once, first thing.
pub fn init() -> Selectors {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        tss.interrupt_stack_table[0] = VirtAddr::from_ptr(&DF_STACK) + DF_STACK_SIZE as u64;
        tss
    });
    let (gdt, sel) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let sel = Selectors {
            kernel_code: gdt.append(Descriptor::kernel_code_segment()),
            kernel_data: gdt.append(Descriptor::kernel_data_segment()),
            tss: {
                // User data and code sit between, where SYSRET expects them.
                gdt.append(Descriptor::user_data_segment());
                gdt.append(Descriptor::user_code_segment());
                gdt.append(Descriptor::tss_segment(tss))
            },
        };
        (gdt, sel)
    });
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded ('static): a 64-bit
    // kernel code segment, a kernel data segment and an available TSS.
    unsafe {
        CS::set_reg(sel.kernel_code);
        SS::set_reg(sel.kernel_data);
        DS::set_reg(sel.kernel_data);
        ES::set_reg(sel.kernel_data);
        load_tss(sel.tss);
    }
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        super::traps::install(&mut idt, 0);
        idt
    });
    idt.load();
    *sel
}
