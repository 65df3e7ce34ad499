//! Things mirrorflow does that an operator watches, each as a small struct whose `emit` writes the log
//! line and moves the metric together (Vector's `internal_events`), so the two never disagree and a
//! call site cannot log without counting. Metric names stay in [`crate::metrics`].

use crate::model::StageName;
use crate::model::{FileId, ObjectKey};
use std::sync::atomic::{AtomicU64, Ordering};

/// An event that logs and counts.
pub trait InternalEvent {
    /// Writes the log line and updates the metric.
    fn emit(self);
}

/// A file went to the dead-letter store.
pub struct DeadLettered<'a> {
    /// The stage that gave up.
    pub stage: StageName,
    /// The file.
    pub file: &'a FileId,
    /// Its Drive name.
    pub name: &'a str,
    /// The key it was meant for.
    pub key: &'a ObjectKey,
    /// Short reason (`downloadQuotaExceeded`, `checksumMismatch`, `destinationError`, …).
    pub reason: &'a str,
    /// The last error in full.
    pub error: &'a str,
}

impl InternalEvent for DeadLettered<'_> {
    fn emit(self) {
        let (stage, file, name, key, reason, error) =
            (self.stage.as_str(), self.file, self.name, self.key, self.reason, self.error);
        tracing::warn!(stage, %file, name, %key, reason, error, "dead-lettered");
        crate::metrics::event(stage, "dead_lettered");
    }
}

/// Written bytes did not match Drive's metadata; the file is fetched again.
pub struct MismatchRefetched<'a> {
    /// The file.
    pub file: &'a FileId,
    /// What differed.
    pub mismatch: &'a dyn std::fmt::Debug,
    /// Fetches so far.
    pub attempt: u32,
}

impl InternalEvent for MismatchRefetched<'_> {
    fn emit(self) {
        let (file, attempt) = (self.file, self.attempt);
        tracing::info!(%file, mismatch = ?self.mismatch, attempt, "verification failed; fetching again");
        crate::metrics::retry("verify", "mismatch");
    }
}

/// A download's body broke and is resumed with `Range`.
pub struct DownloadResumed<'a> {
    /// The file.
    pub file: &'a FileId,
    /// Where it resumes.
    pub offset: u64,
    /// What broke it.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for DownloadResumed<'_> {
    fn emit(self) {
        tracing::info!(file = %self.file, offset = self.offset, error = %self.error, "download interrupted; resuming with Range");
        crate::metrics::retry("drive", "body_interrupted");
    }
}

/// The supervisor restarts a failed stage.
pub struct StageFailed<'a> {
    /// The stage.
    pub stage: StageName,
    /// Why it failed.
    pub error: &'a str,
}

impl InternalEvent for StageFailed<'_> {
    fn emit(self) {
        tracing::error!(stage = self.stage.as_str(), error = %self.error, "stage failed; restarting it");
        crate::metrics::restart(self.stage.as_str());
    }
}

/// A push notification with an unknown channel id or token was refused. Every one is counted; the
/// warning is written at most once per ten seconds, so a flood does not flood the log.
pub struct ForgedNotificationRejected;

/// When the last forged-notification warning was written (Unix ms).
static LAST_FORGED_WARN_MS: AtomicU64 = AtomicU64::new(0);
const FORGED_WARN_EVERY_MS: u64 = 10_000;

impl InternalEvent for ForgedNotificationRejected {
    fn emit(self) {
        crate::metrics::webhook_rejected();
        let now = crate::model::unix_ms();
        let last = LAST_FORGED_WARN_MS.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= FORGED_WARN_EVERY_MS
            && LAST_FORGED_WARN_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                "rejected a push notification with an unknown channel id or token (further ones for 10 s are only counted in {})",
                crate::metrics::WEBHOOK_REJECTED_TOTAL
            );
        }
    }
}

/// A stage counted one item under an outcome label (`mirrorflow_events_total{stage, outcome}`): the
/// plain counts with no log line of their own (forwarded, planned, verified, each committed outcome…).
pub struct ItemCounted {
    /// The stage's name as metrics label it (`dedup`'s unchanged count is taken in the planner).
    pub stage: &'static str,
    /// What happened to the item.
    pub outcome: &'static str,
}

