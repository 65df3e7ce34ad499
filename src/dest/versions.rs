//! `[destination] versions = N`: before a file's object is replaced by other content or removed, its
//! content is kept by a server-side copy under `<prefix>/.versions/<key>/<modifiedTime>-<version>`,
//! at most N per key (the oldest pruned). Keeping is idempotent: a version already recorded is not
//! copied again, so a replay after a crash (even one after the new content was written) never files
//! the new content under the old version's name.

use super::{DestError, Destination, keys};
use crate::model::{FileId, FileRecord, ObjectKey};
use crate::state::{KeptVersion, Store};

/// The name a content is kept under: Drive's modifiedTime without separators (key-safe in every key
/// alphabet, and it sorts like the time), then the Drive version.
pub fn version_name(rec: &FileRecord) -> String {
    let time: String =
        rec.modified_time.as_deref().unwrap_or("unknown").chars().filter(|c| *c != ':' && *c != '-').collect();
    format!("{time}-{}", rec.version)
}

/// The kept version already holding `rec`'s content at its key: the same md5 (or, without one, the
/// same name).
pub fn already_kept<'a>(kept: &'a [KeptVersion], rec: &FileRecord) -> Option<&'a KeptVersion> {
    kept.iter().find(|v| {
        v.key == rec.key
            && match (&v.md5, &rec.md5) {
                (Some(a), Some(b)) => a == b,
                _ => v.name == version_name(rec),
            }
    })
}

/// The versions of `kept` (oldest first) at `key` beyond the newest `n`: the ones to prune.
pub fn beyond_limit<'a>(kept: &'a [KeptVersion], key: &ObjectKey, n: usize) -> Vec<&'a KeptVersion> {
    let at_key: Vec<&KeptVersion> = kept.iter().filter(|v| v.key == *key).collect();
    let extra = at_key.len().saturating_sub(n);
    at_key.into_iter().take(extra).collect()
}

impl Destination {
    /// Where a content of `key` named `name` is kept.
    pub fn version_object(&self, key: &ObjectKey, name: &str) -> ObjectKey {
        let rel = key.as_str().strip_prefix(&self.prefix).unwrap_or(key.as_str()).trim_start_matches('/');
        ObjectKey(keys::fit_key(self.key(&format!(".versions/{rel}/{name}")).as_str(), self.max_key_bytes))
    }
}

fn state(e: crate::state::StoreError) -> DestError {
    DestError::State(e.to_string())
}

/// Keeps the content `file`'s record says its object holds, unless `new_md5` is that same content,
/// versions are off, or the file has no record yet; then prunes that key's versions to the limit.
pub async fn keep(dest: &Destination, store: &Store, file: &FileId, new_md5: Option<&str>) -> Result<(), DestError> {
    if dest.versions == 0 {
        return Ok(());
    }
    if let Some(key) = keep_unpruned(dest, store, file, new_md5).await? {
        prune(dest, store, file, &key).await?;
    }
    Ok(())
}

/// [`keep`] without the prune; returns the key whose versions may now be over the limit.
async fn keep_unpruned(
    dest: &Destination,
    store: &Store,
    file: &FileId,
    new_md5: Option<&str>,
) -> Result<Option<ObjectKey>, DestError> {
    let Some(rec) = store.file(file).map_err(state)? else { return Ok(None) };
    if new_md5.is_some() && rec.md5.as_deref() == new_md5 {
        return Ok(None);
    }
    let kept = store.kept_versions(file).map_err(state)?;
    if let Some(same) = already_kept(&kept, &rec) {
        // Kept before (a replay after a crash, or the content a restore put back): it is the
        // newest now, so the prune that follows keeps it.
        let touched = KeptVersion { kept_at_ms: crate::model::unix_ms(), ..same.clone() };
        store.record_kept_version(file, &touched).map_err(state)?;
        return Ok(Some(rec.key));
    }
    let mut name = version_name(&rec);
    if kept.iter().any(|v| v.name == name) {
        // The name is taken by another content (a restore put an older one back under this version).
        name = format!("{name}-{}", rec.md5.as_deref().map_or("x", |m| &m[..m.len().min(8)]));
    }
    let (name, object) = free_version_object(dest, &kept, &rec.key, &name).await?;
    match dest.copy(&rec.key, &object).await {
        Ok(()) => {}
        // Nothing at the key (removed behind mirrorflow's back): nothing to keep.
        Err(DestError::Store { source: object_store::Error::NotFound { .. }, .. }) => return Ok(None),
        Err(e) => return Err(e),
    }
    let kept = KeptVersion {
        name,
        object,
        key: rec.key.clone(),
        version: rec.version,
        modified_time: rec.modified_time.clone(),
        md5: rec.md5.clone(),
        size: rec.size,
        kept_at_ms: crate::model::unix_ms(),
    };
    store.record_kept_version(file, &kept).map_err(state)?;
    tracing::debug!(%file, object = %kept.object, "earlier content kept");
    Ok(Some(rec.key))
}

