//! How a merged block is cut into time slices, and which slice a trace goes to.
//!
//! A merge cuts its window into equal stretches of time, about one full row group of spans
//! each, and writes every trace into the stretch its start falls in (see
//! [`super::meta::BlockSlice`] for why). Few slices keep trace lookups cheap (one row group per
//! slice can hold an ID); narrow ones keep time-bounded reads cheap. At most [`MAX_SLICES`],
//! as each has two row groups in progress while the merge runs.

/// Most slices in a block: what a merge holds in progress is two row groups per slice.
pub const MAX_SLICES: usize = 16;

/// Equal stretches of `[start, end]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceGrid {
    start: u64,
    width: u64,
    count: usize,
}

impl SliceGrid {
    /// The grid for a merge of `spans` spans over `[start, end]` into row groups of
    /// `group_rows`: one slice per full row group of spans, at most [`MAX_SLICES`].
    pub fn new(start: u64, end: u64, spans: u64, group_rows: usize) -> Self {
        let wanted = spans.div_ceil(group_rows.max(1) as u64);
        let count = wanted.clamp(1, MAX_SLICES as u64) as usize;
        let span = end.saturating_sub(start).saturating_add(1);
        Self {
            start,
            width: span.div_ceil(count as u64).max(1),
            count,
        }
    }

    /// Slices in the grid.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The slice of a trace starting at `start` (times outside the grid go to its ends).
    pub fn slice_of(&self, start: u64) -> usize {
        let i = start.saturating_sub(self.start) / self.width;
        (i as usize).min(self.count - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_has_a_slice_per_row_group_of_spans_up_to_the_cap() {
        assert_eq!(SliceGrid::new(0, 999, 10, 100).count(), 1);
        assert_eq!(SliceGrid::new(0, 999, 250, 100).count(), 3);
        assert_eq!(SliceGrid::new(0, 999, 1_000_000, 100).count(), MAX_SLICES);
        // An empty window still has its one slice.
        assert_eq!(SliceGrid::new(5, 5, 0, 100).count(), 1);
    }

    #[test]
    fn traces_go_to_the_stretch_their_start_falls_in() {
        // [0, 999] in 4 stretches of 250.
        let g = SliceGrid::new(0, 999, 400, 100);
        let got: Vec<usize> = [0, 249, 250, 500, 999, 5_000]
            .into_iter()
            .map(|t| g.slice_of(t))
            .collect();
        assert_eq!(got, [0, 0, 1, 2, 3, 3]);
        // Before the grid's start: the first slice.
        assert_eq!(SliceGrid::new(100, 199, 200, 100).slice_of(7), 0);
    }
}
