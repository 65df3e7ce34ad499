//! Content dedup: which mirrored files hold which content (`<md5>\0<file id>`, empty value), so a new
//! file whose md5 is already mirrored under another key is a server-side copy of that object, not a
//! download. One entry per file record with an md5, kept exact in the batch that writes or removes
//! the record, so the index stays as large as the mirror; each object is its own copy, so removing
//! one file's entry (and object) never affects another holding the same content.

use super::{InBatch, Store, StoreError};
use crate::model::{FileId, FileRecord};

/// Marks a store whose content index was built from its records.
const CONTENT_INDEXED: &[u8] = b"content_indexed";

pub(super) fn content_key(md5: &str, id: &FileId) -> Vec<u8> {
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
        self.index_records_once(CONTENT_INDEXED, |b, rec| {
            if let Some(md5) = &rec.md5 {
                b.insert(&self.content_refs, content_key(md5, &rec.id), []);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangeSeq, ObjectKey, Outcome, OutcomeKind};
    use crate::state::CommitBatch;

    fn committed(seq: u64, id: &str, md5: &str) -> Outcome {
        let rec = FileRecord {
            id: FileId(id.into()),
            name: id.into(),
            parent: None,
            mime_type: "application/pdf".into(),
            version: seq,
            md5: Some(md5.into()),
            sha256: None,
            size: 3,
            key: ObjectKey(format!("p/{id}")),
            modified_time: None,
        };
        Outcome { seq: ChangeSeq(seq), file_id: FileId(id.into()), kind: OutcomeKind::Committed(rec) }
    }

    fn apply(store: &Store, outcomes: Vec<Outcome>) {
        store.apply(&CommitBatch { outcomes, next_seq: 100, ..Default::default() }).unwrap();
    }

    fn holder(store: &Store, md5: &str, except: &str) -> Option<String> {
        store.content_holder(md5, &FileId(except.into())).unwrap().map(|r| r.id.0)
    }

    #[test]
    fn the_index_follows_every_record_written_twice_in_a_batch_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        apply(&store, vec![committed(1, "a", "X"), committed(2, "b", "X")]);
        assert_eq!(holder(&store, "x", "a").as_deref(), Some("b"), "md5s compare case-insensitively");
        assert_eq!(holder(&store, "X", "b").as_deref(), Some("a"));
        // b changes twice in one batch: only its last content is indexed.
        apply(&store, vec![committed(3, "b", "Y"), committed(4, "b", "Z")]);
        assert_eq!(holder(&store, "X", "a"), None);
        assert_eq!(holder(&store, "Y", "-"), None);
        assert_eq!(holder(&store, "Z", "-").as_deref(), Some("b"));
        let removed =
            Outcome { seq: ChangeSeq(5), file_id: FileId("a".into()), kind: OutcomeKind::Removed { key: None } };
        apply(&store, vec![removed]);
        assert_eq!(holder(&store, "X", "-"), None, "a removed file holds nothing");
        assert_eq!(store.content_refs.iter().count(), 1, "one entry per file with an md5: bounded");
    }
}
