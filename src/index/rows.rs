//! What the index says of one item, from the store's records alone (pure: no PostgreSQL here). The
//! sink never trusts an audit entry's payload: it reads the item's records as they are now, so
//! applying an entry twice, or late, writes the same row.

use crate::model::{DeadLetter, FileId, FileRecord, FolderRecord, ObjectKey};
use crate::state::{KeptVersion, SkipRecord, Store, StoreError};

/// The records the index is built from (the store; unit tests use maps).
pub trait RecordSource {
    /// A file's record.
    fn file(&self, id: &FileId) -> Result<Option<FileRecord>, StoreError>;
    /// A folder's record.
    fn folder(&self, id: &FileId) -> Result<Option<FolderRecord>, StoreError>;
    /// A file's dead letter.
    fn dead_letter(&self, id: &FileId) -> Result<Option<DeadLetter>, StoreError>;
    /// Why Drive will not hand a file over.
    fn skip_record(&self, id: &FileId) -> Result<Option<SkipRecord>, StoreError>;
    /// Earlier contents kept (`[destination] versions`), oldest first.
    fn kept_versions(&self, id: &FileId) -> Result<Vec<KeptVersion>, StoreError>;
}

impl RecordSource for Store {
    fn file(&self, id: &FileId) -> Result<Option<FileRecord>, StoreError> {
        Store::file(self, id)
    }
    fn folder(&self, id: &FileId) -> Result<Option<FolderRecord>, StoreError> {
        Store::folder(self, id)
    }
    fn dead_letter(&self, id: &FileId) -> Result<Option<DeadLetter>, StoreError> {
        Store::dead_letter(self, id)
    }
    fn skip_record(&self, id: &FileId) -> Result<Option<SkipRecord>, StoreError> {
        Store::skip_record(self, id)
    }
    fn kept_versions(&self, id: &FileId) -> Result<Vec<KeptVersion>, StoreError> {
        Store::kept_versions(self, id)
    }
}

/// `file_hierarchy.sync_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncStatus {
    /// The mirror holds the file (or the folder is recorded).
    Synced,
    /// Dead-lettered (an older copy may still be in the mirror).
    Failed,
    /// Drive will not hand this version over.
    Skipped,
}

impl SyncStatus {
    /// The column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Synced => "synced",
            SyncStatus::Failed => "failed",
            SyncStatus::Skipped => "skipped",
        }
    }
}

/// One `file_hierarchy` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Drive id.
    pub id: FileId,
    /// Shared drive.
    pub drive_id: Option<String>,
    /// Parent folder's Drive id.
    pub parent: Option<String>,
    /// Key relative to the prefix; `None` when no object holds the item.
    pub storage_path: Option<String>,
    /// Drive name.
    pub name: String,
    /// Drive MIME type.
    pub mime_type: String,
    /// Stored bytes.
    pub size: Option<i64>,
    /// MD5 of the stored bytes.
    pub md5: Option<String>,
    /// Drive modifiedTime (RFC 3339).
    pub modified_time: Option<String>,
    /// Drive version mirrored.
    pub version: Option<i64>,
    /// Folder or file.
    pub is_folder: bool,
    /// Trashed in Drive.
    pub is_trashed: bool,
    /// Synced, failed or skipped.
    pub status: SyncStatus,
    /// Why failed or skipped.
    pub error: Option<String>,
}

/// What the index must do for one item.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // built one at a time and written at once: boxing buys nothing
pub enum RowChange {
    /// Write this row (insert or replace).
    Upsert(Row),
    /// The item is no longer in the mirror: delete its row.
    Delete(FileId),
}

/// One `file_versions` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRow {
    /// Drive id.
    pub id: FileId,
    /// Drive version of that content.
    pub version_number: i64,
    /// Key (relative to the prefix) of the object holding it.
    pub storage_path: String,
    /// MD5 of the content.
    pub checksum: Option<String>,
    /// Bytes.
    pub size: i64,
    /// When it was kept (Unix ms); `None` for the current content (the row's insert time).
    pub kept_at_ms: Option<u64>,
    /// The content at the file's own key.
    pub is_current: bool,
}

