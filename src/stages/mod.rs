//! The seven stages. Each file holds one stage's logic; the actors in `crate::actors` run them over
//! bounded channels and restart them. A stage consumes its input type, emits its output type to the
//! next stage, and sends terminal outcomes straight to the committer.

pub mod budget;
pub mod change_feed;
pub mod committer;
pub mod dedup;
pub mod downloader;
pub mod ledger;
pub mod planner;
pub use crate::mirror::selection;
pub mod uploader;
pub mod verifier;

pub use crate::model::StageName;
use crate::model::{Outcome, Refresh};
use crate::state::Checkpoint;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// What the committer receives: outcomes, and the feed's checkpoint marks in feed order.
#[derive(Debug, Clone)]
pub enum CommitMsg {
    /// A terminal outcome.
    Outcome(Outcome),
    /// The feed finished a page; `checkpoint` resumes after it once every seq ≤ `last_seq` is done.
    Mark {
        /// Last seq of the page.
        last_seq: u64,
        /// Where to resume.
        checkpoint: Checkpoint,
    },
    /// `--once`: the feed has caught up; the run ends when everything up to `last_seq` is done.
    FeedCaughtUp {
        /// Last seq emitted.
        last_seq: u64,
    },
    /// Folders the planner resolved with `files.get` on the way to an event's path. Sent before the
    /// event's action, so they are recorded in the same batch as its outcome or an earlier one (a
    /// crash before that replays the event, which looks them up again). Not an outcome: no seq.
    Folders(Vec<crate::model::FolderRecord>),
    /// Old keys a move could not remove (the verifier's delete after a copy failed): noted as
    /// unfinished writes, so the next start removes them. Sent before the move's outcome.
    Leftovers(Vec<crate::state::Intent>),
    /// A full listing starts over a store that already holds files: what it does not see is swept.
    ListingStarted,
    /// Items a listing page returned (marked as seen, for the sweep).
    Listed(Vec<crate::model::FileId>),
    /// The full listing ended with `last_seq`: once every event up to it is committed, every record
    /// it did not see is fetched again (a refresh: gone → removed per `deletes`).
    ListingDone {
        /// Last seq of the listing.
        last_seq: u64,
    },
    /// A step of a subtree move or removal whose objects are done; sent before the tree's outcome on
    /// this channel, so it is committed in the same batch as that outcome or an earlier one.
    TreeStep(crate::model::TreeStep),
    /// Which target each of these shortcuts follows now (`None`: none), recorded in the store so a
    /// change of the target refreshes them. Sent by the planner before the event's outcome on this same
    /// channel, so it is committed in the same batch as that outcome or an earlier one.
    Follows(Vec<(crate::model::FileId, Option<crate::model::FileId>)>),
    /// Work for the feed, recorded in the store. A stage sends it *before* the outcome that needs it
    /// on this same channel, so it is committed in the same batch as that outcome or an earlier one.
    Refresh(Vec<Refresh>),
    /// The feed emitted the events of these requests (with the generation it read); each is cleared
    /// once every seq ≤ `last_seq` is done.
    Refreshed {
        /// Last seq emitted for them.
        last_seq: u64,
        /// The requests served and their generations.
        done: Vec<(Refresh, u64)>,
    },
}

/// A stage's error; an error makes the actor fail and the supervisor restart it.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A channel the stage depends on is gone: the pipeline is shutting down.
    #[error("pipeline channel closed")]
    Closed,
    /// Something failed that a restart may cure.
    #[error("{0}")]
    Failed(String),
    /// The state store is unusable: the pipeline must stop.
    #[error("fatal: {0}")]
    Fatal(String),
}

/// The state store is the pipeline's memory: when it fails, no stage can go on safely, so every
/// store error is fatal (the one place that says so).
impl From<crate::state::StoreError> for StageError {
    fn from(e: crate::state::StoreError) -> Self {
        StageError::Fatal(e.to_string())
    }
}

/// A Drive failure that ends the stage's work on an item: fatal when Drive cannot be used at all any
/// more (the sign-in was refused), so the run stops instead of failing every file; otherwise a
/// failure a restart may cure.
pub fn drive_failure(context: &str, e: crate::drive::DriveError) -> StageError {
    use crate::retry::{Classified, ErrorClass};
    match e.class() {
        ErrorClass::Fatal => StageError::Fatal(format!("{context}: {e}")),
        _ => StageError::Failed(format!("{context}: {e}")),
    }
}

