//! Descriptor-table exits (reasons 46 "access to GDTR or IDTR" and 47
//! "access to LDTR or TR"), which happen only once the guest has locked
//! its descriptor tables (LockDescriptorTables turns on descriptor-table
//! exiting, SDM Vol. 3C §25.6.2 Table 25-7 bit 2; §26.1.3 lists LGDT,
//! LIDT, LLDT, LTR, SGDT, SIDT, SLDT and STR as exiting with it).
//!
//! * Loads (LGDT, LIDT, LLDT, LTR) are **refused** (invariant 4): an audit
//!   record (`descriptor-table`, `gpa` = the exit reason, `qual` = the
//!   instruction information) and #GP(0) at the instruction.
//! * Stores (SGDT, SIDT, SLDT, STR) are **emulated**, since the control
//!   makes them exit too: the value comes from the VMCS guest state; the
//!   memory operand is decoded from the VM-exit instruction information
//!   (§28.2.5, Tables 28-10 and 28-11) and the displacement in the exit
//!   qualification (§28.2.1; for RIP-relative operands the processor
//!   reports the base invalid and the displacement already added to the
//!   next RIP); the address is translated through the guest's page tables
//!   (`policy::guest_paging`) and written through the current EPT view
//!   ([`super::linear_store`], the store of the deliver module's frame
//!   too);
//!   in 64-bit mode after linear-address masking where the guest's CR3 or
//!   CR4 enables it ([`lam_masked`]), as for any data access.
//!   SGDT/SIDT store 10 bytes in 64-bit mode, 6 outside it; SLDT/STR
//!   store 2 bytes to memory, or the zero-extended selector to a register.
//!   At CPL > 0 with CR4.UMIP set the store is #GP(0), as on the CPU.
//!   A store the guest's page tables do not allow (not present, a
//!   reserved bit set in an entry, or not writable for the access) gets
//!   the #PF the processor would raise (Vol. 3A §4.7: error code W, U for
//!   CPL 3, P when a present entry refused the write, RSVD with P for a
//!   reserved bit; CR2 = the faulting linear address), a non-canonical
//!   address #GP(0). The A flag of each entry of the walk and the D flag
//!   of its leaf are set as the processor sets them (§4.8), through the
//!   view like the bytes. A store the EPT view does not allow — to the
//!   bytes' page, or to a paging entry whose flag it sets (a page table
//!   locked read-only) — is denied like an EPT violation (audited, #GP),
//!   the processor's own write's fate; nothing is written. Not modelled:
//!   SMAP (a supervisor store to a user page with CR4.SMAP and RFLAGS.AC
//!   clear) and protection keys; such a store is performed.

use super::linear_store::{Refusal, Writer};
use crate::bits::{CR3_LAM_U48, CR3_LAM_U57, CR4_LA57, CR4_LAM_SUP, CR4_UMIP};
use crate::exit::cr::visible_cr4;
use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::policy::audit::AuditKind;
use crate::policy::guest_paging::PagingState;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::event::Exception;
use crate::vmx::exit_reason::ExitReason;
use crate::vmx::fields::{Guest16, Guest32, GuestNatural, ReadOnly32, ReadOnlyNatural};
use crate::vmx::regs::Gpr;

/// The instruction an exit of reason 46 or 47 is for (instruction
/// information bits 29:28).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction {
    /// SGDT or SLDT.
    StoreGdtOrLdt,
    /// SIDT or STR.
    StoreIdtOrTr,
    /// LGDT or LLDT.
    LoadGdtOrLdt,
    /// LIDT or LTR.
    LoadIdtOrTr,
}

impl Instruction {
    /// Decodes bits 29:28.
    pub const fn decode(info: u32) -> Self {
        match (info >> 28) & 3 {
            0 => Instruction::StoreGdtOrLdt,
            1 => Instruction::StoreIdtOrTr,
            2 => Instruction::LoadGdtOrLdt,
            _ => Instruction::LoadIdtOrTr,
        }
    }

