//! Chunk-uploader: writes a transfer's chunks to the destination while hashing them (md5 and sha256 on
//! the stream, no second pass). Below the part size it is one PUT; above, a multipart upload with
//! parts in parallel. Copies and deletes are server-side.

use super::budget::Reservation;
use super::downloader::{Body, Chunk, Transfer};
use super::verifier::{Mismatch, check_against_drive, retry_or_dead_letter};
use super::{Emit, Stage, StageError};
use crate::dest::{DestError, ObjectMeta, StoredContent};
use crate::hashing::{ContentHasher, HashState};
use crate::internal_events::InternalEvent;
use crate::model::StageName;
use crate::model::{ActionKind, FileId, ObjectKey, Outcome, OutcomeKind, Planned, Uploaded};
use crate::retry::{Classified, ErrorClass};
use crate::state::{FolderPage, Intent, StoreError, UploadRecord};
use bytes::Bytes;
use std::future::Future;

/// What the uploader does to the destination and notes in the store. `crate::adapters::UploadTarget` (object_store and
/// fjall) is the real one; unit tests use an in-memory double.
pub trait WriteTarget: Send + Sync + 'static {
    /// A multipart upload in progress.
    type Parts: PartSink;
    /// Writes a whole object in one request; returns the md5 the store reports for it, if any.
    fn put(
        &self,
        key: &ObjectKey,
        body: Vec<Bytes>,
        meta: &ObjectMeta,
    ) -> impl Future<Output = Result<Option<String>, DestError>> + Send;
    /// Server-side copy for the same file and content (a subtree move step): the source's metadata.
    fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> impl Future<Output = Result<(), DestError>> + Send;
    /// Server-side copy that becomes `meta`'s file's object (a content-dedup copy, a renamed file):
    /// the copy carries that file's metadata, not the source's.
    fn copy_as(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
        meta: &ObjectMeta,
    ) -> impl Future<Output = Result<(), DestError>> + Send;
    /// Removes an object as `[destination] deletes` says (trash, delete or keep).
    fn remove(&self, key: &ObjectKey) -> impl Future<Output = Result<(), DestError>> + Send;
    /// Deletes an object (the source of a finished move).
    fn delete(&self, key: &ObjectKey) -> impl Future<Output = Result<(), DestError>> + Send;
    /// Moves an object to another key: the source is gone once the target holds its bytes (a rename
    /// on a local folder; a copy, then the delete, elsewhere).
    fn move_object(&self, from: &ObjectKey, to: &ObjectKey) -> impl Future<Output = Result<(), DestError>> + Send {
        async move {
            self.copy(from, to).await?;
            self.delete(from).await
        }
    }
    /// The object's size, `None` when absent.
    fn size_of(&self, key: &ObjectKey) -> impl Future<Output = Result<Option<u64>, DestError>> + Send;
    /// What the object holds (size, and md5 where the store can tell it), `None` when absent: a copy
    /// source is checked with it before the copy.
    fn stored_content(&self, key: &ObjectKey) -> impl Future<Output = Result<Option<StoredContent>, DestError>> + Send;
    /// Starts a multipart upload of `file` to `key`.
    fn start_parts(
        &self,
        file: &FileId,
        key: &ObjectKey,
        meta: &ObjectMeta,
        content: Option<(String, u64)>,
    ) -> impl Future<Output = Result<Self::Parts, DestError>> + Send;
    /// Continues an interrupted upload with recorded parts.
    fn resume_parts(&self, file: &FileId, record: UploadRecord) -> Self::Parts;
    /// Aborts an interrupted upload of `file` that no transfer continues.
    fn discard_stale_upload(&self, file: &FileId) -> impl Future<Output = ()> + Send;
    /// Forgets the upload recorded for `file`.
    fn forget_upload(&self, file: &FileId);
    /// Notes the keys about to be written, before the writes (settled at the next start after a crash).
    fn note_writes(&self, intents: &[Intent]) -> Result<(), StoreError>;
    /// A page of a folder's file records (a subtree change reads them a page at a time).
    fn folder_page(&self, folder: &FileId, after: Option<&FileId>, limit: usize) -> Result<FolderPage, StoreError>;
    /// Keeps the content `file`'s object holds now under `.versions/` when `[destination] versions`
    /// asks for it and `new_md5` (the content about to replace it; `None` for a removal) differs.
    fn keep_version(&self, file: &FileId, new_md5: Option<&str>) -> impl Future<Output = Result<(), DestError>> + Send;
}

/// A multipart upload in progress, as the uploader drives it.
pub trait PartSink: Send + 'static {
    /// Whether progress is recorded for a restart (each part then carries its digest state).
    fn records_progress(&self) -> bool;
    /// Whether each chunk is sent as it comes, rather than whole parts.
    fn streams_chunks(&self) -> bool;
    /// Sends the next part; `room` is released once it is sent.
    fn send<R: Send + 'static>(
        &mut self,
        body: Vec<Bytes>,
        concurrency: usize,
        end: Option<(u64, HashState)>,
        room: Option<R>,
    ) -> impl Future<Output = Result<(), DestError>> + Send;
    /// Completes the upload.
    fn finish(self) -> impl Future<Output = Result<(), DestError>> + Send;
    /// Abandons the upload.
    fn abort(self) -> impl Future<Output = ()> + Send;
}

