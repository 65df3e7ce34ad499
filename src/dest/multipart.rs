//! Multipart uploads, and everything that must be remembered about them: the upload id, recorded in
//! the state store before the first part (so a crash leaves nothing orphaned), the finished parts and
//! the digest state where they end (so a restart continues instead of starting over), and the aborts
//! of uploads no transfer will continue. The uploader only sends parts.

use super::{DestError, Destination, ObjectMeta};
use crate::hashing::HashState;
use crate::internal_events::{InternalEvent, MultipartSettled};
use crate::model::{FileId, ObjectKey};
use crate::state::{ResumePoint, UploadBook, UploadRecord};
use bytes::Bytes;
use object_store::multipart::PartId;

/// Starts, continues and clears the multipart uploads of one destination.
#[derive(Clone)]
pub struct Uploads {
    /// Where the parts go.
    pub dest: Destination,
    /// Where upload ids and progress are recorded (upload records only).
    pub book: UploadBook,
    /// Part size of a write without an upload id (a local folder): such a write goes to one file, in
    /// order, so larger parts would only hold memory; each chunk is written as it comes.
    pub chunk_size: usize,
}

impl Uploads {
    /// Starts a multipart upload: on stores with upload ids (S3, GCS, Azure) the id is recorded in the
    /// state store before any part is sent, so a crash leaves nothing orphaned (the next run continues
    /// or aborts it). `content` (md5, size) says which bytes a later run may continue it with.
    pub async fn start(
        &self,
        file: &FileId,
        key: &ObjectKey,
        meta: &ObjectMeta,
        content: Option<(String, u64)>,
    ) -> Result<Multipart, DestError> {
        if !self.dest.has_recorded_multipart() {
            let mp = self.dest.multipart(key, meta, self.chunk_size).await?;
            return Ok(Multipart::Plain(mp));
        }
        // A marker first (synced): a kill between the create and the record of its id leaves an upload
        // only a listing can find, and the marker tells the next start where to list.
        let marker = UploadRecord { key: key.clone(), upload_id: String::new(), content, resume: None };
        self.book.record(file, &marker).map_err(|e| DestError::State(format!("cannot record the upload: {e}")))?;
        let id = self.dest.create_upload(key, meta).await?;
        let record = UploadRecord { upload_id: id.clone(), ..marker };
        if let Err(e) = self.book.record(file, &record) {
            let _ = self.dest.abort_upload(key, &id).await;
            return Err(DestError::State(format!("cannot record the upload: {e}")));
        }
        Ok(Multipart::Recorded(Box::new(RecordedUpload::new(self.dest.clone(), self.book.clone(), file, record))))
    }

    /// Continues an interrupted upload whose record has finished parts.
    pub fn resume(&self, file: &FileId, record: UploadRecord) -> Multipart {
        Multipart::Recorded(Box::new(RecordedUpload::new(self.dest.clone(), self.book.clone(), file, record)))
    }

    /// Aborts an upload recorded for `file` by an interrupted run that is not being continued (the
    /// content changed, the file was deleted, or the range could not be resumed).
    pub async fn discard_stale(&self, file: &FileId) {
        let Ok(Some(rec)) = self.book.get(file) else { return };
        MultipartSettled::AbortingStale { file, key: &rec.key }.emit();
        let aborted = if rec.upload_id.is_empty() {
            // A create that failed in this run may still have opened an upload.
            let recorded = self.book.recorded_ids().unwrap_or_default();
            self.dest.abort_unrecorded_uploads(&rec.key, &recorded).await.map(|_| ())
        } else {
            self.dest.abort_upload(&rec.key, &rec.upload_id).await
        };
        if aborted.is_ok() {
            let _ = self.book.clear(file);
        }
    }

    /// Forgets the upload recorded for `file` (it is gone from the destination).
    pub fn forget(&self, file: &FileId) {
        let _ = self.book.clear(file);
    }

