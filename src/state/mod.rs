//! The embedded fjall store: file and folder records, key claims, checkpoints, the dead-letter store
//! and the audit log (kept for `[state] audit_retention`). Only the committer writes; everyone may read.

mod audit;
mod claims;
pub mod codec;
mod content;
mod follows;
mod memory;
mod skips;
mod sweep;
pub mod uploads;
mod versions;
pub mod watermark;

use crate::internal_events::InternalEvent;
use crate::model::{
    DeadLetter, DriveId, FileId, FileRecord, FolderRecord, ObjectKey, Outcome, OutcomeKind, Refresh, SkipReason,
};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The state boundary's error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// fjall failed; `Poisoned` means the process must crash and recover, not retry.
    #[error("state store: {0}")]
    Fjall(#[from] fjall::Error),
    /// A value could not be encoded or decoded.
    #[error("state store codec: {0}")]
    Codec(String),
    /// The blocking task running the store call failed.
    #[error("state store task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// True when another process (a running pipeline) holds the store.
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Fjall(fjall::Error::Locked))
    }
}

/// Where the change-feed is, saved under the checkpoint rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// `changes.getStartPageToken` taken before the initial listing (T0).
    pub start_token: String,
    /// How far the feed got.
    pub phase: FeedPhase,
    /// When the feed read the page this checkpoint resumes after (Unix ms): the last poll time.
    pub read_at_unix_ms: u64,
    /// One token per change log followed (the user's for My Drive, each shared drive's own): while
    /// listing, the start page token taken before the listing; after, where that log resumes. A
    /// checkpoint whose logs are not those of the current scope (written before per-drive logs, or a
    /// drive joined the scope) is resumed by listing everything again (mark and sweep).
    pub feeds: Vec<(crate::model::Corpus, String)>,
}

/// A checkpoint, also one written before per-drive change logs (no `feeds`: it resumes with a relist).
fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, StoreError> {
    #[derive(Deserialize)]
    struct OneLog {
        start_token: String,
        phase: FeedPhase,
        read_at_unix_ms: u64,
    }
    codec::decode::<Checkpoint>(bytes).or_else(|e| {
        let old: OneLog = codec::decode(bytes).map_err(|_| e)?;
        Ok(Checkpoint {
            start_token: old.start_token,
            phase: old.phase,
            read_at_unix_ms: old.read_at_unix_ms,
            feeds: vec![],
        })
    })
}

pub use crate::model::unix_ms;

/// The feed's phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedPhase {
    /// Initial listing: job index (see the change-feed) and the files.list page token to resume at.
    Listing {
        /// Index of the listing job.
        job: usize,
        /// Page token to resume from (None = job start).
        page_token: Option<String>,
    },
    /// Following changes.list from this token.
    Changes {
        /// Token to resume from.
        token: String,
    },
}

/// A group of outcomes written atomically, with the checkpoint when it advanced.
#[derive(Debug, Default)]
pub struct CommitBatch {
    /// Terminal outcomes.
    pub outcomes: Vec<Outcome>,
    /// Steps of subtree changes, written before the outcomes (a tree's steps precede its outcome).
    pub tree_steps: Vec<crate::model::TreeStep>,
    /// A checkpoint the watermark now covers.
    pub checkpoint: Option<Checkpoint>,
    /// The next seq a later run should use.
    pub next_seq: u64,
    /// Refresh requests to record.
    pub refresh_add: Vec<Refresh>,
    /// Refresh requests served and committed: cleared if still at the generation served.
    pub refresh_done: Vec<(Refresh, u64)>,
    /// Folder records to write before the outcomes (ancestors the planner looked up).
    pub folders: Vec<FolderRecord>,
    /// Old keys a committed move left behind, noted as unfinished writes (removed at the next start).
    pub leftovers: Vec<Intent>,
    /// A full listing starts over a populated store: forget what an earlier one saw, start marking.
    pub listing_started: bool,
    /// Items the listing saw (kept only while a sweep is armed).
    pub listed: Vec<FileId>,
    /// The listing is over and committed: refresh every record it did not see, then disarm.
    pub sweep: bool,
    /// Which target each shortcut follows now (`shortcuts = "follow"`).
    pub follows: Vec<(FileId, Option<FileId>)>,
}

/// The kinds of record that say something of one Drive item ([`Store::record_ids_page`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// Mirrored files.
    File,
    /// Folders and shared-drive roots.
    Folder,
    /// Dead letters.
    DeadLetter,
    /// Files Drive will not hand over.
    Skip,
    /// Files with earlier contents kept (`[destination] versions`).
    Version,
}

/// Summary counts, for `status` and metrics.
#[derive(Debug, Default, Clone, Serialize)]
pub struct StoreCounts {
    /// Files mirrored.
    pub files: usize,
    /// Folders known.
    pub folders: usize,
    /// Dead-lettered files.
    pub dead_lettered: usize,
    /// Bytes mirrored.
    pub bytes: u64,
    /// Files Drive will not hand over, by reason (`download_disabled`, `abusive`, `no_export`,
    /// `quota_deferred`).
    pub skipped: std::collections::BTreeMap<String, usize>,
}

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Database,
    files: Keyspace,
    folders: Keyspace,
    checkpoints: Keyspace,
    dlq: Keyspace,
    audit: Keyspace,
    uploads: Keyspace,
    /// Collision class → file id holding it.
    claims: Keyspace,
    /// File id → collision class it holds.
    claimed: Keyspace,
    /// Refresh requests (encoded [`Refresh`]) → generation, until their events are committed.
    refresh: Keyspace,
    /// Ids a full listing over a populated store has seen (mark and sweep), plus [`SWEEP_ARMED`].
    seen: Keyspace,
    /// `parent id/file id` of every file record with a parent: a folder's files without a scan of
    /// every file (subtree moves and removals cost the subtree, not the drive).
    children: Keyspace,
    /// Keys an action is about to write (object key → file id), until the outcome that records them
    /// is committed: what a crash leaves here and no record owns is an unfinished write, removed at
    /// the next start (see [`Store::pending_intents`]).
    intents: Keyspace,
    /// Files Drive will not hand over (file id → [`SkipRecord`]): skipped again, without asking
    /// Drive, until a new version comes (or a quota deferral ends).
    skipped: Keyspace,
    /// Shortcuts mirrored with `shortcuts = "follow"` and the targets they follow, both ways (see
    /// `follows.rs`).
    follows: Keyspace,
    /// Which files hold which content (`<md5>\0<file id>`): a new file with content already mirrored
    /// is copied server-side (see `content.rs`).
    content_refs: Keyspace,
    /// Earlier contents kept under `.versions/` (see `versions.rs`).
    versions: Keyspace,
    /// The memory budget of memtables and block cache (`[state] memory`).
    memory: StoreMemory,
}

