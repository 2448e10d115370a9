//! A heap-backed frame pool for tests and benchmarks, with frame accounting
//! and out-of-frames injection.
//!
//! Frames live in 2 MiB chunks that are never moved or freed before the pool
//! itself, so a frame's pointer stays valid for the pool's lifetime. Frame
//! `i` gets the "physical" address `BASE + i * 4096`.

use ept::{ENTRIES, FrameAllocator, PhysFrame};
use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;

/// Frames per chunk.
const CHUNK: usize = 512;
/// The "physical" address of frame 0 (nonzero, to catch address mix-ups).
const BASE: u64 = 0x10_0000_0000;

type Frame = [u64; ENTRIES];

#[derive(Default)]
struct Inner {
    /// Chunk base pointers, from `Box::into_raw`; freed in `Drop`.
    chunks: Vec<NonNull<Frame>>,
    /// Frames carved out of the chunks so far.
    carved: usize,
    free: Vec<PhysFrame>,
    /// Per carved frame: allocated (true) or free.
    allocated: Vec<bool>,
    live: usize,
    allocations: u64,
    /// Allocations left before the pool reports exhaustion (`None`: no limit).
    budget: Option<u64>,
}

impl Inner {
    fn index(&self, frame: PhysFrame) -> usize {
        let i = (frame.addr().wrapping_sub(BASE) / 4096) as usize;
        assert!(i < self.carved, "frame {frame:?} was never allocated");
        i
    }

    fn ptr(&self, frame: PhysFrame) -> NonNull<Frame> {
        let i = self.index(frame);
        // SAFETY: `i < carved` so chunk `i / CHUNK` exists and holds CHUNK
        // frames; the offset stays inside that allocation.
        unsafe { self.chunks[i / CHUNK].add(i % CHUNK) }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for chunk in self.chunks.drain(..) {
            let slice = std::ptr::slice_from_raw_parts_mut(chunk.as_ptr(), CHUNK);
            // SAFETY: `chunk` came from `Box::into_raw` of a boxed slice of
            // CHUNK frames and is dropped exactly once, here.
            drop(unsafe { Box::from_raw(slice) });
        }
    }
}

/// A handle to a shared pool; clones share the same frames and counters.
#[derive(Clone, Default)]
pub struct Pool(Rc<RefCell<Inner>>);

impl Pool {
    /// An empty pool without an allocation limit.
    pub fn new() -> Self {
        Pool::default()
    }

    /// Frames allocated and not yet freed.
    pub fn live(&self) -> usize {
        self.0.borrow().live
    }

    /// Successful allocations so far.
    pub fn allocations(&self) -> u64 {
        self.0.borrow().allocations
    }

    /// Lets only `budget` more allocations succeed (`None`: unlimited).
    pub fn set_budget(&self, budget: Option<u64>) {
        self.0.borrow_mut().budget = budget;
    }
}

// SAFETY: (1) a frame is handed out once until freed (bump allocation or the
// free list) and zeroed first; (2) `table_ptr` points into a chunk that is
// neither moved nor freed before the last handle drops, chunks never overlap
// and frames within one are disjoint; (3) the pool itself touches a frame's
// memory only while zeroing it in `allocate_frame`, when no view owns it.
unsafe impl FrameAllocator for Pool {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        let mut p = self.0.borrow_mut();
        match &mut p.budget {
            Some(0) => return None,
            Some(n) => *n -= 1,
            None => {}
        }
        let frame = match p.free.pop() {
            Some(f) => f,
            None => {
                if p.carved.is_multiple_of(CHUNK) {
                    let chunk = vec![[0u64; ENTRIES]; CHUNK].into_boxed_slice();
                    let base = Box::into_raw(chunk).cast::<Frame>();
                    p.chunks.push(NonNull::new(base)?);
                }
                p.carved += 1;
                p.allocated.push(false);
                PhysFrame::new(BASE + (p.carved as u64 - 1) * 4096)?
            }
        };
        // SAFETY: the frame is not in use by any view (fresh, or freed back
        // to us), and `ptr` gives its exclusive, valid memory.
        unsafe { p.ptr(frame).write([0; ENTRIES]) };
        let i = p.index(frame);
        p.allocated[i] = true;
        p.live += 1;
        p.allocations += 1;
        Some(frame)
    }

    fn free_frame(&mut self, frame: PhysFrame) {
        let mut p = self.0.borrow_mut();
        let i = p.index(frame);
        assert!(p.allocated[i], "double free of {frame:?}");
        p.allocated[i] = false;
        // Poison the frame, so that a view still reading it would see
        // nonsense (and the model tests would notice).
        // SAFETY: the view gave the frame back, so nothing else uses it.
        unsafe { p.ptr(frame).write([u64::MAX; ENTRIES]) };
        p.live -= 1;
        p.free.push(frame);
    }

    fn table_ptr(&self, frame: PhysFrame) -> NonNull<[u64; ENTRIES]> {
        self.0.borrow().ptr(frame)
    }
}
