//! Files Drive will not hand over (downloads disabled, flagged abusive, no export, download quota
//! used up): one record per file, so the same version is skipped again without asking Drive, a new
//! version is tried again, and `status` can say what is not mirrored and why.

use super::{Store, StoreError, codec};
use crate::model::{FileId, Refresh, SkipReason};
use std::time::Duration;

/// How long a file whose download quota Drive says is used up (`downloadQuotaExceeded`) waits before
/// it is asked for again: Google lifts the limit after hours, so asking sooner only fails again.
pub const QUOTA_DEFERRAL: Duration = Duration::from_secs(6 * 3600);

/// Why one file is not mirrored: the record lives with the rule that reads it.
pub use crate::mirror::disposition::SkipRecord;

impl Store {
    /// The skip record of one file.
    pub fn skip_record(&self, id: &FileId) -> Result<Option<SkipRecord>, StoreError> {
        self.skipped.get(id.as_str())?.map(|v| codec::decode(&v)).transpose()
    }

    /// Every file Drive will not hand over, in id order.
    pub fn skipped_files(&self) -> Result<Vec<(FileId, SkipRecord)>, StoreError> {
        self.skipped
            .iter()
            .map(|g| {
                let (k, v) = g.into_inner()?;
                Ok((FileId(String::from_utf8_lossy(&k).into_owned()), codec::decode(&v)?))
            })
            .collect()
    }

    /// Asks the next run to fetch again (`Refresh::File`) the skipped files whose reason no longer
    /// holds: quota deferrals that ended by `now_ms`, and abusive files once `acknowledge_abuse` is
    /// on. Their records go in the same synced batch. Called before a pipeline starts (the committer
    /// is the only writer while one runs). Returns how many were released.
    pub fn release_skips(&self, acknowledge_abuse: bool, now_ms: u64) -> Result<usize, StoreError> {
        let released: Vec<FileId> = self
            .skipped_files()?
            .into_iter()
            .filter(|(_, r)| {
                (acknowledge_abuse && r.reason == "abusive") || r.until_unix_ms.is_some_and(|until| until <= now_ms)
            })
            .map(|(id, _)| id)
            .collect();
        if released.is_empty() {
            return Ok(0);
        }
        let requests: Vec<Refresh> = released.iter().cloned().map(Refresh::File).collect();
        let mut b = self.db.batch().durability(Some(fjall::PersistMode::SyncData));
        for (id, request) in released.iter().zip(&requests) {
            b.remove(&self.skipped, id.as_str());
            b.insert(&self.refresh, codec::encode(request)?, codec::encode(&rand::random::<u64>())?);
        }
        self.commit(b)?;
        Ok(released.len())
    }

    /// The files whose download-quota deferral ended by `now_ms`: a long-running mirror asks Drive for
    /// them again (see `pipeline`'s deferral release), without waiting for a restart.
    pub fn ended_deferrals(&self, now_ms: u64) -> Result<Vec<FileId>, StoreError> {
        Ok(self
            .skipped_files()?
            .into_iter()
            .filter(|(_, r)| r.until_unix_ms.is_some_and(|until| until <= now_ms))
            .map(|(id, _)| id)
            .collect())
    }

    /// Records a refused skip in the outcome's batch.
    pub(super) fn stage_skip(
        &self,
        b: &mut fjall::OwnedWriteBatch,
        id: &FileId,
        reason: &SkipReason,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let Some(refused) = reason.refused() else { return Ok(()) };
        let until_unix_ms =
            matches!(reason, SkipReason::QuotaDeferred(_)).then(|| now_ms + QUOTA_DEFERRAL.as_millis() as u64);
        let rec = SkipRecord {
            reason: reason.label().to_string(),
            version: refused.version,
            name: refused.name.clone(),
            at_unix_ms: now_ms,
            until_unix_ms,
        };
        b.insert(&self.skipped, id.as_str(), codec::encode(&rec)?);
        Ok(())
    }

