//! The one event okernel delivers in software (issue 18): the #GP(0) of
//! the instruction fetch past the top of the lower canonical half.
//!
//! An instruction that exits and completes in the last bytes below 2^47
//! leaves RIP at 2^47, which is not canonical; on hardware the next fetch
//! raises #GP(0) and the frame the handler finds holds that non-canonical
//! RIP (SDM Vol. 1 §3.3.7.1; Vol. 3A §6.15 "Interrupt 13"). VM entry cannot
//! load a non-canonical RIP (SDM Vol. 3C §27.3.1.4), so event injection
//! cannot give the guest that frame. The monitor builds it itself, as the
//! processor delivers an exception through a 64-bit IDT gate (SDM Vol. 3A
//! §6.14 "Exception and Interrupt Handling in 64-bit Mode"):
//!
//! 1. the gate: IDT entry 13 (§6.14.1, 16 bytes), present, a 64-bit
//!    interrupt or trap gate (type 14 or 15), its target offset canonical;
//! 2. the target code segment: the gate's selector in the GDT, a present,
//!    accessed, non-conforming 64-bit code segment (L = 1, D = 0) whose DPL
//!    is at most the CPL; the new CPL is that DPL (§6.12.1.1);
//! 3. the stack (§6.14.4, §6.14.5): the gate's IST slot of the TSS when it
//!    names one, else RSPn of the TSS when the privilege level changes,
//!    else the current RSP; aligned down to 16 bytes (§6.14.2), canonical;
//! 4. the frame (§6.14.2, Figure 6-9): SS, RSP, RFLAGS (RF set, as for any
//!    fault: §19.3.1.1), CS, the non-canonical RIP and the error code 0,
//!    written as implicit supervisor-mode stores (§4.6.1: allowed to a
//!    writable page, or any page with CR0.WP clear; to a user page only
//!    with CR4.SMAP and CR4.PKE clear) through the guest's page tables and
//!    the current EPT view (`exit::linear_store`, the emulated SGDT's
//!    store too);
//! 5. the new state: CS from the descriptor (RPL = the new CPL), a null SS
//!    with RPL = the new CPL when the privilege level changed (§6.14.4),
//!    RSP at the frame, RIP at the handler, RFLAGS with TF, NT, RF and VM
//!    cleared and IF too for an interrupt gate (§6.12.1.3).
//!
//! Every access is one the processor makes without writing anything but
//! the frame: each entry of each walk has A = 1 and the stack's page D = 1
//! (else the processor would write the entry, which the view may refuse),
//! no entry has a reserved bit set, and no page the implicit supervisor
//! accesses touch is a user page while CR4.SMAP or CR4.PKE is set.
//!
//! Anything else — a fault the delivery itself would raise (#GP, #NP,
//! #SS, #PF, #DF), an access the EPT view refuses, an LDT, conforming or
//! ring-3 target (ring 3's pushes are user-mode accesses), a TSS or table
//! the monitor cannot read, a pending single step (TF: its #DB comes
//! first), a CR4 feature the model does not know (CET shadow stacks,
//! supervisor protection keys, LASS, LAM, FRED, any bit from 23 up),
//! 5-level paging, a guest not in 64-bit mode — is left to the processor:
//! the #GP is injected at the instruction that completed, and VM entry
//! delivers it with the hardware's own checks and faults, RIP being the
//! one difference (`docs/vmx-core.md`, "What a guest can observe"). The
//! monitor never writes what the guest's own delivery could not, and
//! before it writes anything it checks the new state against the VM-entry
//! rules ([`Delivery::enters`]): a delivery that could make VM entry fail
//! — a stop of the whole run — is left to the processor too.

use super::linear_store::{Writer, implicit_access_allowed};
use crate::bits::{RFLAGS_IF, RFLAGS_NT, RFLAGS_RF, RFLAGS_TF, RFLAGS_VM};
use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::policy::guest_paging::{self, PagingState};
use crate::vcpu::Vcpu;
use crate::vcpu::memory::GuestMemory;
use crate::vmx::error::VmFail;
use crate::vmx::fields::{Control32, Guest16, Guest32, Guest64, GuestNatural};

