//! `mirrorflow verify`: proves the mirror equals Drive, and repairs it when it does not.
//!
//! The file set comes from Drive (`files.list` of every drive in scope), never from the state store;
//! the store only says which key a file holds when the planner's rules leave a choice (a duplicate
//! name's ` (fileId)`) and the recorded size and md5 of an export. The destination is listed under
//! the prefix, and the two sides meet in a throwaway on-disk table ([`spill`]), so memory stays
//! bounded whatever the number of files.

pub mod dry_run;
pub mod expect;
mod report;
pub mod schedule;
pub mod spill;

pub use report::Report;

use crate::config::{Config, ExportConfig};
use crate::dest::{DestError, Destination, Listed, ListedObject, keys};
use crate::drive::{Corpus, DriveClient, DriveError};
use crate::mirror::disposition::{self, Disposition};
use crate::mirror::selection::{Candidate, Selection};
use crate::mirror::{Layout, Scope};
use crate::model::{DriveFile, FileId, ObjectKey, Refresh, SkipReason};
use crate::state::{Store, StoreError};
use expect::{Claims, FolderTree, KeyRules, Placement, Records};
use spill::{Expected, Spill};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why `verify` could not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Drive could not be listed.
    #[error("{0}")]
    Drive(#[from] DriveError),
    /// The destination could not be listed or read.
    #[error("{0}")]
    Dest(#[from] DestError),
    /// The state store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A running pipeline holds the state store.
    #[error(
        "the state in {0} is in use by a running pipeline: stop it first (a running pipeline repairs with [verify] every)"
    )]
    Locked(String),
    /// The state describes another destination.
    #[error("the state in {state} belongs to destination {recorded:?}, but the configuration names {configured:?}")]
    OtherDestination {
        /// `[state] dir`.
        state: String,
        /// The destination the store describes.
        recorded: String,
        /// The destination the configuration names.
        configured: String,
    },
    /// The scope could not be resolved.
    #[error("{0}")]
    Scope(String),
    /// The working files could not be written.
    #[error("verify's working files: {0}")]
    Spill(String),
    /// No key rule applies (a thousand files of one name).
    #[error("{0}")]
    NoKey(String),
    /// The repair's pipeline run failed.
    #[error("repair: {0}")]
    Repair(Box<dyn std::error::Error + Send + Sync>),
}

impl VerifyError {
    fn spill(e: impl std::fmt::Display) -> Self {
        VerifyError::Spill(e.to_string())
    }

    /// True for problems of usage or configuration (exit 2), not of the run.
    pub fn is_usage(&self) -> bool {
        matches!(self, VerifyError::Locked(_) | VerifyError::OtherDestination { .. } | VerifyError::Scope(_))
    }
}

impl From<crate::open::ScopeError> for VerifyError {
    fn from(e: crate::open::ScopeError) -> Self {
        match e {
            crate::open::ScopeError::Drive(e) => VerifyError::Drive(e),
            crate::open::ScopeError::Selection(s) => VerifyError::Scope(format!("source.drives: {s}")),
        }
    }
}

/// How to verify.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Read and hash every object (finds same-size corruption on any store).
    pub checksum: bool,
    /// Print a progress line on stderr.
    pub progress: bool,
    /// `--prune-unknown`: the repair removes objects outside the mirror's namespaces too (per
    /// `deletes`); without it they are only reported.
    pub prune_unknown: bool,
}

/// Objects compared or hashed at once.
const OBJECT_CONCURRENCY: usize = 8;

/// Dead-letter reasons that mean Drive will not hand the file over until it changes: such a file is
/// skipped, not missing.
const PERMANENT_REASONS: &[&str] = &[
    "cannotDownloadAbusiveFile",
    "fileNotDownloadable",
    "fileNotExportable",
    "exportSizeLimitExceeded",
    "fileTooLarge",
];

