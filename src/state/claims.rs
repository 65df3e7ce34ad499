//! Key claims: which file holds each collision class of key (ARCHITECTURE §7), kept in fjall rather
//! than in the planner's memory, so that planning a drive of any size needs memory for the work in
//! flight only. The planner writes claims as it plans (before the outcome commits): a claim must hold
//! from the moment a key is handed out, and a claim left by an action a crash lost is the same claim
//! that action gets when it is planned again.

use super::{Store, StoreError};
use crate::model::FileId;

const BUILT_MARK: &[u8] = b"claims_built_v1";
/// Present while a run is in progress (absent after a clean end).
const RUNNING_MARK: &[u8] = b"run_in_progress";

impl Store {
    /// The file holding a collision class, if any.
    pub fn claim_holder(&self, class: &str) -> Result<Option<FileId>, StoreError> {
        Ok(self.claims.get(class)?.map(|v| FileId(String::from_utf8_lossy(&v).into_owned())))
    }

    /// The collision class a file holds, if any.
    pub fn claim_of(&self, id: &FileId) -> Result<Option<String>, StoreError> {
        Ok(self.claimed.get(id.as_str())?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Gives `class` to `id`, releasing the class `id` held before (if it still held it).
    pub fn set_claim(&self, id: &FileId, class: &str) -> Result<(), StoreError> {
        self.move_claim(id, self.claim_of(id)?, class)
    }

    /// `set_claim` for a caller that already read the class `id` held (`previous`).
    pub fn move_claim(&self, id: &FileId, previous: Option<String>, class: &str) -> Result<(), StoreError> {
        let mut b = self.db.batch();
        if let Some(old) = previous
            && old != class
            && self.claim_holder(&old)?.as_ref() == Some(id)
        {
            b.remove(&self.claims, old.as_str());
        }
        b.insert(&self.claims, class, id.as_str());
        b.insert(&self.claimed, id.as_str(), class);
        b.commit()?;
        Ok(())
    }

    /// Drops whatever class `id` holds.
    pub fn release_claim(&self, id: &FileId) -> Result<(), StoreError> {
        let Some(class) = self.claim_of(id)? else { return Ok(()) };
        let mut b = self.db.batch();
        if self.claim_holder(&class)?.as_ref() == Some(id) {
            b.remove(&self.claims, class.as_str());
        }
        b.remove(&self.claimed, id.as_str());
        b.commit()?;
        Ok(())
    }

    /// Whether the claims were built (stores written before claims lived here have records only).
    pub fn claims_built(&self) -> Result<bool, StoreError> {
        Ok(self.checkpoints.contains_key(BUILT_MARK)?)
    }

    /// Marks the start of a run; returns true when the previous run did not end cleanly. Claims pass
    /// to a new owner when the planner plans it, before the old owner's move or delete is committed;
    /// after a crash, replayed events may come back in another order, so the claims of the crashed run
    /// are not trusted: they are rebuilt from the committed records (see [`Store::forget_claims`]).
    pub fn begin_run(&self) -> Result<bool, StoreError> {
        let dirty = self.checkpoints.contains_key(RUNNING_MARK)?;
        self.checkpoints.insert(RUNNING_MARK, [1u8])?;
        self.db.persist(fjall::PersistMode::SyncData)?;
        Ok(dirty)
    }

    /// Marks a clean end of a run (every claim matches a committed record or a committed release).
    pub fn end_run(&self) -> Result<(), StoreError> {
        self.checkpoints.remove(RUNNING_MARK)?;
        self.db.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }

    /// Drops every claim, so the planner rebuilds them from the committed records.
    pub fn forget_claims(&self) -> Result<(), StoreError> {
        for ks in [&self.claims, &self.claimed] {
            for g in ks.iter() {
                ks.remove(g.key()?)?;
            }
        }
        self.checkpoints.remove(BUILT_MARK)?;
        self.db.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }

    /// Records that the claims reflect every recorded key.
    pub fn mark_claims_built(&self) -> Result<(), StoreError> {
        self.checkpoints.insert(BUILT_MARK, [1u8])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_claim_releases_the_old_one_and_release_leaves_others_alone() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (a, b) = (FileId("a".into()), FileId("b".into()));
        s.set_claim(&a, "p/x.txt").unwrap();
        assert_eq!(s.claim_holder("p/x.txt").unwrap(), Some(a.clone()));
        s.set_claim(&a, "p/y.txt").unwrap();
        assert_eq!(s.claim_holder("p/x.txt").unwrap(), None, "a's old class is free again");
        s.set_claim(&b, "p/x.txt").unwrap();
        // `b` took a class `a` once held: releasing `a` must not free it.
        s.release_claim(&a).unwrap();
        assert_eq!(s.claim_holder("p/y.txt").unwrap(), None);
        assert_eq!(s.claim_holder("p/x.txt").unwrap(), Some(b.clone()));
        assert_eq!(s.claim_of(&a).unwrap(), None);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.claim_holder("p/x.txt").unwrap(), Some(b), "claims survive a restart");
    }
}
