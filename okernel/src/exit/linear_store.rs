//! The one guest-linear store of the monitor (issue 14): the bytes an
//! emulated SGDT/SIDT/SLDT/STR stores ([`super::descriptor`]) and the
//! frame of the #GP delivered in software ([`super::deliver`]) are written
//! here, by the rules of the processor's own write (SDM Vol. 3A §4.6
//! "Access Rights", §4.7 "Page-Fault Exceptions", §4.8 "Accessed and
//! Dirty Flags"):
//!
//! 1. the range is cut at page boundaries (at most two pieces), and each
//!    piece is translated through the guest's paging
//!    (`policy::guest_paging`) and judged: an entry with a reserved bit
//!    set, then the rights of the write (§4.6.1), each a #PF;
//! 2. every write the store makes — the A flag of each entry of each walk
//!    and the D flag of each leaf the processor would set (§4.8), then the
//!    bytes — is checked against the current EPT view;
//! 3. only then is anything written: flags first, as the processor sets
//!    them while it translates, then the bytes. A refused store writes
//!    nothing.
//!
//! The two callers differ in who else could make the write ([`Writer`]):
//! the monitor completes an exiting instruction itself, so it sets the
//! flags as the processor would; an event delivery the processor can make
//! instead is refused wherever it would write more than its bytes.

use crate::bits::{CR0_WP, CR4_PKE, CR4_SMAP};
use crate::hw::{Cpu, Vmcs};
use crate::memmap::Gpa;
use crate::policy::Policy;
use crate::policy::guest_paging::{self, ACCESSED, DIRTY, Mapping, PagingState, WalkError};
use crate::vcpu::Vcpu;
use crate::vcpu::memory::GuestMemory;

/// #PF error code: P (a protection or reserved-bit violation, not a
/// missing page).
pub const PF_PRESENT: u32 = 1 << 0;
/// #PF error code: W/R (a write).
pub const PF_WRITE: u32 = 1 << 1;
/// #PF error code: U/S (a user-mode access).
pub const PF_USER: u32 = 1 << 2;
/// #PF error code: RSVD (a reserved bit set in a paging-structure entry).
pub const PF_RESERVED: u32 = 1 << 3;

/// Pieces a store may have: a store of up to a page crosses at most one
/// page boundary.
const PIECES: usize = 2;

/// Who makes the store, which decides the rights it needs and what
/// happens where the processor would set an A or D flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// The explicit data write of an instruction at `cpl` that the
    /// monitor completes for the guest (the emulated SGDT, SIDT, SLDT,
    /// STR): the processor exited and will not make it, so the monitor
    /// does all the processor would, the A and D flags included. Rights
    /// (§4.6.1): at CPL 3 a user page writable at every level; below, a
    /// writable page, or any page with CR0.WP clear. Not modelled: SMAP
    /// and protection keys (such a store is performed).
    Instruction {
        /// The CPL of the instruction.
        cpl: u8,
    },
    /// The implicit supervisor-mode writes of an event delivery that the
    /// processor can make instead ([`super::deliver`]): refused where the
    /// processor would write an entry (an A or D flag to set, which the
    /// view may refuse) and on a user page while CR4.SMAP or CR4.PKE is
    /// set ([`implicit_access_allowed`]); rights as a supervisor write.
    Delivery,
}

/// Why a store was refused, with nothing written (but for
/// [`Refusal::Failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The guest's paging refuses the write: the #PF the processor raises
    /// at `linear` (the piece's first byte), with `error_code` (§4.7).
    PageFault {
        /// The faulting linear address (CR2).
        linear: u64,
        /// The #PF error code: W, U at CPL 3, P and RSVD as found.
        error_code: u32,
    },
    /// Not canonical, or a paging mode the walk does not support.
    Untranslatable,
    /// Beyond what [`Writer::Delivery`] models (an A or D flag to set, a
    /// user page under SMAP or PKE), or more than two pieces.
    Unmodelled,
    /// The current EPT view refuses a write at this guest-physical
    /// address: the bytes', or a paging entry's for its A or D flag.
    View(Gpa),
    /// A write failed after every check had passed (guest memory changed
    /// under the store): the writes before it were made.
    Failed,
}

/// Whether an implicit supervisor access through walk `m` is one the
/// processor makes without a fault and without writing an entry: A = 1 at
/// every level, no reserved bit, and not a user page while SMAP or PKE
/// (whose rights depend on PKRU, §4.6.2) is on.
pub fn implicit_access_allowed(paging: PagingState, m: &Mapping) -> bool {
    m.accessed && !m.reserved && !(m.user && paging.cr4 & (CR4_SMAP | CR4_PKE) != 0)
}

