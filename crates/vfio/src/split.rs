//! Which parts of a BAR are mapped straight into the guest and which are
//! trapped by tapir.
//!
//! A memory BAR whose VFIO region can be mmap'ed (the whole region, or the
//! areas of its sparse-mmap capability) is mapped into the guest with KVM
//! memory slots, page by page granularity, except the pages that hold the
//! MSI-X table or PBA: the guest's table writes must reach tapir, which
//! turns them into interrupt routes. Everything not mapped is trapped:
//! accesses exit to tapir, which serves the MSI-X table itself and passes
//! the rest to the device with pread/pwrite.

/// A byte range inside a BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    /// Offset from the start of the BAR.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Span {
    /// A span of `size` bytes at `offset`.
    pub const fn new(offset: u64, size: u64) -> Self {
        Self { offset, size }
    }

    /// First byte past the span (saturating).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.size)
    }
}

/// How one BAR is split (both lists sorted, non-overlapping, and together
/// covering the whole BAR).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BarSplit {
    /// Mapped into the guest (page aligned, whole pages).
    pub mapped: Vec<Span>,
    /// Trapped by tapir.
    pub trapped: Vec<Span>,
}

/// Splits a BAR of `bar_size` bytes.
///
/// `mmappable` are the areas the device lets userspace mmap (the whole
/// region for a plain `VFIO_REGION_INFO_FLAG_MMAP` region, the sparse-mmap
/// areas otherwise, nothing for a region without the flag); `holes` are the
/// MSI-X table and PBA when they live in this BAR. A BAR smaller than a
/// page is never mapped (its guest address need not be page aligned).
/// Areas that are not page aligned shrink to the pages inside them; holes
/// grow to the pages around them.
pub fn split_bar(bar_size: u64, mmappable: &[Span], holes: &[Span], page_size: u64) -> BarSplit {
    let page = page_size.max(1);
    let mut mapped: Vec<(u64, u64)> = Vec::new();
    if bar_size >= page && page.is_power_of_two() {
        for area in mmappable {
            let start = area.offset.checked_next_multiple_of(page);
            let end = area.end().min(bar_size) / page * page;
            if let Some(start) = start.filter(|s| *s < end) {
                mapped.push((start, end));
            }
        }
        for hole in holes.iter().filter(|h| h.size > 0) {
            let hs = hole.offset / page * page;
            let he = hole
                .end()
                .checked_next_multiple_of(page)
                .unwrap_or(u64::MAX);
            mapped = mapped
                .into_iter()
                .flat_map(|(s, e)| {
                    let mut parts = Vec::with_capacity(2);
                    if hs >= e || he <= s {
                        parts.push((s, e));
                    } else {
                        if s < hs {
                            parts.push((s, hs));
                        }
                        if he < e {
                            parts.push((he, e));
                        }
                    }
                    parts
                })
                .collect();
        }
        mapped.sort_unstable();
        // Merge overlapping or touching areas (sparse areas may abut).
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(mapped.len());
        for (s, e) in mapped {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        mapped = merged;
    }
    let mut trapped = Vec::new();
    let mut pos = 0;
    for (s, e) in &mapped {
        if *s > pos {
            trapped.push(Span::new(pos, s - pos));
        }
        pos = *e;
    }
    if pos < bar_size {
        trapped.push(Span::new(pos, bar_size - pos));
    }
    BarSplit {
        mapped: mapped
            .into_iter()
            .map(|(s, e)| Span::new(s, e - s))
            .collect(),
        trapped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 0x1000;

    fn spans(v: &[(u64, u64)]) -> Vec<Span> {
        v.iter().map(|(o, s)| Span::new(*o, *s)).collect()
    }

    #[test]
    fn whole_bar_without_msix() {
        let s = split_bar(0x2_0000, &spans(&[(0, 0x2_0000)]), &[], PAGE);
        assert_eq!(s.mapped, spans(&[(0, 0x2_0000)]));
        assert!(s.trapped.is_empty());
    }

    #[test]
    fn not_mmappable_is_all_trapped() {
        let s = split_bar(0x4000, &[], &[], PAGE);
        assert!(s.mapped.is_empty());
        assert_eq!(s.trapped, spans(&[(0, 0x4000)]));
    }

    #[test]
    fn small_bar_is_trapped() {
        // A 256-byte BAR can sit at any 256-byte aligned address.
        let s = split_bar(0x100, &spans(&[(0, 0x100)]), &[], PAGE);
        assert!(s.mapped.is_empty());
        assert_eq!(s.trapped, spans(&[(0, 0x100)]));
    }

    #[test]
    fn table_and_pba_in_one_page_at_the_start() {
        // e1000e-like: a 16 KiB BAR with table at 0 (5 vectors) and PBA at 0x2000... here both in page 0.
        let s = split_bar(
            0x4000,
            &spans(&[(0, 0x4000)]),
            &spans(&[(0, 5 * 16), (0x800, 8)]),
            PAGE,
        );
        assert_eq!(s.mapped, spans(&[(0x1000, 0x3000)]));
        assert_eq!(s.trapped, spans(&[(0, 0x1000)]));
    }

    #[test]
    fn table_in_the_middle() {
        // Table at 0x3000..0x3800, PBA at 0x5000: three holes' worth of pages.
        let s = split_bar(
            0x10000,
            &spans(&[(0, 0x10000)]),
            &spans(&[(0x3000, 0x800), (0x5000, 8)]),
            PAGE,
        );
        assert_eq!(
            s.mapped,
            spans(&[(0, 0x3000), (0x4000, 0x1000), (0x6000, 0xa000)])
        );
        assert_eq!(s.trapped, spans(&[(0x3000, 0x1000), (0x5000, 0x1000)]));
    }

    #[test]
    fn table_spanning_pages_unaligned() {
        // 256 vectors = 4 KiB of table starting mid-page: two pages trapped.
        let s = split_bar(
            0x8000,
            &spans(&[(0, 0x8000)]),
            &spans(&[(0x1800, 0x1000)]),
            PAGE,
        );
        assert_eq!(s.mapped, spans(&[(0, 0x1000), (0x3000, 0x5000)]));
        assert_eq!(s.trapped, spans(&[(0x1000, 0x2000)]));
    }

    #[test]
    fn sparse_areas() {
        // The kernel's sparse areas already leave the table page out;
        // holes still apply, unaligned areas shrink, areas past the BAR
        // are clamped.
        let s = split_bar(
            0x10000,
            &spans(&[(0, 0x2000), (0x3000, 0x2800), (0xf000, 0x4000)]),
            &spans(&[(0x2000, 0x100)]),
            PAGE,
        );
        assert_eq!(
            s.mapped,
            spans(&[(0, 0x2000), (0x3000, 0x2000), (0xf000, 0x1000)])
        );
        assert_eq!(s.trapped, spans(&[(0x2000, 0x1000), (0x5000, 0xa000)]));
        // Abutting areas merge.
        let s = split_bar(0x4000, &spans(&[(0, 0x2000), (0x2000, 0x2000)]), &[], PAGE);
        assert_eq!(s.mapped, spans(&[(0, 0x4000)]));
    }

    #[test]
    fn bigger_pages() {
        let s = split_bar(
            0x20000,
            &spans(&[(0, 0x20000)]),
            &spans(&[(0x1000, 0x10), (0x11000, 8)]),
            0x10000,
        );
        assert!(s.mapped.is_empty());
        assert_eq!(s.trapped, spans(&[(0, 0x20000)]));
    }

    #[test]
    fn hostile_numbers_do_not_panic() {
        let s = split_bar(
            u64::MAX,
            &spans(&[(u64::MAX - 5, u64::MAX), (0, u64::MAX)]),
            &spans(&[(u64::MAX - 1, 10), (0, 0)]),
            PAGE,
        );
        assert!(!s.mapped.is_empty());
        let s = split_bar(0x4000, &spans(&[(0, 0x4000)]), &[], 0);
        assert_eq!(s.mapped, spans(&[(0, 0x4000)]));
        let s = split_bar(0x4000, &spans(&[(0, 0x4000)]), &[], 3000);
        assert!(s.mapped.is_empty());
    }
}
