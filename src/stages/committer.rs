//! Committer: the only writer of the store. Groups outcomes into one atomic fjall batch, advances the
//! low watermark, saves the feed checkpoint only when the watermark covers it (synced to disk), and
//! releases the next waiting event of each finished file.

use super::ledger::Ledger;
use super::{CommitMsg, Emit, Redo, Stage, StageError};
use crate::internal_events::InternalEvent;
use crate::model::StageName;
use crate::model::{ChangeEvent, OutcomeKind, Refresh, SkipReason};
use crate::state::watermark::CheckpointGate;
use crate::state::{ApplyReport, Checkpoint, CommitBatch, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

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
    /// Of those, Google files Drive has no export for (Forms, Sites…): reported, never silent.
    pub no_export: u64,
    /// Of those, files whose owner disabled downloads.
    pub download_disabled: u64,
    /// Of those, files Drive flagged as abusive (`acknowledge_abuse` is off, or cannot apply).
    pub abusive: u64,
    /// Of those, files whose download quota is used up: deferred for hours.
    pub quota_deferred: u64,
    /// Folders recorded.
    pub folders: u64,
    /// Files dead-lettered this run.
    pub dead_lettered: u64,
    /// Bytes written.
    pub bytes: u64,
    /// The feed caught up and every event has an outcome (`--once` is done).
    pub caught_up: bool,
}

/// What the committer must not forget across its own restarts besides the ledger: the checkpoints
/// waiting for the watermark, and whether the feed has caught up. Kept outside the actor (restart by
/// builder).
#[derive(Debug, Default)]
pub struct CommitState {
    /// Checkpoints waiting for the watermark.
    pub gate: CheckpointGate<Checkpoint>,
    /// Seq the feed reported as its last, in `--once` mode.
    pub caught_up_at: Option<u64>,
    /// Refresh requests the feed served, each cleared once the watermark covers its events.
    pub refreshed: CheckpointGate<Vec<(Refresh, u64)>>,
    /// A finished full listing, swept once the watermark covers it.
    pub sweeps: CheckpointGate<()>,
}

impl CommitState {
    /// True when the feed caught up and every event and checkpoint is done.
    pub fn caught_up(&self, ledger: &Ledger) -> bool {
        self.caught_up_at.is_some_and(|s| ledger.covers(s))
            && self.gate.pending() == 0
            && self.refreshed.pending() == 0
            && self.sweeps.pending() == 0
    }
}

/// What the committer writes to: one atomic batch at a time, and the few counts it reports. [`Store`](crate::state::Store)
/// (fjall) is the real one; unit tests use an in-memory log.
pub trait CommitLog: Clone + Send + Sync + 'static {
    /// Writes `batch` atomically (synced when it holds a checkpoint).
    fn apply(&self, batch: &CommitBatch) -> Result<ApplyReport, StoreError>;
    /// Whether refresh requests are recorded and not yet served.
    fn has_pending_refreshes(&self) -> Result<bool, StoreError>;
    /// Files in the dead-letter store.
    fn dead_letter_count(&self) -> Result<usize, StoreError>;
    /// Removes up to `limit` audit entries older than `cutoff_unix_ms`; returns how many.
    fn prune_audit(&self, cutoff_unix_ms: u64, limit: usize) -> Result<usize, StoreError>;
}

/// The committer stage.
pub struct Committer<L: CommitLog> {
    /// Store.
    pub store: L,
    /// Survives restarts.
    pub state: Arc<Mutex<CommitState>>,
    /// The pipeline's ledger: the committer alone finishes events in it.
    pub ledger: Arc<Ledger>,
    /// Dedup's redo lane, for a file's waiting event once the event before it is released.
    pub release: Redo<ChangeEvent>,
    /// Published progress.
    pub progress: watch::Sender<Progress>,
    /// The feed's next seq, saved so a later run continues the sequence.
    pub next_seq: Arc<AtomicU64>,
    /// Wakes the feed when refresh requests were recorded.
    pub refresh_wake: Arc<tokio::sync::Notify>,
    /// Audit entries older than this are pruned as the run goes (`[state] audit_retention`).
    pub audit_retention: std::time::Duration,
    /// When the next prune is due (`None`: at the next batch).
    pub next_prune: Option<std::time::Instant>,
}

