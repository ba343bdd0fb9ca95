//! Compaction yields to flushing: a merge waits while the head's blocks wait to be written.
//!
//! Why: compaction and writing the head's cut blocks are both background work, and on a small
//! machine they share what ingest and queries leave of the CPU. A merge is never urgent; a cut
//! block is, since the head holds its spans until it is written, and a head at its budget
//! refuses every write (HEAD_FULL). In the 60k spans/s soak (2 cores, 4 tenants, 10-minute
//! windows) the minute a window closed, its merges took the CPU from the block writer, the
//! heads filled their 3 GiB budget, and ingest was refused for three minutes on end
//! (docs/benchmarks.md, "a window's merge under load"). Compaction now runs below the block
//! writer's priority ([`crate::priority::COMPACTION_NICE`]), and at every step (a merge's
//! hand-over of spans to its encoder, about 16k spans, and before each merge) it asks whether
//! flushing is behind; while it is, the merge sleeps, holding what it has read.
//!
//! A pause is bounded ([`MAX_PAUSE`]): a store whose flushing is behind for minutes is
//! overloaded, and its blocks must still merge, one step per pause, or every query would open
//! ever more of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a paused merge asks again.
const POLL: Duration = Duration::from_millis(200);

/// The longest a merge waits at one step before it takes the step anyway.
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

/// Whether background work should wait: true while flushing is behind.
pub type Behind = Arc<dyn Fn() -> bool + Send + Sync>;

/// When compaction waits (see the module docs).
#[derive(Clone, Default)]
pub struct Pace {
    behind: Option<Behind>,
    max_pause: Duration,
}

impl std::fmt::Debug for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pace")
            .field("yields", &self.behind.is_some())
            .finish()
    }
}

impl Pace {
    /// Never waits (a store without a head: `allegro compact`, benches, tests).
    pub fn never() -> Self {
        Self::default()
    }

    /// Waits while `behind` says so.
    pub fn yielding_to(behind: Behind) -> Self {
        Self {
            behind: Some(behind),
            max_pause: MAX_PAUSE,
        }
    }

    /// Returns at once when flushing is not behind; else when it has caught up, or after
    /// [`MAX_PAUSE`]. Returns how long it waited.
    pub async fn step(&self) -> Duration {
        let Some(behind) = &self.behind else {
            return Duration::ZERO;
        };
        let started = Instant::now();
        while behind() && started.elapsed() < self.max_pause {
            tokio::time::sleep(POLL).await;
        }
        started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

    #[tokio::test]
    async fn a_step_waits_until_flushing_has_caught_up_and_at_most_the_bound() {
        assert_eq!(Pace::never().step().await, Duration::ZERO);
        // Behind for the first three questions, then caught up.
        let asked = Arc::new(AtomicU32::new(0));
        let a = asked.clone();
        let pace = Pace::yielding_to(Arc::new(move || a.fetch_add(1, SeqCst) < 3));
        let waited = pace.step().await;
        assert!(waited >= POLL * 3, "{waited:?}");
        assert_eq!(asked.load(SeqCst), 4);
        pace.step().await;
        assert_eq!(asked.load(SeqCst), 5, "caught up: one question, no sleep");
        // Behind for good: the step is taken after the bound.
        let asked = Arc::new(AtomicU32::new(0));
        let a = asked.clone();
        let mut stuck = Pace::yielding_to(Arc::new(move || a.fetch_add(1, SeqCst) < u32::MAX));
        stuck.max_pause = POLL * 2;
        let waited = stuck.step().await;
        assert!(waited >= POLL * 2, "{waited:?}");
        assert!(
            asked.load(SeqCst) <= 3,
            "asked {} times",
            asked.load(SeqCst)
        );
    }
}
