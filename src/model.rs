//! The typed vocabulary that flows between stages. Bare strings are wrapped so that a file id can never
//! be passed where an object key is expected.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A Drive file or folder id; opaque, stable for the life of the item.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileId(pub String);

/// A shared drive id, or `None` for My Drive, scoping where an item lives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DriveId(pub String);

/// Sequence number assigned by the change-feed, strictly increasing within a run; the watermark is
/// computed over it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChangeSeq(pub u64);

/// A key in the destination store, always relative to the store root and always already sanitized.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey(pub String);

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { fmt::Display::fmt(&self.0, f) }
        }
    )*};
}
display_inner!(FileId, DriveId, ChangeSeq, ObjectKey);

impl FileId {
    /// Borrow the raw id, for URLs and store keys.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ObjectKey {
    /// Borrow the raw key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The Drive folder mime type; folders shape paths but carry no bytes.
pub const FOLDER_MIME: &str = "application/vnd.google-apps.folder";
/// The Drive shortcut mime type; shortcuts are recorded but never followed (they can form cycles).
pub const SHORTCUT_MIME: &str = "application/vnd.google-apps.shortcut";

/// What the mirror needs to know about one Drive item, as returned by files.list / changes.list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveFile {
    /// Drive id.
    pub id: FileId,
    /// Display name exactly as Drive has it (may contain `/`, control chars, anything).
    pub name: String,
    /// Drive mime type.
    pub mime_type: String,
    /// Parent folder ids; Drive allows (legacy) several, we use the first.
    pub parents: Vec<FileId>,
    /// Byte size of binary content; absent for folders and Google Docs.
    pub size: Option<u64>,
    /// MD5 of binary content; absent for Google Docs.
    pub md5: Option<String>,
    /// SHA-256 of binary content, when Drive reports it.
    pub sha256: Option<String>,
    /// Monotonic per-file version; bumps on every change.
    pub version: u64,
    /// RFC 3339 modification time, kept as text.
    pub modified_time: Option<String>,
    /// Trashed items are not mirrored.
    pub trashed: bool,
    /// Shared drive that holds the item, if any.
    pub drive_id: Option<DriveId>,
    /// Target of a shortcut.
    pub shortcut_target: Option<FileId>,
    /// The target's resource key (`shortcutDetails.targetResourceKey`): a link-shared target the user
    /// never opened is shown (metadata and bytes) only to requests that carry it.
    #[serde(default)]
    pub shortcut_target_key: Option<String>,
    /// Drive's `ownedByMe`: the user owns the file (never set for items in shared drives). With the
    /// organizer role of a shared drive, the only case where `acknowledgeAbuse` applies.
    #[serde(default)]
    pub owned_by_me: bool,
    /// Export links of a Google Doc by mime type.
    pub export_links: BTreeMap<String, String>,
    /// Whether the caller may download the content.
    pub can_download: bool,
    /// Resource key of a link-shared file: downloads send it in `X-Goog-Drive-Resource-Keys`.
    #[serde(default)]
    pub resource_key: Option<String>,
    /// Shared with the user directly by someone else (`sharedWithMeTime` is set). With no parent the
    /// user can see, such an item is a top item of `[source] shared_with_me`.
    #[serde(default)]
    pub shared_with_me: bool,
    /// Drive's `webViewLink`: the address that opens the item in a browser.
    #[serde(default)]
    pub web_view_link: Option<String>,
    /// A shortcut's target's `webViewLink`, once the planner (or `verify`) looked the target up: what
    /// its `.url` object opens.
    #[serde(default)]
    pub target_link: Option<String>,
    /// A followed shortcut (`[source] shortcuts = "follow"`): the file whose bytes it mirrors.
    #[serde(default)]
    pub content_of: Option<FileId>,
}

