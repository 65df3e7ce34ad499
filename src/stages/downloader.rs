//! Downloader: streams `alt=media` (or an export) in fixed-size chunks into a bounded chunk channel
//! read by the uploader, so download and upload overlap and memory stays bounded whatever the size.
//! An interrupted body resumes with `Range` from the last byte received.

use super::{Emit, Stage, StageError};
use crate::dest::{DestError, StoredContent};
use crate::drive::{ByteStream, DriveError};
use crate::internal_events::{DownloadResumed, InternalEvent};
use crate::model::StageName;
use crate::model::{
    ActionKind, DriveFile, FileId, ObjectKey, Outcome, OutcomeKind, Planned, Refused, SkipReason, Source,
};
use crate::retry::Classified;
use crate::state::UploadRecord;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The downloader's I/O need: open a file's bytes from an offset.
pub trait ByteSource: Send + Sync + 'static {
    /// Opens `file` at `offset` (its id, and its resource key when it has one).
    fn open(
        &self,
        file: &DriveFile,
        source: &Source,
        offset: u64,
    ) -> impl Future<Output = Result<ByteStream, DriveError>> + Send;
    /// Whether Drive still shows the file (`files.get`), asked when its bytes answer 404.
    fn still_exists(&self, file: &FileId) -> impl Future<Output = Result<bool, DriveError>> + Send;
}

/// A piece of a transfer on the chunk channel.
#[derive(Debug)]
pub enum Chunk {
    /// The next bytes.
    Data(Bytes),
    /// All bytes were sent.
    End,
    /// The download failed; the downloader has reported the outcome. Abort the upload.
    Abort,
}

/// The bytes of one transfer, as the uploader reads them. The downloader starts filling it only once
/// the uploader has taken the transfer (its first [`Body::recv`]): a transfer waiting in the
/// uploader's input channel holds no chunks, so what the chunk path buffers is at most `chunk_depth`
/// chunks per upload in progress (`[stages.uploader] concurrency`), whatever the channel capacities
/// and however many small files are queued.
#[derive(Debug)]
pub struct Body {
    rx: mpsc::Receiver<Chunk>,
    taken: Option<oneshot::Sender<()>>,
}

/// The downloader's end of a [`Body`]: it waits for the uploader to take the transfer, then sends.
struct BodyWriter {
    tx: mpsc::Sender<Chunk>,
    taken: oneshot::Receiver<()>,
}

impl Body {
    /// A body of at most `depth` queued chunks, and the end that fills it.
    fn channel(depth: usize) -> (Body, BodyWriter) {
        let (tx, rx) = mpsc::channel(depth);
        let (taken_tx, taken) = oneshot::channel();
        (Body { rx, taken: Some(taken_tx) }, BodyWriter { tx, taken })
    }

    /// A body that is complete already (an empty file: nothing to fetch).
    fn empty() -> Body {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Chunk::End);
        Body { rx, taken: None }
    }

    /// The next piece; the first call tells the downloader to start.
    pub async fn recv(&mut self) -> Option<Chunk> {
        if let Some(taken) = self.taken.take() {
            let _ = taken.send(());
        }
        self.rx.recv().await
    }
}

#[cfg(test)]
impl Body {
    /// A complete body of `chunks` (tests of the uploader).
    pub(crate) fn of(chunks: Vec<Chunk>) -> Body {
        let (tx, rx) = mpsc::channel(chunks.len().max(1));
        for c in chunks {
            let _ = tx.try_send(c);
        }
        Body { rx, taken: None }
    }
}

impl BodyWriter {
    /// Waits until the uploader takes the transfer; false if it was dropped untaken.
    async fn until_taken(&mut self) -> bool {
        (&mut self.taken).await.is_ok()
    }
}

