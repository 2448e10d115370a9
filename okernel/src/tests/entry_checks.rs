//! A model of the checks VM entry makes of the guest-state area (SDM Vol.
//! 3C §27.3.1), for the guests okernel enters: "unrestricted guest" on,
//! never virtual-8086 mode (RFLAGS.VM = 0), "load debug controls" and
//! "load IA32_EFER" on, no VMCS shadowing. [`violations`] names every
//! check a fake VMCS fails, so that a test can run the state a handler
//! wrote through it (the start-up state of a SIPI, `tests/exits_sipi.rs`).

use crate::bits::{CR0_PE, CR0_PG, CR4_PAE, CR4_PCIDE, EFER_LMA, EFER_LME, RFLAGS_IF, RFLAGS_TF};
use crate::hw::fake::{FakeCpu, FakeVmcs};
use crate::msrs;
use crate::vmx::capability::FixedBits;
use crate::vmx::controls::EntryControls;
use crate::vmx::fields::{Control32, Guest16, Guest32, Guest64, GuestNatural};

/// Whether `v` is canonical (48-bit linear addresses).
fn canonical(v: u64) -> bool {
    let top = v >> 47;
    top == 0 || top == 0x1_ffff
}

/// The common checks of a segment's access rights and limit
/// (§27.3.1.2): P, reserved bits 11:8 and 31:17, and G against the limit.
fn rights_and_limit(ar: u32, limit: u32) -> bool {
    let g = ar & (1 << 15) != 0;
    ar & (1 << 7) != 0
        && ar & 0xf00 == 0
        && ar & !0x1_ffff == 0
        && (limit & 0xfff == 0xfff || !g)
        && (limit & 0xfff0_0000 == 0 || g)
}

