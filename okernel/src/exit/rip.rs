//! The RIP advance after an exiting instruction completes, at every
//! boundary the architecture has (issue 18): the VM-exit instruction
//! length, the 4 GiB wrap outside 64-bit mode, the canonical boundary in
//! 64-bit mode (48 bits, 57 with CR4.LA57), where the guest takes the
//! #GP(0) its next fetch would raise instead of the monitor stopping.

use crate::bits::{CR4_LA57, DEBUGCTL_BTF, PENDING_BS, RFLAGS_RF, RFLAGS_TF};
use crate::hw::{Cpu, Vmcs};
use crate::policy::Policy;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::error::VmFail;
use crate::vmx::event::Exception;
use crate::vmx::fields::{Field, Guest32, Guest64, GuestNatural, ReadOnly32};

impl<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory> Vcpu<V, C, P, M> {
    /// Moves RIP past the exiting instruction, using the VM-exit
    /// instruction length (SDM Vol. 3C §28.2.5), which must be 1..=15 (the
    /// architectural limit): anything else is a fatal error, never a
    /// wrapped RIP. Clears blocking by STI and MOV SS, as completing the
    /// instruction would (SDM Vol. 3C §26.1.2 / §27.7.1 interruptibility),
    /// and completes RFLAGS as the processor would (`complete_flags`:
    /// RF cleared, the single-step trap TF owes made pending).
    /// The next RIP follows the architecture at every boundary: see
    /// [`next_rip`].
    #[inline]
    pub fn advance_rip(&mut self) -> Result<ExitAction, ExitError> {
        self.advance_rip_in(&mut None)
    }

    /// [`Self::advance_rip`] with the guest's mode as far as this exit has
    /// read it ([`Self::mode_once`]). The mode is read only when it can
    /// change the result: below 2 GiB, RIP + length is the same in every
    /// mode (no 32-bit wrap, canonical, no 64-bit overflow).
    ///
    /// Everything is in line, with no call (a call would cost the exit
    /// path a frame and saved registers): the common case (RIP below
    /// 2 GiB) and, in a cold branch, `advance_far`. Both fail only
    /// with an `AdvanceError`, which is small (in registers): the exit
    /// path's common case then never assembles an [`ExitError`] in memory
    /// (the failure branch converts it).
    #[inline(always)]
    pub fn advance_rip_in(&mut self, mode: &mut Option<bool>) -> Result<ExitAction, ExitError> {
        match self.advance(mode) {
            Ok(()) => Ok(ExitAction::Resume),
            Err(e) => {
                core::hint::cold_path();
                Err(e.into())
            }
        }
    }

    /// [`Self::advance_rip_in`] with its small error.
    #[inline(always)]
    fn advance(&mut self, mode: &mut Option<bool>) -> Result<(), AdvanceError> {
        // The 32-bit field as VMREAD stores it, zero-extended to 64 bits
        // (SDM Vol. 3C §31.3 VMREAD): the RIP arithmetic needs no extension
        // instruction.
        let len = self
            .vmcs
            .read_raw(ReadOnly32::ExitInstructionLength.encoding())?;
        self.advance_len(len, mode)
    }