impl DriveFile {
    /// True for folders, which become path segments rather than objects.
    pub fn is_folder(&self) -> bool {
        self.mime_type == FOLDER_MIME
    }
    /// True for shortcuts, which are recorded and skipped.
    pub fn is_shortcut(&self) -> bool {
        self.mime_type == SHORTCUT_MIME
    }
    /// A shortcut with its link object's size and md5 (checked like Drive's own by the verifier); any
    /// other file as it is.
    pub fn with_link_digest(mut self) -> DriveFile {
        if self.is_shortcut() {
            let body = self.link_body();
            self.size = Some(body.len() as u64);
            self.md5 = Some(hex::encode(<md5::Md5 as md5::Digest>::digest(body.as_bytes())));
            self.sha256 = None;
        }
        self
    }

    /// The `.url` object of a shortcut: opens the target's `webViewLink` once the planner looked the
    /// target up, else the generic `open?id=` address.
    pub fn link_body(&self) -> String {
        shortcut_link_body(self.shortcut_target.as_ref(), self.target_link.as_deref())
    }

    /// The file whose bytes this item mirrors: itself, or the target of a followed shortcut.
    pub fn content_id(&self) -> &FileId {
        self.content_of.as_ref().unwrap_or(&self.id)
    }

    /// `[source] shortcuts = "follow"`: the shortcut `self` as the file its `target` is, at the
    /// shortcut's own place and name (and id, so it has its own key and record); the bytes are the
    /// target's (`content_of`), as are the version, checksums and export links that tell a change.
    pub fn followed(&self, target: &DriveFile) -> DriveFile {
        DriveFile {
            id: self.id.clone(),
            name: self.name.clone(),
            parents: self.parents.clone(),
            drive_id: self.drive_id.clone(),
            trashed: self.trashed,
            shared_with_me: self.shared_with_me,
            shortcut_target: Some(target.id.clone()),
            content_of: Some(target.id.clone()),
            target_link: None,
            // The target's key, as Drive reports it or as the shortcut named it.
            resource_key: target.resource_key.clone().or_else(|| self.shortcut_target_key.clone()),
            shortcut_target_key: target.resource_key.clone().or_else(|| self.shortcut_target_key.clone()),
            ..target.clone()
        }
    }

    /// True for Google Docs/Sheets/Slides/Drawings, which must be exported rather than downloaded.
    pub fn is_google_doc(&self) -> bool {
        self.mime_type.starts_with("application/vnd.google-apps.") && !self.is_folder() && !self.is_shortcut()
    }
}

/// What changed about one file, as the change-feed saw it. (Unboxed on purpose: events move by value
/// through channels, and boxing would cost an allocation per event.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// The item exists with this metadata (created, modified, renamed, moved, trashed…).
    Upsert(DriveFile),
    /// The item is gone for us: deleted permanently or access lost.
    Removed,
    /// A shared drive (the event's id is the drive's) is in scope under `name`, or, with `None`, is
    /// gone: deleted, access lost, or no longer selected. Drive-level changes and the reconciliation
    /// at start both say it this way, so the planner alone decides what moves or goes.
    SharedDrive {
        /// The drive's name now; `None` when it left the scope.
        name: Option<String>,
        /// The mirror did not follow this drive until now: its whole tree must be listed.
        joined: bool,
    },
    /// An object no Drive file maps to (`Refresh::Stray`), to be removed per `deletes`.
    Stray(ObjectKey),
}

/// One unit of work entering the pipeline; every event ends in exactly one [`Outcome`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Position in the feed, for the watermark.
    pub seq: ChangeSeq,
    /// The file it concerns, for coalescing.
    pub file_id: FileId,
    /// What happened.
    pub kind: ChangeKind,
    /// Where the feed got it: a folder that enters the mirror through a change must bring its
    /// subtree (Drive reports the folder only), while a full listing already lists every child.
    pub origin: Origin,
}

/// Where an event comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// A full listing (`files.list` over a drive).
    Listing,
    /// `changes.list`.
    #[default]
    Change,
    /// A refresh the mirror asked for itself (`files.get`, or the listing of one folder's children).
    Refresh,
    /// A repair `verify` asked for: the file is fetched and written again even if its record says the
    /// mirror holds this version (the object was found missing or wrong).
    Repair,
}

