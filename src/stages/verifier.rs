//! Verifier: a write is committed only if its size, md5 and (when both sides have it) sha256 match
//! Drive's metadata (exports: the size received) and the object is really there. A mismatch is fetched again, then dead-lettered; it is
//! never committed.

use super::{Emit, Stage, StageError};
use crate::dest::DestError;
use crate::internal_events::{InternalEvent, MismatchRefetched, OldKeyLeft};
use crate::model::StageName;
use crate::model::{FileRecord, ObjectKey, Outcome, OutcomeKind, Planned, Source, Uploaded};
use crate::state::Intent;
use std::future::Future;

/// What the verifier needs of the destination: the size stored at a key, and removing the old key of
/// a move. [`Destination`](crate::dest::Destination) is the real one; unit tests use an in-memory map.
pub trait StoredObjects: Send + Sync + 'static {
    /// The object's size, `None` when absent.
    fn size_of(&self, key: &ObjectKey) -> impl Future<Output = Result<Option<u64>, DestError>> + Send;
    /// Removes the object (absent is fine).
    fn remove(&self, key: &ObjectKey) -> impl Future<Output = Result<(), DestError>> + Send;
}

/// Fetches allowed per file before a persistent mismatch is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 3;

/// Why a write does not match.
#[derive(Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// md5 differs from Drive's.
    Md5 {
        /// Drive's.
        expected: String,
        /// Ours.
        got: String,
    },
    /// sha256 differs from Drive's `sha256Checksum` (checked when both are known).
    Sha256 {
        /// Drive's.
        expected: String,
        /// Ours.
        got: String,
    },
    /// Byte count differs.
    Size {
        /// Expected.
        expected: u64,
        /// Got.
        got: u64,
    },
    /// The object is missing or has another size.
    Object {
        /// Size found, if any.
        found: Option<u64>,
    },
}

/// Compares what was streamed with Drive's metadata (pure).
pub fn check_against_drive(u: &Uploaded) -> Result<(), Mismatch> {
    let f = &u.planned.file;
    let is_media = !matches!(&u.planned.kind, crate::model::ActionKind::Upload { source: Source::Export { .. } });
    if is_media {
        if let Some(expected) = f.size
            && expected != u.size
        {
            return Err(Mismatch::Size { expected, got: u.size });
        }
        if let Some(expected) = &f.md5
            && !expected.eq_ignore_ascii_case(&u.md5)
        {
            return Err(Mismatch::Md5 { expected: expected.clone(), got: u.md5.clone() });
        }
        if let (Some(expected), Some(got)) = (&f.sha256, &u.sha256)
            && !expected.eq_ignore_ascii_case(got)
        {
            return Err(Mismatch::Sha256 { expected: expected.clone(), got: got.clone() });
        }
    }
    Ok(())
}

/// A write that did not match is fetched again (up to [`MAX_ATTEMPTS`] fetches), then dead-lettered
/// with the mismatch as its reason; it is never committed.
pub async fn retry_or_dead_letter<O>(
    mut planned: Planned,
    m: Mismatch,
    refetch: &super::Redo<Planned>,
    emit: &Emit<O>,
) -> Result<(), StageError> {
    planned.attempt += 1;
    if planned.attempt < MAX_ATTEMPTS {
        MismatchRefetched { file: &planned.file.id, mismatch: &m, attempt: planned.attempt }.emit();
        return refetch.put(planned);
    }
    emit.dead_letter(StageName::Verifier, &planned, "checksumMismatch", format!("{m:?} on every fetch")).await
}

/// Whether the destination's own receipt for the write (a single PUT's md5 ETag) matches the bytes
/// streamed: then the object is there with those bytes, and a HEAD would only cost a request.
pub fn stored_as_streamed(u: &Uploaded) -> bool {
    u.stored_md5.as_deref().is_some_and(|m| !u.md5.is_empty() && m.eq_ignore_ascii_case(&u.md5))
}

/// The verifier stage.
pub struct Verifier<D: StoredObjects> {
    /// Destination, for HEAD and for removing the old key after a move.
    pub dest: D,
    /// The downloader's redo lane, to fetch a mismatching file again.
    pub refetch: super::Redo<Planned>,
}

