//! The stage traits implemented for the real backends: the fjall [`Store`], the object-store
//! [`Destination`] and the Drive [`DriveClient`]. Kept apart from both sides so that a stage names only
//! its own trait and a backend knows nothing of the stages: `stages` and the backends (`state`,
//! `dest`, `drive`) never import each other's upper half, and the import graph has no circle
//! (`scripts/import_graph.py --check`). Each impl forwards to the backend's own method.

use crate::dest::multipart::{Multipart, Uploads};
use crate::dest::{DestError, Destination, ObjectMeta, StoredContent};
use crate::drive::{ByteStream, ChangePage, DriveClient, DriveError, FilePage};
use crate::hashing::HashState;
use crate::model::{Corpus, DriveFile, DriveId, FileId, FileRecord, FolderRecord, ObjectKey, Refresh};
use crate::stages::change_feed::{ChangeSource, FeedState};
use crate::stages::committer::CommitLog;
use crate::stages::dedup::RecordView;
use crate::stages::downloader::{ByteSource, ObjectProbe, ResumeRecords};
use crate::stages::planner::{FolderLookup, PlanView};
use crate::stages::uploader::{PartSink, WriteTarget};
use crate::stages::verifier::StoredObjects;
use crate::state::{ApplyReport, Checkpoint, CommitBatch, FolderPage, Intent, Store, StoreError, UploadRecord};
use bytes::Bytes;

// The committer writes its batches to the store.
impl CommitLog for Store {
    fn apply(&self, batch: &CommitBatch) -> Result<ApplyReport, StoreError> {
        Store::apply(self, batch)
    }
    fn has_pending_refreshes(&self) -> Result<bool, StoreError> {
        Store::has_pending_refreshes(self)
    }
    fn dead_letter_count(&self) -> Result<usize, StoreError> {
        Store::dead_letter_count(self)
    }
    fn prune_audit(&self, cutoff_unix_ms: u64, limit: usize) -> Result<usize, StoreError> {
        Store::prune_audit(self, cutoff_unix_ms, limit)
    }
}

// The planner reads committed records, claims and folders from the store.
impl PlanView for Store {
    fn claim_holder(&self, class: &str) -> Result<Option<FileId>, StoreError> {
        Store::claim_holder(self, class)
    }
    fn claimed_under(&self, class: &str) -> Result<bool, StoreError> {
        Store::claimed_under(self, class)
    }
    fn has_intent(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        Store::has_intent(self, key)
    }
    fn all_folders(&self) -> Result<Vec<FolderRecord>, StoreError> {
        Store::all_folders(self)
    }
    fn folder_page(&self, folder: &FileId, after: Option<&FileId>, limit: usize) -> Result<FolderPage, StoreError> {
        self.files_in_folder_page(folder, after, limit)
    }
    fn skip_record(&self, id: &FileId) -> Result<Option<crate::state::SkipRecord>, StoreError> {
        Store::skip_record(self, id)
    }
    fn followers(&self, target: &FileId) -> Result<Vec<FileId>, StoreError> {
        Store::followers(self, target)
    }
    fn content_holder(&self, md5: &str, except: &FileId) -> Result<Option<FileRecord>, StoreError> {
        Store::content_holder(self, md5, except)
    }
}

// Replays are recognised against the committed records.
impl RecordView for Store {
    fn file_record(&self, id: &FileId) -> Result<Option<FileRecord>, StoreError> {
        self.file(id)
    }
    fn folder_record(&self, id: &FileId) -> Result<Option<FolderRecord>, StoreError> {
        self.folder(id)
    }
}

// The downloader probes the destination for copy sources and adopted objects.
impl ObjectProbe for Destination {
    async fn size_of(&self, key: &ObjectKey) -> Result<Option<u64>, DestError> {
        self.head(key).await
    }
    async fn content_of(&self, key: &ObjectKey) -> Result<Option<StoredContent>, DestError> {
        self.stored_content(key).await
    }
}

// The downloader finds interrupted uploads in the store.
impl ResumeRecords for Store {
    fn upload_of(&self, file: &FileId) -> Result<Option<UploadRecord>, crate::state::StoreError> {
        self.upload(file)
    }
}

// The verifier checks and removes objects in the destination.
impl StoredObjects for Destination {
    async fn size_of(&self, key: &ObjectKey) -> Result<Option<u64>, DestError> {
        self.head(key).await
    }
    async fn remove(&self, key: &ObjectKey) -> Result<(), DestError> {
        self.delete(key).await
    }
}

// The change feed reads its checkpoint, the recorded drives and the refresh requests from the store.
impl FeedState for Store {
    fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        Store::checkpoint(self)
    }
    fn has_files(&self) -> bool {
        Store::has_files(self)
    }
    fn drive_roots(&self) -> Result<Vec<DriveId>, StoreError> {
        Store::drive_roots(self)
    }
    fn pending_refreshes(&self, limit: usize) -> Result<Vec<(Refresh, u64)>, StoreError> {
        Store::pending_refreshes(self, limit)
    }
    fn refresh_is_pending(&self, request: &Refresh, generation: u64) -> Result<bool, StoreError> {
        Store::refresh_is_pending(self, request, generation)
    }
}