/// Where a stage's outputs go.
pub struct Emit<O> {
    /// The next stage's input.
    pub next: mpsc::Sender<O>,
    /// The committer's input.
    pub commit: mpsc::Sender<CommitMsg>,
}

impl<O> Clone for Emit<O> {
    fn clone(&self) -> Self {
        Emit { next: self.next.clone(), commit: self.commit.clone() }
    }
}

impl<O> Emit<O> {
    /// Sends to the next stage, waiting while it is full (backpressure).
    pub async fn forward(&self, item: O) -> Result<(), StageError> {
        self.next.send(item).await.map_err(|_| StageError::Closed)
    }
    /// Sends a terminal outcome.
    pub async fn outcome(&self, o: Outcome) -> Result<(), StageError> {
        self.commit.send(CommitMsg::Outcome(o)).await.map_err(|_| StageError::Closed)
    }

    /// Gives up on a planned file: logs and counts it, and sends it to the dead-letter store with its
    /// reason — the one way any stage dead-letters a file.
    pub async fn dead_letter(
        &self,
        stage: StageName,
        planned: &crate::model::Planned,
        reason: &str,
        error: String,
    ) -> Result<(), StageError> {
        use crate::internal_events::{DeadLettered, InternalEvent};
        let (file, key) = (&planned.file, &planned.key);
        DeadLettered { stage, file: &file.id, name: &file.name, key, reason, error: &error }.emit();
        let mut dl = planner::dead_letter(file, Some(key.clone()), reason, error);
        dl.attempts = planned.attempt.max(1);
        let kind = crate::model::OutcomeKind::DeadLettered(dl);
        self.outcome(Outcome { seq: planned.seq, file_id: file.id.clone(), kind }).await
    }
}

/// A stage's redo lane: work already admitted coming back into the stage (a file's next event, a fetch
/// to do again, a dead worker's items). The stage drains it before its main input, and it is sized from
/// the ledger's limit, which bounds everything in flight, so a put never waits: nothing bypasses
/// backpressure through a spawned send, and a cycle of full channels cannot form. A full lane would
/// mean that bound is broken, which stops the pipeline (fatal) rather than blocking or dropping work.
pub struct Redo<T> {
    stage: &'static str,
    tx: mpsc::Sender<T>,
}

impl<T> Clone for Redo<T> {
    fn clone(&self) -> Self {
        Redo { stage: self.stage, tx: self.tx.clone() }
    }
}

impl<T> Redo<T> {
    /// The redo lane of `stage`, fed through `tx`.
    pub fn new(stage: &'static str, tx: mpsc::Sender<T>) -> Self {
        Redo { stage, tx }
    }

    /// Puts work back into the stage, at once.
    pub fn put(&self, item: T) -> Result<(), StageError> {
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StageError::Closed),
            Err(mpsc::error::TrySendError::Full(_)) => Err(StageError::Fatal(format!(
                "the redo lane of stage {} is full: more work in flight than the ledger admits (a bug)",
                self.stage
            ))),
        }
    }
}

/// One stage's logic, run by a worker actor. `process` gets one item (or up to `BATCH`).
pub trait Stage: Send + 'static {
    /// Input item.
    type In: Send + 'static;
    /// Output to the next stage.
    type Out: Send + 'static;
    /// Name in config, metrics and logs.
    const NAME: StageName;
    /// Items taken per call (the committer groups; the rest take one).
    const BATCH: usize = 1;
    /// What a dead worker's item is re-delivered as: the stage's own input, or an upstream stage's
    /// input when the work must be redone from there (a dead upload's bytes are fetched again).
    type Replay: Send + 'static;
    /// Handles items; outputs through `emit`.
    fn process(
        &mut self,
        items: Vec<Self::In>,
        emit: &Emit<Self::Out>,
    ) -> impl Future<Output = Result<(), StageError>> + Send;
    /// What to re-deliver if the worker dies holding `item`.
    fn replay(item: &Self::In) -> Self::Replay;
}