impl InternalEvent for ItemCounted {
    fn emit(self) {
        crate::metrics::event(self.stage, self.outcome);
    }
}

/// Bytes moved through the chunk path (`download` from Drive, `upload` to the destination).
pub struct BytesMoved {
    /// `download` or `upload`.
    pub direction: &'static str,
    /// How many.
    pub bytes: u64,
}

impl InternalEvent for BytesMoved {
    fn emit(self) {
        crate::metrics::bytes(self.direction, self.bytes);
    }
}

/// The part-memory budget's reservation changed: the bytes held now.
pub struct PartMemoryHeld {
    /// Bytes reserved by parts in memory.
    pub bytes: u64,
}

impl InternalEvent for PartMemoryHeld {
    fn emit(self) {
        crate::metrics::part_memory(self.bytes);
    }
}

/// A stage's worker processed one batch, in this long.
pub struct BatchProcessed {
    /// The stage.
    pub stage: StageName,
    /// How long it took.
    pub took: std::time::Duration,
}

impl InternalEvent for BatchProcessed {
    fn emit(self) {
        crate::metrics::stage_time(self.stage.as_str(), self.took);
    }
}

/// The committer saved a checkpoint read `lag_seconds` ago.
pub struct CheckpointSaved {
    /// Age of the page it resumes after.
    pub lag_seconds: f64,
}

impl InternalEvent for CheckpointSaved {
    fn emit(self) {
        crate::metrics::checkpoint_lag(self.lag_seconds);
        tracing::debug!("checkpoint saved");
    }
}

/// The committer recorded a skip (`mirrorflow_skipped_total{reason}`).
pub struct SkipCommitted {
    /// The skip's label.
    pub reason: &'static str,
}

impl InternalEvent for SkipCommitted {
    fn emit(self) {
        crate::metrics::skipped(self.reason);
    }
}

/// The dead-letter store holds this many files now.
pub struct DeadLettersCounted {
    /// Files in the dead-letter store.
    pub files: usize,
}

impl InternalEvent for DeadLettersCounted {
    fn emit(self) {
        crate::metrics::dlq_files(self.files);
    }
}

/// An all-drives listing of a folder's children came back incomplete; it is listed again within
/// the folder's own corpus.
pub struct ChildListingIncomplete<'a> {
    /// The folder.
    pub folder: &'a FileId,
    /// Its corpus.
    pub corpus: &'a crate::model::Corpus,
}

impl InternalEvent for ChildListingIncomplete<'_> {
    fn emit(self) {
        let (folder, corpus) = (self.folder, self.corpus);
        tracing::info!(%folder, ?corpus, "all-drives listing of a folder's children was incomplete; listing it within its own corpus");
    }
}

/// The saved checkpoint follows other change logs than the scope: everything is listed again.
pub struct CheckpointOfOtherLogs;

impl InternalEvent for CheckpointOfOtherLogs {
    fn emit(self) {
        tracing::warn!(
            "the saved checkpoint follows other change logs than this scope (written by an older version, or My Drive or the items shared with the user joined or left the scope): listing everything again"
        );
    }
}

/// Why a shared drive's files are removed, or its tree listed.
pub enum SharedDriveChange<'a> {
    /// Out of scope at start (deleted, access lost, or not selected).
    LeftScope(&'a crate::model::DriveId),
    /// Joined while running: listed and followed.
    Joined(&'a crate::model::DriveId, &'a str),
    /// Deleted or no longer accessible while running.
    Gone(&'a crate::model::DriveId),
}

impl InternalEvent for SharedDriveChange<'_> {
    fn emit(self) {
        match self {
            SharedDriveChange::LeftScope(id) => {
                tracing::warn!(drive = %id, "shared drive no longer in scope (deleted, access lost, or not selected): its mirrored files are removed per `deletes`")
            }
            SharedDriveChange::Joined(id, name) => {
                tracing::info!(drive = %id, %name, "joined a shared drive: listing it and following its change log")
            }
            SharedDriveChange::Gone(id) => {
                tracing::warn!(drive = %id, "shared drive deleted or no longer accessible: its mirrored files are removed per `deletes`")
            }
        }
    }
}