/// The #GP vector.
const VECTOR_GP: u64 = 13;
/// RFLAGS bits a delivery through any gate clears (§6.12.1.3, §6.14).
const CLEARED_BY_DELIVERY: u64 = RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM;
/// The CR4 bits whose effect on delivery the model knows (bits 0–22:
/// VME .. SMXE, FSGSBASE, PCIDE, OSXSAVE, KL, SMEP, SMAP, PKE; bit 15 is
/// reserved and VM entry refuses it). Any other bit (CET, PKS, UINTR,
/// LASS, LAM_SUP, FRED...) leaves the #GP to the processor.
const CR4_KNOWN: u64 = (1 << 23) - 1;
/// The access rights of an unusable segment (SDM Vol. 3C §25.4.1).
const UNUSABLE: u32 = 1 << 16;
/// Gate types (descriptor bits 43:40): 64-bit interrupt and trap gates.
const INTERRUPT_GATE: u64 = 0xe;
const TRAP_GATE: u64 = 0xf;

/// The guest state the delivery starts from, as the VM exit left it (the
/// instruction completed: `rip` is the non-canonical next RIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted {
    /// The RIP the frame reports.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// RSP.
    pub rsp: u64,
    /// CS selector.
    pub cs: u16,
    /// SS selector.
    pub ss: u16,
    /// The current privilege level.
    pub cpl: u8,
    /// The paging state the implicit accesses translate with.
    pub paging: PagingState,
    /// IDTR base and limit.
    pub idt: (u64, u32),
    /// GDTR base and limit.
    pub gdt: (u64, u32),
    /// TR base and limit.
    pub tss: (u64, u32),
}

/// What the delivery writes: the frame and the new guest state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The frame's lowest address: the new RSP.
    pub rsp: u64,
    /// The frame, lowest address first: error code, RIP, CS, RFLAGS, RSP,
    /// SS.
    pub frame: [u64; 6],
    /// The handler.
    pub rip: u64,
    /// RFLAGS after delivery.
    pub rflags: u64,
    /// CS selector, limit and access rights (VMCS format); base 0.
    pub cs: (u16, u32, u32),
    /// The null SS loaded when the privilege level changes: selector and
    /// access rights.
    pub ss: Option<(u16, u32)>,
}

impl Delivery {
    /// Whether the state it loads passes the VM-entry checks on CS, SS and
    /// RFLAGS (SDM Vol. 3C §27.3.1.2 "Checks on Guest Segment Registers",
    /// §27.3.1.4 "Checks on Guest RIP, RFLAGS, and SSP") for an IA-32e
    /// guest whose SS was `ss` (selector, access rights) before, and the
    /// handler's RIP is canonical: the monitor's last guard against a VM
    /// entry that fails — a guest-triggered stop of the run — should
    /// [`plan`] ever accept what it must not. `plan`'s own tests and the
    /// `deliver` host fuzz target check that it never does.
    pub fn enters(&self, ss: (u16, u32)) -> bool {
        let (cs_selector, limit, access) = self.cs;
        let (ss_selector, ss_access) = self.ss.unwrap_or(ss);
        let dpl = |a: u32| (a >> 5) & 3;
        let kind = access & 0xf;
        let granular = access & (1 << 15) != 0;
        let code = (kind == 9 || kind == 11)
            && access & (1 << 4) != 0
            && access & (1 << 7) != 0
            && access & 0xf00 == 0
            && access & !0xffff == 0;
        let long = access & (1 << 13) != 0 && access & (1 << 14) == 0;
        let limit_ok = (limit & 0xfff == 0xfff || !granular) && (limit >> 20 == 0 || granular);
        let privilege = dpl(access) == dpl(ss_access)
            && u32::from(ss_selector & 3) == dpl(ss_access)
            && cs_selector & 3 == ss_selector & 3;
        // RFLAGS: bits 63:22, 15, 5 and 3 reserved (0), bit 1 set, VM clear
        // in IA-32e mode.
        let rflags = self.rflags & 0xffff_ffff_ffc0_8028 == 0
            && self.rflags & 2 != 0
            && self.rflags & RFLAGS_VM == 0;
        code && long && limit_ok && privilege && rflags && canonical(self.rip)
    }
}