/// Work the mirror asks the feed to do because a change's side effects could not be completed from
/// what the destination holds. Requests are recorded in the store in the same batch as (or before)
/// the outcome that needs them, and cleared only once their events are committed, so a crash never
/// drops one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Refresh {
    /// Fetch this item's metadata again and plan it (its object was lost, or it was dead-lettered).
    File(FileId),
    /// List this folder's children and plan each: the folder came (back) into the mirror.
    Children(FileId),
    /// Fetch this file's metadata again and write its bytes whatever its record says: `verify` found
    /// its object missing or not holding Drive's bytes.
    Repair(FileId),
    /// Remove this object per `deletes`: `verify` found that no Drive file maps to it. The planner
    /// orders it with every other action on the key and leaves it if a record claims the key by then.
    Stray(ObjectKey),
}

/// The event id of a stray object's removal (Drive ids never hold a `:`).
pub fn stray_event_id(key: &ObjectKey) -> FileId {
    FileId(format!("stray:{key}"))
}

/// How the bytes of a file are fetched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// `files.get?alt=media`.
    Media,
    /// `files.export` to this mime type (falls back to the export link when over the export limit).
    Export {
        /// Target mime type.
        mime: String,
        /// The doc's export link for that mime type, used past the 10 MB export limit.
        link: Option<String>,
    },
    /// `files.download`, a long-running operation polled until Drive hands over a download URI: the
    /// only way Drive gives the content of a Google Vid.
    Download {
        /// What Drive hands over (the object's content type), e.g. `video/mp4`.
        mime: String,
    },
    /// A shortcut's `.url` object: these bytes, made by mirrorflow (no Drive request).
    Link {
        /// The whole object.
        body: String,
    },
}

/// The `.url` internet-shortcut object a shortcut becomes: opens its target's `webViewLink` when it is
/// known and a plain http(s) address (nothing that could break the file's lines), else
/// `drive.google.com/open?id=<target>`, which opens any kind of item.
pub fn shortcut_link_body(target: Option<&FileId>, web_view_link: Option<&str>) -> String {
    let plain = |url: &&str| {
        (url.starts_with("https://") || url.starts_with("http://")) && !url.chars().any(|c| c.is_control())
    };
    match web_view_link.filter(plain) {
        Some(url) => format!("[InternetShortcut]\r\nURL={url}\r\n"),
        None => {
            let id = target.map(|t| t.0.as_str()).unwrap_or_default();
            let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
            format!("[InternetShortcut]\r\nURL=https://drive.google.com/open?id={id}\r\n")
        }
    }
}

/// What the planner decided to do about one event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    /// Fetch the bytes and write them at `key`, replacing `previous_key` if the file moved.
    Upload {
        /// Where the bytes come from.
        source: Source,
    },
    /// Content is already at `from`: copy server-side instead of downloading again.
    Copy {
        /// Existing object holding identical bytes.
        from: ObjectKey,
        /// Where to fetch the bytes if that object is gone by the time of the copy.
        fallback: Source,
    },
    /// Remove the object at `key` (per the delete policy).
    Delete,
    /// A folder moved, was renamed or went away: move or remove its whole subtree server-side.
    Tree(TreeChange),
}

/// Everything below a folder that must follow it, computed by the planner from the folder map. The
/// files are not listed here: the writer reads them folder by folder from the store's children index,
/// one bounded step at a time, so a subtree of any size costs the memory of its folders and one step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeChange {
    /// The folder's new record; `None` when the folder is gone.
    pub folder: Option<FolderRecord>,
    /// The folders whose files follow (the folder itself and every folder below it), each with the
    /// key its files go under now.
    pub dirs: Vec<TreeDir>,
    /// Folders below it, with their new keys (empty when removed).
    pub folders: Vec<FolderRecord>,
    /// Folder ids below it that are gone (when removed).
    pub removed_folders: Vec<FileId>,
    /// True when the subtree is removed rather than moved.
    pub remove: bool,
    /// Files whose object was found neither at the old nor at the new key (a crash between steps):
    /// their records are dropped and they are fetched from Drive again (a [`Refresh::File`]).
    #[serde(default)]
    pub lost: Vec<FileId>,
}