// The change feed reads Drive.
impl ChangeSource for DriveClient {
    async fn start_page_token(&self, corpus: &Corpus) -> Result<String, DriveError> {
        DriveClient::start_page_token(self, corpus).await
    }
    async fn list_page(
        &self,
        corpus: &Corpus,
        folders_only: bool,
        token: Option<&str>,
    ) -> Result<FilePage, DriveError> {
        DriveClient::list_page(self, corpus, folders_only, token).await
    }
    async fn changes_page(&self, corpus: &Corpus, token: &str) -> Result<ChangePage, DriveError> {
        DriveClient::changes_page(self, corpus, token).await
    }
    async fn get_file(&self, id: &FileId) -> Result<Option<DriveFile>, DriveError> {
        DriveClient::get_file(self, id).await
    }
    async fn shared_drives(&self) -> Result<Vec<(DriveId, String)>, DriveError> {
        DriveClient::shared_drives(self).await
    }
    async fn shared_drive(&self, id: &DriveId) -> Result<Option<String>, DriveError> {
        DriveClient::shared_drive(self, id).await
    }
    async fn children_page(
        &self,
        folder: &FileId,
        within: Option<&Corpus>,
        token: Option<&str>,
    ) -> Result<FilePage, DriveError> {
        DriveClient::children_page(self, folder, within, token).await
    }
}

// The downloader streams bytes from Drive.
impl ByteSource for DriveClient {
    async fn open(
        &self,
        file: &DriveFile,
        source: &crate::model::Source,
        offset: u64,
    ) -> Result<ByteStream, DriveError> {
        DriveClient::open(self, file, source, offset).await
    }
    async fn still_exists(&self, file: &FileId) -> Result<bool, DriveError> {
        Ok(DriveClient::get_file(self, file).await?.is_some_and(|f| !f.trashed))
    }
}

// The planner looks up unseen folders and shortcut targets in Drive.
impl FolderLookup for DriveClient {
    async fn lookup(&self, id: &FileId) -> Result<Option<DriveFile>, DriveError> {
        self.get_file(id).await
    }
    async fn lookup_target(&self, id: &FileId, resource_key: Option<&str>) -> Result<Option<DriveFile>, DriveError> {
        self.get_file_with_key(id, resource_key).await
    }
}

/// What the uploader writes through: the destination's multipart uploads (which hold only the
/// store's upload records) and the store, for the writes it notes ahead, a folder's records and the
/// versions it keeps.
#[derive(Clone)]
pub struct UploadTarget {
    /// Objects and multipart uploads.
    pub uploads: Uploads,
    /// Noted writes, folder pages, kept versions.
    pub store: Store,
}

// The uploader writes through the destination and notes its writes in the store.
impl WriteTarget for UploadTarget {
    type Parts = Multipart;
    async fn put(&self, key: &ObjectKey, body: Vec<Bytes>, meta: &ObjectMeta) -> Result<Option<String>, DestError> {
        self.uploads.dest.put(key, body, meta).await
    }
    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), DestError> {
        self.uploads.dest.copy(from, to).await
    }
    async fn copy_as(&self, from: &ObjectKey, to: &ObjectKey, meta: &ObjectMeta) -> Result<(), DestError> {
        self.uploads.dest.copy_as(from, to, meta).await
    }
    async fn remove(&self, key: &ObjectKey) -> Result<(), DestError> {
        self.uploads.dest.remove(key).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<(), DestError> {
        self.uploads.dest.delete(key).await
    }
    async fn move_object(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), DestError> {
        self.uploads.dest.move_object(from, to).await
    }
    async fn size_of(&self, key: &ObjectKey) -> Result<Option<u64>, DestError> {
        self.uploads.dest.head(key).await
    }
    async fn stored_content(&self, key: &ObjectKey) -> Result<Option<StoredContent>, DestError> {
        self.uploads.dest.stored_content(key).await
    }
    async fn start_parts(
        &self,
        file: &FileId,
        key: &ObjectKey,
        meta: &ObjectMeta,
        content: Option<(String, u64)>,
    ) -> Result<Multipart, DestError> {
        self.uploads.start(file, key, meta, content).await
    }
    fn resume_parts(&self, file: &FileId, record: UploadRecord) -> Multipart {
        self.uploads.resume(file, record)
    }
    async fn discard_stale_upload(&self, file: &FileId) {
        self.uploads.discard_stale(file).await
    }
    fn forget_upload(&self, file: &FileId) {
        self.uploads.forget(file)
    }
    fn note_writes(&self, intents: &[Intent]) -> Result<(), StoreError> {
        self.store.record_intents(intents)
    }
    fn folder_page(&self, folder: &FileId, after: Option<&FileId>, limit: usize) -> Result<FolderPage, StoreError> {
        self.store.files_in_folder_page(folder, after, limit)
    }
    async fn keep_version(&self, file: &FileId, new_md5: Option<&str>) -> Result<(), DestError> {
        crate::dest::versions::keep(&self.uploads.dest, &self.store, file, new_md5).await
    }
}

// A multipart upload in progress, as the uploader drives it.
impl PartSink for Multipart {
    fn records_progress(&self) -> bool {
        Multipart::records_progress(self)
    }
    fn streams_chunks(&self) -> bool {
        Multipart::streams_chunks(self)
    }
    async fn send<R: Send + 'static>(
        &mut self,
        body: Vec<Bytes>,
        concurrency: usize,
        end: Option<(u64, HashState)>,
        room: Option<R>,
    ) -> Result<(), DestError> {
        Multipart::send(self, body, concurrency, end, room).await
    }
    async fn finish(self) -> Result<(), DestError> {
        Multipart::finish(self).await
    }
    async fn abort(self) {
        Multipart::abort(self).await
    }
}
