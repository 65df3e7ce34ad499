//! Destinations through object_store: S3 (any endpoint, Supabase included), GCS, Azure, or a local
//! folder. Keys arrive already sanitized; this module only moves bytes and reports errors by class.

pub use crate::mirror::keys;
mod local_list;
pub mod multipart;
pub use crate::mirror::refusal;
pub mod s3_copy;
mod uploads;
pub mod versions;

pub use local_list::Listed;

use crate::breaker::Breaker;
use crate::config::{DeletePolicy, DestinationConfig, KeyMode, RetryConfig};
use crate::model::ObjectKey;
use crate::retry::{Classified, ErrorClass};
use bytes::Bytes;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, MultipartId, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, WriteMultipart,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The destination boundary's error.
#[derive(Debug, thiserror::Error)]
pub enum DestError {
    /// The configuration cannot produce a store.
    #[error("destination config: {0}")]
    Config(String),
    /// The store failed (after object_store's own retries).
    #[error("destination {op} {key}: {source}{}", timeout_hint(source))]
    Store {
        /// Operation.
        op: &'static str,
        /// Key concerned.
        key: String,
        /// object_store's error.
        source: object_store::Error,
    },
    /// A key that object_store refuses (should not happen after sanitizing).
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// The state store could not record a step a write depends on (such as an upload's completion).
    #[error("state store: {0}")]
    State(String),
}

/// Names the setting when object_store gave up on a request that timed out.
fn timeout_hint(source: &object_store::Error) -> &'static str {
    let text = source.to_string();
    if text.contains("timed out") || text.contains("timeout") {
        " (the destination did not answer within destination.timeout)"
    } else {
        ""
    }
}

impl DestError {
    /// The store's refusal of this one object (too large, a key it does not take, access denied),
    /// if that is what this error is: see [`refusal::Refusal`].
    pub fn refusal(&self) -> Option<refusal::Refusal> {
        match self {
            DestError::Store { source, .. } => refusal::Refusal::of(source),
            _ => None,
        }
    }
}

impl Classified for DestError {
    fn class(&self) -> ErrorClass {
        if self.refusal().is_some() {
            return ErrorClass::Permanent;
        }
        match self {
            DestError::Store { source, .. } => match source {
                object_store::Error::NotFound { .. }
                | object_store::Error::InvalidPath { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. } => ErrorClass::Permanent,
                _ => ErrorClass::Retryable,
            },
            DestError::Config(_) | DestError::InvalidKey(_) => ErrorClass::Permanent,
            DestError::State(_) => ErrorClass::Fatal,
        }
    }
    fn reason(&self) -> String {
        if let Some(refusal) = self.refusal() {
            return refusal.reason().into();
        }
        match self {
            DestError::Store { op, .. } => format!("{op}_failed"),
            DestError::Config(_) => "config".into(),
            DestError::InvalidKey(_) => "invalid_key".into(),
            DestError::State(_) => "state".into(),
        }
    }
}

/// Drive metadata carried on each object where the store supports it.
#[derive(Clone, Debug, Default)]
pub struct ObjectMeta {
    /// Drive id.
    pub drive_id: String,
    /// Drive name (percent-encoded for headers).
    pub drive_name: String,
    /// Content type.
    pub content_type: Option<String>,
    /// Drive's md5 of the bytes (`drive-md5` metadata): lets a later run with an empty state adopt the
    /// object without downloading it again, also when the store's ETag is not an md5 (multipart).
    pub md5: Option<String>,
}

/// What an existing object holds, as far as the store can tell without trusting any record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredContent {
    /// Its size.
    pub size: u64,
    /// md5 of its bytes: the `drive-md5` metadata written at upload, an S3 single-part ETag, or (on a
    /// local folder) the hash of the file. `None` when none of those is available.
    pub md5: Option<String>,
}

impl StoredContent {
    /// True when this is provably the content Drive describes (`md5`, `size`): same size and an md5
    /// the store reported; an object whose md5 the store cannot tell proves nothing.
    pub fn proves(&self, md5: &str, size: u64) -> bool {
        self.size == size && self.md5.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(md5))
    }
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// Its full key.
    pub key: ObjectKey,
    /// Its size.
    pub size: u64,
    /// md5 of its bytes, when the listing proves it (S3 single-part ETag).
    pub md5: Option<String>,
}

/// Whether `name` is object_store's staging name of a local write (`<name>#<digits>`; a real name
/// never ends so on a local folder, `keys::local_encode`), and of which name.
fn staged_name_of(name: &str) -> Option<&str> {
    let (base, n) = name.rsplit_once('#')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(base)
}

/// A staging cleanup's I/O failure, as the destination's error.
fn staging_error(key: &str, e: std::io::Error) -> DestError {
    DestError::Store {
        op: "staging cleanup",
        key: key.to_string(),
        source: object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) },
    }
}