/// One page piece of a store, judged and ready to write.
#[derive(Debug, Clone, Copy, Default)]
struct Piece {
    /// Where its bytes go.
    gpa: Gpa,
    /// Its bytes: `bytes[start..end]`.
    start: usize,
    end: usize,
    /// Its walk's entries, and the flags the processor would set in each
    /// (0: none).
    entries: [(Gpa, u64); 4],
}

impl<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory> Vcpu<V, C, P, M> {
    /// Stores `bytes` at guest-linear `linear` under `paging` as `writer`
    /// would (the module's rules): every piece translated and judged and
    /// every write checked against the current EPT view before the first
    /// is made. The first refusal found, in that order, piece by piece.
    pub fn store_linear(
        &mut self,
        paging: PagingState,
        linear: u64,
        bytes: &[u8],
        writer: Writer,
    ) -> Result<(), Refusal> {
        let mut pieces = [Piece::default(); PIECES];
        let mut n = 0;
        let mut done = 0;
        while done < bytes.len() {
            if n == PIECES {
                return Err(Refusal::Unmodelled);
            }
            let at = linear.wrapping_add(done as u64);
            let len = (0x1000 - (at & 0xfff) as usize).min(bytes.len() - done);
            let m = self.judge(paging, at, writer)?;
            let mut piece = Piece {
                gpa: m.gpa,
                start: done,
                end: done + len,
                entries: [(Gpa(0), 0); 4],
            };
            // The flags the processor would set (§4.8): A in every entry,
            // D in the leaf.
            let levels = m.entries.iter().flatten().count();
            for (i, &gpa) in m.entries.iter().flatten().enumerate() {
                let flags = if i + 1 == levels {
                    ACCESSED | DIRTY
                } else {
                    ACCESSED
                };
                let entry = self.read_entry(gpa).ok_or(Refusal::Failed)?;
                if entry & flags != flags {
                    if writer == Writer::Delivery {
                        return Err(Refusal::Unmodelled);
                    }
                    piece.entries[i] = (gpa, flags);
                }
            }
            pieces[n] = piece;
            n += 1;
            done += len;
        }
        let pieces = &pieces[..n];
        let flagged = || {
            pieces
                .iter()
                .flat_map(|p| p.entries)
                .filter(|&(_, flags)| flags != 0)
        };
        for (gpa, _) in flagged() {
            self.memory
                .check_writable(gpa, 8)
                .map_err(|_| Refusal::View(gpa))?;
        }
        for p in pieces {
            self.memory
                .check_writable(p.gpa, (p.end - p.start) as u64)
                .map_err(|_| Refusal::View(p.gpa))?;
        }
        // An entry two walks share is read again before each update, so
        // neither undoes the other's flags.
        for (gpa, flags) in flagged() {
            let entry = self.read_entry(gpa).ok_or(Refusal::Failed)?;
            if entry & flags != flags {
                self.memory
                    .write(gpa, &(entry | flags).to_le_bytes())
                    .map_err(|_| Refusal::Failed)?;
            }
        }
        for p in pieces {
            self.memory
                .write(p.gpa, &bytes[p.start..p.end])
                .map_err(|_| Refusal::Failed)?;
        }
        Ok(())
    }

    /// Translates the piece at `at` and judges the write `writer` makes
    /// there (§4.7: a missing page, then a reserved bit, then the rights).
    fn judge(&self, paging: PagingState, at: u64, writer: Writer) -> Result<Mapping, Refusal> {
        let user = matches!(writer, Writer::Instruction { cpl: 3 });
        let error_code = PF_WRITE | if user { PF_USER } else { 0 };
        let fault = |error_code| Refusal::PageFault {
            linear: at,
            error_code,
        };
        let m = match guest_paging::translate(paging, at, |gpa| self.read_entry(gpa)) {
            Ok(m) => m,
            Err(WalkError::NotPresent(_)) => return Err(fault(error_code)),
            Err(WalkError::Unsupported) => return Err(Refusal::Untranslatable),
        };
        if m.reserved {
            return Err(fault(error_code | PF_PRESENT | PF_RESERVED));
        }
        let allowed = if user {
            m.user && m.writable
        } else {
            m.writable || paging.cr0 & CR0_WP == 0
        };
        if !allowed {
            return Err(fault(error_code | PF_PRESENT));
        }
        if writer == Writer::Delivery && !implicit_access_allowed(paging, &m) {
            return Err(Refusal::Unmodelled);
        }
        Ok(m)
    }

    /// One 8-byte paging-structure entry at `gpa`, through the current
    /// view (`None`: it cannot be read).
    pub(super) fn read_entry(&self, gpa: Gpa) -> Option<u64> {
        let mut b = [0u8; 8];
        self.memory.read(gpa, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }
}
