//! The system-call path: the MSRs that route `SYSCALL` to the kernel, the
//! system-call table (a page of its own: a `DispatchTable` region), the
//! credential table (a page of its own: a `Credentials` region) and the
//! handlers — among them the vulnerability-emulation call that hands an
//! untrusted task an arbitrary kernel read, write and call, as
//! linux-okernel's test module did.

use super::{Pages, layout, mode};
use crate::arch::instr::{self, hypercall};
use crate::arch::traps::{Fault, probe};
use crate::arch::{cpu, tables::Selectors, user};
use core::sync::atomic::{AtomicU64, Ordering};
use guest::attack::Mode;
use guest::layout::{ALIAS_SLOTS, alias_va};
use guest::paging::{ACCESSED, DIRTY, PRESENT, WRITABLE};
use guest::tasks::{Cred, TASKS, sys, vuln};
use okernel_abi::hypercall::{Call, Status};

/// A system-call handler: RDI, RSI, RDX in, RAX out.
pub type Handler = extern "C" fn(u64, u64, u64) -> u64;

/// The error bit of a system call's result (the low bits say which).
pub const SYS_ERR: u64 = 1 << 63;

#[unsafe(link_section = ".okernel.syscalls")]
static SYSCALLS: Pages<[Handler; sys::COUNT]> =
    Pages::new([sys_done, sys_getuid, sys_vuln, sys_map_own]);

#[unsafe(link_section = ".okernel.creds")]
static CREDS: Pages<[Cred; TASKS.len()]> =
    Pages::new([TASKS[0].cred, TASKS[1].cred, TASKS[2].cred]);

/// SFMASK: IF, TF, DF, AC, NT and IOPL clear on entry (as Linux).
const SFMASK: u64 = 0x4_7700;

/// The address of table entry `nr`.
pub fn syscall_entry(nr: u64) -> u64 {
    SYSCALLS.addr() + 8 * nr
}

/// The address of task `task`'s credentials.
pub fn cred_addr(task: usize) -> u64 {
    CREDS.addr() + (task * core::mem::size_of::<Cred>()) as u64
}

/// The system-call table and the credential table as `(base, length)`.
pub fn tables() -> [(u64, u64); 2] {
    [(SYSCALLS.addr(), 4096), (CREDS.addr(), 4096)]
}

/// Points SYSCALL at the kernel and SYSENTER at a stub that never runs.
pub fn init(sel: Selectors) {
    // SYSRET loads SS from STAR[63:48] + 8 and CS from STAR[63:48] + 16.
    assert_eq!(sel.user_code.0, sel.user_data.0 + 8, "GDT order for SYSRET");
    let star = (u64::from(sel.user_data.0 - 8) << 48) | (u64::from(sel.kernel_code.0) << 32);
    // SAFETY: EFER.SCE enables SYSCALL; STAR's selectors are the GDT's
    // (kernel code at 0x08, user data/code at 0x18/0x20 as SYSRET wants);
    // LSTAR is the entry stub; SYSENTER is never executed by this kernel,
    // its MSRs hold kernel values so that the locks have something to lock.
    unsafe {
        cpu::wrmsr(cpu::IA32_EFER, cpu::rdmsr(cpu::IA32_EFER) | 1);
        cpu::wrmsr(cpu::IA32_STAR, star);
        cpu::wrmsr(
            cpu::IA32_LSTAR,
            user::guest_syscall_entry as *const () as u64,
        );
        cpu::wrmsr(cpu::IA32_FMASK, SFMASK);
        cpu::wrmsr(cpu::IA32_SYSENTER_CS, u64::from(sel.kernel_code.0));
        cpu::wrmsr(cpu::IA32_SYSENTER_ESP, 0);
        cpu::wrmsr(
            cpu::IA32_SYSENTER_EIP,
            cpu::guest_victim as *const () as u64,
        );
    }
}

/// Called by the entry stub: dispatches through the table.
#[unsafe(no_mangle)]
extern "C" fn guest_syscall(nr: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    if nr >= sys::COUNT as u64 {
        return SYS_ERR | Status::UnknownCall.raw();
    }
    // SAFETY: `nr` indexes the table; read volatile, since the attacks
    // overwrite entries behind the compiler's back.
    let handler = unsafe {
        (SYSCALLS.get() as *const Handler)
            .add(nr as usize)
            .read_volatile()
    };
    handler(a0, a1, a2)
}

