//! Extended page tables (Intel SDM Vol. 3C, chapter 29 "VMX Support for
//! Address Translation").
//!
//! A [`View`] is one 4-level EPT tree: the memory a guest sees. It maps
//! guest-physical ranges with the largest pages the CPU's [`EptCaps`] allow
//! (1 GiB, 2 MiB, 4 KiB), unmaps them, and changes their rights, splitting a
//! large page only where a change needs it and merging a region back into
//! one large page as soon as it is uniform again. The tree is always in
//! *canonical form* (the fewest tables that express the mapping), so a
//! 512 GiB identity map takes two tables (1 TiB: three, one PDPT per
//! 512 GiB) and protecting one 4 KiB page in a 1 GiB page takes two more,
//! which come back when the page is restored.
//!
//! Every change is all-or-nothing: it first counts the tables it will need,
//! reserves them, and only then writes; running out of frames returns
//! [`Error::OutOfFrames`] with the view untouched. No argument makes the
//! library panic: bad ranges and rights are typed [`Error`]s.
//!
//! Frames come from the caller through [`FrameAllocator`]; the crate is
//! `no_std` and allocates nothing itself. It also builds [`Eptp`] values,
//! decodes EPT-violation exit qualifications ([`EptViolation`]) and finds
//! the entry behind an EPT misconfiguration ([`WalkPath::misconfiguration`]).
//!
//! # Example
//!
//! ```
//! use core::ptr::NonNull;
//! use ept::{Attributes, EptCaps, EptFeatures, FrameAllocator, Gpa, MemoryType, Perms};
//! use ept::{PageSize, PhysFrame, View};
//!
//! /// Frames on the heap; frame `i` has the "physical" address `(i + 1) * 4096`.
//! /// (In okernel, which runs identity mapped, `table_ptr` is just the address.)
//! #[derive(Default)]
//! struct Heap(Vec<Box<[u64; 512]>>, Vec<PhysFrame>);
//!
//! // SAFETY: frames are distinct boxes that live as long as `Heap`, are zeroed
//! // when handed out, and are touched only through `table_ptr`.
//! unsafe impl FrameAllocator for Heap {
//!     fn allocate_frame(&mut self) -> Option<PhysFrame> {
//!         if let Some(f) = self.1.pop() {
//!             *self.0[(f.addr() / 4096 - 1) as usize] = [0; 512];
//!             return Some(f);
//!         }
//!         self.0.push(Box::new([0; 512]));
//!         PhysFrame::new(self.0.len() as u64 * 4096)
//!     }
//!     fn free_frame(&mut self, frame: PhysFrame) {
//!         self.1.push(frame);
//!     }
//!     fn table_ptr(&self, frame: PhysFrame) -> NonNull<[u64; 512]> {
//!         NonNull::from(&*self.0[(frame.addr() / 4096 - 1) as usize])
//!     }
//! }
//!
//! # fn main() -> Result<(), ept::Error> {
//! // From IA32_VMX_EPT_VPID_CAP, IA32_VMX_PROCBASED_CTLS2 and MAXPHYADDR.
//! let caps = EptCaps::from_msrs(0x0f01_0673_4141, 0, 46)?;
//! let mut view = View::new(Heap::default(), caps)?;
//!
//! // All of the first 4 GiB as write-back RAM: four 1 GiB pages.
//! view.identity_map(Gpa(0), 4 << 30, Attributes::RAM)?;
//! assert_eq!(view.usage().total(), 2);
//!
//! // Make one 4 KiB page of kernel text read+execute: splits 1G -> 2M -> 4K.
//! view.protect(Gpa(0x10_0000), 4096, Perms::RX)?;
//! let t = view.translate(Gpa(0x10_0123))?.expect("mapped");
//! assert_eq!((t.hpa.0, t.page.size, t.page.attrs.perms), (0x10_0123, PageSize::Size4K, Perms::RX));
//! assert_eq!(view.usage().total(), 4);
//!
//! // Restoring the rights merges the tables away again.
//! view.protect(Gpa(0x10_0000), 4096, Perms::RWX)?;
//! assert_eq!(view.usage().total(), 2);
//!
//! // The value for the VMCS EPT-pointer field.
//! let eptp = view.eptp(MemoryType::WriteBack, false)?;
//! assert_eq!(eptp.root(), view.root());
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), no_std)]

// Lets code shared with the integration tests (tests/common) name the crate
// `ept` inside its own unit tests.
#[cfg(test)]
extern crate self as ept;

mod addr;
mod caps;
mod entry;
mod eptp;
mod error;
mod frames;
mod merge;
mod misconfig;
mod op;
mod qualification;
mod update;
mod view;
mod walk;

#[cfg(test)]
#[path = "../tests/common/pool.rs"]
#[allow(dead_code)]
mod pool;
#[cfg(test)]
mod tests;

pub use addr::{ENTRIES, GPA_LIMIT, Gpa, Hpa, PAGE_SIZE, PageSize, PhysFrame};
pub use caps::{EptCaps, EptFeatures};
pub use entry::{Attributes, Entry, EntryFlags, MemoryType, Perms};
pub use eptp::Eptp;
pub use error::Error;
pub use frames::{FrameAllocator, TableUsage};
pub use misconfig::{MisconfigReport, Misconfiguration, check_entry};
pub use qualification::{Access, EptViolation, GuestPage, LinearAccess};
pub use view::View;
pub use walk::{Mapping, Mappings, Translation, WalkPath};
