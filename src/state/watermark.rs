//! The low watermark and the checkpoint gate: a change-feed page's resume token may be saved only once
//! every event up to that page's last seq has a terminal outcome (ARCHITECTURE.md §3).

use std::collections::{BTreeSet, VecDeque};

/// Tracks which seqs have finished; `covered()` is the largest W with every seq ≤ W finished.
#[derive(Debug, Clone)]
pub struct Watermark {
    next_unfinished: u64,
    finished_above: BTreeSet<u64>,
}

impl Watermark {
    /// A watermark for a run whose first seq is `first_seq`.
    pub fn new(first_seq: u64) -> Self {
        Watermark { next_unfinished: first_seq, finished_above: BTreeSet::new() }
    }

    /// Marks `seq` finished; true the first time (idempotent: a seq finished before changes nothing).
    pub fn finish(&mut self, seq: u64) -> bool {
        if seq < self.next_unfinished || !self.finished_above.insert(seq) {
            return false;
        }
        while self.finished_above.remove(&self.next_unfinished) {
            self.next_unfinished += 1;
        }
        true
    }

    /// Every seq strictly below this is finished.
    pub fn next_unfinished(&self) -> u64 {
        self.next_unfinished
    }

    /// True when every seq ≤ `seq` is finished.
    pub fn covers(&self, seq: u64) -> bool {
        seq < self.next_unfinished
    }

    /// Finished seqs still waiting for an earlier one (a measure of out-of-order completion).
    pub fn pending_above(&self) -> usize {
        self.finished_above.len()
    }
}

/// Checkpoints offered by the feed, each valid once the watermark covers `last_seq`.
#[derive(Debug, Clone)]
pub struct CheckpointGate<C> {
    marks: VecDeque<(u64, C)>,
}

impl<C> Default for CheckpointGate<C> {
    fn default() -> Self {
        CheckpointGate { marks: VecDeque::new() }
    }
}

impl<C> CheckpointGate<C> {
    /// Offers the checkpoint that resumes after the page whose last event is `last_seq`
    /// (`first_seq - 1` for an empty page at the start). Marks must be offered in feed order.
    pub fn offer(&mut self, last_seq: u64, checkpoint: C) {
        self.marks.push_back((last_seq, checkpoint));
    }

    /// The newest offered checkpoint the watermark (every seq below `next_unfinished` is finished)
    /// now covers, if any; older ones are dropped.
    pub fn take_ready(&mut self, next_unfinished: u64) -> Option<C> {
        let mut ready = None;
        while let Some((last, _)) = self.marks.front() {
            if *last >= next_unfinished {
                break;
            }
            ready = self.marks.pop_front().map(|(_, c)| c);
        }
        ready
    }

    /// Every offered item the watermark now covers, oldest first (for items that must all be acted
    /// on, not only the newest).
    pub fn take_all_ready(&mut self, next_unfinished: u64) -> Vec<C> {
        let mut ready = Vec::new();
        while self.marks.front().is_some_and(|(last, _)| *last < next_unfinished) {
            ready.extend(self.marks.pop_front().map(|(_, c)| c));
        }
        ready
    }

    /// Checkpoints not yet saved.
    pub fn pending(&self) -> usize {
        self.marks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn advances_only_over_a_contiguous_prefix() {
        let mut w = Watermark::new(1);
        w.finish(2);
        assert!(!w.covers(1) && !w.covers(2));
        assert!(w.finish(1) && !w.finish(1) && !w.finish(2));
        assert!(w.covers(2) && !w.covers(3));
    }

    #[test]
    fn gate_releases_the_newest_covered_mark() {
        let mut w = Watermark::new(1);
        let mut g = CheckpointGate::default();
        g.offer(2, "a");
        g.offer(4, "b");
        w.finish(1);
        assert_eq!(g.take_ready(w.next_unfinished()), None);
        w.finish(2);
        w.finish(3);
        assert_eq!(g.take_ready(w.next_unfinished()), Some("a"));
        w.finish(4);
        assert_eq!(g.take_ready(w.next_unfinished()), Some("b"));
        assert_eq!(g.pending(), 0);
    }

    proptest! {
        /// Whatever order outcomes arrive in, a saved checkpoint never covers an unfinished event.
        #[test]
        fn never_saves_past_an_unfinished_event(
            order in Just((1u64..=60).collect::<Vec<_>>()).prop_shuffle(),
            page_ends in proptest::collection::btree_set(1u64..=60, 1..15),
            stop_after in 0usize..=60,
        ) {
            let mut w = Watermark::new(1);
            let mut g = CheckpointGate::default();
            for end in &page_ends { g.offer(*end, *end); }
            let mut finished = BTreeSet::new();
            let mut saved = 0u64;
            for seq in order.iter().take(stop_after) {
                w.finish(*seq);
                finished.insert(*seq);
                if let Some(end) = g.take_ready(w.next_unfinished()) { saved = end; }
                // Every event up to the saved page end has finished.
                prop_assert!((1..=saved).all(|s| finished.contains(&s)));
            }
            // And the gate is not lazy: everything covered was released.
            let covered = page_ends.iter().filter(|e| (1..=**e).all(|s| finished.contains(&s))).max().copied().unwrap_or(0);
            prop_assert_eq!(saved.max(covered), saved);
        }
    }
}
