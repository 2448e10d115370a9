//! Descriptor-table registers after `LockDescriptorTables` (under
//! okernel; bare nothing is locked): SGDT, SIDT, SLDT and STR then exit
//! and okernel emulates them (`okernel/src/exit/descriptor.rs`: the
//! operand decoded from the VM-exit instruction information, SDM Vol. 3C
//! §28.2.5, and stored through the guest's page tables), so every store
//! must look as the processor's own: the values, SIB and RIP-relative
//! operands, a single step after it, and its faults. A load (LIDT) is
//! refused under okernel by design (invariant 4).

use super::{DB_NEXT, Seen, at, run};
use crate::paging::UNMAPPED;
use crate::probes::*;
use crate::report::Checks;
use crate::trap::{probe, table_addrs};
use okernel_abi::boot::EntryMode;
use okernel_abi::hypercall::Call;

unsafe extern "C" {
    static conf_dt_buf: [u8; 16];
}

/// Runs the checks; under okernel the tables are locked first (a line
/// only if that is refused: then nothing below would exit).
pub fn run_all(c: &mut Checks, mode: EntryMode) {
    if mode == EntryMode::NonRoot {
        let status: u64;
        // SAFETY: VMCALL in non-root mode exits to okernel, which answers
        // in RAX (okernel_abi::hypercall) and changes nothing else here.
        unsafe {
            core::arch::asm!("vmcall", inout("rax") Call::LockDescriptorTables.raw() => status,
                in("rdi") 0, in("rsi") 0, in("rdx") 0, in("rcx") 0, options(nostack))
        };
        if status != 0 {
            c.line(
                "descriptor-table-lock",
                false,
                format_args!("refused: status {status}"),
            );
        }
    }
    locked_msr(c, mode);
    super::paging::umip_sgdt_ring3(c, "umip-sgdt-ring3-after-lock");
    let (gdt, gdt_limit, idt, tss) = table_addrs();
    let mut buf = [0u8; 16];
    let at_buf = buf.as_mut_ptr() as u64;
    for (name, d, want) in [
        ("sgdt", &conf_sgdt, (gdt_limit, gdt)),
        ("sidt", &conf_sidt, (0xfff, idt)),
        ("sgdt-sib", &conf_sgdt_sib, (gdt_limit, gdt)),
    ] {
        clear(at_buf);
        let r = probe(d.entry(), at_buf);
        // SAFETY: `buf` is a local the probe wrote through its address;
        // read it back by volatile reads so the compiler does not assume
        // it still holds zeroes.
        let got = unsafe { pseudo_descriptor(at_buf as *const u8) };
        stored(c, name, &r, d, got, want);
    }
    let d = &conf_sgdt_rip;
    let r = probe(d.entry(), 0);
    // SAFETY: `conf_dt_buf` is 16 bytes of .data that only the probe writes.
    let got = unsafe { pseudo_descriptor((&raw const conf_dt_buf).cast()) };
    stored(c, "sgdt-rip-relative", &r, d, got, (gdt_limit, gdt));
    let _ = run(c, "single-step-sidt", &conf_tf_sidt, at_buf, Some(DB_NEXT));
    let _ = run(c, "sgdt-not-present", &conf_sgdt, UNMAPPED, Some(at(14, 2)));
    let _ = run(
        c,
        "sgdt-non-canonical",
        &conf_sgdt,
        0x8000_0000_0000,
        Some(at(13, 0)),
    );
    let r = probe(conf_str.entry(), 0);
    let seen = Seen {
        result: &r,
        at: conf_str.at,
        next: conf_str.next,
    };
    c.line(
        "str",
        r == Ok(u64::from(tss)),
        format_args!("{}", ValueOr(&r, seen)),
    );
    clear(at_buf);
    let r = probe(conf_sldt.entry(), at_buf).map(|_| {
        // SAFETY: as above: the probe stored two bytes at `at_buf`.
        u64::from(unsafe { core::ptr::read_volatile(at_buf as *const u16) })
    });
    let seen = Seen {
        result: &r,
        at: conf_sldt.at,
        next: conf_sldt.next,
    };
    c.line("sldt", r == Ok(0), format_args!("{}", ValueOr(&r, seen)));
    // LIDT of the IDT already loaded: bare a no-op; under okernel after the
    // lock #GP(0) (by design).
    let _ = probe(conf_sidt.entry(), at_buf);
    let r = probe(conf_lidt.entry(), at_buf);
    let want = if mode == EntryMode::NonRoot {
        Some(at(13, 0))
    } else {
        None
    };
    super::report(c, "lidt-same-value", &r, want, conf_lidt.at, conf_lidt.next);
}

