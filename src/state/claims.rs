//! Key claims: which file holds each collision class of key (ARCHITECTURE §7), kept in fjall rather
//! than in the planner's memory, so that planning a drive of any size needs memory for the work in
//! flight only.
//!
//! Claims are an index of the committed records: [`Store::apply`] moves a file's claim in the same
//! batch that writes or removes its record. A key therefore passes to a new owner only when the side
//! effect that frees it (the old object's move, delete or trash) is committed, and a crash can never
//! leave a claim that no committed record explains. What the planner has handed out and not yet
//! committed is held in the ledger (`Ledger::take_keys`), not here.

use std::collections::HashMap;

use super::{Store, StoreError};
use crate::mirror::keys::collision_class;
use crate::model::{FileId, FileRecord, FolderRecord, ObjectKey};

/// Present once the claims are exactly the committed records' keys. Stores written before claims
/// moved with records (the planner wrote them as it planned) lack it and get their claims rebuilt.
const COMMITTED_MARK: &[u8] = b"claims_committed_v2";
/// Marks of the earlier scheme, dropped by the rebuild.
const RETIRED_MARKS: [&[u8]; 2] = [b"claims_built_v1", b"run_in_progress"];

/// The claims as one batch leaves them, before it is written: a batch may move one file's claim twice,
/// or free a class and give it to another file.
#[derive(Default)]
pub(super) struct ClaimsInBatch {
    of: HashMap<FileId, Option<String>>,
    holder: HashMap<String, Option<FileId>>,
}

impl Store {
    /// The file holding a collision class, if any.
    pub fn claim_holder(&self, class: &str) -> Result<Option<FileId>, StoreError> {
        Ok(self.claims.get(class)?.map(|v| FileId(String::from_utf8_lossy(&v).into_owned())))
    }

    /// Whether any committed record holds a class under `class` + `/` (its key is inside that
    /// folder of keys): one seek, however many there are.
    pub fn claimed_under(&self, class: &str) -> Result<bool, StoreError> {
        match self.claims.prefix(format!("{class}/")).next() {
            Some(g) => g.key().map(|_| true).map_err(StoreError::from),
            None => Ok(false),
        }
    }