/// The skip reason of a refusal Drive gives for this file alone and that asking again will not change
/// (until the file does, or hours pass): flagged abusive (acknowledgeable once `acknowledge_abuse` is
/// on, or not by this user at all), downloads disabled since the change was read, or its download
/// quota used up.
fn refusal(e: &DriveError, file: &crate::model::DriveFile) -> Option<SkipReason> {
    let refused = Refused::of(file);
    if let DriveError::Abusive { acknowledgeable, .. } = e {
        return Some(if *acknowledgeable {
            SkipReason::Abusive(refused)
        } else {
            SkipReason::AbusiveNotOwned(refused)
        });
    }
    let DriveError::Api { status: 403, reason, .. } = e else { return None };
    match reason.as_str() {
        "cannotDownloadAbusiveFile" => Some(SkipReason::Abusive(refused)),
        "cannotDownloadFile" => Some(SkipReason::DownloadDisabled(refused)),
        "downloadQuotaExceeded" => Some(SkipReason::QuotaDeferred(refused)),
        _ => None,
    }
}

/// What the uploader receives: the plan and, for uploads, the chunk stream.
#[derive(Debug)]
pub struct Transfer {
    /// The plan.
    pub planned: Planned,
    /// Bytes, for `Upload` actions.
    pub body: Option<Body>,
    /// An interrupted multipart upload of the same content that these bytes continue: the body then
    /// starts at its resume offset, not at byte 0.
    pub resume: Option<UploadRecord>,
}

/// What the downloader asks of the destination before fetching: whether a copy's source (or an
/// adopted object) is there, and with what. [`Destination`](crate::dest::Destination) is the real one.
pub trait ObjectProbe: Send + Sync + 'static {
    /// The object's size, `None` when absent.
    fn size_of(&self, key: &ObjectKey) -> impl Future<Output = Result<Option<u64>, DestError>> + Send;
    /// The object's size and md5 when the store tells them without reading the bytes.
    fn content_of(&self, key: &ObjectKey) -> impl Future<Output = Result<Option<StoredContent>, DestError>> + Send;
}

/// The interrupted multipart uploads recorded in the store, so a download continues one instead of
/// starting over. [`Store`](crate::state::Store) is the real one.
pub trait ResumeRecords: Send + Sync + 'static {
    /// The upload recorded for `file`, if any.
    fn upload_of(&self, file: &FileId) -> Result<Option<UploadRecord>, crate::state::StoreError>;
}

/// The downloader stage.
pub struct Downloader<B: ByteSource, D: ObjectProbe, R: ResumeRecords> {
    /// Drive.
    pub source: Arc<B>,
    /// Destination, to check that a copy source still exists.
    pub dest: D,
    /// Store, to find an interrupted upload this download can continue.
    pub store: R,
    /// Chunk size.
    pub chunk_size: usize,
    /// Chunks buffered per transfer.
    pub chunk_depth: usize,
    /// Digests the uploader computes: a recorded upload resumes only if its saved state has them.
    pub digests: crate::hashing::Digests,
    /// Resumptions allowed per file.
    pub max_resumes: u32,
    /// A run over an empty state and a populated destination: an object that already holds the
    /// file's exact bytes at its key is kept, not downloaded again (see [`Store::begin_adoption`]).
    pub adopt: bool,
}

impl<B: ByteSource, D: ObjectProbe, R: ResumeRecords> Downloader<B, D, R> {
    /// True when adopting and the object at the planned key already holds exactly Drive's bytes (size
    /// and md5 both known and equal). Exports have no Drive md5 and are always fetched.
    async fn already_holds_the_bytes(&self, planned: &Planned) -> bool {
        let (ActionKind::Upload { source: Source::Media }, Some(md5), Some(size)) =
            (&planned.kind, &planned.file.md5, planned.file.size)
        else {
            return false;
        };
        match self.dest.content_of(&planned.key).await {
            Ok(Some(stored)) => stored.size == size && stored.md5.is_some_and(|m| m.eq_ignore_ascii_case(md5)),
            Ok(None) => false,
            Err(e) => {
                tracing::debug!(key = %planned.key, error = %e, "cannot read the existing object; downloading");
                false
            }
        }
    }