    /// Completes an instruction of `len` bytes whose length the monitor
    /// decoded itself (an exit that records none: an EPT violation, SDM
    /// Vol. 3C §28.2.5), as [`Self::advance_rip`] does.
    pub fn advance_rip_by(&mut self, len: u8) -> Result<ExitAction, ExitError> {
        match self.advance_len(len.into(), &mut None) {
            Ok(()) => Ok(ExitAction::Resume),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Self::advance`] for an instruction of `len` bytes.
    #[inline(always)]
    fn advance_len(&mut self, len: u64, mode: &mut Option<bool>) -> Result<(), AdvanceError> {
        /// RIPs below this advance identically in and outside 64-bit mode.
        const MODE_FREE: u64 = 0x8000_0000;
        // 1..=15, as one unsigned comparison.
        if len.wrapping_sub(1) >= 15 {
            core::hint::cold_path();
            return Err(AdvanceError::BadInstructionLength(len as u32));
        }
        let rip = self.vmcs.read(GuestNatural::Rip)?;
        if rip >= MODE_FREE {
            core::hint::cold_path();
            return self.advance_far(rip, len as u32, mode);
        }
        self.vmcs.write(GuestNatural::Rip, rip + len)?;
        self.complete_flags()?;
        Ok(self.clear_sti_mov_ss_blocking()?)
    }

    /// [`Self::advance`] for a RIP at or above 2 GiB, where the mode
    /// decides the next RIP ([`next_rip`]).
    #[inline(always)]
    fn advance_far(
        &mut self,
        rip: u64,
        len: u32,
        mode: &mut Option<bool>,
    ) -> Result<(), AdvanceError> {
        match next_rip(rip, len, self.linear_width(mode)?) {
            Some(next) => {
                self.vmcs.write(GuestNatural::Rip, next)?;
                self.complete_flags()?;
                Ok(self.clear_sti_mov_ss_blocking()?)
            }
            None => Ok(self.next_fetch_faults(rip.wrapping_add(u64::from(len)))?),
        }
    }

    /// The guest's linear-address width, the `width` of [`next_rip`]: in
    /// 64-bit mode the width addresses must be canonical for, 57 bits with
    /// 5-level paging (CR4.LA57) and 48 without (SDM Vol. 1 §3.3.7.1
    /// "Canonical Addressing"; Vol. 3A §4.5); outside it 32, the width of
    /// EIP (Vol. 1 §3.5). `mode` as for [`Self::mode_once`].
    #[inline(always)]
    pub fn linear_width(&self, mode: &mut Option<bool>) -> Result<u32, VmFail> {
        if !self.mode_once(mode)? {
            return Ok(32);
        }
        Ok(if self.vmcs.read(GuestNatural::Cr4)? & CR4_LA57 != 0 {
            57
        } else {
            48
        })
    }

    /// What completing an instruction does to RFLAGS and debug state, which
    /// the VM exit left as they were before it (the instruction did not
    /// complete in the processor; SDM Vol. 3C §28.3.4 saves RFLAGS and the
    /// pending debug exceptions as of the exit):
    ///
    /// * RF is cleared: the processor clears it after every instruction
    ///   that completes (except IRET, POPF and task switches, which never
    ///   reach here), so an instruction breakpoint on the next instruction
    ///   fires (SDM Vol. 3A §19.3.1.1, "Instruction-Breakpoint Exception
    ///   Condition"; Vol. 1 §3.4.3.3).
    /// * With TF set (and IA32_DEBUGCTL.BTF clear) the instruction owes a
    ///   single-step trap after it (SDM Vol. 3A §19.3.1.4, "Single-Step
    ///   Exception Condition"): BS is set in the pending debug exceptions,
    ///   so VM entry delivers that #DB before the next instruction (Vol.
    ///   3C §27.7.3, "Delivery of Pending Debug Exceptions after VM
    ///   Entry"). The consistency check of §27.3.1.5 allows BS with TF
    ///   set; with BTF set a non-branch owes no trap.
    ///
    /// One VMREAD on the common path (neither flag set).
    #[inline(always)]
    fn complete_flags(&mut self) -> Result<(), VmFail> {
        let rflags = self.vmcs.read(GuestNatural::Rflags)?;
        if rflags & (RFLAGS_RF | RFLAGS_TF) == 0 {
            return Ok(());
        }
        core::hint::cold_path();
        if rflags & RFLAGS_RF != 0 {
            self.vmcs.write(GuestNatural::Rflags, rflags & !RFLAGS_RF)?;
        }
        if rflags & RFLAGS_TF != 0 && self.vmcs.read(Guest64::Debugctl)? & DEBUGCTL_BTF == 0 {
            let pending = self.vmcs.read(GuestNatural::PendingDebugExceptions)?;
            self.vmcs
                .write(GuestNatural::PendingDebugExceptions, pending | PENDING_BS)?;
        }
        Ok(())
    }

    /// Blocking by STI and by MOV SS end with the instruction that follows
    /// STI or MOV SS (SDM Vol. 3C §25.4.2): the exiting instruction
    /// completed.
    #[inline(always)]
    pub(super) fn clear_sti_mov_ss_blocking(&mut self) -> Result<(), VmFail> {
        let interruptibility = self.vmcs.read(Guest32::InterruptibilityState)?;
        if interruptibility & 0b11 != 0 {
            self.vmcs
                .write(Guest32::InterruptibilityState, interruptibility & !0b11)?;
        }
        Ok(())
    }

    /// The exiting instruction completed in 64-bit mode at the top of the
    /// lower canonical half, and the next RIP, `next`, is not canonical: on
    /// hardware RIP advances and the fetch at the new RIP raises #GP(0)
    /// with `next` as the saved RIP (SDM Vol. 1 §3.3.7.1 "Canonical
    /// Addressing"; Vol. 3A §6.15, "Interrupt 13"). VM entry cannot load a
    /// non-canonical RIP (SDM Vol. 3C §27.3.1.4 "Checks on Guest RIP,
    /// RFLAGS, and SSP"), so the monitor delivers that #GP in software
    /// ([`super::deliver`]); where the delivery is one the processor must
    /// judge (a fault during it, an access the view refuses, a pending
    /// single step...) the #GP(0) is injected at the instruction that
    /// completed, the one difference from hardware (`docs/vmx-core.md`,
    /// "What a guest can observe"). Never a monitor stop: the guest's own
    /// #GP handler decides.
    #[inline(always)]
    fn next_fetch_faults(&mut self, next: u64) -> Result<(), VmFail> {
        self.clear_sti_mov_ss_blocking()?;
        if self.deliver_fetch_gp(next)? {
            return Ok(());
        }
        self.inject_event(Exception::GeneralProtection, 0)
    }
}

/// Why a RIP advance failed: the [`ExitError`] it becomes, in registers.
#[derive(Debug, Clone, Copy)]
enum AdvanceError {
    /// A VMREAD or VMWRITE failed.
    Vmcs(VmFail),
    /// The VM-exit instruction length is outside 1..=15.
    BadInstructionLength(u32),
}

impl From<VmFail> for AdvanceError {
    #[inline(always)]
    fn from(e: VmFail) -> Self {
        Self::Vmcs(e)
    }
}

impl From<AdvanceError> for ExitError {
    #[inline(always)]
    fn from(e: AdvanceError) -> Self {
        match e {
            AdvanceError::Vmcs(e) => Self::Vmcs(e),
            AdvanceError::BadInstructionLength(len) => Self::BadInstructionLength(len),
        }
    }
}

/// The RIP after an instruction of `len` bytes at `rip`, at or above 2 GiB
/// where the mode matters. `width` is 48 or 57 in 64-bit mode (IA32_EFER.LMA
/// and CS.L; 57 with CR4.LA57), 32 otherwise ([`Vcpu::linear_width`]):
///
/// * 64-bit mode: RIP + length, wrapping at 2^64 like the 64-bit
///   instruction pointer (SDM Vol. 1 §3.5.1); None when the result is not
///   canonical for `width` linear-address bits (SDM Vol. 1 §3.3.7.1; the
///   next fetch faults: [`Vcpu::advance_rip`]).
/// * Otherwise (legacy protected mode, compatibility mode, unrestricted
///   real mode): EIP is 32 bits wide and wraps at 4 GiB (SDM Vol. 1
///   §3.5 "Instruction Pointer"); a segment-limit violation at the next
///   fetch is the processor's to raise after VM entry.
#[inline(always)]
pub const fn next_rip(rip: u64, len: u32, width: u32) -> Option<u64> {
    if width == 32 {
        return Some((rip as u32).wrapping_add(len) as u64);
    }
    let n = rip.wrapping_add(len as u64);
    let shift = 64 - width;
    if ((n as i64) << shift >> shift) as u64 == n {
        Some(n)
    } else {
        None
    }
}
