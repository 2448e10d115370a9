//! Privileged operations of the demo kernel (page tables, MSRs, control
//! registers) and the *gadgets* the attack suite runs as probe targets from
//! an untrusted task's kernel path: each tries one privileged change,
//! reads back what took effect, and undoes it before returning, so a
//! change that got through never outlives the gadget.

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::VirtAddr;
use x86_64::instructions::tables::{lidt, sidt};
use x86_64::registers::control::{Cr0, Cr4};
use x86_64::registers::model_specific::Msr;
use x86_64::structures::DescriptorTablePointer;

/// IA32_EFER.
pub const IA32_EFER: u32 = 0xc000_0080;
/// IA32_STAR.
pub const IA32_STAR: u32 = 0xc000_0081;
/// IA32_LSTAR.
pub const IA32_LSTAR: u32 = 0xc000_0082;
/// IA32_FMASK (SFMASK).
pub const IA32_FMASK: u32 = 0xc000_0084;
/// IA32_SYSENTER_CS.
pub const IA32_SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
pub const IA32_SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
pub const IA32_SYSENTER_EIP: u32 = 0x176;
/// IA32_APIC_BASE.
pub const IA32_APIC_BASE: u32 = 0x1b;
/// IA32_APIC_BASE bits 51:12: the APIC page.
pub const APIC_BASE_ADDRESS: u64 = 0x000f_ffff_ffff_f000;

/// CR0.PE, CR0.WP, CR0.PG.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.WP.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.UMIP.
pub const CR4_UMIP: u64 = 1 << 11;
/// CR4.SMEP.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP.
pub const CR4_SMAP: u64 = 1 << 21;

/// Reads an MSR.
pub fn rdmsr(msr: u32) -> u64 {
    // SAFETY: only called for MSRs this kernel knows exist (architectural
    // SYSCALL/SYSENTER MSRs, EFER and IA32_APIC_BASE), or from an attack
    // gadget inside the vulnerability-emulation call, whose #GP the
    // kernel catches and reports.
    unsafe { Msr::new(msr).read() }
}

/// Writes an MSR.
///
/// # Safety
///
/// The value must be valid for the MSR and keep the kernel working (for
/// example a SYSCALL entry point that exists).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: forwarded from the caller.
    unsafe { Msr::new(msr).write(value) }
}

/// Sets bits of CR4.
///
/// # Safety
///
/// The bits must be supported (CPUID) and their effect expected by the
/// kernel (SMEP/SMAP: the kernel never touches user pages directly).
pub unsafe fn cr4_set(bits: u64) {
    // SAFETY: forwarded from the caller.
    unsafe { Cr4::write_raw(Cr4::read_raw() | bits) }
}

/// The page tables' root (CR3 without its flag bits).
pub fn cr3() -> u64 {
    x86_64::registers::control::Cr3::read()
        .0
        .start_address()
        .as_u64()
}

/// Loads CR3.
///
/// # Safety
///
/// `root` must be a PML4 that maps the running code, stack and data as the
/// current one does.
pub unsafe fn load_cr3(root: u64) {
    // SAFETY: forwarded from the caller.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) root, options(nostack)) }
}

/// IA32_BIOS_UPDT_TRIG: a microcode update of the processor, an MSR
/// okernel's table does not list.
pub const IA32_BIOS_UPDT_TRIG: u32 = 0x79;
/// IA32_SMM_MONITOR_CTL: exists only with VMX or SMX.
pub const IA32_SMM_MONITOR_CTL: u32 = 0x9b;

/// Gadget: writes [`MSR_VALUE`] to MSR `msr` without reading it first or
/// back (an MSR that may not read). Returns 1 when the write did not
/// fault.
pub extern "C" fn write_msr_blind(msr: u64) -> u64 {
    // SAFETY: used only for IA32_BIOS_UPDT_TRIG with the address of a
    // zeroed buffer: no valid update header, so a processor that accepts
    // the write loads nothing (SDM Vol. 3A §10.11.6); under okernel it
    // exits and is refused.
    unsafe { wrmsr(msr as u32, MSR_VALUE.load(Ordering::SeqCst)) };
    1
}

/// Gadget: reads MSR `msr`; returns 1 when the read did not fault.
pub extern "C" fn read_msr_probe(msr: u64) -> u64 {
    let _ = rdmsr(msr as u32);
    1
}

/// IA32_MTRR_DEF_TYPE: the default memory type (bits 2:0) and the MTRR
/// enables, shared with the monitor.
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;

/// IA32_TSC: the time-stamp counter as an MSR (SDM Vol. 3B §18.17),
/// shared with the monitor (VMX does not switch it).
pub const IA32_TSC: u32 = 0x10;

/// How far [`write_tsc`] moves the time-stamp counter: about five minutes
/// at 3.5 GHz, far beyond any two instructions' worth.
pub const TSC_JUMP: u64 = 1 << 40;

