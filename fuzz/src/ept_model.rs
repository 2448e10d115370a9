//! A reference model of an EPT view for the `ept_ops` target: the mapped
//! guest-physical space as sorted, disjoint segments (start, end, host
//! address, attributes), so that a 1 GiB mapping costs one entry, not
//! 262,144 pages. Views and models are compared in a canonical form:
//! adjacent segments that continue each other (contiguous host addresses,
//! equal attributes) are merged.

use std::collections::BTreeMap;

use ept::{Attributes, FrameAllocator, Perms, View};

/// One mapped run: `[start, end)` to host `hpa`, with `attrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First guest-physical address.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    /// Host-physical address of `start`.
    pub hpa: u64,
    /// Rights and memory type.
    pub attrs: Attributes,
}

/// The model: segments keyed by their start.
#[derive(Debug, Clone, Default)]
pub struct Model(BTreeMap<u64, Segment>);

impl Model {
    /// Cuts segments so that `at` is a boundary.
    fn split_at(&mut self, at: u64) {
        let Some((_, &seg)) = self.0.range(..at).next_back() else {
            return;
        };
        if seg.end <= at {
            return;
        }
        let left = Segment { end: at, ..seg };
        let right = Segment {
            start: at,
            hpa: seg.hpa + (at - seg.start),
            ..seg
        };
        self.0.insert(left.start, left);
        self.0.insert(right.start, right);
    }

    /// Removes everything in `[start, end)`.
    pub fn unmap(&mut self, start: u64, end: u64) {
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<u64> = self.0.range(start..end).map(|(&k, _)| k).collect();
        for k in keys {
            self.0.remove(&k);
        }
    }

    /// Maps `[start, end)` to `hpa` with `attrs`, replacing what was there.
    pub fn map(&mut self, start: u64, end: u64, hpa: u64, attrs: Attributes) {
        self.unmap(start, end);
        self.0.insert(
            start,
            Segment {
                start,
                end,
                hpa,
                attrs,
            },
        );
    }

    /// Sets the rights of every mapped page of `[start, end)`.
    pub fn protect(&mut self, start: u64, end: u64, perms: Perms) {
        self.split_at(start);
        self.split_at(end);
        for seg in self.0.range_mut(start..end).map(|(_, s)| s) {
            seg.attrs.perms = perms;
        }
    }

    /// The canonical form.
    pub fn canonical(&self) -> Vec<Segment> {
        canonical(self.0.values().copied())
    }
}

/// Merges adjacent segments that continue each other.
pub fn canonical(segments: impl Iterator<Item = Segment>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for s in segments {
        if let Some(last) = out.last_mut()
            && last.end == s.start
            && last.hpa.checked_add(last.end - last.start) == Some(s.hpa)
            && last.attrs == s.attrs
        {
            last.end = s.end;
            continue;
        }
        out.push(s);
    }
    out
}

/// A view's leaf mappings in canonical form. Panics if a leaf carries
/// accessed/dirty flags nobody set or leaves are out of order.
pub fn of_view<A: FrameAllocator>(view: &View<A>) -> Vec<Segment> {
    let mut last_end = 0;
    canonical(view.mappings().map(|m| {
        assert!(
            !m.accessed && !m.dirty,
            "leaf {m:?} has A/D flags nobody set"
        );
        assert!(m.gpa.0 >= last_end, "leaf {m:?} out of order");
        last_end = m.gpa.0 + m.size.bytes();
        Segment {
            start: m.gpa.0,
            end: m.gpa.0 + m.size.bytes(),
            hpa: m.hpa.0,
            attrs: m.attrs,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_protect_unmap() {
        let mut m = Model::default();
        m.map(0, 0x4000, 0x10_0000, Attributes::RAM);
        m.protect(0x1000, 0x2000, Perms::R);
        assert_eq!(m.canonical().len(), 3);
        m.protect(0x1000, 0x2000, Perms::RWX);
        assert_eq!(m.canonical().len(), 1);
        m.unmap(0x1000, 0x3000);
        let c = m.canonical();
        assert_eq!(c.len(), 2);
        assert_eq!((c[1].start, c[1].hpa), (0x3000, 0x10_3000));
    }
}
