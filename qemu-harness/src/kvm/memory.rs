//! Guest RAM: one anonymous private mapping that backs guest physical
//! addresses `[0, size)` in a single KVM memory slot.

use super::KvmError;

/// The size of a guest page, the unit of the dirty log.
pub const PAGE_SIZE: usize = 4096;

/// Guest RAM, guest-physical address 0 at offset 0.
#[derive(Debug)]
pub struct GuestRam {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: `GuestRam` owns its mapping exclusively (no aliasing Rust
// references are handed out beyond `&self`/`&mut self` borrows), so moving
// it to another thread moves sole ownership of the pages with it.
unsafe impl Send for GuestRam {}

impl GuestRam {
    /// Maps `len` bytes (a multiple of [`PAGE_SIZE`]) of zeroed memory.
    pub fn new(len: usize) -> Result<Self, KvmError> {
        assert!(
            len > 0 && len.is_multiple_of(PAGE_SIZE),
            "guest RAM of {len} bytes"
        );
        // SAFETY: an anonymous private mapping at an address of the
        // kernel's choosing aliases no existing memory; the result is
        // checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(KvmError::Memory {
                bytes: len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the size is zero (never: kept for the clippy convention).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The host address of guest-physical address 0 (for KVM's memslot).
    pub fn host_addr(&self) -> u64 {
        self.ptr as u64
    }

    /// All of guest RAM.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self`
        // lives. The guest may write them concurrently only while a vCPU
        // runs, which needs `&mut` of the VM that owns this RAM, so no
        // guest write overlaps this shared borrow.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// All of guest RAM, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only
        // reference into the mapping.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The bytes at `[addr, addr + len)`, or `None` outside RAM.
    pub fn get(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr).ok()?;
        self.as_slice().get(start..start.checked_add(len)?)
    }

    /// Writes `bytes` at `addr`; `false` (and nothing written) when any of
    /// them falls outside RAM.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) -> bool {
        let Ok(start) = usize::try_from(addr) else {
            return false;
        };
        match start
            .checked_add(bytes.len())
            .and_then(|end| self.as_mut_slice().get_mut(start..end))
        {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }
}

impl loader::bootinfo::PhysMem for GuestRam {
    fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        self.get(addr, len)
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, and
        // the VM that used it as a memslot is dropped first (it is a field
        // declared before the RAM in `Vm`).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_inside_only() {
        let mut ram = GuestRam::new(2 * PAGE_SIZE).unwrap();
        assert!(ram.as_slice().iter().all(|&b| b == 0));
        assert!(ram.write(0x1ffe, b"ok"));
        assert_eq!(ram.get(0x1ffe, 2), Some(&b"ok"[..]));
        assert!(!ram.write(0x1fff, b"ok"));
        assert_eq!(ram.get(0x1fff, 2), None);
        assert!(!ram.write(u64::MAX, b"x"));
        assert_eq!(ram.get(u64::MAX, 1), None);
    }
}