    async fn handle(&self, mut planned: Planned, emit: &Emit<Transfer>) -> Result<(), StageError> {
        if self.adopt && self.already_holds_the_bytes(&planned).await {
            // A copy onto itself: the uploader writes nothing, the verifier checks the object, and the
            // committer records it like any write.
            tracing::debug!(key = %planned.key, "adopting the object already there");
            crate::internal_events::ItemCounted { stage: Self::NAME.as_str(), outcome: "adopted" }.emit();
            planned.kind = ActionKind::Copy { from: planned.key.clone(), fallback: Source::Media };
            return emit.forward(Transfer { planned, body: None, resume: None }).await;
        }
        if let ActionKind::Copy { from, fallback } = &planned.kind {
            let still_there = self.dest.size_of(from).await.ok().flatten().is_some();
            // A crash between a move's copy and its commit leaves the bytes at the new key only. Not
            // so for a copy of another file's object (content dedup): what is at the key may be this
            // file's older bytes of the same size, so its bytes are fetched.
            let is_move = planned.previous_key.as_ref() == Some(from);
            let already_moved = || async { self.dest.size_of(&planned.key).await.ok().flatten() == planned.file.size };
            if !still_there {
                planned.kind = if is_move && planned.file.size.is_some() && already_moved().await {
                    ActionKind::Copy { from: planned.key.clone(), fallback: fallback.clone() }
                } else {
                    ActionKind::Upload { source: fallback.clone() }
                };
            }
        }
        let source = match &planned.kind {
            ActionKind::Upload { source } => source.clone(),
            _ => {
                return emit.forward(Transfer { planned, body: None, resume: None }).await;
            }
        };
        if matches!(source, Source::Media) && planned.file.size == Some(0) {
            // Nothing to fetch: Drive's metadata already says what the object holds.
            return emit.forward(Transfer { planned, body: Some(Body::empty()), resume: None }).await;
        }
        let mut resume = self.resumable_upload(&planned, &source);
        let (stream, offset) = match self.open_at_resume_point(&planned, &source, &mut resume).await {
            Ok(opened) => opened,
            Err(e) if self.is_gone(planned.file.content_id(), &e).await => return self.skip_gone(planned, emit).await,
            Err(e) => return self.refused_or_dead_letter(planned, e, emit).await,
        };
        let (body, mut writer) = Body::channel(self.chunk_depth);
        emit.forward(Transfer { planned: planned.clone(), body: Some(body), resume }).await?;
        // The response is open (its head read); its bytes wait in the connection until the upload starts.
        if !writer.until_taken().await {
            return Ok(());
        }
        let tx = writer.tx;
        match self.pump(&planned, &source, stream, offset, &tx).await {
            Ok(()) => Ok(()),
            Err(PumpError::ReceiverGone) => Ok(()),
            // The uploader gave the body up already (its own outcome or re-fetch is on the way): one
            // outcome per event, so this failure is not reported again.
            Err(PumpError::Drive(_)) if tx.is_closed() => Ok(()),
            Err(PumpError::Drive(e)) => {
                let _ = tx.send(Chunk::Abort).await;
                self.refused_or_dead_letter(planned, e, emit).await
            }
        }
    }

    /// The interrupted upload of exactly this content, if one was recorded with finished parts.
    fn resumable_upload(&self, planned: &Planned, source: &Source) -> Option<UploadRecord> {
        if !matches!(source, Source::Media) {
            return None;
        }
        let rec = self.store.upload_of(&planned.file.id).ok().flatten()?;
        let point = rec.resumable_for(&planned.key, planned.file.md5.as_deref(), planned.file.size)?;
        crate::hashing::ContentHasher::restore(&point.hashes, self.digests).is_ok().then_some(rec)
    }

    /// Opens the body where `resume` ends (or at 0). If the source refuses that range, the upload
    /// starts over instead (`resume` is dropped; the uploader aborts the stale upload).
    async fn open_at_resume_point(
        &self,
        planned: &Planned,
        source: &Source,
        resume: &mut Option<UploadRecord>,
    ) -> Result<(ByteStream, u64), DriveError> {
        let offset = resume.as_ref().and_then(|r| r.resume.as_ref()).map_or(0, |p| p.offset);
        if offset > 0 {
            match self.source.open(&planned.file, source, offset).await {
                Ok(stream) => {
                    crate::internal_events::UploadResume::FromParts { file: &planned.file.id, offset }.emit();
                    return Ok((stream, offset));
                }
                Err(e) => {
                    crate::internal_events::UploadResume::Refused { file: &planned.file.id, offset, error: &e }.emit();
                    *resume = None;
                }
            }
        }
        Ok((self.source.open(&planned.file, source, 0).await?, 0))
    }