    /// The collision class a file holds, if any.
    pub fn claim_of(&self, id: &FileId) -> Result<Option<String>, StoreError> {
        Ok(self.claimed.get(id.as_str())?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn holder_in_batch(&self, class: &str, view: &ClaimsInBatch) -> Result<Option<FileId>, StoreError> {
        match view.holder.get(class) {
            Some(h) => Ok(h.clone()),
            None => self.claim_holder(class),
        }
    }

    fn claim_in_batch(&self, id: &FileId, view: &ClaimsInBatch) -> Result<Option<String>, StoreError> {
        match view.of.get(id) {
            Some(c) => Ok(c.clone()),
            None => self.claim_of(id),
        }
    }

    /// Stages `id` holding the class of `key` (its record is written with that key in this batch),
    /// freeing the class it held before.
    pub(super) fn stage_claim(
        &self,
        b: &mut fjall::OwnedWriteBatch,
        id: &FileId,
        key: &ObjectKey,
        view: &mut ClaimsInBatch,
    ) -> Result<(), StoreError> {
        let class = collision_class(key.as_str());
        let previous = self.claim_in_batch(id, view)?;
        if previous.as_deref() == Some(class.as_str()) && self.holder_in_batch(&class, view)?.as_ref() == Some(id) {
            return Ok(());
        }
        self.stage_release(b, id, view)?;
        b.insert(&self.claims, class.as_str(), id.as_str());
        b.insert(&self.claimed, id.as_str(), class.as_str());
        view.holder.insert(class.clone(), Some(id.clone()));
        view.of.insert(id.clone(), Some(class));
        Ok(())
    }

    /// Stages `id` holding no class (its record is removed in this batch). A class another file
    /// holds now is left to it.
    pub(super) fn stage_release(
        &self,
        b: &mut fjall::OwnedWriteBatch,
        id: &FileId,
        view: &mut ClaimsInBatch,
    ) -> Result<(), StoreError> {
        let Some(class) = self.claim_in_batch(id, view)? else { return Ok(()) };
        if self.holder_in_batch(&class, view)?.as_ref() == Some(id) {
            b.remove(&self.claims, class.as_str());
            view.holder.insert(class, None);
        }
        b.remove(&self.claimed, id.as_str());
        view.of.insert(id.clone(), None);
        Ok(())
    }

    /// A store whose claims are not the committed records' keys (written before claims moved with
    /// records) gets them rebuilt, once, from its folder and file records.
    pub(super) fn rebuild_claims_once(&self) -> Result<(), StoreError> {
        if self.checkpoints.contains_key(COMMITTED_MARK)? {
            return Ok(());
        }
        for ks in [&self.claims, &self.claimed] {
            for g in ks.iter() {
                ks.remove(g.key()?)?;
            }
        }
        // A chunk of records per batch (memory holds one chunk's view); the mark comes with the last,
        // so a crash before it starts the rebuild over.
        let mut b = self.db.batch();
        let mut view = ClaimsInBatch::default();
        let mut staged = 0usize;
        let folders = self.folders.iter().map(|g| -> Result<(FileId, ObjectKey), StoreError> {
            let f: FolderRecord = super::codec::decode(&g.value()?)?;
            Ok((f.id, f.key))
        });
        let files = self.files.iter().map(|g| -> Result<(FileId, ObjectKey), StoreError> {
            let rec: FileRecord = super::codec::decode(&g.value()?)?;
            Ok((rec.id, rec.key))
        });
        for item in folders.chain(files) {
            let (id, key) = item?;
            self.stage_claim(&mut b, &id, &key, &mut view)?;
            staged += 1;
            if staged.is_multiple_of(super::BUILD_CHUNK) {
                self.commit(std::mem::replace(&mut b, self.db.batch()))?;
                view = ClaimsInBatch::default();
            }
        }
        for mark in RETIRED_MARKS {
            b.remove(&self.checkpoints, mark);
        }
        b.insert(&self.checkpoints, COMMITTED_MARK, [1u8]);
        self.commit(b)?;
        Ok(())
    }

    /// Gives `id` the class of `key` directly (tests that need a claim without a record).
    #[cfg(test)]
    pub fn set_claim(&self, id: &FileId, key: &str) -> Result<(), StoreError> {
        let mut b = self.db.batch();
        self.stage_claim(&mut b, id, &ObjectKey(key.to_string()), &mut ClaimsInBatch::default())?;
        self.commit(b)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangeSeq, Outcome, OutcomeKind};
    use crate::state::CommitBatch;

    fn record(id: &str, key: &str) -> Outcome {
        let rec = FileRecord {
            id: FileId(id.into()),
            name: key.rsplit('/').next().unwrap_or(key).into(),
            parent: Some(FileId("p".into())),
            mime_type: "text/plain".into(),
            version: 1,
            md5: Some("m".into()),
            sha256: None,
            size: 1,
            key: ObjectKey(key.into()),
            modified_time: None,
        };
        Outcome { seq: ChangeSeq(0), file_id: FileId(id.into()), kind: OutcomeKind::Committed(rec) }
    }

    fn removed(id: &str) -> Outcome {
        Outcome { seq: ChangeSeq(0), file_id: FileId(id.into()), kind: OutcomeKind::Removed { key: None } }
    }

    fn apply(s: &Store, outcomes: Vec<Outcome>) {
        s.apply(&CommitBatch { outcomes, ..Default::default() }).unwrap();
    }

    fn holder(s: &Store, key: &str) -> Option<String> {
        s.claim_holder(&collision_class(key)).unwrap().map(|f| f.0)
    }

    #[test]
    fn claims_move_with_committed_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        apply(&s, vec![record("a", "p/x.txt")]);
        assert_eq!(holder(&s, "p/x.txt").as_deref(), Some("a"));
        // A rename committed: the old class is free in the same batch that records the new key.
        apply(&s, vec![record("a", "p/y.txt")]);
        assert_eq!(holder(&s, "p/x.txt"), None, "a's old class is free again");
        assert_eq!(holder(&s, "P/Y.TXT").as_deref(), Some("a"), "a case twin is the same class");
        // One batch: b takes x.txt, then a moves back onto it (never planned so, but a batch in any
        // order must leave one holder per class and no claim without its record).
        apply(&s, vec![record("b", "p/x.txt"), removed("a")]);
        assert_eq!(holder(&s, "p/x.txt").as_deref(), Some("b"));
        assert_eq!(holder(&s, "p/y.txt"), None);
        assert_eq!(s.claim_of(&FileId("a".into())).unwrap(), None);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(holder(&s, "p/x.txt").as_deref(), Some("b"), "claims survive a restart");
    }

    #[test]
    fn a_removal_never_frees_a_class_another_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        apply(&s, vec![record("a", "p/x.txt")]);
        // In one batch: a moves away and b takes x.txt, then a is removed.
        apply(&s, vec![record("a", "p/z.txt"), record("b", "p/x.txt"), removed("a")]);
        assert_eq!(holder(&s, "p/x.txt").as_deref(), Some("b"));
        assert_eq!(holder(&s, "p/z.txt"), None);
    }

    #[test]
    fn claims_written_by_the_planner_are_rebuilt_from_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        apply(&s, vec![record("a", "p/x.txt")]);
        // What the earlier scheme could leave after a crash: a claim handed out at plan time whose
        // action never committed, and the mark of that scheme in place of this one's.
        s.set_claim(&FileId("ghost".into()), "p/planned.txt").unwrap();
        s.checkpoints.remove(COMMITTED_MARK).unwrap();
        s.checkpoints.insert(RETIRED_MARKS[0], [1u8]).unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(holder(&s, "p/planned.txt"), None);
        assert_eq!(holder(&s, "p/x.txt").as_deref(), Some("a"));
        assert!(!s.checkpoints.contains_key(RETIRED_MARKS[0]).unwrap());
    }
}