/// The `file_versions` rows of `id` given its `file_hierarchy` change: the current object of a file
/// row that has one, and every kept version (one per Drive version: a kept content of the current
/// version number, from a restore, is the current row's).
pub fn version_rows(src: &impl RecordSource, change: &RowChange, prefix: &str) -> Result<Vec<VersionRow>, StoreError> {
    let (id, current) = match change {
        RowChange::Upsert(r) if !r.is_folder => (&r.id, r.storage_path.as_ref().map(|p| (r, p))),
        RowChange::Upsert(_) => return Ok(Vec::new()),
        RowChange::Delete(id) => (id, None),
    };
    let mut rows: Vec<VersionRow> = Vec::new();
    if let Some((r, path)) = current {
        rows.push(VersionRow {
            id: id.clone(),
            version_number: r.version.unwrap_or(0),
            storage_path: path.clone(),
            checksum: r.md5.clone(),
            size: r.size.unwrap_or(0),
            kept_at_ms: None,
            is_current: true,
        });
    }
    // Newest first, so a Drive version kept twice keeps its newest content.
    for v in src.kept_versions(id)?.into_iter().rev() {
        if rows.iter().any(|r| r.version_number == v.version as i64) {
            continue;
        }
        rows.push(VersionRow {
            id: id.clone(),
            version_number: v.version as i64,
            storage_path: relative(&v.object, prefix),
            checksum: v.md5,
            size: v.size as i64,
            kept_at_ms: Some(v.kept_at_ms),
            is_current: false,
        });
    }
    Ok(rows)
}

/// The MIME type Drive gives folders.
const FOLDER_MIME: &str = "application/vnd.google-apps.folder";

/// `key` relative to the destination prefix (keys always start with it).
pub fn relative(key: &ObjectKey, prefix: &str) -> String {
    let k = key.as_str();
    if prefix.is_empty() {
        return k.to_string();
    }
    k.strip_prefix(prefix).map(|r| r.trim_start_matches('/')).unwrap_or(k).to_string()
}

/// The row `id` should have now, from its records: a folder's, else a file's (marked failed or
/// skipped when a newer version was), else a dead letter's or a skip's without an object, else none.
pub fn row_for(src: &impl RecordSource, id: &FileId, prefix: &str) -> Result<RowChange, StoreError> {
    if let Some(f) = src.folder(id)? {
        return Ok(if f.trashed { RowChange::Delete(id.clone()) } else { RowChange::Upsert(folder_row(&f, prefix)) });
    }
    let (status, error) = match (src.dead_letter(id)?, src.skip_record(id)?) {
        (Some(d), _) => (SyncStatus::Failed, Some(format!("{}: {}", d.reason, d.last_error))),
        (None, Some(s)) => (SyncStatus::Skipped, Some(format!("{}: version {}", s.reason, s.version))),
        (None, None) => (SyncStatus::Synced, None),
    };
    if let Some(rec) = src.file(id)? {
        let drive_id = match &rec.parent {
            Some(p) => src.folder(p)?.and_then(|f| f.drive_id).map(|d| d.0),
            None => None,
        };
        return Ok(RowChange::Upsert(Row {
            id: id.clone(),
            drive_id,
            parent: rec.parent.as_ref().map(|p| p.0.clone()),
            storage_path: Some(relative(&rec.key, prefix)),
            name: rec.name,
            mime_type: rec.mime_type,
            size: Some(rec.size as i64),
            md5: rec.md5,
            modified_time: rec.modified_time,
            version: Some(rec.version as i64),
            is_folder: false,
            is_trashed: false,
            status,
            error,
        }));
    }
    let unmirrored = |name: String, version: Option<u64>| Row {
        id: id.clone(),
        drive_id: None,
        parent: None,
        storage_path: None,
        name,
        mime_type: String::new(),
        size: None,
        md5: None,
        modified_time: None,
        version: version.map(|v| v as i64),
        is_folder: false,
        is_trashed: false,
        status,
        error: error.clone(),
    };
    Ok(match (src.dead_letter(id)?, src.skip_record(id)?) {
        (Some(d), _) => RowChange::Upsert(unmirrored(d.name, None)),
        (None, Some(s)) => RowChange::Upsert(unmirrored(s.name, Some(s.version))),
        (None, None) => RowChange::Delete(id.clone()),
    })
}