/// A folder of a [`TreeChange`] and the key its files go under (moved), or had (removed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeDir {
    /// The folder.
    pub folder: FileId,
    /// Its key after the change (its key before, when removed).
    pub key: ObjectKey,
}

/// One bounded step of a subtree move or removal, committed as soon as its objects are moved or
/// removed: a large folder is many small commits, and a crash redoes at most the step in progress (the
/// replayed folder change finds the files of earlier steps already at their new keys).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeStep {
    /// The step's files: each record (with its new key when moved) and the key it had.
    pub files: Vec<(FileRecord, ObjectKey)>,
    /// True when the files are removed rather than moved.
    pub remove: bool,
    /// Files of the step found neither at the old nor at the new key: their records are dropped and
    /// they are fetched from Drive again.
    pub lost: Vec<FileId>,
}

/// Files per [`TreeStep`].
pub const TREE_STEP_FILES: usize = 256;

/// A planned action for one event, carrying everything later stages need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    /// The originating event's seq.
    pub seq: ChangeSeq,
    /// File concerned.
    pub file: DriveFile,
    /// Destination key (for `Delete`, the key to remove).
    pub key: ObjectKey,
    /// The key the file had before, when it moved or was renamed; removed after the new one is written.
    pub previous_key: Option<ObjectKey>,
    /// What to do.
    pub kind: ActionKind,
    /// How many times this action has been attempted (verification retries).
    pub attempt: u32,
}

/// What the chunk-uploader reports once an object is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    /// The plan that produced it.
    pub planned: Planned,
    /// MD5 of the bytes streamed, hex.
    pub md5: String,
    /// SHA-256 of the bytes streamed, hex; `None` when `[pipeline] sha256 = false`.
    pub sha256: Option<String>,
    /// Bytes streamed.
    pub size: u64,
    /// The md5 the destination reported for the stored object (a single PUT's ETag on S3), which
    /// proves the write without a HEAD.
    pub stored_md5: Option<String>,
}

/// Per-file state the store keeps so that later runs are idempotent and moves are copies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Drive id.
    pub id: FileId,
    /// Drive name, unsanitized, so nothing is lost.
    pub name: String,
    /// First parent.
    pub parent: Option<FileId>,
    /// Drive mime type.
    pub mime_type: String,
    /// Drive version mirrored.
    pub version: u64,
    /// MD5 of the mirrored bytes.
    pub md5: Option<String>,
    /// SHA-256 of the mirrored bytes.
    pub sha256: Option<String>,
    /// Size of the mirrored bytes.
    pub size: u64,
    /// Where it lives in the destination.
    pub key: ObjectKey,
    /// Drive modification time.
    pub modified_time: Option<String>,
}

/// A folder as the planner needs it to build paths.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderRecord {
    /// Drive id.
    pub id: FileId,
    /// Drive name, unsanitized.
    pub name: String,
    /// Parent folder.
    pub parent: Option<FileId>,
    /// Shared drive, if any.
    pub drive_id: Option<DriveId>,
    /// The sanitized, disambiguated key prefix of this folder (without trailing slash).
    pub key: ObjectKey,
    /// Whether the folder is trashed (its subtree is then not mirrored).
    pub trashed: bool,
}

impl FolderRecord {
    /// A shared drive's root: recorded like a folder (its key holds the drive's name), with the
    /// drive's id and no parent. Its fate follows drive-level changes, never file-level ones.
    pub fn is_drive_root(&self) -> bool {
        self.parent.is_none() && self.drive_id.as_ref().is_some_and(|d| d.0 == self.id.0)
    }
}