/// Gadget: moves the time-stamp counter [`TSC_JUMP`] ticks ahead through
/// IA32_TSC, reads how far RDTSC moved, and moves it back by the jump
/// (the counter keeps the few ticks in between). Returns the distance
/// RDTSC moved across the write: at least [`TSC_JUMP`] when the write
/// took effect.
pub extern "C" fn write_tsc(_: u64) -> u64 {
    // SAFETY: RDTSC has no side effect (CR4.TSD is clear for the kernel).
    let before = unsafe { core::arch::x86_64::_rdtsc() };
    // SAFETY: only the counter moves, and it is moved back two
    // instructions later; nothing in between reads the time.
    unsafe { wrmsr(IA32_TSC, before.wrapping_add(TSC_JUMP)) };
    // SAFETY: as above.
    let after = unsafe { core::arch::x86_64::_rdtsc() };
    // SAFETY: the counter as it would be without the jump.
    unsafe { wrmsr(IA32_TSC, after.wrapping_sub(TSC_JUMP)) };
    after.wrapping_sub(before)
}

/// IA32_APIC_BASE bit 10 (EXTD): x2APIC mode (with bit 11, EN).
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// The x2APIC's ID register (SDM Vol. 3A §11.12.1.2).
pub const X2APIC_ID: u32 = 0x802;
/// The x2APIC's interrupt command register: one 64-bit write sends.
pub const X2APIC_ICR: u32 = 0x830;
/// ICR delivery mode INIT, level assert (SDM Vol. 3A §11.6.1).
pub const ICR_INIT: u64 = 0b101 << 8 | 1 << 14;

/// Gadget: puts the local APIC in x2APIC mode (if CPUID offers it and it
/// is not already: xAPIC → x2APIC is a valid transition, SDM Vol. 3A
/// §11.12.5) and sends this processor an INIT through the x2APIC ICR,
/// physical destination its own x2APIC ID. Returns 1 when the ICR write
/// did not fault, 0 when x2APIC mode is not offered. The APIC stays in
/// x2APIC mode (leaving it needs the APIC disabled first).
pub extern "C" fn x2apic_init(_: u64) -> u64 {
    if core::arch::x86_64::__cpuid(1).ecx & (1 << 21) == 0 {
        return 0;
    }
    let base = rdmsr(IA32_APIC_BASE);
    if base & APIC_BASE_EXTD == 0 {
        // SAFETY: the same base and enable bit, EXTD added: the
        // processor's own valid transition; nothing in the demo kernel
        // uses the xAPIC page after it.
        unsafe { wrmsr(IA32_APIC_BASE, base | APIC_BASE_EXTD) };
    }
    let id = rdmsr(X2APIC_ID);
    // SAFETY: an INIT to this processor: okernel refuses it (#GP); the
    // suite runs it only under the monitor (bare, it resets the CPU).
    unsafe { wrmsr(X2APIC_ICR, id << 32 | ICR_INIT) };
    1
}

/// System Control Port A: bit 1 enables A20, bit 0 resets the machine.
pub const PORT_A20: u16 = 0x92;

/// The A20 gadgets' body: reads port 0x92, writes it without A20 by
/// `$write` (AL holds the value, DX the port), reads it back and turns
/// A20 on again with a plain OUT, with no memory access between the write
/// and the restore (every address this kernel uses between the two — its
/// text and page tables — has bit 20 clear, so they survive the
/// masking). Evaluates to the value read back: bit 1 clear when A20
/// really went off.
macro_rules! a20_gadget {
    ($($write:literal),+) => {{
        let back: u32;
        // SAFETY: port accesses in registers; A20 is on again (the value
        // read before, with bit 1 and without bit 0) before the next
        // memory access; under okernel the port is emulated or the
        // instruction refused, and nothing changes. RSI (OUTSB's source)
        // is declared clobbered.
        unsafe {
            core::arch::asm!(
                "in al, dx",
                "mov cl, al",
                "and al, 0xfc",
                $($write,)+
                "in al, dx",
                "mov ah, al",
                "mov al, cl",
                "or al, 2",
                "and al, 0xfe",
                "out dx, al",
                "mov al, ah",
                in("dx") PORT_A20,
                out("eax") back,
                out("ecx") _,
                out("rsi") _,
            );
        }
        u64::from(back & 0xff)
    }};
}

/// Gadget: turns A20 off through port 0x92 ([`a20_gadget`]) and returns
/// the value read back.
pub extern "C" fn a20_off(_: u64) -> u64 {
    a20_gadget!("out dx, al")
}

/// Gadget: [`a20_off`] with a string instruction: OUTSB writes the
/// value from a byte on the stack (read before A20 goes off). Under
/// okernel OUTSB faults (#GP: string I/O is refused to every port) and
/// nothing changes.
pub extern "C" fn a20_off_outsb(_: u64) -> u64 {
    a20_gadget!("push rax", "mov rsi, rsp", "outsb", "pop rax")
}

/// Gadget: writes byte `arg >> 16` to port `arg & 0xffff` and returns
/// 1: reached only if the write did not reset the machine.
pub extern "C" fn outb_reset(arg: u64) -> u64 {
    let (port, value) = (arg as u16, (arg >> 16) as u8);
    // SAFETY: used only for the machine's reset commands (0xCF9 RST_CPU,
    // the keyboard controller's pulse-reset): under okernel they are
    // dropped; without it the machine would reset, so the suite runs
    // them only under the monitor.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value,
                         options(nostack, nomem, preserves_flags));
    }
    1
}

