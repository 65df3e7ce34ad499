//! Change-feed: takes a start page token (T0) of every change log in scope first — the user's log for
//! My Drive and each shared drive's own log, since Google documents that shared-drive changes may
//! appear only there — then lists every drive in scope (folders first, so paths resolve without
//! lookups), then follows each log from its T0. Every page offers the committer a checkpoint holding
//! every log's position; the committer saves it once every event up to that page is done.

use super::{CommitMsg, StageError};
use crate::drive::{ChangePage, Corpus, DriveChange, DriveError, FilePage};
use crate::internal_events::InternalEvent;
use crate::model::StageName;
use crate::model::{ChangeEvent, ChangeKind, ChangeSeq, DriveFile, DriveId, FileId, Origin, Refresh};
use crate::state::{Checkpoint, FeedPhase, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// The Drive calls the feed needs.
pub trait ChangeSource: Send + Sync + 'static {
    /// `changes.getStartPageToken` of one change log.
    fn start_page_token(&self, log: &Corpus) -> impl Future<Output = Result<String, DriveError>> + Send;
    /// One page of `files.list`.
    fn list_page(
        &self,
        corpus: &Corpus,
        folders_only: bool,
        token: Option<&str>,
    ) -> impl Future<Output = Result<FilePage, DriveError>> + Send;
    /// One page of one change log's `changes.list`.
    fn changes_page(&self, log: &Corpus, token: &str) -> impl Future<Output = Result<ChangePage, DriveError>> + Send;
    /// `files.get` of one item; `None` when it is gone or not visible.
    fn get_file(&self, id: &FileId) -> impl Future<Output = Result<Option<DriveFile>, DriveError>> + Send;
    /// `drives.list`: every shared drive the account can see, with its name.
    fn shared_drives(&self) -> impl Future<Output = Result<Vec<(DriveId, String)>, DriveError>> + Send;
    /// `drives.get`: a shared drive's name, or `None` when it is deleted or not visible.
    fn shared_drive(&self, id: &DriveId) -> impl Future<Output = Result<Option<String>, DriveError>> + Send;
    /// One page of a folder's live children, across every drive (`within` = `None`) or within one
    /// corpus.
    fn children_page(
        &self,
        folder: &FileId,
        within: Option<&Corpus>,
        token: Option<&str>,
    ) -> impl Future<Output = Result<FilePage, DriveError>> + Send;
}

/// The committed state the feed reads: where it stopped, whether anything is mirrored yet, the shared
/// drives recorded, and the refresh requests to serve. The fjall store is the real one (see
/// `crate::adapters`); unit tests use an in-memory double. The feed writes nothing: its checkpoints
/// and refresh acknowledgements go to the committer.
pub trait FeedState: Send + Sync + 'static {
    /// The saved checkpoint, if any.
    fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;
    /// Whether any file is recorded (a listing over it is a mark and sweep).
    fn has_files(&self) -> bool;
    /// The shared drives whose root is recorded.
    fn drive_roots(&self) -> Result<Vec<DriveId>, StoreError>;
    /// Up to `limit` recorded refresh requests, with their generations.
    fn pending_refreshes(&self, limit: usize) -> Result<Vec<(Refresh, u64)>, StoreError>;
    /// Whether `request` is still recorded at `generation` (not cleared by the committer).
    fn refresh_is_pending(&self, request: &Refresh, generation: u64) -> Result<bool, StoreError>;
}

/// How often continuous mode checks the shared drives itself, besides the drive-level changes: a safety
/// net should a Drive leave those out of the user's log (`restrictToMyDrive` is not documented either way).
const DRIVE_CHECK_EVERY: Duration = Duration::from_secs(600);

/// Refresh requests read from the store per pass.
const REFRESH_BATCH: usize = 256;

/// One pass of the initial listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListJob {
    /// Which drive.
    pub corpus: Corpus,
    /// Folders only (the first pass of each drive).
    pub folders_only: bool,
}

/// The drives of a scope, each listed once and followed through its own change log.
pub fn change_logs(scope: &super::planner::Scope) -> Vec<Corpus> {
    let mut corpora = Vec::new();
    if scope.shared_with_me {
        corpora.push(Corpus::MyDriveAndShared);
    } else if scope.my_drive_root.is_some() {
        corpora.push(Corpus::MyDrive);
    }
    corpora.extend(scope.shared.keys().cloned().map(Corpus::SharedDrive));
    corpora
}

/// The listing passes for a scope: for each drive, folders then everything.
pub fn listing_jobs(scope: &super::planner::Scope) -> Vec<ListJob> {
    change_logs(scope)
        .into_iter()
        .flat_map(|c| [ListJob { corpus: c.clone(), folders_only: true }, ListJob { corpus: c, folders_only: false }])
        .collect()
}

/// Which shared drives `[source] drives` selects: every drive the account can see, or the ones named.
#[derive(Clone, Debug, Default)]
pub enum DriveSelection {
    /// `"all"`: a drive the account joins is followed from then on.
    All,
    /// Only these ids (none when only My Drive is mirrored).
    #[default]
    None,
    /// The ids listed.
    Only(BTreeSet<DriveId>),
}

impl DriveSelection {
    /// From `[source] drives`.
    pub fn from_config(drives: &[String]) -> Self {
        if drives.iter().any(|d| d == "all") {
            return DriveSelection::All;
        }
        let ids: BTreeSet<DriveId> = drives.iter().filter(|d| *d != "my-drive").map(|d| DriveId(d.clone())).collect();
        if ids.is_empty() { DriveSelection::None } else { DriveSelection::Only(ids) }
    }

