//! Dedup: one event per file in flight at a time (a newer event waits, an older waiting one is
//! superseded). Whether the store already reflects an event (replays after a restart are harmless) is
//! decided here too, by [`already_applied`], but asked by the planner, in change order.

use super::ledger::{Admission, Ledger};
use super::{Emit, Stage, StageError};
use crate::internal_events::InternalEvent;
use crate::model::StageName;
use crate::model::{ChangeEvent, ChangeKind, Outcome, OutcomeKind, SkipReason};
use crate::model::{FileId, FileRecord, FolderRecord};
use crate::state::StoreError;
use std::sync::Arc;

/// The committed records, read-only: what [`already_applied`] compares an event with. [`Store`](crate::state::Store) is the
/// real one; unit tests use a map.
pub trait RecordView {
    /// The file's record.
    fn file_record(&self, id: &FileId) -> Result<Option<FileRecord>, StoreError>;
    /// The folder's record.
    fn folder_record(&self, id: &FileId) -> Result<Option<FolderRecord>, StoreError>;
}

/// The dedup stage.
pub struct Dedup {
    /// The pipeline's ledger (admission: one active event per file).
    pub ledger: Arc<Ledger>,
}

/// True when the store already reflects this event (a replay, or a change that touched nothing the
/// mirror keeps). Asked by the planner, not by dedup: only the planner sees the store after every
/// earlier folder change is committed (it drains them), so a file whose record an uncommitted folder
/// removal is about to drop is never skipped as unchanged.
pub fn already_applied(store: &impl RecordView, event: &ChangeEvent) -> Result<bool, StageError> {
    Ok(match &event.kind {
        ChangeKind::Upsert(f) if f.is_folder() => match store.folder_record(&f.id)? {
            Some(r) => {
                r.name == f.name && r.parent.as_ref() == f.parents.first() && r.trashed == f.trashed && !f.trashed
            }
            None => false,
        },
        ChangeKind::Upsert(f) => match store.file_record(&f.id)? {
            Some(r) => {
                !f.trashed
                    && r.version == f.version
                    && r.name == f.name
                    && r.parent.as_ref() == f.parents.first()
                    && (f.md5.is_none() || r.md5 == f.md5)
            }
            None => false,
        },
        ChangeKind::Removed => {
            store.file_record(&event.file_id)?.is_none() && store.folder_record(&event.file_id)?.is_none()
        }
        // The planner compares these with the drive roots it holds (a store written before roots were
        // recorded has none for a drive it mirrors).
        ChangeKind::SharedDrive { .. } => false,
        // The planner decides, once every earlier action on the key is committed.
        ChangeKind::Stray(_) => false,
    })
}

/// The outcome of an event that needs no work.
pub fn skipped(event: &ChangeEvent, reason: SkipReason) -> Outcome {
    Outcome { seq: event.seq, file_id: event.file_id.clone(), kind: OutcomeKind::Skipped(reason) }
}

impl Stage for Dedup {
    type In = ChangeEvent;
    type Out = ChangeEvent;
    const NAME: StageName = StageName::Dedup;
    type Replay = ChangeEvent;

    async fn process(&mut self, items: Vec<ChangeEvent>, emit: &Emit<ChangeEvent>) -> Result<(), StageError> {
        for event in items {
            match self.ledger.admit(&event) {
                Admission::Parked { superseded } => {
                    if let Some(old) = superseded {
                        crate::internal_events::ItemCounted { stage: Self::NAME.as_str(), outcome: "superseded" }
                            .emit();
                        emit.outcome(skipped(&old, SkipReason::Superseded)).await?;
                    }
                }
                Admission::Proceed => {
                    crate::internal_events::ItemCounted { stage: Self::NAME.as_str(), outcome: "forwarded" }.emit();
                    emit.forward(event).await?;
                }
            }
        }
        Ok(())
    }

    fn replay(item: &ChangeEvent) -> ChangeEvent {
        item.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangeSeq, ObjectKey, Origin};
    use crate::stages::testing;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Records {
        files: HashMap<FileId, FileRecord>,
    }