    /// Aborts recorded multipart uploads. At the start (`keep_resumable`), an interrupted run's uploads
    /// with recorded parts are kept: the file's next transfer continues them if its content is
    /// unchanged, and aborts them otherwise. At a clean end (nothing in flight) every upload still
    /// recorded belongs to no transfer: kept to resume, its file was then deleted, left the scope or
    /// was dead-lettered. It is aborted, so no multipart upload is left open (S3 bills its parts and
    /// never lists them as objects).
    pub async fn abort_recorded(&self, keep_resumable: bool) -> Result<(), AbortError> {
        let recorded = self.book.recorded_ids()?;
        for (file, rec) in self.book.pending()? {
            if rec.upload_id.is_empty() {
                match self.dest.abort_unrecorded_uploads(&rec.key, &recorded).await? {
                    Some(0) => {}
                    Some(n) => MultipartSettled::AbortedUnrecorded { file: &file, key: &rec.key, n }.emit(),
                    None => MultipartSettled::MaybeLeftOver { file: &file, key: &rec.key }.emit(),
                }
                self.book.clear(&file)?;
                continue;
            }
            if let (true, Some(point)) = (keep_resumable, &rec.resume) {
                let (parts, offset) = (point.parts.len(), point.offset);
                MultipartSettled::KeptToResume { file: &file, key: &rec.key, parts, offset }.emit();
                continue;
            }
            MultipartSettled::AbortingUnused { file: &file, key: &rec.key }.emit();
            self.dest.abort_upload(&rec.key, &rec.upload_id).await?;
            self.book.clear(&file)?;
        }
        Ok(())
    }
}

/// Why recorded uploads could not be aborted.
#[derive(Debug, thiserror::Error)]
pub enum AbortError {
    /// The destination refused.
    #[error("{0}")]
    Dest(#[from] DestError),
    /// The state store failed.
    #[error("{0}")]
    Store(#[from] crate::state::StoreError),
}

/// A multipart upload in progress.
pub enum Multipart {
    /// Through `WriteMultipart` (local folders: no upload id to record).
    Plain(object_store::WriteMultipart),
    /// Through `MultipartStore`, with its id recorded in the state store.
    Recorded(Box<RecordedUpload>),
}

/// Parts go up in parallel (bounded); the id is in the store until completed or aborted, and each
/// time the run of finished parts from the first grows, the record is updated with those parts and the
/// digest state where they end, so a crash loses at most the parts in flight.
pub struct RecordedUpload {
    dest: Destination,
    book: UploadBook,
    file: FileId,
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
    fn new(dest: Destination, book: UploadBook, file: &FileId, record: UploadRecord) -> Self {
        let done: Vec<Option<PartId>> = record
            .resume
            .iter()
            .flat_map(|p| p.parts.iter())
            .map(|etag| Some(PartId { content_id: etag.clone() }))
            .collect();
        RecordedUpload {
            dest,
            book,
            file: file.clone(),
            record,
            ends: vec![None; done.len()],
            recorded: done.len(),
            parts: done,
            running: tokio::task::JoinSet::new(),
        }
    }

    fn key(&self) -> &ObjectKey {
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
        match self.book.record(&self.file, &self.record) {
            Ok(()) => {
                self.recorded = n;
                // Digest states before the saved point are never needed again.
                self.ends[..n].iter_mut().for_each(|e| *e = None);
            }
            Err(e) => MultipartSettled::ProgressNotRecorded { file: &self.file, error: &e }.emit(),
        }
    }
}

impl Multipart {
    /// Whether progress is recorded for a restart to continue from (then each part needs the digest
    /// state where it ends).
    pub fn records_progress(&self) -> bool {
        matches!(self, Multipart::Recorded(_))
    }

    /// Whether each chunk goes on as it comes (a local folder's write), rather than whole parts.
    pub fn streams_chunks(&self) -> bool {
        matches!(self, Multipart::Plain(_))
    }

    /// Sends the next part; `end` is where it ends in the file and the digest state there (`None`
    /// for the last part). `room` (the part's share of the memory budget) is released once the part
    /// is sent.
    pub async fn send<R: Send + 'static>(
        &mut self,
        body: Vec<Bytes>,
        concurrency: usize,
        end: Option<(u64, HashState)>,
        room: Option<R>,
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

    /// Completes the upload: the object appears at its key with every part.
    pub async fn finish(self) -> Result<(), DestError> {
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
                    up.book
                        .record(&up.file, &up.record)
                        .map_err(|e| DestError::State(format!("cannot record the upload's completion: {e}")))?;
                    up.dest.complete_upload(up.key(), &up.record.upload_id, parts).await
                }
                .await;
                if result.is_err() {
                    let _ = up.dest.abort_upload(up.key(), &up.record.upload_id).await;
                }
                let _ = up.book.clear(&up.file);
                result
            }
        }
    }

    /// Abandons the upload: its parts are dropped, nothing appears at the key.
    pub async fn abort(self) {
        match self {
            Multipart::Plain(mp) => {
                let _ = mp.abort().await;
            }
            Multipart::Recorded(mut up) => {
                up.running.abort_all();
                let _ = up.dest.abort_upload(up.key(), &up.record.upload_id).await;
                let _ = up.book.clear(&up.file);
            }
        }
    }
}
