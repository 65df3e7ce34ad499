//! Chunk-uploader: writes a transfer's chunks to the destination while hashing them (md5 and sha256 on
//! the stream, no second pass). Below the part size it is one PUT; above, a multipart upload with
//! parts in parallel. Copies and deletes are server-side.

use super::downloader::{Chunk, Transfer};
use super::planner::dead_letter;
use super::{Emit, Replay, Stage, StageError};
use crate::dest::{DestError, Destination, ObjectMeta};
use crate::model::{ActionKind, Outcome, OutcomeKind, Planned, Uploaded};
use bytes::Bytes;
use md5::{Digest, Md5};
use sha2::Sha256;
use std::sync::Arc;

/// The uploader stage.
pub struct Uploader {
    /// Destination.
    pub dest: Destination,
    /// Multipart part size; smaller files go in one PUT.
    pub part_size: usize,
    /// Parts in flight per file.
    pub part_concurrency: usize,
    /// Store, to record multipart uploads before their first part.
    pub store: crate::state::Store,
    /// The downloader's input, for a copy whose source vanished (fetch the bytes instead).
    pub refetch: tokio::sync::mpsc::Sender<Planned>,
    /// Failure injection.
    pub faults: Arc<super::FailureInjector>,
}

/// md5 and sha256 computed as bytes stream by.
#[derive(Default, Clone)]
pub struct StreamHasher {
    md5: Md5,
    sha256: Sha256,
    len: u64,
}

impl StreamHasher {
    /// Feeds bytes.
    pub fn update(&mut self, b: &[u8]) {
        self.md5.update(b);
        self.sha256.update(b);
        self.len += b.len() as u64;
    }
    /// Hex md5, hex sha256, length.
    pub fn finish(self) -> (String, String, u64) {
        (hex::encode(self.md5.finalize()), hex::encode(self.sha256.finalize()), self.len)
    }
}