/// The uploader stage: carries out every action on the destination (uploads, copies, removals, the
/// steps of a subtree move), hashing uploads on the stream and publishing only bytes that match Drive.
pub struct Uploader<W: WriteTarget> {
    /// The destination, and the store's notes about writes.
    pub target: W,
    /// Multipart part size; smaller files go in one PUT.
    pub part_size: usize,
    /// Parts in flight per file.
    pub part_concurrency: usize,
    /// Bytes all uploads may hold in part buffers at once (shared by every uploader worker).
    pub budget: super::budget::MemoryBudget,
    /// Digests computed on the stream.
    pub digests: crate::hashing::Digests,
    /// The downloader's input, for a copy whose source vanished (fetch the bytes instead).
    pub refetch: super::Redo<Planned>,
    /// Longest whole key (`[destination] max_key_bytes`): a subtree move's keys keep within it, as
    /// the planner's do.
    pub max_key_bytes: usize,
}

#[allow(clippy::large_enum_variant)]
enum Written {
    Done(Uploaded),
    Abandoned,
    /// A copy whose source does not provably hold Drive's bytes: they are fetched from Drive instead.
    Refetch,
    /// The bytes do not match Drive's metadata; nothing was published and the old object is intact.
    Rejected(Planned, Mismatch),
}

/// The content an action puts in place of the file's current object, if it replaces or removes it:
/// `Some(new md5)` for a write (`Some(None)`: unknown, an export), `Some(None)` for a removal, `None`
/// for a subtree change (its removals keep versions file by file).
fn replacing_content(planned: &Planned) -> Option<Option<&str>> {
    match &planned.kind {
        ActionKind::Upload { .. } | ActionKind::Copy { .. } => Some(planned.file.md5.as_deref()),
        ActionKind::Delete => Some(None),
        ActionKind::Tree(_) => None,
    }
}

/// A write that failed: fatal when the store could not record it, else the file is dead-lettered;
/// a store's refusal of this one object with its own reason and what to change (`max_key_bytes`: the
/// key limit in force, which an invalid key's message names).
async fn write_failed(
    planned: &Planned,
    e: DestError,
    max_key_bytes: usize,
    emit: &Emit<Uploaded>,
) -> Result<(), StageError> {
    if e.class() == ErrorClass::Fatal {
        return Err(StageError::Fatal(e.to_string()));
    }
    if let Some(refusal) = e.refusal() {
        crate::internal_events::ItemCounted { stage: StageName::Uploader.as_str(), outcome: refusal.reason() }.emit();
        let size = planned.file.size.filter(|_| is_media(planned));
        let why = format!("{} ({e})", refusal.explain(&planned.key, size, max_key_bytes));
        return emit.dead_letter(StageName::Uploader, planned, refusal.reason(), why).await;
    }
    emit.dead_letter(StageName::Uploader, planned, "destinationError", e.to_string()).await
}

/// One upload in progress: the digests so far, the bytes waiting to fill a part, the part's share of
/// the memory budget, and the multipart upload once one is needed.
struct Stream<P> {
    hasher: ContentHasher,
    parts: Option<P>,
    pending: Vec<Bytes>,
    pending_len: usize,
    room: Option<Reservation>,
    part_size: usize,
}

impl<P: PartSink> Stream<P> {
    fn new(hasher: ContentHasher, parts: Option<P>, planned: &Planned, part_size: usize) -> Self {
        let part_size = part_size_for(part_size, planned.file.size);
        Stream { hasher, parts, pending: Vec::new(), pending_len: 0, room: None, part_size }
    }

    /// Sends the queued bytes as the next part; a part that is not the last carries the digest state
    /// where it ends, when progress is recorded.
    async fn send_pending(&mut self, concurrency: usize, more_follow: bool) -> Result<(), DestError> {
        let Some(parts) = self.parts.as_mut() else { return Ok(()) };
        let end = (more_follow && parts.records_progress()).then(|| (self.hasher.len(), self.hasher.snapshot()));
        parts.send(std::mem::take(&mut self.pending), concurrency, end, self.room.take()).await?;
        self.pending_len = 0;
        Ok(())
    }

    async fn abort(self) {
        if let Some(parts) = self.parts {
            parts.abort().await;
        }
    }
}

/// Whether `len` bytes already exceed what Drive says the file holds (media only: an export's size is
/// not known in advance). Reading stops there: the extra bytes are never stored.
fn over_drive_size(planned: &Planned, len: u64) -> bool {
    is_media(planned) && planned.file.size.is_some_and(|size| len > size)
}

/// Where the file's bytes come from: the upload's source, or for a copy the source it would be
/// fetched from (an exported doc's copy is still that export, with its content type).
fn source_of(planned: &Planned) -> Option<&crate::model::Source> {
    match &planned.kind {
        ActionKind::Upload { source } | ActionKind::Copy { fallback: source, .. } => Some(source),
        _ => None,
    }
}

fn is_media(planned: &Planned) -> bool {
    !matches!(&planned.kind, ActionKind::Upload { source: crate::model::Source::Export { .. } })
}

