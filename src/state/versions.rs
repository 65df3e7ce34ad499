//! Earlier contents kept under `<prefix>/.versions/` (`[destination] versions`): one record per kept
//! object, `<file id>\0<version name>` → [`KeptVersion`], written by the uploader once the copy exists
//! (like upload records: a fact about the destination that must outlive a crash) and read by the
//! index, `versions list` and `versions restore`.

use super::{Store, StoreError, codec};
use crate::model::{FileId, ObjectKey};
use serde::{Deserialize, Serialize};

/// One earlier content of a file, kept as its own object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptVersion {
    /// `<modifiedTime>-<version>`: the name under the key's versions folder.
    pub name: String,
    /// The object holding the content (`<prefix>/.versions/<key>/<name>`).
    pub object: ObjectKey,
    /// The key the content was at.
    pub key: ObjectKey,
    /// Drive version of that content.
    pub version: u64,
    /// Drive modifiedTime of that content.
    pub modified_time: Option<String>,
    /// MD5 of the bytes.
    pub md5: Option<String>,
    /// Size of the bytes.
    pub size: u64,
    /// When it was kept (Unix ms).
    pub kept_at_ms: u64,
}

fn version_record_key(file: &FileId, name: &str) -> Vec<u8> {
    let mut k = file.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

impl Store {
    /// The versions kept of `file`, oldest kept first (a restore makes its version the newest).
    pub fn kept_versions(&self, file: &FileId) -> Result<Vec<KeptVersion>, StoreError> {
        let mut out: Vec<KeptVersion> = self
            .versions
            .prefix(version_record_key(file, ""))
            .map(|g| codec::decode(&g.value()?))
            .collect::<Result<_, _>>()?;
        out.sort_by(|a, b| (a.kept_at_ms, &a.name).cmp(&(b.kept_at_ms, &b.name)));
        Ok(out)
    }

    /// Records a kept version (synced: the object exists from now on).
    pub fn record_kept_version(&self, file: &FileId, v: &KeptVersion) -> Result<(), StoreError> {
        self.versions.insert(version_record_key(file, &v.name), codec::encode(v)?)?;
        self.db.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }

    /// Forgets a kept version, synced: its object is deleted next, and a crash in between must not
    /// leave a record naming a missing object (unsynced, the removal could be lost with the process).
    pub fn forget_kept_version(&self, file: &FileId, name: &str) -> Result<(), StoreError> {
        self.versions.remove(version_record_key(file, name))?;
        self.db.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }

    /// Records a restore done outside a run (`mirrorflow versions restore`): the file's record, if it
    /// has one, takes the restored content's md5 and size, and a `restored` audit entry says which
    /// version went back to which key — one batch.
    pub fn record_restore(&self, file: &FileId, v: &KeptVersion, key: &ObjectKey) -> Result<(), StoreError> {
        let mut b = self.db.batch().durability(Some(fjall::PersistMode::SyncData));
        if let Some(mut rec) = self.file(file)? {
            // The content index follows the record (content dedup copies from what it names).
            self.stage_content(&mut b, file, v.md5.as_deref(), &mut super::InBatch::default())?;
            rec.md5 = v.md5.clone();
            rec.size = v.size;
            rec.sha256 = None;
            b.insert(&self.files, file.as_str(), codec::encode(&rec)?);
        }
        let mut entry = super::AuditEntry::record_change(file, "restored", Some(key));
        entry.detail = Some(format!("version {} (Drive version {})", v.name, v.version));
        self.stage_audit(&mut b, vec![entry], super::unix_ms())?;
        self.commit(b)?;
        Ok(())
    }

    /// Records a restore to another key than the file's (`versions restore --as`): a `restored`
    /// audit entry only, since the file's record and object are untouched.
    pub fn record_restore_elsewhere(&self, file: &FileId, v: &KeptVersion, key: &ObjectKey) -> Result<(), StoreError> {
        let mut b = self.db.batch().durability(Some(fjall::PersistMode::SyncData));
        let mut entry = super::AuditEntry::record_change(file, "restored", Some(key));
        entry.detail = Some(format!("version {} (Drive version {}) to another key", v.name, v.version));
        self.stage_audit(&mut b, vec![entry], super::unix_ms())?;
        self.commit(b)?;
        Ok(())
    }

    /// Up to `limit` distinct ids of files with kept versions after `after`, in id order.
    pub(super) fn version_ids_page(&self, after: Option<&FileId>, limit: usize) -> Result<Vec<FileId>, StoreError> {
        use std::ops::Bound;
        let start = match after {
            // Past every `<after>\0…` entry: `<after>\x01` sorts after all of them.
            Some(id) => Bound::Included([id.as_str().as_bytes(), &[1]].concat()),
            None => Bound::Unbounded,
        };
        let mut ids: Vec<FileId> = Vec::new();
        for g in self.versions.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let key = g.key()?;
            let id = key.split(|b| *b == 0).next().unwrap_or_default();
            let id = FileId(String::from_utf8_lossy(id).into_owned());
            if ids.last() != Some(&id) {
                if ids.len() == limit {
                    break;
                }
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(name: &str) -> KeptVersion {
        KeptVersion {
            name: name.into(),
            object: ObjectKey(format!(".versions/k/{name}")),
            key: ObjectKey("k".into()),
            version: 1,
            modified_time: None,
            md5: None,
            size: 0,
            kept_at_ms: 0,
        }
    }

    #[test]
    fn ids_with_kept_versions_are_paged_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for id in ["a", "ab", "b", "c"] {
            for name in ["20260101T000000.000Z-1", "20260102T000000.000Z-2"] {
                store.record_kept_version(&FileId(id.into()), &kept(name)).unwrap();
            }
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.version_ids_page(after.as_ref(), 2).unwrap();
            let Some(last) = page.last().cloned() else { break };
            assert!(page.len() <= 2);
            seen.extend(page.into_iter().map(|id| id.0));
            after = Some(last);
        }
        assert_eq!(seen, ["a", "ab", "b", "c"]);
        assert_eq!(store.kept_versions(&FileId("a".into())).unwrap().len(), 2, "a's versions are not ab's");
    }
}
