//! The reconcile's working set, on disk: a throwaway fjall database (deleted when dropped), so that
//! comparing a drive of a million files costs a memtable, not two maps of every key.

use super::VerifyError;
use crate::model::FileId;
use crate::state::codec;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// What one key of the mirror must hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// The Drive file.
    pub file_id: FileId,
    /// Its Drive name (for the skipped list).
    pub name: String,
    /// Size the object must have, when known (Drive's for binary files, the recorded export's for
    /// Google files).
    pub size: Option<u64>,
    /// md5 the object must have, when known.
    pub md5: Option<String>,
    /// Why the object cannot match even if present (an export older than the Google file).
    pub stale: Option<String>,
    /// A permanent reason Drive will not hand the file over: a missing object is then skipped, not missing.
    pub skip_if_missing: Option<String>,
    /// The file's dead-letter reason, reported with a missing object.
    pub dead_letter: Option<String>,
}

/// A difference found for a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// The Drive file (none for an extra object).
    pub file_id: Option<FileId>,
    /// Why, for people.
    pub reason: Option<String>,
    /// Bytes Drive has for the file, when known (what fetching it again costs).
    #[serde(default)]
    pub size: Option<u64>,
}

/// A file listed as skipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedFile {
    /// Its Drive name.
    pub name: String,
    /// Why Drive will not hand it over, or why the mirror does not hold it.
    pub reason: String,
}

/// The throwaway database and its keyspaces.
pub struct Spill {
    /// Relative key → [`Expected`]; what is left after the object pass is missing.
    expected: Keyspace,
    /// Collision classes taken in this pass by items with no committed claim.
    classes: Keyspace,
    /// Relative key → [`Difference`].
    mismatched: Keyspace,
    /// Relative key → nothing.
    extra: Keyspace,
    /// File id → [`SkippedFile`].
    skipped: Keyspace,
    /// Relative key → [`Difference`].
    missing: Keyspace,
    /// Relative key → nothing: objects outside the mirror's namespaces (`keys::MIRROR_NAMESPACES`).
    unknown: Keyspace,
    /// Relative key → the link's target: symbolic links inside a local folder.
    links: Keyspace,
    /// The database, then its folder (deleted when dropped): fields drop in order.
    _db: Database,
    _dir: tempfile::TempDir,
}

/// Per keyspace: eight of them, so at most 64 MiB of memtables.
const MEMTABLE: u64 = 8 << 20;
/// The journal is flushed into tables past this (fjall's minimum).
const JOURNAL: u64 = 64 << 20;
/// Block cache.
const CACHE: u64 = 16 << 20;