    fn wants(&self, id: &DriveId) -> bool {
        match self {
            DriveSelection::All => true,
            DriveSelection::None => false,
            DriveSelection::Only(ids) => ids.contains(id),
        }
    }
}

/// The change-feed.
pub struct ChangeFeed<S: ChangeSource, T: FeedState> {
    /// Drive.
    pub source: Arc<S>,
    /// Committed state: the saved checkpoint, recorded drives, refresh requests.
    pub store: T,
    /// Listing passes.
    pub jobs: Vec<ListJob>,
    /// The change logs of the scope at start, in order (see [`change_logs`]).
    pub logs: Vec<Corpus>,
    /// The shared drives in scope at start, with their names.
    pub drives: BTreeMap<DriveId, String>,
    /// Which shared drives the configuration selects (for drives joined while running).
    pub selection: DriveSelection,
    /// Next seq to assign (shared so a restarted feed continues the sequence).
    pub next_seq: Arc<AtomicU64>,
    /// Stop once caught up.
    pub once: bool,
    /// Poll period in continuous mode.
    pub poll_interval: Duration,
    /// Wakes a sleeping poll early (push notifications, shutdown).
    pub wake: Arc<Notify>,
    /// Wakes the feed when refresh requests were recorded.
    pub refresh_wake: Arc<Notify>,
    /// Refresh requests already served (with their generation) and not yet cleared by the committer.
    pub served: std::sync::Mutex<std::collections::HashSet<(Refresh, u64)>>,
    /// Failure injection.
    pub faults: Arc<super::FailureInjector>,
}

/// Where the feed sends things.
#[derive(Clone)]
pub struct FeedOutputs {
    /// Events, to dedup.
    pub events: mpsc::Sender<ChangeEvent>,
    /// Marks, to the committer.
    pub commit: mpsc::Sender<CommitMsg>,
    /// The pipeline's ledger: one permit per event emitted, so work in flight stays bounded.
    pub ledger: std::sync::Arc<super::ledger::Ledger>,
}