impl<W: WriteTarget> Uploader<W> {
    fn meta(planned: &Planned) -> ObjectMeta {
        ObjectMeta {
            drive_id: planned.file.id.0.clone(),
            drive_name: planned.file.name.clone(),
            content_type: match source_of(planned) {
                Some(crate::model::Source::Export { mime, .. } | crate::model::Source::Download { mime }) => {
                    Some(mime.clone())
                }
                Some(crate::model::Source::Link { .. }) => Some("application/internet-shortcut".into()),
                _ if !planned.file.mime_type.starts_with("application/vnd.google-apps") => {
                    Some(planned.file.mime_type.clone())
                }
                _ => None,
            },
            md5: planned
                .file
                .md5
                .clone()
                .filter(|_| !matches!(source_of(planned), Some(crate::model::Source::Export { .. }))),
        }
    }

    async fn write_stream(
        &self,
        planned: Planned,
        mut body: Body,
        resume: Option<UploadRecord>,
    ) -> Result<Written, DestError> {
        let meta = Self::meta(&planned);
        let mut w = match resume {
            Some(rec) => {
                let (hasher, parts) = self.continue_upload(&planned, rec)?;
                Stream::new(hasher, Some(parts), &planned, self.part_size)
            }
            None => Stream::new(ContentHasher::new(self.digests), None, &planned, self.part_size),
        };
        loop {
            match body.recv().await {
                Some(Chunk::Data(bytes)) => {
                    if let Some(m) = self.take_chunk(&planned, &meta, &mut w, bytes).await? {
                        w.abort().await;
                        return Ok(Written::Rejected(planned, m));
                    }
                }
                Some(Chunk::End) => break,
                Some(Chunk::Abort) | None => {
                    w.abort().await;
                    return Ok(Written::Abandoned);
                }
            }
        }
        self.publish(planned, &meta, w).await
    }

    /// Hashes one chunk and queues it; sends a part when one is full (starting the multipart upload at
    /// the first). A chunk that takes the file past Drive's size is refused: the extra bytes are never
    /// stored.
    async fn take_chunk(
        &self,
        planned: &Planned,
        meta: &ObjectMeta,
        w: &mut Stream<W::Parts>,
        bytes: Bytes,
    ) -> Result<Option<Mismatch>, DestError> {
        if w.room.is_none() {
            // The whole part (or what is left of the file) before its first byte is kept; a write that
            // streams chunk by chunk (a local folder) needs the chunk only.
            let left = planned.file.size.map_or(w.part_size as u64, |s| s.saturating_sub(w.hasher.len()));
            let streaming = w.parts.as_ref().is_some_and(|p| p.streams_chunks());
            let want = if streaming { bytes.len() } else { w.part_size.min(left.max(1) as usize) };
            w.room = Some(self.budget.reserve(want).await);
        }
        w.hasher.update(&bytes);
        if over_drive_size(planned, w.hasher.len()) {
            return Ok(Some(Mismatch::Size { expected: planned.file.size.unwrap_or(0), got: w.hasher.len() }));
        }
        crate::internal_events::BytesMoved { direction: "upload", bytes: bytes.len() as u64 }.emit();
        w.pending_len += bytes.len();
        w.pending.push(bytes);
        let streaming = w.parts.as_ref().is_some_and(|p| p.streams_chunks());
        if w.pending_len >= w.part_size || streaming {
            if w.parts.is_none() {
                let content = planned.file.md5.clone().zip(planned.file.size);
                w.parts = Some(self.target.start_parts(&planned.file.id, &planned.key, meta, content).await?);
            }
            w.send_pending(self.part_concurrency, true).await?;
        }
        Ok(None)
    }

    /// Write, verify, publish: the digests are compared with Drive's before the bytes become visible at
    /// the key (a single PUT before it is sent, a multipart upload before it is completed), so a
    /// corrupted download never replaces the good copy.
    async fn publish(
        &self,
        planned: Planned,
        meta: &ObjectMeta,
        mut w: Stream<W::Parts>,
    ) -> Result<Written, DestError> {
        if w.parts.is_some() && !w.pending.is_empty() {
            w.send_pending(self.part_concurrency, false).await?;
        }
        let digest = w.hasher.finish();
        let (md5, sha256, size) = (digest.md5, digest.sha256, digest.len);
        let streamed = Uploaded { planned, md5, sha256, size, stored_md5: None };
        if let Err(m) = check_against_drive(&streamed) {
            if let Some(parts) = w.parts {
                parts.abort().await;
            }
            return Ok(Written::Rejected(streamed.planned, m));
        }
        let stored_md5 = match w.parts {
            Some(parts) => {
                parts.finish().await?;
                None
            }
            None => self.target.put(&streamed.planned.key, w.pending, meta).await?,
        };
        Ok(Written::Done(Uploaded { stored_md5, ..streamed }))
    }

    /// Picks up an interrupted upload the downloader chose to continue: its recorded parts stay, and
    /// the digests continue from the state saved with them.
    fn continue_upload(&self, planned: &Planned, record: UploadRecord) -> Result<(ContentHasher, W::Parts), DestError> {
        let point = record.resume.as_ref().ok_or_else(|| DestError::Config("resume without recorded parts".into()))?;
        let hasher =
            ContentHasher::restore(&point.hashes, self.digests).map_err(|e| DestError::Config(e.to_string()))?;
        tracing::debug!(file = %planned.file.id, parts = point.parts.len(), offset = point.offset, "continuing multipart upload");
        crate::internal_events::ItemCounted { stage: Self::NAME.as_str(), outcome: "upload_resumed" }.emit();
        Ok((hasher, self.target.resume_parts(&planned.file.id, record)))
    }

