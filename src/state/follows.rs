//! `[source] shortcuts = "follow"`: which target each mirrored shortcut follows, both ways, so an
//! event about a target refreshes the shortcuts that mirror its bytes. Written by the committer alone,
//! in the batch of the shortcut's outcome (or an earlier one).

use super::{Store, StoreError};
use crate::model::FileId;
use std::collections::HashMap;

/// `t\0<target>\0<shortcut>`: a shortcut following a target (empty value).
fn follower_key(target: &FileId, shortcut: &FileId) -> Vec<u8> {
    [b"t\0", target.as_str().as_bytes(), b"\0", shortcut.as_str().as_bytes()].concat()
}

/// `s\0<shortcut>` → target id: what a shortcut follows, so a new target replaces the old entry.
fn target_key(shortcut: &FileId) -> Vec<u8> {
    [b"s\0", shortcut.as_str().as_bytes()].concat()
}

impl Store {
    /// The shortcuts that follow `target`, in id order.
    pub fn followers(&self, target: &FileId) -> Result<Vec<FileId>, StoreError> {
        let prefix = [b"t\0", target.as_str().as_bytes(), b"\0"].concat();
        self.follows
            .prefix(&prefix)
            .map(|g| {
                let key = g.key()?;
                Ok(FileId(String::from_utf8_lossy(&key[prefix.len()..]).into_owned()))
            })
            .collect()
    }

    /// The target a shortcut follows, if any.
    pub fn followed_target(&self, shortcut: &FileId) -> Result<Option<FileId>, StoreError> {
        Ok(self.follows.get(target_key(shortcut))?.map(|v| FileId(String::from_utf8_lossy(&v).into_owned())))
    }

    /// Stages `follows` (shortcut → target it follows now, `None`: none) in order; a later entry for
    /// the same shortcut in the batch wins.
    pub(super) fn stage_follows(
        &self,
        b: &mut fjall::OwnedWriteBatch,
        follows: &[(FileId, Option<FileId>)],
    ) -> Result<(), StoreError> {
        let mut in_batch: HashMap<&FileId, Option<FileId>> = HashMap::new();
        for (shortcut, target) in follows {
            let old = match in_batch.get(shortcut) {
                Some(t) => t.clone(),
                None => self.followed_target(shortcut)?,
            };
            if old == *target {
                continue;
            }
            if let Some(old) = &old {
                b.remove(&self.follows, follower_key(old, shortcut));
            }
            match target {
                Some(t) => {
                    b.insert(&self.follows, follower_key(t, shortcut), []);
                    b.insert(&self.follows, target_key(shortcut), t.as_str());
                }
                None => b.remove(&self.follows, target_key(shortcut)),
            }
            in_batch.insert(shortcut, target.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> FileId {
        FileId(s.into())
    }

    fn stage(store: &Store, follows: &[(FileId, Option<FileId>)]) {
        let mut b = store.db.batch();
        store.stage_follows(&mut b, follows).unwrap();
        b.commit().unwrap();
    }

    #[test]
    fn a_shortcut_follows_one_target_at_a_time_and_nothing_once_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        stage(&store, &[(id("s1"), Some(id("t"))), (id("s2"), Some(id("t"))), (id("s3"), Some(id("tx")))]);
        assert_eq!(store.followers(&id("t")).unwrap(), [id("s1"), id("s2")]);
        assert_eq!(store.followers(&id("tx")).unwrap(), [id("s3")], "an id that extends another is its own");
        // Retargeted, twice in one batch: only the last target holds it.
        stage(&store, &[(id("s1"), Some(id("u"))), (id("s1"), Some(id("v")))]);
        assert_eq!(store.followers(&id("t")).unwrap(), [id("s2")]);
        assert!(store.followers(&id("u")).unwrap().is_empty());
        assert_eq!(store.followers(&id("v")).unwrap(), [id("s1")]);
        assert_eq!(store.followed_target(&id("s1")).unwrap(), Some(id("v")));
        stage(&store, &[(id("s2"), None), (id("nobody"), None)]);
        assert!(store.followers(&id("t")).unwrap().is_empty());
        assert_eq!(store.followed_target(&id("s2")).unwrap(), None);
    }
}