impl Spill {
    /// A fresh database in a new temporary folder.
    pub fn new() -> Result<Spill, VerifyError> {
        let dir = tempfile::Builder::new().prefix("mirrorflow-verify-").tempdir().map_err(VerifyError::spill)?;
        let db = Database::builder(dir.path())
            .max_journaling_size(JOURNAL)
            .cache_size(CACHE)
            .open()
            .map_err(VerifyError::spill)?;
        let ks = |name: &str| {
            db.keyspace(name, || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE))
                .map_err(VerifyError::spill)
        };
        Ok(Spill {
            expected: ks("expected")?,
            classes: ks("classes")?,
            mismatched: ks("mismatched")?,
            extra: ks("extra")?,
            skipped: ks("skipped")?,
            missing: ks("missing")?,
            unknown: ks("unknown")?,
            links: ks("links")?,
            _db: db,
            _dir: dir,
        })
    }

    /// Records what `key` must hold. A second file mapped to the same key is a bug in the key rules;
    /// it is reported as a mismatch rather than hidden.
    pub fn expect(&self, key: &str, e: &Expected) -> Result<(), VerifyError> {
        if let Some(other) = self.take_expected(key)? {
            let reason = format!("two Drive files map to this key: {} and {}", other.file_id, e.file_id);
            self.mismatch(key, e, reason)?;
        }
        put(&self.expected, key, e)
    }

    /// Removes and returns what `key` must hold.
    pub fn take_expected(&self, key: &str) -> Result<Option<Expected>, VerifyError> {
        let found = get(&self.expected, key)?;
        if found.is_some() {
            self.expected.remove(key).map_err(VerifyError::spill)?;
        }
        Ok(found)
    }

    /// Who took `class` in this pass.
    pub fn class_holder(&self, class: &str) -> Result<Option<FileId>, VerifyError> {
        get(&self.classes, class)
    }

    /// `id` takes `class` (the first taker keeps it).
    pub fn take_class(&self, class: &str, id: &FileId) -> Result<(), VerifyError> {
        if self.classes.contains_key(class).map_err(VerifyError::spill)? {
            return Ok(());
        }
        put(&self.classes, class, id)
    }

    /// Records a mismatched object.
    pub fn mismatch(&self, key: &str, expected: &Expected, reason: String) -> Result<(), VerifyError> {
        let d = Difference { file_id: Some(expected.file_id.clone()), reason: Some(reason), size: expected.size };
        put(&self.mismatched, key, &d)
    }

    /// Records an object no Drive file maps to.
    pub fn extra(&self, key: &str) -> Result<(), VerifyError> {
        put(&self.extra, key, &())
    }

    /// Records an object outside the mirror's namespaces.
    pub fn unknown(&self, key: &str) -> Result<(), VerifyError> {
        put(&self.unknown, key, &())
    }

    /// Records a symbolic link met in a local folder, and where it points.
    pub fn link(&self, key: &str, target: &str) -> Result<(), VerifyError> {
        put(&self.links, key, &target.to_string())
    }

    /// Records a file the mirror does not hold for a permanent reason.
    pub fn skip(&self, id: &FileId, name: &str, reason: &str) -> Result<(), VerifyError> {
        put(&self.skipped, id.as_str(), &SkippedFile { name: name.into(), reason: reason.into() })
    }

    /// Moves every expected key left (no object was listed for it) to missing or skipped.
    pub fn settle_missing(&self) -> Result<(), VerifyError> {
        for g in self.expected.iter() {
            let (k, v) = g.into_inner().map_err(VerifyError::spill)?;
            let e: Expected = codec::decode(&v)?;
            match &e.skip_if_missing {
                Some(reason) => self.skip(&e.file_id, &e.name, reason)?,
                None => put(
                    &self.missing,
                    std::str::from_utf8(&k).unwrap_or_default(),
                    &Difference { file_id: Some(e.file_id), reason: e.dead_letter, size: e.size },
                )?,
            }
        }
        Ok(())
    }

    /// Missing keys, in key order.
    pub fn missing(&self) -> impl Iterator<Item = Result<(String, Difference), VerifyError>> + '_ {
        entries(&self.missing)
    }

    /// Mismatched keys, in key order.
    pub fn mismatched(&self) -> impl Iterator<Item = Result<(String, Difference), VerifyError>> + '_ {
        entries(&self.mismatched)
    }

    /// Extra keys, in key order.
    pub fn extras(&self) -> impl Iterator<Item = Result<String, VerifyError>> + '_ {
        entries::<()>(&self.extra).map(|r| r.map(|(k, ())| k))
    }

    /// Keys outside the mirror's namespaces, in key order.
    pub fn unknowns(&self) -> impl Iterator<Item = Result<String, VerifyError>> + '_ {
        entries::<()>(&self.unknown).map(|r| r.map(|(k, ())| k))
    }

    /// Symbolic links (key, target), in key order.
    pub fn links(&self) -> impl Iterator<Item = Result<(String, String), VerifyError>> + '_ {
        entries(&self.links)
    }

    /// How many unknown objects and links.
    pub fn unknown_and_link_counts(&self) -> Result<(u64, u64), VerifyError> {
        let n = |k: &Keyspace| k.len().map(|n| n as u64).map_err(VerifyError::spill);
        Ok((n(&self.unknown)?, n(&self.links)?))
    }

    /// Skipped files, by id.
    pub fn skipped(&self) -> impl Iterator<Item = Result<(String, SkippedFile), VerifyError>> + '_ {
        entries(&self.skipped)
    }

    /// How many entries of each kind: (missing, mismatched, extra, skipped).
    pub fn counts(&self) -> Result<(u64, u64, u64, u64), VerifyError> {
        let n = |k: &Keyspace| k.len().map(|n| n as u64).map_err(VerifyError::spill);
        Ok((n(&self.missing)?, n(&self.mismatched)?, n(&self.extra)?, n(&self.skipped)?))
    }
}

fn put<T: Serialize>(ks: &Keyspace, key: &str, v: &T) -> Result<(), VerifyError> {
    ks.insert(key, codec::encode(v)?).map_err(VerifyError::spill)
}

fn get<T: DeserializeOwned>(ks: &Keyspace, key: &str) -> Result<Option<T>, VerifyError> {
    ks.get(key).map_err(VerifyError::spill)?.map(|v| codec::decode(&v).map_err(VerifyError::from)).transpose()
}

fn entries<T: DeserializeOwned>(ks: &Keyspace) -> impl Iterator<Item = Result<(String, T), VerifyError>> + '_ {
    ks.iter().map(|g| {
        let (k, v) = g.into_inner().map_err(VerifyError::spill)?;
        Ok((String::from_utf8_lossy(&k).into_owned(), codec::decode(&v)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(id: &str) -> Expected {
        Expected {
            file_id: FileId(id.into()),
            name: format!("{id}.txt"),
            size: Some(3),
            md5: None,
            stale: None,
            skip_if_missing: None,
            dead_letter: None,
        }
    }

    #[test]
    fn keys_left_unmatched_become_missing_or_skipped() {
        let s = Spill::new().unwrap();
        s.expect("a", &expected("1")).unwrap();
        s.expect("b", &Expected { skip_if_missing: Some("cannotDownloadAbusiveFile".into()), ..expected("2") })
            .unwrap();
        s.expect("c", &expected("3")).unwrap();
        assert_eq!(s.take_expected("c").unwrap().map(|e| e.file_id.0), Some("3".into()));
        s.settle_missing().unwrap();
        let missing: Vec<_> = s.missing().map(|r| r.unwrap().0).collect();
        assert_eq!(missing, ["a"]);
        let skipped: Vec<_> = s.skipped().map(|r| r.unwrap()).collect();
        assert_eq!(skipped[0].0, "2");
        assert_eq!(s.counts().unwrap(), (1, 0, 0, 1));
    }

    #[test]
    fn two_files_at_one_key_are_reported() {
        let s = Spill::new().unwrap();
        s.expect("a", &expected("1")).unwrap();
        s.expect("a", &expected("2")).unwrap();
        let m: Vec<_> = s.mismatched().map(|r| r.unwrap()).collect();
        assert_eq!(m.len(), 1);
        assert!(m[0].1.reason.as_deref().unwrap().contains("two Drive files"), "{m:?}");
    }
}