    async fn handle(&self, t: Transfer, emit: &Emit<Uploaded>) -> Result<(), StageError> {
        let planned = t.planned.clone();
        if t.resume.is_none() {
            self.target.discard_stale_upload(&planned.file.id).await;
        }
        self.target.note_writes(&written_keys(&planned))?;
        if let Some(new_md5) = replacing_content(&planned)
            && let Err(e) = self.target.keep_version(&planned.file.id, new_md5).await
        {
            return write_failed(&planned, e, self.max_key_bytes, emit).await;
        }
        let result = match (&planned.kind, t.body) {
            (ActionKind::Delete, _) => match self.target.remove(&planned.key).await {
                Ok(()) => {
                    let kind = OutcomeKind::Removed { key: Some(planned.key.clone()) };
                    return emit.outcome(Outcome { seq: planned.seq, file_id: planned.file.id.clone(), kind }).await;
                }
                Err(e) => Err(e),
            },
            (ActionKind::Copy { from, .. }, _) => match self.copy(&planned, from).await {
                Err(DestError::Store { source: object_store::Error::NotFound { .. }, .. }) => Ok(Written::Refetch),
                other => other,
            },
            (ActionKind::Tree(tree), _) => match self.apply_tree_in_steps(tree, emit).await? {
                Ok(lost) => {
                    // The files are committed by the steps; the outcome records the folders.
                    let done = crate::model::TreeChange {
                        folder: tree.folder.clone(),
                        dirs: Vec::new(),
                        folders: tree.folders.clone(),
                        removed_folders: tree.removed_folders.clone(),
                        remove: tree.remove,
                        lost,
                    };
                    let kind = OutcomeKind::TreeChanged(done);
                    return emit.outcome(Outcome { seq: planned.seq, file_id: planned.file.id.clone(), kind }).await;
                }
                Err(e) => Err(e),
            },
            (_, Some(body)) => {
                let resumed = t.resume.is_some();
                match self.write_stream(planned.clone(), body, t.resume).await {
                    Err(DestError::Store { source: object_store::Error::NotFound { .. }, .. }) if resumed => {
                        crate::internal_events::UploadResume::Gone { file: &planned.file.id }.emit();
                        self.target.forget_upload(&planned.file.id);
                        return self.refetch.put(planned.clone());
                    }
                    other => other,
                }
            }
            (_, None) => {
                return Err(StageError::Failed(format!("transfer for {} has no body", planned.file.id)));
            }
        };
        match result {
            Ok(Written::Done(u)) => emit.forward(u).await,
            Ok(Written::Abandoned) => Ok(()),
            Ok(Written::Refetch) => self.refetch.put(download_instead(planned)),
            Ok(Written::Rejected(planned, m)) => {
                crate::internal_events::ItemCounted { stage: Self::NAME.as_str(), outcome: "rejected" }.emit();
                retry_or_dead_letter(planned, m, &self.refetch, emit).await
            }
            Err(e) => write_failed(&planned, e, self.max_key_bytes, emit).await,
        }
    }

