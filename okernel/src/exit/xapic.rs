//! Writes to the local APIC's page in xAPIC mode while the guest can still
//! start processors (issue 17, `docs/smp.md` "Starting processors").
//!
//! Why: the INIT of an OS's INIT-SIPI-SIPI, sent through the xAPIC page,
//! reaches a processor that waits for its SIPI under the monitor in VMX
//! non-root. Architecturally it is blocked there (SDM Vol. 3C §26.2) and
//! strikes as an INIT exit once the SIPI started the processor; Bochs 2.7
//! never clears such an INIT (its VM exit for it does not return to the
//! code that would), so the processor exits for it at every VM entry and
//! never runs the guest: Debian's Linux, in xAPIC mode there, gave up on
//! its second processor. Through the x2APIC's ICR, which exits
//! ([`super::apic`]), the monitor completes such an INIT without sending
//! it; the xAPIC page does not exit. So while a processor waits for its
//! SIPI the page is **write-trapped**: read-only in the trusted context's
//! view (`Env::open_xapic_trap`; reads reach the APIC as before), and each write is an
//! EPT violation the monitor decodes ([`super::mmio_store`]), judges
//! ([`register_write`]) and, if allowed, performs on this processor's
//! APIC from VMX root, where it then advances RIP past the store:
//!
//! | register | outcome |
//! |---|---|
//! | ICR low (0x300), fixed delivery | written: the IPI is sent |
//! | ICR low, INIT to other processors only, from the trusted context | completed, not sent ([`super::apic`]'s rule) |
//! | ICR low, SIPI to other processors only, from the trusted context | written: the processor's SIPI exit starts it ([`super::sipi`]) |
//! | ICR low, any other delivery (lowest priority, SMI, NMI), INIT or SIPI to this processor | #GP + audit `ept-violation` |
//! | local APIC ID (0x20) | #GP + audit `ept-violation` (the monitor tells processors apart by it) |
//! | an LVT entry (0x2F0, 0x320–0x370) with SMI or INIT delivery | #GP + audit `ept-violation` |
//! | any other register (TPR, EOI, LDR, DFR, SVR, ESR, ICR high, LVT, timer) | written |
//! | not at a register's start, or a store [`super::mmio_store`] does not decode, or outside 64-bit mode, or not an instruction's store (a paging-structure entry's A/D flags), or with the APIC no longer in xAPIC mode at the page | #GP + audit `ept-violation` (the record's qualification: the value, or 0 when none was decoded) |
//!
//! The trap is **closed** (`Env::close_xapic_trap`: the page writable again, every
//! processor's cached translation dropped through the policy's
//! generation) once no processor can be started any more: every joined
//! processor was started, or an untrusted context was created (from then
//! on no SIPI starts anything, `Protection::untrusted_created`). After
//! that the page is the guest's as before: what an untrusted context can
//! do through it is in `docs/smp.md` "What is not protected yet".
//!
//! A write that reaches a processor whose view no longer traps the page
//! (it cached the read-only translation before another processor closed
//! the trap, and its exit's catch-up has since dropped it) is simply
//! executed again.

use super::apic::{IcrWriter, Verdict, icr_write};
use super::mmio_store::{self, MAX_LEN, Source};
use crate::bits::{APIC_BASE_ADDRESS, APIC_BASE_EN, APIC_BASE_EXTD};
use crate::hw::{Cpu, Vmcs};
use crate::hypercall::policy::Env;
use crate::memmap::Gpa;
use crate::msrs::IA32_APIC_BASE;
use crate::policy::Policy;
use crate::policy::audit::AuditKind;
use crate::policy::guest_paging::PagingState;
use crate::policy::xapic_trap::PAGE;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::error::VmFail;
use crate::vmx::fields::GuestNatural;
use crate::vmx::regs::Gpr;
use ept::Perms;

/// Local APIC ID (bits 31:24 in xAPIC mode; SDM Vol. 3A §11.4.6).
pub const ID: u64 = 0x20;
/// Interrupt command register, low half: writing it sends the IPI.
pub const ICR_LOW: u64 = 0x300;
/// Interrupt command register, high half: the destination in bits 31:24.
pub const ICR_HIGH: u64 = 0x310;
/// The last register of the page (SDM Vol. 3A Table 11-1).
const LAST: u64 = 0x3f0;
/// The ICR low bits that name the delivery (vector, delivery mode,
/// destination mode, level, trigger mode, shorthand): the x2APIC ICR's
/// low half without its reserved bits.
const ICR_LOW_BITS: u32 = 0x000c_cfff;
/// The xAPIC's physical broadcast destination.
const XAPIC_BROADCAST: u32 = 0xff;
/// LVT delivery mode (bits 10:8): SMI and INIT.
const LVT_SMI: u32 = 0b010;
const LVT_INIT: u32 = 0b101;

