//! The reference model: one entry per 4 KiB page of a window of
//! guest-physical space, holding the host page and attributes it maps to.
//! It knows nothing about tables; it only says what every page must
//! translate to, and how few tables a canonical tree needs for that.

use ept::{Attributes, EptCaps, Gpa, PageSize, Perms, View};

use super::pool::Pool;

const PAGE: u64 = 4096;

/// What one page maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub hpa: u64,
    pub attrs: Attributes,
}

/// Pages `[base, base + 4096 * pages.len())`; everything outside is unmapped.
#[derive(Debug, Clone)]
pub struct Model {
    base: u64,
    pages: Vec<Option<Page>>,
}

impl Model {
    /// An empty window.
    pub fn new(base: u64, len: u64) -> Self {
        Model {
            base,
            pages: vec![None; (len / PAGE) as usize],
        }
    }

    /// The window as `(start, end)`.
    pub fn window(&self) -> (u64, u64) {
        (self.base, self.base + self.pages.len() as u64 * PAGE)
    }

    fn slots(&mut self, gpa: u64, len: u64) -> &mut [Option<Page>] {
        let first = ((gpa - self.base) / PAGE) as usize;
        &mut self.pages[first..first + (len / PAGE) as usize]
    }

    pub fn map(&mut self, gpa: u64, hpa: u64, len: u64, attrs: Attributes) {
        for (i, slot) in self.slots(gpa, len).iter_mut().enumerate() {
            *slot = Some(Page {
                hpa: hpa + i as u64 * PAGE,
                attrs,
            });
        }
    }

    pub fn unmap(&mut self, gpa: u64, len: u64) {
        self.slots(gpa, len).fill(None);
    }

    pub fn protect(&mut self, gpa: u64, len: u64, perms: Perms) {
        for page in self.slots(gpa, len).iter_mut().flatten() {
            page.attrs.perms = perms;
        }
    }

    /// What `gpa`'s page maps to.
    pub fn get(&self, gpa: u64) -> Option<Page> {
        let i = gpa.checked_sub(self.base)? / PAGE;
        self.pages.get(i as usize).copied().flatten()
    }

    /// The window's pages inside `[start, start + size)`.
    fn region(&self, start: u64, size: u64) -> &[Option<Page>] {
        let (lo, hi) = self.window();
        let (a, b) = (start.max(lo), (start + size).min(hi));
        if a >= b {
            return &[];
        }
        &self.pages[((a - lo) / PAGE) as usize..((b - lo) / PAGE) as usize]
    }

    fn nonempty(&self, start: u64, size: u64) -> bool {
        self.region(start, size).iter().any(Option::is_some)
    }

    /// `true` if the region can be one leaf of `size`: fully inside the
    /// window, every page mapped with the same attributes to one contiguous
    /// host range that starts `size`-aligned.
    fn uniform(&self, start: u64, size: u64) -> bool {
        let pages = self.region(start, size);
        let Some(Some(first)) = pages.first() else {
            return false;
        };
        pages.len() as u64 * PAGE == size
            && first.hpa.is_multiple_of(size)
            && pages.iter().enumerate().all(|(i, p)| {
                *p == Some(Page {
                    hpa: first.hpa + i as u64 * PAGE,
                    attrs: first.attrs,
                })
            })
    }

    /// The number of tables in the smallest tree that maps exactly this:
    /// the PML4, a PDPT per non-empty 512 GiB region, a PD per non-empty
    /// 1 GiB region that cannot be a 1 GiB page, a PT per non-empty 2 MiB
    /// region (inside a PD) that cannot be a 2 MiB page.
    pub fn min_tables(&self, caps: &EptCaps) -> usize {
        let (lo, hi) = self.window();
        let regions = |size: u64, within: (u64, u64)| {
            let first = within.0.max(lo) / size * size;
            (first..within.1.min(hi)).step_by(size as usize)
        };
        let (s4, s3, s2) = (512 << 30, 1 << 30, 2 << 20);
        let mut total = 1;
        for r4 in regions(s4, (lo, hi)).filter(|&r| self.nonempty(r, s4)) {
            total += 1;
            for r3 in regions(s3, (r4, r4 + s4)) {
                if !self.nonempty(r3, s3) || (caps.allows(PageSize::Size1G) && self.uniform(r3, s3))
                {
                    continue;
                }
                total += 1;
                total += regions(s2, (r3, r3 + s3))
                    .filter(|&r2| {
                        self.nonempty(r2, s2)
                            && !(caps.allows(PageSize::Size2M) && self.uniform(r2, s2))
                    })
                    .count();
            }
        }
        total
    }

    /// Compares every page of the window with the view's leaf mappings
    /// (each leaf expanded into its 4 KiB pages) and checks the view maps
    /// nothing outside the window.
    pub fn check_mappings(&self, view: &View<Pool>) -> Result<(), String> {
        let (lo, hi) = self.window();
        let mut cursor = lo;
        for m in view.mappings() {
            let (start, size) = (m.gpa.0, m.size.bytes());
            if start < cursor || start + size > hi {
                return Err(format!("leaf {m:?} outside the window or out of order"));
            }
            if m.accessed || m.dirty {
                return Err(format!("leaf {m:?} has A/D flags nobody set"));
            }
            if let Some(gap) = (cursor..start)
                .step_by(PAGE as usize)
                .find(|&g| self.get(g).is_some())
            {
                return Err(format!(
                    "{gap:#x} is mapped in the model but not in the view"
                ));
            }
            for k in 0..size / PAGE {
                let want = Some(Page {
                    hpa: m.hpa.0 + k * PAGE,
                    attrs: m.attrs,
                });
                let gpa = start + k * PAGE;
                if self.get(gpa) != want {
                    return Err(format!("{gpa:#x}: model {:?}, view {m:?}", self.get(gpa)));
                }
            }
            cursor = start + size;
        }
        match (cursor..hi)
            .step_by(PAGE as usize)
            .find(|&g| self.get(g).is_some())
        {
            Some(g) => Err(format!("{g:#x} is mapped in the model but not in the view")),
            None => Ok(()),
        }
    }

    /// Translates every page of the window (and the pages just outside it)
    /// and compares with the model.
    pub fn check_every_page(&self, view: &View<Pool>) -> Result<(), String> {
        let (lo, hi) = self.window();
        for gpa in (lo.saturating_sub(PAGE)..=hi).step_by(PAGE as usize) {
            let offset = 0x123;
            let got = view
                .translate(Gpa(gpa + offset))
                .map_err(|e| e.to_string())?
                .map(|t| (t.hpa.0, t.page.attrs));
            let want = self.get(gpa).map(|p| (p.hpa + offset, p.attrs));
            if got != want {
                return Err(format!("{gpa:#x}: model {want:x?}, view {got:x?}"));
            }
        }
        Ok(())
    }
}
