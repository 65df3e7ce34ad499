//! The audit log: what was done to which key, when, and why a file was skipped or failed. One entry
//! per outcome that changed something (and per refusal: a skip with a reason), and one per record a
//! batch changes besides (the files and folders of a subtree move, the ancestors the planner looked
//! up). Entries are numbered by their own counter in commit order (the audit seq: contiguous, never
//! reused), written by the committer in the outcome's batch, kept for `[state] audit_retention` and
//! until the PostgreSQL index has applied them; `mirrorflow log` and the index sink read it.

use super::{Store, StoreError, codec};
use crate::model::{FileId, ObjectKey, Outcome, OutcomeKind};
use fjall::PersistMode;
use serde::{Deserialize, Serialize};

/// What the audit log remembers of an outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// File concerned.
    pub file_id: FileId,
    /// `committed`, `folder`, `removed`, `dead_lettered`, `skipped`, `tree_moved`, `tree_removed`.
    pub what: String,
    /// Key written or removed.
    pub key: Option<ObjectKey>,
    /// When the outcome was committed (Unix ms; 0 for entries written before entries had a time). The
    /// audit log keeps entries for `[state] audit_retention`.
    pub at_unix_ms: u64,
    /// Why: a skip's reason (`download_disabled: report.pdf, version 7`), a dead letter's reason and
    /// error. `None` for entries written before entries had one, and where the operation says it all.
    pub detail: Option<String>,
}

impl From<&Outcome> for AuditEntry {
    fn from(o: &Outcome) -> Self {
        let (what, key, detail) = match &o.kind {
            OutcomeKind::Committed(r) => ("committed", Some(r.key.clone()), None),
            OutcomeKind::FolderRecorded(f) => ("folder", Some(f.key.clone()), None),
            OutcomeKind::Removed { key } => ("removed", key.clone(), None),
            OutcomeKind::DeadLettered(d) => {
                ("dead_lettered", d.key.clone(), Some(format!("{}: {}", d.reason, d.last_error)))
            }
            OutcomeKind::Skipped(reason) => {
                let detail = match reason.refused() {
                    Some(r) => format!("{}: {}, version {}", reason.label(), r.name, r.version),
                    None => reason.label().to_string(),
                };
                ("skipped", None, Some(detail))
            }
            OutcomeKind::TreeChanged(t) => {
                let what = if t.remove { "tree_removed" } else { "tree_moved" };
                (what, t.folder.as_ref().map(|f| f.key.clone()), None)
            }
        };
        AuditEntry { file_id: o.file_id.clone(), what: what.into(), key, at_unix_ms: 0, detail }
    }
}

impl AuditEntry {
    /// What tells this entry from another numbered alike (file, operation, time).
    pub fn fingerprint(&self) -> String {
        format!("{}|{}|{}", self.file_id, self.what, self.at_unix_ms)
    }

    /// An entry for a record a batch changed without an outcome of its own (a file or folder of a
    /// subtree move, an ancestor folder): the index sink must see every record change.
    pub(super) fn record_change(id: &FileId, what: &str, key: Option<&ObjectKey>) -> AuditEntry {
        AuditEntry { file_id: id.clone(), what: what.into(), key: key.cloned(), at_unix_ms: 0, detail: None }
    }
}

/// Next audit seq to hand out (`checkpoints` keyspace).
const AUDIT_NEXT_KEY: &[u8] = b"audit_next";
/// The last audit seq the PostgreSQL index has applied; present only while an index is configured.
/// The audit log is not pruned past it.
const INDEX_ACKED_KEY: &[u8] = b"index_acked";
/// This store's identity, so the index can tell it is fed by the store it was built from.
const STORE_ID_KEY: &[u8] = b"store_id";

/// Whether an outcome goes into the audit log: everything that changed the mirror or the store, and
/// the skips that have a reason worth reading (Drive refused the file); not the many "unchanged".
pub(super) fn audited(o: &Outcome) -> bool {
    match &o.kind {
        OutcomeKind::Skipped(reason) => reason.refused().is_some(),
        _ => true,
    }
}