impl<S: ChangeSource, T: FeedState> ChangeFeed<S, T> {
    fn last_seq(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst).saturating_sub(1)
    }

    async fn emit(
        &self,
        out: &FeedOutputs,
        file_id: FileId,
        kind: ChangeKind,
        origin: Origin,
    ) -> Result<(), StageError> {
        self.faults.check(StageName::ChangeFeed)?;
        // Taken before the seq: a seq, once given, is always sent (the watermark waits for it).
        out.ledger.reserve().await;
        let seq = ChangeSeq(self.next_seq.fetch_add(1, Ordering::SeqCst));
        out.events.send(ChangeEvent { seq, file_id, kind, origin }).await.map_err(|_| StageError::Closed)?;
        crate::internal_events::ItemCounted { stage: StageName::ChangeFeed.as_str(), outcome: "emitted" }.emit();
        Ok(())
    }

    /// Emits the events of every recorded refresh request not served yet: the item as Drive has it
    /// now (`files.get`), or every live child of a folder. Each request is cleared by the committer
    /// once its events are committed; until then a restarted feed serves it again (harmless: dedup
    /// skips what the store already holds).
    async fn serve_refreshes(&self, out: &FeedOutputs) -> Result<(), StageError> {
        let pending = self.store.pending_refreshes(REFRESH_BATCH)?;
        let fresh: Vec<(Refresh, u64)> = {
            let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
            forget_cleared(&mut served, &pending, |r, g| self.store.refresh_is_pending(r, g))?;
            pending.into_iter().filter(|p| !served.contains(p)).collect()
        };
        for (request, generation) in fresh {
            match &request {
                Refresh::File(id) | Refresh::Repair(id) => {
                    let kind = match self.source.get_file(id).await.map_err(Self::drive_err)? {
                        Some(f) => ChangeKind::Upsert(f),
                        None => ChangeKind::Removed,
                    };
                    let origin = if matches!(request, Refresh::Repair(_)) { Origin::Repair } else { Origin::Refresh };
                    self.emit(out, id.clone(), kind, origin).await?;
                }
                Refresh::Stray(key) => {
                    let kind = ChangeKind::Stray(key.clone());
                    self.emit(out, crate::model::stray_event_id(key), kind, Origin::Repair).await?;
                }
                Refresh::Children(folder) => self.emit_children(out, folder).await?,
            }
            self.served.lock().unwrap_or_else(|p| p.into_inner()).insert((request.clone(), generation));
            let done = vec![(request, generation)];
            out.commit
                .send(CommitMsg::Refreshed { last_seq: self.last_seq(), done })
                .await
                .map_err(|_| StageError::Closed)?;
        }
        Ok(())
    }

    /// Emits every live child of `folder`. Searched across all drives first; a page Drive marks
    /// incomplete (`incompleteSearch`: not every corpus was searched, items may be missing) is not
    /// trusted, and the listing starts over within the folder's own corpus — its shared drive, or
    /// `corpora=user` — as Google advises. (A narrowed page still incomplete is asked again, then
    /// fails the request, which stays recorded and is served again: never a subtree left half-listed.)
    async fn emit_children(&self, out: &FeedOutputs, folder: &FileId) -> Result<(), StageError> {
        let mut within: Option<Corpus> = None;
        let mut token: Option<String> = None;
        loop {
            let page =
                self.source.children_page(folder, within.as_ref(), token.as_deref()).await.map_err(Self::drive_err)?;
            if page.incomplete && within.is_none() {
                let Some(corpus) = self.corpus_of(folder).await? else { return Ok(()) };
                crate::internal_events::ChildListingIncomplete { folder, corpus: &corpus }.emit();
                (within, token) = (Some(corpus), None);
                continue;
            }
            for f in page.files {
                self.emit(out, f.id.clone(), ChangeKind::Upsert(f), Origin::Refresh).await?;
            }
            token = page.next_page_token;
            if token.is_none() {
                return Ok(());
            }
        }
    }

    /// The corpus `folder` lives in: its shared drive, or the user's (My Drive and what is shared with
    /// the user). A shared drive's root is no item of `files.get` everywhere, so an id `files.get`
    /// does not know is asked of `drives.get`; `None` when it is neither (gone: no children to list).
    async fn corpus_of(&self, folder: &FileId) -> Result<Option<Corpus>, StageError> {
        if let Some(f) = self.source.get_file(folder).await.map_err(Self::drive_err)? {
            return Ok(Some(f.drive_id.map_or(Corpus::MyDriveAndShared, Corpus::SharedDrive)));
        }
        let drive = DriveId(folder.0.clone());
        Ok(self.source.shared_drive(&drive).await.map_err(Self::drive_err)?.map(|_| Corpus::SharedDrive(drive)))
    }

    /// `--once` after catching up: keeps serving refresh requests (which the changes applied may
    /// still record) until the pipeline ends the run.
    async fn serve_refreshes_until_closed(&self, out: &FeedOutputs) -> Result<(), StageError> {
        loop {
            self.serve_refreshes(out).await?;
            tokio::select! {
                _ = self.refresh_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = out.commit.closed() => return Ok(()),
            }
        }
    }

    async fn mark(&self, out: &FeedOutputs, checkpoint: &Checkpoint) -> Result<(), StageError> {
        let checkpoint = Checkpoint { read_at_unix_ms: crate::model::unix_ms(), ..checkpoint.clone() };
        out.commit.send(CommitMsg::Mark { last_seq: self.last_seq(), checkpoint }).await.map_err(|_| StageError::Closed)
    }

    fn drive_err(e: DriveError) -> StageError {
        super::drive_failure("change feed", e)
    }

    /// True when the feed can go on from `cp`. A listing resumes only over exactly the logs it began
    /// with (its job numbers index them); the change logs of shared drives joined or left while
    /// mirrorflow was down are reconciled instead (see [`Self::reconcile_drives`]). A checkpoint
    /// without logs (written before per-drive logs), or whose user log differs (My Drive, or the items
    /// shared with the user, added or dropped), lists again.
    fn can_resume(&self, cp: &Checkpoint) -> bool {
        let logs_of = |feeds: &[(Corpus, String)]| feeds.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>();
        match cp.phase {
            _ if cp.feeds.is_empty() => false,
            FeedPhase::Listing { .. } => logs_of(&cp.feeds) == self.logs,
            FeedPhase::Changes { .. } => {
                let user_log = |logs: &[Corpus]| logs.iter().find(|l| l.is_user_log()).cloned();
                user_log(&logs_of(&cp.feeds)) == user_log(&self.logs)
            }
        }
    }

    /// Runs until caught up (`once`) or until the outputs close.
    pub async fn run(&self, out: &FeedOutputs) -> Result<(), StageError> {
        let (mut cp, listing) = match self.store.checkpoint()? {
            Some(cp) if self.can_resume(&cp) => {
                let listing = matches!(cp.phase, FeedPhase::Listing { .. });
                (cp, listing)
            }
            Some(_) => {
                crate::internal_events::CheckpointOfOtherLogs.emit();
                (self.start_over(out).await?, true)
            }
            None => (self.start_over(out).await?, true),
        };
        self.reconcile_drives(out, &mut cp, listing).await?;
        self.mark(out, &cp).await?;
        let mut drives_checked = tokio::time::Instant::now();
        loop {
            self.serve_refreshes(out).await?;
            match cp.phase.clone() {
                FeedPhase::Listing { job, page_token } => cp.phase = self.list_step(out, &cp, job, page_token).await?,
                FeedPhase::Changes { .. } => {
                    if !self.poll_logs(out, &mut cp).await? {
                        cp = self.start_over(out).await?;
                        self.reconcile_drives(out, &mut cp, true).await?;
                    } else if self.once {
                        let last_seq = self.last_seq();
                        out.commit.send(CommitMsg::FeedCaughtUp { last_seq }).await.map_err(|_| StageError::Closed)?;
                        return self.serve_refreshes_until_closed(out).await;
                    } else {
                        if drives_checked.elapsed() >= DRIVE_CHECK_EVERY {
                            self.check_drives(out, &mut cp).await?;
                            drives_checked = tokio::time::Instant::now();
                        }
                        self.sleep_until_poll().await;
                    }
                }
            }
            self.mark(out, &cp).await?;
        }
    }

    /// Brings the followed change logs in line with the shared drives in scope now, and tells the
    /// planner each drive's name (it moves a drive renamed while mirrorflow was down, and records
    /// the root of one it did not know). A drive in scope whose log is not followed yet was joined:
    /// its log is followed from a token taken now and its tree listed (unless a listing covers it).
    /// A drive followed or recorded before and out of scope now is gone: its files are removed.
    async fn reconcile_drives(&self, out: &FeedOutputs, cp: &mut Checkpoint, listing: bool) -> Result<(), StageError> {
        let origin = if listing { Origin::Listing } else { Origin::Change };
        for (id, name) in &self.drives {
            let log = Corpus::SharedDrive(id.clone());
            let joined = !cp.feeds.iter().any(|(l, _)| *l == log);
            if joined {
                cp.feeds.push((log.clone(), self.source.start_page_token(&log).await.map_err(Self::drive_err)?));
            }
            let kind = ChangeKind::SharedDrive { name: Some(name.clone()), joined: joined && !listing };
            self.emit(out, FileId(id.0.clone()), kind, origin).await?;
        }
        let mut gone: BTreeSet<DriveId> = cp
            .feeds
            .iter()
            .filter_map(|(l, _)| match l {
                Corpus::SharedDrive(d) if !self.drives.contains_key(d) => Some(d.clone()),
                _ => None,
            })
            .collect();
        for root in self.store.drive_roots()? {
            if !self.drives.contains_key(&root) {
                gone.insert(root);
            }
        }
        for id in gone {
            crate::internal_events::SharedDriveChange::LeftScope(&id).emit();
            cp.feeds.retain(|(l, _)| *l != Corpus::SharedDrive(id.clone()));
            let kind = ChangeKind::SharedDrive { name: None, joined: false };
            self.emit(out, FileId(id.0), kind, origin).await?;
        }
        Ok(())
    }

    /// Treats every shared drive the selection names or the feed follows as changed: joins, renames
    /// and removals the change logs did not report are applied all the same.
    async fn check_drives(&self, out: &FeedOutputs, cp: &mut Checkpoint) -> Result<(), StageError> {
        let mut ids: BTreeSet<DriveId> = cp
            .feeds
            .iter()
            .filter_map(|(l, _)| match l {
                Corpus::SharedDrive(d) => Some(d.clone()),
                Corpus::MyDrive | Corpus::MyDriveAndShared => None,
            })
            .collect();
        match &self.selection {
            DriveSelection::All => {
                let visible = self.source.shared_drives().await.map_err(Self::drive_err)?;
                ids.extend(visible.into_iter().map(|(id, _)| id));
            }
            DriveSelection::Only(wanted) => ids.extend(wanted.iter().cloned()),
            DriveSelection::None => {}
        }
        for id in ids {
            self.apply_drive_change(out, cp, &id).await?;
        }
        self.mark(out, cp).await
    }

    /// A drive-level change: asks Drive what the drive is now and tells the planner. A drive the
    /// selection wants and the feed did not follow was joined: its log is followed from now.
    async fn apply_drive_change(&self, out: &FeedOutputs, cp: &mut Checkpoint, id: &DriveId) -> Result<(), StageError> {
        let log = Corpus::SharedDrive(id.clone());
        let followed = cp.feeds.iter().any(|(l, _)| *l == log);
        if !followed && !self.selection.wants(id) {
            return Ok(());
        }
        let name = self.source.shared_drive(id).await.map_err(Self::drive_err)?;
        let kind = match name {
            Some(name) => {
                if !followed {
                    crate::internal_events::SharedDriveChange::Joined(id, &name).emit();
                    cp.feeds.push((
                        log,
                        self.source
                            .start_page_token(&Corpus::SharedDrive(id.clone()))
                            .await
                            .map_err(Self::drive_err)?,
                    ));
                }
                ChangeKind::SharedDrive { name: Some(name), joined: !followed }
            }
            None if followed => {
                crate::internal_events::SharedDriveChange::Gone(id).emit();
                cp.feeds.retain(|(l, _)| *l != log);
                ChangeKind::SharedDrive { name: None, joined: false }
            }
            None => return Ok(()),
        };
        self.emit(out, FileId(id.0.clone()), kind, Origin::Change).await
    }

    /// Takes a start page token of every log, then lists everything. Over a store that already holds
    /// files (a lost change token, a changed scope) this is a mark and sweep: what the listing does
    /// not see is checked against Drive at its end.
    async fn start_over(&self, out: &FeedOutputs) -> Result<Checkpoint, StageError> {
        let mut feeds = Vec::with_capacity(self.logs.len());
        for log in &self.logs {
            feeds.push((log.clone(), self.source.start_page_token(log).await.map_err(Self::drive_err)?));
        }
        if self.store.has_files() {
            out.commit.send(CommitMsg::ListingStarted).await.map_err(|_| StageError::Closed)?;
        }
        Ok(Checkpoint {
            start_token: feeds.first().map(|(_, t)| t.clone()).unwrap_or_default(),
            phase: FeedPhase::Listing { job: 0, page_token: None },
            read_at_unix_ms: crate::model::unix_ms(),
            feeds,
        })
    }

    async fn list_step(
        &self,
        out: &FeedOutputs,
        cp: &Checkpoint,
        job: usize,
        token: Option<String>,
    ) -> Result<FeedPhase, StageError> {
        let Some(j) = self.jobs.get(job) else {
            let last_seq = self.last_seq();
            out.commit.send(CommitMsg::ListingDone { last_seq }).await.map_err(|_| StageError::Closed)?;
            return Ok(FeedPhase::Changes { token: cp.start_token.clone() });
        };
        let page = match self.source.list_page(&j.corpus, j.folders_only, token.as_deref()).await {
            // Google: a rejected page token "should be discarded, and pagination restarted from the
            // first page". The pages already emitted are applied again harmlessly (the planner skips
            // what the store holds), and the mark and sweep at the end still sees every item.
            Err(DriveError::InvalidPageToken(message)) if token.is_some() => {
                crate::internal_events::PageTokenRejected::Listing { corpus: &j.corpus, message: &message }.emit();
                return Ok(FeedPhase::Listing { job, page_token: None });
            }
            other => other.map_err(Self::drive_err)?,
        };
        let ids: Vec<FileId> = page.files.iter().map(|f| f.id.clone()).collect();
        for f in page.files {
            self.emit(out, f.id.clone(), ChangeKind::Upsert(f), Origin::Listing).await?;
        }
        out.commit.send(CommitMsg::Listed(ids)).await.map_err(|_| StageError::Closed)?;
        Ok(match page.next_page_token {
            Some(t) => FeedPhase::Listing { job, page_token: Some(t) },
            None => FeedPhase::Listing { job: job + 1, page_token: None },
        })
    }

    /// Reads every log up to its end, one page at a time, offering a checkpoint after each page; logs
    /// of drives joined on the way are read too. Returns false when Drive rejected a saved token (the
    /// caller lists everything again); a shared drive's log that fails because the drive is gone is
    /// a drive removal, not a lost token.
    async fn poll_logs(&self, out: &FeedOutputs, cp: &mut Checkpoint) -> Result<bool, StageError> {
        let mut polled: Vec<Corpus> = Vec::new();
        while let Some(log) = cp.feeds.iter().map(|(l, _)| l).find(|l| !polled.contains(l)).cloned() {
            polled.push(log.clone());
            while let Some(token) = cp.feeds.iter().find(|(l, _)| *l == log).map(|(_, t)| t.clone()) {
                let page = match self.source.changes_page(&log, &token).await {
                    Ok(page) => page,
                    Err(e) => {
                        if let Corpus::SharedDrive(id) = &log
                            && drive_may_be_gone(&e)
                            && self.source.shared_drive(id).await.map_err(Self::drive_err)?.is_none()
                        {
                            self.apply_drive_change(out, cp, id).await?;
                            self.mark(out, cp).await?;
                            break;
                        }
                        if let DriveError::InvalidPageToken(msg) = e {
                            crate::internal_events::PageTokenRejected::Changes { log: &log, message: &msg }.emit();
                            return Ok(false);
                        }
                        return Err(changes_list_failure(&log, e));
                    }
                };
                let (next, more, drives) = self.changes_step(out, page).await?;
                if let Some(entry) = cp.feeds.iter_mut().find(|(l, _)| *l == log) {
                    entry.1 = next;
                }
                for id in drives {
                    self.apply_drive_change(out, cp, &id).await?;
                }
                if let Some((_, first)) = cp.feeds.first() {
                    cp.phase = FeedPhase::Changes { token: first.clone() };
                }
                self.mark(out, cp).await?;
                if !more {
                    crate::health::change_log_read(&log);
                    break;
                }
                self.serve_refreshes(out).await?;
            }
        }
        crate::health::follows(&cp.feeds.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>());
        Ok(true)
    }

    /// Emits a page of file changes; returns where the log continues, whether more pages follow now,
    /// and the shared drives that changed (applied by the caller once the page's position is kept).
    /// `removed` means "removed from this log" — deleted, access lost, or (in a shared drive's log)
    /// moved to another drive — so the item is looked up: it is removed only if Drive no longer
    /// shows it, and otherwise planned where it is now.
    async fn changes_step(
        &self,
        out: &FeedOutputs,
        page: ChangePage,
    ) -> Result<(String, bool, BTreeSet<DriveId>), StageError> {
        let mut drives = BTreeSet::new();
        for c in page.changes {
            let (file_id, file) = match c {
                DriveChange::File { file_id, file } => (file_id, file),
                DriveChange::Drive { id } => {
                    drives.insert(id);
                    continue;
                }
            };
            let kind = match file {
                Some(f) => ChangeKind::Upsert(f),
                None => match self.source.get_file(&file_id).await.map_err(Self::drive_err)? {
                    Some(f) => ChangeKind::Upsert(f),
                    None => ChangeKind::Removed,
                },
            };
            self.emit(out, file_id, kind, Origin::Change).await?;
        }
        match (page.next_page_token, page.new_start_page_token) {
            (Some(next), _) => Ok((next, true, drives)),
            (None, Some(new_start)) => Ok((new_start, false, drives)),
            (None, None) => {
                Err(StageError::Failed("changes.list page without nextPageToken or newStartPageToken".into()))
            }
        }
    }

    async fn sleep_until_poll(&self) {
        tokio::select! {
            _ = tokio::time::sleep(self.poll_interval) => {}
            _ = self.wake.notified() => {}
            _ = self.refresh_wake.notified() => {}
        }
    }
}