/// Names tried for one kept content before giving up.
const MAX_VERSION_NAMES: u32 = 1000;

/// The first of `base`, `base-2`, `base-3`, … that no record of this file names and no object
/// occupies: another file that held this key earlier (a deleted file whose name a new one took) may
/// have kept a content under the same `<modifiedTime>-<version>`, and a copy onto it would replace
/// that file's version with this one's bytes. An object no record names (the copy of a keep killed
/// before its record) is left alone too: it costs space, never a content.
async fn free_version_object(
    dest: &Destination,
    kept: &[KeptVersion],
    key: &ObjectKey,
    base: &str,
) -> Result<(String, ObjectKey), DestError> {
    for n in 1..=MAX_VERSION_NAMES {
        let name = if n == 1 { base.to_string() } else { format!("{base}-{n}") };
        if kept.iter().any(|v| v.name == name) {
            continue;
        }
        let object = dest.version_object(key, &name);
        if dest.head(&object).await?.is_none() {
            return Ok((name, object));
        }
    }
    Err(DestError::InvalidKey(format!("{}: no free version name after {base:?}", key.as_str())))
}

/// Why a restore cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// No kept version of that name or number.
    #[error("{file} has no kept version {wanted:?}; `mirrorflow versions list` shows them")]
    NoSuchVersion {
        /// The file.
        file: FileId,
        /// What was asked for.
        wanted: String,
    },
    /// Another file holds the key now (the restored file was removed, and a new file took its name):
    /// its object would be overwritten, its content kept nowhere.
    #[error(
        "{key} is held by another file now ({holder}): restoring {file} there would overwrite that file's object; name another key with --as KEY"
    )]
    HeldByAnother {
        /// The file being restored.
        file: FileId,
        /// The key.
        key: ObjectKey,
        /// The file holding it.
        holder: FileId,
    },
    /// The key named with `--as` cannot take a restore.
    #[error("--as {key}: {why}")]
    BadTarget {
        /// The key named.
        key: String,
        /// Why not.
        why: &'static str,
    },
    /// The destination failed.
    #[error("{0}")]
    Dest(#[from] DestError),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] crate::state::StoreError),
}

impl RestoreError {
    /// True for a refusal caused by what was asked (exit 2), not by a failure.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            RestoreError::NoSuchVersion { .. } | RestoreError::HeldByAnother { .. } | RestoreError::BadTarget { .. }
        )
    }
}

/// The file a person names: a Drive file id the store knows (mirrored now, or with kept versions),
/// else an object key (relative to the prefix, or whole) of a mirrored file.
pub fn find_file(store: &Store, dest: &Destination, what: &str) -> Result<Option<FileId>, crate::state::StoreError> {
    let id = FileId(what.to_string());
    if store.file(&id)?.is_some() || !store.kept_versions(&id)?.is_empty() {
        return Ok(Some(id));
    }
    let whole = dest.key(what.trim_start_matches('/'));
    let mut found = None;
    store.for_each_file(|rec| {
        if found.is_none() && (rec.key == whole || rec.key.as_str() == what) {
            found = Some(rec.id);
        }
    })?;
    Ok(found)
}