/// Why an event ended without a write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipReason {
    /// A newer event for the same file replaced it.
    Superseded,
    /// The store already holds this version.
    Unchanged,
    /// Shortcuts are recorded, not followed.
    Shortcut,
    /// Trashed or outside the configured scope.
    NotInScope,
    /// Drive changed while we were downloading; a newer change will come.
    Stale,
    /// Deleted (or access lost) in Drive before its bytes were read: its removal is in the change log.
    Gone,
    /// A Google type Drive cannot export (Forms, Sites, Maps…): there are no bytes to mirror.
    NoExport(Refused),
    /// The owner disabled downloads (`capabilities.canDownload` false): Drive answers 403 to any
    /// download or export, so none is attempted.
    DownloadDisabled(Refused),
    /// Drive flagged the file as malware or spam and `acknowledge_abuse` is off (turning it on would
    /// let the user download it: they own it, or organize its shared drive).
    Abusive(Refused),
    /// Drive flagged the file as malware or spam, and no acknowledgement from this user counts:
    /// `acknowledgeAbuse` applies only to the file's owner or an organizer of its shared drive. Only
    /// a new version is asked for again.
    AbusiveNotOwned(Refused),
    /// Drive refused the download with `downloadQuotaExceeded` (the file was downloaded too often
    /// lately): deferred for hours, not dead-lettered.
    QuotaDeferred(Refused),
}

/// The version of a file Drive would not hand over, so the store can tell "same file, same answer"
/// (skipped again without asking Drive) from a new version (tried again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Drive version refused.
    pub version: u64,
    /// Drive name, for `status` and logs.
    pub name: String,
}

impl Refused {
    /// The version and name of `file`.
    pub fn of(file: &DriveFile) -> Refused {
        Refused { version: file.version, name: file.name.clone() }
    }
}

impl SkipReason {
    /// The reason as `status`, the summary and the `reason` label of `mirrorflow_skipped_total` name it.
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::Superseded => "superseded",
            SkipReason::Unchanged => "unchanged",
            SkipReason::Shortcut => "shortcut",
            SkipReason::NotInScope => "not_in_scope",
            SkipReason::Stale => "stale",
            SkipReason::Gone => "gone",
            SkipReason::NoExport(_) => "no_export",
            SkipReason::DownloadDisabled(_) => "download_disabled",
            SkipReason::Abusive(_) => "abusive",
            SkipReason::AbusiveNotOwned(_) => "abusive_not_owned",
            SkipReason::QuotaDeferred(_) => "quota_deferred",
        }
    }

    /// The refused version when Drive will not hand the file over (recorded, so the same version is
    /// not asked for again).
    pub fn refused(&self) -> Option<&Refused> {
        match self {
            SkipReason::NoExport(r)
            | SkipReason::DownloadDisabled(r)
            | SkipReason::Abusive(r)
            | SkipReason::AbusiveNotOwned(r)
            | SkipReason::QuotaDeferred(r) => Some(r),
            _ => None,
        }
    }
}

/// Dead-letter entry: a file we could not mirror and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Drive id.
    pub id: FileId,
    /// Drive name, for humans.
    pub name: String,
    /// Intended key.
    pub key: Option<ObjectKey>,
    /// Short machine-readable reason, e.g. `cannotDownloadAbusiveFile`.
    pub reason: String,
    /// The last error in full.
    pub last_error: String,
    /// Attempts made.
    pub attempts: u32,
    /// Unix seconds when it was dead-lettered.
    pub at_unix: u64,
}

/// The single terminal result of an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutcomeKind {
    /// The destination now holds this file; record it.
    Committed(FileRecord),
    /// A folder was recorded (or re-recorded after a rename).
    FolderRecorded(FolderRecord),
    /// The file is gone from the destination (deleted, trashed, moved out of scope).
    Removed {
        /// The key that was removed, if any.
        key: Option<ObjectKey>,
    },
    /// Nothing was done.
    Skipped(SkipReason),
    /// Could not be mirrored; see the dead-letter store.
    DeadLettered(DeadLetter),
    /// A folder's subtree was moved or removed.
    TreeChanged(TreeChange),
}

/// A terminal outcome for one event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The event it ends.
    pub seq: ChangeSeq,
    /// The file concerned.
    pub file_id: FileId,
    /// What happened.
    pub kind: OutcomeKind,
}