/// Drive rejected a page token: a listing restarts from its first page, or (a saved change token)
/// everything is listed again.
pub enum PageTokenRejected<'a> {
    /// A listing's page token.
    Listing {
        /// The corpus listed.
        corpus: &'a crate::model::Corpus,
        /// Drive's message.
        message: &'a str,
    },
    /// A saved change token.
    Changes {
        /// The change log.
        log: &'a crate::model::Corpus,
        /// Drive's message.
        message: &'a str,
    },
}

impl InternalEvent for PageTokenRejected<'_> {
    fn emit(self) {
        match self {
            PageTokenRejected::Listing { corpus, message } => {
                tracing::warn!(?corpus, %message, "listing page token rejected; restarting this listing from its first page")
            }
            PageTokenRejected::Changes { log, message } => {
                tracing::warn!(?log, msg = %message, "saved change token rejected; listing everything again")
            }
        }
    }
}

/// A download continues an interrupted multipart upload from its recorded parts, or cannot.
pub enum UploadResume<'a> {
    /// Continues at `offset`.
    FromParts {
        /// The file.
        file: &'a FileId,
        /// Where the bytes resume.
        offset: u64,
    },
    /// Drive refused the recorded offset: the download starts over.
    Refused {
        /// The file.
        file: &'a FileId,
        /// The recorded offset.
        offset: u64,
        /// Drive's answer.
        error: &'a dyn std::fmt::Display,
    },
    /// The interrupted upload is gone from the destination: the upload starts over.
    Gone {
        /// The file.
        file: &'a FileId,
    },
}

impl InternalEvent for UploadResume<'_> {
    fn emit(self) {
        match self {
            UploadResume::FromParts { file, offset } => {
                tracing::info!(%file, offset, "resuming an interrupted upload from its recorded parts")
            }
            UploadResume::Refused { file, offset, error } => {
                tracing::warn!(%file, offset, error = %error, "cannot resume at the recorded offset; starting over")
            }
            UploadResume::Gone { file } => {
                tracing::warn!(%file, "the interrupted upload is gone from the destination; starting over")
            }
        }
    }
}

/// A file left Drive between planning and its download: its removal follows.
pub struct GoneBeforeDownload<'a> {
    /// The file.
    pub file: &'a FileId,
}

impl InternalEvent for GoneBeforeDownload<'_> {
    fn emit(self) {
        tracing::info!(file = %self.file, "gone from Drive before its download; its removal follows");
        crate::metrics::event(StageName::Downloader.as_str(), "gone");
    }
}

/// Drive will not hand a file over (quota, abuse flag, …): skipped, counted under its reason.
pub struct DownloadRefused<'a> {
    /// The file.
    pub file: &'a FileId,
    /// Its Drive name.
    pub name: &'a str,
    /// Why (`mirrorflow_events_total{stage="downloader", outcome=reason}`).
    pub reason: &'a crate::model::SkipReason,
    /// Drive's answer.
    pub error: &'a dyn std::fmt::Display,
    /// How long a quota deferral lasts.
    pub deferral: std::time::Duration,
}

impl InternalEvent for DownloadRefused<'_> {
    fn emit(self) {
        let (id, name, reason) = (self.file, self.name, self.reason);
        match reason {
            crate::model::SkipReason::QuotaDeferred(_) => tracing::warn!(
                file = %id, name = %name, hours = self.deferral.as_secs() / 3600,
                "Drive's download quota for this file is used up; deferred, asked for again by a run after that"
            ),
            _ => {
                tracing::info!(file = %id, name = %name, reason = reason.label(), error = %self.error, "skipped: Drive will not hand this file over")
            }
        }
        crate::metrics::event(StageName::Downloader.as_str(), reason.label());
    }
}

/// The planner skips a file Drive will not hand over (or has no bytes for).
pub struct PlannerSkipped<'a> {
    /// The file.
    pub file: &'a crate::model::DriveFile,
    /// Why.
    pub reason: &'a crate::model::SkipReason,
}

impl InternalEvent for PlannerSkipped<'_> {
    fn emit(self) {
        let file = self.file;
        match self.reason {
            crate::model::SkipReason::DownloadDisabled(_) => {
                crate::metrics::event("planner", "download_disabled");
                tracing::info!(file = %file.id, name = %file.name, "skipped: the owner disabled downloads of this file");
            }
            crate::model::SkipReason::NoExport(_) => {
                crate::metrics::event("planner", "no_export");
                tracing::info!(file = %file.id, name = %file.name, mime = %file.mime_type, "skipped: Drive has no export for this Google type");
            }
            r => tracing::debug!(file = %file.id, reason = r.label(), "skipped again: Drive refused this version"),
        }
    }
}