/// Zeroes the 16-byte buffer at `at` (written by probes through its
/// address only).
fn clear(at: u64) {
    for i in 0..16 {
        // SAFETY: `at` is the address of the 16-byte local buffer of
        // `run_all`, alive for the whole check.
        unsafe { core::ptr::write_volatile((at as *mut u8).add(i), 0) };
    }
}

/// The 10-byte pseudo-descriptor at `p`: (limit, base).
///
/// # Safety
///
/// `p` must point at 10 readable bytes.
unsafe fn pseudo_descriptor(p: *const u8) -> (u16, u64) {
    let mut b = [0u8; 10];
    for (i, x) in b.iter_mut().enumerate() {
        // SAFETY: forwarded: 10 readable bytes.
        *x = unsafe { core::ptr::read_volatile(p.add(i)) };
    }
    (
        u16::from_le_bytes([b[0], b[1]]),
        u64::from_le_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]),
    )
}

fn stored(
    c: &mut Checks,
    name: &str,
    r: &Result<u64, crate::trap::Fault>,
    d: &Desc,
    got: (u16, u64),
    want: (u16, u64),
) {
    match r {
        Ok(_) => c.line(
            name,
            got == want,
            format_args!(
                "limit=0x{:x} base={}",
                got.0,
                if got.1 == want.1 {
                    "the table's"
                } else {
                    "OTHER"
                }
            ),
        ),
        Err(_) => c.line(
            name,
            false,
            format_args!(
                "{}",
                Seen {
                    result: r,
                    at: d.at,
                    next: d.next
                }
            ),
        ),
    }
}

/// A probe's value in hex, or its fault.
struct ValueOr<'a>(&'a Result<u64, crate::trap::Fault>, Seen<'a>);

impl core::fmt::Display for ValueOr<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Ok(v) => write!(f, "0x{v:x}"),
            Err(_) => write!(f, "{}", self.1),
        }
    }
}

/// IA32_LSTAR.
const IA32_LSTAR: u32 = 0xc000_0082;

/// A WRMSR of a locked MSR's own value: under okernel (`LockMsr`, which
/// the kernel calls under okernel only) the monitor skips it — nothing
/// would change — as bare hardware completes it: no fault, the value
/// unchanged (`docs/vmx-core.md`, WRMSR). A different value is refused by
/// design and not compared.
fn locked_msr(c: &mut Checks, mode: EntryMode) {
    // SAFETY: LSTAR exists on every 64-bit processor and this kernel makes
    // no SYSCALL.
    unsafe { crate::cpu::wrmsr(IA32_LSTAR, 0) };
    if mode == EntryMode::NonRoot {
        let status: u64;
        // SAFETY: VMCALL in non-root mode exits to okernel, which answers
        // in RAX and locks LSTAR at its current value; nothing else here
        // changes.
        unsafe {
            core::arch::asm!("vmcall", inout("rax") Call::LockMsr.raw() => status,
                in("rdi") u64::from(IA32_LSTAR), in("rsi") 0, in("rdx") 0, in("rcx") 0,
                options(nostack))
        };
        if status != 0 {
            c.line("lock-msr", false, format_args!("refused: status {status}"));
        }
    }
    let _ = run(
        c,
        "wrmsr-locked-msr-same-value",
        &conf_wrmsr,
        u64::from(IA32_LSTAR),
        None,
    );
    // SAFETY: as above.
    let now = unsafe { crate::cpu::rdmsr(IA32_LSTAR) };
    c.line(
        "wrmsr-locked-msr-read-back",
        now == 0,
        format_args!("0x{now:x}"),
    );
}