    /// Whether it loads a register (refused after the lock).
    pub const fn is_load(self) -> bool {
        matches!(self, Instruction::LoadGdtOrLdt | Instruction::LoadIdtOrTr)
    }
}

/// Handles exit `reason` (46 or 47).
pub fn handle<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    reason: ExitReason,
) -> Result<ExitAction, ExitError> {
    let info = vcpu.vmcs.read(ReadOnly32::ExitInstructionInfo)?;
    let instruction = Instruction::decode(info);
    let cpl = vcpu.cpl()?;
    if instruction.is_load() {
        if cpl != 0 {
            return vcpu.inject(Exception::GeneralProtection, 0);
        }
        return vcpu.deny_write(AuditKind::DescriptorTable, reason as u64, None, info.into());
    }
    if cpl != 0 && visible_cr4(vcpu)? & CR4_UMIP != 0 {
        return vcpu.inject(Exception::GeneralProtection, 0);
    }
    let wide = vcpu.in_64bit_mode()?;
    let gdtr_idtr = reason == ExitReason::GdtrIdtrAccess;
    if !gdtr_idtr && info & (1 << 10) != 0 {
        // SLDT/STR to a register: the selector, zero-extended.
        let selector = selector(vcpu, instruction)?;
        let reg = Gpr::from_index(((info >> 3) & 0xf) as u8);
        vcpu.set_gpr(reg, selector.into())?;
        return vcpu.advance_rip();
    }
    let mut bytes = [0u8; 10];
    let len = if gdtr_idtr {
        let (limit, base) = match instruction {
            Instruction::StoreGdtOrLdt => (
                vcpu.vmcs.read(Guest32::GdtrLimit)?,
                vcpu.vmcs.read(GuestNatural::GdtrBase)?,
            ),
            _ => (
                vcpu.vmcs.read(Guest32::IdtrLimit)?,
                vcpu.vmcs.read(GuestNatural::IdtrBase)?,
            ),
        };
        bytes[..2].copy_from_slice(&(limit as u16).to_le_bytes());
        bytes[2..].copy_from_slice(&base.to_le_bytes());
        if wide { 10 } else { 6 }
    } else {
        bytes[..2].copy_from_slice(&selector(vcpu, instruction)?.to_le_bytes());
        2
    };
    let linear = operand_address(vcpu, info, wide)?;
    store(vcpu, linear, &bytes[..len], cpl)
}

/// The LDTR or TR selector.
fn selector<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &Vcpu<V, C, P, M>,
    instruction: Instruction,
) -> Result<u16, ExitError> {
    Ok(match instruction {
        Instruction::StoreGdtOrLdt => vcpu.vmcs.read(Guest16::LdtrSelector)?,
        _ => vcpu.vmcs.read(Guest16::TrSelector)?,
    })
}

/// The linear address of the memory operand: segment base + (base +
/// index × scale + displacement), truncated to the address size (SDM
/// Vol. 3C §28.2.5; Vol. 1 §3.7.5). In 64-bit mode only FS and GS have a
/// base; segment limits are not checked.
pub fn operand_address<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &Vcpu<V, C, P, M>,
    info: u32,
    wide: bool,
) -> Result<u64, ExitError> {
    let disp = vcpu.vmcs.read(ReadOnlyNatural::ExitQualification)?;
    let scale = info & 3;
    let mut offset = disp;
    if info & (1 << 22) == 0 {
        let index = vcpu.gpr(Gpr::from_index(((info >> 18) & 0xf) as u8))?;
        offset = offset.wrapping_add(index << scale);
    }
    if info & (1 << 27) == 0 {
        let base = vcpu.gpr(Gpr::from_index(((info >> 23) & 0xf) as u8))?;
        offset = offset.wrapping_add(base);
    }
    offset &= match (info >> 7) & 7 {
        0 => 0xffff,
        1 => 0xffff_ffff,
        _ => u64::MAX,
    };
    let segment = (info >> 15) & 7;
    let seg_base = match (segment, wide) {
        (4, _) => vcpu.vmcs.read(GuestNatural::FsBase)?,
        (5, _) => vcpu.vmcs.read(GuestNatural::GsBase)?,
        (_, true) => 0,
        (0, false) => vcpu.vmcs.read(GuestNatural::EsBase)?,
        (1, false) => vcpu.vmcs.read(GuestNatural::CsBase)?,
        (2, false) => vcpu.vmcs.read(GuestNatural::SsBase)?,
        _ => vcpu.vmcs.read(GuestNatural::DsBase)?,
    };
    let linear = seg_base.wrapping_add(offset);
    if !wide {
        return Ok(linear & 0xffff_ffff);
    }
    Ok(lam_masked(
        linear,
        vcpu.vmcs.read(GuestNatural::Cr3)?,
        vcpu.vmcs.read(GuestNatural::Cr4)?,
    ))
}