/// Judges a 32-bit write of `value` at `offset` of the APIC's page by
/// `writer` (its `own_id` the xAPIC ID, bits 31:24 of register 0x20),
/// with the ICR's high half holding `icr_high`.
pub const fn register_write(offset: u64, value: u32, icr_high: u32, writer: IcrWriter) -> Verdict {
    if !offset.is_multiple_of(16) || offset > LAST {
        return Verdict::Deny;
    }
    match offset {
        ID => Verdict::Deny,
        ICR_LOW => {
            // The x2APIC form: destination in bits 63:32, broadcast all
            // ones.
            let dest = match icr_high >> 24 {
                XAPIC_BROADCAST => u32::MAX,
                d => d,
            };
            let x2 = (value & ICR_LOW_BITS) as u64 | (dest as u64) << 32;
            icr_write(x2, writer)
        }
        0x2f0 | 0x320..=0x370 => match (value >> 8) & 0b111 {
            LVT_SMI | LVT_INIT => Verdict::Deny,
            _ => Verdict::Write,
        },
        _ => Verdict::Write,
    }
}

/// The APIC page's address if IA32_APIC_BASE `base` has the APIC on in
/// xAPIC mode (EN, not EXTD).
pub const fn xapic_page(base: u64) -> Option<u64> {
    if base & APIC_BASE_EN != 0 && base & APIC_BASE_EXTD == 0 {
        Some(base & APIC_BASE_ADDRESS)
    } else {
        None
    }
}

/// Handles a write EPT violation at `gpa` (guest-linear `gva` when
/// valid) if it is the trapped APIC page's; `None`: it is not (the
/// caller denies it).
pub fn handle_write<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    gpa: u64,
    gva: Option<u64>,
    qualification: u64,
) -> Result<Option<ExitAction>, ExitError> {
    let page = gpa & !(PAGE - 1);
    let Some(env) = Env::of(vcpu) else {
        return Ok(None);
    };
    match env.prot.xapic_trap {
        Some(p) if p == page => {}
        Some(_) => return Ok(None),
        None => {
            // Closed since this processor cached the read-only
            // translation: its catch-up dropped it; execute again.
            let now_writable = xapic_page(env.cpu.read_msr(IA32_APIC_BASE)) == Some(page)
                && env
                    .views
                    .translate(env.prot.current, Gpa(gpa))
                    .is_some_and(|t| t.page.attrs.perms.contains(Perms::WRITE));
            return Ok(now_writable.then_some(ExitAction::Resume));
        }
    }
    let trusted = env.prot.current == 0;
    // Still this processor's APIC, in xAPIC mode, at the trapped page:
    // after a switch to x2APIC mode (or disabling the APIC) the page's
    // accesses go to memory, and the monitor's would too.
    let own_page = xapic_page(env.cpu.read_msr(IA32_APIC_BASE)) == Some(page);
    let deny = |vcpu: &mut Vcpu<V, C, P, M>, value: u64| {
        vcpu.deny_write(AuditKind::EptViolation, gpa, gva, value)
            .map(Some)
    };
    // A store of an instruction to the page (not the processor's own
    // write of a paging-structure entry that lies there), in 64-bit mode.
    let translated = qualification & super::patch_step::TRANSLATED_ACCESS
        == super::patch_step::TRANSLATED_ACCESS;
    if !own_page || !translated || !vcpu.in_64bit_mode()? {
        return deny(vcpu, 0);
    }
    let mut bytes = [0u8; MAX_LEN];
    let n = fetch(vcpu, &mut bytes)?;
    let store = match mmio_store::decode(&bytes[..n]) {
        Ok(s) => s,
        Err(_) => return deny(vcpu, 0),
    };
    let value = match store.source {
        Source::Register(r) => vcpu.gpr(Gpr::from_index(r))? as u32,
        Source::Immediate(v) => v,
    };
    let writer = IcrWriter {
        trusted,
        own_id: vcpu.cpu.xapic_read(page + ID) >> 24,
    };
    let icr_high = vcpu.cpu.xapic_read(page + ICR_HIGH);
    match register_write(gpa - page, value, icr_high, writer) {
        Verdict::Write => {
            vcpu.cpu.xapic_write(gpa, value);
            vcpu.advance_rip_by(store.len).map(Some)
        }
        Verdict::Drop => vcpu.advance_rip_by(store.len).map(Some),
        Verdict::Fault | Verdict::Deny => deny(vcpu, value.into()),
    }
}