/// Plans the delivery of #GP(0) from `s`, reading guest-linear memory with
/// `read(linear, buf)` (implicit supervisor reads: `None` when it does not
/// translate or cannot be read). `None`: a case left to the processor (the
/// module's list).
pub fn plan(
    s: &Interrupted,
    mut read: impl FnMut(u64, &mut [u8]) -> Option<()>,
) -> Option<Delivery> {
    if s.rflags & RFLAGS_TF != 0 {
        return None;
    }
    // 1. The gate (§6.14.1, Figure 6-8).
    let offset = VECTOR_GP * 16;
    if offset + 15 > u64::from(s.idt.1) {
        return None;
    }
    let mut gate = [0u8; 16];
    read(s.idt.0.wrapping_add(offset), &mut gate)?;
    let low = u64::from_le_bytes(gate[..8].try_into().ok()?);
    let high = u64::from_le_bytes(gate[8..].try_into().ok()?);
    // Type with S (bits 44:40): a system descriptor, 64-bit interrupt or
    // trap gate.
    let kind = (low >> 40) & 0x1f;
    if low & (1 << 47) == 0 || (kind != INTERRUPT_GATE && kind != TRAP_GATE) {
        return None;
    }
    let handler = (low & 0xffff) | ((low >> 32) & 0xffff_0000) | (high << 32);
    if !canonical(handler) {
        return None;
    }
    let selector = ((low >> 16) & 0xffff) as u16;
    let ist = (low >> 32) & 7;
    // 2. The target code segment (§6.12.1.1; descriptor: Vol. 3A §3.4.5).
    if selector & 0b100 != 0 || selector & !0b111 == 0 {
        return None;
    }
    let index = u64::from(selector & !0b111);
    if index + 7 > u64::from(s.gdt.1) {
        return None;
    }
    let mut d = [0u8; 8];
    read(s.gdt.0.wrapping_add(index), &mut d)?;
    let desc = u64::from_le_bytes(d);
    let access = ((desc >> 40) & 0xf0ff) as u32;
    // Type (bits 3:0): code (8), not conforming (4 clear), accessed (1);
    // S (4), P (7), L (13), D (14).
    let code = access & 0b1101 == 0b1001 && access & (1 << 4) != 0 && access & (1 << 7) != 0;
    let long = access & (1 << 13) != 0 && access & (1 << 14) == 0;
    let dpl = ((access >> 5) & 3) as u8;
    // A ring-3 handler's pushes are user-mode accesses (§4.6.1): not
    // modelled.
    if !code || !long || dpl > s.cpl || dpl == 3 {
        return None;
    }
    let raw_limit = ((desc & 0xffff) | ((desc >> 32) & 0xf_0000)) as u32;
    let limit = if access & (1 << 15) != 0 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    // 3. The stack (§6.14.4, §6.14.5; the 64-bit TSS: Vol. 3A §8.7).
    let tss_slot = if ist != 0 {
        Some(0x24 + 8 * (ist - 1))
    } else if dpl < s.cpl {
        Some(4 + 8 * u64::from(dpl))
    } else {
        None
    };
    let stack = match tss_slot {
        Some(at) => {
            if at + 7 > u64::from(s.tss.1) {
                return None;
            }
            let mut b = [0u8; 8];
            read(s.tss.0.wrapping_add(at), &mut b)?;
            u64::from_le_bytes(b)
        }
        None => s.rsp,
    };
    if !canonical(stack) {
        return None;
    }
    let rsp = (stack & !0xf).wrapping_sub(48);
    if !canonical(rsp) {
        return None;
    }
    // 4. The frame (§6.14.2, Figure 6-9).
    let frame = [
        0,
        s.rip,
        u64::from(s.cs),
        s.rflags | RFLAGS_RF,
        s.rsp,
        u64::from(s.ss),
    ];
    // 5. The new state.
    let mut rflags = s.rflags & !CLEARED_BY_DELIVERY;
    if kind == INTERRUPT_GATE {
        rflags &= !RFLAGS_IF;
    }
    let ss = (dpl < s.cpl).then_some((u16::from(dpl), UNUSABLE | (u32::from(dpl) << 5)));
    Some(Delivery {
        rsp,
        frame,
        rip: handler,
        rflags,
        cs: ((selector & !0b11) | u16::from(dpl), limit, access),
        ss,
    })
}

/// Whether `a` is canonical for 48-bit linear addresses.
pub(super) const fn canonical(a: u64) -> bool {
    ((a as i64) << 16 >> 16) as u64 == a
}