#[allow(clippy::large_enum_variant)]
enum Written {
    Done(Uploaded),
    Abandoned,
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
        }
    }

    async fn write_stream(
        &self,
        planned: Planned,
        mut body: tokio::sync::mpsc::Receiver<Chunk>,
    ) -> Result<Written, DestError> {
        let meta = Self::meta(&planned);
        let mut hasher = StreamHasher::default();
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0usize;
        let mut multipart: Option<Multipart> = None;
        loop {
            match body.recv().await {
                Some(Chunk::Data(bytes)) => {
                    hasher.update(&bytes);
                    crate::metrics::bytes("upload", bytes.len() as u64);
                    pending_len += bytes.len();
                    pending.push(bytes);
                    if pending_len >= self.part_size {
                        if multipart.is_none() {
                            multipart = Some(self.start_multipart(&planned, &meta).await?);
                        }
                        if let Some(mp) = multipart.as_mut() {
                            mp.send(std::mem::take(&mut pending), self.part_concurrency).await?;
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
        match multipart {
            Some(mut mp) => {
                if !pending.is_empty() {
                    mp.send(pending, self.part_concurrency).await?;
                }
                mp.finish(&self.store).await?;
            }
            None => self.dest.put(&planned.key, pending, &meta).await?,
        }
        let (md5, sha256, size) = hasher.finish();
        Ok(Written::Done(Uploaded { planned, md5, sha256, size }))
    }

    /// Starts a multipart upload: on stores with upload ids (S3, GCS, Azure) the id is recorded in the
    /// state store before any part is sent, so a crash leaves nothing orphaned (the next run aborts it).
    async fn start_multipart(&self, planned: &Planned, meta: &ObjectMeta) -> Result<Multipart, DestError> {
        if !self.dest.has_recorded_multipart() {
            let mp = self.dest.multipart(&planned.key, meta, self.part_size).await?;
            return Ok(Multipart::Plain(mp));
        }
        let id = self.dest.create_upload(&planned.key, meta).await?;
        let rec = crate::state::UploadRecord { key: planned.key.clone(), upload_id: id.clone() };
        if let Err(e) = self.store.record_upload(&planned.file.id, &rec) {
            let _ = self.dest.abort_upload(&planned.key, &id).await;
            return Err(DestError::Config(format!("cannot record the upload: {e}")));
        }
        Ok(Multipart::Recorded(RecordedUpload {
            dest: self.dest.clone(),
            file: planned.file.id.clone(),
            key: planned.key.clone(),
            id,
            parts: Vec::new(),
            running: tokio::task::JoinSet::new(),
        }))
    }

    async fn handle(&self, t: Transfer, emit: &Emit<Uploaded>) -> Result<(), StageError> {
        let planned = t.planned.clone();
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
                    let tx = self.refetch.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(again).await;
                    });
                    return Ok(());
                }
                other => other,
            },
            (ActionKind::Tree(tree), _) => match self.apply_tree(tree).await {
                Ok(()) => {
                    let kind = OutcomeKind::TreeChanged(tree.clone());
                    return emit.outcome(Outcome { seq: planned.seq, file_id: planned.file.id.clone(), kind }).await;
                }
                Err(e) => Err(e),
            },
            (_, Some(body)) => self.write_stream(planned.clone(), body).await,
            (_, None) => {
                return Err(StageError::Failed(format!("transfer for {} has no body", planned.file.id)));
            }
        };
        match result {
            Ok(Written::Done(u)) => emit.forward(u).await,
            Ok(Written::Abandoned) => Ok(()),
            Err(e) => {
                tracing::warn!(file = %planned.file.id, key = %planned.key, error = %e, "upload failed; dead-lettered");
                crate::metrics::event(Self::NAME, "dead_lettered");
                let dl = dead_letter(&planned.file, Some(planned.key.clone()), "destinationError", e.to_string());
                emit.outcome(Outcome {
                    seq: planned.seq,
                    file_id: planned.file.id.clone(),
                    kind: OutcomeKind::DeadLettered(dl),
                })
                .await
            }
        }
    }

    /// Moves (copy + delete) or removes every object of a folder's subtree, server-side.
    async fn apply_tree(&self, tree: &crate::model::TreeChange) -> Result<(), DestError> {
        for (rec, old) in &tree.files {
            if tree.remove {
                self.dest.remove(old).await?;
            } else if rec.key != *old {
                match self.dest.copy(old, &rec.key).await {
                    Ok(()) => self.dest.delete(old).await?,
                    Err(DestError::Store { source: object_store::Error::NotFound { .. }, .. }) => {
                        tracing::warn!(key = %old, "object to move is missing; it will be fetched again on its next change");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    async fn copy(&self, planned: &Planned, from: &crate::model::ObjectKey) -> Result<Written, DestError> {
        if *from != planned.key {
            self.dest.copy(from, &planned.key).await?;
        }
        Ok(Written::Done(Uploaded {
            planned: planned.clone(),
            md5: planned.file.md5.clone().unwrap_or_default(),
            sha256: planned.file.sha256.clone().unwrap_or_default(),
            size: planned.file.size.unwrap_or(0),
        }))
    }
}

/// A multipart upload in progress.
enum Multipart {
    /// Through `WriteMultipart` (local folders: no upload id to record).
    Plain(object_store::WriteMultipart),
    /// Through `MultipartStore`, with its id recorded in the state store.
    Recorded(RecordedUpload),
}

/// Parts go up in parallel (bounded); the id is in the store until completed or aborted.
struct RecordedUpload {
    dest: Destination,
    file: crate::model::FileId,
    key: crate::model::ObjectKey,
    id: object_store::MultipartId,
    parts: Vec<Option<object_store::multipart::PartId>>,
    running: tokio::task::JoinSet<(usize, Result<object_store::multipart::PartId, DestError>)>,
}

impl RecordedUpload {
    async fn reap_one(&mut self) -> Result<(), DestError> {
        if let Some(joined) = self.running.join_next().await {
            let (idx, r) = joined.map_err(|e| DestError::Config(format!("part task: {e}")))?;
            self.parts[idx] = Some(r?);
        }
        Ok(())
    }
}

impl Multipart {
    async fn send(&mut self, body: Vec<Bytes>, concurrency: usize) -> Result<(), DestError> {
        match self {
            Multipart::Plain(mp) => {
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
                let (dest, key, id) = (up.dest.clone(), up.key.clone(), up.id.clone());
                up.running.spawn(async move { (idx, dest.put_part(&key, &id, idx, body).await) });
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
                    up.dest.complete_upload(&up.key, &up.id, parts).await
                }
                .await;
                if result.is_err() {
                    let _ = up.dest.abort_upload(&up.key, &up.id).await;
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
                let _ = up.dest.abort_upload(&up.key, &up.id).await;
                let _ = store.clear_upload(&up.file);
            }
        }
    }
}

impl Stage for Uploader {
    type In = Transfer;
    type Out = Uploaded;
    const NAME: &'static str = "uploader";

    async fn process(&mut self, items: Vec<Transfer>, emit: &Emit<Uploaded>) -> Result<(), StageError> {
        for t in items {
            self.faults.check(Self::NAME)?;
            self.handle(t, emit).await?;
        }
        Ok(())
    }

    fn replay(item: &Transfer) -> Replay {
        Replay::Downloader(item.planned.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hasher_matches_known_digests() {
        let mut h = StreamHasher::default();
        h.update(b"hello ");
        h.update(b"world");
        let (md5, sha, len) = h.finish();
        assert_eq!(md5, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(sha, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        assert_eq!(len, 11);
    }
}
