//! Content dedup: which mirrored files hold which content (`<md5>\0<file id>`, empty value), so a new
//! file whose md5 is already mirrored under another key is a server-side copy of that object, not a
//! download. One entry per file record with an md5, kept exact in the batch that writes or removes
//! the record, so the index stays as large as the mirror; each object is its own copy, so removing
//! one file's entry (and object) never affects another holding the same content.

use super::{InBatch, Store, StoreError, codec};
use crate::model::{FileId, FileRecord};

/// Marks a store whose content index was built from its records.
const CONTENT_INDEXED: &[u8] = b"content_indexed";

fn content_key(md5: &str, id: &FileId) -> Vec<u8> {
    [md5.to_ascii_lowercase().as_bytes(), b"\0", id.as_str().as_bytes()].concat()
}

impl Store {
    /// A committed file other than `except` that holds content `md5`, with its record (the first in
    /// id order whose record still says so).
    pub fn content_holder(&self, md5: &str, except: &FileId) -> Result<Option<FileRecord>, StoreError> {
        let prefix = [md5.to_ascii_lowercase().as_bytes(), b"\0"].concat();
        for g in self.content_refs.prefix(&prefix) {
            let key = g.key()?;
            let id = FileId(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
            if &id == except {
                continue;
            }
            if let Some(rec) = self.file(&id)?
                && rec.md5.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(md5))
            {
                return Ok(Some(rec));
            }
        }
        Ok(None)
    }

    /// Keeps the content index in step with a file record written (`md5` = its md5) or removed
    /// (`None`), as the batch leaves it.
    pub(super) fn stage_content(
        &self,
        b: &mut fjall::OwnedWriteBatch,
        id: &FileId,
        md5: Option<&str>,
        in_batch: &mut InBatch,
    ) -> Result<(), StoreError> {
        let before = match in_batch.md5s.get(id) {
            Some(m) => m.clone(),
            None => self.file(id)?.and_then(|r| r.md5),
        };
        if let Some(old) = before.as_deref().filter(|old| Some(*old) != md5) {
            b.remove(&self.content_refs, content_key(old, id));
        }
        if let Some(new) = md5 {
            b.insert(&self.content_refs, content_key(new, id), []);
        }
        in_batch.md5s.insert(id.clone(), md5.map(str::to_owned));
        Ok(())
    }

    /// A store written before the content index gets it, once, from its file records.
    pub(super) fn build_content_index_once(&self) -> Result<(), StoreError> {
        if self.checkpoints.contains_key(CONTENT_INDEXED)? {
            return Ok(());
        }
        let mut b = self.db.batch();
        for g in self.files.iter() {
            let rec: FileRecord = codec::decode(&g.value()?)?;
            if let Some(md5) = &rec.md5 {
                b.insert(&self.content_refs, content_key(md5, &rec.id), []);
            }
        }
        b.insert(&self.checkpoints, CONTENT_INDEXED, []);
        b.commit()?;
        Ok(())
    }
}