pub use audit::AuditEntry;
pub use memory::{DEFAULT_STORE_MEMORY, MAX_STORE_MEMORY, MIN_STORE_MEMORY, StoreMemory};
pub use skips::{QUOTA_DEFERRAL, SkipRecord};
pub use uploads::UploadBook;
pub use versions::KeptVersion;

/// A multipart upload in progress, recorded before its first part so a crash never orphans it, and
/// updated as parts finish so a restarted run continues from the last recorded part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Key being written.
    pub key: ObjectKey,
    /// The store's upload id.
    pub upload_id: String,
    /// The Drive content being uploaded (md5, size); only the same content may continue these parts.
    pub content: Option<(String, u64)>,
    /// The parts finished so far, in order from the first, and where they end.
    pub resume: Option<ResumePoint>,
}

/// Where an interrupted multipart upload can continue: its first parts are stored, and the digests
/// of the bytes they hold are saved, so only the rest of the file needs downloading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePoint {
    /// Part ids (ETags) of parts 1..=n, all finished.
    pub parts: Vec<String>,
    /// Bytes those parts hold: the download continues from here.
    pub offset: u64,
    /// md5/sha256 state after those bytes.
    pub hashes: crate::hashing::HashState,
}

impl UploadRecord {
    /// The resume point, if this record continues exactly `md5`/`size` at `key`.
    pub fn resumable_for(&self, key: &ObjectKey, md5: Option<&str>, size: Option<u64>) -> Option<&ResumePoint> {
        let same_content = match (&self.content, md5, size) {
            (Some((m, s)), Some(md5), Some(size)) => m == md5 && *s == size,
            _ => false,
        };
        let point = self.resume.as_ref().filter(|p| p.offset > 0 && !p.parts.is_empty())?;
        (same_content && self.key == *key && point.offset < size.unwrap_or(0)).then_some(point)
    }
}

/// A key an action is about to write, noted before the write (see [`Store::record_intents`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    /// The key written.
    pub key: ObjectKey,
    /// The file whose action writes it.
    pub file: FileId,
    /// True when the write moves the bytes the file's record already describes (a rename's copy, a
    /// folder move's step), false when it writes new bytes.
    pub moves_recorded_bytes: bool,
}

/// What a crashed run's uncommitted write is, judged at the next start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unfinished {
    /// A committed record owns the key after all (or may: another file holds its claim): keep it.
    Owned,
    /// A move of recorded bytes that was not committed: the record still names this key (and size).
    /// If the move already removed the object there, it is moved back, so the record holds again.
    MovedFrom(ObjectKey, u64),
    /// Nobody owns it: remove it (the replayed event writes again wherever Drive has the file).
    Orphan,
}

/// One page of a folder's files (see [`Store::files_in_folder_page`]).
#[derive(Debug, Default)]
pub struct FolderPage {
    /// The records read.
    pub records: Vec<FileRecord>,
    /// Where the next page starts (`after`), or `None` when the folder has no more entries.
    pub next: Option<FileId>,
}

/// What one `apply` changed that callers track outside the store.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// The dead-letter store gained or lost an entry (the metric needs a recount).
    pub dead_letters_changed: bool,
    /// Files dead-lettered by this batch (a later outcome in the same batch may clear them).
    dead_lettered_in_batch: Vec<FileId>,
}

/// Decodes an upload record, including one written before uploads were resumable (key and id only):
/// such an upload is still aborted at start rather than failing the run.
fn decode_upload(bytes: &[u8]) -> Result<UploadRecord, StoreError> {
    #[derive(Deserialize)]
    struct Before {
        key: ObjectKey,
        upload_id: String,
    }
    codec::decode::<UploadRecord>(bytes).or_else(|e| {
        let old: Before = codec::decode(bytes).map_err(|_| e)?;
        Ok(UploadRecord { key: old.key, upload_id: old.upload_id, content: None, resume: None })
    })
}

/// Journal bytes kept before fjall flushes the memtables the oldest journal covers (fjall's minimum;
/// its default is 512 MiB). fjall 3 seals the active journal at a flush once it passes 64 MB, so
/// with memtables flushed within `[state] memory` (see `memory.rs`) a start replays a bounded journal.
const JOURNAL_LIMIT: u64 = 64 << 20;

const CHECKPOINT_KEY: &[u8] = b"feed";
/// Present while a run over an empty state adopts what the destination already holds.
const ADOPTING_MARK: &[u8] = b"adopting";
const NEXT_SEQ_KEY: &[u8] = b"next_seq";
/// The destination (URL and endpoint) whose objects this state describes.
const DESTINATION_KEY: &[u8] = b"destination";
/// Records per write batch when an index is built from the records once (a few in unit tests, so
/// they cross batches).
pub(super) const BUILD_CHUNK: usize = if cfg!(test) { 3 } else { 10_000 };
/// Present once the children index covers every file record.
const CHILDREN_INDEXED: &[u8] = b"children_indexed";

/// The children-index key of `file` under `parent`.
fn children_key(parent: &FileId, file: &FileId) -> String {
    format!("{parent}/{file}")
}

