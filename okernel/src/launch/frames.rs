//! The monitor's frame pool: a bump allocator over the loader-provided
//! physical range, with a free list for frames the EPT code gives back.
//! Root mode runs identity-mapped, so a frame's address is its pointer.

use core::ptr::NonNull;

use crate::memmap::PhysRange;

/// The frame size.
pub const FRAME: u64 = 4096;

/// Physical 4 KiB frames from one exclusive range.
#[derive(Debug)]
pub struct FramePool {
    next: u64,
    end: u64,
    free: Option<u64>,
    free_count: u64,
    allocated: u64,
}

impl FramePool {
    /// A pool over `range`.
    ///
    /// # Safety
    /// `range` must be 4 KiB aligned, identity-mapped writable memory
    /// (address = pointer) that nothing else uses while the pool and every
    /// frame it hands out live.
    pub unsafe fn new(range: PhysRange) -> Self {
        Self {
            next: range.start,
            end: range.end,
            free: None,
            free_count: 0,
            allocated: 0,
        }
    }

    /// Frames still available from the bump region (the free list not
    /// counted).
    pub const fn remaining(&self) -> u64 {
        (self.end - self.next) / FRAME
    }

    /// Frames that can still be allocated (bump region and free list).
    pub const fn available(&self) -> u64 {
        self.remaining() + self.free_count
    }

    /// Frames handed out and not given back.
    pub const fn allocated(&self) -> u64 {
        self.allocated
    }

    /// A zeroed frame, or `None` when the pool is exhausted.
    pub fn allocate(&mut self) -> Option<u64> {
        let frame = if let Some(f) = self.free {
            // SAFETY: `f` is a frame of this pool on the free list; its
            // first word holds the next free frame (written by `free`).
            self.free = match unsafe { (f as *const u64).read() } {
                0 => None,
                n => Some(n),
            };
            self.free_count -= 1;
            f
        } else if self.end - self.next >= FRAME {
            let f = self.next;
            self.next += FRAME;
            f
        } else {
            return None;
        };
        // SAFETY: the frame lies in the pool's range, which `new`'s contract
        // makes identity-mapped, writable and exclusive; it is not in use
        // (fresh or on the free list).
        unsafe { core::ptr::write_bytes(frame as *mut u8, 0, FRAME as usize) };
        self.allocated += 1;
        Some(frame)
    }

    /// `n` physically contiguous zeroed frames from the bump region (the
    /// host stack); returns the first address.
    pub fn allocate_contiguous(&mut self, n: u64) -> Option<u64> {
        let bytes = n.checked_mul(FRAME)?;
        if self.end - self.next < bytes {
            return None;
        }
        let start = self.next;
        self.next += bytes;
        // SAFETY: as in `allocate`: pool memory, exclusive, not in use.
        unsafe { core::ptr::write_bytes(start as *mut u8, 0, bytes as usize) };
        self.allocated += n;
        Some(start)
    }

    /// Takes back a frame this pool handed out.
    pub fn free(&mut self, frame: u64) {
        debug_assert!(frame.is_multiple_of(FRAME));
        // SAFETY: the caller gives back a frame of this pool that it no
        // longer uses; its first word links the free list.
        unsafe { (frame as *mut u64).write(self.free.unwrap_or(0)) };
        self.free = Some(frame);
        self.free_count += 1;
        self.allocated -= 1;
    }

    /// The frame as a page-table pointer.
    pub fn table_ptr(frame: u64) -> NonNull<[u64; 512]> {
        NonNull::new(frame as *mut [u64; 512]).expect("frame 0 is never handed out")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(4096))]
    struct Arena([u8; 8 * 4096]);

    #[test]
    fn allocates_zeroed_frames_and_reuses_freed_ones() {
        let mut arena = Box::new(Arena([0xaa; 8 * 4096]));
        let base = arena.0.as_mut_ptr() as u64;
        // SAFETY: the arena is a live, 4 KiB-aligned heap block used only by
        // this pool during the test (host address = "physical" address).
        let mut pool = unsafe { FramePool::new(PhysRange::new(base, 8 * 4096)) };
        let a = pool.allocate().unwrap();
        assert_eq!(a, base);
        assert!(arena.0[..4096].iter().all(|&b| b == 0));
        let s = pool.allocate_contiguous(3).unwrap();
        assert_eq!(s, base + 4096);
        assert_eq!(pool.remaining(), 4);
        assert_eq!(pool.allocated(), 4);
        pool.free(a);
        assert_eq!(pool.available(), 5);
        let b = pool.allocate().unwrap();
        assert_eq!(b, a);
        assert!(arena.0[..4096].iter().all(|&b| b == 0));
        for _ in 0..4 {
            assert!(pool.allocate().is_some());
        }
        assert_eq!(pool.allocate(), None);
        assert_eq!(pool.allocate_contiguous(1), None);
    }
}