/// The entries of `dir`; a missing folder has none.
fn entries_of(dir: &std::path::Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Removes the staging files `<file>#<digits>` beside `file`.
fn remove_staged_beside(file: &std::path::Path) -> std::io::Result<usize> {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else { return Ok(0) };
    let name = name.to_string_lossy();
    let mut removed = 0;
    for entry in entries_of(dir)? {
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        if staged_name_of(&entry_name) == Some(&*name) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes every staging file under `dir`, in one walk.
fn remove_staged_under(dir: &std::path::Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in entries_of(&folder)? {
            let kind = entry.file_type()?;
            if kind.is_dir() {
                folders.push(entry.path());
            } else if kind.is_file() && staged_name_of(&entry.file_name().to_string_lossy()).is_some() {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// A local I/O failure as object_store's error, so callers classify it like the store's own (a
/// missing source is `NotFound`).
fn local_error(e: std::io::Error) -> object_store::Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => object_store::Error::NotFound { path: String::new(), source: Box::new(e) },
        _ => object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) },
    }
}

/// Copies the file `from` to `to` as an independent file: its bytes go to a fresh staging file
/// `<to>#<n>` (a reflink where the filesystem offers one: `std::io::copy` between files uses
/// `copy_file_range`, which btrfs and XFS serve by sharing extents copy-on-write), then a rename puts
/// it at `to`. A killed copy never leaves a half file at `to`, and its staging file is what
/// `remove_staging_leftovers` removes. A copy onto the same file (a replay, or a hard link an earlier
/// version made) makes `to` a file of its own, which is what a copy means.
fn copy_local_file(from: &std::path::Path, to: &std::path::Path) -> Result<(), object_store::Error> {
    let mut source = std::fs::File::open(from).map_err(local_error)?;
    let parent =
        to.parent().ok_or_else(|| local_error(std::io::Error::other(format!("{} has no folder", to.display()))))?;
    std::fs::create_dir_all(parent).map_err(local_error)?;
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (staged, mut target) = (0u32..)
        .map(|n| parent.join(format!("{name}#{n}")))
        .find_map(|p| match std::fs::OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(f) => Some(Ok((p, f))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
            Err(e) => Some(Err(e)),
        })
        .unwrap_or_else(|| Err(std::io::Error::other("no free staging name")))
        .map_err(local_error)?;
    let written = std::io::copy(&mut source, &mut target).and_then(|_| std::fs::rename(&staged, to));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&staged);
        return Err(local_error(e));
    }
    Ok(())
}

/// Renames a local file into place (its folder created first): a move of the same bytes, however
/// large, in one atomic step.
fn rename_local_file(from: &std::path::Path, to: &std::path::Path) -> Result<(), object_store::Error> {
    std::fs::metadata(from).map_err(local_error)?;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(local_error)?;
    }
    std::fs::rename(from, to).map_err(local_error)
}

/// Metadata key under which the upload records Drive's md5.
const MD5_METADATA: &str = "drive-md5";

/// An opened destination.
#[derive(Clone)]
pub struct Destination {
    store: Arc<dyn ObjectStore>,
    multipart: Option<Arc<dyn MultipartStore>>,
    /// The S3 store itself, for what object_store's traits do not offer (listing open uploads).
    s3: Option<Arc<object_store::aws::AmazonS3>>,
    prefix: String,
    supports_metadata: bool,
    /// A single PUT's ETag is the md5 of the bytes (S3), so it proves the write without a HEAD.
    etag_is_md5: bool,
    breaker: Arc<Breaker>,
    /// Key alphabet.
    pub key_mode: KeyMode,
    /// Longest whole key written (`[destination] max_key_bytes`, or the key mode's default).
    pub max_key_bytes: usize,
    /// `[destination] max_file_size`: larger files are dead-lettered before they are downloaded.
    pub max_file_size: Option<u64>,
    /// What Drive deletes do.
    pub delete_policy: DeletePolicy,
    /// `[destination] versions`: earlier contents kept per key (0: none).
    pub versions: usize,
    /// `[testing] crash_after_writes`: writes left before the process aborts.
    crash_countdown: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The local folder store, for the staging files a killed write leaves (`remove_staging_leftovers`).
    local: Option<Arc<object_store::local::LocalFileSystem>>,
    /// The local folder itself, listed without following links ([`Self::list_entries`]).
    local_root: Option<std::path::PathBuf>,
    /// On S3: copies of objects above `CopyObject`'s 5 GiB limit, in parts.
    big_copies: Option<Arc<s3_copy::MultipartCopier>>,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Destination({}, prefix={:?})", self.store, self.prefix)
    }
}