/// Why the run skipped this version of a file, worded like Drive's refusal so that
/// [`PERMANENT_REASONS`] tells a permanent one (skipped, not missing) from a quota deferral (missing
/// until it ends).
fn skip_note(r: crate::state::SkipRecord) -> String {
    match r.reason.as_str() {
        "abusive" => "cannotDownloadAbusiveFile: Drive flagged it as abusive and acknowledge_abuse is off".into(),
        "abusive_not_owned" => {
            "cannotDownloadAbusiveFile: Drive flagged it as abusive, and only its owner (or its shared drive's organizer) can acknowledge that".into()
        }
        "download_disabled" => "fileNotDownloadable: the owner disabled downloads".into(),
        "no_export" => "fileNotExportable: Google has no export for this type".into(),
        _ => format!("downloadQuotaExceeded: deferred until {} (Unix ms)", r.until_unix_ms.unwrap_or(0)),
    }
}

/// Counters shown on the progress line.
#[derive(Default)]
struct Counters {
    listed: AtomicU64,
    /// Files the objects are compared with, once Drive is listed (0 before).
    expected: AtomicU64,
    compared: AtomicU64,
    hashed: AtomicU64,
}

/// What one reconcile reads: Drive, the destination and, when there is one, the state store.
pub struct Sources<'a> {
    /// The state store (`None`: no state yet; keys follow the rules alone).
    pub store: Option<&'a Store>,
    /// The destination.
    pub dest: &'a Destination,
    /// Drive.
    pub drive: &'a DriveClient,
    /// The drives in scope.
    pub scope: &'a Scope,
    /// `[source] export`: which extension each Google type is exported with.
    pub export: &'a ExportConfig,
    /// `[source] max_file_size`.
    pub max_file_size: Option<u64>,
    /// The state folder's path relative to a local destination, when it lies inside it: its files
    /// are the mirror's own, never extras.
    pub state_inside: Option<String>,
}

/// Where `[state] dir` lies inside a local-folder destination, as a path relative to it.
pub fn state_inside_destination(cfg: &Config) -> Option<String> {
    let url = url::Url::parse(&cfg.destination.url).ok().filter(|u| u.scheme() == "file")?;
    let root = url.to_file_path().ok()?.canonicalize().ok()?;
    let state = cfg.state.dir.canonicalize().ok()?;
    let rel = state.strip_prefix(&root).ok()?.to_str()?.to_string();
    Some(rel).filter(|r| !r.is_empty())
}

/// Verifies the mirror `cfg` describes: Drive against the destination, key by key.
pub async fn verify(cfg: &Config, opts: &VerifyOptions) -> Result<Report, VerifyError> {
    let store = open_store(cfg)?;
    verify_with(cfg, opts, store.as_ref()).await
}

/// What the next run would do to the mirror, found by a reconcile (see [`dry_run::DryRun`]); nothing
/// is written, to the destination or to the state.
pub async fn dry_run(cfg: &Config, opts: &VerifyOptions) -> Result<dry_run::DryRun, VerifyError> {
    let store = open_store(cfg)?;
    let report = verify_with(cfg, opts, store.as_ref()).await?;
    dry_run::DryRun::from_report(&report, store.as_ref(), cfg.destination.deletes)
}

async fn verify_with(cfg: &Config, opts: &VerifyOptions, store: Option<&Store>) -> Result<Report, VerifyError> {
    crate::install_crypto_provider();
    let dest = Destination::from_config(&cfg.destination, &cfg.retry)?;
    let drive = crate::open::drive_client(cfg).await?;
    let scope = crate::open::discover_scope(cfg, &drive).await?;
    let sources = Sources {
        store,
        dest: &dest,
        drive: &drive,
        scope: &scope,
        export: &cfg.source.export,
        max_file_size: cfg.source.max_file_size.map(|b| b.0),
        state_inside: state_inside_destination(cfg),
    };
    reconcile(&sources, opts).await
}