/// The checks of the guest-state area `vm` fails, by name (empty: VM
/// entry loads it), on processor `cpu` (its VMX fixed bits and
/// IA32_VMX_MISC).
pub fn violations(vm: &FakeVmcs, cpu: &FakeCpu) -> Vec<&'static str> {
    let mut bad = Vec::new();
    let mut check = |ok: bool, what: &'static str| {
        if !ok {
            bad.push(what);
        }
    };
    let msr = |m| cpu.read_msr_for_tests(m);
    let entry = EntryControls::from_bits_retain(vm.get(Control32::EntryControls) as u32);
    let ia32e = entry.contains(EntryControls::IA32E_MODE_GUEST);

    // §27.3.1.1: control registers, debug registers, MSRs. Unrestricted
    // guest exempts CR0.PE and CR0.PG from the fixed bits.
    let cr0 = vm.get(GuestNatural::Cr0);
    let cr4 = vm.get(GuestNatural::Cr4);
    let cr0_fixed = FixedBits {
        fixed0: msr(msrs::IA32_VMX_CR0_FIXED0) & !(CR0_PE | CR0_PG),
        fixed1: msr(msrs::IA32_VMX_CR0_FIXED1),
    };
    let cr4_fixed = FixedBits {
        fixed0: msr(msrs::IA32_VMX_CR4_FIXED0),
        fixed1: msr(msrs::IA32_VMX_CR4_FIXED1),
    };
    check(cr0_fixed.accepts(cr0), "CR0 fixed bits");
    check(cr0 & CR0_PG == 0 || cr0 & CR0_PE != 0, "CR0.PG without PE");
    check(cr4_fixed.accepts(cr4), "CR4 fixed bits");
    check(
        ia32e || cr4 & CR4_PCIDE == 0,
        "CR4.PCIDE outside IA-32e mode",
    );
    check(
        !ia32e || (cr0 & CR0_PG != 0 && cr4 & CR4_PAE != 0),
        "IA-32e mode without PG and PAE",
    );
    check(
        vm.get(GuestNatural::Cr3) >> 52 == 0,
        "CR3 beyond the physical-address width",
    );
    check(vm.get(GuestNatural::Dr7) >> 32 == 0, "DR7 bits 63:32");
    check(
        vm.get(Guest64::Debugctl) & !0xffc3 == 0,
        "IA32_DEBUGCTL reserved bits",
    );
    check(
        canonical(vm.get(GuestNatural::SysenterEsp)),
        "SYSENTER_ESP canonical",
    );
    check(
        canonical(vm.get(GuestNatural::SysenterEip)),
        "SYSENTER_EIP canonical",
    );
    let efer = vm.get(Guest64::Efer);
    check(efer & !0xd01 == 0, "IA32_EFER reserved bits");
    check(
        (efer & EFER_LMA != 0) == ia32e,
        "IA32_EFER.LMA = IA-32e mode guest",
    );
    check(
        cr0 & CR0_PG == 0 || (efer & EFER_LMA != 0) == (efer & EFER_LME != 0),
        "IA32_EFER.LME = LMA with paging",
    );

    // §27.3.1.2: segment registers (unrestricted guest, not virtual-8086).
    let seg = |s, l, a, b| {
        (
            vm.get(s),
            vm.get(l) as u32,
            vm.get(a) as u32,
            vm.get::<GuestNatural>(b),
        )
    };
    let (_, cs_limit, cs_ar, cs_base) = seg(
        Guest16::CsSelector,
        Guest32::CsLimit,
        Guest32::CsAccessRights,
        GuestNatural::CsBase,
    );
    let (_, ss_limit, ss_ar, ss_base) = seg(
        Guest16::SsSelector,
        Guest32::SsLimit,
        Guest32::SsAccessRights,
        GuestNatural::SsBase,
    );
    let (tr_sel, tr_limit, tr_ar, tr_base) = seg(
        Guest16::TrSelector,
        Guest32::TrLimit,
        Guest32::TrAccessRights,
        GuestNatural::TrBase,
    );
    let dpl = |ar: u32| (ar >> 5) & 3;
    let cs_type = cs_ar & 0xf;
    check(cs_ar & (1 << 16) == 0, "CS usable");
    check(matches!(cs_type, 3 | 9 | 11 | 13 | 15), "CS type");
    check(cs_ar & (1 << 4) != 0, "CS.S");
    check(
        match cs_type {
            3 => dpl(cs_ar) == 0,
            9 | 11 => dpl(cs_ar) == dpl(ss_ar),
            _ => dpl(cs_ar) <= dpl(ss_ar),
        },
        "CS.DPL",
    );
    check(rights_and_limit(cs_ar, cs_limit), "CS rights and limit");
    check(
        !ia32e || cs_ar & (1 << 13) == 0 || cs_ar & (1 << 14) == 0,
        "CS.L with CS.D",
    );
    check(cs_base >> 32 == 0, "CS base bits 63:32");
    if ss_ar & (1 << 16) == 0 {
        check(matches!(ss_ar & 0xf, 3 | 7), "SS type");
        check(ss_ar & (1 << 4) != 0, "SS.S");
        check(
            (cs_type != 3 && cr0 & CR0_PE != 0) || dpl(ss_ar) == 0,
            "SS.DPL 0 in real mode",
        );
        check(rights_and_limit(ss_ar, ss_limit), "SS rights and limit");
        check(ss_base >> 32 == 0, "SS base bits 63:32");
    }
    for (name, (_, limit, ar, base), high_base_zero) in [
        (
            "DS",
            seg(
                Guest16::DsSelector,
                Guest32::DsLimit,
                Guest32::DsAccessRights,
                GuestNatural::DsBase,
            ),
            true,
        ),
        (
            "ES",
            seg(
                Guest16::EsSelector,
                Guest32::EsLimit,
                Guest32::EsAccessRights,
                GuestNatural::EsBase,
            ),
            true,
        ),
        (
            "FS",
            seg(
                Guest16::FsSelector,
                Guest32::FsLimit,
                Guest32::FsAccessRights,
                GuestNatural::FsBase,
            ),
            false,
        ),
        (
            "GS",
            seg(
                Guest16::GsSelector,
                Guest32::GsLimit,
                Guest32::GsAccessRights,
                GuestNatural::GsBase,
            ),
            false,
        ),
    ] {
        check(high_base_zero || canonical(base), name);
        if ar & (1 << 16) != 0 {
            continue;
        }
        let ok = ar & 1 != 0
            && (ar & (1 << 3) == 0 || ar & (1 << 1) != 0)
            && ar & (1 << 4) != 0
            && rights_and_limit(ar, limit)
            && (!high_base_zero || base >> 32 == 0);
        check(ok, name);
    }
    check(tr_sel & (1 << 2) == 0, "TR.TI");
    check(canonical(tr_base), "TR base canonical");
    check(
        matches!(tr_ar & 0xf, 11) || (!ia32e && tr_ar & 0xf == 3),
        "TR type: a busy TSS",
    );
    check(tr_ar & (1 << 4) == 0, "TR.S");
    check(tr_ar & (1 << 16) == 0, "TR usable");
    check(rights_and_limit(tr_ar, tr_limit), "TR rights and limit");
    let ldtr_ar = vm.get(Guest32::LdtrAccessRights) as u32;
    if ldtr_ar & (1 << 16) == 0 {
        check(vm.get(Guest16::LdtrSelector) & (1 << 2) == 0, "LDTR.TI");
        check(ldtr_ar & 0x1f == 2, "LDTR type and S");
        check(
            rights_and_limit(ldtr_ar, vm.get(Guest32::LdtrLimit) as u32),
            "LDTR rights and limit",
        );
        check(canonical(vm.get(GuestNatural::LdtrBase)), "LDTR base");
    }

    // §27.3.1.3: descriptor-table registers.
    check(canonical(vm.get(GuestNatural::GdtrBase)), "GDTR base");
    check(canonical(vm.get(GuestNatural::IdtrBase)), "IDTR base");
    check(
        vm.get(Guest32::GdtrLimit) >> 16 == 0,
        "GDTR limit bits 31:16",
    );
    check(
        vm.get(Guest32::IdtrLimit) >> 16 == 0,
        "IDTR limit bits 31:16",
    );

    // §27.3.1.4: RIP and RFLAGS.
    let rip = vm.get(GuestNatural::Rip);
    let rflags = vm.get(GuestNatural::Rflags);
    check(
        (ia32e && cs_ar & (1 << 13) != 0) || rip >> 32 == 0,
        "RIP bits 63:32",
    );
    check(rflags & 0xffff_ffff_ffc0_8028 == 0, "RFLAGS reserved bits");
    check(rflags & 2 != 0, "RFLAGS bit 1");
    check(rflags & (1 << 17) == 0, "RFLAGS.VM");

    // §27.3.1.5: non-register state.
    let activity = vm.get(Guest32::ActivityState);
    let interruptibility = vm.get(Guest32::InterruptibilityState);
    let injecting = vm.get(Control32::EntryInterruptionInfo) & (1 << 31) != 0;
    let misc = msr(msrs::IA32_VMX_MISC);
    check(
        activity == 0 || (activity <= 3 && misc & (1 << (5 + activity)) != 0),
        "activity state supported",
    );
    check(activity != 1 || dpl(ss_ar) == 0, "HLT at CPL 0");
    check(
        activity == 0 || interruptibility & 0b11 == 0,
        "STI/MOV-SS blocking while inactive",
    );
    check(
        activity != 3 || !injecting,
        "event injection into wait-for-SIPI",
    );
    check(
        interruptibility & !0x1f == 0,
        "interruptibility reserved bits",
    );
    check(interruptibility & 0b11 != 0b11, "STI and MOV-SS blocking");
    check(
        rflags & RFLAGS_IF != 0 || interruptibility & 1 == 0,
        "STI blocking with IF clear",
    );
    let pending = vm.get(GuestNatural::PendingDebugExceptions);
    check(
        pending & !0x1_500f == 0,
        "pending debug exceptions reserved bits",
    );
    let bs_needed = (interruptibility & 0b11 != 0 || activity == 1)
        && rflags & RFLAGS_TF != 0
        && vm.get(Guest64::Debugctl) & 2 == 0;
    check(!bs_needed || pending & (1 << 14) != 0, "pending BS with TF");
    check(
        vm.get(Guest64::VmcsLinkPointer) == u64::MAX,
        "VMCS link pointer",
    );
    bad
}