impl Store {
    /// Opens (or creates) the store in `dir` with the default memory budget (tools and tests).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, StoreMemory::default())
    }

    /// Opens (or creates) the store in `dir`, its memtables and block cache within `memory`.
    pub fn open_with(dir: &Path, memory: StoreMemory) -> Result<Store, StoreError> {
        let db = Database::builder(dir).max_journaling_size(JOURNAL_LIMIT).cache_size(memory.cache_bytes()).open()?;
        let ks = |name: &str| db.keyspace(name, || keyspace_options(memory, name));
        drop_retired_keyspaces(&db)?;
        Ok(Store {
            files: ks("files")?,
            folders: ks("folders")?,
            checkpoints: ks("checkpoints")?,
            dlq: ks("dlq")?,
            audit: ks("audit")?,
            uploads: ks("uploads")?,
            claims: ks("claims")?,
            claimed: ks("claimed")?,
            refresh: ks("refresh")?,
            seen: ks("seen")?,
            intents: ks("intents")?,
            children: ks("children")?,
            skipped: ks("skipped")?,
            follows: ks("follows")?,
            content_refs: ks("content_refs")?,
            versions: ks("versions")?,
            db,
            memory,
        })
        .and_then(|store| {
            store.build_children_index_once()?;
            store.build_content_index_once()?;
            store.rebuild_claims_once()?;
            store.finish_sweep()?;
            Ok(store)
        })
    }

    /// Commits `batch`, then flushes the memtables once together they hold more than the store's
    /// write buffer (`[state] memory`): every write of the store goes through here, so memory stays
    /// within the budget whatever the keyspaces were created with.
    fn commit(&self, batch: fjall::OwnedWriteBatch) -> Result<(), StoreError> {
        batch.commit()?;
        self.keep_within_memory()
    }

    /// Rotates every keyspace's memtable (fjall flushes them in the background) when their total
    /// is over the write buffer.
    fn keep_within_memory(&self) -> Result<(), StoreError> {
        if !self.memory.over_budget(self.db.write_buffer_size()) {
            return Ok(());
        }
        crate::internal_events::MemtablesFlushed.emit();
        for ks in self.keyspaces() {
            ks.rotate_memtable()?;
        }
        Ok(())
    }

    /// Every keyspace of the store.
    fn keyspaces(&self) -> [&Keyspace; 16] {
        [
            &self.files,
            &self.folders,
            &self.checkpoints,
            &self.dlq,
            &self.audit,
            &self.uploads,
            &self.claims,
            &self.claimed,
            &self.refresh,
            &self.seen,
            &self.children,
            &self.intents,
            &self.skipped,
            &self.follows,
            &self.content_refs,
            &self.versions,
        ]
    }

    /// A store written before the children index gets it, once, from its file records.
    fn build_children_index_once(&self) -> Result<(), StoreError> {
        self.index_records_once(CHILDREN_INDEXED, |b, rec| {
            if let Some(parent) = &rec.parent {
                b.insert(&self.children, children_key(parent, &rec.id), []);
            }
        })
    }

    /// Builds an index from every file record, once, [`BUILD_CHUNK`] records per batch (memory holds
    /// one chunk, whatever the store's size): `flag` in `checkpoints`, written with the last chunk,
    /// says it is built (by this, or by the commits that keep it since). Indexing a record twice writes
    /// the same entry, so a build a crash interrupted starts over.
    fn index_records_once(
        &self,
        flag: &[u8],
        index: impl Fn(&mut fjall::OwnedWriteBatch, &FileRecord),
    ) -> Result<(), StoreError> {
        if self.checkpoints.contains_key(flag)? {
            return Ok(());
        }
        let mut b = self.db.batch();
        for (n, g) in self.files.iter().enumerate() {
            index(&mut b, &codec::decode(&g.value()?)?);
            if (n + 1).is_multiple_of(BUILD_CHUNK) {
                self.commit(std::mem::replace(&mut b, self.db.batch()))?;
            }
        }
        b.insert(&self.checkpoints, flag, []);
        self.commit(b)?;
        Ok(())
    }

    /// The file records whose parent is `folder` (from the children index; an entry whose record
    /// names another parent now is not returned).
    pub fn files_in_folder(&self, folder: &FileId) -> Result<Vec<FileRecord>, StoreError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.files_in_folder_page(folder, after.as_ref(), 1024)?;
            out.extend(page.records);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Up to `limit` index entries of `folder` after the id `after` (in id order), as records: a
    /// folder of any size is read a bounded page at a time. Paging by id is stable while earlier pages'
    /// records are rewritten or removed.
    pub fn files_in_folder_page(
        &self,
        folder: &FileId,
        after: Option<&FileId>,
        limit: usize,
    ) -> Result<FolderPage, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(id) => Bound::Excluded(children_key(folder, id)),
            None => Bound::Included(format!("{folder}/")),
        };
        // Ids never contain '/', and '0' is the byte after it: the end of this folder's entries.
        let end = Bound::Excluded(format!("{folder}0"));
        let mut page = FolderPage::default();
        let mut read = 0;
        for g in self.children.range((start, end)) {
            let key = g.key()?;
            let id = FileId(String::from_utf8_lossy(&key[folder.as_str().len() + 1..]).into_owned());
            if let Some(rec) = self.file(&id)?
                && rec.parent.as_ref() == Some(folder)
            {
                page.records.push(rec);
            }
            read += 1;
            if read == limit {
                page.next = Some(id);
                break;
            }
        }
        Ok(page)
    }

    /// Index entries (for tests: they follow the file records).
    pub fn children_entries(&self) -> Result<usize, StoreError> {
        Ok(self.children.len()?)
    }

    /// The record of a mirrored file.
    pub fn file(&self, id: &FileId) -> Result<Option<FileRecord>, StoreError> {
        self.files.get(id.as_str())?.map(|v| codec::decode(&v)).transpose()
    }

    /// A folder record.
    pub fn folder(&self, id: &FileId) -> Result<Option<FolderRecord>, StoreError> {
        self.folders.get(id.as_str())?.map(|v| codec::decode(&v)).transpose()
    }

    /// Every folder (folders are few compared to files; the planner keeps them in memory).
    pub fn all_folders(&self) -> Result<Vec<FolderRecord>, StoreError> {
        self.folders.iter().map(|g| codec::decode(&g.value()?)).collect()
    }

    /// The shared drives whose roots are recorded: the drives the mirror holds files of.
    pub fn drive_roots(&self) -> Result<Vec<DriveId>, StoreError> {
        let roots = self.all_folders()?.into_iter().filter(FolderRecord::is_drive_root);
        Ok(roots.filter_map(|f| f.drive_id).collect())
    }

    /// Up to `limit` ids of `kind`'s records after `after`, in id order: a whole kind read a bounded
    /// page at a time (the index's rebuild). Stable while earlier pages' records change.
    pub fn record_ids_page(
        &self,
        kind: RecordKind,
        after: Option<&FileId>,
        limit: usize,
    ) -> Result<Vec<FileId>, StoreError> {
        use std::ops::Bound;
        let keyspace = match kind {
            RecordKind::File => &self.files,
            RecordKind::Folder => &self.folders,
            RecordKind::DeadLetter => &self.dlq,
            RecordKind::Skip => &self.skipped,
            RecordKind::Version => return self.version_ids_page(after, limit),
        };
        let start = match after {
            Some(id) => Bound::Excluded(id.as_str().as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        keyspace
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take(limit)
            .map(|g| Ok(FileId(String::from_utf8_lossy(&g.key()?).into_owned())))
            .collect()
    }

    /// Every file record, streamed.
    pub fn for_each_file(&self, mut f: impl FnMut(FileRecord)) -> Result<(), StoreError> {
        for g in self.files.iter() {
            f(codec::decode(&g.value()?)?);
        }
        Ok(())
    }

    /// The saved feed checkpoint.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.checkpoints.get(CHECKPOINT_KEY)?.map(|v| decode_checkpoint(&v)).transpose()
    }

    /// The first seq a new run should use.
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.checkpoints.get(NEXT_SEQ_KEY)?.map(|v| codec::decode(&v)).transpose()?.unwrap_or(1))
    }

    /// Every dead-lettered file.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.dlq.iter().map(|g| codec::decode(&g.value()?)).collect()
    }

    /// The dead-letter entry of one file.
    pub fn dead_letter(&self, id: &FileId) -> Result<Option<DeadLetter>, StoreError> {
        self.dlq.get(id.as_str())?.map(|v| codec::decode(&v)).transpose()
    }

    /// Records refresh requests and nothing else, synced, in batches of 10,000: `verify`'s repairs
    /// (`Refresh::Repair`, `Refresh::Stray`). Only the refresh keyspace is written, so this is safe
    /// beside a running pipeline: what the requests change is committed by the committer, like any
    /// other outcome.
    pub fn add_refresh_requests(&self, requests: &[Refresh]) -> Result<(), StoreError> {
        for chunk in requests.chunks(10_000) {
            let mut b = self.db.batch().durability(Some(PersistMode::SyncData));
            for request in chunk {
                b.insert(&self.refresh, codec::encode(request)?, codec::encode(&rand::random::<u64>())?);
            }
            self.commit(b)?;
        }
        Ok(())
    }

    /// Removes files from the dead-letter store (before a retry); all of them when `ids` is empty.
    pub fn clear_dead_letters(&self, ids: &[FileId]) -> Result<usize, StoreError> {
        let targets: Vec<FileId> =
            if ids.is_empty() { self.dead_letters()?.into_iter().map(|d| d.id).collect() } else { ids.to_vec() };
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        let mut n = 0;
        for id in &targets {
            if self.dlq.contains_key(id.as_str())? {
                batch.remove(&self.dlq, id.as_str());
                n += 1;
            }
        }
        self.commit(batch)?;
        Ok(n)
    }

    /// Counts for `status`.
    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        let mut c = StoreCounts::default();
        self.for_each_file(|r| {
            c.files += 1;
            c.bytes += r.size;
        })?;
        c.folders = self.folders.len()?;
        c.dead_lettered = self.dlq.len()?;
        for (_, rec) in self.skipped_files()? {
            *c.skipped.entry(rec.reason).or_default() += 1;
        }
        Ok(c)
    }

    /// Writes one group of outcomes atomically; syncs to disk when the checkpoint advances, and when it
    /// holds subtree steps (so a crash keeps the objects moved so far instead of moving them back).
    pub fn apply(&self, batch: &CommitBatch) -> Result<ApplyReport, StoreError> {
        let synced = batch.checkpoint.is_some() || !batch.tree_steps.is_empty();
        let durability = synced.then_some(PersistMode::SyncData);
        if batch.listing_started {
            self.clear_marks()?;
        }
        let mut b = self.db.batch().durability(durability);
        let mut report = ApplyReport::default();
        self.stage_mark_and_sweep(&mut b, batch)?;
        for (request, generation) in &batch.refresh_done {
            let key = codec::encode(request)?;
            if self.refresh.get(&key)?.is_some_and(|v| codec::decode::<u64>(&v).ok() == Some(*generation)) {
                b.remove(&self.refresh, key);
            }
        }
        for request in &batch.refresh_add {
            b.insert(&self.refresh, codec::encode(request)?, codec::encode(&rand::random::<u64>())?);
        }
        self.stage_follows(&mut b, &batch.follows)?;
        let now_ms = unix_ms();
        let mut parents = InBatch::default();
        for i in &batch.leftovers {
            b.insert(&self.intents, i.key.as_str(), codec::encode(&(&i.file, i.moves_recorded_bytes))?);
        }
        for f in &batch.folders {
            b.insert(&self.folders, f.id.as_str(), codec::encode(f)?);
            self.stage_claim(&mut b, &f.id, &f.key, &mut parents.claims)?;
            parents.audit.push(AuditEntry::record_change(&f.id, "folder", Some(&f.key)));
        }
        for step in &batch.tree_steps {
            self.stage_tree_files(&mut b, &step.files, step.remove, &step.lost, &mut parents)?;
        }
        for o in &batch.outcomes {
            self.stage_outcome(&mut b, o, &mut report, now_ms, &mut parents)?;
        }
        self.stage_audit(&mut b, std::mem::take(&mut parents.audit), now_ms)?;
        if let Some(cp) = &batch.checkpoint {
            b.insert(&self.checkpoints, CHECKPOINT_KEY, codec::encode(cp)?);
        }
        b.insert(&self.checkpoints, NEXT_SEQ_KEY, codec::encode(&batch.next_seq)?);
        self.commit(b)?;
        if batch.sweep {
            self.finish_sweep()?;
        }
        Ok(report)
    }

    /// The parent a file's record names before this write: as written earlier in the same batch, else
    /// as stored.
    fn parent_before(&self, id: &FileId, parents: &InBatch) -> Result<Option<FileId>, StoreError> {
        match parents.parents.get(id) {
            Some(p) => Ok(p.clone()),
            None => Ok(self.file(id)?.and_then(|r| r.parent)),
        }
    }

    /// Keeps the children index in step with a file record written (`parent` = its parent) or
    /// removed (`parent` = `None`).
    fn stage_parent(
        &self,
        b: &mut fjall::OwnedWriteBatch,
        id: &FileId,
        parent: Option<&FileId>,
        parents: &mut InBatch,
    ) -> Result<(), StoreError> {
        let before = self.parent_before(id, parents)?;
        if let Some(old) = before.as_ref().filter(|old| Some(*old) != parent) {
            b.remove(&self.children, children_key(old, id));
        }
        if let Some(new) = parent {
            b.insert(&self.children, children_key(new, id), []);
        }
        parents.parents.insert(id.clone(), parent.cloned());
        Ok(())
    }

    fn stage_outcome(
        &self,
        b: &mut fjall::OwnedWriteBatch,
        o: &Outcome,
        report: &mut ApplyReport,
        now_ms: u64,
        parents: &mut InBatch,
    ) -> Result<(), StoreError> {
        let id = o.file_id.as_str();
        // A skip that ends a dead letter or a refusal changes what the index says of the file.
        let status_ends = matches!(o.kind, OutcomeKind::Skipped(SkipReason::NotInScope | SkipReason::Gone))
            && (report.dead_lettered_in_batch.contains(&o.file_id)
                || self.dlq.contains_key(id)?
                || self.skipped.contains_key(id)?);
        match &o.kind {
            OutcomeKind::Committed(rec) => {
                self.stage_parent(b, &o.file_id, rec.parent.as_ref(), parents)?;
                self.stage_content(b, &o.file_id, rec.md5.as_deref(), parents)?;
                self.stage_claim(b, &o.file_id, &rec.key, &mut parents.claims)?;
                b.insert(&self.files, id, codec::encode(rec)?);
                b.remove(&self.intents, rec.key.as_str());
                self.stage_dlq_removal(b, &o.file_id, report)?;
                self.stage_skip_removal(b, &o.file_id)?;
            }
            OutcomeKind::FolderRecorded(f) => {
                b.insert(&self.folders, id, codec::encode(f)?);
                self.stage_claim(b, &o.file_id, &f.key, &mut parents.claims)?;
            }
            OutcomeKind::Removed { .. } => {
                self.stage_parent(b, &o.file_id, None, parents)?;
                self.stage_content(b, &o.file_id, None, parents)?;
                self.stage_release(b, &o.file_id, &mut parents.claims)?;
                b.remove(&self.files, id);
                b.remove(&self.folders, id);
                self.stage_dlq_removal(b, &o.file_id, report)?;
                self.stage_skip_removal(b, &o.file_id)?;
            }
            OutcomeKind::DeadLettered(d) => {
                self.stage_skip_removal(b, &o.file_id)?;
                b.insert(&self.dlq, id, codec::encode(d)?);
                report.dead_lettered_in_batch.push(o.file_id.clone());
                report.dead_letters_changed = true;
            }
            // Trashed, out of scope, or gone before its download: whatever made it a dead letter no
            // longer applies (every later run would otherwise exit 3 for a file that is not there).
            OutcomeKind::Skipped(SkipReason::NotInScope | SkipReason::Gone) => {
                self.stage_dlq_removal(b, &o.file_id, report)?;
                self.stage_skip_removal(b, &o.file_id)?;
            }
            // Drive will not hand this version over: recorded, so it is not asked for again, and
            // whatever dead letter an earlier version left no longer applies.
            OutcomeKind::Skipped(reason) if reason.refused().is_some() => {
                self.stage_skip(b, &o.file_id, reason, now_ms)?;
                self.stage_dlq_removal(b, &o.file_id, report)?;
            }
            OutcomeKind::Skipped(_) => {}
            OutcomeKind::TreeChanged(t) => self.stage_tree(b, o, t, parents)?,
        }
        if audit::audited(o) || status_ends {
            parents.audit.push(AuditEntry::from(o));
        }
        Ok(())
    }

    /// Clears a file's dead letter only if it has one: an unconditional remove would leave a tombstone
    /// per committed file, and counting dead letters would then scan every file ever committed.
    fn stage_dlq_removal(
        &self,
        b: &mut fjall::OwnedWriteBatch,
        id: &FileId,
        report: &mut ApplyReport,
    ) -> Result<(), StoreError> {
        if report.dead_lettered_in_batch.contains(id) || self.dlq.contains_key(id.as_str())? {
            b.remove(&self.dlq, id.as_str());
            report.dead_letters_changed = true;
        }
        Ok(())
    }

    /// Records that actions are about to write these keys. Flushed to the OS (not synced): it must
    /// survive the process being killed, which is what leaves half-done writes behind.
    pub fn record_intents(&self, intents: &[Intent]) -> Result<(), StoreError> {
        if intents.is_empty() {
            return Ok(());
        }
        let mut b = self.db.batch().durability(Some(PersistMode::Buffer));
        for i in intents {
            b.insert(&self.intents, i.key.as_str(), codec::encode(&(&i.file, i.moves_recorded_bytes))?);
        }
        self.commit(b)?;
        Ok(())
    }

    /// Writes a crashed run announced and never committed, each with what to do about it now.
    pub fn pending_intents(&self) -> Result<Vec<(Intent, Unfinished)>, StoreError> {
        let mut out = Vec::new();
        for g in self.intents.iter() {
            let (k, v) = g.into_inner()?;
            let key = ObjectKey(String::from_utf8_lossy(&k).into_owned());
            let (file, moves_recorded_bytes): (FileId, bool) = codec::decode(&v)?;
            let holder = self.claim_holder(&crate::mirror::keys::collision_class(key.as_str()))?;
            let record = self.file(&file)?;
            let verdict = match (holder, record) {
                (_, Some(rec)) if rec.key == key => Unfinished::Owned,
                // The key is claimed by another file now: it may own the object there (its record is
                // what counts, not this intent), so the object is kept — an orphan, never a loss.
                (Some(holder), _) if holder != file => Unfinished::Owned,
                (_, Some(rec)) if moves_recorded_bytes => Unfinished::MovedFrom(rec.key, rec.size),
                _ => Unfinished::Orphan,
            };
            out.push((Intent { key, file, moves_recorded_bytes }, verdict));
        }
        Ok(out)
    }

    /// Forgets an intent once its write is dealt with.
    pub fn clear_intent(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.intents.remove(key.as_str())?;
        Ok(())
    }

    /// True while a write to `key` was announced and not yet committed.
    pub fn has_intent(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        Ok(self.intents.contains_key(key.as_str())?)
    }

    /// Binds this state to one destination: the first run records `identity`; a later one naming
    /// another destination gets the recorded one back and must stop, since every record here describes
    /// an object in the recorded destination (over a new, empty bucket they would all read as
    /// "unchanged" and nothing would be written).
    pub fn bind_destination(&self, identity: &str) -> Result<Option<String>, StoreError> {
        match self.checkpoints.get(DESTINATION_KEY)? {
            Some(v) if v.as_ref() != identity.as_bytes() => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            Some(_) => Ok(None),
            None => {
                self.checkpoints.insert(DESTINATION_KEY, identity.as_bytes())?;
                self.db.persist(PersistMode::SyncData)?;
                Ok(None)
            }
        }
    }

    /// The destination this state describes, if one was recorded (read-only: `verify`).
    pub fn bound_destination(&self) -> Result<Option<String>, StoreError> {
        Ok(self.checkpoints.get(DESTINATION_KEY)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Starts adopting: this state is empty but the destination is not. Until the first full listing
    /// is committed and the orphans are swept, objects that already hold a file's bytes are kept
    /// instead of downloaded again. Persisted, so a crash during the adoption run continues it.
    pub fn begin_adoption(&self) -> Result<(), StoreError> {
        self.checkpoints.insert(ADOPTING_MARK, [1u8])?;
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// True while an adoption is under way (see [`Store::begin_adoption`]).
    pub fn adopting(&self) -> Result<bool, StoreError> {
        Ok(self.checkpoints.contains_key(ADOPTING_MARK)?)
    }

    /// Ends the adoption once its orphans are swept.
    pub fn end_adoption(&self) -> Result<(), StoreError> {
        self.checkpoints.remove(ADOPTING_MARK)?;
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// True when nothing was ever committed here (no checkpoint, no file record).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.checkpoint()?.is_none() && !self.has_files())
    }

    /// True once the feed follows changes: the first full listing is committed.
    pub fn listing_done(&self) -> Result<bool, StoreError> {
        Ok(matches!(self.checkpoint()?, Some(Checkpoint { phase: FeedPhase::Changes { .. }, .. })))
    }

    /// True when the store holds at least one file record.
    pub fn has_files(&self) -> bool {
        self.files.first_key_value().is_some()
    }

    /// Up to `limit` recorded refresh requests with their generations, oldest key first.
    pub fn pending_refreshes(&self, limit: usize) -> Result<Vec<(Refresh, u64)>, StoreError> {
        self.refresh
            .iter()
            .take(limit)
            .map(|g| {
                let (k, v) = g.into_inner()?;
                Ok((codec::decode(&k)?, codec::decode(&v)?))
            })
            .collect()
    }

    /// True while `request` is recorded at `generation` (served, not yet cleared by a commit).
    pub fn refresh_is_pending(&self, request: &Refresh, generation: u64) -> Result<bool, StoreError> {
        let v = self.refresh.get(codec::encode(request)?)?;
        Ok(v.is_some_and(|v| codec::decode::<u64>(&v).ok() == Some(generation)))
    }

    /// True while some refresh request is not yet served and committed.
    pub fn has_pending_refreshes(&self) -> Result<bool, StoreError> {
        Ok(self.refresh.first_key_value().is_some())
    }

    /// Records refresh requests outside a pipeline run (`dlq retry`), synced.
    pub fn request_refresh(&self, requests: &[Refresh]) -> Result<(), StoreError> {
        let batch = CommitBatch { refresh_add: requests.to_vec(), next_seq: self.next_seq()?, ..Default::default() };
        self.apply(&batch)?;
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// Number of dead-lettered files (cheap: the keyspace holds only live dead letters).
    pub fn dead_letter_count(&self) -> Result<usize, StoreError> {
        Ok(self.dlq.len()?)
    }

    /// Writes the files of a subtree change: removed (or lost: fetched again) records go, moved ones
    /// take their new keys and their write intents are cleared.
    fn stage_tree_files(
        &self,
        b: &mut fjall::OwnedWriteBatch,
        files: &[(FileRecord, ObjectKey)],
        remove: bool,
        lost: &[FileId],
        parents: &mut InBatch,
    ) -> Result<(), StoreError> {
        for (rec, _old) in files {
            let what = match (remove, lost.contains(&rec.id)) {
                (true, _) => "tree_removed",
                (false, true) => "lost",
                (false, false) => "tree_moved",
            };
            parents.audit.push(AuditEntry::record_change(&rec.id, what, Some(&rec.key)));
            if remove || lost.contains(&rec.id) {
                self.stage_parent(b, &rec.id, None, parents)?;
                self.stage_content(b, &rec.id, None, parents)?;
                self.stage_release(b, &rec.id, &mut parents.claims)?;
                b.remove(&self.files, rec.id.as_str());
            } else {
                self.stage_parent(b, &rec.id, rec.parent.as_ref(), parents)?;
                self.stage_content(b, &rec.id, rec.md5.as_deref(), parents)?;
                self.stage_claim(b, &rec.id, &rec.key, &mut parents.claims)?;
                b.insert(&self.files, rec.id.as_str(), codec::encode(rec)?);
                b.remove(&self.intents, rec.key.as_str());
            }
        }
        Ok(())
    }

    fn stage_tree(
        &self,
        b: &mut fjall::OwnedWriteBatch,
        o: &Outcome,
        t: &crate::model::TreeChange,
        parents: &mut InBatch,
    ) -> Result<(), StoreError> {
        match &t.folder {
            Some(f) => {
                b.insert(&self.folders, o.file_id.as_str(), codec::encode(f)?);
                self.stage_claim(b, &o.file_id, &f.key, &mut parents.claims)?;
            }
            None => {
                b.remove(&self.folders, o.file_id.as_str());
                self.stage_release(b, &o.file_id, &mut parents.claims)?;
            }
        }
        // The files were written by the change's steps (`CommitBatch::tree_steps`), before this.
        for f in &t.folders {
            b.insert(&self.folders, f.id.as_str(), codec::encode(f)?);
            self.stage_claim(b, &f.id, &f.key, &mut parents.claims)?;
            parents.audit.push(AuditEntry::record_change(&f.id, "tree_moved", Some(&f.key)));
        }
        for id in &t.removed_folders {
            b.remove(&self.folders, id.as_str());
            self.stage_release(b, id, &mut parents.claims)?;
            parents.audit.push(AuditEntry::record_change(id, "tree_removed", None));
        }
        Ok(())
    }

    /// Records an upload before its first part (synced: it must survive a crash).
    pub fn record_upload(&self, file: &FileId, rec: &UploadRecord) -> Result<(), StoreError> {
        self.uploads.insert(file.as_str(), codec::encode(rec)?)?;
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// The upload recorded for a file, if any.
    pub fn upload(&self, file: &FileId) -> Result<Option<UploadRecord>, StoreError> {
        self.uploads.get(file.as_str())?.map(|v| decode_upload(&v)).transpose()
    }

    /// Forgets a finished or aborted upload.
    pub fn clear_upload(&self, file: &FileId) -> Result<(), StoreError> {
        self.uploads.remove(file.as_str())?;
        Ok(())
    }

    /// The upload ids the store knows (markers of uploads being created have none).
    pub fn recorded_upload_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.pending_uploads()?.into_iter().map(|(_, r)| r.upload_id).filter(|id| !id.is_empty()).collect())
    }

    /// Uploads left by a previous process (crashed mid-upload).
    pub fn pending_uploads(&self) -> Result<Vec<(FileId, UploadRecord)>, StoreError> {
        self.uploads
            .iter()
            .map(|g| {
                let (k, v) = g.into_inner()?;
                Ok((FileId(String::from_utf8_lossy(&k).into_owned()), decode_upload(&v)?))
            })
            .collect()
    }
}

/// Keyspaces earlier versions wrote and nothing reads any more, dropped at open so they stop holding
/// disk: `content` (md5 → a key that once held it) was written on every commit and never read, and its
/// entries went stale as files changed.
/// File id → the parent its record names after the outcomes staged so far in one batch (`None`:
/// removed), so the children index stays exact when one batch writes a file twice.
/// What one batch has staged so far that later writes in it must see (a write batch is not readable).
#[derive(Default)]
struct InBatch {
    /// File id → the parent its record names as the batch leaves it.
    parents: std::collections::HashMap<FileId, Option<FileId>>,
    /// File id → the md5 its record holds as the batch leaves it (`None`: removed, or none).
    md5s: std::collections::HashMap<FileId, Option<String>>,
    claims: claims::ClaimsInBatch,
    /// The audit entries of the batch, in the order they happen; numbered when the batch is staged.
    audit: Vec<AuditEntry>,
}

/// How a keyspace is created. Besides its memtable share: fjall keeps each table's top-level index
/// (and level-0 filters) pinned in memory outside the block cache, and by default levels 0–2 get one
/// whole-table index as that top-level block — memory that grows with the store (12 MiB of a
/// million-file run's 104 MiB heap peak, heaptrack). Partitioned indexes and filters on every level
/// leave only a small top-level block pinned per table; the partitions go through the block cache,
/// which `[state] memory` bounds. (A keyspace keeps the options it was created with.)
fn keyspace_options(memory: StoreMemory, name: &str) -> KeyspaceCreateOptions {
    use fjall::config::PartitioningPolicy;
    KeyspaceCreateOptions::default()
        .max_memtable_size(memory.memtable_bytes(name))
        .index_block_partitioning_policy(PartitioningPolicy::all(true))
        .filter_block_partitioning_policy(PartitioningPolicy::all(true))
}

fn drop_retired_keyspaces(db: &Database) -> Result<(), StoreError> {
    for name in ["content"] {
        if db.keyspace_exists(name) {
            let ks = db.keyspace(name, KeyspaceCreateOptions::default)?;
            db.delete_keyspace(ks)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangeSeq, SkipReason};

    /// A file record for tests (also used by the sweep's tests).
    pub(super) fn rec(id: &str) -> FileRecord {
        FileRecord {
            id: FileId(id.into()),
            name: id.into(),
            parent: None,
            mime_type: "text/plain".into(),
            version: 3,
            md5: Some("abc".into()),
            sha256: None,
            size: 10,
            key: ObjectKey(format!("my-drive/{id}")),
            modified_time: None,
        }
    }

    /// What one mirrored file costs the store, entry by entry (key + value bytes as fjall is given
    /// them, before its own per-entry overhead and compression). BENCHMARKS.md quotes these figures
    /// (`cargo test --release --lib one_files_entries -- --nocapture` prints them); the bound keeps a
    /// new field from growing every file's state unnoticed.
    #[test]
    fn one_files_entries_stay_within_their_budget() {
        let id = FileId("1AbCdEfGhIjKlMnOpQrStUvWxYz012345".into());
        let parent = FileId("0ZyXwVuTsRqPoNmLkJiHgFeDcBa987654".into());
        let key = ObjectKey("my-drive/Photos/2024/IMG_20240101_123456.jpg".into());
        let record = FileRecord {
            id: id.clone(),
            name: "IMG_20240101_123456.jpg".into(),
            parent: Some(parent.clone()),
            mime_type: "image/jpeg".into(),
            version: 1234,
            md5: Some("0123456789abcdef0123456789abcdef".into()),
            sha256: Some("0123456789abcdef".repeat(4)),
            size: 3_456_789,
            key: key.clone(),
            modified_time: Some("2024-01-01T12:34:56.789Z".into()),
        };
        let class = crate::mirror::keys::collision_class(key.as_str());
        let md5 = record.md5.clone().unwrap();
        let entries = [
            ("files", id.as_str().len() + codec::encode(&record).unwrap().len()),
            ("claims", class.len() + id.as_str().len()),
            ("claimed", id.as_str().len() + class.len()),
            ("children", children_key(&parent, &id).len()),
            ("content_refs", content::content_key(&md5, &id).len()),
        ];
        let total: usize = entries.iter().map(|(_, n)| n).sum();
        for (keyspace, bytes) in entries {
            eprintln!("{keyspace:>13}: {bytes} bytes");
        }
        eprintln!("{:>13}: {total} bytes", "total");
        assert!(total <= 640, "one file's entries grew to {total} bytes: {entries:?}");
    }

    #[test]
    fn batch_with_checkpoint_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let batch = CommitBatch {
                outcomes: vec![
                    Outcome { seq: ChangeSeq(1), file_id: FileId("a".into()), kind: OutcomeKind::Committed(rec("a")) },
                    Outcome {
                        seq: ChangeSeq(2),
                        file_id: FileId("b".into()),
                        kind: OutcomeKind::Skipped(SkipReason::Unchanged),
                    },
                ],
                checkpoint: Some(Checkpoint {
                    read_at_unix_ms: 1,
                    start_token: "t0".into(),
                    phase: FeedPhase::Changes { token: "t9".into() },
                    feeds: vec![(crate::model::Corpus::MyDrive, "t9".into())],
                }),
                next_seq: 3,
                ..Default::default()
            };
            s.apply(&batch).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.file(&FileId("a".into())).unwrap(), Some(rec("a")));
        assert_eq!(s.next_seq().unwrap(), 3);
        assert!(matches!(s.checkpoint().unwrap().unwrap().phase, FeedPhase::Changes { .. }));
        assert_eq!(s.audit_since(0).unwrap().len(), 1);
    }

    fn outcome(seq: u64, id: &str, kind: OutcomeKind) -> Outcome {
        Outcome { seq: ChangeSeq(seq), file_id: FileId(id.into()), kind }
    }

    fn in_folder(id: &str, parent: &str) -> OutcomeKind {
        OutcomeKind::Committed(FileRecord { parent: Some(FileId(parent.into())), ..rec(id) })
    }

    fn ids_in(s: &Store, folder: &str) -> Vec<String> {
        s.files_in_folder(&FileId(folder.into())).unwrap().into_iter().map(|r| r.id.0).collect()
    }

    #[test]
    fn the_children_index_follows_moves_removals_and_two_writes_in_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        apply(&s, vec![outcome(1, "a", in_folder("a", "p1")), outcome(2, "b", in_folder("b", "p1"))]);
        assert_eq!(ids_in(&s, "p1"), ["a", "b"]);
        // A move in a later batch; a move and a removal of one file in the same batch.
        apply(&s, vec![outcome(3, "a", in_folder("a", "p2"))]);
        apply(&s, vec![outcome(4, "b", in_folder("b", "p3")), outcome(5, "b", OutcomeKind::Removed { key: None })]);
        assert_eq!(ids_in(&s, "p1"), Vec::<String>::new());
        assert_eq!(ids_in(&s, "p2"), ["a"]);
        assert_eq!(ids_in(&s, "p3"), Vec::<String>::new());
        assert_eq!(s.children_entries().unwrap(), 1, "a stale index entry was left");
        // A folder id that is a prefix of another is not confused with it.
        apply(&s, vec![outcome(6, "c", in_folder("c", "p22"))]);
        assert_eq!(ids_in(&s, "p2"), ["a"]);
    }

    #[test]
    fn a_folder_is_read_in_pages_that_survive_writes_between_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let ids = ["a", "b", "c", "d", "e", "f", "g"];
        apply(&s, ids.iter().enumerate().map(|(i, id)| outcome(i as u64 + 1, id, in_folder(id, "p"))).collect());
        apply(&s, vec![outcome(8, "x", in_folder("x", "p0"))]);
        let folder = FileId("p".into());
        let (mut seen, mut after, mut pages) = (Vec::new(), None, 0);
        loop {
            let page = s.files_in_folder_page(&folder, after.as_ref(), 3).unwrap();
            pages += 1;
            // What a subtree removal does between pages: the page read is committed as removed.
            let gone = page.records.iter().map(|r| outcome(9, r.id.as_str(), OutcomeKind::Removed { key: None }));
            apply(&s, gone.collect());
            seen.extend(page.records.into_iter().map(|r| r.id.0));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ids, "every file once, in id order, and none of the folder p0");
        assert_eq!(pages, 3);
        assert!(ids_in(&s, "p").is_empty());
    }

    #[test]
    fn a_store_written_before_the_children_index_gets_it_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            apply(&s, vec![outcome(1, "a", in_folder("a", "p1"))]);
            // As an older version left it: records, no index.
            s.children.remove(children_key(&FileId("p1".into()), &FileId("a".into()))).unwrap();
            s.checkpoints.remove(CHILDREN_INDEXED).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(ids_in(&s, "p1"), ["a"]);
    }

    fn letter(id: &str) -> OutcomeKind {
        OutcomeKind::DeadLettered(crate::model::DeadLetter {
            id: FileId(id.into()),
            name: id.into(),
            key: None,
            reason: "notFound".into(),
            last_error: "404".into(),
            attempts: 1,
            at_unix: 0,
        })
    }

    fn apply(s: &Store, outcomes: Vec<Outcome>) -> ApplyReport {
        s.apply(&CommitBatch { outcomes, ..Default::default() }).unwrap()
    }

    #[test]
    fn dead_letters_are_cleared_by_a_later_commit_and_only_then_recounted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(!apply(&s, vec![outcome(1, "a", OutcomeKind::Committed(rec("a")))]).dead_letters_changed);
        assert!(apply(&s, vec![outcome(2, "b", letter("b")), outcome(3, "c", letter("c"))]).dead_letters_changed);
        assert_eq!(s.dead_letter_count().unwrap(), 2);
        let report = apply(&s, vec![outcome(4, "b", OutcomeKind::Committed(rec("b")))]);
        assert!(report.dead_letters_changed);
        assert_eq!(s.dead_letter_count().unwrap(), 1);
        assert!(
            apply(&s, vec![outcome(5, "d", letter("d")), outcome(6, "d", OutcomeKind::Removed { key: None })])
                .dead_letters_changed
        );
        assert_eq!(s.dead_letters().unwrap().iter().map(|d| d.id.0.as_str()).collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn audit_entries_older_than_the_retention_are_pruned_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let committed = |seq| outcome(seq, &format!("f{seq}"), OutcomeKind::Committed(rec(&format!("f{seq}"))));
        apply(&s, (1..=5).map(committed).collect());
        let written_by = unix_ms();
        assert_eq!(s.prune_audit(1, 100).unwrap(), 0, "nothing is older than the cutoff");
        assert_eq!(s.prune_audit(written_by + 1, 2).unwrap(), 2, "the limit bounds one call");
        assert_eq!(s.audit_since(0).unwrap().iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [3, 4, 5]);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let cutoff = unix_ms();
        apply(&s, (6..=7).map(committed).collect());
        assert_eq!(s.prune_audit(cutoff, 100).unwrap(), 3, "entries inside the retention stay");
        assert_eq!(s.audit_since(0).unwrap().iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [6, 7]);
    }

    #[test]
    fn undated_audit_entries_still_decode_and_go_with_the_next_expired_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        #[derive(Serialize)]
        struct Undated {
            file_id: FileId,
            what: String,
            key: Option<ObjectKey>,
        }
        let old =
            codec::encode(&Undated { file_id: FileId("old".into()), what: "committed".into(), key: None }).unwrap();
        s.audit.insert(1u64.to_be_bytes(), old).unwrap();
        assert_eq!(s.audit_since(0).unwrap()[0].1.at_unix_ms, 0);
        assert_eq!(s.prune_audit(u64::MAX, 100).unwrap(), 0, "an undated entry alone is kept");
        apply(&s, vec![outcome(2, "new", OutcomeKind::Committed(rec("new")))]);
        assert_eq!(s.prune_audit(u64::MAX, 100).unwrap(), 2);
    }

    #[test]
    fn the_retired_content_index_is_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::builder(dir.path()).open().unwrap();
            let ks = db.keyspace("content", KeyspaceCreateOptions::default).unwrap();
            ks.insert("abc", "k").unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert!(!s.db.keyspace_exists("content"));
    }

    #[test]
    fn an_old_key_left_after_a_move_is_an_orphan_unless_another_file_claimed_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut moved = rec("a");
        moved.key = ObjectKey("my-drive/new".into());
        apply(&s, vec![outcome(1, "a", OutcomeKind::Committed(moved))]);
        s.set_claim(&FileId("a".into()), "my-drive/new").unwrap();
        let left =
            |key: &str| Intent { key: ObjectKey(key.into()), file: FileId("a".into()), moves_recorded_bytes: false };
        s.record_intents(&[left("my-drive/old"), left("my-drive/taken")]).unwrap();
        s.set_claim(&FileId("b".into()), "my-drive/taken").unwrap();
        let verdicts: Vec<(String, Unfinished)> =
            s.pending_intents().unwrap().into_iter().map(|(i, v)| (i.key.0, v)).collect();
        assert_eq!(
            verdicts,
            [("my-drive/old".to_string(), Unfinished::Orphan), ("my-drive/taken".to_string(), Unfinished::Owned)]
        );
    }

    #[test]
    fn a_checkpoint_from_before_per_drive_logs_decodes_with_no_logs() {
        #[derive(Serialize)]
        struct OneLog {
            start_token: String,
            phase: FeedPhase,
            read_at_unix_ms: u64,
        }
        let old =
            OneLog { start_token: "t0".into(), phase: FeedPhase::Changes { token: "t7".into() }, read_at_unix_ms: 5 };
        let cp = decode_checkpoint(&codec::encode(&old).unwrap()).unwrap();
        assert_eq!(cp.phase, FeedPhase::Changes { token: "t7".into() });
        assert!(cp.feeds.is_empty(), "no log matches a scope: the feed lists everything again");
    }
}