/// Puts a kept version back as the current object of `file` (the mirror only; Drive is never
/// written). The content there now is kept first (so a restore is undone by another), then the
/// version is copied over the key (its kept copy stays, the newest now: the limit may be exceeded by
/// one until the next replacement), the file's record takes its md5 and size (its Drive version
/// stays, so the next run does not fetch it again: the next change in Drive replaces it), and a
/// `restored` audit entry says so. `to` is a version's name or its Drive version number.
///
/// A restore never overwrites another file's object: when the key (a removed file's last key) is
/// held by another file now, it refuses and names that file. `as_key` (relative to the prefix)
/// writes the version there instead, leaving the file's record and object alone: a key outside the
/// mirror's namespaces that holds no object. Returns the version and the key written.
pub async fn restore(
    dest: &Destination,
    store: &Store,
    file: &FileId,
    to: &str,
    as_key: Option<&str>,
) -> Result<(KeptVersion, ObjectKey), RestoreError> {
    let kept = store.kept_versions(file)?;
    let Some(version) = kept.iter().rev().find(|v| v.name == to || v.version.to_string() == to).cloned() else {
        return Err(RestoreError::NoSuchVersion { file: file.clone(), wanted: to.to_string() });
    };
    if let Some(rel) = as_key {
        let target = restore_elsewhere(dest, &version, rel).await?;
        store.record_restore_elsewhere(file, &version, &target)?;
        return Ok((version, target));
    }
    let target = store.file(file)?.map_or_else(|| version.key.clone(), |r| r.key);
    if let Some(holder) = store.claim_holder(&keys::collision_class(target.as_str()))?.filter(|h| h != file) {
        return Err(RestoreError::HeldByAnother { file: file.clone(), key: target, holder });
    }
    keep_unpruned(dest, store, file, version.md5.as_deref()).await?;
    dest.copy(&version.object, &target).await?;
    store.record_restore(file, &version, &target)?;
    // No prune here: the restored version's copy stays (the newest now), so the content the next
    // replacement removes is already kept; the limit may be exceeded by one until then.
    let newest = KeptVersion { kept_at_ms: crate::model::unix_ms(), ..version.clone() };
    store.record_kept_version(file, &newest)?;
    Ok((version, target))
}

/// Copies `version` to the key `rel` names (relative to the prefix), which must lie outside the
/// mirror's own folders (there the planner writes Drive's files and `verify --repair` removes what
/// Drive does not have) and hold no object (a restore never overwrites).
async fn restore_elsewhere(dest: &Destination, version: &KeptVersion, rel: &str) -> Result<ObjectKey, RestoreError> {
    let rel = rel.trim_matches('/');
    let bad = |why| RestoreError::BadTarget { key: rel.to_string(), why };
    if rel.is_empty() || rel.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(bad("not a key"));
    }
    if keys::namespace_of(rel) != keys::Namespace::Unknown {
        return Err(bad(
            "lies in the mirror's own folders (my-drive/, shared-drives/, shared-with-me/, .trash/, .versions/); name a key outside them",
        ));
    }
    let target = dest.key(rel);
    if dest
        .head(&target)
        .await
        .map_err(|e| match e {
            DestError::InvalidKey(_) => bad("not a valid object key"),
            e => RestoreError::Dest(e),
        })?
        .is_some()
    {
        return Err(bad("an object is there already; a restore never overwrites one"));
    }
    dest.copy(&version.object, &target).await?;
    Ok(target)
}

