//! Committer: the only writer of the store. Groups outcomes into one atomic fjall batch, advances the
//! low watermark, saves the feed checkpoint only when the watermark covers it (synced to disk), and
//! releases the next waiting event of each finished file.

use super::dedup::InFlight;
use super::{CommitMsg, Emit, Replay, Stage, StageError};
use crate::model::{ChangeEvent, OutcomeKind};
use crate::state::watermark::{CheckpointGate, Watermark};
use crate::state::{Checkpoint, CommitBatch, Store};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Progress the committer publishes (for `--once`, the progress line and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Outcomes committed this run.
    pub outcomes: u64,
    /// Files written.
    pub committed: u64,
    /// Files removed.
    pub removed: u64,
    /// Events skipped.
    pub skipped: u64,
    /// Files dead-lettered this run.
    pub dead_lettered: u64,
    /// Bytes written.
    pub bytes: u64,
    /// The feed caught up and every event has an outcome (`--once` is done).
    pub caught_up: bool,
}

/// The committer stage.
pub struct Committer {
    /// Store.
    pub store: Store,
    /// Low watermark.
    pub watermark: Watermark,
    /// Checkpoints waiting for the watermark.
    pub gate: CheckpointGate<Checkpoint>,
    /// Shared with dedup.
    pub in_flight: Arc<InFlight>,
    /// Dedup's input, for released waiting events.
    pub release: mpsc::Sender<ChangeEvent>,
    /// Published progress.
    pub progress: watch::Sender<Progress>,
    /// Seq the feed reported as its last, in `--once` mode.
    pub caught_up_at: Option<u64>,
    /// Failure injection.
    pub faults: Arc<super::FailureInjector>,
}

impl Committer {
    /// A committer for a run whose first seq is `first_seq`.
    pub fn new(store: Store, first_seq: u64, in_flight: Arc<InFlight>, release: mpsc::Sender<ChangeEvent>, progress: watch::Sender<Progress>, faults: Arc<super::FailureInjector>) -> Self {
        Committer { store, watermark: Watermark::new(first_seq), gate: CheckpointGate::default(), in_flight, release, progress, caught_up_at: None, faults }
    }

    fn absorb(&mut self, msgs: Vec<CommitMsg>) -> CommitBatch {
        let mut batch = CommitBatch::default();
        for m in msgs {
            match m {
                CommitMsg::Outcome(o) => {
                    self.watermark.finish(o.seq.0);
                    batch.outcomes.push(o);
                }
                CommitMsg::Mark { last_seq, checkpoint } => self.gate.offer(last_seq, checkpoint),
                CommitMsg::FeedCaughtUp { last_seq } => self.caught_up_at = Some(last_seq),
            }
        }
        batch.checkpoint = self.gate.take_ready(&self.watermark);
        batch.next_seq = self.watermark.next_unfinished().max(batch.outcomes.iter().map(|o| o.seq.0 + 1).max().unwrap_or(0));
        batch
    }

    fn publish(&self, batch: &CommitBatch) {
        self.progress.send_modify(|p| {
            for o in &batch.outcomes {
                p.outcomes += 1;
                match &o.kind {
                    OutcomeKind::Committed(r) => {
                        p.committed += 1;
                        p.bytes += r.size;
                    }
                    OutcomeKind::Removed { .. } => p.removed += 1,
                    OutcomeKind::Skipped(_) | OutcomeKind::FolderRecorded(_) => p.skipped += 1,
                    OutcomeKind::DeadLettered(_) => p.dead_lettered += 1,
                }
            }
            p.caught_up = self.caught_up_at.is_some_and(|s| self.watermark.covers(s)) && self.gate.pending() == 0;
        });
    }

    /// Hands each finished file's waiting event back to dedup without ever blocking the committer.
    fn release_waiting(&self, batch: &CommitBatch) {
        for o in &batch.outcomes {
            if let Some(next) = self.in_flight.finish(&o.file_id, o.seq.0) {
                if let Err(mpsc::error::TrySendError::Full(ev)) = self.release.try_send(next) {
                    let tx = self.release.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(ev).await;
                    });
                }
            }
        }
    }
}

impl Stage for Committer {
    type In = CommitMsg;
    type Out = ();
    const NAME: &'static str = "committer";
    const BATCH: usize = 1024;

    async fn process(&mut self, items: Vec<CommitMsg>, _emit: &Emit<()>) -> Result<(), StageError> {
        self.faults.check(Self::NAME)?;
        let batch = self.absorb(items);
        let store = self.store.clone();
        let batch = tokio::task::spawn_blocking(move || store.apply(&batch).map(|_| batch))
            .await
            .map_err(|e| StageError::Fatal(format!("store task: {e}")))?
            .map_err(|e| StageError::Fatal(e.to_string()))?;
        if batch.checkpoint.is_some() {
            tracing::debug!(watermark = self.watermark.next_unfinished(), "checkpoint saved");
        }
        for o in &batch.outcomes {
            crate::metrics::event(Self::NAME, outcome_label(&o.kind));
        }
        if batch.outcomes.iter().any(|o| matches!(o.kind, OutcomeKind::DeadLettered(_) | OutcomeKind::Committed(_))) {
            if let Ok(d) = self.store.dead_letters() {
                crate::metrics::dlq_files(d.len());
            }
        }
        self.release_waiting(&batch);
        self.publish(&batch);
        Ok(())
    }

    fn replay(item: &CommitMsg) -> Replay {
        Replay::Committer(item.clone())
    }
}

/// Label of an outcome for metrics.
pub fn outcome_label(k: &OutcomeKind) -> &'static str {
    match k {
        OutcomeKind::Committed(_) => "committed",
        OutcomeKind::FolderRecorded(_) => "folder",
        OutcomeKind::Removed { .. } => "removed",
        OutcomeKind::Skipped(_) => "skipped",
        OutcomeKind::DeadLettered(_) => "dead_lettered",
    }
}