/// Drops the TLB entry of `va` (after a page-table write).
pub fn invlpg(va: u64) {
    x86_64::instructions::tlb::flush(VirtAddr::new_truncate(va));
}

/// The value [`write_msr`] writes.
pub static MSR_VALUE: AtomicU64 = AtomicU64::new(0);

/// Gadget: writes [`MSR_VALUE`] to MSR `msr`, reads it back, restores it.
/// Returns the value read back.
pub extern "C" fn write_msr(msr: u64) -> u64 {
    let msr = msr as u32;
    let before = rdmsr(msr);
    // SAFETY: the attack suite picks a canonical address of kernel text
    // for LSTAR/SYSENTER_EIP, for IA32_APIC_BASE the current flags with a
    // page the kernel never touches (monitor memory), for
    // IA32_MTRR_DEF_TYPE its value with the default type uncacheable
    // (slower, not wrong); no system call, SYSENTER or access
    // to either page runs before the original value is written back two
    // instructions later.
    unsafe { wrmsr(msr, MSR_VALUE.load(Ordering::SeqCst)) };
    let after = rdmsr(msr);
    // SAFETY: the value the MSR held before.
    unsafe { wrmsr(msr, before) };
    after
}

/// Gadget: clears CR0 bits `bits`, reads CR0 back, restores it. Returns
/// the value read back.
pub extern "C" fn clear_cr0(bits: u64) -> u64 {
    let before = Cr0::read_raw();
    // SAFETY: only CR0.WP is cleared by the suite: the kernel then writes
    // read-only pages too, for two instructions, and writes nothing.
    unsafe { Cr0::write_raw(before & !bits) };
    let after = Cr0::read_raw();
    // SAFETY: the value CR0 held before.
    unsafe { Cr0::write_raw(before) };
    after
}

/// Gadget: clears CR4 bits `bits`, reads CR4 back, restores it. Returns
/// the value read back.
pub extern "C" fn clear_cr4(bits: u64) -> u64 {
    let before = Cr4::read_raw();
    // SAFETY: SMEP/SMAP off only relaxes checks, for two instructions.
    unsafe { Cr4::write_raw(before & !bits) };
    let after = Cr4::read_raw();
    // SAFETY: the value CR4 held before.
    unsafe { Cr4::write_raw(before) };
    after
}

/// Gadget: loads an IDT at `fake` (a full 256-gate copy of the real one),
/// reads IDTR back, reloads the real IDT. Returns the base read back.
pub extern "C" fn lidt_fake(fake: u64) -> u64 {
    let real = sidt();
    let fake = DescriptorTablePointer {
        limit: 256 * 16 - 1,
        base: VirtAddr::new_truncate(fake),
    };
    // SAFETY: `fake` is a copy of the real IDT (same gates); no exception
    // is expected before the real one is back.
    unsafe { lidt(&fake) };
    let after = sidt().base.as_u64();
    // SAFETY: the IDTR the kernel loaded at boot.
    unsafe { lidt(&real) };
    after
}

core::arch::global_asm!(
    r#"
    .section .text.guest_stack_fault, "ax"
    .global guest_stack_fault
guest_stack_fault:
    mov rsp, rdi
    ud2

    .section .text.guest_victim, "ax"
    .balign 16
    .global guest_victim
guest_victim:
    mov eax, 1
    ret
    .skip 10, 0xcc
"#
);

unsafe extern "C" {
    /// A function of kernel text the text attacks patch: returns 1.
    pub fn guest_victim() -> u64;
    /// Loads RSP from its argument and raises #UD: the processor pushes
    /// the exception frame on that stack (a probe target; it never
    /// returns, the probe's landing pad restores the stack).
    pub fn guest_stack_fault(rsp: u64) -> u64;
}

/// What [`guest_victim`] returns when unpatched.
pub const VICTIM_RESULT: u64 = 1;
/// The 8 bytes the attacks write over [`guest_victim`]: `mov eax, 0xbad;
/// ret; int3; int3`.
pub const VICTIM_PATCH: u64 = u64::from_le_bytes([0xb8, 0xad, 0x0b, 0, 0, 0xc3, 0xcc, 0xcc]);
/// What the patched [`guest_victim`] returns.
pub const VICTIM_PATCHED_RESULT: u64 = 0xbad;
/// Code the attacks put in a data page: `mov eax, 0x1234; ret`.
pub const DATA_CODE: [u8; 6] = [0xb8, 0x34, 0x12, 0, 0, 0xc3];
/// What [`DATA_CODE`] returns.
pub const DATA_CODE_RESULT: u64 = 0x1234;

/// Calls [`guest_victim`] (a probe target).
pub extern "C" fn call_victim(_: u64) -> u64 {
    // SAFETY: a plain function of kernel text, patched or not: either
    // body returns a value in RAX and touches nothing else.
    unsafe { guest_victim() }
}
