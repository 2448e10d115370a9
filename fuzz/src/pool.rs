//! A heap-backed EPT frame pool with an allocation budget (to inject
//! out-of-frames failures at any point of an operation) and accounting (to
//! find leaks and double frees).
//!
//! Frame `i` has the "physical" address `BASE + i * 4096`; clones of a
//! [`Pool`] share the frames and counters, so several views can draw from
//! one pool and the target can change the budget while a view owns a
//! handle.

use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;

use ept::{ENTRIES, FrameAllocator, PhysFrame};

/// The "physical" address of frame 0: low enough for any MAXPHYADDR
/// (36..=52 bits) the capability sets use, and not 0.
pub const BASE: u64 = 0x10_0000;

type Frame = [u64; ENTRIES];

#[derive(Default)]
struct Inner {
    /// Every frame ever carved; a box never moves, so its pointer stays
    /// valid while the pool lives.
    frames: Vec<Box<Frame>>,
    /// Per frame: handed out and not yet freed.
    allocated: Vec<bool>,
    free: Vec<PhysFrame>,
    live: usize,
    /// Allocations left before the pool reports exhaustion (`None`: no
    /// limit).
    budget: Option<u64>,
}

impl Inner {
    fn index(&self, frame: PhysFrame) -> usize {
        let i = (frame.addr().wrapping_sub(BASE) / 4096) as usize;
        assert!(
            i < self.frames.len(),
            "frame {frame:?} was never handed out by this pool"
        );
        i
    }
}

/// A handle to a shared frame pool.
#[derive(Clone, Default)]
pub struct Pool(Rc<RefCell<Inner>>);

impl Pool {
    /// An empty pool without a budget.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets only `budget` more allocations succeed (`None`: no limit).
    pub fn set_budget(&self, budget: Option<u64>) {
        self.0.borrow_mut().budget = budget;
    }

    /// Allocations that can still succeed.
    pub fn available(&self) -> u64 {
        self.0.borrow().budget.unwrap_or(u64::MAX)
    }

    /// Frames handed out and not freed.
    pub fn live(&self) -> usize {
        self.0.borrow().live
    }
}

// SAFETY: (1) a frame is handed out at most once until it is freed (fresh
// boxes, or the free list after a checked free) and is zeroed first; (2)
// `table_ptr` points into a box that is neither moved nor dropped before
// the last handle to the pool, and boxes never overlap; (3) the pool
// writes a frame only while zeroing or poisoning it, when no view owns it.
unsafe impl FrameAllocator for Pool {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        let mut p = self.0.borrow_mut();
        match &mut p.budget {
            Some(0) => return None,
            Some(n) => *n -= 1,
            None => {}
        }
        let frame = match p.free.pop() {
            Some(f) => {
                let i = p.index(f);
                *p.frames[i] = [0; ENTRIES];
                f
            }
            None => {
                p.frames.push(Box::new([0; ENTRIES]));
                p.allocated.push(false);
                PhysFrame::new(BASE + (p.frames.len() as u64 - 1) * 4096)?
            }
        };
        let i = p.index(frame);
        p.allocated[i] = true;
        p.live += 1;
        Some(frame)
    }

    fn free_frame(&mut self, frame: PhysFrame) {
        let mut p = self.0.borrow_mut();
        let i = p.index(frame);
        assert!(p.allocated[i], "double free of {frame:?}");
        p.allocated[i] = false;
        // Poison it: a view that still reads the frame sees nonsense, which
        // the targets' oracles notice.
        *p.frames[i] = [u64::MAX; ENTRIES];
        p.live -= 1;
        p.free.push(frame);
    }

    fn table_ptr(&self, frame: PhysFrame) -> NonNull<[u64; ENTRIES]> {
        let p = self.0.borrow();
        let i = p.index(frame);
        assert!(p.allocated[i], "table_ptr of free frame {frame:?}");
        NonNull::from(&*p.frames[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_accounting() {
        let mut p = Pool::new();
        p.set_budget(Some(1));
        let a = p.allocate_frame().unwrap();
        assert!(p.allocate_frame().is_none());
        p.set_budget(None);
        let b = p.allocate_frame().unwrap();
        assert_ne!(a, b);
        assert_eq!(p.live(), 2);
        p.free_frame(a);
        assert_eq!(p.live(), 1);
        assert_eq!(p.allocate_frame(), Some(a));
    }
}
