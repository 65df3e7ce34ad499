//! Dedup: one event per file in flight at a time (a newer event waits, an older waiting one is
//! superseded). Whether the store already reflects an event (replays after a restart are harmless) is
//! decided here too, by [`already_applied`], but asked by the planner, in change order.

use super::{Emit, Replay, Stage, StageError};
use crate::model::{ChangeEvent, ChangeKind, FileId, Outcome, OutcomeKind, SkipReason};
use crate::state::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Files in flight and the newest event waiting behind each. Shared by dedup (admits) and the
/// committer (releases), and kept outside the actors so that it survives their restarts.
#[derive(Debug, Default)]
pub struct InFlight {
    slots: Mutex<HashMap<FileId, Slot>>,
    /// Woken whenever an event finishes, for the planner waiting on the actions ahead of it.
    finished: tokio::sync::Notify,
}

#[derive(Debug)]
struct Slot {
    active: u64,
    parked: Option<ChangeEvent>,
}

/// What admission decided.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead: the event is now the file's active one.
    Proceed,
    /// Waits behind the active event; `superseded` is an older waiting event that it replaces.
    Parked {
        /// The event no longer needed, to be skipped.
        superseded: Option<ChangeEvent>,
    },
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileId, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits `event`, or parks it behind the file's active event.
    pub fn admit(&self, event: &ChangeEvent) -> Admission {
        let mut slots = self.lock();
        match slots.get_mut(&event.file_id) {
            None => {
                slots.insert(event.file_id.clone(), Slot { active: event.seq.0, parked: None });
                Admission::Proceed
            }
            Some(slot) if slot.active == event.seq.0 => Admission::Proceed,
            Some(slot) => Admission::Parked { superseded: slot.parked.replace(event.clone()) },
        }
    }

    /// The active event of `file` ended; returns the parked event, which becomes active.
    pub fn finish(&self, file: &FileId, seq: u64) -> Option<ChangeEvent> {
        let next = self.finish_slot(file, seq);
        self.finished.notify_waiters();
        next
    }

    /// Waits until `done` holds, re-checking whenever an event finishes (and at least every 50 ms).
    pub async fn wait_until(&self, mut done: impl FnMut() -> bool) {
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            if done() {
                return;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(50), finished).await;
        }
    }

    fn finish_slot(&self, file: &FileId, seq: u64) -> Option<ChangeEvent> {
        let mut slots = self.lock();
        let slot = slots.get_mut(file)?;
        if slot.active != seq {
            return None;
        }
        match slot.parked.take() {
            Some(next) => {
                slot.active = next.seq.0;
                Some(next)
            }
            None => {
                slots.remove(file);
                None
            }
        }
    }

    /// True while `seq` is the active event of `file` (it has no terminal outcome yet).
    pub fn is_active(&self, file: &FileId, seq: u64) -> bool {
        self.lock().get(file).is_some_and(|s| s.active == seq)
    }

    /// Files in flight.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The dedup stage.
pub struct Dedup {
    /// Shared in-flight table.
    pub in_flight: Arc<InFlight>,
    /// Failure injection.
    pub faults: Arc<super::FailureInjector>,
}

/// True when the store already reflects this event (a replay, or a change that touched nothing the
/// mirror keeps). Asked by the planner, not by dedup: only the planner sees the store after every
/// earlier folder change is committed (it drains them), so a file whose record an uncommitted folder
/// removal is about to drop is never skipped as unchanged.
pub fn already_applied(store: &Store, event: &ChangeEvent) -> Result<bool, StageError> {
    let err = |e: crate::state::StoreError| StageError::Fatal(e.to_string());
    Ok(match &event.kind {
        ChangeKind::Upsert(f) if f.is_folder() => match store.folder(&f.id).map_err(err)? {
            Some(r) => {
                r.name == f.name && r.parent.as_ref() == f.parents.first() && r.trashed == f.trashed && !f.trashed
            }
            None => false,
        },
        ChangeKind::Upsert(f) => match store.file(&f.id).map_err(err)? {
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
            store.file(&event.file_id).map_err(err)?.is_none() && store.folder(&event.file_id).map_err(err)?.is_none()
        }
        // The planner compares these with the drive roots it holds (a store written before roots were
        // recorded has none for a drive it mirrors).
        ChangeKind::SharedDrive { .. } => false,
    })
}

/// The outcome of an event that needs no work.
pub fn skipped(event: &ChangeEvent, reason: SkipReason) -> Outcome {
    Outcome { seq: event.seq, file_id: event.file_id.clone(), kind: OutcomeKind::Skipped(reason) }
}

impl Stage for Dedup {
    type In = ChangeEvent;
    type Out = ChangeEvent;
    const NAME: &'static str = "dedup";

    async fn process(&mut self, items: Vec<ChangeEvent>, emit: &Emit<ChangeEvent>) -> Result<(), StageError> {
        for event in items {
            self.faults.check(Self::NAME)?;
            match self.in_flight.admit(&event) {
                Admission::Parked { superseded } => {
                    if let Some(old) = superseded {
                        crate::metrics::event(Self::NAME, "superseded");
                        emit.outcome(skipped(&old, SkipReason::Superseded)).await?;
                    }
                }
                Admission::Proceed => {
                    crate::metrics::event(Self::NAME, "forwarded");
                    emit.forward(event).await?;
                }
            }
        }
        Ok(())
    }

    fn replay(item: &ChangeEvent) -> Replay {
        Replay::Dedup(item.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChangeSeq;

    fn ev(id: &str, seq: u64) -> ChangeEvent {
        ChangeEvent {
            seq: ChangeSeq(seq),
            file_id: FileId(id.into()),
            kind: ChangeKind::Removed,
            origin: Default::default(),
        }
    }

    #[test]
    fn newer_event_waits_and_supersedes_older_waiting_one() {
        let t = InFlight::default();
        assert_eq!(t.admit(&ev("a", 1)), Admission::Proceed);
        assert_eq!(t.admit(&ev("b", 2)), Admission::Proceed);
        assert_eq!(t.admit(&ev("a", 3)), Admission::Parked { superseded: None });
        assert_eq!(t.admit(&ev("a", 4)), Admission::Parked { superseded: Some(ev("a", 3)) });
        assert_eq!(t.finish(&FileId("a".into()), 1), Some(ev("a", 4)));
        // The released event is already active: re-admitting it proceeds (also after a replay).
        assert_eq!(t.admit(&ev("a", 4)), Admission::Proceed);
        assert_eq!(t.finish(&FileId("a".into()), 4), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn finishing_a_stale_seq_changes_nothing() {
        let t = InFlight::default();
        t.admit(&ev("a", 5));
        assert_eq!(t.finish(&FileId("a".into()), 4), None);
        assert_eq!(t.len(), 1);
    }
}
