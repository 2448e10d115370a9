//! Boot-time registration and locking with okernel, as a real kernel would
//! do at its lock point (`protect=on`): regions (text, user text, rodata,
//! descriptor tables, page tables, credentials, the system-call table),
//! CR pins, MSR locks, the descriptor-table lock, the return gate, one
//! context per untrusted task and each container's protected page. Every
//! call's status is reported as a check line (`protect-...`).

use super::{NTASKS, layout, set_context, set_gate, syscall};
use crate::arch::instr::{Reply, hypercall};
use crate::arch::{cpu, user};
use crate::report::Checks;
use guest::tasks::TASKS;
use okernel_abi::hypercall::{Call, Status};
use okernel_abi::policy::{ControlRegister, RegionKind};

unsafe extern "C" {
    static __okernel_text_start: u8;
    static __okernel_text_end: u8;
    static __okernel_user_text_start: u8;
    static __okernel_user_text_end: u8;
    static __okernel_rodata_start: u8;
    static __okernel_rodata_end: u8;
    static __okernel_desc_start: u8;
    static __okernel_desc_end: u8;
    static __okernel_pagetables_start: u8;
    static __okernel_pagetables_end: u8;
}

/// A registered region: name, kind, base, length.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    /// Its name in check lines.
    pub name: &'static str,
    /// What it holds.
    pub kind: RegionKind,
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The regions the kernel registers, from the linker script's bounds.
pub fn regions() -> [Region; 7] {
    let span = |s: *const u8, e: *const u8| (s as u64, e as u64 - s as u64);
    let [(sys_base, sys_len), (cred_base, cred_len)] = syscall::tables();
    let region = |name, kind, (base, len)| Region {
        name,
        kind,
        base,
        len,
    };
    // SAFETY (every `&raw const` below): only the addresses of the
    // linker-script symbols are taken; nothing is read.
    [
        region(
            "text",
            RegionKind::Text,
            span(
                &raw const __okernel_text_start,
                &raw const __okernel_text_end,
            ),
        ),
        region(
            "user-text",
            RegionKind::Text,
            span(
                &raw const __okernel_user_text_start,
                &raw const __okernel_user_text_end,
            ),
        ),
        region(
            "rodata",
            RegionKind::Rodata,
            span(
                &raw const __okernel_rodata_start,
                &raw const __okernel_rodata_end,
            ),
        ),
        region(
            "descriptor-tables",
            RegionKind::DescriptorTable,
            span(
                &raw const __okernel_desc_start,
                &raw const __okernel_desc_end,
            ),
        ),
        region(
            "page-tables",
            RegionKind::PageTable,
            span(
                &raw const __okernel_pagetables_start,
                &raw const __okernel_pagetables_end,
            ),
        ),
        region(
            "credentials",
            RegionKind::Credentials,
            (cred_base, cred_len),
        ),
        region(
            "syscall-table",
            RegionKind::DispatchTable,
            (sys_base, sys_len),
        ),
    ]
}

fn invariant(kind: RegionKind) -> u8 {
    match kind {
        RegionKind::Text => 2,
        RegionKind::PageTable => 7,
        _ => 3,
    }
}

fn report(
    checks: &mut Checks,
    name: &str,
    inv: u8,
    what: core::fmt::Arguments<'_>,
    r: Reply,
) -> Option<u64> {
    let ok = r.status == Ok(Status::Success);
    let status = match r.status {
        Ok(s) => s.name(),
        Err(_) => "undefined status",
    };
    checks.check(
        name,
        inv,
        ok,
        format_args!("{what}: {status} (RDI out {:#x})", r.value0),
    );
    ok.then_some(r.value0)
}

/// What registration left for the rest of the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Registered {
    /// The text region's id (for the re-lock attack).
    pub text_id: Option<u64>,
}

/// Registers and locks everything; reports each call.
pub fn register_and_lock(checks: &mut Checks, cr4_bits: u64) -> Registered {
    let mut reg = Registered::default();
    let mut name = crate::report::Buf::new();
    for r in regions() {
        name.set(format_args!("protect-register-{}", r.name));
        let id = report(
            checks,
            name.as_str(),
            invariant(r.kind),
            format_args!("{} {:#x}+{:#x}", r.kind.name(), r.base, r.len),
            hypercall(Call::RegisterRegion, [r.base, r.len, r.kind as u64, 0]),
        );
        let Some(id) = id else { continue };
        name.set(format_args!("protect-lock-{}", r.name));
        let locked = report(
            checks,
            name.as_str(),
            invariant(r.kind),
            format_args!("region {id}"),
            hypercall(Call::LockRegion, [id, 0, 0, 0]),
        );
        if r.name == "text" && locked.is_some() {
            reg.text_id = Some(id);
        }
    }
    let cr0 = cpu::CR0_PE | cpu::CR0_WP | cpu::CR0_PG;
    let pins = [
        ("protect-pin-cr0", ControlRegister::Cr0, cr0),
        ("protect-pin-cr4", ControlRegister::Cr4, cr4_bits),
    ];
    for (check, cr, bits) in pins {
        if bits != 0 {
            report(
                checks,
                check,
                4,
                format_args!("bits {bits:#x}"),
                hypercall(Call::PinCr, [cr as u64, bits, 0, 0]),
            );
        }
    }
    let msrs = [
        ("lstar", cpu::IA32_LSTAR),
        ("star", cpu::IA32_STAR),
        ("sfmask", cpu::IA32_FMASK),
        ("sysenter-cs", cpu::IA32_SYSENTER_CS),
        ("sysenter-esp", cpu::IA32_SYSENTER_ESP),
        ("sysenter-eip", cpu::IA32_SYSENTER_EIP),
        ("efer", cpu::IA32_EFER),
    ];
    for (msr_name, msr) in msrs {
        name.set(format_args!("protect-lock-msr-{msr_name}"));
        report(
            checks,
            name.as_str(),
            5,
            format_args!("MSR {msr:#x}"),
            hypercall(Call::LockMsr, [u64::from(msr), 0, 0, 0]),
        );
    }
    report(
        checks,
        "protect-lock-descriptor-tables",
        4,
        format_args!("LIDT/LGDT/LLDT/LTR"),
        hypercall(Call::LockDescriptorTables, [0; 4]),
    );
    // The gate starts on its own stack and the kernel's page tables
    // (locked above), whatever the caller left (ABI 1.4).
    let gate = user::guest_trusted_gate as *const () as u64;
    let cr3 = layout().spaces.kernel_root;
    if let Some(id) = report(
        checks,
        "protect-register-gate",
        9,
        format_args!(
            "gate {gate:#x}, stack {:#x}, CR3 {cr3:#x}",
            user::gate_stack_top()
        ),
        hypercall(Call::RegisterGate, [gate, user::gate_stack_top(), cr3, 0]),
    ) {
        set_gate(id);
    }
    let l = layout();
    for (t, spec) in TASKS.iter().enumerate().take(NTASKS) {
        if spec.trusted {
            continue;
        }
        name.set(format_args!("protect-create-context-{}", spec.name));
        let Some(ctx) = report(
            checks,
            name.as_str(),
            6,
            format_args!("task {t}"),
            hypercall(Call::CreateContext, [0; 4]),
        ) else {
            continue;
        };
        set_context(t, ctx);
        let secret = l.frames[t].secret;
        name.set(format_args!("protect-protected-page-{}", spec.name));
        report(
            checks,
            name.as_str(),
            6,
            format_args!("context {ctx} page {secret:#x}"),
            hypercall(Call::AllocProtectedPage, [ctx, secret, 0, 0]),
        );
    }
    reg
}