impl<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory> Vcpu<V, C, P, M> {
    /// Delivers #GP(0) with the saved RIP `next` (the non-canonical RIP
    /// after an instruction that completed at the canonical boundary) as
    /// the processor would: true when done, false when the case is left
    /// to the processor (the module's list), with nothing written.
    #[cold]
    #[inline(never)]
    pub(super) fn deliver_fetch_gp(&mut self, next: u64) -> Result<bool, VmFail> {
        let cr4 = self.vmcs.read(GuestNatural::Cr4)?;
        let pending = self.vmcs.read(GuestNatural::PendingDebugExceptions)?;
        let injecting = self.vmcs.read(Control32::EntryInterruptionInfo)? & (1 << 31) != 0;
        if cr4 & !CR4_KNOWN != 0 || pending != 0 || injecting {
            return Ok(false);
        }
        let s = Interrupted {
            rip: next,
            rflags: self.vmcs.read(GuestNatural::Rflags)?,
            rsp: self.vmcs.read(GuestNatural::Rsp)?,
            cs: self.vmcs.read(Guest16::CsSelector)?,
            ss: self.vmcs.read(Guest16::SsSelector)?,
            cpl: crate::vcpu::guest::cpl_of(self.vmcs.read(Guest32::SsAccessRights)?),
            paging: PagingState {
                cr0: self.vmcs.read(GuestNatural::Cr0)?,
                cr3: self.vmcs.read(GuestNatural::Cr3)?,
                cr4,
                efer: self.vmcs.read(Guest64::Efer)?,
            },
            idt: (
                self.vmcs.read(GuestNatural::IdtrBase)?,
                self.vmcs.read(Guest32::IdtrLimit)?,
            ),
            gdt: (
                self.vmcs.read(GuestNatural::GdtrBase)?,
                self.vmcs.read(Guest32::GdtrLimit)?,
            ),
            tss: (
                self.vmcs.read(GuestNatural::TrBase)?,
                self.vmcs.read(Guest32::TrLimit)?,
            ),
        };
        if !s.paging.long_mode() {
            return Ok(false);
        }
        let Some(d) = plan(&s, |linear, buf| self.read_linear(s.paging, linear, buf)) else {
            return Ok(false);
        };
        let ss = (s.ss, self.vmcs.read(Guest32::SsAccessRights)?);
        if !d.enters(ss) {
            return Ok(false);
        }
        let mut bytes = [0u8; 48];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(d.frame) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        if self
            .store_linear(s.paging, d.rsp, &bytes, Writer::Delivery)
            .is_err()
        {
            return Ok(false);
        }
        self.vmcs.write(GuestNatural::Rsp, d.rsp)?;
        self.vmcs.write(GuestNatural::Rip, d.rip)?;
        self.vmcs.write(GuestNatural::Rflags, d.rflags)?;
        self.vmcs.write(Guest16::CsSelector, d.cs.0)?;
        self.vmcs.write(GuestNatural::CsBase, 0)?;
        self.vmcs.write(Guest32::CsLimit, d.cs.1)?;
        self.vmcs.write(Guest32::CsAccessRights, d.cs.2)?;
        if let Some((selector, access)) = d.ss {
            self.vmcs.write(Guest16::SsSelector, selector)?;
            self.vmcs.write(GuestNatural::SsBase, 0)?;
            self.vmcs.write(Guest32::SsLimit, 0)?;
            self.vmcs.write(Guest32::SsAccessRights, access)?;
        }
        Ok(true)
    }

    /// After a trap-like exit that ends an instruction the monitor let run
    /// (the monitor-trap-flag or single-step exit of a patch step,
    /// `exit::patch_step`), the saved RIP is the next instruction's, and
    /// past the canonical boundary VM entry cannot load it. Then the
    /// guest gets the fetch's #GP(0) as [`Self::deliver_fetch_gp`] gives
    /// it, or, where that is left to the processor, at `completed_at`,
    /// the instruction that completed (as `exit::rip` does). True when RIP
    /// was not canonical (and the #GP is on its way).
    pub(super) fn fault_past_canonical_boundary(
        &mut self,
        completed_at: u64,
    ) -> Result<bool, VmFail> {
        let rip = self.vmcs.read(GuestNatural::Rip)?;
        // Outside 64-bit mode (width 32) there is no canonical boundary.
        let width = self.linear_width(&mut None)?;
        if super::rip::next_rip(rip, 0, width).is_some() {
            return Ok(false);
        }
        if !self.deliver_fetch_gp(rip)? {
            self.vmcs.write(GuestNatural::Rip, completed_at)?;
            self.inject_event(crate::vmx::event::Exception::GeneralProtection, 0)?;
        }
        Ok(true)
    }

    /// Reads guest-linear memory as an implicit supervisor read: through
    /// the guest's page tables ([`implicit_access_allowed`]) and the
    /// current EPT view.
    pub(crate) fn read_linear(
        &self,
        paging: PagingState,
        linear: u64,
        buf: &mut [u8],
    ) -> Option<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = linear.wrapping_add(done as u64);
            let n = (0x1000 - (at & 0xfff) as usize).min(buf.len() - done);
            let m = guest_paging::translate(paging, at, |gpa| self.read_entry(gpa)).ok()?;
            if !implicit_access_allowed(paging, &m) {
                return None;
            }
            self.memory.read(m.gpa, &mut buf[done..done + n]).ok()?;
            done += n;
        }
        Some(())
    }
}