fn folder_row(f: &FolderRecord, prefix: &str) -> Row {
    Row {
        id: f.id.clone(),
        drive_id: f.drive_id.as_ref().map(|d| d.0.clone()),
        parent: f.parent.as_ref().map(|p| p.0.clone()),
        storage_path: Some(relative(&f.key, prefix)),
        name: f.name.clone(),
        mime_type: FOLDER_MIME.into(),
        size: None,
        md5: None,
        modified_time: None,
        version: None,
        is_folder: true,
        is_trashed: f.trashed,
        status: SyncStatus::Synced,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DriveId;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Maps {
        files: HashMap<FileId, FileRecord>,
        folders: HashMap<FileId, FolderRecord>,
        dead: HashMap<FileId, DeadLetter>,
        skips: HashMap<FileId, SkipRecord>,
        kept: HashMap<FileId, Vec<KeptVersion>>,
    }

    impl RecordSource for Maps {
        fn file(&self, id: &FileId) -> Result<Option<FileRecord>, StoreError> {
            Ok(self.files.get(id).cloned())
        }
        fn folder(&self, id: &FileId) -> Result<Option<FolderRecord>, StoreError> {
            Ok(self.folders.get(id).cloned())
        }
        fn dead_letter(&self, id: &FileId) -> Result<Option<DeadLetter>, StoreError> {
            Ok(self.dead.get(id).cloned())
        }
        fn skip_record(&self, id: &FileId) -> Result<Option<SkipRecord>, StoreError> {
            Ok(self.skips.get(id).cloned())
        }
        fn kept_versions(&self, id: &FileId) -> Result<Vec<KeptVersion>, StoreError> {
            Ok(self.kept.get(id).cloned().unwrap_or_default())
        }
    }

    fn id(s: &str) -> FileId {
        FileId(s.into())
    }

    fn maps() -> Maps {
        let mut m = Maps::default();
        let drive = FolderRecord {
            id: id("D"),
            name: "Team".into(),
            parent: None,
            drive_id: Some(DriveId("D".into())),
            key: ObjectKey("mirror/shared-drives/Team".into()),
            trashed: false,
        };
        m.folders.insert(id("D"), drive);
        m.files.insert(
            id("f"),
            FileRecord {
                id: id("f"),
                name: "a/b.txt".into(),
                parent: Some(id("D")),
                mime_type: "text/plain".into(),
                version: 4,
                md5: Some("00ff".into()),
                sha256: None,
                size: 9,
                key: ObjectKey("mirror/shared-drives/Team/a_b.txt".into()),
                modified_time: Some("2026-01-02T03:04:05.000Z".into()),
            },
        );
        m
    }

    #[test]
    fn a_file_row_holds_its_key_relative_to_the_prefix_and_its_drive() {
        let RowChange::Upsert(row) = row_for(&maps(), &id("f"), "mirror").unwrap() else { panic!("no row") };
        assert_eq!(row.storage_path.as_deref(), Some("shared-drives/Team/a_b.txt"));
        assert_eq!((row.drive_id.as_deref(), row.parent.as_deref()), (Some("D"), Some("D")));
        assert_eq!(
            (row.name.as_str(), row.md5.as_deref(), row.size, row.version),
            ("a/b.txt", Some("00ff"), Some(9), Some(4))
        );
        assert_eq!((row.status, row.is_folder), (SyncStatus::Synced, false));
        let RowChange::Upsert(root) = row_for(&maps(), &id("D"), "mirror").unwrap() else { panic!("no row") };
        assert_eq!((root.is_folder, root.storage_path.as_deref()), (true, Some("shared-drives/Team")));
    }

    #[test]
    fn failures_and_refusals_are_rows_without_an_object_and_gone_items_are_deleted() {
        let mut m = maps();
        m.dead.insert(
            id("x"),
            DeadLetter {
                id: id("x"),
                name: "big.iso".into(),
                key: Some(ObjectKey("mirror/big.iso".into())),
                reason: "fileTooLarge".into(),
                last_error: "too big".into(),
                attempts: 1,
                at_unix: 0,
            },
        );
        let RowChange::Upsert(row) = row_for(&m, &id("x"), "mirror").unwrap() else { panic!("no row") };
        assert_eq!(
            (row.status, row.storage_path, row.error.as_deref()),
            (SyncStatus::Failed, None, Some("fileTooLarge: too big"))
        );
        let skip = SkipRecord {
            reason: "download_disabled".into(),
            version: 4,
            name: "a/b.txt".into(),
            at_unix_ms: 0,
            until_unix_ms: None,
        };
        m.skips.insert(id("f"), skip);
        let RowChange::Upsert(row) = row_for(&m, &id("f"), "mirror").unwrap() else { panic!("no row") };
        assert_eq!(row.status, SyncStatus::Skipped, "the object of an older version stays, marked skipped");
        assert!(row.storage_path.is_some());
        assert_eq!(row_for(&m, &id("gone"), "mirror").unwrap(), RowChange::Delete(id("gone")));
        m.folders.get_mut(&id("D")).unwrap().trashed = true;
        assert_eq!(row_for(&m, &id("D"), "mirror").unwrap(), RowChange::Delete(id("D")));
    }

    #[test]
    fn a_file_has_its_current_row_and_its_kept_versions_which_outlive_it() {
        let mut m = maps();
        let kept = |version: u64, name: &str| KeptVersion {
            name: name.into(),
            object: ObjectKey(format!("mirror/.versions/shared-drives/Team/a_b.txt/{name}")),
            key: ObjectKey("mirror/shared-drives/Team/a_b.txt".into()),
            version,
            modified_time: None,
            md5: Some(format!("md5-{version}")),
            size: version,
            kept_at_ms: 1,
        };
        m.kept.insert(id("f"), vec![kept(2, "t2-2"), kept(3, "t3-3"), kept(4, "t4-4")]);
        let change = row_for(&m, &id("f"), "mirror").unwrap();
        let rows = version_rows(&m, &change, "mirror").unwrap();
        let seen: Vec<_> = rows.iter().map(|r| (r.version_number, r.is_current, r.storage_path.as_str())).collect();
        assert_eq!(
            seen,
            [
                (4, true, "shared-drives/Team/a_b.txt"),
                (3, false, ".versions/shared-drives/Team/a_b.txt/t3-3"),
                (2, false, ".versions/shared-drives/Team/a_b.txt/t2-2"),
            ],
            "a kept content of the current version number is the current row's"
        );
        m.files.remove(&id("f"));
        let gone = row_for(&m, &id("f"), "mirror").unwrap();
        assert_eq!(gone, RowChange::Delete(id("f")));
        assert_eq!(version_rows(&m, &gone, "mirror").unwrap().len(), 3, "kept versions outlive the file");
        let folder = row_for(&m, &id("D"), "mirror").unwrap();
        assert!(version_rows(&m, &folder, "mirror").unwrap().is_empty());
    }

    #[test]
    fn relative_keys_strip_exactly_the_prefix() {
        assert_eq!(relative(&ObjectKey("p/x/y".into()), "p"), "x/y");
        assert_eq!(relative(&ObjectKey("x/y".into()), ""), "x/y");
    }
}