/// One reconcile of `src`: the `verify` command's, and a running pipeline's scheduled one.
pub async fn reconcile(src: &Sources<'_>, opts: &VerifyOptions) -> Result<Report, VerifyError> {
    let counters = Arc::new(Counters::default());
    let ticker = opts.progress.then(|| spawn_progress(counters.clone()));
    // What a file becomes, as the run decides it. `verify` is not told the destination's own size
    // limit: a file over it is dead-lettered by the run and shows with that reason.
    let layout = Layout {
        prefix: src.dest.prefix().to_string(),
        mode: src.dest.key_mode,
        export: src.export.clone(),
        max_file_size: src.max_file_size,
        dest_max_file_size: None,
        max_key_bytes: src.dest.max_key_bytes,
    };
    let mut pass = Pass {
        store: src.store,
        spill: Spill::new()?,
        rules: layout.rules(),
        layout,
        tree: FolderTree::new(src.scope.my_drive_root.clone(), src.scope.shared.clone())
            .with_shared_with_me(src.scope.shared_with_me),
        selection: &src.scope.selection,
        counters: counters.clone(),
        checked: 0,
    };
    let corpora = crate::stages::change_feed::change_logs(src.scope);
    let result = pass.run(src.drive, src.dest, &corpora, opts.checksum, src.state_inside.as_deref()).await;
    if let Some(t) = ticker {
        t.abort();
        eprint!("\r\x1b[2K");
    }
    result?;
    let Pass { spill, rules, checked, .. } = pass;
    Report::new(spill, rules, checked, counters.hashed.load(Ordering::Relaxed))
}

/// Opens the state store to read records and claims, without creating one; a running pipeline's
/// lock is a clear error, not a wait.
pub(crate) fn open_store(cfg: &Config) -> Result<Option<Store>, VerifyError> {
    let dir = &cfg.state.dir;
    if !dir.exists() {
        return Ok(None);
    }
    let store = crate::open::state_store(cfg).map_err(|e| {
        if e.is_locked() { VerifyError::Locked(dir.display().to_string()) } else { VerifyError::Store(e) }
    })?;
    match crate::open::check_binding(cfg, &store) {
        Ok(()) => Ok(Some(store)),
        Err(crate::open::BindingError::Store(e)) => Err(e.into()),
        Err(crate::open::BindingError::Other(o)) => {
            Err(VerifyError::OtherDestination { state: o.state, recorded: o.recorded, configured: o.configured })
        }
    }
}

/// One reconcile: the Drive side into the spill, then the destination against it.
struct Pass<'a> {
    store: Option<&'a Store>,
    spill: Spill,
    /// What a file becomes ([`disposition`]).
    layout: Layout,
    rules: KeyRules,
    tree: FolderTree,
    /// Which files the mirror holds (the planner's rule).
    selection: &'a Selection,
    counters: Arc<Counters>,
    checked: u64,
}

/// Claims as the planner sees them at rest: the store's committed claims, then this pass's own.
struct PassClaims<'a> {
    store: Option<&'a Store>,
    spill: &'a Spill,
}

impl Claims for PassClaims<'_> {
    fn holder(&mut self, class: &str) -> Result<Option<FileId>, VerifyError> {
        if let Some(store) = self.store
            && let Some(holder) = store.claim_holder(class)?
        {
            return Ok(Some(holder));
        }
        self.spill.class_holder(class)
    }

    fn take(&mut self, class: &str, id: &FileId) -> Result<(), VerifyError> {
        if let Some(store) = self.store
            && store.claim_holder(class)?.is_some()
        {
            return Ok(());
        }
        self.spill.take_class(class, id)
    }
}

/// Recorded keys of files and folders.
struct StoreRecords<'a>(Option<&'a Store>);

impl Records for StoreRecords<'_> {
    fn recorded_key(&mut self, id: &FileId) -> Result<Option<ObjectKey>, VerifyError> {
        let Some(store) = self.0 else { return Ok(None) };
        if let Some(f) = store.file(id)? {
            return Ok(Some(f.key));
        }
        Ok(store.folder(id)?.map(|f| f.key))
    }
}