/// A stage of the pipeline, as named in `[stages.<name>]`, metrics, logs and `[testing] fail_stage`.
/// A typed name, so a stage's settings cannot silently fall back to another stage's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StageName {
    /// Reads Drive's listings and change logs.
    ChangeFeed,
    /// One event per file in flight.
    Dedup,
    /// Decides each event's action and key.
    Planner,
    /// Streams bytes from Drive.
    Downloader,
    /// Writes them to the destination.
    Uploader,
    /// Checks what was written.
    Verifier,
    /// Records outcomes and checkpoints.
    Committer,
}

impl StageName {
    /// Every stage, in pipeline order.
    pub const ALL: [StageName; 7] = [
        StageName::ChangeFeed,
        StageName::Dedup,
        StageName::Planner,
        StageName::Downloader,
        StageName::Uploader,
        StageName::Verifier,
        StageName::Committer,
    ];

    /// The name in config, metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            StageName::ChangeFeed => "change_feed",
            StageName::Dedup => "dedup",
            StageName::Planner => "planner",
            StageName::Downloader => "downloader",
            StageName::Uploader => "uploader",
            StageName::Verifier => "verifier",
            StageName::Committer => "committer",
        }
    }

    /// The stage named `name` in config.
    pub fn parse(name: &str) -> Option<StageName> {
        StageName::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Workers when the config does not say.
    pub const fn default_concurrency(self) -> usize {
        match self {
            StageName::Downloader | StageName::Uploader => 8,
            StageName::Verifier => 4,
            _ => 1,
        }
    }

    /// Stages that keep order run one worker.
    pub const fn single_worker(self) -> bool {
        matches!(self, StageName::ChangeFeed | StageName::Dedup | StageName::Planner | StageName::Committer)
    }

    /// Whether the stage reads an input channel (the feed reads Drive).
    pub const fn has_input(self) -> bool {
        !matches!(self, StageName::ChangeFeed)
    }
}

impl std::fmt::Display for StageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which part of Drive one listing or one change log covers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Corpus {
    /// The user's My Drive: the user's log with `restrictToMyDrive`.
    MyDrive,
    /// One shared drive.
    SharedDrive(DriveId),
    /// The user's whole log (`[source] shared_with_me`): My Drive and the items other people shared
    /// with the user, which `restrictToMyDrive` would leave out. Listed like My Drive (`corpora=user`
    /// holds both).
    MyDriveAndShared,
}

impl Corpus {
    /// True for the user's own log (either kind), false for a shared drive's.
    pub fn is_user_log(&self) -> bool {
        !matches!(self, Corpus::SharedDrive(_))
    }
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_opens_the_target_s_web_view_link_only_when_it_is_a_plain_http_address() {
        let target = FileId("abc".into());
        let body = |link: Option<&str>| shortcut_link_body(Some(&target), link);
        let view = "https://drive.google.com/file/d/abc/view?usp=drivesdk";
        assert_eq!(body(Some(view)), format!("[InternetShortcut]\r\nURL={view}\r\n"));
        let generic = "[InternetShortcut]\r\nURL=https://drive.google.com/open?id=abc\r\n";
        assert_eq!(body(None), generic, "target not looked up, or gone");
        assert_eq!(body(Some("https://x\r\nIconFile=evil")), generic, "no line of the file is injected");
        assert_eq!(body(Some("javascript:alert(1)")), generic, "only http(s)");
    }

    #[test]
    fn a_followed_shortcut_is_its_target_at_its_own_place() {
        let mut target = crate::stages::testing::file("t", "report.pdf", 10, "md5t");
        target.parents = vec![FileId("elsewhere".into())];
        target.version = 7;
        let mut shortcut = crate::stages::testing::file("s", "Shortcut to report", 0, "");
        shortcut.mime_type = SHORTCUT_MIME.into();
        shortcut.parents = vec![FileId("here".into())];
        shortcut.shortcut_target = Some(target.id.clone());
        let f = shortcut.followed(&target);
        assert_eq!((f.id.as_str(), f.name.as_str(), f.parents[0].as_str()), ("s", "Shortcut to report", "here"));
        assert_eq!((f.version, f.md5.as_deref(), f.size), (7, Some("md5t"), Some(10)));
        assert_eq!(f.content_id(), &target.id, "the bytes are downloaded from the target");
        assert!(!f.is_shortcut());
    }
}