impl Destination {
    /// Builds the store from `[destination]`; credentials fall back to the AWS_* environment.
    pub fn from_config(cfg: &DestinationConfig, retry: &RetryConfig) -> Result<Destination, DestError> {
        let url = url::Url::parse(&cfg.url).map_err(|e| DestError::Config(format!("url {:?}: {e}", cfg.url)))?;
        let mut multipart: Option<Arc<dyn MultipartStore>> = None;
        let mut s3_store = None;
        let mut local = None;
        let mut local_root = None;
        let mut big_copies = None;
        let (store, prefix, supports_metadata): (Arc<dyn ObjectStore>, String, bool) = match url.scheme() {
            "file" => {
                let dir = url.to_file_path().map_err(|_| DestError::Config(format!("bad file URL {:?}", cfg.url)))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| DestError::Config(format!("cannot create {}: {e}", dir.display())))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| DestError::Config(e.to_string()))?
                    .with_automatic_cleanup(true);
                let fs = Arc::new(fs);
                local = Some(fs.clone());
                local_root = Some(dir);
                (fs, String::new(), false)
            }
            "memory" => (Arc::new(object_store::memory::InMemory::new()), String::new(), true),
            "s3" => {
                let (s3, address) = build_s3(cfg, &url, retry)?;
                let s3 = Arc::new(s3);
                let copier = s3_copy::MultipartCopier::new(s3.clone(), address, cfg.timeout.0, retry)
                    .map_err(|e| DestError::Config(format!("http client: {e}")))?;
                big_copies = Some(Arc::new(copier));
                multipart = Some(s3.clone());
                s3_store = Some(s3.clone());
                (s3, url_prefix(&url), true)
            }
            _ => {
                let timeout = [("timeout", format!("{}ms", cfg.timeout.0.as_millis()))];
                let (store, path) =
                    object_store::parse_url_opts(&url, timeout).map_err(|e| DestError::Config(e.to_string()))?;
                (Arc::from(store), path.to_string(), true)
            }
        };
        let etag_is_md5 = url.scheme() == "s3";
        Ok(Destination {
            store,
            multipart,
            s3: s3_store,
            prefix,
            supports_metadata,
            etag_is_md5,
            breaker: Arc::new(Breaker::new("destination", retry.breaker())),
            key_mode: cfg.key_mode(),
            max_key_bytes: cfg.max_key_bytes(),
            max_file_size: cfg.max_file_size.map(|b| b.0),
            delete_policy: cfg.deletes,
            versions: cfg.versions,
            crash_countdown: None,
            local,
            local_root,
            big_copies,
        })
    }

    /// Removes what a killed write to `key` left on a local folder: object_store writes a local object
    /// to `<file>#<digits>` and renames it into place, so a kill in between leaves that staging file
    /// (invisible to listings, never resumed: a local write has no upload id). Returns how many.
    /// Elsewhere nothing is staged beside the object: 0.
    pub async fn remove_staging_leftovers(&self, key: &ObjectKey) -> Result<usize, DestError> {
        let Some(file) = self.local_path(key)? else { return Ok(0) };
        tokio::task::spawn_blocking(move || remove_staged_beside(&file))
            .await
            .map_err(|e| staging_error(key.as_str(), std::io::Error::other(e)))?
            .map_err(|e| staging_error(key.as_str(), e))
    }

    /// [`Self::remove_staging_leftovers`] for every file under the folder `rel` of the prefix (the
    /// versions' folder: a version's copy is noted nowhere before it is made, and deletes keep one).
    /// One walk of that folder; elsewhere than a local folder, 0.
    pub async fn remove_staging_leftovers_under(&self, rel: &str) -> Result<usize, DestError> {
        let Some(probe) = self.local_path(&self.key(&format!("{rel}/probe")))? else { return Ok(0) };
        let Some(dir) = probe.parent().map(std::path::Path::to_path_buf) else { return Ok(0) };
        tokio::task::spawn_blocking(move || remove_staged_under(&dir))
            .await
            .map_err(|e| staging_error(rel, std::io::Error::other(e)))?
            .map_err(|e| staging_error(rel, e))
    }

    /// Where `key` lies on disk, for a local folder (`None` elsewhere).
    fn local_path(&self, key: &ObjectKey) -> Result<Option<std::path::PathBuf>, DestError> {
        let Some(fs) = &self.local else { return Ok(None) };
        fs.path_to_filesystem(&Self::path(key)?).map(Some).map_err(|source| DestError::Store {
            op: "staging cleanup",
            key: key.0.clone(),
            source,
        })
    }

    /// Aborts the process right after `writes` more writes (`[testing] crash_after_writes`).
    pub fn crash_after_writes(mut self, writes: u64) -> Self {
        self.crash_countdown = Some(Arc::new(writes.into()));
        self
    }

    /// Copies objects above `above` bytes in parts of `part_size` (`[testing] multipart_copy_above`,
    /// `multipart_copy_part_size`: tests prove multipart copies with small files). S3 only.
    pub fn multipart_copies(mut self, plan: s3_copy::CopyPlan) -> Self {
        if let Some(copier) = &mut self.big_copies {
            let mut changed = (**copier).clone();
            changed.plan = plan;
            *copier = Arc::new(changed);
        }
        self
    }

    /// Counts one write for `[testing] crash_after_writes`.
    fn wrote(&self) {
        if let Some(left) = &self.crash_countdown
            && left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) <= 1
        {
            eprintln!("[testing] crash_after_writes reached: aborting");
            std::process::abort();
        }
    }

    /// The prefix every key starts with (may be empty).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Joins the prefix and a relative key.
    pub fn key(&self, relative: &str) -> ObjectKey {
        if self.prefix.is_empty() {
            ObjectKey(relative.to_string())
        } else {
            ObjectKey(format!("{}/{relative}", self.prefix))
        }
    }

    /// Every store call goes through here: object_store has already retried inside, so the breaker
    /// sees each operation's final result and holds further calls while the store keeps failing.
    async fn guarded<T>(&self, op: impl Future<Output = Result<T, DestError>>) -> Result<T, DestError> {
        self.breaker.call(|| op).await
    }

    fn path(key: &ObjectKey) -> Result<Path, DestError> {
        Path::parse(key.as_str()).map_err(|_| DestError::InvalidKey(key.0.clone()))
    }

    fn attributes(&self, meta: &ObjectMeta) -> Attributes {
        let mut a = Attributes::new();
        if !self.supports_metadata {
            return a;
        }
        if let Some(ct) = &meta.content_type {
            a.insert(Attribute::ContentType, ct.clone().into());
        }
        a.insert(Attribute::Metadata("drive-id".into()), meta.drive_id.clone().into());
        let name: String = url::form_urlencoded::byte_serialize(meta.drive_name.as_bytes()).collect();
        a.insert(Attribute::Metadata("drive-name".into()), name.into());
        if let Some(md5) = &meta.md5 {
            a.insert(Attribute::Metadata(MD5_METADATA.into()), md5.clone().into());
        }
        a
    }

    /// Writes a small object in one PUT.
    /// Returns the md5 the store reports for what it stored, where its ETag is one (S3), so the
    /// verifier can skip a HEAD.
    pub async fn put(&self, key: &ObjectKey, body: Vec<Bytes>, meta: &ObjectMeta) -> Result<Option<String>, DestError> {
        let path = Self::path(key)?;
        let opts = PutOptions { attributes: self.attributes(meta), ..Default::default() };
        let payload: object_store::PutPayload = body.into_iter().collect();
        let put = self.store.put_opts(&path, payload, opts);
        let result = self
            .guarded(async { put.await.map_err(|source| DestError::Store { op: "put", key: key.0.clone(), source }) })
            .await?;
        self.wrote();
        Ok(result.e_tag.filter(|_| self.etag_is_md5).map(|t| t.trim_matches('"').to_ascii_lowercase()))
    }

    /// Starts a multipart upload whose parts are `part_size` bytes.
    pub async fn multipart(
        &self,
        key: &ObjectKey,
        meta: &ObjectMeta,
        part_size: usize,
    ) -> Result<WriteMultipart, DestError> {
        let path = Self::path(key)?;
        let opts = PutMultipartOptions { attributes: self.attributes(meta), ..Default::default() };
        let upload = self
            .guarded(async {
                self.store.put_multipart_opts(&path, opts).await.map_err(|source| DestError::Store {
                    op: "create_multipart",
                    key: key.0.clone(),
                    source,
                })
            })
            .await?;
        Ok(WriteMultipart::new_with_chunk_size(upload, part_size))
    }

    /// True when multipart uploads have ids we can record, so a crash never leaves one orphaned.
    pub fn has_recorded_multipart(&self) -> bool {
        self.multipart.is_some()
    }

    fn mp(&self) -> Result<&Arc<dyn MultipartStore>, DestError> {
        self.multipart.as_ref().ok_or_else(|| DestError::Config("this store has no resumable multipart API".into()))
    }

    /// Creates a multipart upload and returns its id (to be recorded before any part is sent).
    pub async fn create_upload(&self, key: &ObjectKey, meta: &ObjectMeta) -> Result<MultipartId, DestError> {
        let opts = PutMultipartOptions { attributes: self.attributes(meta), ..Default::default() };
        let (mp, path) = (self.mp()?, Self::path(key)?);
        self.guarded(async {
            mp.create_multipart_opts(&path, opts).await.map_err(|source| DestError::Store {
                op: "create_multipart",
                key: key.0.clone(),
                source,
            })
        })
        .await
    }

    /// Uploads part `idx` of an upload.
    pub async fn put_part(
        &self,
        key: &ObjectKey,
        id: &MultipartId,
        idx: usize,
        body: Vec<Bytes>,
    ) -> Result<PartId, DestError> {
        let payload: object_store::PutPayload = body.into_iter().collect();
        let (mp, path) = (self.mp()?, Self::path(key)?);
        let part = self
            .guarded(async {
                mp.put_part(&path, id, idx, payload).await.map_err(|source| DestError::Store {
                    op: "put_part",
                    key: key.0.clone(),
                    source,
                })
            })
            .await?;
        self.wrote();
        Ok(part)
    }

    /// Completes an upload from its parts, in order.
    pub async fn complete_upload(
        &self,
        key: &ObjectKey,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> Result<(), DestError> {
        let (mp, path) = (self.mp()?, Self::path(key)?);
        self.guarded(async {
            mp.complete_multipart(&path, id, parts).await.map(|_| ()).map_err(|source| DestError::Store {
                op: "complete_multipart",
                key: key.0.clone(),
                source,
            })
        })
        .await?;
        self.wrote();
        Ok(())
    }

    /// Aborts an upload; an upload the server no longer knows is fine.
    pub async fn abort_upload(&self, key: &ObjectKey, id: &MultipartId) -> Result<(), DestError> {
        let (mp, path) = (self.mp()?, Self::path(key)?);
        self.guarded(async {
            match mp.abort_multipart(&path, id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(source) => Err(DestError::Store { op: "abort_multipart", key: key.0.clone(), source }),
            }
        })
        .await
    }

    /// Aborts the uploads in progress at `key` that no record names (`recorded`): those a process
    /// killed between `CreateMultipartUpload` and the record of its id left behind. Returns how many
    /// were aborted, or `None` when this store cannot list them (GCS and Azure: an unfinished upload
    /// there is left to the bucket's lifecycle rules or Azure's 7-day expiry of uncommitted blocks).
    pub async fn abort_unrecorded_uploads(
        &self,
        key: &ObjectKey,
        recorded: &[String],
    ) -> Result<Option<usize>, DestError> {
        let Some(s3) = &self.s3 else { return Ok(None) };
        let path = Self::path(key)?;
        let ids = self
            .guarded(async {
                uploads::open_at(s3, path.as_ref()).await.map_err(|e| DestError::Store {
                    op: "list_multipart_uploads",
                    key: key.0.clone(),
                    source: object_store::Error::Generic { store: "S3", source: e.into() },
                })
            })
            .await?;
        let mut aborted = 0;
        for id in ids.iter().filter(|id| !recorded.contains(id)) {
            self.abort_upload(key, &id.clone()).await?;
            aborted += 1;
        }
        Ok(Some(aborted))
    }

    /// The object's size, or `None` if absent.
    pub async fn head(&self, key: &ObjectKey) -> Result<Option<u64>, DestError> {
        let path = Self::path(key)?;
        self.guarded(async {
            match self.store.head(&path).await {
                Ok(m) => Ok(Some(m.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(source) => Err(DestError::Store { op: "head", key: key.0.clone(), source }),
            }
        })
        .await
    }

    /// What the object at `key` holds (size and md5), or `None` if absent. On a local folder the file
    /// is read and hashed (cheaper than downloading it from Drive again); elsewhere one HEAD request.
    pub async fn stored_content(&self, key: &ObjectKey) -> Result<Option<StoredContent>, DestError> {
        use futures::StreamExt;
        let path = Self::path(key)?;
        let store_err = |source| DestError::Store { op: "head", key: key.0.clone(), source };
        let head = object_store::GetOptions { head: !self.hash_to_learn_md5(), ..Default::default() };
        self.guarded(async {
            let got = match self.store.get_opts(&path, head).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(source) => return Err(store_err(source)),
            };
            let size = got.meta.size;
            let recorded = got.attributes.get(&Attribute::Metadata(MD5_METADATA.into())).map(|v| v.to_string());
            let etag = got.meta.e_tag.clone().filter(|_| self.etag_is_md5).map(|t| t.trim_matches('"').to_string());
            let md5 = match (recorded, etag) {
                (Some(md5), _) => Some(md5),
                (None, Some(etag)) if etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit()) => Some(etag),
                _ if self.hash_to_learn_md5() => {
                    let mut hasher = crate::hashing::ContentHasher::new(crate::hashing::Digests::Md5);
                    let mut body = got.into_stream();
                    while let Some(piece) = body.next().await {
                        hasher.update(&piece.map_err(store_err)?);
                    }
                    Some(hasher.finish().md5)
                }
                _ => None,
            };
            Ok(Some(StoredContent { size, md5: md5.map(|m| m.to_ascii_lowercase()) }))
        })
        .await
    }

    /// A local folder keeps no metadata and its ETag is not an md5: the file itself must be hashed.
    fn hash_to_learn_md5(&self) -> bool {
        !self.supports_metadata
    }

    /// Reads a whole object (for tests and `verify`).
    pub async fn get(&self, key: &ObjectKey) -> Result<Bytes, DestError> {
        let path = Self::path(key)?;
        let store_err = |source| DestError::Store { op: "get", key: key.0.clone(), source };
        self.guarded(async { self.store.get(&path).await.map_err(store_err)?.bytes().await.map_err(store_err) }).await
    }

    /// Server-side copy of an object to another key for the same content of the same file (a kept
    /// version, the trash, a move back): the copy keeps the source's metadata. On a local folder the
    /// copy is a file of its own (see [`copy_local_file`]), never a hard link: a kept version, a
    /// trashed object or a content-dedup copy must not change when the file it was copied from (or to)
    /// is written in place. On S3 a source above `CopyObject`'s limit (5 GiB) is copied in parts
    /// (`s3_copy`), its content type and metadata carried over.
    pub async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), DestError> {
        self.copy_with(from, to, None).await
    }

    /// Server-side copy that becomes `meta`'s file's object (a content-dedup copy, a renamed or moved
    /// file): the copy carries that file's metadata (`drive-id`, `drive-name`, `drive-md5`, content
    /// type), not the source's. On S3 that is a `CopyObject` with `x-amz-metadata-directive: REPLACE`
    /// (or a multipart copy created with it); a local folder keeps no metadata. Other stores
    /// (object_store's copy takes no metadata) keep the source's.
    pub async fn copy_as(&self, from: &ObjectKey, to: &ObjectKey, meta: &ObjectMeta) -> Result<(), DestError> {
        self.copy_with(from, to, Some(self.attributes(meta))).await
    }

    /// A copy with `attributes` replacing the source's, or keeping them when `None`.
    async fn copy_with(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
        attributes: Option<Attributes>,
    ) -> Result<(), DestError> {
        let (src, dst) = (Self::path(from)?, Self::path(to)?);
        let copy_err = |source| DestError::Store { op: "copy", key: from.0.clone(), source };
        match (&self.local, &self.big_copies) {
            (Some(fs), _) => {
                let (a, b) =
                    (fs.path_to_filesystem(&src).map_err(copy_err)?, fs.path_to_filesystem(&dst).map_err(copy_err)?);
                self.guarded(async {
                    tokio::task::spawn_blocking(move || copy_local_file(&a, &b))
                        .await
                        .map_err(|e| copy_err(local_error(std::io::Error::other(e))))?
                        .map_err(copy_err)
                })
                .await?
            }
            (None, Some(copier)) => {
                if !self.copy_in_parts(copier, from, &src, &dst, attributes.clone()).await? {
                    match &attributes {
                        Some(a) => {
                            self.guarded(async { copier.copy_object(&src, &dst, a).await.map_err(copy_err) }).await?
                        }
                        None => self.guarded(async { self.store.copy(&src, &dst).await.map_err(copy_err) }).await?,
                    }
                }
            }
            (None, None) => self.guarded(async { self.store.copy(&src, &dst).await.map_err(copy_err) }).await?,
        }
        self.wrote();
        Ok(())
    }

    /// Copies `src` in parts when it is larger than the copier's threshold (one HEAD tells its size
    /// and attributes), giving the copy `attributes` or else the source's; false when it is not, and
    /// one `CopyObject` is to copy it.
    async fn copy_in_parts(
        &self,
        copier: &s3_copy::MultipartCopier,
        from: &ObjectKey,
        src: &Path,
        dst: &Path,
        attributes: Option<Attributes>,
    ) -> Result<bool, DestError> {
        let head = object_store::GetOptions { head: true, ..Default::default() };
        self.guarded(async {
            let store_err = |op, source| DestError::Store { op, key: from.0.clone(), source };
            let got = self.store.get_opts(src, head).await.map_err(|source| store_err("copy", source))?;
            if got.meta.size <= copier.plan.above {
                return Ok(false);
            }
            let parts = copier
                .copy(src, dst, got.meta.size, attributes.unwrap_or(got.attributes))
                .await
                .map_err(|failure| store_err(failure.op, failure.source))?;
            tracing::debug!(from = %from, to = %dst, size = got.meta.size, parts, "copied in parts");
            Ok(true)
        })
        .await
    }

    /// Moves an object to another key (a step of a subtree move): on a local folder a rename, so a
    /// folder of any size moves without copying its bytes; elsewhere a server-side copy, then the
    /// delete. Either way the source is gone once the target holds the bytes, as a crash finds it.
    pub async fn move_object(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), DestError> {
        let Some(fs) = &self.local else {
            self.copy(from, to).await?;
            return self.delete(from).await;
        };
        let (src, dst) = (Self::path(from)?, Self::path(to)?);
        let move_err = |source| DestError::Store { op: "move", key: from.0.clone(), source };
        let (a, b) = (fs.path_to_filesystem(&src).map_err(move_err)?, fs.path_to_filesystem(&dst).map_err(move_err)?);
        self.guarded(async {
            tokio::task::spawn_blocking(move || rename_local_file(&a, &b))
                .await
                .map_err(|e| move_err(local_error(std::io::Error::other(e))))?
                .map_err(move_err)
        })
        .await?;
        self.wrote();
        Ok(())
    }

    /// Deletes an object; absent is fine.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), DestError> {
        let path = Self::path(key)?;
        self.guarded(async {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(source) => Err(DestError::Store { op: "delete", key: key.0.clone(), source }),
            }
        })
        .await?;
        self.wrote();
        Ok(())
    }

    /// Applies the delete policy to `key`: trash (move under `<prefix>/.trash/`), delete, or keep.
    pub async fn remove(&self, key: &ObjectKey) -> Result<(), DestError> {
        match self.delete_policy {
            DeletePolicy::Keep => Ok(()),
            DeletePolicy::Delete => self.delete(key).await,
            DeletePolicy::Trash => self.trash(key).await,
        }
    }

    /// Moves `key` under `<prefix>/.trash/`. A key trashed before keeps its earlier copy, and a path
    /// the trash cannot hold (on a local folder: a file trashed where a folder was, or the reverse)
    /// goes under a fresh time-stamped folder instead, so a trash never overwrites or fails on an
    /// earlier one. Idempotent: a source already gone is done.
    async fn trash(&self, key: &ObjectKey) -> Result<(), DestError> {
        let rel = key.as_str().strip_prefix(&self.prefix).unwrap_or(key.as_str()).trim_start_matches('/');
        let fit = |key: ObjectKey| ObjectKey(keys::fit_key(key.as_str(), self.max_key_bytes));
        let plain = fit(self.key(&format!(".trash/{rel}")));
        let plain_free = matches!(self.head(&plain).await, Ok(None));
        let stamp = crate::model::unix_ms();
        let mut last = None;
        for attempt in 0..3 {
            let target = match attempt {
                0 if plain_free => plain.clone(),
                n => fit(self.key(&format!(".trash/{stamp}-{n}/{rel}"))),
            };
            match self.copy(key, &target).await {
                Ok(()) => return self.delete(key).await,
                Err(e) => {
                    if self.head(key).await?.is_none() {
                        return Ok(());
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| DestError::Config("trash failed".into())))
    }

    /// Proves the destination answers (one listing request) before any work starts, so an unreachable
    /// or misconfigured store fails the run at once instead of dead-lettering every file.
    pub async fn check_reachable(&self) -> Result<(), DestError> {
        use futures::StreamExt;
        let prefix = if self.prefix.is_empty() { None } else { Some(Path::from(self.prefix.as_str())) };
        self.guarded(async {
            match self.store.list(prefix.as_ref()).next().await {
                None | Some(Ok(_)) => Ok(()),
                Some(Err(source)) => Err(DestError::Store { op: "list", key: self.prefix.clone(), source }),
            }
        })
        .await
    }

    /// Every key under `relative` (below the prefix), as a stream: memory stays bounded whatever the
    /// number of objects.
    pub fn keys_under(&self, relative: &str) -> impl futures::Stream<Item = Result<ObjectKey, DestError>> + '_ {
        use futures::StreamExt;
        let under = self.key(relative);
        let list_err = move |source| DestError::Store { op: "list", key: under.0.clone(), source };
        self.store
            .list(Some(&Path::from(self.key(relative).as_str())))
            .map(move |m| m.map(|m| ObjectKey(m.location.to_string())).map_err(list_err.clone()))
    }

    /// Every object under the prefix with its size, and its md5 when the listing tells it (an S3
    /// single-part ETag is the md5 of the bytes), as a stream: `verify` compares a million objects in
    /// bounded memory.
    pub fn list_objects(&self) -> impl futures::Stream<Item = Result<ListedObject, DestError>> + '_ {
        use futures::StreamExt;
        let prefix = if self.prefix.is_empty() { None } else { Some(Path::from(self.prefix.as_str())) };
        let list_err = |source| DestError::Store { op: "list", key: self.prefix.clone(), source };
        self.store.list(prefix.as_ref()).map(move |m| {
            let m = m.map_err(list_err)?;
            let md5 = m.e_tag.filter(|_| self.etag_is_md5).map(|t| t.trim_matches('"').to_ascii_lowercase());
            let md5 = md5.filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()));
            Ok(ListedObject { key: ObjectKey(m.location.to_string()), size: m.size, md5 })
        })
    }

    /// Every entry under the prefix, as a stream: objects, and on a local folder the symbolic links
    /// met, each listed as itself and never followed (object_store's local listing follows them, so
    /// the files behind a link would pass for the mirror's objects).
    pub fn list_entries(&self) -> futures::stream::BoxStream<'_, Result<Listed, DestError>> {
        use futures::StreamExt;
        match &self.local_root {
            Some(root) => local_list::entries(root.clone()).boxed(),
            None => self.list_objects().map(|r| r.map(Listed::Object)).boxed(),
        }
    }

    /// True when objects carry the `drive-md5` metadata written at upload (not on a local folder).
    pub fn keeps_metadata(&self) -> bool {
        self.supports_metadata
    }

    /// Reads the object at `key` and hashes it: its md5 and length, or `None` if it is gone. Memory
    /// holds one piece of the body at a time.
    pub async fn content_md5(&self, key: &ObjectKey) -> Result<Option<(String, u64)>, DestError> {
        use futures::StreamExt;
        let path = Self::path(key)?;
        let store_err = |source| DestError::Store { op: "get", key: key.0.clone(), source };
        self.guarded(async {
            let got = match self.store.get(&path).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(source) => return Err(store_err(source)),
            };
            let mut hasher = crate::hashing::ContentHasher::new(crate::hashing::Digests::Md5);
            let mut body = got.into_stream();
            while let Some(piece) = body.next().await {
                hasher.update(&piece.map_err(store_err)?);
            }
            let len = hasher.len();
            Ok(Some((hasher.finish().md5, len)))
        })
        .await
    }

    /// Every key under the prefix (for tests and `verify`).
    pub async fn list_keys(&self) -> Result<Vec<(ObjectKey, u64)>, DestError> {
        use futures::TryStreamExt;
        let prefix = if self.prefix.is_empty() { None } else { Some(Path::from(self.prefix.as_str())) };
        let metas: Vec<_> = self
            .guarded(async {
                self.store.list(prefix.as_ref()).try_collect().await.map_err(|source| DestError::Store {
                    op: "list",
                    key: self.prefix.clone(),
                    source,
                })
            })
            .await?;
        Ok(metas.into_iter().map(|m| (ObjectKey(m.location.to_string()), m.size)).collect())
    }
}