impl Pass<'_> {
    async fn run(
        &mut self,
        drive: &DriveClient,
        dest: &Destination,
        corpora: &[Corpus],
        checksum: bool,
        state_inside: Option<&str>,
    ) -> Result<(), VerifyError> {
        for corpus in corpora {
            self.list_folders(drive, corpus).await?;
        }
        for corpus in corpora {
            self.list_files(drive, corpus).await?;
        }
        self.counters.expected.store(self.checked, Ordering::Relaxed);
        self.compare_objects(dest, checksum, state_inside).await?;
        self.spill.settle_missing()
    }

    async fn list_folders(&mut self, drive: &DriveClient, corpus: &Corpus) -> Result<(), VerifyError> {
        let mut token: Option<String> = None;
        loop {
            let page = drive.list_page(corpus, true, token.as_deref()).await?;
            page.files.iter().for_each(|f| self.tree.add(f));
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(()),
            }
        }
    }

    async fn list_files(&mut self, drive: &DriveClient, corpus: &Corpus) -> Result<(), VerifyError> {
        let mut token: Option<String> = None;
        loop {
            let page = drive.list_page(corpus, false, token.as_deref()).await?;
            for f in page.files.into_iter().filter(|f| !f.is_folder() && !f.trashed) {
                self.counters.listed.fetch_add(1, Ordering::Relaxed);
                let f = if f.is_shortcut() && self.selection.links_shortcuts() {
                    let follow = self.selection.follows_shortcuts();
                    crate::stages::planner::resolve_shortcut(drive, f, follow).await.map_err(|(_, e)| e)?
                } else {
                    f
                };
                self.expect_file(f)?;
            }
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(()),
            }
        }
    }

    /// Records what the mirror must hold for one listed file, or why it holds nothing.
    fn expect_file(&mut self, f: DriveFile) -> Result<(), VerifyError> {
        let mut claims = PassClaims { store: self.store, spill: &self.spill };
        let mut records = StoreRecords(self.store);
        let Some(parent_key) = self.tree.parent_key(&self.rules, &mut claims, &mut records, Placement::of(&f))? else {
            return Ok(());
        };
        let (path, ancestors) = self.tree.place(f.parents.first(), &f.name);
        let candidate = Candidate { path: &path, mime_type: &f.mime_type, ancestors: &ancestors };
        if !self.selection.admits(&candidate) {
            // Outside `[source] folders` / `include` / `exclude` / `mime_types`: not mirrored, and an
            // object at its key is an extra.
            return Ok(());
        }
        if f.is_shortcut() && !self.selection.links_shortcuts() {
            return self.spill.skip(&f.id, &f.name, "shortcut (shortcuts = \"skip\")");
        }
        let f = f.with_link_digest();
        let Ok((_, ext)) = disposition::form(&f, &self.layout.export) else {
            return self.spill.skip(&f.id, &f.name, "noExport: Google has no export for this type");
        };
        let record = match self.store {
            Some(s) => s.file(&f.id)?,
            None => None,
        };
        let (name, recorded) = ((f.name.as_str(), ext.as_deref()), record.as_ref().map(|r| &r.key));
        let key = expect::key_in(&self.rules, &mut claims, &f.id, &parent_key, name, recorded)?;
        let (dead_letter, skip) = match self.store {
            Some(s) => (s.dead_letter(&f.id)?, s.skip_record(&f.id)?.filter(|r| r.version == f.version)),
            None => (None, None),
        };
        let why = dead_letter.map(|d| format!("{}: {}", d.reason, d.last_error)).or_else(|| skip.map(skip_note));
        let expected = self.expected(&f, record.as_ref(), why);
        self.checked += 1;
        self.spill.expect(self.rules.relative(&key), &expected)
    }

    /// Size, md5 and skip reason of one file: Drive's for binary content, the recorded export's for a
    /// Google file (Drive has neither for it).
    fn expected(
        &self,
        f: &DriveFile,
        record: Option<&crate::model::FileRecord>,
        dead_letter: Option<String>,
    ) -> Expected {
        let (size, md5, stale) = match (f.is_google_doc(), record) {
            (false, _) => (f.size, f.md5.clone(), None),
            (true, Some(r)) if r.version == f.version => (Some(r.size), r.md5.clone(), None),
            (true, Some(r)) => {
                (None, None, Some(format!("export out of date: Drive version {}, mirrored {}", f.version, r.version)))
            }
            (true, None) => (None, None, None),
        };
        // The run's decision (the store's skip record is read above, as history): a file it will not
        // write is no loss when missing.
        let not_written = match disposition::disposition(f, &self.layout, None, crate::model::unix_ms()) {
            Disposition::Write { .. } => None,
            Disposition::Skip(SkipReason::DownloadDisabled(_)) => {
                Some("fileNotDownloadable: the owner disabled downloads".to_string())
            }
            Disposition::Skip(other) => Some(other.label().to_string()),
            Disposition::DeadLetter { reason, error, .. } => Some(format!("{reason}: {error}")),
        };
        let permanent = dead_letter.clone().filter(|d| PERMANENT_REASONS.iter().any(|r| d.starts_with(r)));
        Expected {
            file_id: f.id.clone(),
            name: f.name.clone(),
            size,
            md5: md5.map(|m| m.to_ascii_lowercase()),
            stale,
            skip_if_missing: permanent.or(not_written),
            dead_letter,
        }
    }

    /// Lists the destination and checks every object against what Drive says it must hold.
    async fn compare_objects(
        &self,
        dest: &Destination,
        checksum: bool,
        state_inside: Option<&str>,
    ) -> Result<(), VerifyError> {
        use futures::TryStreamExt;
        let (spill, rules, counters) = (&self.spill, &self.rules, &self.counters);
        dest.list_entries()
            .map_err(VerifyError::from)
            .map_ok(|entry| async move {
                let obj = match entry {
                    Listed::Object(obj) => obj,
                    Listed::Link { key, target } => {
                        let rel = rules.relative(key.as_str());
                        return if is_reserved(rel, state_inside) { Ok(()) } else { spill.link(rel, &target) };
                    }
                };
                let rel = rules.relative(obj.key.as_str()).to_string();
                if is_reserved(&rel, state_inside) {
                    return Ok(());
                }
                counters.compared.fetch_add(1, Ordering::Relaxed);
                let Some(expected) = spill.take_expected(&rel)? else {
                    return match keys::namespace_of(&rel) {
                        keys::Namespace::Mirror => spill.extra(&rel),
                        _ => spill.unknown(&rel),
                    };
                };
                if let Some(reason) = compare(dest, &obj, &expected, checksum, counters).await? {
                    spill.mismatch(&rel, &expected, reason)?;
                }
                Ok(())
            })
            .try_buffer_unordered(OBJECT_CONCURRENCY)
            .try_collect::<()>()
            .await
    }
}