extern "C" fn sys_done(result: u64, _: u64, _: u64) -> u64 {
    let switch = super::context(super::current()) != 0;
    // SAFETY: a system call of a request started by `kernel::run`.
    unsafe { user::leave_user(result, super::gate(), switch) }
}

extern "C" fn sys_getuid(_: u64, _: u64, _: u64) -> u64 {
    // SAFETY: the current task's entry of the credential table.
    let cred = unsafe { (cred_addr(super::current()) as *const Cred).read_volatile() };
    u64::from(cred.uid)
}

/// A handler the syscall-table attack installs: "you are root".
pub extern "C" fn sys_backdoor(_: u64, _: u64, _: u64) -> u64 {
    0
}

static VULN_VALUE: AtomicU64 = AtomicU64::new(0);
static VULN_RESULT: spin::Mutex<Option<Result<u64, Fault>>> = spin::Mutex::new(None);

extern "C" fn write_value(addr: u64) -> u64 {
    // SAFETY: the vulnerability being emulated: an attacker-chosen kernel
    // write, run under a probe, so a denied write comes back as a fault.
    unsafe { (addr as *mut u64).write_volatile(VULN_VALUE.load(Ordering::SeqCst)) };
    0
}

extern "C" fn sys_vuln(op: u64, addr: u64, value: u64) -> u64 {
    let r = match op {
        vuln::READ => probe(instr::read_u64, addr),
        vuln::WRITE => {
            VULN_VALUE.store(value, Ordering::SeqCst);
            probe(write_value, addr)
        }
        vuln::CALL => {
            // SAFETY: the vulnerability being emulated: control of the
            // kernel's RIP. The address is the attacker's; the call runs
            // under a probe, so a fault (or a denied fetch) comes back.
            let f: extern "C" fn(u64) -> u64 = unsafe { core::mem::transmute(addr) };
            probe(f, value)
        }
        _ => return SYS_ERR | Status::InvalidArgument.raw(),
    };
    *VULN_RESULT.lock() = Some(r);
    0
}

/// Forgets the last vulnerability-call result.
pub fn clear_vuln_result() {
    *VULN_RESULT.lock() = None;
}

/// The last vulnerability-call result.
pub fn take_vuln_result() -> Option<Result<u64, Fault>> {
    VULN_RESULT.lock().take()
}

/// Writes page-table entry `entry` the way the current mode allows: the
/// validated `UpdatePageTable` call under protection, a plain store
/// otherwise.
pub fn set_pte(entry: u64, value: u64) -> Result<(), Status> {
    if mode() == Mode::Protected {
        let r = hypercall(Call::UpdatePageTable, [entry, value, 0, 0]);
        return match r.status {
            Ok(Status::Success) => Ok(()),
            Ok(s) => Err(s),
            Err(_) => Err(Status::InvalidArgument),
        };
    }
    // SAFETY: `entry` is an entry of the kernel's alias page table, which
    // nothing but this kernel and the attacks use.
    unsafe { (entry as *mut u64).write_volatile(value) };
    Ok(())
}

extern "C" fn sys_map_own(slot: u64, frame: u64, _: u64) -> u64 {
    let l = layout();
    let f = l.frames[super::current()];
    if slot as usize >= ALIAS_SLOTS || ![f.data, f.secret].contains(&frame) {
        return SYS_ERR | Status::InvalidArgument.raw();
    }
    let entry = l.spaces.alias_entry(slot as usize);
    let va = alias_va(slot as usize);
    if let Err(s) = set_pte(entry, frame | PRESENT | WRITABLE | ACCESSED | DIRTY) {
        return SYS_ERR | s.raw();
    }
    cpu::invlpg(va);
    let r = probe(instr::read_u64, va);
    let undo = set_pte(entry, 0);
    cpu::invlpg(va);
    match (r, undo) {
        (Ok(v), Ok(())) => v,
        (Err(f), _) => SYS_ERR | 0x100 | u64::from(f.vector),
        (_, Err(s)) => SYS_ERR | 0x200 | s.raw(),
    }
}
