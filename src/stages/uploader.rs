//! Chunk-uploader: writes a transfer's chunks to the destination while hashing them (md5 and sha256 on
//! the stream, no second pass). Below the part size it is one PUT; above, a multipart upload with
//! parts in parallel. Copies and deletes are server-side.

use super::budget::Reservation;
use super::downloader::{Body, Chunk, Transfer};
use super::verifier::{Mismatch, check_against_drive, retry_or_dead_letter};
use super::{Emit, Stage, StageError};
use crate::config::StageName;
use crate::dest::{DestError, Destination, ObjectMeta};
use crate::hashing::{ContentHasher, HashState};
use crate::model::{ActionKind, Outcome, OutcomeKind, Planned, Uploaded};
use crate::state::{Intent, ResumePoint, UploadRecord};
use bytes::Bytes;
use object_store::multipart::PartId;

/// The uploader stage.
pub struct Uploader {
    /// Destination.
    pub dest: Destination,
    /// Multipart part size; smaller files go in one PUT.
    pub part_size: usize,
    /// Part size of a multipart write without an upload id (local folders). Such a write goes to one
    /// file, in order, under a lock, so larger parts would only hold memory: each chunk is written as
    /// it comes.
    pub chunk_size: usize,
    /// Parts in flight per file.
    pub part_concurrency: usize,
    /// Bytes all uploads may hold in part buffers at once (shared by every uploader worker).
    pub budget: super::budget::MemoryBudget,
    /// Digests computed on the stream.
    pub digests: crate::hashing::Digests,
    /// Store, to record multipart uploads before their first part.
    pub store: crate::state::Store,
    /// The downloader's input, for a copy whose source vanished (fetch the bytes instead).
    pub refetch: super::Redo<Planned>,
}

#[allow(clippy::large_enum_variant)]
enum Written {
    Done(Uploaded),
    Abandoned,
    /// The bytes do not match Drive's metadata; nothing was published and the old object is intact.
    Rejected(Planned, Mismatch),
}

/// Whether `len` bytes already exceed what Drive says the file holds (media only: an export's size is
/// not known in advance). Reading stops there: the extra bytes are never stored.
fn over_drive_size(planned: &Planned, len: u64) -> bool {
    is_media(planned) && planned.file.size.is_some_and(|size| len > size)
}

fn is_media(planned: &Planned) -> bool {
    !matches!(&planned.kind, ActionKind::Upload { source: crate::model::Source::Export { .. } })
}

impl Uploader {
    fn meta(planned: &Planned) -> ObjectMeta {
        ObjectMeta {
            drive_id: planned.file.id.0.clone(),
            drive_name: planned.file.name.clone(),
            content_type: match &planned.kind {
                ActionKind::Upload { source: crate::model::Source::Export { mime, .. } } => Some(mime.clone()),
                _ if !planned.file.mime_type.starts_with("application/vnd.google-apps") => {
                    Some(planned.file.mime_type.clone())
                }
                _ => None,
            },
            md5: planned.file.md5.clone().filter(|_| is_media(planned)),
        }
    }