/// Keys under the prefix that are the mirror's own, not Drive's: the trash, kept versions, and the
/// state folder when it lies inside a local destination.
fn is_reserved(rel: &str, state_inside: Option<&str>) -> bool {
    let under = |r: &str| rel == r || rel.strip_prefix(r).is_some_and(|t| t.starts_with('/'));
    keys::namespace_of(rel) == keys::Namespace::Reserved || state_inside.is_some_and(under)
}

/// Why `obj` does not hold what `expected` says, if it does not.
async fn compare(
    dest: &Destination,
    obj: &ListedObject,
    expected: &Expected,
    checksum: bool,
    counters: &Counters,
) -> Result<Option<String>, VerifyError> {
    if let Some(size) = expected.size
        && size != obj.size
    {
        return Ok(Some(format!("size {} bytes, Drive has {size}", obj.size)));
    }
    if let Some(why) = &expected.stale {
        return Ok(Some(why.clone()));
    }
    let Some(want) = &expected.md5 else { return Ok(None) };
    let got = if checksum {
        match dest.content_md5(&obj.key).await? {
            Some((md5, len)) => {
                counters.hashed.fetch_add(len, Ordering::Relaxed);
                Some(md5)
            }
            None => return Ok(Some("removed while verify read it".into())),
        }
    } else if obj.md5.is_some() {
        obj.md5.clone()
    } else if dest.keeps_metadata() {
        dest.stored_content(&obj.key).await?.and_then(|c| c.md5)
    } else {
        None
    };
    Ok(got.filter(|g| !g.eq_ignore_ascii_case(want)).map(|g| format!("md5 {g}, Drive has {want}")))
}

