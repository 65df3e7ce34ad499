//! Dedup: one event per file in flight at a time (a newer event waits, an older waiting one is
//! superseded). Whether the store already reflects an event (replays after a restart are harmless) is
//! decided here too, by [`already_applied`], but asked by the planner, in change order.

use super::ledger::{Admission, Ledger};
use super::{Emit, Stage, StageError};
use crate::config::StageName;
use crate::model::{ChangeEvent, ChangeKind, Outcome, OutcomeKind, SkipReason};
use crate::state::Store;
use std::sync::Arc;

/// The dedup stage.
pub struct Dedup {
    /// The pipeline's ledger (admission: one active event per file).
    pub ledger: Arc<Ledger>,
    /// Failure injection.
    pub faults: Arc<super::FailureInjector>,
}

/// True when the store already reflects this event (a replay, or a change that touched nothing the
/// mirror keeps). Asked by the planner, not by dedup: only the planner sees the store after every
/// earlier folder change is committed (it drains them), so a file whose record an uncommitted folder
/// removal is about to drop is never skipped as unchanged.
pub fn already_applied(store: &Store, event: &ChangeEvent) -> Result<bool, StageError> {
    Ok(match &event.kind {
        ChangeKind::Upsert(f) if f.is_folder() => match store.folder(&f.id)? {
            Some(r) => {
                r.name == f.name && r.parent.as_ref() == f.parents.first() && r.trashed == f.trashed && !f.trashed
            }
            None => false,
        },
        ChangeKind::Upsert(f) => match store.file(&f.id)? {
            Some(r) => {
                !f.trashed
                    && r.version == f.version
                    && r.name == f.name
                    && r.parent.as_ref() == f.parents.first()
                    && (f.md5.is_none() || r.md5 == f.md5)
            }
            None => false,
        },
        ChangeKind::Removed => store.file(&event.file_id)?.is_none() && store.folder(&event.file_id)?.is_none(),
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
            self.faults.check(Self::NAME)?;
            match self.ledger.admit(&event) {
                Admission::Parked { superseded } => {
                    if let Some(old) = superseded {
                        crate::metrics::event(Self::NAME.as_str(), "superseded");
                        emit.outcome(skipped(&old, SkipReason::Superseded)).await?;
                    }
                }
                Admission::Proceed => {
                    crate::metrics::event(Self::NAME.as_str(), "forwarded");
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