/// A copy's source is not provably the file's bytes: they are fetched from Drive instead.
pub struct CopySourceUnproven<'a> {
    /// The file.
    pub file: &'a FileId,
    /// The source key.
    pub from: &'a ObjectKey,
}

impl InternalEvent for CopySourceUnproven<'_> {
    fn emit(self) {
        crate::metrics::event(StageName::Uploader.as_str(), "copy_source_unproven");
        tracing::info!(file = %self.file, from = %self.from, "copy source does not provably hold Drive's bytes; fetching them from Drive");
    }
}

/// An object a subtree move should move is missing: the file is fetched from Drive again.
pub struct MoveSourceMissing<'a> {
    /// The missing key.
    pub key: &'a ObjectKey,
    /// The file.
    pub file: &'a FileId,
}

impl InternalEvent for MoveSourceMissing<'_> {
    fn emit(self) {
        tracing::warn!(key = %self.key, file = %self.file, "object to move is missing; fetching it from Drive again");
    }
}

/// A move's old key could not be removed; the next start removes it.
pub struct OldKeyLeft<'a> {
    /// The old key.
    pub key: &'a ObjectKey,
    /// Why.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for OldKeyLeft<'_> {
    fn emit(self) {
        tracing::warn!(key = %self.key, error = %self.error, "could not remove the old key after a move; the next start removes it");
    }
}

/// A remote's circuit breaker changed state: the `mirrorflow_circuit_state{remote}` gauge (0 closed,
/// 1 half-open, 2 open), and the operator's line for each transition.
pub enum CircuitChanged {
    /// A new breaker starts closed (gauge only).
    Started {
        /// The remote.
        remote: &'static str,
        /// Its state as the gauge reads it.
        state: u8,
    },
    /// Published after a transition (gauge only; the lines are the variants below).
    Published {
        /// The remote.
        remote: &'static str,
        /// Its state as the gauge reads it.
        state: u8,
    },
    /// The cooldown passed: one probe call goes through.
    HalfOpen {
        /// The remote.
        remote: &'static str,
    },
    /// Too many failures in a row: calls are held for `cooldown`.
    Opened {
        /// The remote.
        remote: &'static str,
        /// How long calls are held.
        cooldown: std::time::Duration,
    },
    /// A probe succeeded.
    Closed {
        /// The remote.
        remote: &'static str,
    },
}

impl InternalEvent for CircuitChanged {
    fn emit(self) {
        match self {
            CircuitChanged::Started { remote, state } | CircuitChanged::Published { remote, state } => {
                crate::metrics::circuit_state(remote, state)
            }
            CircuitChanged::HalfOpen { remote } => tracing::info!(remote, "circuit half-open: probing"),
            CircuitChanged::Opened { remote, cooldown } => {
                crate::metrics::circuit_opened(remote);
                tracing::warn!(remote, ?cooldown, "circuit open: holding calls");
            }
            CircuitChanged::Closed { remote } => tracing::info!(remote, "circuit closed"),
        }
    }
}

/// A call to a remote failed with a retryable error and is tried again after `wait`.
pub struct Retrying<'a> {
    /// The remote (metric label).
    pub remote: &'static str,
    /// Why (metric label).
    pub reason: &'a str,
    /// The backoff before the next try.
    pub wait: std::time::Duration,
    /// Failures so far.
    pub failures: u32,
}

impl InternalEvent for Retrying<'_> {
    fn emit(self) {
        let (remote, wait, failures) = (self.remote, self.wait, self.failures);
        crate::metrics::retry(remote, self.reason);
        tracing::debug!(remote, reason = %self.reason, ?wait, failures, "retrying");
    }
}

/// One call to Drive is about to be sent (`mirrorflow_drive_requests_total`).
pub struct DriveRequested {
    /// The remote label.
    pub remote: &'static str,
}

impl InternalEvent for DriveRequested {
    fn emit(self) {
        crate::metrics::drive_request(self.remote);
    }
}

/// The store flushed its memtables (counted as a `state` event).
pub struct MemtablesFlushed;