    impl RecordView for Records {
        fn file_record(&self, id: &FileId) -> Result<Option<FileRecord>, StoreError> {
            Ok(self.files.get(id).cloned())
        }
        fn folder_record(&self, _: &FileId) -> Result<Option<FolderRecord>, StoreError> {
            Ok(None)
        }
    }

    fn upsert(seq: u64, id: &str, version: u64) -> ChangeEvent {
        let mut f = testing::file(id, "a.bin", 3, "abc");
        f.version = version;
        ChangeEvent { seq: ChangeSeq(seq), file_id: f.id.clone(), kind: ChangeKind::Upsert(f), origin: Origin::Change }
    }

    fn record_of(e: &ChangeEvent) -> FileRecord {
        let ChangeKind::Upsert(f) = &e.kind else { unreachable!() };
        FileRecord {
            id: f.id.clone(),
            name: f.name.clone(),
            parent: f.parents.first().cloned(),
            mime_type: f.mime_type.clone(),
            version: f.version,
            md5: f.md5.clone(),
            sha256: None,
            size: 3,
            key: ObjectKey("m/a.bin".into()),
            modified_time: None,
        }
    }

    fn dedup() -> (Dedup, Arc<Ledger>) {
        let ledger = Arc::new(Ledger::new(1, 64));
        (Dedup { ledger: ledger.clone() }, ledger)
    }

    #[tokio::test]
    async fn one_event_per_file_goes_on_and_a_newer_one_supersedes_the_waiting_one() {
        let (mut d, _ledger) = dedup();
        let (emit, mut taps) = testing::emit();
        d.process(vec![upsert(1, "f", 1), upsert(2, "g", 1), upsert(3, "f", 2), upsert(4, "f", 3)], &emit)
            .await
            .unwrap();
        let sent: Vec<u64> = taps.forwarded().iter().map(|e| e.seq.0).collect();
        assert_eq!(sent, vec![1, 2], "f's later events wait for seq 1");
        let outcomes = taps.outcomes();
        assert!(
            matches!(
                &outcomes[..],
                [Outcome { seq: ChangeSeq(3), kind: OutcomeKind::Skipped(SkipReason::Superseded), .. }]
            ),
            "{outcomes:?}"
        );
    }

    #[tokio::test]
    async fn the_waiting_event_is_handed_back_when_the_active_one_is_released() {
        let (mut d, ledger) = dedup();
        let (emit, mut taps) = testing::emit();
        d.process(vec![upsert(1, "f", 1), upsert(2, "f", 2)], &emit).await.unwrap();
        assert_eq!(taps.forwarded().len(), 1);
        ledger.settle(ChangeSeq(1));
        let next = ledger.release(&FileId("f".into()), ChangeSeq(1)).pop().expect("the parked event");
        assert_eq!(next.seq, ChangeSeq(2));
    }

    #[test]
    fn a_replay_of_the_recorded_version_is_already_applied_and_a_newer_one_is_not() {
        let e = upsert(1, "f", 4);
        let mut records = Records::default();
        assert!(!already_applied(&records, &e).unwrap(), "nothing recorded");
        records.files.insert(FileId("f".into()), record_of(&e));
        assert!(already_applied(&records, &e).unwrap());
        assert!(!already_applied(&records, &upsert(2, "f", 5)).unwrap(), "a new version");
        let mut renamed = upsert(3, "f", 4);
        if let ChangeKind::Upsert(f) = &mut renamed.kind {
            f.name = "b.bin".into();
        }
        assert!(!already_applied(&records, &renamed).unwrap(), "a rename");
        let removed = ChangeEvent { kind: ChangeKind::Removed, ..upsert(4, "f", 4) };
        assert!(!already_applied(&records, &removed).unwrap(), "still recorded: must be removed");
        records.files.clear();
        assert!(already_applied(&records, &removed).unwrap());
    }
}