impl<D: StoredObjects> Verifier<D> {
    async fn handle(&self, u: Uploaded, emit: &Emit<()>) -> Result<(), StageError> {
        let mismatch = match check_against_drive(&u) {
            Err(m) => Some(m),
            Ok(()) if stored_as_streamed(&u) => None,
            Ok(()) => match self.dest.size_of(&u.planned.key).await {
                Ok(Some(size)) if size == u.size => None,
                Ok(found) => Some(Mismatch::Object { found }),
                Err(e) => return Err(StageError::Failed(format!("HEAD {}: {e}", u.planned.key))),
            },
        };
        if let Some(m) = mismatch {
            return retry_or_dead_letter(u.planned, m, &self.refetch, emit).await;
        }
        if let Some(old) = &u.planned.previous_key
            && let Err(e) = self.dest.remove(old).await
        {
            // Noted as an unfinished write of this file: the next start removes it (unless another
            // file has claimed the key since), so a failed delete never leaves an orphan for good.
            OldKeyLeft { key: old, error: &e }.emit();
            let leftover = Intent { key: old.clone(), file: u.planned.file.id.clone(), moves_recorded_bytes: false };
            let note = super::CommitMsg::Leftovers(vec![leftover]);
            emit.commit.send(note).await.map_err(|_| StageError::Closed)?;
        }
        crate::internal_events::ItemCounted { stage: Self::NAME.as_str(), outcome: "verified" }.emit();
        let p = &u.planned;
        let record = FileRecord {
            id: p.file.id.clone(),
            name: p.file.name.clone(),
            parent: p.file.parents.first().cloned(),
            mime_type: p.file.mime_type.clone(),
            version: p.file.version,
            md5: if u.md5.is_empty() { None } else { Some(u.md5.clone()) },
            sha256: u.sha256.clone(),
            size: u.size,
            key: p.key.clone(),
            modified_time: p.file.modified_time.clone(),
        };
        emit.outcome(Outcome { seq: p.seq, file_id: p.file.id.clone(), kind: OutcomeKind::Committed(record) }).await
    }
}

impl<D: StoredObjects> Stage for Verifier<D> {
    type In = Uploaded;
    type Out = ();
    const NAME: StageName = StageName::Verifier;
    type Replay = Uploaded;

    async fn process(&mut self, items: Vec<Uploaded>, emit: &Emit<()>) -> Result<(), StageError> {
        for u in items {
            self.handle(u, emit).await?;
        }
        Ok(())
    }

