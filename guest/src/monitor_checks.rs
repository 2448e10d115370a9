//! The guest proves from inside that it runs in VMX non-root mode under
//! okernel (issue 4): VMX is hidden, the okernel CPUID leaves and the
//! hypercalls answer, VMXON faults, and the monitor's memory can be
//! neither read nor written — while the same probes on the guest's own
//! memory succeed (the controls: a denial is not an artefact of the probe).

use crate::arch::instr::{self, MARKER};
use crate::arch::traps::probe;
use crate::report::Checks;
use okernel_abi::ABI_VERSION;
use okernel_abi::cpuid;
use okernel_abi::hypercall::{Call, Status};

/// IA32_VMX_BASIC: the first VMX capability MSR (SDM Vol. 3D Appendix A.1).
const IA32_VMX_BASIC: u64 = 0x480;
/// A call number no ABI version assigns.
const BOGUS_CALL: u64 = 0xdead_beef;

/// Scratch memory for the control probes.
static mut SCRATCH: u64 = 0;

/// Runs every check; `monitor` is a physical address inside the monitor's
/// memory (from the hand-off memory map).
///
/// `pool` is an address in the monitor's frame pool (VMXON region, VMCS,
/// EPT tables, host stack).
pub fn run(checks: &mut Checks, monitor: Option<u64>, pool: Option<u64>) {
    cpuid_checks(checks);
    hypercall_checks(checks);

    let ud = probe(instr::vmxon, 0);
    checks.check(
        "vmxon-faults-ud",
        12,
        matches!(ud, Err(f) if f.vector == 6),
        format_args!("{ud:?}"),
    );
    let msr = probe(instr::rdmsr, IA32_VMX_BASIC);
    checks.check(
        "vmx-msr-hidden",
        12,
        matches!(msr, Err(f) if f.vector == 13),
        format_args!("{msr:?}"),
    );
    let cr4 = x86_64::registers::control::Cr4::read_raw();
    checks.check(
        "cr4-vmxe-hidden",
        12,
        cr4 & (1 << 13) == 0,
        format_args!("CR4 {cr4:#x}"),
    );

    memory_checks(checks, monitor, pool);
    canonical_boundary(checks);
}

/// RFLAGS.RF.
const RFLAGS_RF: u64 = 1 << 16;

/// CPUID (which exits) in the last two bytes below the canonical
/// boundary: it completes (EBX holds leaf 0x4000_0000's signature), then
/// the guest takes #GP(0) with the non-canonical RIP 2^47 in its frame, as
/// hardware reports it — the monitor delivers that #GP itself, since VM
/// entry cannot load the RIP (`okernel::exit::deliver`) — with RF set in
/// the frame, as for any fault (issue 18). The monitor used to end the
/// run here ("guest RIP ... is not canonical"), then to report the #GP at
/// the CPUID.
fn canonical_boundary(checks: &mut Checks) {
    // mov eax, 0x4000_0000; cpuid
    let at = crate::arch::canonical::map_top(&[0xb8, 0x00, 0x00, 0x00, 0x40, 0x0f, 0xa2]);
    let cpuid = at + 5;
    let next = cpuid + 2;
    let r = probe(crate::arch::ops::call_at, at);
    checks.check(
        "canonical-boundary-gp",
        11,
        matches!(r, Err(f) if f.vector == 13 && f.error_code == 0
            && f.rip == next && f.rflags & RFLAGS_RF != 0),
        format_args!("CPUID at {cpuid:#x}, #GP expected at {next:#x}: {r:x?}"),
    );
}

fn cpuid_checks(checks: &mut Checks) {
    // CPUID exits to the monitor in non-root mode, which answers.
    let leaf1 = core::arch::x86_64::__cpuid(1);
    checks.check(
        "cpuid-vmx-hidden",
        12,
        leaf1.ecx & (1 << 5) == 0,
        format_args!("CPUID.1:ECX {:#x}", leaf1.ecx),
    );
    let sig = core::arch::x86_64::__cpuid(cpuid::LEAF_SIGNATURE);
    checks.check(
        "cpuid-okernel-signature",
        0,
        cpuid::is_signature(sig.ebx, sig.ecx, sig.edx) && sig.eax >= cpuid::LEAF_VERSION,
        format_args!(
            "EAX {:#x} EBX {:#x} ECX {:#x} EDX {:#x}",
            sig.eax, sig.ebx, sig.ecx, sig.edx
        ),
    );
    let ver = core::arch::x86_64::__cpuid(cpuid::LEAF_VERSION);
    checks.check(
        "cpuid-okernel-version",
        0,
        ver.eax == ABI_VERSION.packed(),
        format_args!("EAX {:#x}", ver.eax),
    );
}

fn hypercall_checks(checks: &mut Checks) {
    let v = instr::hypercall(Call::Version, [0; 4]);
    checks.check(
        "hypercall-version",
        0,
        v.status == Ok(Status::Success) && v.value0 == u64::from(ABI_VERSION.packed()),
        format_args!("{v:?}"),
    );
    let n = instr::hypercall(Call::Null, [0; 4]);
    checks.check(
        "hypercall-null",
        0,
        n.status == Ok(Status::Success),
        format_args!("{n:?}"),
    );
    let u = instr::hypercall_raw(BOGUS_CALL, [1, 2, 3, 4]);
    checks.check(
        "hypercall-unknown-refused",
        11,
        u.status == Ok(Status::UnknownCall),
        format_args!("{u:?}"),
    );
    let e = instr::hypercall(Call::Exit, [0x99, 0, 0, 0]);
    checks.check(
        "hypercall-exit-bad-outcome-refused",
        11,
        e.status == Ok(Status::InvalidArgument),
        format_args!("{e:?}"),
    );
}