    async fn write_stream(
        &self,
        planned: Planned,
        mut body: Body,
        resume: Option<UploadRecord>,
    ) -> Result<Written, DestError> {
        let meta = Self::meta(&planned);
        let (mut hasher, mut multipart) = match resume {
            Some(rec) => {
                let (hasher, upload) = self.continue_upload(&planned, rec)?;
                (hasher, Some(Multipart::Recorded(Box::new(upload))))
            }
            None => (ContentHasher::new(self.digests), None),
        };
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0usize;
        let mut room: Option<Reservation> = None;
        let part_size = part_size_for(self.part_size, planned.file.size);
        loop {
            match body.recv().await {
                Some(Chunk::Data(bytes)) => {
                    if room.is_none() {
                        // The whole part (or what is left of the file) before its first byte is kept;
                        // a write that streams chunk by chunk (a local folder) needs the chunk only.
                        let left = planned.file.size.map_or(part_size as u64, |s| s.saturating_sub(hasher.len()));
                        let streaming = matches!(multipart, Some(Multipart::Plain(_)));
                        let want = if streaming { bytes.len() } else { part_size.min(left.max(1) as usize) };
                        room = Some(self.budget.reserve(want).await);
                    }
                    hasher.update(&bytes);
                    if over_drive_size(&planned, hasher.len()) {
                        if let Some(mp) = multipart {
                            mp.abort(&self.store).await;
                        }
                        let (expected, got) = (planned.file.size.unwrap_or(0), hasher.len());
                        return Ok(Written::Rejected(planned, Mismatch::Size { expected, got }));
                    }
                    crate::metrics::bytes("upload", bytes.len() as u64);
                    pending_len += bytes.len();
                    pending.push(bytes);
                    let streaming = matches!(multipart, Some(Multipart::Plain(_)));
                    if pending_len >= part_size || streaming {
                        if multipart.is_none() {
                            multipart = Some(self.start_multipart(&planned, &meta).await?);
                        }
                        if let Some(mp) = multipart.as_mut() {
                            let end = mp.records_progress().then(|| (hasher.len(), hasher.snapshot()));
                            mp.send(std::mem::take(&mut pending), self.part_concurrency, end, room.take()).await?;
                        }
                        pending_len = 0;
                    }
                }
                Some(Chunk::End) => break,
                Some(Chunk::Abort) | None => {
                    if let Some(mp) = multipart {
                        mp.abort(&self.store).await;
                    }
                    return Ok(Written::Abandoned);
                }
            }
        }
        if let Some(mp) = multipart.as_mut()
            && !pending.is_empty()
        {
            mp.send(std::mem::take(&mut pending), self.part_concurrency, None, room.take()).await?;
        }
        // Write, verify, publish: the digests are compared with Drive's before the bytes become
        // visible at the key, so a corrupted download never replaces the good copy.
        let digest = hasher.finish();
        let (md5, sha256, size) = (digest.md5, digest.sha256, digest.len);
        let streamed = Uploaded { planned, md5, sha256, size, stored_md5: None };
        if let Err(m) = check_against_drive(&streamed) {
            if let Some(mp) = multipart {
                mp.abort(&self.store).await;
            }
            return Ok(Written::Rejected(streamed.planned, m));
        }
        let stored_md5 = match multipart {
            Some(mp) => {
                mp.finish(&self.store).await?;
                None
            }
            None => self.dest.put(&streamed.planned.key, pending, &meta).await?,
        };
        Ok(Written::Done(Uploaded { stored_md5, ..streamed }))
    }

    /// Starts a multipart upload: on stores with upload ids (S3, GCS, Azure) the id is recorded in the
    /// state store before any part is sent, so a crash leaves nothing orphaned (the next run continues
    /// or aborts it).
    async fn start_multipart(&self, planned: &Planned, meta: &ObjectMeta) -> Result<Multipart, DestError> {
        if !self.dest.has_recorded_multipart() {
            let mp = self.dest.multipart(&planned.key, meta, self.chunk_size).await?;
            return Ok(Multipart::Plain(mp));
        }
        let content = planned.file.md5.clone().zip(planned.file.size);
        // A marker first (synced): a kill between the create and the record of its id leaves an upload
        // only a listing can find, and the marker tells the next start where to list.
        let marker = UploadRecord { key: planned.key.clone(), upload_id: String::new(), content, resume: None };
        self.store
            .record_upload(&planned.file.id, &marker)
            .map_err(|e| DestError::State(format!("cannot record the upload: {e}")))?;
        let id = self.dest.create_upload(&planned.key, meta).await?;
        let record = UploadRecord { upload_id: id.clone(), ..marker };
        if let Err(e) = self.store.record_upload(&planned.file.id, &record) {
            let _ = self.dest.abort_upload(&planned.key, &id).await;
            return Err(DestError::State(format!("cannot record the upload: {e}")));
        }
        Ok(Multipart::Recorded(Box::new(RecordedUpload::new(self.dest.clone(), self.store.clone(), planned, record))))
    }

    /// Picks up an interrupted upload the downloader chose to continue: its recorded parts stay, and
    /// the digests continue from the state saved with them.
    fn continue_upload(
        &self,
        planned: &Planned,
        record: UploadRecord,
    ) -> Result<(ContentHasher, RecordedUpload), DestError> {
        let point = record.resume.as_ref().ok_or_else(|| DestError::Config("resume without recorded parts".into()))?;
        let hasher =
            ContentHasher::restore(&point.hashes, self.digests).map_err(|e| DestError::Config(e.to_string()))?;
        tracing::debug!(file = %planned.file.id, parts = point.parts.len(), offset = point.offset, "continuing multipart upload");
        crate::metrics::event(Self::NAME.as_str(), "upload_resumed");
        Ok((hasher, RecordedUpload::new(self.dest.clone(), self.store.clone(), planned, record)))
    }

    /// Aborts an upload recorded for this file by an interrupted run that is not being continued
    /// (the content changed, the file was deleted, or the range could not be resumed).
    async fn discard_stale_upload(&self, file: &crate::model::FileId) {
        let Ok(Some(rec)) = self.store.upload(file) else { return };
        tracing::info!(%file, key = %rec.key, "aborting an interrupted multipart upload that cannot be continued");
        let aborted = if rec.upload_id.is_empty() {
            // A create that failed in this run may still have opened an upload.
            let recorded = self.store.recorded_upload_ids().unwrap_or_default();
            self.dest.abort_unrecorded_uploads(&rec.key, &recorded).await.map(|_| ())
        } else {
            self.dest.abort_upload(&rec.key, &rec.upload_id).await
        };
        if aborted.is_ok() {
            let _ = self.store.clear_upload(file);
        }
    }