/// Whether a failed `changes.list` of a shared drive's log may mean the drive itself is gone (then
/// `drives.get` decides): Drive answers a deleted or left drive with 404 (or 403), or may reject its
/// token.
fn drive_may_be_gone(e: &DriveError) -> bool {
    matches!(e, DriveError::InvalidPageToken(_) | DriveError::Api { status: 403 | 404, .. })
}

/// A `changes.list` failure that is not a rejected page token, naming the request. An error Drive
/// will answer again as long as the request is made so (a bad `fields` mask, a bad parameter: any
/// permanent 4xx) stops the run at once: restarting the feed, or listing everything again, would
/// only ask the same. A failure a retry may cure restarts the feed.
fn changes_list_failure(log: &Corpus, e: DriveError) -> StageError {
    use crate::retry::{Classified, ErrorClass};
    let request = match log {
        Corpus::MyDrive => "changes.list (the user's log, restrictToMyDrive)".to_string(),
        Corpus::MyDriveAndShared => "changes.list (the user's log)".to_string(),
        Corpus::SharedDrive(id) => format!("changes.list (driveId={id})"),
    };
    match e.class() {
        ErrorClass::Permanent => StageError::Fatal(format!(
            "change feed: Drive refused {request}: {e} (not a rejected page token: nothing is listed again)"
        )),
        _ => super::drive_failure(&format!("change feed: {request}"), e),
    }
}