impl InternalEvent for MemtablesFlushed {
    fn emit(self) {
        crate::metrics::event("state", "memtables_flushed");
    }
}

/// A scheduled verify finished: what it found, or why it could not finish.
pub enum ScheduledVerify<'a> {
    /// It finished (the `mirrorflow_verify_*` gauges).
    Finished {
        /// Files missing from the mirror.
        missing: u64,
        /// Files whose bytes differ.
        mismatched: u64,
        /// Objects no file owns.
        extra: u64,
    },
    /// It could not finish.
    Failed {
        /// Why.
        error: &'a dyn std::fmt::Display,
    },
    /// The mirror equals Drive.
    Clean {
        /// Files checked.
        files: u64,
    },
    /// It found differences and asked the pipeline to repair them.
    Repairing {
        /// Files missing.
        missing: u64,
        /// Files whose bytes differ.
        mismatched: u64,
        /// Objects no file owns.
        extra: u64,
        /// Objects of unknown origin.
        unknown: u64,
        /// Shortcut links that differ.
        links: u64,
        /// Repair requests recorded.
        repairs: usize,
    },
}

impl InternalEvent for ScheduledVerify<'_> {
    fn emit(self) {
        match self {
            ScheduledVerify::Finished { missing, mismatched, extra } => {
                crate::metrics::verify_run(missing, mismatched, extra)
            }
            ScheduledVerify::Failed { error } => {
                tracing::warn!(error = %error, "scheduled verify could not finish; the next one is in [verify] every")
            }
            ScheduledVerify::Clean { files } => tracing::info!(files, "scheduled verify: the mirror equals Drive"),
            ScheduledVerify::Repairing { missing, mismatched, extra, unknown, links, repairs } => tracing::warn!(
                missing,
                mismatched,
                extra,
                unknown,
                links,
                repairs,
                "scheduled verify found differences; repairing them through the pipeline"
            ),
        }
    }
}

/// The index's PostgreSQL session ended with an error: counted, the lag published, and retried after
/// `retry_in`.
pub struct IndexSessionFailed<'a> {
    /// The error.
    pub error: &'a dyn std::fmt::Display,
    /// Whether a retry may cure it (unreachable) or PostgreSQL refuses the writes.
    pub retryable: bool,
    /// Audit entries not applied yet, when the store could tell.
    pub lag: Option<u64>,
    /// The backoff.
    pub retry_in: std::time::Duration,
}

impl InternalEvent for IndexSessionFailed<'_> {
    fn emit(self) {
        crate::metrics::index_error();
        if let Some(lag) = self.lag {
            crate::metrics::index_lag(lag);
        }
        let (error, retry_in) = (self.error, self.retry_in);
        if self.retryable {
            tracing::warn!(error = %error, ?retry_in, "index: PostgreSQL is not reachable; the mirror goes on");
        } else {
            tracing::error!(error = %error, ?retry_in, "index: PostgreSQL refuses the index's writes");
        }
    }
}

/// Audit entries the index has not applied yet (`mirrorflow_index_lag_events`).
pub struct IndexLagged {
    /// How many.
    pub events: u64,
}

impl InternalEvent for IndexLagged {
    fn emit(self) {
        crate::metrics::index_lag(self.events);
    }
}

/// Rows the index wrote (`mirrorflow_index_rows_total`); after a rebuild, its line too.
pub enum IndexRowsWritten {
    /// A batch of audit entries applied.
    Applied {
        /// Rows written.
        rows: usize,
    },
    /// The index rebuilt from the store's records, up to audit seq `cursor`.
    Rebuilt {
        /// Rows written.
        rows: usize,
        /// The audit seq it covers.
        cursor: u64,
    },
}

impl InternalEvent for IndexRowsWritten {
    fn emit(self) {
        match self {
            IndexRowsWritten::Applied { rows } => crate::metrics::index_rows(rows),
            IndexRowsWritten::Rebuilt { rows, cursor } => {
                crate::metrics::index_rows(rows);
                tracing::info!(rows, cursor, "index rebuilt from the store's records");
            }
        }
    }
}