/// Reads the instruction bytes at RIP (64-bit mode: CS's base is 0) into
/// `buf` as far as they are readable, at most to the end of the second
/// page: the number read.
fn fetch<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &Vcpu<V, C, P, M>,
    buf: &mut [u8; MAX_LEN],
) -> Result<usize, VmFail> {
    let rip = vcpu.vmcs.read(GuestNatural::Rip)?;
    let paging = PagingState::of(&vcpu.vmcs)?;
    let first = ((PAGE - (rip & (PAGE - 1))) as usize).min(MAX_LEN);
    if vcpu.read_linear(paging, rip, &mut buf[..first]).is_none() {
        return Ok(0);
    }
    if first < MAX_LEN
        && vcpu
            .read_linear(paging, rip.wrapping_add(first as u64), &mut buf[first..])
            .is_some()
    {
        return Ok(MAX_LEN);
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: IcrWriter = IcrWriter {
        trusted: true,
        own_id: 0,
    };
    const UNTRUSTED: IcrWriter = IcrWriter {
        trusted: false,
        own_id: 0,
    };
    /// Delivery modes in ICR low.
    const INIT: u32 = 0b101 << 8 | 1 << 14;
    const SIPI: u32 = 0b110 << 8 | 0x9a;
    const NMI: u32 = 0b100 << 8;
    const SMI: u32 = 0b010 << 8;
    const OTHERS: u32 = 0b11 << 18;
    const SELF: u32 = 0b01 << 18;

    #[test]
    fn the_icr_follows_the_x2apic_rules() {
        let to = |id: u32| id << 24;
        for (value, high, writer, want) in [
            (0x41, to(1), UNTRUSTED, Verdict::Write),
            (0x41 | SELF, 0, UNTRUSTED, Verdict::Write),
            (INIT, to(1), ME, Verdict::Drop),
            (INIT | OTHERS, 0, ME, Verdict::Drop),
            // The level de-assert of the same INIT.
            (0b101 << 8 | 1 << 15, to(1), ME, Verdict::Drop),
            (SIPI, to(1), ME, Verdict::Write),
            (SIPI | OTHERS, 0, ME, Verdict::Write),
            (INIT, to(0), ME, Verdict::Deny),
            (INIT, to(0xff), ME, Verdict::Deny),
            (SIPI | SELF, 0, ME, Verdict::Deny),
            (INIT, to(1), UNTRUSTED, Verdict::Deny),
            (SIPI, to(1), UNTRUSTED, Verdict::Deny),
            (NMI, to(1), ME, Verdict::Deny),
            (SMI | OTHERS, 0, ME, Verdict::Deny),
            // Logical destination: which processors is not known.
            (INIT | 1 << 11, to(2), ME, Verdict::Deny),
            // Reserved bits do not change the judgement.
            (INIT | 0xfff0_0000, to(1), ME, Verdict::Drop),
        ] {
            assert_eq!(
                register_write(ICR_LOW, value, high, writer),
                want,
                "ICR {value:#x} high {high:#x} {writer:?}"
            );
        }
    }

    #[test]
    fn other_registers() {
        for (offset, value, want) in [
            (0xb0, 0, Verdict::Write),
            (0x80, 0x20, Verdict::Write),
            (0xf0, 0x1ff, Verdict::Write),
            (ICR_HIGH, 0xff00_0000, Verdict::Write),
            (0x380, 1000, Verdict::Write),
            (ID, 5 << 24, Verdict::Deny),
            // LINT1 as NMI (what an OS programs) and as SMI/INIT.
            (0x360, 0b100 << 8, Verdict::Write),
            (0x360, LVT_SMI << 8, Verdict::Deny),
            (0x350, LVT_INIT << 8, Verdict::Deny),
            (0x2f0, LVT_SMI << 8, Verdict::Deny),
            (0x320, 0x20ef, Verdict::Write),
            // Not a register's start, or past the last register.
            (0x304, 0, Verdict::Deny),
            (0x400, 0, Verdict::Deny),
            (0xffc, 0, Verdict::Deny),
        ] {
            assert_eq!(
                register_write(offset, value, 0, ME),
                want,
                "{offset:#x} {value:#x}"
            );
        }
    }

    #[test]
    fn the_page_in_xapic_mode_only() {
        assert_eq!(xapic_page(0xfee0_0900), Some(0xfee0_0000));
        assert_eq!(xapic_page(0xfee0_0d00), None, "x2APIC mode");
        assert_eq!(xapic_page(0xfee0_0100), None, "disabled");
    }
}