    /// A 404 on the bytes of a file Drive no longer shows: it was deleted (or access was lost) after
    /// the change was read, and its removal is in the change log. Not a failure. A 404 on a file
    /// Drive still shows is one (dead-lettered), so nothing is skipped that could be mirrored.
    async fn is_gone(&self, file: &FileId, e: &DriveError) -> bool {
        matches!(e, DriveError::Api { status: 404, .. }) && matches!(self.source.still_exists(file).await, Ok(false))
    }

    async fn skip_gone(&self, planned: Planned, emit: &Emit<Transfer>) -> Result<(), StageError> {
        crate::internal_events::GoneBeforeDownload { file: &planned.file.id }.emit();
        let kind = OutcomeKind::Skipped(SkipReason::Gone);
        emit.outcome(Outcome { seq: planned.seq, file_id: planned.file.id.clone(), kind }).await
    }

    /// A file Drive will not hand over is skipped with its reason (recorded by the committer, so this
    /// version is not asked for again); any other failure is a dead letter.
    async fn refused_or_dead_letter(
        &self,
        planned: Planned,
        e: DriveError,
        emit: &Emit<Transfer>,
    ) -> Result<(), StageError> {
        let Some(reason) = refusal(&e, &planned.file) else { return self.dead_letter(planned, e, emit).await };
        let (file, name) = (&planned.file.id, planned.file.name.as_str());
        let deferral = crate::state::QUOTA_DEFERRAL;
        crate::internal_events::DownloadRefused { file, name, reason: &reason, error: &e, deferral }.emit();
        let kind = OutcomeKind::Skipped(reason);
        emit.outcome(Outcome { seq: planned.seq, file_id: planned.file.id.clone(), kind }).await
    }

    async fn dead_letter(&self, planned: Planned, e: DriveError, emit: &Emit<Transfer>) -> Result<(), StageError> {
        if e.class() == crate::retry::ErrorClass::Fatal {
            // Not this file's fault: Drive cannot be used any more (the sign-in was refused).
            return Err(super::drive_failure("download", e));
        }
        emit.dead_letter(Self::NAME, &planned, &e.short_reason(), e.to_string()).await
    }

    /// An empty chunk of exactly the size it will hold: `chunk_size`, or what is left of a smaller
    /// file from `offset` on.
    fn chunk_buffer(&self, planned: &Planned, offset: u64) -> BytesMut {
        let left = planned.file.size.map_or(self.chunk_size, |s| s.saturating_sub(offset) as usize);
        BytesMut::with_capacity(left.clamp(1, self.chunk_size))
    }

    /// Copies the body into the chunk channel, re-opening at the current offset when it breaks.
    async fn pump(
        &self,
        planned: &Planned,
        source: &Source,
        mut stream: ByteStream,
        mut offset: u64,
        tx: &mpsc::Sender<Chunk>,
    ) -> Result<(), PumpError> {
        let mut resumes = 0;
        let mut buf = self.chunk_buffer(planned, offset);
        loop {
            match stream.body.next().await {
                Some(Ok(mut bytes)) => {
                    offset += bytes.len() as u64;
                    crate::internal_events::BytesMoved { direction: "download", bytes: bytes.len() as u64 }.emit();
                    // Fill the chunk exactly to its capacity and start the next one: a buffer that grew
                    // past its capacity would double, and each chunk would pin twice its size.
                    while !bytes.is_empty() {
                        let take = (self.chunk_size - buf.len()).min(bytes.len());
                        buf.extend_from_slice(&bytes.split_to(take));
                        if buf.len() == self.chunk_size {
                            let next = self.chunk_buffer(planned, offset - bytes.len() as u64);
                            let chunk = std::mem::replace(&mut buf, next).freeze();
                            tx.send(Chunk::Data(chunk)).await.map_err(|_| PumpError::ReceiverGone)?;
                        }
                    }
                }
                Some(Err(e)) => {
                    if !matches!(source, Source::Media) && offset == buf.len() as u64 {
                        // An export cannot continue mid-way, but one none of whose bytes reached the
                        // uploader yet (a response that waited, unread, for its upload to start) can
                        // start over.
                        buf.clear();
                        offset = 0;
                    }
                    stream = self.resume(planned, source, offset, &mut resumes, e).await?
                }
                None => {
                    if let Some(total) = stream.total_len.filter(|t| *t > offset) {
                        let e = DriveError::Transport(format!("body ended at {offset} of {total} bytes"));
                        stream = self.resume(planned, source, offset, &mut resumes, e).await?;
                        continue;
                    }
                    if !buf.is_empty() {
                        tx.send(Chunk::Data(buf.split().freeze())).await.map_err(|_| PumpError::ReceiverGone)?;
                    }
                    tx.send(Chunk::End).await.map_err(|_| PumpError::ReceiverGone)?;
                    return Ok(());
                }
            }
        }
    }