/// Removes the oldest versions of `key` beyond the limit: the record first, then the object.
async fn prune(dest: &Destination, store: &Store, file: &FileId, key: &ObjectKey) -> Result<(), DestError> {
    let kept = store.kept_versions(file).map_err(state)?;
    for old in beyond_limit(&kept, key, dest.versions) {
        store.forget_kept_version(file, &old.name).map_err(state)?;
        dest.delete(&old.object).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(name: &str, key: &str, version: u64) -> KeptVersion {
        KeptVersion {
            name: name.into(),
            object: ObjectKey(format!(".versions/{key}/{name}")),
            key: ObjectKey(key.into()),
            version,
            modified_time: Some(name.into()),
            md5: None,
            size: 0,
            kept_at_ms: 0,
        }
    }

    #[test]
    fn names_sort_like_time_and_carry_the_version() {
        let rec = |t: &str, v| FileRecord {
            id: FileId("f".into()),
            name: "a".into(),
            parent: None,
            mime_type: "text/plain".into(),
            version: v,
            md5: None,
            sha256: None,
            size: 1,
            key: ObjectKey("p/a".into()),
            modified_time: Some(t.into()),
        };
        let (a, b) =
            (version_name(&rec("2026-01-02T03:04:05.000Z", 9)), version_name(&rec("2026-01-10T00:00:00.000Z", 10)));
        assert_eq!(a, "20260102T030405.000Z-9");
        assert!(a < b);
        assert!(!a.contains(':'));
    }

    #[test]
    fn a_content_is_already_kept_when_a_version_of_its_key_holds_the_same_md5() {
        let rec = FileRecord {
            id: FileId("f".into()),
            name: "a".into(),
            parent: None,
            mime_type: "text/plain".into(),
            version: 5,
            md5: Some("m5".into()),
            sha256: None,
            size: 1,
            key: ObjectKey("k".into()),
            modified_time: Some("t".into()),
        };
        let with_md5 = |name: &str, key: &str, md5: &str| KeptVersion { md5: Some(md5.into()), ..kept(name, key, 1) };
        assert!(already_kept(&[with_md5("x", "k", "m4")], &rec).is_none(), "another content");
        assert!(already_kept(&[with_md5("x", "other", "m5")], &rec).is_none(), "another key");
        assert_eq!(already_kept(&[with_md5("x", "k", "m5")], &rec).map(|v| v.name.as_str()), Some("x"));
        let unhashed = KeptVersion { md5: None, ..kept(&version_name(&rec), "k", 5) };
        assert!(already_kept(&[unhashed], &FileRecord { md5: None, ..rec.clone() }).is_some(), "by name without md5");
    }

    #[test]
    fn only_the_oldest_of_the_same_key_beyond_the_limit_are_pruned() {
        let all = [kept("1", "k", 1), kept("2", "other", 2), kept("3", "k", 3), kept("4", "k", 4)];
        let names: Vec<&str> = beyond_limit(&all, &ObjectKey("k".into()), 2).iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["1"]);
        assert!(beyond_limit(&all, &ObjectKey("k".into()), 3).is_empty());
    }

    /// Commits `outcome` for `id` as the committer would.
    fn commit(store: &Store, id: &str, kind: crate::model::OutcomeKind) {
        let outcome = crate::model::Outcome { seq: crate::model::ChangeSeq(1), file_id: FileId(id.into()), kind };
        store.apply(&crate::state::CommitBatch { outcomes: vec![outcome], ..Default::default() }).unwrap();
    }

    #[tokio::test]
    async fn versions_of_two_files_that_held_one_key_never_overwrite_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let url = format!("url = \"file://{}\"\nversions = 2", dir.path().join("mirror").display());
        let cfg: crate::config::DestinationConfig = toml::from_str(&url).unwrap();
        let dest = Destination::from_config(&cfg, &crate::config::RetryConfig::default()).unwrap();
        let key = dest.key("my-drive/X.txt");
        // Same Drive version number and modifiedTime: the same version name for both files.
        let rec = |id: &str, md5: &str| FileRecord {
            id: FileId(id.into()),
            name: "X.txt".into(),
            parent: None,
            mime_type: "text/plain".into(),
            version: 3,
            md5: Some(md5.into()),
            sha256: None,
            size: 1,
            key: key.clone(),
            modified_time: Some("2026-01-01T00:00:00.000Z".into()),
        };
        let meta = super::super::ObjectMeta::default();
        commit(&store, "A", crate::model::OutcomeKind::Committed(rec("A", "aaaa")));
        dest.put(&key, vec![bytes::Bytes::from_static(b"A")], &meta).await.unwrap();
        keep(&dest, &store, &FileId("A".into()), Some("next")).await.unwrap();
        commit(&store, "A", crate::model::OutcomeKind::Removed { key: Some(key.clone()) });
        commit(&store, "B", crate::model::OutcomeKind::Committed(rec("B", "bbbb")));
        dest.put(&key, vec![bytes::Bytes::from_static(b"B")], &meta).await.unwrap();
        keep(&dest, &store, &FileId("B".into()), Some("next")).await.unwrap();

        let (a, b) =
            (store.kept_versions(&FileId("A".into())).unwrap(), store.kept_versions(&FileId("B".into())).unwrap());
        assert_eq!((a.len(), b.len()), (1, 1), "{a:?} {b:?}");
        assert_ne!(a[0].object, b[0].object, "each file's version has its own object");
        assert_eq!(&dest.get(&a[0].object).await.unwrap()[..], b"A", "A's version still holds A's bytes");
        assert_eq!(&dest.get(&b[0].object).await.unwrap()[..], b"B");
    }
}