/// Audit entries removed per prune, so a prune never makes one batch slow (a backlog goes over
/// several batches).
const PRUNE_LIMIT: usize = 10_000;
/// Time between prunes once the backlog is gone.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Folds messages into the state and the ledger's watermark, in place, and returns the batch to write.
/// Cost is proportional to the batch, never to the state: one slow event may hold the watermark while
/// later events finish (their seqs wait in the watermark, at most the ledger's limit of them), and each
/// batch still costs the same (criterion `committer/held_event_*`). In place is safe because nothing after it can fail and be retried: a store
/// write that fails is fatal, the run ends, and this state is dropped with it. A failure injected for
/// tests happens before it.
fn absorb(st: &mut CommitState, ledger: &Ledger, msgs: Vec<CommitMsg>, next_seq: u64) -> CommitBatch {
    let mut batch = CommitBatch::default();
    for m in msgs {
        match m {
            CommitMsg::Outcome(o) => {
                ledger.settle(o.seq);
                batch.outcomes.push(o);
            }
            CommitMsg::Mark { last_seq, checkpoint } => st.gate.offer(last_seq, checkpoint),
            CommitMsg::FeedCaughtUp { last_seq } => st.caught_up_at = Some(last_seq),
            CommitMsg::Refresh(requests) => batch.refresh_add.extend(requests),
            CommitMsg::Follows(follows) => batch.follows.extend(follows),
            CommitMsg::Folders(folders) => batch.folders.extend(folders),
            CommitMsg::Leftovers(keys) => batch.leftovers.extend(keys),
            CommitMsg::TreeStep(step) => batch.tree_steps.push(step),
            CommitMsg::ListingStarted => {
                batch.listing_started = true;
                batch.listed.clear();
            }
            CommitMsg::Listed(ids) => batch.listed.extend(ids),
            CommitMsg::ListingDone { last_seq } => st.sweeps.offer(last_seq, ()),
            CommitMsg::Refreshed { last_seq, done } => st.refreshed.offer(last_seq, done),
        }
    }
    let next_unfinished = ledger.next_unfinished();
    batch.checkpoint = st.gate.take_ready(next_unfinished);
    batch.refresh_done = st.refreshed.take_all_ready(next_unfinished).into_iter().flatten().collect();
    batch.sweep = !st.sweeps.take_all_ready(next_unfinished).is_empty();
    batch.next_seq = next_seq;
    batch
}

impl<L: CommitLog> Committer<L> {
    fn publish(&self, batch: &CommitBatch, caught_up: bool) {
        self.progress.send_modify(|p| {
            p.removed += batch.tree_steps.iter().filter(|s| s.remove).map(|s| s.files.len() as u64).sum::<u64>();
            for o in &batch.outcomes {
                p.outcomes += 1;
                match &o.kind {
                    OutcomeKind::Committed(r) => {
                        p.committed += 1;
                        p.bytes += r.size;
                    }
                    OutcomeKind::Removed { .. } => p.removed += 1,
                    OutcomeKind::FolderRecorded(_) => p.folders += 1,
                    OutcomeKind::TreeChanged(_) => p.folders += 1,
                    OutcomeKind::Skipped(reason) => {
                        p.skipped += 1;
                        crate::internal_events::SkipCommitted { reason: reason.label() }.emit();
                        match reason {
                            SkipReason::NoExport(_) => p.no_export += 1,
                            SkipReason::DownloadDisabled(_) => p.download_disabled += 1,
                            SkipReason::Abusive(_) | SkipReason::AbusiveNotOwned(_) => p.abusive += 1,
                            SkipReason::QuotaDeferred(_) => p.quota_deferred += 1,
                            _ => {}
                        }
                    }
                    OutcomeKind::DeadLettered(_) => p.dead_lettered += 1,
                }
            }
            p.caught_up = caught_up;
        });
    }

