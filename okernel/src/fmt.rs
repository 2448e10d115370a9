//! Formatting into a fixed buffer, so messages with values can be handed to
//! the loader's `report` callback as `&str` without an allocator.

// Safe code only above the hardware layers (`hw`, `arch`, `launch`):
// issue 14, DESIGN.md §6.
#![forbid(unsafe_code)]

use core::fmt;

/// A fixed-capacity string; writes past the end are cut off at a character
/// boundary and marked with `...`.
#[derive(Clone)]
pub struct FixedString<const N: usize> {
    buf: [u8; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> Default for FixedString<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FixedString<N> {
    /// An empty string.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            truncated: false,
        }
    }

    /// Formats `args` into a new string.
    pub fn from_fmt(args: fmt::Arguments<'_>) -> Self {
        let mut s = Self::new();
        // Writing never fails: overflow truncates.
        let _ = fmt::write(&mut s, args);
        s
    }

    /// The text written so far.
    pub fn as_str(&self) -> &str {
        // Only whole UTF-8 characters are ever copied in (see `write_str`).
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// Whether something was cut off.
    pub const fn truncated(&self) -> bool {
        self.truncated
    }
}

impl<const N: usize> fmt::Write for FixedString<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.truncated {
            return Ok(());
        }
        let room = N.saturating_sub(self.len);
        if s.len() <= room {
            self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
            return Ok(());
        }
        self.truncated = true;
        let keep_room = room.saturating_sub(3);
        let mut cut = keep_room.min(s.len());
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.buf[self.len..self.len + cut].copy_from_slice(&s.as_bytes()[..cut]);
        self.len += cut;
        let dots = (N - self.len).min(3);
        self.buf[self.len..self.len + dots].copy_from_slice(&b"..."[..dots]);
        self.len += dots;
        Ok(())
    }
}

impl<const N: usize> fmt::Display for FixedString<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for FixedString<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_truncates() {
        let s = FixedString::<16>::from_fmt(format_args!("a={} b={}", 1, 2));
        assert_eq!(s.as_str(), "a=1 b=2");
        assert!(!s.truncated());
        let t = FixedString::<8>::from_fmt(format_args!("{}", "0123456789"));
        assert_eq!(t.as_str(), "01234...");
        assert!(t.truncated());
        let u = FixedString::<6>::from_fmt(format_args!("{}", "ééé"));
        assert!(u.as_str().len() <= 6);
    }
}