/// `[testing]` failure injection shared by all workers: the `after`-th item of `stage` fails.
#[derive(Debug, Default)]
pub struct FailureInjector {
    stage: Option<StageName>,
    after: u64,
    panic: bool,
    remaining: AtomicU64,
    seen: AtomicU64,
}

impl FailureInjector {
    /// From `[testing]`.
    pub fn new(cfg: &crate::config::TestingConfig) -> Self {
        FailureInjector {
            stage: cfg.fail_stage.as_deref().and_then(StageName::parse),
            after: cfg.fail_after,
            panic: cfg.fail_mode == "panic",
            remaining: AtomicU64::new(if cfg.fail_stage.is_some() { cfg.fail_times } else { 0 }),
            seen: AtomicU64::new(0),
        }
    }

    /// Called by `stage` before each item; fails on purpose when configured to.
    pub fn check(&self, stage: StageName) -> Result<(), StageError> {
        if self.stage != Some(stage) || self.remaining.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if n < self.after {
            return Ok(());
        }
        if self.remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1)).is_err() {
            return Ok(());
        }
        self.seen.store(0, Ordering::SeqCst);
        if self.panic {
            panic!("[testing] injected panic in stage {stage}");
        }
        Err(StageError::Failed(format!("[testing] injected error in stage {stage}")))
    }
}

/// Test doubles shared by the stages' unit tests: channels that stand in for the neighbouring stages,
/// and small builders of the items that flow between them.
#[cfg(test)]
pub(crate) mod testing {
    use super::{CommitMsg, Emit, Redo};
    use crate::model::{ActionKind, ChangeSeq, DriveFile, FileId, ObjectKey, Outcome, Planned, Source};
    use tokio::sync::mpsc;

    /// What a stage sent on: to the next stage, and to the committer.
    pub struct Taps<O> {
        /// The next stage's input.
        pub next: mpsc::Receiver<O>,
        /// The committer's input.
        pub commit: mpsc::Receiver<CommitMsg>,
    }

    impl<O> Taps<O> {
        /// Every message sent to the committer so far.
        pub fn commits(&mut self) -> Vec<CommitMsg> {
            std::iter::from_fn(|| self.commit.try_recv().ok()).collect()
        }

        /// Every outcome sent to the committer so far.
        pub fn outcomes(&mut self) -> Vec<Outcome> {
            self.commits()
                .into_iter()
                .filter_map(|m| match m {
                    CommitMsg::Outcome(o) => Some(o),
                    _ => None,
                })
                .collect()
        }

        /// Every item sent to the next stage so far.
        pub fn forwarded(&mut self) -> Vec<O> {
            std::iter::from_fn(|| self.next.try_recv().ok()).collect()
        }
    }

    /// An `Emit` whose two channels the test reads.
    pub fn emit<O>() -> (Emit<O>, Taps<O>) {
        let (next_tx, next) = mpsc::channel(64);
        let (commit_tx, commit) = mpsc::channel(64);
        (Emit { next: next_tx, commit: commit_tx }, Taps { next, commit })
    }

    /// A redo lane whose items the test reads.
    pub fn redo<T>(stage: &'static str) -> (Redo<T>, mpsc::Receiver<T>) {
        let (tx, rx) = mpsc::channel(64);
        (Redo::new(stage, tx), rx)
    }

    /// A binary Drive file in `parent`.
    pub fn file(id: &str, name: &str, size: u64, md5: &str) -> DriveFile {
        DriveFile {
            id: FileId(id.into()),
            name: name.into(),
            mime_type: "application/octet-stream".into(),
            parents: vec![FileId("root".into())],
            size: Some(size),
            md5: Some(md5.into()),
            sha256: None,
            version: 1,
            modified_time: None,
            trashed: false,
            drive_id: None,
            shortcut_target: None,
            export_links: Default::default(),
            can_download: true,
            resource_key: None,
            shared_with_me: false,
            web_view_link: None,
            target_link: None,
            content_of: None,
            shortcut_target_key: None,
            owned_by_me: false,
        }
    }

    /// The planned upload of `file` to `key`.
    pub fn upload(seq: u64, file: DriveFile, key: &str) -> Planned {
        Planned {
            seq: ChangeSeq(seq),
            file,
            key: ObjectKey(key.into()),
            previous_key: None,
            kind: ActionKind::Upload { source: Source::Media },
            attempt: 0,
        }
    }
}
