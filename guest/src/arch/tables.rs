//! The guest kernel's own descriptor tables, in its own memory: a GDT with
//! kernel and user segments and a TSS (whose IST gives `#DF` a stack and
//! whose RSP0 gives exceptions from ring 3 one), and an IDT routing
//! exceptions to the probe-aware handler.
//!
//! The guest must not keep using the loader's tables: under okernel they
//! lie in monitor memory, which no EPT view maps. The three tables share
//! page-aligned pages of their own (the `.okernel.desc` section), so the
//! demo kernel can register them as one `DescriptorTable` region. Every
//! code and data descriptor has its Accessed bit preset, so the processor
//! never writes the GDT when it loads a segment (SDM Vol. 3A §3.4.5.1):
//! after the lock the pages are read-only in every view.
//!
//! Selectors (the order SYSCALL/SYSRET need, SDM Vol. 3A §5.8.8): 0x08
//! kernel code, 0x10 kernel data, 0x18 user data, 0x20 user code, 0x28 TSS.

use core::cell::UnsafeCell;
use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::structures::tss::TaskStateSegment;

const STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct Stack(UnsafeCell<[u8; STACK_SIZE]>);

// SAFETY: only the processor writes the stacks (exception delivery through
// the TSS); Rust code takes their addresses only.
unsafe impl Sync for Stack {}

/// The `#DF` stack: only ever used by the CPU through the TSS. Interior
/// mutability keeps it (and the next one) out of `.rodata`, which the
/// kernel locks read-only: a double fault after the lock used to end in an
/// EPT violation on this stack (found by the VM fuzzer).
static DF_STACK: Stack = Stack(UnsafeCell::new([0; STACK_SIZE]));
/// The stack of exceptions taken in ring 3 (TSS.RSP0).
static RING0_STACK: Stack = Stack(UnsafeCell::new([0; STACK_SIZE]));

/// The guest's selectors.
#[derive(Debug, Clone, Copy)]
pub struct Selectors {
    /// Kernel code.
    pub kernel_code: SegmentSelector,
    /// Kernel data.
    pub kernel_data: SegmentSelector,
    /// User data (SYSRET loads SS from STAR[63:48] + 8).
    pub user_data: SegmentSelector,
    /// User code (SYSRET loads CS from STAR[63:48] + 16).
    pub user_code: SegmentSelector,
    /// The TSS.
    pub tss: SegmentSelector,
}

/// The three tables, in their own pages.
#[repr(C, align(4096))]
struct Tables {
    idt: InterruptDescriptorTable,
    gdt: GlobalDescriptorTable,
    tss: TaskStateSegment,
}

/// [`Tables`], written once by [`init`] before they are loaded.
struct Shared(UnsafeCell<Tables>);

// SAFETY: the tables are written only by `init`, once (guarded by `SEL`),
// on the single CPU before anything else reads them; afterwards only the
// processor and the attack suite's deliberate raw writes touch them.
unsafe impl Sync for Shared {}

#[unsafe(link_section = ".okernel.desc")]
static TABLES: Shared = Shared(UnsafeCell::new(Tables {
    idt: InterruptDescriptorTable::new(),
    gdt: GlobalDescriptorTable::new(),
    tss: TaskStateSegment::new(),
}));

static SEL: Once<Selectors> = Once::new();

/// Loads the guest's GDT, TSS and IDT. Call once, first thing.
pub fn init() -> Selectors {
    let t = TABLES.0.get();
    let sel = *SEL.call_once(|| {
        // SAFETY: first and only call (Once): nothing has loaded or
        // referenced the tables yet, so these exclusive borrows of three
        // disjoint fields are unique.
        let (idt, gdt, tss) = unsafe { (&mut (*t).idt, &mut (*t).gdt, &mut (*t).tss) };
        tss.interrupt_stack_table[0] = VirtAddr::from_ptr(&DF_STACK) + STACK_SIZE as u64;
        tss.privilege_stack_table[0] = VirtAddr::from_ptr(&RING0_STACK) + STACK_SIZE as u64;
        super::traps::install(idt, 0);
        super::irq::install(idt);
        let tss: &'static TaskStateSegment = tss;
        Selectors {
            kernel_code: gdt.append(Descriptor::kernel_code_segment()),
            kernel_data: gdt.append(Descriptor::kernel_data_segment()),
            user_data: gdt.append(Descriptor::user_data_segment()),
            user_code: gdt.append(Descriptor::user_code_segment()),
            tss: gdt.append(Descriptor::tss_segment(tss)),
        }
    });
    // SAFETY: initialised above and never again mutated through a
    // reference; the 'static shared borrows only feed LGDT/LIDT.
    let (gdt, idt) = unsafe { (&(*t).gdt, &(*t).idt) };
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
    idt.load();
    sel
}

/// Where the tables are, for registration and for the attacks.
#[derive(Debug, Clone, Copy)]
pub struct TableAddrs {
    /// The IDT (256 gates).
    pub idt: u64,
    /// The GDT's spare (last, unused) entry.
    pub gdt_spare: u64,
    /// The TSS's unused IST slot 7.
    pub tss_spare: u64,
}

/// The tables' addresses.
pub fn addrs() -> TableAddrs {
    let t = TABLES.0.get();
    // SAFETY: only addresses are taken (no reference to the tables is
    // made); `entries` reads the GDT's length, which only `init` writes.
    let (idt, gdt, tss_spare) = unsafe {
        (
            (&raw const (*t).idt) as u64,
            (*t).gdt.entries().as_ptr() as u64,
            (&raw const (*t).tss.interrupt_stack_table[6]) as u64,
        )
    };
    TableAddrs {
        idt,
        gdt_spare: gdt + 7 * 8,
        tss_spare,
    }
}
