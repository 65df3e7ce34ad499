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
        ObjectKey(keys::fit_key(self.key(&format!(".versions/{rel}/{name}")).as_str()))
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
        let touched = KeptVersion { kept_at_ms: crate::state::unix_ms(), ..same.clone() };
        store.record_kept_version(file, &touched).map_err(state)?;
        return Ok(Some(rec.key));
    }
    let mut name = version_name(&rec);
    if kept.iter().any(|v| v.name == name) {
        // The name is taken by another content (a restore put an older one back under this version).
        name = format!("{name}-{}", rec.md5.as_deref().map_or("x", |m| &m[..m.len().min(8)]));
    }
    let object = dest.version_object(&rec.key, &name);
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
        kept_at_ms: crate::state::unix_ms(),
    };
    store.record_kept_version(file, &kept).map_err(state)?;
    tracing::debug!(%file, object = %kept.object, "earlier content kept");
    Ok(Some(rec.key))
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
    /// The destination failed.
    #[error("{0}")]
    Dest(#[from] DestError),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] crate::state::StoreError),
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
pub async fn restore(dest: &Destination, store: &Store, file: &FileId, to: &str) -> Result<KeptVersion, RestoreError> {
    let kept = store.kept_versions(file)?;
    let Some(version) = kept.iter().rev().find(|v| v.name == to || v.version.to_string() == to).cloned() else {
        return Err(RestoreError::NoSuchVersion { file: file.clone(), wanted: to.to_string() });
    };
    keep_unpruned(dest, store, file, version.md5.as_deref()).await?;
    let target = store.file(file)?.map_or_else(|| version.key.clone(), |r| r.key);
    dest.copy(&version.object, &target).await?;
    store.record_restore(file, &version, &target)?;
    // No prune here: the restored version's copy stays (the newest now), so the content the next
    // replacement removes is already kept; the limit may be exceeded by one until then.
    let newest = KeptVersion { kept_at_ms: crate::state::unix_ms(), ..version.clone() };
    store.record_kept_version(file, &newest)?;
    Ok(version)
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
}
