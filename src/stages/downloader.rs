//! Downloader: streams `alt=media` (or an export) in fixed-size chunks into a bounded chunk channel
//! read by the uploader, so download and upload overlap and memory stays bounded whatever the size.
//! An interrupted body resumes with `Range` from the last byte received.

use super::planner::dead_letter;
use super::{Emit, Stage, StageError};
use crate::config::StageName;
use crate::dest::Destination;
use crate::drive::{ByteStream, DriveError};
use crate::model::{ActionKind, FileId, Outcome, OutcomeKind, Planned, Source};
use crate::state::{Store, UploadRecord};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The downloader's I/O need: open a file's bytes from an offset.
pub trait ByteSource: Send + Sync + 'static {
    /// Opens `file` at `offset`.
    fn open(
        &self,
        file: &FileId,
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

/// What the uploader receives: the plan and, for uploads, the chunk stream.
#[derive(Debug)]
pub struct Transfer {
    /// The plan.
    pub planned: Planned,
    /// Bytes, for `Upload` actions.
    pub body: Option<mpsc::Receiver<Chunk>>,
    /// An interrupted multipart upload of the same content that these bytes continue: the body then
    /// starts at its resume offset, not at byte 0.
    pub resume: Option<UploadRecord>,
}

/// The downloader stage.
pub struct Downloader<B: ByteSource> {
    /// Drive.
    pub source: Arc<B>,
    /// Destination, to check that a copy source still exists.
    pub dest: Destination,
    /// Store, to find an interrupted upload this download can continue.
    pub store: Store,
    /// Chunk size.
    pub chunk_size: usize,
    /// Chunks buffered per transfer.
    pub chunk_depth: usize,
    /// Digests the uploader computes: a recorded upload resumes only if its saved state has them.
    pub digests: crate::hashing::Digests,
    /// Resumptions allowed per file.
    pub max_resumes: u32,
    /// Failure injection.
    pub faults: Arc<super::FailureInjector>,
    /// A run over an empty state and a populated destination: an object that already holds the
    /// file's exact bytes at its key is kept, not downloaded again (see [`Store::begin_adoption`]).
    pub adopt: bool,
}

impl<B: ByteSource> Downloader<B> {
    /// True when adopting and the object at the planned key already holds exactly Drive's bytes (size
    /// and md5 both known and equal). Exports have no Drive md5 and are always fetched.
    async fn already_holds_the_bytes(&self, planned: &Planned) -> bool {
        let (ActionKind::Upload { source: Source::Media }, Some(md5), Some(size)) =
            (&planned.kind, &planned.file.md5, planned.file.size)
        else {
            return false;
        };
        match self.dest.stored_content(&planned.key).await {
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
            crate::metrics::event(Self::NAME.as_str(), "adopted");
            planned.kind = ActionKind::Copy { from: planned.key.clone(), fallback: Source::Media };
            return emit.forward(Transfer { planned, body: None, resume: None }).await;
        }
        if let ActionKind::Copy { from, fallback } = &planned.kind {
            let still_there = self.dest.head(from).await.ok().flatten().is_some();
            // A crash between the copy and its commit leaves the bytes at the new key only.
            let already_moved = || async { self.dest.head(&planned.key).await.ok().flatten() == planned.file.size };
            if !still_there {
                planned.kind = if planned.file.size.is_some() && already_moved().await {
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
            let (tx, rx) = mpsc::channel(1);
            let _ = tx.try_send(Chunk::End);
            return emit.forward(Transfer { planned, body: Some(rx), resume: None }).await;
        }
        let mut resume = self.resumable_upload(&planned, &source);
        let (stream, offset) = match self.open_at_resume_point(&planned, &source, &mut resume).await {
            Ok(opened) => opened,
            Err(e) if self.is_gone(&planned.file.id, &e).await => return self.skip_gone(planned, emit).await,
            Err(e) => return self.dead_letter(planned, e, emit).await,
        };
        let (tx, rx) = mpsc::channel(self.chunk_depth);
        emit.forward(Transfer { planned: planned.clone(), body: Some(rx), resume }).await?;
        match self.pump(&planned, &source, stream, offset, &tx).await {
            Ok(()) => Ok(()),
            Err(PumpError::ReceiverGone) => Ok(()),
            Err(PumpError::Drive(e)) => {
                let _ = tx.send(Chunk::Abort).await;
                self.dead_letter(planned, e, emit).await
            }
        }
    }

    /// The interrupted upload of exactly this content, if one was recorded with finished parts.
    fn resumable_upload(&self, planned: &Planned, source: &Source) -> Option<UploadRecord> {
        if !matches!(source, Source::Media) {
            return None;
        }
        let rec = self.store.upload(&planned.file.id).ok().flatten()?;
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
            match self.source.open(&planned.file.id, source, offset).await {
                Ok(stream) => {
                    tracing::info!(file = %planned.file.id, offset, "resuming an interrupted upload from its recorded parts");
                    return Ok((stream, offset));
                }
                Err(e) => {
                    tracing::warn!(file = %planned.file.id, offset, error = %e, "cannot resume at the recorded offset; starting over");
                    *resume = None;
                }
            }
        }
        Ok((self.source.open(&planned.file.id, source, 0).await?, 0))
    }

    /// A 404 on the bytes of a file Drive no longer shows: it was deleted (or access was lost) after
    /// the change was read, and its removal is in the change log. Not a failure. A 404 on a file
    /// Drive still shows is one (dead-lettered), so nothing is skipped that could be mirrored.
    async fn is_gone(&self, file: &FileId, e: &DriveError) -> bool {
        matches!(e, DriveError::Api { status: 404, .. }) && matches!(self.source.still_exists(file).await, Ok(false))
    }

    async fn skip_gone(&self, planned: Planned, emit: &Emit<Transfer>) -> Result<(), StageError> {
        tracing::info!(file = %planned.file.id, "gone from Drive before its download; its removal follows");
        crate::metrics::event(StageName::Downloader.as_str(), "gone");
        let kind = OutcomeKind::Skipped(crate::model::SkipReason::Gone);
        emit.outcome(Outcome { seq: planned.seq, file_id: planned.file.id.clone(), kind }).await
    }

    async fn dead_letter(&self, planned: Planned, e: DriveError, emit: &Emit<Transfer>) -> Result<(), StageError> {
        tracing::warn!(file = %planned.file.id, name = %planned.file.name, error = %e, "download failed; dead-lettered");
        crate::metrics::event(StageName::Downloader.as_str(), "dead_lettered");
        let dl = dead_letter(&planned.file, Some(planned.key.clone()), &e.short_reason(), e.to_string());
        emit.outcome(Outcome {
            seq: planned.seq,
            file_id: planned.file.id.clone(),
            kind: OutcomeKind::DeadLettered(dl),
        })
        .await
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
                    crate::metrics::bytes("download", bytes.len() as u64);
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
                Some(Err(e)) => stream = self.resume(planned, source, offset, &mut resumes, e).await?,
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

    /// Re-opens the body at `offset` after `error`, while resumptions remain (media only: exports
    /// are generated on the fly and cannot be resumed).
    async fn resume(
        &self,
        planned: &Planned,
        source: &Source,
        offset: u64,
        resumes: &mut u32,
        error: DriveError,
    ) -> Result<ByteStream, PumpError> {
        *resumes += 1;
        if !matches!(source, Source::Media) || *resumes > self.max_resumes {
            return Err(PumpError::Drive(error));
        }
        tracing::info!(file = %planned.file.id, offset, %error, "download interrupted; resuming with Range");
        crate::metrics::retry("drive", "body_interrupted");
        self.source.open(&planned.file.id, source, offset).await.map_err(PumpError::Drive)
    }
}

enum PumpError {
    ReceiverGone,
    Drive(DriveError),
}

impl<B: ByteSource> Stage for Downloader<B> {
    type In = Planned;
    type Out = Transfer;
    const NAME: StageName = StageName::Downloader;
    type Replay = Planned;

    async fn process(&mut self, items: Vec<Planned>, emit: &Emit<Transfer>) -> Result<(), StageError> {
        for planned in items {
            self.faults.check(Self::NAME)?;
            self.handle(planned, emit).await?;
        }
        Ok(())
    }

    fn replay(item: &Planned) -> Planned {
        item.clone()
    }
}