    /// Removes expired audit entries when a prune is due (bounded per call; see [`PRUNE_LIMIT`]).
    async fn prune_audit_when_due(&mut self) -> Result<(), StageError> {
        let now = std::time::Instant::now();
        if self.next_prune.is_some_and(|due| now < due) {
            return Ok(());
        }
        let cutoff = crate::model::unix_ms().saturating_sub(self.audit_retention.as_millis() as u64);
        let store = self.store.clone();
        let removed = tokio::task::spawn_blocking(move || store.prune_audit(cutoff, PRUNE_LIMIT))
            .await
            .map_err(|e| StageError::Fatal(format!("store task: {e}")))??;
        if removed > 0 {
            tracing::debug!(removed, "audit entries past the retention removed");
        }
        self.next_prune = Some(if removed == PRUNE_LIMIT { now } else { now + PRUNE_EVERY });
        Ok(())
    }

    /// Releases the written outcomes' events and hands the events that may go on now (each file's
    /// waiting event, those that waited for a content) to dedup's redo lane, which the ledger's limit
    /// sizes: the committer never waits on the stages it feeds.
    fn release_written(&self, batch: &CommitBatch) -> Result<(), StageError> {
        for o in &batch.outcomes {
            for next in self.ledger.release(&o.file_id, o.seq) {
                self.release.put(next)?;
            }
        }
        Ok(())
    }
}

impl<L: CommitLog> Stage for Committer<L> {
    type In = CommitMsg;
    type Out = ();
    const NAME: StageName = StageName::Committer;
    type Replay = CommitMsg;
    const BATCH: usize = 1024;