    /// Moves (copy + delete) or removes every object of a folder's subtree, server-side. Each step
    /// is idempotent, so a replay after a crash finishes the job: source present → copy then delete;
    /// source gone and target holding the file's size → already done; both gone → the file is
    /// returned as lost, to be fetched from Drive again at once.
    async fn apply_tree(
        &self,
        files: &[(crate::model::FileRecord, crate::model::ObjectKey)],
        remove: bool,
    ) -> Result<Vec<crate::model::FileId>, DestError> {
        let mut lost = Vec::new();
        for (rec, old) in files {
            if remove {
                self.target.keep_version(&rec.id, None).await?;
                self.target.remove(old).await?;
            } else if rec.key != *old {
                match self.target.move_object(old, &rec.key).await {
                    Ok(()) => {}
                    Err(DestError::Store { source: object_store::Error::NotFound { .. }, .. }) => {
                        if self.target.size_of(&rec.key).await? != Some(rec.size) {
                            crate::internal_events::MoveSourceMissing { key: old, file: &rec.id }.emit();
                            lost.push(rec.id.clone());
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(lost)
    }

    /// Applies a subtree change [`crate::model::TREE_STEP_FILES`] files at a time, reading each
    /// folder's files from the store's children index a page at a time and sending each step to the
    /// committer as soon as its objects are done (a crash redoes at most one step; memory holds one
    /// step, whatever the subtree's size). Returns the files found lost, or the destination error that
    /// stopped it (the steps before stay committed: their records match their objects).
    async fn apply_tree_in_steps(
        &self,
        tree: &crate::model::TreeChange,
        emit: &Emit<Uploaded>,
    ) -> Result<Result<Vec<crate::model::FileId>, DestError>, StageError> {
        let mut all_lost = Vec::new();
        for dir in &tree.dirs {
            let mut after = None;
            loop {
                let page = self.target.folder_page(&dir.folder, after.as_ref(), crate::model::TREE_STEP_FILES)?;
                let files = step_files(page.records, dir, tree.remove, self.max_key_bytes);
                if !files.is_empty() {
                    match self.apply_tree_step(&files, tree.remove, emit).await? {
                        Ok(lost) => all_lost.extend(lost),
                        Err(e) => return Ok(Err(e)),
                    }
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        Ok(Ok(all_lost))
    }

    /// One step of a subtree change: its keys noted, its objects moved or removed, then the step sent
    /// to the committer.
    async fn apply_tree_step(
        &self,
        files: &[(crate::model::FileRecord, crate::model::ObjectKey)],
        remove: bool,
        emit: &Emit<Uploaded>,
    ) -> Result<Result<Vec<crate::model::FileId>, DestError>, StageError> {
        self.target.note_writes(&step_keys(files, remove))?;
        let lost = match self.apply_tree(files, remove).await {
            Ok(lost) => lost,
            Err(e) => return Ok(Err(e)),
        };
        if !lost.is_empty() {
            // Recorded before the step (same channel, same or earlier batch): a crash can never
            // drop a record and its re-fetch.
            let refresh = lost.iter().cloned().map(crate::model::Refresh::File).collect();
            emit.commit.send(super::CommitMsg::Refresh(refresh)).await.map_err(|_| StageError::Closed)?;
        }
        let step = crate::model::TreeStep { files: files.to_vec(), remove, lost: lost.clone() };
        emit.commit.send(super::CommitMsg::TreeStep(step)).await.map_err(|_| StageError::Closed)?;
        Ok(Ok(lost))
    }

    /// A server-side copy (content dedup, a rename, a replay onto the same key) is verified like a
    /// download: the source object must hold Drive's md5 and size for this file before the copy is
    /// made. A record says what was committed, not what the object holds now (a crashed run may have
    /// published newer bytes there), so anything the store cannot prove is fetched from Drive instead.
    async fn copy(&self, planned: &Planned, from: &crate::model::ObjectKey) -> Result<Written, DestError> {
        if !self.holds_drive_content(planned, from).await? {
            crate::internal_events::CopySourceUnproven { file: &planned.file.id, from }.emit();
            return Ok(Written::Refetch);
        }
        if *from != planned.key {
            self.target.copy_as(from, &planned.key, &Self::meta(planned)).await?;
        }
        Ok(Written::Done(Uploaded {
            planned: planned.clone(),
            md5: planned.file.md5.clone().unwrap_or_default(),
            sha256: planned.file.sha256.clone(),
            size: planned.file.size.unwrap_or(0),
            stored_md5: None,
        }))
    }
}

impl<W: WriteTarget> Uploader<W> {
    /// True when the object at `key` holds exactly the bytes Drive has for the planned file: its size,
    /// and an md5 the store reports (the `drive-md5` metadata written with verified bytes, an S3
    /// single-part ETag, or on a local folder the hash of the file) equal to Drive's.
    async fn holds_drive_content(&self, planned: &Planned, key: &ObjectKey) -> Result<bool, DestError> {
        let (Some(md5), Some(size)) = (planned.file.md5.as_deref(), planned.file.size) else { return Ok(false) };
        Ok(self.target.stored_content(key).await?.is_some_and(|c| c.proves(md5, size)))
    }
}

/// A copy turned into a download of the same bytes from Drive (its source is gone or unproven).
fn download_instead(mut planned: Planned) -> Planned {
    if let ActionKind::Copy { fallback, .. } = &planned.kind {
        planned.kind = ActionKind::Upload { source: fallback.clone() };
    }
    planned
}

/// The keys an action (or one step of a subtree move) writes before its outcome records them: noted
/// in the store just before the writes, so a crash that leaves one half done is settled at the next
/// start. Like upload records, these are the writer's own write-ahead notes, not outcomes.
fn written_keys(p: &Planned) -> Vec<Intent> {
    match &p.kind {
        ActionKind::Upload { .. } => vec![intent(&p.key, &p.file.id, false)],
        ActionKind::Copy { .. } => vec![intent(&p.key, &p.file.id, true)],
        ActionKind::Tree(_) | ActionKind::Delete => Vec::new(),
    }
}

/// A page of a folder's records as a step: each record with its key after the change, and the key
/// it has now. A moved file already at its new key (an earlier, committed step of this change, before
/// a crash) needs nothing.
fn step_files(
    records: Vec<crate::model::FileRecord>,
    dir: &crate::model::TreeDir,
    remove: bool,
    max_key_bytes: usize,
) -> Vec<(crate::model::FileRecord, crate::model::ObjectKey)> {
    records
        .into_iter()
        .filter_map(|mut rec| {
            let now = rec.key.clone();
            if remove {
                return Some((rec, now));
            }
            let segment = super::planner::last_segment(&now.0);
            rec.key = crate::model::ObjectKey(crate::mirror::keys::child_key(&dir.key.0, segment, max_key_bytes));
            (rec.key != now).then_some((rec, now))
        })
        .collect()
}

/// The keys a subtree move's step writes (its files' new keys).
fn step_keys(files: &[(crate::model::FileRecord, crate::model::ObjectKey)], remove: bool) -> Vec<Intent> {
    if remove {
        return Vec::new();
    }
    files.iter().filter(|(r, old)| r.key != *old).map(|(r, _)| intent(&r.key, &r.id, true)).collect()
}

fn intent(key: &crate::model::ObjectKey, file: &crate::model::FileId, moves_recorded_bytes: bool) -> Intent {
    Intent { key: key.clone(), file: file.clone(), moves_recorded_bytes }
}

impl<W: WriteTarget> Stage for Uploader<W> {
    type In = Transfer;
    type Out = Uploaded;
    const NAME: StageName = StageName::Uploader;
    type Replay = Planned;

    async fn process(&mut self, items: Vec<Transfer>, emit: &Emit<Uploaded>) -> Result<(), StageError> {
        for t in items {
            self.handle(t, emit).await?;
        }
        Ok(())
    }

    fn replay(item: &Transfer) -> Planned {
        item.planned.clone()
    }
}

/// S3's most parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;

/// The part size for a file of `size` bytes: the configured one, or, for a file that would need more
/// than S3's 10,000 parts, the smallest whole number of MiB that fits it (deterministic, so a resumed
/// upload cuts the same parts).
fn part_size_for(configured: usize, size: Option<u64>) -> usize {
    const MIB: u64 = 1 << 20;
    let needed = size.unwrap_or(0).div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    configured.max(usize::try_from(needed).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_too_big_for_ten_thousand_parts_gets_larger_parts() {
        let mib = 1usize << 20;
        assert_eq!(part_size_for(8 * mib, Some(1 << 30)), 8 * mib, "1 GiB fits in 8 MiB parts");
        assert_eq!(part_size_for(8 * mib, None), 8 * mib);
        // 100 GiB in 8 MiB parts would be 12,800 parts: 11 MiB parts make 9,310.
        let big = 100u64 << 30;
        let part = part_size_for(8 * mib, Some(big));
        assert_eq!(part, 11 * mib);
        assert!(big.div_ceil(part as u64) <= MAX_PARTS);
        // Drive's 5 TB maximum still fits.
        let huge = 5_000_000_000_000u64;
        assert!(huge.div_ceil(part_size_for(8 * mib, Some(huge)) as u64) <= MAX_PARTS);
    }

    use crate::model::{DriveFile, Source};
    use crate::stages::testing;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::Mutex;
    use tokio::sync::mpsc;

    /// A destination and the store's write notes, in memory.
    #[derive(Default)]
    struct Fake {
        objects: Mutex<BTreeMap<ObjectKey, Vec<u8>>>,
        puts: Mutex<Vec<ObjectKey>>,
        notes: Mutex<Vec<Intent>>,
        aborted: Mutex<usize>,
        cannot_record: bool,
    }

    struct FakeParts {
        fake: Arc<Fake>,
        key: ObjectKey,
        bytes: Vec<u8>,
        parts: usize,
    }

    impl WriteTarget for Arc<Fake> {
        type Parts = FakeParts;
        async fn put(&self, key: &ObjectKey, body: Vec<Bytes>, _: &ObjectMeta) -> Result<Option<String>, DestError> {
            self.puts.lock().unwrap().push(key.clone());
            self.objects.lock().unwrap().insert(key.clone(), body.concat());
            Ok(None)
        }
        async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), DestError> {
            let mut objects = self.objects.lock().unwrap();
            let Some(bytes) = objects.get(from).cloned() else {
                let source = "no such object".into();
                let source = object_store::Error::NotFound { path: from.0.clone(), source };
                return Err(DestError::Store { op: "copy", key: from.0.clone(), source });
            };
            objects.insert(to.clone(), bytes);
            Ok(())
        }
        async fn copy_as(&self, from: &ObjectKey, to: &ObjectKey, _: &ObjectMeta) -> Result<(), DestError> {
            self.copy(from, to).await
        }
        async fn remove(&self, key: &ObjectKey) -> Result<(), DestError> {
            self.objects.lock().unwrap().remove(key);
            Ok(())
        }
        async fn delete(&self, key: &ObjectKey) -> Result<(), DestError> {
            self.remove(key).await
        }
        async fn size_of(&self, key: &ObjectKey) -> Result<Option<u64>, DestError> {
            Ok(self.objects.lock().unwrap().get(key).map(|b| b.len() as u64))
        }
        async fn stored_content(&self, key: &ObjectKey) -> Result<Option<StoredContent>, DestError> {
            Ok(self.objects.lock().unwrap().get(key).map(|b| StoredContent {
                size: b.len() as u64,
                md5: Some(hex::encode(<md5::Md5 as md5::Digest>::digest(b))),
            }))
        }
        async fn keep_version(&self, _: &FileId, _: Option<&str>) -> Result<(), DestError> {
            Ok(())
        }
        async fn start_parts(
            &self,
            _: &FileId,
            key: &ObjectKey,
            _: &ObjectMeta,
            _: Option<(String, u64)>,
        ) -> Result<FakeParts, DestError> {
            if self.cannot_record {
                return Err(DestError::State("cannot record the upload: injected".into()));
            }
            Ok(FakeParts { fake: self.clone(), key: key.clone(), bytes: Vec::new(), parts: 0 })
        }
        fn resume_parts(&self, _: &FileId, record: UploadRecord) -> FakeParts {
            FakeParts { fake: self.clone(), key: record.key, bytes: Vec::new(), parts: 0 }
        }
        async fn discard_stale_upload(&self, _: &FileId) {}
        fn forget_upload(&self, _: &FileId) {}
        fn note_writes(&self, intents: &[Intent]) -> Result<(), StoreError> {
            self.notes.lock().unwrap().extend_from_slice(intents);
            Ok(())
        }
        fn folder_page(&self, _: &FileId, _: Option<&FileId>, _: usize) -> Result<FolderPage, StoreError> {
            Ok(FolderPage { records: Vec::new(), next: None })
        }
    }

    impl PartSink for FakeParts {
        fn records_progress(&self) -> bool {
            false
        }
        fn streams_chunks(&self) -> bool {
            false
        }
        async fn send<R: Send + 'static>(
            &mut self,
            body: Vec<Bytes>,
            _: usize,
            _: Option<(u64, HashState)>,
            _: Option<R>,
        ) -> Result<(), DestError> {
            self.parts += 1;
            self.bytes.extend(body.concat());
            Ok(())
        }
        async fn finish(self) -> Result<(), DestError> {
            assert!(self.parts > 1, "a multipart upload of one part");
            self.fake.objects.lock().unwrap().insert(self.key, self.bytes);
            Ok(())
        }
        async fn abort(self) {
            *self.fake.aborted.lock().unwrap() += 1;
        }
    }

    struct Rig {
        uploader: Uploader<Arc<Fake>>,
        fake: Arc<Fake>,
        refetched: mpsc::Receiver<Planned>,
    }

    /// An uploader with 1 MiB parts (the least a part is ever given) into the fake.
    fn rig() -> Rig {
        let fake = Arc::new(Fake::default());
        let (refetch, refetched) = testing::redo("downloader");
        let uploader = Uploader {
            target: fake.clone(),
            part_size: 1 << 20,
            part_concurrency: 2,
            budget: crate::stages::budget::MemoryBudget::new(1 << 20),
            digests: crate::hashing::Digests::Md5,
            refetch,
            max_key_bytes: crate::mirror::keys::MAX_KEY_BYTES,
        };
        Rig { uploader, fake, refetched }
    }

    /// 2.5 MiB of varied bytes: three parts.
    fn large() -> Vec<u8> {
        (0..(5u32 << 19)).map(|i| (i % 251) as u8).collect()
    }

    fn md5_hex(bytes: &[u8]) -> String {
        use md5::Digest as _;
        hex::encode(md5::Md5::digest(bytes))
    }

    fn file_of(bytes: &[u8]) -> DriveFile {
        testing::file("f1", "a.bin", bytes.len() as u64, &md5_hex(bytes))
    }

    fn transfer(planned: Planned, bytes: &[u8], chunk: usize) -> Transfer {
        let mut chunks: Vec<Chunk> = bytes.chunks(chunk).map(|c| Chunk::Data(Bytes::copy_from_slice(c))).collect();
        chunks.push(Chunk::End);
        Transfer { planned, body: Some(Body::of(chunks)), resume: None }
    }

    #[tokio::test]
    async fn a_small_file_is_one_put_noted_before_it_is_written() {
        let mut r = rig();
        let (emit, mut taps) = testing::emit();
        let planned = testing::upload(1, file_of(b"hello"), "m/a.bin");
        r.uploader.process(vec![transfer(planned, b"hello", 2)], &emit).await.unwrap();
        assert_eq!(r.fake.objects.lock().unwrap()[&ObjectKey("m/a.bin".into())], b"hello");
        assert_eq!(r.fake.puts.lock().unwrap().len(), 1);
        assert_eq!(r.fake.notes.lock().unwrap()[0].key.0, "m/a.bin");
        let up = taps.forwarded();
        assert_eq!((up[0].md5.as_str(), up[0].size), (md5_hex(b"hello").as_str(), 5));
    }

    #[tokio::test]
    async fn a_large_file_goes_in_parts_and_is_published_whole() {
        let mut r = rig();
        let (emit, mut taps) = testing::emit();
        let content = large();
        let planned = testing::upload(1, file_of(&content), "m/big.bin");
        r.uploader.process(vec![transfer(planned, &content, 64 << 10)], &emit).await.unwrap();
        assert!(r.fake.objects.lock().unwrap()[&ObjectKey("m/big.bin".into())] == content);
        assert!(r.fake.puts.lock().unwrap().is_empty(), "parts, not a PUT");
        assert_eq!(taps.forwarded().len(), 1);
    }

    #[tokio::test]
    async fn bytes_that_do_not_match_drive_never_replace_the_object_and_are_fetched_again() {
        for content in [b"short".to_vec(), large()] {
            let mut r = rig();
            let key = ObjectKey("m/a.bin".into());
            r.fake.objects.lock().unwrap().insert(key.clone(), b"the good copy".to_vec());
            let (emit, mut taps) = testing::emit();
            let mut file = file_of(&content);
            file.md5 = Some(md5_hex(b"what Drive has"));
            let planned = testing::upload(1, file, "m/a.bin");
            r.uploader.process(vec![transfer(planned, &content, 64 << 10)], &emit).await.unwrap();
            assert_eq!(r.fake.objects.lock().unwrap()[&key], b"the good copy", "{} bytes", content.len());
            assert!(taps.forwarded().is_empty());
            assert_eq!(r.refetched.try_recv().expect("fetched again").attempt, 1);
            let multipart = content.len() > 1 << 20;
            assert_eq!(*r.fake.aborted.lock().unwrap(), usize::from(multipart));
        }
    }

    #[tokio::test]
    async fn a_body_longer_than_drive_says_is_refused_without_storing_the_extra_bytes() {
        let mut r = rig();
        let (emit, mut taps) = testing::emit();
        let mut file = file_of(b"abc");
        file.size = Some(3);
        let planned = testing::upload(1, file, "m/a.bin");
        r.uploader.process(vec![transfer(planned, b"abcdefgh", 2)], &emit).await.unwrap();
        assert!(r.fake.objects.lock().unwrap().is_empty());
        assert!(taps.forwarded().is_empty());
        assert!(r.refetched.try_recv().is_ok());
    }

    /// Runs a copy of Drive's `abc` from `from` to `to` where `from` holds `stored` (absent: `None`).
    async fn copy_abc(r: &mut Rig, stored: Option<&[u8]>, from: &str, to: &str) -> testing::Taps<Uploaded> {
        if let Some(bytes) = stored {
            r.fake.objects.lock().unwrap().insert(ObjectKey(from.into()), bytes.to_vec());
        }
        let (emit, taps) = testing::emit();
        let mut planned = testing::upload(1, file_of(b"abc"), to);
        planned.kind = ActionKind::Copy { from: ObjectKey(from.into()), fallback: Source::Media };
        r.uploader.process(vec![Transfer { planned, body: None, resume: None }], &emit).await.unwrap();
        taps
    }

    #[tokio::test]
    async fn a_copy_whose_source_is_gone_is_fetched_from_drive_instead() {
        let mut r = rig();
        let mut taps = copy_abc(&mut r, None, "m/old.bin", "m/new.bin").await;
        let again = r.refetched.try_recv().expect("fetched instead");
        assert!(matches!(again.kind, ActionKind::Upload { source: Source::Media }));
        assert!(taps.forwarded().is_empty() && taps.outcomes().is_empty());
    }

    #[tokio::test]
    async fn a_copy_whose_source_holds_other_bytes_than_drive_says_is_fetched_from_drive_instead() {
        let mut r = rig();
        // A crashed run published newer bytes at the source key; its record (and the plan) still say "abc".
        let mut taps = copy_abc(&mut r, Some(b"xyz"), "m/old.bin", "m/new.bin").await;
        let again = r.refetched.try_recv().expect("fetched instead");
        assert!(matches!(again.kind, ActionKind::Upload { source: Source::Media }));
        assert!(!r.fake.objects.lock().unwrap().contains_key(&ObjectKey("m/new.bin".into())), "nothing copied");
        assert!(taps.forwarded().is_empty() && taps.outcomes().is_empty());
    }

    #[tokio::test]
    async fn a_copy_onto_its_own_key_checks_the_object_too() {
        let mut r = rig();
        let mut taps = copy_abc(&mut r, Some(b"xyz"), "m/a.bin", "m/a.bin").await;
        assert!(r.refetched.try_recv().is_ok(), "the object is not what Drive has: fetched again");
        assert!(taps.forwarded().is_empty());
    }

    #[tokio::test]
    async fn a_copy_whose_source_holds_drive_bytes_is_made_server_side() {
        let mut r = rig();
        let mut taps = copy_abc(&mut r, Some(b"abc"), "m/old.bin", "m/new.bin").await;
        assert!(r.refetched.try_recv().is_err());
        assert_eq!(r.fake.objects.lock().unwrap()[&ObjectKey("m/new.bin".into())], b"abc".to_vec());
        assert_eq!(taps.forwarded().len(), 1);
    }

    #[tokio::test]
    async fn a_delete_removes_the_object_and_reports_it() {
        let mut r = rig();
        let key = ObjectKey("m/a.bin".into());
        r.fake.objects.lock().unwrap().insert(key.clone(), b"x".to_vec());
        let (emit, mut taps) = testing::emit();
        let mut planned = testing::upload(1, file_of(b"x"), "m/a.bin");
        planned.kind = ActionKind::Delete;
        r.uploader.process(vec![Transfer { planned, body: None, resume: None }], &emit).await.unwrap();
        assert!(r.fake.objects.lock().unwrap().is_empty());
        let outcomes = taps.outcomes();
        assert!(matches!(&outcomes[..], [Outcome { kind: OutcomeKind::Removed { key: Some(k) }, .. }] if *k == key));
    }

    #[tokio::test]
    async fn an_upload_the_store_cannot_record_stops_the_pipeline_instead_of_dead_lettering_the_file() {
        let mut r = rig();
        r.uploader.target = Arc::new(Fake { cannot_record: true, ..Default::default() });
        let (emit, mut taps) = testing::emit();
        let content = large();
        let planned = testing::upload(1, file_of(&content), "m/big.bin");
        let err = r.uploader.process(vec![transfer(planned, &content, 64 << 10)], &emit).await.unwrap_err();
        assert!(matches!(err, StageError::Fatal(_)), "{err:?}");
        assert!(taps.outcomes().is_empty(), "no file is at fault");
    }
}