fn memory_checks(checks: &mut Checks, monitor: Option<u64>, pool: Option<u64>) {
    let scratch = (&raw mut SCRATCH) as u64;
    let w = probe(instr::write_marker, scratch);
    let r = probe(instr::read_u64, scratch);
    checks.check(
        "control-own-memory-read-write",
        0,
        w.is_ok() && r == Ok(MARKER),
        format_args!("write {w:?} read {r:?}"),
    );
    let targets = [
        ("monitor-read-denied", "monitor-write-denied", monitor),
        (
            "monitor-pool-read-denied",
            "monitor-pool-write-denied",
            pool,
        ),
    ];
    for (read_check, write_check, target) in targets {
        let Some(target) = target else {
            checks.check(
                read_check,
                1,
                false,
                format_args!("no such monitor region in the hand-off map"),
            );
            continue;
        };
        let r = probe(instr::read_u64, target);
        checks.check(
            read_check,
            1,
            matches!(r, Err(f) if f.vector == 13),
            format_args!("read {target:#x}: {r:?}"),
        );
        let w = probe(instr::write_marker, target);
        checks.check(
            write_check,
            1,
            matches!(w, Err(f) if f.vector == 13),
            format_args!("write {target:#x}: {w:?}"),
        );
    }
}

/// Negative controls, run only when the loader entered the guest with no
/// monitor (`mode=direct`): the very probes that okernel must deny read and
/// write the monitor's pages successfully here, so "denied" under okernel
/// is the monitor's doing, not an artefact of the probe or the address.
pub fn negative_controls(checks: &mut Checks, monitor: Option<u64>) {
    vmxon_control(checks);
    let Some(target) = monitor else {
        checks.check(
            "monitor-memory-listed",
            1,
            false,
            format_args!("no monitor region in the hand-off map"),
        );
        return;
    };
    let before = probe(instr::read_u64, target);
    checks.check(
        "negative-control-monitor-read-succeeds-without-okernel",
        1,
        before.is_ok(),
        format_args!("read {target:#x}: {before:?}"),
    );
    let w = probe(instr::write_marker, target);
    let after = probe(instr::read_u64, target);
    checks.check(
        "negative-control-monitor-write-succeeds-without-okernel",
        1,
        w.is_ok() && after == Ok(MARKER),
        format_args!("write {target:#x}: {w:?}, read back {after:?}"),
    );
    // Put the loader's byte back (the loader no longer runs, but leave its
    // image as it was).
    if let Ok(original) = before {
        // SAFETY: `target` was just read and written successfully: it is
        // mapped, writable memory with no monitor to protect it.
        unsafe { core::ptr::write_volatile(target as *mut u64, original) };
    }
}

/// A page for the VMXON negative control.
#[repr(C, align(4096))]
struct VmxonRegion([u8; 4096]);

static mut VMXON_REGION: VmxonRegion = VmxonRegion([0; 4096]);

/// IA32_FEATURE_CONTROL and its bits (SDM Vol. 3C §24.7).
const IA32_FEATURE_CONTROL: u32 = 0x3a;
const FEATURE_LOCKED: u64 = 1 << 0;
const FEATURE_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// The negative control of the VMXON attack: with no monitor, on a CPU
/// that has VMX, the guest kernel can enter VMX operation itself — the
/// nesting okernel forbids (invariant 12). Emits no check where the CPU
/// has no VMX (QEMU/TCG), saying so.
fn vmxon_control(checks: &mut Checks) {
    use x86_64::registers::control::{Cr0, Cr4};
    use x86_64::registers::model_specific::Msr;
    if core::arch::x86_64::__cpuid(1).ecx & (1 << 5) == 0 {
        log::info!("no VMXON negative control: this CPU has no VMX");
        return;
    }
    // SAFETY: the guest runs at CPL0 with no monitor (mode=direct) on a CPU
    // with VMX (checked above): these MSRs and control registers exist.
    // The control only adds bits VMX operation needs and restores CR0/CR4
    // afterwards; IA32_FEATURE_CONTROL is written only while unlocked.
    let (cr0, cr4, result) = unsafe {
        let mut fc = Msr::new(IA32_FEATURE_CONTROL);
        let value = fc.read();
        if value & FEATURE_LOCKED == 0 {
            fc.write(value | FEATURE_LOCKED | FEATURE_VMX_OUTSIDE_SMX);
        }
        let basic = Msr::new(IA32_VMX_BASIC as u32).read();
        let region = &raw mut VMXON_REGION;
        // The VMCS revision identifier goes in the region's first dword.
        region.cast::<u32>().write((basic as u32) & 0x7fff_ffff);
        let (cr0, cr4) = (Cr0::read_raw(), Cr4::read_raw());
        let fixed = |value: u64, fixed0: u32, fixed1: u32| {
            (value | Msr::new(fixed0).read()) & Msr::new(fixed1).read()
        };
        Cr0::write_raw(fixed(cr0, 0x486, 0x487));
        Cr4::write_raw(fixed(cr4, 0x488, 0x489));
        let result = probe(instr::vmxon_vmxoff, region as u64);
        (cr0, cr4, result)
    };
    // SAFETY: restores the values read above, outside VMX operation.
    unsafe {
        Cr4::write_raw(cr4);
        Cr0::write_raw(cr0);
    }
    checks.check(
        "negative-control-vmxon-succeeds-without-okernel",
        12,
        result == Ok(1),
        format_args!("VMXON then VMXOFF with no monitor: {result:?}"),
    );
}