/// Forgets the served requests the committer has cleared, so `served` holds requests in flight only
/// (bounded by the ledger), however many are pending. `pending` is the first [`REFRESH_BATCH`] recorded
/// requests: when it is shorter it is all of them, else `recorded` asks the store about each one.
fn forget_cleared(
    served: &mut std::collections::HashSet<(Refresh, u64)>,
    pending: &[(Refresh, u64)],
    recorded: impl Fn(&Refresh, u64) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    if pending.len() < REFRESH_BATCH {
        served.retain(|s| pending.contains(s));
        return Ok(());
    }
    let mut cleared = Vec::new();
    for (r, g) in served.iter() {
        if !pending.contains(&(r.clone(), *g)) && !recorded(r, *g)? {
            cleared.push((r.clone(), *g));
        }
    }
    for c in &cleared {
        served.remove(c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DriveId;

    #[test]
    fn served_requests_are_forgotten_once_cleared_even_behind_a_full_batch() {
        let request = |n: usize| (Refresh::File(FileId(format!("f{n}"))), n as u64);
        let pending: Vec<_> = (0..REFRESH_BATCH).map(request).collect();
        // Served earlier: 300 since cleared by the committer, and f0 (still pending, in flight).
        let mut served: std::collections::HashSet<_> = (REFRESH_BATCH..REFRESH_BATCH + 300).map(request).collect();
        served.insert(request(0));
        served.insert(request(REFRESH_BATCH + 1000));
        let still = request(REFRESH_BATCH + 1000);
        forget_cleared(&mut served, &pending, |r, g| Ok((r.clone(), g) == still)).unwrap();
        let left: std::collections::HashSet<_> = [request(0), still.clone()].into_iter().collect();
        assert_eq!(served, left, "only requests still recorded are remembered");
        // A short batch is every pending request: the rest is forgotten without asking the store.
        forget_cleared(&mut served, &pending[..1], |_, _| panic!("not asked")).unwrap();
        assert_eq!(served.len(), 1);
    }

    #[test]
    fn folders_are_listed_before_files_for_each_drive() {
        let mut scope = super::super::planner::Scope { my_drive_root: Some(FileId("r".into())), ..Default::default() };
        scope.shared.insert(DriveId("d1".into()), "D".into());
        let jobs = listing_jobs(&scope);
        assert_eq!(change_logs(&scope), [Corpus::MyDrive, Corpus::SharedDrive(DriveId("d1".into()))]);
        assert_eq!(jobs.len(), 4);
        assert!(jobs[0].folders_only && !jobs[1].folders_only);
        assert_eq!(jobs[2].corpus, Corpus::SharedDrive(DriveId("d1".into())));
    }

    /// Drive as the feed sees it: one page per listing, change pages by token, items by id.
    #[derive(Default)]
    struct FakeDrive {
        listed: BTreeMap<(Corpus, bool), Vec<DriveFile>>,
        /// Change pages by (log, token): the changes and the token the log continues from.
        changes: BTreeMap<(Corpus, String), (Vec<DriveChange>, String)>,
        /// Tokens Drive rejects (`invalidPageToken`).
        rejected: BTreeSet<String>,
        files: BTreeMap<FileId, DriveFile>,
        drives: BTreeMap<DriveId, String>,
    }

    impl ChangeSource for FakeDrive {
        async fn start_page_token(&self, log: &Corpus) -> Result<String, DriveError> {
            Ok(format!("t0-{log:?}"))
        }
        async fn list_page(
            &self,
            corpus: &Corpus,
            folders_only: bool,
            _: Option<&str>,
        ) -> Result<FilePage, DriveError> {
            let files = self.listed.get(&(corpus.clone(), folders_only)).cloned().unwrap_or_default();
            Ok(FilePage { files, next_page_token: None, incomplete: false })
        }
        async fn changes_page(&self, log: &Corpus, token: &str) -> Result<ChangePage, DriveError> {
            if self.rejected.contains(token) {
                return Err(DriveError::InvalidPageToken(format!("{token} rejected")));
            }
            let (changes, next) =
                self.changes.get(&(log.clone(), token.to_string())).cloned().unwrap_or((Vec::new(), token.to_string()));
            Ok(ChangePage { changes, next_page_token: None, new_start_page_token: Some(next) })
        }
        async fn get_file(&self, id: &FileId) -> Result<Option<DriveFile>, DriveError> {
            Ok(self.files.get(id).cloned())
        }
        async fn shared_drives(&self) -> Result<Vec<(DriveId, String)>, DriveError> {
            Ok(self.drives.clone().into_iter().collect())
        }
        async fn shared_drive(&self, id: &DriveId) -> Result<Option<String>, DriveError> {
            Ok(self.drives.get(id).cloned())
        }
        async fn children_page(&self, _: &FileId, _: Option<&Corpus>, _: Option<&str>) -> Result<FilePage, DriveError> {
            Ok(FilePage { files: Vec::new(), next_page_token: None, incomplete: false })
        }
    }

    /// The committed state the feed reads, in memory.
    #[derive(Default)]
    struct FakeState {
        checkpoint: Option<Checkpoint>,
        has_files: bool,
        roots: Vec<DriveId>,
        refreshes: std::sync::Mutex<Vec<(Refresh, u64)>>,
    }

    impl FeedState for FakeState {
        fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
            Ok(self.checkpoint.clone())
        }
        fn has_files(&self) -> bool {
            self.has_files
        }
        fn drive_roots(&self) -> Result<Vec<DriveId>, StoreError> {
            Ok(self.roots.clone())
        }
        fn pending_refreshes(&self, limit: usize) -> Result<Vec<(Refresh, u64)>, StoreError> {
            Ok(self.refreshes.lock().unwrap().iter().take(limit).cloned().collect())
        }
        fn refresh_is_pending(&self, request: &Refresh, generation: u64) -> Result<bool, StoreError> {
            Ok(self.refreshes.lock().unwrap().iter().any(|(r, g)| r == request && *g == generation))
        }
    }

    /// What one `--once` run of the feed sent: its events, and its messages to the committer up to
    /// and including `FeedCaughtUp`.
    struct Sent {
        events: Vec<ChangeEvent>,
        commits: Vec<CommitMsg>,
    }

    impl Sent {
        fn ids(&self) -> Vec<(&str, Origin)> {
            self.events.iter().map(|e| (e.file_id.0.as_str(), e.origin)).collect()
        }
        fn last_checkpoint(&self) -> &Checkpoint {
            self.commits
                .iter()
                .rev()
                .find_map(|m| match m {
                    CommitMsg::Mark { checkpoint, .. } => Some(checkpoint),
                    _ => None,
                })
                .expect("a checkpoint was offered")
        }
        fn listing_started(&self) -> bool {
            self.commits.iter().any(|m| matches!(m, CommitMsg::ListingStarted))
        }
    }

    /// Runs a `--once` feed over My Drive (and `shared`) until it has caught up.
    async fn run_once(drive: FakeDrive, state: FakeState, shared: &[&str]) -> Sent {
        let mut scope =
            super::super::planner::Scope { my_drive_root: Some(FileId("root".into())), ..Default::default() };
        for d in shared {
            scope.shared.insert(DriveId((*d).into()), format!("drive {d}"));
        }
        let feed = ChangeFeed {
            source: Arc::new(drive),
            store: state,
            jobs: listing_jobs(&scope),
            logs: change_logs(&scope),
            drives: scope.shared.clone(),
            selection: DriveSelection::All,
            next_seq: Arc::new(AtomicU64::new(1)),
            once: true,
            poll_interval: Duration::from_secs(3600),
            wake: Arc::default(),
            refresh_wake: Arc::default(),
            served: Default::default(),
            faults: Arc::new(super::super::FailureInjector::new(&crate::config::TestingConfig::default())),
        };
        let (events_tx, mut events) = mpsc::channel(1024);
        let (commit_tx, mut commit) = mpsc::channel(1024);
        let ledger = Arc::new(super::super::ledger::Ledger::new(1, 1024));
        let out = FeedOutputs { events: events_tx, commit: commit_tx, ledger };
        let run = tokio::spawn(async move { feed.run(&out).await });
        let mut commits = Vec::new();
        while let Some(m) = commit.recv().await {
            let done = matches!(m, CommitMsg::FeedCaughtUp { .. });
            commits.push(m);
            if done {
                break;
            }
        }
        drop(commit);
        run.await.expect("the feed did not panic").expect("the feed ends once the committer is gone");
        let events = std::iter::from_fn(|| events.try_recv().ok()).collect();
        Sent { events, commits }
    }

    fn folder(id: &str) -> DriveFile {
        DriveFile { mime_type: crate::model::FOLDER_MIME.into(), ..crate::stages::testing::file(id, id, 0, "") }
    }

    fn changes_checkpoint(log: Corpus, token: &str) -> Checkpoint {
        Checkpoint {
            start_token: token.into(),
            phase: FeedPhase::Changes { token: token.into() },
            read_at_unix_ms: 0,
            feeds: vec![(log, token.into())],
        }
    }

    /// My Drive: folder `A` and file `b` listed, file `c` changed after the start token.
    fn my_drive() -> FakeDrive {
        let mut d = FakeDrive::default();
        d.listed.insert((Corpus::MyDrive, true), vec![folder("A")]);
        d.listed.insert((Corpus::MyDrive, false), vec![folder("A"), crate::stages::testing::file("b", "b", 1, "m")]);
        let c = crate::stages::testing::file("c", "c", 1, "m");
        d.changes.insert(
            (Corpus::MyDrive, "t0-MyDrive".into()),
            (vec![DriveChange::File { file_id: c.id.clone(), file: Some(c) }], "t1".into()),
        );
        d
    }

    #[tokio::test]
    async fn a_fresh_store_lists_folders_then_files_then_follows_the_log_from_the_token_taken_before() {
        let sent = run_once(my_drive(), FakeState::default(), &[]).await;
        assert_eq!(
            sent.ids(),
            [("A", Origin::Listing), ("A", Origin::Listing), ("b", Origin::Listing), ("c", Origin::Change)]
        );
        assert!(!sent.listing_started(), "an empty store has nothing to sweep");
        let done = sent.commits.iter().position(|m| matches!(m, CommitMsg::ListingDone { .. })).expect("listing done");
        let listed = sent.commits.iter().position(|m| matches!(m, CommitMsg::Listed(ids) if ids.len() == 2)).unwrap();
        assert!(listed < done, "the files pass is listed before the listing ends");
        let cp = sent.last_checkpoint();
        assert_eq!(cp.feeds, [(Corpus::MyDrive, "t1".to_string())]);
        assert_eq!(cp.phase, FeedPhase::Changes { token: "t1".into() });
        assert_eq!(cp.start_token, "t0-MyDrive");
    }

    #[tokio::test]
    async fn a_listing_over_recorded_files_is_announced_for_the_sweep() {
        let state = FakeState { has_files: true, ..Default::default() };
        let sent = run_once(my_drive(), state, &[]).await;
        assert!(matches!(sent.commits.first(), Some(CommitMsg::ListingStarted)), "{:?}", sent.commits.first());
    }

    #[tokio::test]
    async fn a_saved_change_token_resumes_without_listing_and_a_removal_is_checked_with_drive() {
        let mut drive = my_drive();
        let moved = crate::stages::testing::file("moved", "moved", 1, "m");
        drive.files.insert(moved.id.clone(), moved.clone());
        let removed = |id: &str| DriveChange::File { file_id: FileId(id.into()), file: None };
        drive.changes.insert((Corpus::MyDrive, "t5".into()), (vec![removed("moved"), removed("gone")], "t6".into()));
        let state = FakeState { checkpoint: Some(changes_checkpoint(Corpus::MyDrive, "t5")), ..Default::default() };
        let sent = run_once(drive, state, &[]).await;
        assert_eq!(sent.ids(), [("moved", Origin::Change), ("gone", Origin::Change)]);
        assert!(
            matches!(&sent.events[0].kind, ChangeKind::Upsert(f) if *f == moved),
            "still in Drive: planned where it is"
        );
        assert!(matches!(sent.events[1].kind, ChangeKind::Removed));
        assert_eq!(sent.last_checkpoint().feeds, [(Corpus::MyDrive, "t6".to_string())]);
    }

    #[tokio::test]
    async fn a_rejected_change_token_lists_everything_again() {
        let mut drive = my_drive();
        drive.rejected.insert("t5".into());
        let state = FakeState { checkpoint: Some(changes_checkpoint(Corpus::MyDrive, "t5")), ..Default::default() };
        let sent = run_once(drive, state, &[]).await;
        assert_eq!(sent.ids().iter().filter(|(_, o)| *o == Origin::Listing).count(), 3, "{:?}", sent.ids());
        assert_eq!(sent.last_checkpoint().feeds, [(Corpus::MyDrive, "t1".to_string())]);
    }

    #[tokio::test]
    async fn a_checkpoint_of_another_user_log_lists_everything_again() {
        let cp = changes_checkpoint(Corpus::MyDriveAndShared, "t5");
        let sent = run_once(my_drive(), FakeState { checkpoint: Some(cp), ..Default::default() }, &[]).await;
        assert_eq!(sent.ids()[0], ("A", Origin::Listing));
        assert_eq!(sent.last_checkpoint().feeds, [(Corpus::MyDrive, "t1".to_string())]);
    }

    #[tokio::test]
    async fn a_recorded_drive_out_of_scope_is_removed_and_one_joined_is_followed() {
        let mut cp = changes_checkpoint(Corpus::MyDrive, "t5");
        cp.feeds.push((Corpus::SharedDrive(DriveId("left".into())), "t7".into()));
        let state = FakeState { checkpoint: Some(cp), roots: vec![DriveId("old".into())], ..Default::default() };
        let sent = run_once(my_drive(), state, &["new"]).await;
        let drive_events: Vec<_> = sent
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                ChangeKind::SharedDrive { name, joined } => Some((e.file_id.0.as_str(), name.clone(), *joined)),
                _ => None,
            })
            .collect();
        assert_eq!(
            drive_events,
            [("new", Some("drive new".to_string()), true), ("left", None, false), ("old", None, false)]
        );
        let logs: Vec<_> = sent.last_checkpoint().feeds.iter().map(|(l, _)| l.clone()).collect();
        assert_eq!(logs, [Corpus::MyDrive, Corpus::SharedDrive(DriveId("new".into()))]);
    }

    #[tokio::test]
    async fn a_recorded_refresh_is_served_once_with_the_item_as_drive_has_it_now() {
        let mut drive = my_drive();
        let now = crate::stages::testing::file("x", "x-renamed", 1, "m");
        drive.files.insert(now.id.clone(), now.clone());
        let request = (Refresh::File(FileId("x".into())), 3);
        let state = FakeState {
            checkpoint: Some(changes_checkpoint(Corpus::MyDrive, "t5")),
            refreshes: std::sync::Mutex::new(vec![request.clone()]),
            ..Default::default()
        };
        let sent = run_once(drive, state, &[]).await;
        assert_eq!(sent.ids(), [("x", Origin::Refresh)], "served once although still recorded");
        assert!(matches!(&sent.events[0].kind, ChangeKind::Upsert(f) if *f == now));
        let refreshed: Vec<_> = sent
            .commits
            .iter()
            .filter_map(|m| match m {
                CommitMsg::Refreshed { done, .. } => Some(done.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(refreshed, [vec![request]]);
    }
}