/// An audit entry in any format the store has written: with a detail (now), dated without one, or
/// from before entries had a time.
pub(super) fn decode_audit(bytes: &[u8]) -> Result<AuditEntry, StoreError> {
    #[derive(Deserialize)]
    struct Dated {
        file_id: FileId,
        what: String,
        key: Option<ObjectKey>,
        at_unix_ms: u64,
    }
    #[derive(Deserialize)]
    struct Undated {
        file_id: FileId,
        what: String,
        key: Option<ObjectKey>,
    }
    codec::decode::<AuditEntry>(bytes)
        .or_else(|e| {
            let old: Dated = codec::decode(bytes).map_err(|_| e)?;
            Ok(AuditEntry {
                file_id: old.file_id,
                what: old.what,
                key: old.key,
                at_unix_ms: old.at_unix_ms,
                detail: None,
            })
        })
        .or_else(|e: StoreError| {
            let old: Undated = codec::decode(bytes).map_err(|_| e)?;
            Ok(AuditEntry { file_id: old.file_id, what: old.what, key: old.key, at_unix_ms: 0, detail: None })
        })
}

fn seq_of(key: &[u8]) -> u64 {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&key[..8.min(key.len())]);
    u64::from_be_bytes(seq)
}

impl Store {
    /// Audit entries with seq `from` or later, oldest first (tests and diagnostics: unbounded).
    pub fn audit_since(&self, from: u64) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        self.audit
            .range(from.to_be_bytes()..)
            .map(|g| {
                let (k, v) = g.into_inner()?;
                Ok((seq_of(&k), decode_audit(&v)?))
            })
            .collect()
    }

    /// Up to `limit` audit entries after seq `after`, oldest first: what the index sink applies next.
    pub fn audit_page(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        let Some(start) = after.checked_add(1) else { return Ok(Vec::new()) };
        self.audit
            .range(start.to_be_bytes()..)
            .take(limit)
            .map(|g| {
                let (k, v) = g.into_inner()?;
                Ok((seq_of(&k), decode_audit(&v)?))
            })
            .collect()
    }

    /// The next audit seq to hand out: as saved, else one past the newest entry (a store written
    /// before the counter keyed entries by change seq), else 1.
    fn next_audit_seq(&self) -> Result<u64, StoreError> {
        if let Some(v) = self.checkpoints.get(AUDIT_NEXT_KEY)? {
            return codec::decode(&v);
        }
        match self.audit.last_key_value() {
            Some(g) => Ok(seq_of(&g.key()?) + 1),
            None => Ok(1),
        }
    }

    /// The newest audit seq handed out (0 when none): the index is caught up when it has applied it.
    pub fn audit_head(&self) -> Result<u64, StoreError> {
        Ok(self.next_audit_seq()? - 1)
    }

    /// The audit entry numbered `seq`, if the store keeps it.
    pub fn audit_entry(&self, seq: u64) -> Result<Option<AuditEntry>, StoreError> {
        self.audit.get(seq.to_be_bytes())?.map(|v| decode_audit(&v)).transpose()
    }

    /// Makes every write so far durable (synced to disk): the index sink calls it before it
    /// publishes entries to PostgreSQL, so a crash can never take back an entry the index applied.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// The oldest audit seq still kept, if any (older ones were pruned).
    pub fn audit_first(&self) -> Result<Option<u64>, StoreError> {
        self.audit.first_key_value().map(|g| Ok(seq_of(&g.key()?))).transpose()
    }

    /// Numbers a batch's entries with the next audit seqs, in order, and saves the counter in the
    /// same batch (so seqs are contiguous: a batch that fails to commit hands out none).
    pub(super) fn stage_audit(
        &self,
        b: &mut fjall::OwnedWriteBatch,
        entries: Vec<AuditEntry>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut seq = self.next_audit_seq()?;
        for entry in entries {
            let entry = AuditEntry { at_unix_ms: now_ms, ..entry };
            b.insert(&self.audit, seq.to_be_bytes(), codec::encode(&entry)?);
            seq += 1;
        }
        b.insert(&self.checkpoints, AUDIT_NEXT_KEY, codec::encode(&seq)?);
        Ok(())
    }

    /// The last audit seq the index has applied, as the sink last reported it (`None`: no index).
    pub fn index_acked(&self) -> Result<Option<u64>, StoreError> {
        self.checkpoints.get(INDEX_ACKED_KEY)?.map(|v| codec::decode(&v)).transpose()
    }

    /// Records (synced) that the index has applied every audit entry up to `seq`: the audit log is
    /// pruned no further than that. Written by the index sink, beside the committer: one key only it
    /// writes.
    pub fn set_index_acked(&self, seq: u64) -> Result<(), StoreError> {
        self.checkpoints.insert(INDEX_ACKED_KEY, codec::encode(&seq)?)?;
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// Forgets the index's position (no `[index]` configured): the audit log is pruned by retention
    /// alone again; an index configured later rebuilds itself from the records.
    pub fn forget_index(&self) -> Result<(), StoreError> {
        if self.checkpoints.contains_key(INDEX_ACKED_KEY)? {
            self.checkpoints.remove(INDEX_ACKED_KEY)?;
        }
        Ok(())
    }

    /// This store's random identity, made at its first call: the index records it beside its cursor,
    /// and rebuilds itself when fed by another store (a state directory started afresh).
    pub fn store_id(&self) -> Result<String, StoreError> {
        if let Some(v) = self.checkpoints.get(STORE_ID_KEY)? {
            return Ok(String::from_utf8_lossy(&v).into_owned());
        }
        let id = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
        self.checkpoints.insert(STORE_ID_KEY, id.as_bytes())?;
        self.db.persist(PersistMode::SyncData)?;
        Ok(id)
    }

    /// Removes up to `limit` audit entries written before `cutoff_unix_ms`, oldest first, and returns
    /// how many it removed (`limit` means there may be more). Entries are keyed by seq, which grows with
    /// time, so the walk stops at the first entry still inside the retention. Entries written before
    /// entries had a time (time 0) go with the first dated entry after them that expired.
    pub fn prune_audit(&self, cutoff_unix_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let index_floor = self.index_acked()?;
        let mut undated = Vec::new();
        let mut expired = Vec::new();
        for g in self.audit.iter() {
            if expired.len() + undated.len() >= limit {
                break;
            }
            let (k, v) = g.into_inner()?;
            if index_floor.is_some_and(|acked| seq_of(&k) > acked) {
                break;
            }
            match decode_audit(&v)?.at_unix_ms {
                0 => undated.push(k),
                at if at < cutoff_unix_ms => {
                    expired.append(&mut undated);
                    expired.push(k);
                }
                _ => break,
            }
        }
        if expired.is_empty() {
            return Ok(0);
        }
        let mut b = self.db.batch();
        for k in &expired {
            b.remove(&self.audit, k.clone());
        }
        self.commit(b)?;
        Ok(expired.len())
    }

    /// Calls `each` with every audit entry (seq, entry), oldest first, that was committed at or after
    /// `since_unix_ms` and concerns `file` (any file when `None`). Streams: memory stays bounded
    /// whatever the log's size. `each` returns `false` to stop.
    pub fn for_each_audit(
        &self,
        since_unix_ms: u64,
        file: Option<&FileId>,
        mut each: impl FnMut(u64, &AuditEntry) -> bool,
    ) -> Result<(), StoreError> {
        for g in self.audit.iter() {
            let (k, v) = g.into_inner()?;
            let entry = decode_audit(&v)?;
            if entry.at_unix_ms < since_unix_ms || file.is_some_and(|f| *f != entry.file_id) {
                continue;
            }
            if !each(seq_of(&k), &entry) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangeSeq, DeadLetter, Refused, SkipReason};
    use crate::state::CommitBatch;

    fn outcome(seq: u64, id: &str, kind: OutcomeKind) -> Outcome {
        Outcome { seq: ChangeSeq(seq), file_id: FileId(id.into()), kind }
    }

    fn logged(store: &Store, since: u64, file: Option<&str>) -> Vec<(u64, AuditEntry)> {
        let mut out = Vec::new();
        let file = file.map(|f| FileId(f.into()));
        store
            .for_each_audit(since, file.as_ref(), |seq, e| {
                out.push((seq, e.clone()));
                true
            })
            .unwrap();
        out
    }

    #[test]
    fn refusals_and_failures_are_logged_with_their_reason_and_unchanged_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let refused = Refused { version: 7, name: "report.pdf".into() };
        let dead = DeadLetter {
            id: FileId("d".into()),
            name: "big.iso".into(),
            key: None,
            reason: "fileTooLarge".into(),
            last_error: "9 bytes is over max_file_size 1".into(),
            attempts: 1,
            at_unix: 0,
        };
        let outcomes = vec![
            outcome(1, "r", OutcomeKind::Skipped(SkipReason::DownloadDisabled(refused))),
            outcome(2, "u", OutcomeKind::Skipped(SkipReason::Unchanged)),
            outcome(3, "d", OutcomeKind::DeadLettered(dead)),
        ];
        store.apply(&CommitBatch { outcomes, next_seq: 4, ..Default::default() }).unwrap();
        let all = logged(&store, 0, None);
        let seen: Vec<_> = all.iter().map(|(seq, e)| (*seq, e.what.as_str(), e.detail.as_deref())).collect();
        assert_eq!(
            seen,
            [
                (1, "skipped", Some("download_disabled: report.pdf, version 7")),
                (2, "dead_lettered", Some("fileTooLarge: 9 bytes is over max_file_size 1")),
            ],
            "audit seqs count entries, in commit order"
        );
        assert_eq!(logged(&store, 0, Some("d")).len(), 1, "one file's entries");
        assert!(logged(&store, u64::MAX, None).is_empty(), "nothing since the far future");
    }

    #[test]
    fn audit_seqs_are_contiguous_across_batches_and_pruning_stops_at_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let dead = |id: &str| DeadLetter {
            id: FileId(id.into()),
            name: id.into(),
            key: None,
            reason: "r".into(),
            last_error: "e".into(),
            attempts: 1,
            at_unix: 0,
        };
        // Change seqs out of order and with gaps (the watermark commits as events finish).
        for (seq, id) in [(9, "a"), (4, "b"), (30, "c")] {
            let outcomes = vec![outcome(seq, id, OutcomeKind::DeadLettered(dead(id)))];
            store.apply(&CommitBatch { outcomes, next_seq: 31, ..Default::default() }).unwrap();
        }
        let seqs: Vec<u64> = store.audit_since(0).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(store.audit_head().unwrap(), 3);
        assert_eq!(
            store.audit_page(1, 10).unwrap().iter().map(|(s, e)| (*s, e.file_id.as_str())).collect::<Vec<_>>(),
            [(2, "b"), (3, "c")]
        );
        store.set_index_acked(1).unwrap();
        assert_eq!(store.prune_audit(u64::MAX, 100).unwrap(), 1, "only what the index applied goes");
        assert_eq!(store.audit_first().unwrap(), Some(2));
        store.forget_index().unwrap();
        assert_eq!(store.prune_audit(u64::MAX, 100).unwrap(), 2, "without an index, retention alone");
        assert_eq!(store.audit_head().unwrap(), 3, "the counter survives pruning");
    }

    #[test]
    fn entries_written_before_they_had_a_detail_still_decode() {
        #[derive(Serialize)]
        struct Dated {
            file_id: FileId,
            what: String,
            key: Option<ObjectKey>,
            at_unix_ms: u64,
        }
        let key = Some(ObjectKey("p/a.txt".into()));
        let old = Dated { file_id: FileId("a".into()), what: "committed".into(), key: key.clone(), at_unix_ms: 42 };
        let entry = decode_audit(&codec::encode(&old).unwrap()).unwrap();
        assert_eq!((entry.at_unix_ms, entry.key, entry.detail), (42, key, None));
    }
}