    async fn process(&mut self, items: Vec<CommitMsg>, _emit: &Emit<()>) -> Result<(), StageError> {
        let (batch, all_done) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let batch = absorb(&mut state, &self.ledger, items, self.next_seq.load(Ordering::SeqCst));
            (batch, state.caught_up(&self.ledger))
        };
        let store = self.store.clone();
        let (batch, report) = tokio::task::spawn_blocking(move || store.apply(&batch).map(|r| (batch, r)))
            .await
            .map_err(|e| StageError::Fatal(format!("store task: {e}")))??;
        if let Some(cp) = &batch.checkpoint {
            let lag_seconds = crate::model::unix_ms().saturating_sub(cp.read_at_unix_ms) as f64 / 1000.0;
            crate::internal_events::CheckpointSaved { lag_seconds }.emit();
            if matches!(cp.phase, crate::state::FeedPhase::Changes { .. }) {
                crate::health::initial_sync_done();
            }
        }
        if !batch.refresh_add.is_empty() {
            self.refresh_wake.notify_one();
        }
        // Refresh requests count as work to do: `--once` ends only when none is left.
        let caught_up = all_done && !self.store.has_pending_refreshes()?;
        for o in &batch.outcomes {
            crate::internal_events::ItemCounted { stage: Self::NAME.as_str(), outcome: outcome_label(&o.kind) }.emit();
        }
        if report.dead_letters_changed
            && let Ok(n) = self.store.dead_letter_count()
        {
            crate::internal_events::DeadLettersCounted { files: n }.emit();
        }
        self.release_written(&batch)?;
        self.publish(&batch, caught_up);
        self.prune_audit_when_due().await
    }

    fn replay(item: &CommitMsg) -> CommitMsg {
        item.clone()
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
        OutcomeKind::TreeChanged(_) => "tree",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangeSeq, FileId, Outcome};
    use crate::stages::testing;
    use crate::state::FeedPhase;

    /// The store in memory: every batch written, and a switch that makes writes fail.
    #[derive(Clone, Default)]
    struct Log {
        batches: Arc<Mutex<Vec<CommitBatch>>>,
        broken: bool,
        pending_refreshes: bool,
    }

    impl CommitLog for Log {
        fn apply(&self, batch: &CommitBatch) -> Result<ApplyReport, StoreError> {
            if self.broken {
                return Err(StoreError::Codec("injected".into()));
            }
            let copy = CommitBatch {
                outcomes: batch.outcomes.clone(),
                checkpoint: batch.checkpoint.clone(),
                next_seq: batch.next_seq,
                ..Default::default()
            };
            self.batches.lock().unwrap().push(copy);
            Ok(ApplyReport::default())
        }
        fn has_pending_refreshes(&self) -> Result<bool, StoreError> {
            Ok(self.pending_refreshes)
        }
        fn dead_letter_count(&self) -> Result<usize, StoreError> {
            Ok(0)
        }
        fn prune_audit(&self, _: u64, _: usize) -> Result<usize, StoreError> {
            Ok(0)
        }
    }

    struct Rig {
        committer: Committer<Log>,
        log: Log,
        progress: watch::Receiver<Progress>,
        ledger: Arc<Ledger>,
    }

    fn rig(log: Log) -> Rig {
        let ledger = Arc::new(Ledger::new(1, 64));
        let (release, _) = testing::redo("dedup");
        let (progress_tx, progress) = watch::channel(Progress::default());
        let committer = Committer {
            store: log.clone(),
            state: Arc::default(),
            ledger: ledger.clone(),
            release,
            progress: progress_tx,
            next_seq: Arc::new(AtomicU64::new(3)),
            refresh_wake: Arc::default(),
            audit_retention: std::time::Duration::from_secs(3600),
            next_prune: None,
        };
        Rig { committer, log, progress, ledger }
    }

    fn skipped(seq: u64) -> CommitMsg {
        let kind = OutcomeKind::Skipped(SkipReason::Unchanged);
        CommitMsg::Outcome(Outcome { seq: ChangeSeq(seq), file_id: FileId(format!("f{seq}")), kind })
    }

    fn checkpoint(token: &str) -> Checkpoint {
        Checkpoint {
            start_token: "t0".into(),
            phase: FeedPhase::Changes { token: token.into() },
            read_at_unix_ms: 1,
            feeds: vec![],
        }
    }

    #[tokio::test]
    async fn a_checkpoint_is_saved_only_once_every_event_before_it_is_committed() {
        let mut r = rig(Log::default());
        let (emit, _taps) = testing::emit::<()>();
        let mark = CommitMsg::Mark { last_seq: 2, checkpoint: checkpoint("after-2") };
        r.committer.process(vec![skipped(1), mark], &emit).await.unwrap();
        assert_eq!(r.log.batches.lock().unwrap()[0].checkpoint, None, "seq 2 is not committed yet");
        r.committer.process(vec![skipped(2)], &emit).await.unwrap();
        let batches = r.log.batches.lock().unwrap();
        assert_eq!(batches[1].checkpoint, Some(checkpoint("after-2")));
        assert_eq!(batches.iter().map(|b| b.outcomes.len()).sum::<usize>(), 2);
        assert_eq!(r.progress.borrow().skipped, 2);
    }

    #[tokio::test]
    async fn once_mode_is_caught_up_only_when_every_event_and_refresh_is_done() {
        for pending in [false, true] {
            let mut r = rig(Log { pending_refreshes: pending, ..Default::default() });
            let (emit, _taps) = testing::emit::<()>();
            r.committer.process(vec![CommitMsg::FeedCaughtUp { last_seq: 1 }], &emit).await.unwrap();
            assert!(!r.progress.borrow().caught_up, "seq 1 is not committed");
            r.committer.process(vec![skipped(1)], &emit).await.unwrap();
            assert_eq!(r.progress.borrow().caught_up, !pending, "pending refreshes: {pending}");
            assert!(r.ledger.covers(1));
        }
    }

    #[tokio::test]
    async fn a_store_that_cannot_write_is_fatal() {
        let mut r = rig(Log { broken: true, ..Default::default() });
        let (emit, _taps) = testing::emit::<()>();
        let err = r.committer.process(vec![skipped(1)], &emit).await.unwrap_err();
        assert!(matches!(err, StageError::Fatal(_)), "{err:?}");
    }
}