/// The progress line, rewritten every second: what is listed and compared, bytes hashed, the rate of
/// the comparison, and its ETA once Drive is listed (the listing's own length is unknown up front).
fn spawn_progress(counters: Arc<Counters>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = (std::time::Instant::now(), 0u64);
        let mut rate = 0.0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            let (listed, expected, compared, hashed) =
                (load(&counters.listed), load(&counters.expected), load(&counters.compared), load(&counters.hashed));
            let done = listed + compared;
            rate = 0.5 * rate + 0.5 * (done - last.1) as f64 / last.0.elapsed().as_secs_f64().max(0.001);
            last = (std::time::Instant::now(), done);
            let eta = crate::progress::eta(expected.saturating_sub(compared), rate)
                .filter(|_| expected > 0)
                .map(|d| format!(", ETA {}", crate::progress::clock(d)))
                .unwrap_or_default();
            eprint!(
                "\r\x1b[2Kverify: {listed} Drive files listed, {compared} objects compared, {:.1} MiB hashed, {rate:.0} items/s{eta}",
                hashed as f64 / (1 << 20) as f64
            );
        }
    })
}

/// Refresh requests recorded per store batch.
const REQUEST_BATCH: usize = 10_000;

/// Records what repairs `found`: a `Refresh::Repair` for every file whose object is missing or
/// mismatched and for the file whose record holds an extra object's key (Drive then says whether it
/// is gone), and a `Refresh::Stray` for every other extra object (removed per `deletes` by the
/// pipeline, in order with any write to its key). Objects outside the mirror's namespaces get a
/// `Refresh::Stray` only with `prune_unknown`. Nothing is requested through a symbolic link: a file
/// missing under one is left missing (its write would land wherever the link points), and what lies
/// behind a link was never listed. Returns how many requests.
pub fn request_repairs(store: &Store, found: &Report, prune_unknown: bool) -> Result<usize, VerifyError> {
    let links: std::collections::BTreeSet<String> = found.link_keys()?.into_iter().collect();
    let through_link = |key: &str| key.match_indices('/').any(|(i, _)| links.contains(&key[..i]));
    let mut batch = Vec::with_capacity(REQUEST_BATCH);
    let mut n = 0;
    let mut flush = |batch: &mut Vec<Refresh>, at_least: usize| -> Result<(), VerifyError> {
        if batch.len() >= at_least {
            n += batch.len();
            store.add_refresh_requests(&std::mem::take(batch))?;
        }
        Ok(())
    };
    for entry in found.missing().chain(found.mismatched()) {
        let (key, difference) = entry?;
        if let Some(id) = difference.file_id.filter(|_| !through_link(&key)) {
            batch.push(Refresh::Repair(id));
            flush(&mut batch, REQUEST_BATCH)?;
        }
    }
    for key in found.extra_keys()? {
        let full = ObjectKey(found.full_key(&key));
        batch.push(match store.claim_holder(&keys::collision_class(full.as_str()))? {
            Some(holder) => Refresh::Repair(holder),
            None => Refresh::Stray(full),
        });
        flush(&mut batch, REQUEST_BATCH)?;
    }
    if prune_unknown {
        for key in found.unknown_keys()? {
            batch.push(Refresh::Stray(ObjectKey(found.full_key(&key))));
            flush(&mut batch, REQUEST_BATCH)?;
        }
    }
    flush(&mut batch, 1)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::is_reserved;

    #[test]
    fn the_trash_versions_and_state_folder_are_not_extras() {
        assert!(is_reserved(".trash/my-drive/a.txt", None));
        assert!(is_reserved(".versions/x/1", None));
        assert!(!is_reserved(".trashy/a.txt", None));
        assert!(!is_reserved("my-drive/.trash/a.txt", None));
        assert!(is_reserved(".mirrorflow/status.json", Some(".mirrorflow")));
        assert!(!is_reserved(".mirrorflow-other/x", Some(".mirrorflow")));
    }
}