    fn replay(item: &Uploaded) -> Uploaded {
        item.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::stages::CommitMsg;

    fn uploaded(md5: &str, size: u64, source: Source) -> Uploaded {
        let mut planned = testing::upload(1, testing::file("f", "n", 3, "abc"), "k");
        planned.kind = ActionKind::Upload { source };
        Uploaded { planned, md5: md5.into(), sha256: None, size, stored_md5: None }
    }

    #[test]
    fn matching_media_passes_and_mismatches_are_caught() {
        assert_eq!(check_against_drive(&uploaded("abc", 3, Source::Media)), Ok(()));
        assert!(matches!(check_against_drive(&uploaded("abd", 3, Source::Media)), Err(Mismatch::Md5 { .. })));
        assert!(matches!(check_against_drive(&uploaded("abc", 4, Source::Media)), Err(Mismatch::Size { .. })));
    }

    #[test]
    fn sha256_is_compared_only_when_both_sides_have_it() {
        let mut u = uploaded("abc", 3, Source::Media);
        u.sha256 = Some("00ff".into());
        assert_eq!(check_against_drive(&u), Ok(()), "Drive gave no sha256Checksum");
        u.planned.file.sha256 = Some("00FF".into());
        assert_eq!(check_against_drive(&u), Ok(()));
        u.planned.file.sha256 = Some("00fe".into());
        assert!(matches!(check_against_drive(&u), Err(Mismatch::Sha256 { .. })));
        u.sha256 = None;
        assert_eq!(check_against_drive(&u), Ok(()), "sha256 = false: md5 alone decides");
    }

    #[test]
    fn exports_are_not_compared_with_drive_md5() {
        let export = Source::Export { mime: "application/pdf".into(), link: None };
        assert_eq!(check_against_drive(&uploaded("zzz", 99, export)), Ok(()));
    }

    #[test]
    fn only_a_receipt_with_the_streamed_md5_replaces_the_head() {
        let mut u = uploaded("abc", 3, Source::Media);
        assert!(!stored_as_streamed(&u), "no receipt: HEAD");
        u.stored_md5 = Some("ABC".into());
        assert!(stored_as_streamed(&u));
        u.stored_md5 = Some("abd".into());
        assert!(!stored_as_streamed(&u), "an ETag that is not our md5 (e.g. SSE-KMS) falls back to HEAD");
        u.md5 = String::new();
        u.stored_md5 = Some(String::new());
        assert!(!stored_as_streamed(&u));
    }

    use crate::stages::testing;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::mpsc;

    /// A destination in memory: sizes by key, HEADs counted, removals that can be made to fail.
    #[derive(Default)]
    struct Objects {
        sizes: Mutex<HashMap<ObjectKey, u64>>,
        heads: AtomicUsize,
        removals_fail: bool,
    }

    impl StoredObjects for Arc<Objects> {
        async fn size_of(&self, key: &ObjectKey) -> Result<Option<u64>, DestError> {
            self.heads.fetch_add(1, Ordering::SeqCst);
            Ok(self.sizes.lock().unwrap().get(key).copied())
        }
        async fn remove(&self, key: &ObjectKey) -> Result<(), DestError> {
            if self.removals_fail {
                return Err(DestError::State("injected".into()));
            }
            self.sizes.lock().unwrap().remove(key);
            Ok(())
        }
    }

    struct Rig {
        verifier: Verifier<Arc<Objects>>,
        objects: Arc<Objects>,
        refetched: mpsc::Receiver<Planned>,
    }

    fn rig(objects: Objects) -> Rig {
        let objects = Arc::new(objects);
        let (refetch, refetched) = testing::redo("downloader");
        Rig { verifier: Verifier { dest: objects.clone(), refetch }, objects, refetched }
    }

    fn written(key: &str, size: u64) -> Uploaded {
        let file = testing::file("f1", "a.bin", size, "abc");
        Uploaded { planned: testing::upload(7, file, key), md5: "abc".into(), sha256: None, size, stored_md5: None }
    }

    #[tokio::test]
    async fn an_object_of_the_right_size_is_committed_with_its_record() {
        let mut r = rig(Objects::default());
        r.objects.sizes.lock().unwrap().insert(ObjectKey("m/a.bin".into()), 3);
        let (emit, mut taps) = testing::emit();
        r.verifier.process(vec![written("m/a.bin", 3)], &emit).await.unwrap();
        let outcomes = taps.outcomes();
        assert_eq!(outcomes.len(), 1);
        let OutcomeKind::Committed(rec) = &outcomes[0].kind else { panic!("{outcomes:?}") };
        assert_eq!((rec.key.0.as_str(), rec.size, rec.md5.as_deref()), ("m/a.bin", 3, Some("abc")));
        assert!(r.refetched.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_missing_object_is_fetched_again_and_dead_lettered_after_the_last_attempt() {
        let mut r = rig(Objects::default());
        let (emit, mut taps) = testing::emit();
        r.verifier.process(vec![written("m/a.bin", 3)], &emit).await.unwrap();
        let again = r.refetched.try_recv().expect("fetched again");
        assert_eq!(again.attempt, 1);
        assert!(taps.outcomes().is_empty(), "a mismatch is never committed");
        let mut last = written("m/a.bin", 3);
        last.planned.attempt = MAX_ATTEMPTS - 1;
        r.verifier.process(vec![last], &emit).await.unwrap();
        let outcomes = taps.outcomes();
        assert!(matches!(&outcomes[..], [Outcome { kind: OutcomeKind::DeadLettered(_), .. }]), "{outcomes:?}");
    }

    #[tokio::test]
    async fn a_receipt_with_the_streamed_md5_needs_no_head() {
        let mut r = rig(Objects::default());
        let (emit, mut taps) = testing::emit();
        let mut u = written("m/a.bin", 3);
        u.stored_md5 = Some("ABC".into());
        r.verifier.process(vec![u], &emit).await.unwrap();
        assert_eq!(r.objects.heads.load(Ordering::SeqCst), 0);
        assert!(matches!(&taps.outcomes()[..], [Outcome { kind: OutcomeKind::Committed(_), .. }]));
    }

    #[tokio::test]
    async fn an_old_key_that_cannot_be_removed_is_noted_before_the_outcome() {
        let mut r = rig(Objects { removals_fail: true, ..Default::default() });
        r.objects.sizes.lock().unwrap().insert(ObjectKey("m/new.bin".into()), 3);
        let (emit, mut taps) = testing::emit();
        let mut u = written("m/new.bin", 3);
        u.planned.previous_key = Some(ObjectKey("m/old.bin".into()));
        r.verifier.process(vec![u], &emit).await.unwrap();
        let commits = taps.commits();
        assert!(
            matches!(&commits[..], [CommitMsg::Leftovers(l), CommitMsg::Outcome(_)] if l[0].key.0 == "m/old.bin"),
            "{commits:?}"
        );
    }
}