    async fn handle(&self, t: Transfer, emit: &Emit<Uploaded>) -> Result<(), StageError> {
        let planned = t.planned.clone();
        if t.resume.is_none() {
            self.discard_stale_upload(&planned.file.id).await;
        }
        self.store.record_intents(&written_keys(&planned))?;
        let result = match (&planned.kind, t.body) {
            (ActionKind::Delete, _) => match self.dest.remove(&planned.key).await {
                Ok(()) => {
                    let kind = OutcomeKind::Removed { key: Some(planned.key.clone()) };
                    return emit.outcome(Outcome { seq: planned.seq, file_id: planned.file.id.clone(), kind }).await;
                }
                Err(e) => Err(e),
            },
            (ActionKind::Copy { from, fallback }, _) => match self.copy(&planned, from).await {
                Err(DestError::Store { source: object_store::Error::NotFound { .. }, .. }) => {
                    let mut again = planned.clone();
                    again.kind = ActionKind::Upload { source: fallback.clone() };
                    return self.refetch.put(again);
                }
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
                        tracing::warn!(file = %planned.file.id, "the interrupted upload is gone from the destination; starting over");
                        let _ = self.store.clear_upload(&planned.file.id);
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
            Ok(Written::Rejected(planned, m)) => {
                crate::metrics::event(Self::NAME.as_str(), "rejected");
                retry_or_dead_letter(planned, m, &self.refetch, emit).await
            }
            Err(e) => emit.dead_letter(Self::NAME, &planned, "destinationError", e.to_string()).await,
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
                self.dest.remove(old).await?;
            } else if rec.key != *old {
                match self.dest.copy(old, &rec.key).await {
                    Ok(()) => self.dest.delete(old).await?,
                    Err(DestError::Store { source: object_store::Error::NotFound { .. }, .. }) => {
                        if self.dest.head(&rec.key).await? != Some(rec.size) {
                            tracing::warn!(key = %old, file = %rec.id, "object to move is missing; fetching it from Drive again");
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
                let page =
                    self.store.files_in_folder_page(&dir.folder, after.as_ref(), crate::model::TREE_STEP_FILES)?;
                let files = step_files(page.records, dir, tree.remove);
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
        self.store.record_intents(&step_keys(files, remove))?;
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

    async fn copy(&self, planned: &Planned, from: &crate::model::ObjectKey) -> Result<Written, DestError> {
        if *from != planned.key {
            self.dest.copy(from, &planned.key).await?;
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
) -> Vec<(crate::model::FileRecord, crate::model::ObjectKey)> {
    records
        .into_iter()
        .filter_map(|mut rec| {
            let now = rec.key.clone();
            if remove {
                return Some((rec, now));
            }
            let segment = super::planner::last_segment(&now.0);
            rec.key = crate::model::ObjectKey(crate::dest::keys::child_key(&dir.key.0, segment));
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

/// A multipart upload in progress.
enum Multipart {
    /// Through `WriteMultipart` (local folders: no upload id to record).
    Plain(object_store::WriteMultipart),
    /// Through `MultipartStore`, with its id recorded in the state store.
    Recorded(Box<RecordedUpload>),
}

/// Parts go up in parallel (bounded); the id is in the store until completed or aborted, and each
/// time the run of finished parts from the first grows, the record is updated with those parts and the
/// digest state where they end, so a crash loses at most the parts in flight.
struct RecordedUpload {
    dest: Destination,
    store: crate::state::Store,
    file: crate::model::FileId,
    record: UploadRecord,
    parts: Vec<Option<PartId>>,
    /// Where each part ends and the digest state there (`None` for the last part, and for parts a
    /// previous run recorded).
    ends: Vec<Option<(u64, HashState)>>,
    /// Parts already in the record.
    recorded: usize,
    running: tokio::task::JoinSet<(usize, Result<PartId, DestError>)>,
}

impl RecordedUpload {
    fn new(dest: Destination, store: crate::state::Store, planned: &Planned, record: UploadRecord) -> Self {
        let done: Vec<Option<PartId>> = record
            .resume
            .iter()
            .flat_map(|p| p.parts.iter())
            .map(|etag| Some(PartId { content_id: etag.clone() }))
            .collect();
        RecordedUpload {
            dest,
            store,
            file: planned.file.id.clone(),
            record,
            ends: vec![None; done.len()],
            recorded: done.len(),
            parts: done,
            running: tokio::task::JoinSet::new(),
        }
    }

    fn key(&self) -> &crate::model::ObjectKey {
        &self.record.key
    }

    async fn reap_one(&mut self) -> Result<(), DestError> {
        if let Some(joined) = self.running.join_next().await {
            let (idx, r) = joined.map_err(|e| DestError::Config(format!("part task: {e}")))?;
            self.parts[idx] = Some(r?);
            self.record_progress();
        }
        Ok(())
    }

    /// Saves the longest run of finished parts from the first that ends at a known digest state, once
    /// that run has grown by a sixteenth since the last save (at least one part). Each save rewrites
    /// every ETag so far, so saving at every part would write O(parts²) bytes into the store (20 MB of
    /// record versions for one 8 GiB file); this way the total is O(parts) and a crash loses at most
    /// a sixteenth of the parts sent.
    fn record_progress(&mut self) {
        let finished = self.parts.iter().take_while(|p| p.is_some()).count();
        if finished < self.recorded + (self.recorded / 16).max(1) {
            return;
        }
        let Some(n) = (self.recorded + 1..=finished).rev().find(|&n| self.ends[n - 1].is_some()) else { return };
        let Some((offset, hashes)) = self.ends[n - 1].clone() else { return };
        let parts = self.parts[..n].iter().flatten().map(|p| p.content_id.clone()).collect();
        self.record.resume = Some(ResumePoint { parts, offset, hashes });
        match self.store.record_upload(&self.file, &self.record) {
            Ok(()) => {
                self.recorded = n;
                // Digest states before the saved point are never needed again.
                self.ends[..n].iter_mut().for_each(|e| *e = None);
            }
            Err(e) => tracing::warn!(file = %self.file, error = %e, "cannot record upload progress"),
        }
    }
}

impl Multipart {
    /// Whether progress is recorded for a restart to continue from (then each part needs the digest
    /// state where it ends).
    fn records_progress(&self) -> bool {
        matches!(self, Multipart::Recorded(_))
    }

    /// Sends the next part; `end` is where it ends in the file and the digest state there (`None`
    /// for the last part).
    async fn send(
        &mut self,
        body: Vec<Bytes>,
        concurrency: usize,
        end: Option<(u64, HashState)>,
        room: Option<Reservation>,
    ) -> Result<(), DestError> {
        match self {
            Multipart::Plain(mp) => {
                // Chunks go on as they come, under the write's own bound (`concurrency` × chunk size).
                drop(room);
                for b in body {
                    mp.wait_for_capacity(concurrency).await.map_err(|source| DestError::Store {
                        op: "put_part",
                        key: String::new(),
                        source,
                    })?;
                    mp.put(b);
                }
                Ok(())
            }
            Multipart::Recorded(up) => {
                while up.running.len() >= concurrency {
                    up.reap_one().await?;
                }
                let idx = up.parts.len();
                up.parts.push(None);
                up.ends.push(end);
                let (dest, key, id) = (up.dest.clone(), up.key().clone(), up.record.upload_id.clone());
                up.running.spawn(async move {
                    let result = dest.put_part(&key, &id, idx, body).await;
                    drop(room);
                    (idx, result)
                });
                Ok(())
            }
        }
    }

    async fn finish(self, store: &crate::state::Store) -> Result<(), DestError> {
        match self {
            Multipart::Plain(mp) => {
                mp.finish().await.map_err(|source| DestError::Store {
                    op: "complete_multipart",
                    key: String::new(),
                    source,
                })?;
                Ok(())
            }
            Multipart::Recorded(mut up) => {
                let result = async {
                    while !up.running.is_empty() {
                        up.reap_one().await?;
                    }
                    let parts = up
                        .parts
                        .iter()
                        .map(|p| p.clone().ok_or_else(|| DestError::Config("missing part".into())))
                        .collect::<Result<Vec<_>, _>>()?;
                    // Once completed, the upload id is dead: a restart must abort the record (a no-op
                    // then), never resume parts into it. So the record stops being resumable first.
                    up.record.resume = None;
                    up.store
                        .record_upload(&up.file, &up.record)
                        .map_err(|e| DestError::State(format!("cannot record the upload's completion: {e}")))?;
                    up.dest.complete_upload(up.key(), &up.record.upload_id, parts).await
                }
                .await;
                if result.is_err() {
                    let _ = up.dest.abort_upload(up.key(), &up.record.upload_id).await;
                }
                let _ = store.clear_upload(&up.file);
                result
            }
        }
    }

    async fn abort(self, store: &crate::state::Store) {
        match self {
            Multipart::Plain(mp) => {
                let _ = mp.abort().await;
            }
            Multipart::Recorded(mut up) => {
                up.running.abort_all();
                let _ = up.dest.abort_upload(up.key(), &up.record.upload_id).await;
                let _ = store.clear_upload(&up.file);
            }
        }
    }
}

impl Stage for Uploader {
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
}