    /// Forgets a file's skip record (it was written, removed or dead-lettered since), only if it has
    /// one: an unconditional remove would leave a tombstone per committed file.
    pub(super) fn stage_skip_removal(&self, b: &mut fjall::OwnedWriteBatch, id: &FileId) -> Result<(), StoreError> {
        if self.skipped.contains_key(id.as_str())? {
            b.remove(&self.skipped, id.as_str());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangeSeq, Outcome, OutcomeKind, Refused};
    use crate::state::CommitBatch;

    fn skip(store: &Store, id: &str, reason: SkipReason) {
        let o = Outcome { seq: ChangeSeq(1), file_id: FileId(id.into()), kind: OutcomeKind::Skipped(reason) };
        store.apply(&CommitBatch { outcomes: vec![o], next_seq: 2, ..Default::default() }).unwrap();
    }

    #[test]
    fn a_refused_version_is_recorded_and_a_removal_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let refused = Refused { version: 7, name: "x.pdf".into() };
        skip(&store, "f1", SkipReason::DownloadDisabled(refused.clone()));
        skip(&store, "f2", SkipReason::Unchanged);
        let rec = store.skip_record(&FileId("f1".into())).unwrap().unwrap();
        assert_eq!((rec.reason.as_str(), rec.version, rec.until_unix_ms), ("download_disabled", 7, None));
        assert!(rec.still_refuses(7, u64::MAX) && !rec.still_refuses(8, 0));
        assert_eq!(store.skip_record(&FileId("f2".into())).unwrap(), None);
        assert_eq!(store.counts().unwrap().skipped.get("download_disabled"), Some(&1));
        let removed =
            Outcome { seq: ChangeSeq(2), file_id: FileId("f1".into()), kind: OutcomeKind::Removed { key: None } };
        store.apply(&CommitBatch { outcomes: vec![removed], next_seq: 3, ..Default::default() }).unwrap();
        assert_eq!(store.skip_record(&FileId("f1".into())).unwrap(), None);
    }

    #[test]
    fn an_ended_deferral_and_an_acknowledged_abuse_are_asked_for_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        skip(&store, "q", SkipReason::QuotaDeferred(Refused { version: 1, name: "q".into() }));
        skip(&store, "a", SkipReason::Abusive(Refused { version: 1, name: "a".into() }));
        let rec = store.skip_record(&FileId("q".into())).unwrap().unwrap();
        let until = rec.until_unix_ms.unwrap();
        assert!(rec.still_refuses(1, until - 1) && !rec.still_refuses(1, until));
        assert_eq!(store.release_skips(false, until - 1).unwrap(), 0);
        assert_eq!(store.release_skips(false, until).unwrap(), 1);
        assert!(store.skip_record(&FileId("q".into())).unwrap().is_none());
        assert_eq!(store.release_skips(true, 0).unwrap(), 1);
        let pending: Vec<Refresh> = store.pending_refreshes(10).unwrap().into_iter().map(|(r, _)| r).collect();
        assert!(pending.contains(&Refresh::File(FileId("q".into()))), "{pending:?}");
        assert!(pending.contains(&Refresh::File(FileId("a".into()))), "{pending:?}");
        assert!(store.skipped_files().unwrap().is_empty());
    }

    #[test]
    fn a_running_mirror_sees_which_deferrals_ended_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        skip(&store, "q", SkipReason::QuotaDeferred(Refused { version: 1, name: "q".into() }));
        skip(&store, "d", SkipReason::DownloadDisabled(Refused { version: 1, name: "d".into() }));
        let until = store.skip_record(&FileId("q".into())).unwrap().unwrap().until_unix_ms.unwrap();
        assert!(store.ended_deferrals(until - 1).unwrap().is_empty());
        assert_eq!(store.ended_deferrals(until).unwrap(), [FileId("q".into())]);
        assert_eq!(store.ended_deferrals(u64::MAX).unwrap(), [FileId("q".into())], "a refusal never ends");
    }
}