    /// Re-opens the body at `offset` after `error`, while resumptions remain (media at any offset;
    /// an export, generated on the fly, only from its start).
    async fn resume(
        &self,
        planned: &Planned,
        source: &Source,
        offset: u64,
        resumes: &mut u32,
        error: DriveError,
    ) -> Result<ByteStream, PumpError> {
        *resumes += 1;
        if (!matches!(source, Source::Media) && offset > 0) || *resumes > self.max_resumes {
            return Err(PumpError::Drive(error));
        }
        DownloadResumed { file: &planned.file.id, offset, error: &error }.emit();
        self.source.open(&planned.file, source, offset).await.map_err(PumpError::Drive)
    }
}

enum PumpError {
    ReceiverGone,
    Drive(DriveError),
}

impl<B: ByteSource, D: ObjectProbe, R: ResumeRecords> Stage for Downloader<B, D, R> {
    type In = Planned;
    type Out = Transfer;
    const NAME: StageName = StageName::Downloader;
    type Replay = Planned;

    async fn process(&mut self, items: Vec<Planned>, emit: &Emit<Transfer>) -> Result<(), StageError> {
        for planned in items {
            self.handle(planned, emit).await?;
        }
        Ok(())
    }

    fn replay(item: &Planned) -> Planned {
        item.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::testing;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Drive in memory: each file's bytes, what was opened, and files that answer 404 but still exist.
    #[derive(Default)]
    struct Drive {
        bytes: HashMap<FileId, Vec<u8>>,
        served: AtomicU64,
        missing_but_listed: bool,
        /// Bodies that break before their first byte, as a response left unread too long may.
        breaks: AtomicU64,
        /// A 403 reason every download answers with (Drive refusing the file).
        refuses: Option<&'static str>,
    }

    impl ByteSource for Drive {
        async fn open(&self, file: &DriveFile, _: &Source, offset: u64) -> Result<ByteStream, DriveError> {
            if let Some(reason) = self.refuses {
                let (status, reason, message, retry_after) = (403, reason.into(), "refused".into(), None);
                return Err(DriveError::Api { status, reason, message, retry_after });
            }
            let Some(all) = self.bytes.get(&file.id) else {
                return Err(DriveError::Api {
                    status: 404,
                    reason: "notFound".into(),
                    message: "gone".into(),
                    retry_after: None,
                });
            };
            if self.breaks.load(Ordering::SeqCst) > 0 {
                self.breaks.fetch_sub(1, Ordering::SeqCst);
                let broken: Vec<Result<Bytes, DriveError>> = vec![Err(DriveError::Transport("reset".into()))];
                return Ok(ByteStream { body: Box::pin(futures::stream::iter(broken)), total_len: None });
            }
            let rest = all[offset as usize..].to_vec();
            let served = &self.served;
            served.fetch_add(rest.len() as u64, Ordering::SeqCst);
            let pieces: Vec<Result<Bytes, DriveError>> =
                rest.chunks(3).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            Ok(ByteStream { body: Box::pin(futures::stream::iter(pieces)), total_len: Some(all.len() as u64) })
        }
        async fn still_exists(&self, _: &FileId) -> Result<bool, DriveError> {
            Ok(self.missing_but_listed)
        }
    }

    #[derive(Default)]
    struct Objects(Mutex<HashMap<ObjectKey, u64>>);

    impl ObjectProbe for Objects {
        async fn size_of(&self, key: &ObjectKey) -> Result<Option<u64>, DestError> {
            Ok(self.0.lock().unwrap().get(key).copied())
        }
        async fn content_of(&self, key: &ObjectKey) -> Result<Option<StoredContent>, DestError> {
            Ok(self.0.lock().unwrap().get(key).map(|&size| StoredContent { size, md5: None }))
        }
    }

    struct NoUploads;

    impl ResumeRecords for NoUploads {
        fn upload_of(&self, _: &FileId) -> Result<Option<UploadRecord>, crate::state::StoreError> {
            Ok(None)
        }
    }

    fn downloader(drive: Drive, objects: Objects) -> Downloader<Drive, Objects, NoUploads> {
        Downloader {
            source: Arc::new(drive),
            dest: objects,
            store: NoUploads,
            chunk_size: 4,
            chunk_depth: 2,
            digests: crate::hashing::Digests::Md5,
            max_resumes: 2,
            adopt: false,
        }
    }

    async fn read_all(body: &mut Body) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            match body.recv().await {
                Some(Chunk::Data(b)) => out.extend_from_slice(&b),
                Some(Chunk::End) => return out,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn no_byte_is_fetched_into_memory_until_the_upload_takes_the_transfer() {
        let content = b"0123456789abcdefghij".to_vec();
        let drive = Drive { bytes: HashMap::from([(FileId("f1".into()), content.clone())]), ..Default::default() };
        let mut d = downloader(drive, Objects::default());
        let (emit, mut taps) = testing::emit();
        let planned = testing::upload(1, testing::file("f1", "a.bin", 20, "x"), "m/a.bin");
        let work = tokio::spawn(async move {
            d.process(vec![planned], &emit).await.unwrap();
            d
        });
        let mut transfer = taps.next.recv().await.expect("the transfer is handed on at once");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let body = transfer.body.as_mut().expect("an upload has a body");
        assert!(body.rx.is_empty(), "chunks were queued before the uploader took the transfer");
        assert_eq!(read_all(body).await, content);
        let d = work.await.unwrap();
        assert_eq!(d.source.served.load(Ordering::SeqCst), 20);
    }

    #[tokio::test]
    async fn a_transfer_dropped_untaken_ends_the_download_without_an_outcome() {
        let drive = Drive { bytes: HashMap::from([(FileId("f1".into()), vec![7; 64])]), ..Default::default() };
        let mut d = downloader(drive, Objects::default());
        let (emit, mut taps) = testing::emit();
        let planned = testing::upload(1, testing::file("f1", "a.bin", 64, "x"), "m/a.bin");
        let work = tokio::spawn(async move { d.process(vec![planned], &emit).await });
        drop(taps.next.recv().await);
        work.await.unwrap().unwrap();
        assert!(taps.outcomes().is_empty());
    }

    #[tokio::test]
    async fn a_copy_whose_source_is_gone_is_downloaded_instead() {
        let drive = Drive { bytes: HashMap::from([(FileId("f1".into()), b"abc".to_vec())]), ..Default::default() };
        let mut d = downloader(drive, Objects::default());
        let (emit, mut taps) = testing::emit();
        let mut planned = testing::upload(1, testing::file("f1", "a.bin", 3, "x"), "m/new.bin");
        planned.kind = ActionKind::Copy { from: ObjectKey("m/old.bin".into()), fallback: Source::Media };
        let work = tokio::spawn(async move { d.process(vec![planned], &emit).await });
        let mut transfer = taps.next.recv().await.unwrap();
        assert!(matches!(transfer.planned.kind, ActionKind::Upload { source: Source::Media }));
        assert_eq!(read_all(transfer.body.as_mut().unwrap()).await, b"abc");
        work.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_copy_whose_source_is_there_carries_no_body() {
        let objects = Objects(Mutex::new(HashMap::from([(ObjectKey("m/old.bin".into()), 3)])));
        let mut d = downloader(Drive::default(), objects);
        let (emit, mut taps) = testing::emit();
        let mut planned = testing::upload(1, testing::file("f1", "a.bin", 3, "x"), "m/new.bin");
        planned.kind = ActionKind::Copy { from: ObjectKey("m/old.bin".into()), fallback: Source::Media };
        d.process(vec![planned], &emit).await.unwrap();
        let sent = taps.forwarded();
        assert!(matches!(&sent[..], [Transfer { body: None, .. }]));
        assert_eq!(d.source.served.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_file_drive_refuses_for_good_is_skipped_with_its_reason_and_other_refusals_dead_lettered() {
        type Expected = fn(&SkipReason) -> bool;
        let cases: [(&str, Expected); 3] = [
            ("cannotDownloadAbusiveFile", |r| matches!(r, SkipReason::Abusive(Refused { version: 1, .. }))),
            ("cannotDownloadFile", |r| matches!(r, SkipReason::DownloadDisabled(_))),
            ("downloadQuotaExceeded", |r| matches!(r, SkipReason::QuotaDeferred(_))),
        ];
        for (reason, expected) in cases {
            let drive = Drive { refuses: Some(reason), ..Default::default() };
            let mut d = downloader(drive, Objects::default());
            let (emit, mut taps) = testing::emit();
            let planned = testing::upload(1, testing::file("f1", "a.bin", 3, "x"), "m/a.bin");
            d.process(vec![planned], &emit).await.unwrap();
            let outcomes = taps.outcomes();
            assert!(
                matches!(&outcomes[..], [Outcome { kind: OutcomeKind::Skipped(r), .. }] if expected(r)),
                "{reason}: {outcomes:?}"
            );
            assert!(taps.forwarded().is_empty());
        }
        let mut d =
            downloader(Drive { refuses: Some("exportSizeLimitExceeded"), ..Default::default() }, Objects::default());
        let (emit, mut taps) = testing::emit();
        d.process(vec![testing::upload(1, testing::file("f1", "a.bin", 3, "x"), "m/a.bin")], &emit).await.unwrap();
        assert!(matches!(&taps.outcomes()[..], [Outcome { kind: OutcomeKind::DeadLettered(_), .. }]));
    }

    #[tokio::test]
    async fn a_404_is_skipped_as_gone_when_drive_no_longer_shows_the_file_and_dead_lettered_otherwise() {
        for (listed, gone) in [(false, true), (true, false)] {
            let mut d = downloader(Drive { missing_but_listed: listed, ..Default::default() }, Objects::default());
            let (emit, mut taps) = testing::emit();
            let planned = testing::upload(1, testing::file("f1", "a.bin", 3, "x"), "m/a.bin");
            d.process(vec![planned], &emit).await.unwrap();
            let outcomes = taps.outcomes();
            let kind = &outcomes[0].kind;
            if gone {
                assert!(matches!(kind, OutcomeKind::Skipped(crate::model::SkipReason::Gone)), "{kind:?}");
            } else {
                assert!(matches!(kind, OutcomeKind::DeadLettered(_)), "{kind:?}");
            }
            assert!(taps.forwarded().is_empty());
        }
    }

    #[tokio::test]
    async fn an_export_whose_unread_response_broke_starts_over_instead_of_failing() {
        let content = b"exported document".to_vec();
        let drive = Drive {
            bytes: HashMap::from([(FileId("d1".into()), content.clone())]),
            breaks: AtomicU64::new(1),
            ..Default::default()
        };
        let mut d = downloader(drive, Objects::default());
        let (emit, mut taps) = testing::emit();
        let mut planned = testing::upload(1, testing::file("d1", "doc", 0, "x"), "m/doc.pdf");
        planned.file.size = None;
        planned.kind = ActionKind::Upload { source: Source::Export { mime: "application/pdf".into(), link: None } };
        let work = tokio::spawn(async move { d.process(vec![planned], &emit).await });
        let mut transfer = taps.next.recv().await.unwrap();
        assert_eq!(read_all(transfer.body.as_mut().unwrap()).await, content);
        work.await.unwrap().unwrap();
        assert!(taps.outcomes().is_empty(), "not dead-lettered");
    }
}