fn url_prefix(url: &url::Url) -> String {
    url.path().trim_matches('/').to_string()
}

/// Whether requests to this S3 endpoint send `UNSIGNED-PAYLOAD` instead of the body's SHA-256, as
/// AWS's SDK signer does: over HTTPS (AWS itself when no endpoint is set, Supabase) TLS already
/// protects the body and hashing it twice more (here to sign, at the server to check) is pure cost;
/// over plain HTTP the signature is the body's only protection in transit, so it stays signed.
fn signs_payload_unsigned(endpoint: Option<&str>) -> bool {
    endpoint.is_none_or(|e| e.trim_start().to_ascii_lowercase().starts_with("https://"))
}

/// The S3 store of `[destination]`, and where its bucket answers (for the requests signed outside
/// object_store: `s3_copy`).
fn build_s3(
    cfg: &DestinationConfig,
    url: &url::Url,
    retry: &RetryConfig,
) -> Result<(object_store::aws::AmazonS3, s3_copy::BucketAddress), DestError> {
    let bucket = url.host_str().ok_or_else(|| DestError::Config(format!("s3 URL {:?} has no bucket", cfg.url)))?;
    let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    let mut client = object_store::ClientOptions::new()
        .with_timeout(cfg.timeout.0)
        .with_connect_timeout(Duration::from_secs(10))
        .with_pool_max_idle_per_host(64);
    if let Some(endpoint) = &cfg.endpoint {
        client = client.with_allow_http(endpoint.starts_with("http://"));
        b = b.with_endpoint(endpoint.trim_end_matches('/')).with_virtual_hosted_style_request(false);
    }
    b = b.with_unsigned_payload(signs_payload_unsigned(cfg.endpoint.as_deref()));
    b = b.with_client_options(client).with_region(cfg.region.clone().unwrap_or_else(|| "us-east-1".into()));
    if let Some(k) = &cfg.access_key_id {
        b = b.with_access_key_id(k);
    }
    if let Some(s) = &cfg.secret_access_key {
        b = b.with_secret_access_key(s.expose());
    }
    let backoff =
        object_store::BackoffConfig { init_backoff: retry.base_delay.0, max_backoff: retry.max_delay.0, base: 2.0 };
    b = b.with_retry(object_store::RetryConfig {
        backoff,
        max_retries: retry.max_attempts.saturating_sub(1) as usize,
        // New attempts start for 3 minutes at most: with the default 2-minute time-out, a store that
        // never answers fails the run within about 5 minutes.
        retry_timeout: Duration::from_secs(180),
    });
    let address = s3_copy::BucketAddress::of(&b)
        .ok_or_else(|| DestError::Config(format!("s3 URL {:?} has no bucket", cfg.url)))?;
    Ok((b.build().map_err(|e| DestError::Config(e.to_string()))?, address))
}

#[cfg(test)]
mod payload_signing_tests {
    use super::signs_payload_unsigned;

    #[test]
    fn only_https_endpoints_send_unsigned_payloads() {
        assert!(signs_payload_unsigned(None), "AWS itself is reached over HTTPS");
        assert!(signs_payload_unsigned(Some("https://abc.supabase.co/storage/v1/s3")));
        assert!(signs_payload_unsigned(Some("HTTPS://minio.example.com")));
        assert!(!signs_payload_unsigned(Some("http://127.0.0.1:9000")), "plain HTTP keeps the body signed");
    }
}