/// The linear address a 64-bit-mode data access through pointer `ptr`
/// uses under linear-address masking (SDM Vol. 3A §4.4, "Linear-Address
/// Pre-Processing"; Intel ISE, "Linear Address Masking"): a user pointer
/// (bit 63 clear) with CR3.LAM_U57 or LAM_U48, a supervisor pointer with
/// CR4.LAM_SUP (LAM57 under 5-level paging, LAM48 otherwise) has its
/// metadata bits 62:57 or 62:48 replaced by bit 56 or 47; bit 63 is kept,
/// so the canonicality check that follows (the walk's) fails where bit 63
/// differs — the processor's modified check. Without LAM the pointer is
/// the address.
pub const fn lam_masked(ptr: u64, cr3: u64, cr4: u64) -> u64 {
    let width = if ptr >> 63 == 0 {
        if cr3 & CR3_LAM_U57 != 0 {
            57
        } else if cr3 & CR3_LAM_U48 != 0 {
            48
        } else {
            return ptr;
        }
    } else if cr4 & CR4_LAM_SUP != 0 {
        if cr4 & CR4_LA57 != 0 { 57 } else { 48 }
    } else {
        return ptr;
    };
    let low = ptr & ((1 << width) - 1);
    let metadata = ((1u64 << 63) - 1) & !((1 << width) - 1);
    let extended = if low >> (width - 1) & 1 != 0 {
        metadata
    } else {
        0
    };
    (ptr & (1 << 63)) | extended | low
}

/// Writes `bytes` at guest-linear `linear` as a store at `cpl` would
/// ([`Vcpu::store_linear`], setting the A and D flags the processor
/// would), then completes the instruction; a refused store is the
/// processor's fault for it, or an EPT-violation denial.
fn store<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    linear: u64,
    bytes: &[u8],
    cpl: u8,
) -> Result<ExitAction, ExitError> {
    let paging = PagingState::of(&vcpu.vmcs)?;
    match vcpu.store_linear(paging, linear, bytes, Writer::Instruction { cpl }) {
        Ok(()) => vcpu.advance_rip(),
        Err(Refusal::PageFault { linear, error_code }) => page_fault(vcpu, linear, error_code),
        // Not canonical (or 5-level paging, which the walk does not
        // model); a store of at most 10 bytes has at most two pieces.
        Err(Refusal::Untranslatable | Refusal::Unmodelled) => {
            vcpu.inject(Exception::GeneralProtection, 0)
        }
        // The bytes' page, or a paging entry whose A or D flag the
        // processor would set: its own write would be an EPT violation.
        Err(Refusal::View(gpa)) => vcpu.deny_write(AuditKind::EptViolation, gpa.0, Some(linear), 0),
        Err(Refusal::Failed) => Err(ExitError::Unexpected("guest memory changed during a store")),
    }
}

/// Raises the #PF a store to `linear` would: CR2 loaded first, as the
/// processor does on delivery (SDM Vol. 3A §4.7; VM entry injects the
/// event, it does not load CR2).
fn page_fault<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    linear: u64,
    error_code: u32,
) -> Result<ExitAction, ExitError> {
    vcpu.cpu.write_cr2(linear);
    vcpu.inject(Exception::PageFault, error_code)
}