/// The multipart bookkeeping settled an interrupted or unused upload.
pub enum MultipartSettled<'a> {
    /// An interrupted upload that cannot be continued is aborted.
    AbortingStale {
        /// The file.
        file: &'a FileId,
        /// Its key.
        key: &'a ObjectKey,
    },
    /// Uploads a killed run opened without recording them were aborted.
    AbortedUnrecorded {
        /// The file.
        file: &'a FileId,
        /// Its key.
        key: &'a ObjectKey,
        /// How many.
        n: usize,
    },
    /// A killed run may have left an upload this store cannot list.
    MaybeLeftOver {
        /// The file.
        file: &'a FileId,
        /// Its key.
        key: &'a ObjectKey,
    },
    /// An interrupted upload with recorded parts is kept to resume.
    KeptToResume {
        /// The file.
        file: &'a FileId,
        /// Its key.
        key: &'a ObjectKey,
        /// Parts recorded.
        parts: usize,
        /// Where the bytes resume.
        offset: u64,
    },
    /// An upload no transfer will continue is aborted.
    AbortingUnused {
        /// The file.
        file: &'a FileId,
        /// Its key.
        key: &'a ObjectKey,
    },
    /// A part's progress could not be recorded (the upload goes on; a crash resumes from earlier).
    ProgressNotRecorded {
        /// The file.
        file: &'a FileId,
        /// Why.
        error: &'a dyn std::fmt::Display,
    },
}

impl InternalEvent for MultipartSettled<'_> {
    fn emit(self) {
        match self {
            MultipartSettled::AbortingStale { file, key } => {
                tracing::info!(%file, %key, "aborting an interrupted multipart upload that cannot be continued")
            }
            MultipartSettled::AbortedUnrecorded { file, key, n } => {
                tracing::info!(%file, %key, n, "aborted uploads a killed run opened without recording them")
            }
            MultipartSettled::MaybeLeftOver { file, key } => tracing::warn!(
                %file,
                %key,
                "a killed run may have left an unfinished upload here; this store cannot list them (the bucket's lifecycle rules remove them)"
            ),
            MultipartSettled::KeptToResume { file, key, parts, offset } => {
                tracing::info!(%file, %key, parts, offset, "keeping an interrupted multipart upload to resume")
            }
            MultipartSettled::AbortingUnused { file, key } => {
                tracing::info!(%file, %key, "aborting a multipart upload no transfer will continue")
            }
            MultipartSettled::ProgressNotRecorded { file, error } => {
                tracing::warn!(%file, error = %error, "cannot record upload progress")
            }
        }
    }
}

/// A run over an empty state and a populated destination adopts what is there.
pub enum Adoption<'a> {
    /// Adoption begins.
    Started,
    /// An object no file owns is removed per `deletes`.
    OrphanRemoved {
        /// Its key.
        key: &'a ObjectKey,
    },
    /// Adoption ended; `swept` orphans were removed.
    Done {
        /// Objects removed.
        swept: usize,
    },
}

impl InternalEvent for Adoption<'_> {
    fn emit(self) {
        match self {
            Adoption::Started => tracing::info!(
                "the state is empty but the destination holds a mirror: objects with the right size and md5 are kept, not downloaded again, and objects no file owns are swept after the first listing"
            ),
            Adoption::OrphanRemoved { key } => tracing::info!(%key, "removing an object no file owns"),
            Adoption::Done { swept } => {
                tracing::info!(swept, "adoption done: objects no file owns were removed per `deletes`")
            }
        }
    }
}

/// A full listing ended: the records it did not see are checked against Drive.
pub struct ListingSwept {
    /// Records swept.
    pub swept: usize,
}

impl InternalEvent for ListingSwept {
    fn emit(self) {
        tracing::info!(swept = self.swept, "full listing done: records it did not see are checked against Drive");
    }
}

/// A shared drive left the scope: its tree is removed per `deletes`.
pub struct SharedDriveTreeRemoved<'a> {
    /// The drive.
    pub drive: &'a crate::model::DriveId,
    /// Its root's key.
    pub key: &'a str,
    /// Folders under it.
    pub folders: usize,
}

impl InternalEvent for SharedDriveTreeRemoved<'_> {
    fn emit(self) {
        let (drive, key, folders) = (self.drive, self.key, self.folders);
        tracing::warn!(%drive, %key, folders, "shared drive left the scope: its mirrored files are removed per `deletes`");
    }
}
