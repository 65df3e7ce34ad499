//! The audit log: what was done to which key, when, and why a file was skipped or failed. One entry
//! per outcome that changed something (and per refusal: a skip with a reason), keyed by seq, written
//! by the committer in the outcome's batch, kept for `[state] audit_retention`; `mirrorflow log` reads it.

use super::{Store, StoreError, codec};
use crate::model::{ChangeSeq, FileId, ObjectKey, Outcome, OutcomeKind};
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

impl Store {
    /// Audit entries from `from` on, oldest first.
    pub fn audit_since(&self, from: ChangeSeq) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        self.audit
            .range(from.0.to_be_bytes()..)
            .map(|g| {
                let (k, v) = g.into_inner()?;
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&k[..8.min(k.len())]);
                Ok((u64::from_be_bytes(seq), decode_audit(&v)?))
            })
            .collect()
    }

    /// Removes up to `limit` audit entries written before `cutoff_unix_ms`, oldest first, and returns
    /// how many it removed (`limit` means there may be more). Entries are keyed by seq, which grows with
    /// time, so the walk stops at the first entry still inside the retention. Entries written before
    /// entries had a time (time 0) go with the first dated entry after them that expired.
    pub fn prune_audit(&self, cutoff_unix_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let mut undated = Vec::new();
        let mut expired = Vec::new();
        for g in self.audit.iter() {
            if expired.len() + undated.len() >= limit {
                break;
            }
            let (k, v) = g.into_inner()?;
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
        b.commit()?;
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
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&k[..8.min(k.len())]);
            if !each(u64::from_be_bytes(seq), &entry) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeadLetter, Refused, SkipReason};
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
                (3, "dead_lettered", Some("fileTooLarge: 9 bytes is over max_file_size 1")),
            ]
        );
        assert_eq!(logged(&store, 0, Some("d")).len(), 1, "one file's entries");
        assert!(logged(&store, u64::MAX, None).is_empty(), "nothing since the far future");
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
