//! The Drive client: metadata through google-drive3 (the real v3 wire protocol), bytes through reqwest
//! with the same OAuth token, every call paced by the token bucket and retried by one policy.

pub mod auth;
pub mod directory;
pub mod error;
pub use crate::mirror::export;
pub mod login;
pub mod token_cache;
pub mod webhook;

use crate::internal_events::InternalEvent;
pub use error::DriveError;
use error::RetryAfterCapture;

use crate::breaker::{Breaker, BreakerSettings};
use crate::model::{DriveFile, DriveId, FileId};
use crate::retry::{RetryPolicy, TokenBucket};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use google_drive3::DriveHub;
use google_drive3::api::{Change, File};
use google_drive3::hyper_rustls::HttpsConnector;
use google_drive3::hyper_util::client::legacy::connect::HttpConnector;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Every file field the mirror needs, asked for explicitly (Drive returns only what `fields` names).
pub const FILE_FIELDS: &str = "id,name,mimeType,parents,size,md5Checksum,sha256Checksum,modifiedTime,version,trashed,driveId,shortcutDetails,exportLinks,capabilities/canDownload,resourceKey,sharedWithMeTime,webViewLink,ownedByMe";

pub use crate::model::Corpus;

/// Narrows a `changes.list` or `changes.watch` call to the changes of one log. The two calls take the
/// same parameters from here, so a channel is notified of exactly the changes the feed then reads (a
/// watch without `restrictToMyDrive` would wake the feed for shared items its list leaves out).
macro_rules! of_log {
    ($call:expr, $corpus:expr) => {{
        let call = $call.supports_all_drives(true).include_removed(true);
        match $corpus {
            Corpus::MyDrive => call.restrict_to_my_drive(true),
            Corpus::MyDriveAndShared => call,
            Corpus::SharedDrive(id) => call.drive_id(&id.0).include_items_from_all_drives(true),
        }
    }};
}

/// Which items a `files.list` call covers (Drive's `corpora`).
#[derive(Clone, Copy, Debug)]
enum ListScope<'a> {
    /// My Drive (and what is shared with the user).
    User,
    /// One shared drive.
    Drive(&'a DriveId),
    /// Every drive the user can see.
    AllDrives,
}

impl ListScope<'_> {
    /// The scope as Drive's parameters say it, for errors.
    fn describe(&self) -> String {
        match self {
            ListScope::User => "corpora=user".into(),
            ListScope::Drive(id) => format!("corpora=drive, driveId={id}"),
            ListScope::AllDrives => "corpora=allDrives".into(),
        }
    }
}

/// One page of files.list.
#[derive(Debug)]
pub struct FilePage {
    /// Items on the page.
    pub files: Vec<DriveFile>,
    /// Token of the next page; `None` on the last.
    pub next_page_token: Option<String>,
    /// Drive's `incompleteSearch`: not every corpus was searched, so items may be missing. Only a
    /// listing across all drives says so here; a narrowed one is asked again instead (see
    /// [`DriveError::IncompleteListing`]).
    pub incomplete: bool,
}

/// One change as the mirror sees it. (Unboxed like `ChangeKind`: file changes are the common case.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum DriveChange {
    /// A file or folder changed (`changeType = "file"`).
    File {
        /// The file concerned.
        file_id: FileId,
        /// Its new state, or `None` if removed (deleted or access lost).
        file: Option<DriveFile>,
    },
    /// A shared drive changed (`changeType = "drive"`): joined, renamed, hidden, or gone. What it is
    /// now is asked of `drives.get`, the one answer that cannot be half-filled by a `fields` mask.
    Drive {
        /// The shared drive.
        id: DriveId,
    },
}

/// One page of changes.list.
#[derive(Debug)]
pub struct ChangePage {
    /// Changes, oldest first.
    pub changes: Vec<DriveChange>,
    /// Token of the next page, when more pages follow.
    pub next_page_token: Option<String>,
    /// On the last page: the token to poll from next time.
    pub new_start_page_token: Option<String>,
}

/// A streamed body: the bytes and, when known, the total length of the content.
pub struct ByteStream {
    /// The body, chunk by chunk.
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, DriveError>> + Send>>,
    /// Full content length (not just this range), when the server said it.
    pub total_len: Option<u64>,
}

/// How to reach Drive.
#[derive(Clone, Debug)]
pub struct DriveSettings {
    /// The credentials file and what it is used with.
    pub credentials: auth::Credentials,
    /// API root, e.g. `https://www.googleapis.com/`.
    pub api_base_url: String,
    /// Replaces `https://docs.google.com/` in export links.
    pub docs_base_url: String,
    /// Page size for list calls.
    pub page_size: u32,
    /// Ask for abuse-flagged files anyway.
    pub acknowledge_abuse: bool,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Circuit breaker in front of every Drive request.
    pub breaker: BreakerSettings,
    /// Requests per second.
    pub rps: f64,
    /// Longest wait for one request to answer (`[source] timeout`).
    pub timeout: Duration,
}

type Connector = HttpsConnector<HttpConnector>;

/// The Drive client shared by the change-feed and downloaders.
#[derive(Clone)]
pub struct DriveClient {
    hub: Arc<DriveHub<Connector>>,
    auth: auth::Auth,
    http: reqwest::Client,
    settings: Arc<DriveSettings>,
    limiter: Arc<TokenBucket>,
    /// A bucket shared with other clients of this process (several users of a domain: each client
    /// paces its own user, this one the process's `[rate_limit] drive_rps`).
    shared_limiter: Option<Arc<TokenBucket>>,
    breaker: Arc<Breaker>,
    /// Whether the user organizes each shared drive asked about (`drives.get`'s
    /// `capabilities.canManageMembers`, which only the organizer role has), once per drive.
    organizes: Arc<std::sync::Mutex<BTreeMap<DriveId, bool>>>,
}

const GOOGLE_DOCS_BASE: &str = "https://docs.google.com/";

impl DriveClient {
    /// Builds the hub and authenticator; fails if the key cannot be read.
    pub async fn connect(settings: DriveSettings) -> Result<DriveClient, DriveError> {
        crate::install_crypto_provider();
        let connector = auth::connector()?;
        let auth = auth::Auth::from_credentials(&settings.credentials, connector.clone()).await?;
        let client = google_drive3::hyper_util::client::legacy::Client::builder(
            google_drive3::hyper_util::rt::TokioExecutor::new(),
        )
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector);
        let mut hub = DriveHub::new(client, auth.inner.clone());
        hub.base_url(format!("{}drive/v3/", settings.api_base_url));
        hub.root_url(settings.api_base_url.clone());
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(settings.timeout)
            .build()
            .map_err(|e| DriveError::Transport(e.to_string()))?;
        let limiter = Arc::new(TokenBucket::per_second(settings.rps));
        let breaker = Arc::new(Breaker::new("drive", settings.breaker));
        let organizes = Arc::default();
        let settings = Arc::new(settings);
        Ok(DriveClient { hub: Arc::new(hub), auth, http, settings, limiter, shared_limiter: None, breaker, organizes })
    }

    /// Also paces every request by `limit`, a bucket shared with other clients (the process-wide
    /// `drive_rps` when each user of a domain has a client paced by `user_rps`).
    pub fn with_shared_limit(mut self, limit: Arc<TokenBucket>) -> Self {
        self.shared_limiter = Some(limit);
        self
    }

    /// Every Drive request goes through here: retried by the policy, each attempt held by the breaker
    /// while Drive is failing, then paced by the token bucket. An attempt Drive answers with 401 (the
    /// access token was revoked before it expired) renews the token and goes again at once with the
    /// new one (Google's "Resolve errors": refresh the access token); only a refused refresh token
    /// ends the run. A 401 never counts toward the breaker.
    async fn paced<T, F, Fut>(&self, remote: &'static str, op: F) -> Result<T, DriveError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, DriveError>>,
    {
        self.settings
            .retry
            .run(remote, || async {
                let (seen, result) = self.attempt(remote, &op).await;
                match result {
                    Err(e) if e.is_unauthorized() => {
                        tracing::debug!(remote, error = %e, "access token refused");
                        self.auth.renew_after(seen).await?;
                        self.attempt(remote, &op).await.1
                    }
                    other => other,
                }
            })
            .await
    }

    /// One attempt of `op`, through the breaker and the token bucket; with the generation of the
    /// access token it went out with.
    async fn attempt<T, F, Fut>(&self, remote: &'static str, op: &F) -> (auth::TokenGeneration, Result<T, DriveError>)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, DriveError>>,
    {
        let mut seen = self.auth.generation();
        let latest = &mut seen;
        let result = self
            .breaker
            .call(move || async move {
                self.limiter.acquire().await;
                if let Some(shared) = &self.shared_limiter {
                    shared.acquire().await;
                }
                crate::internal_events::DriveRequested { remote }.emit();
                // Read as late as possible: the token the call is about to take is of this generation.
                *latest = self.auth.generation();
                let limit = self.settings.timeout;
                let result = tokio::time::timeout(limit, op()).await.unwrap_or(Err(DriveError::TimedOut(limit)));
                result.map_err(|e| self.auth.explain(e))
            })
            .await;
        (seen, result)
    }

    /// `changes.getStartPageToken` of one change log (the user's, or a shared drive's with
    /// `driveId`), taken before that corpus is listed.
    pub async fn start_page_token(&self, corpus: &Corpus) -> Result<String, DriveError> {
        self.paced("drive", || async {
            let mut d = RetryAfterCapture::default();
            let mut call = self.hub.changes().get_start_page_token().supports_all_drives(true);
            if let Corpus::SharedDrive(id) = corpus {
                call = call.drive_id(&id.0);
            }
            let (_, t) = call.add_scope(self.auth.scope()).delegate(&mut d).doit().await.map_err(|e| d.error(e))?;
            t.start_page_token.ok_or_else(|| DriveError::Decode("no startPageToken".into()))
        })
        .await
    }

    /// The id of the My Drive root folder (`files.get("root")`).
    pub async fn root_folder_id(&self) -> Result<FileId, DriveError> {
        self.paced("drive", || async {
            let mut d = RetryAfterCapture::default();
            let (_, f) = self
                .hub
                .files()
                .get("root")
                .param("fields", "id")
                .add_scope(self.auth.scope())
                .delegate(&mut d)
                .doit()
                .await
                .map_err(|e| d.error(e))?;
            f.id.map(FileId).ok_or_else(|| DriveError::Decode("root has no id".into()))
        })
        .await
    }

    /// Every shared drive the account can see, as (id, name).
    pub async fn shared_drives(&self) -> Result<Vec<(DriveId, String)>, DriveError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (list_token, drives) = self
                .paced("drive", || async {
                    let mut d = RetryAfterCapture::default();
                    let mut call =
                        self.hub.drives().list().page_size(100).param("fields", "nextPageToken,drives(id,name)");
                    if let Some(t) = &token {
                        call = call.page_token(t);
                    }
                    let (_, l) =
                        call.add_scope(self.auth.scope()).delegate(&mut d).doit().await.map_err(|e| d.error(e))?;
                    Ok((l.next_page_token, l.drives.unwrap_or_default()))
                })
                .await?;
            out.extend(drives.into_iter().filter_map(|d| Some((DriveId(d.id?), d.name.unwrap_or_default()))));
            match list_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// `drives.get` of one shared drive: its name, or `None` when it is deleted or not visible to this
    /// account (404).
    pub async fn shared_drive(&self, id: &DriveId) -> Result<Option<String>, DriveError> {
        let r = self
            .paced("drive", || async {
                let mut d = RetryAfterCapture::default();
                let call = self.hub.drives().get(&id.0).param("fields", "id,name");
                let (_, drive) =
                    call.add_scope(self.auth.scope()).delegate(&mut d).doit().await.map_err(|e| d.error(e))?;
                Ok(drive)
            })
            .await;
        match r {
            Ok(drive) => Ok(Some(drive.name.unwrap_or_default())),
            Err(DriveError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of `files.list` over `corpus`, non-trashed items, folders only if asked.
    pub async fn list_page(
        &self,
        corpus: &Corpus,
        folders_only: bool,
        page_token: Option<&str>,
    ) -> Result<FilePage, DriveError> {
        let q = if folders_only {
            format!("trashed = false and mimeType = '{}'", crate::model::FOLDER_MIME)
        } else {
            "trashed = false".to_string()
        };
        let scope = match corpus {
            Corpus::MyDrive | Corpus::MyDriveAndShared => ListScope::User,
            Corpus::SharedDrive(d) => ListScope::Drive(d),
        };
        self.files_list_page(&q, scope, page_token).await
    }

    /// One page of the live children of `folder`: how a folder that comes back into the mirror brings
    /// its subtree, since Drive reports a change for the folder only. Searched across every drive
    /// (`within` = `None`), or within the folder's own corpus when an all-drives search came back
    /// incomplete (Google: "narrow their query by choosing a different corpus such as user or drive").
    pub async fn children_page(
        &self,
        folder: &FileId,
        within: Option<&Corpus>,
        page_token: Option<&str>,
    ) -> Result<FilePage, DriveError> {
        let q =
            format!("'{}' in parents and trashed = false", folder.as_str().replace('\\', "\\\\").replace('\'', "\\'"));
        let scope = match within {
            None => ListScope::AllDrives,
            Some(Corpus::MyDrive | Corpus::MyDriveAndShared) => ListScope::User,
            Some(Corpus::SharedDrive(d)) => ListScope::Drive(d),
        };
        self.files_list_page(&q, scope, page_token).await
    }

    /// One page of `files.list` for query `q` over `scope`: the one place that pages files. Drive's
    /// `incompleteSearch` is asked for: an all-drives page reports it (the caller narrows), and a
    /// page of one corpus that Drive marks incomplete is asked again by the retry policy, and is
    /// an error if it stays so (never a listing with items silently missing).
    async fn files_list_page(
        &self,
        q: &str,
        scope: ListScope<'_>,
        page_token: Option<&str>,
    ) -> Result<FilePage, DriveError> {
        let fields = format!("nextPageToken,incompleteSearch,files({FILE_FIELDS})");
        self.paced("drive", || async {
            let mut d = RetryAfterCapture::default();
            let mut call =
                self.hub.files().list().q(q).page_size(self.settings.page_size as i32).param("fields", &fields);
            call = match scope {
                ListScope::User => call.corpora("user"),
                ListScope::Drive(id) => {
                    call.corpora("drive").drive_id(&id.0).include_items_from_all_drives(true).supports_all_drives(true)
                }
                ListScope::AllDrives => {
                    call.corpora("allDrives").include_items_from_all_drives(true).supports_all_drives(true)
                }
            };
            if let Some(t) = page_token {
                call = call.page_token(t);
            }
            let (_, list) = call.add_scope(self.auth.scope()).delegate(&mut d).doit().await.map_err(|e| d.error(e))?;
            let incomplete = list.incomplete_search.unwrap_or(false);
            if incomplete && !matches!(scope, ListScope::AllDrives) {
                return Err(DriveError::IncompleteListing(format!("files.list ({})", scope.describe())));
            }
            let files = list.files.unwrap_or_default().into_iter().filter_map(convert_file).collect();
            Ok(FilePage { files, next_page_token: list.next_page_token, incomplete })
        })
        .await
    }

    /// One page of one change log from `token`. Google's "Retrieve changes" guide: changes to items
    /// in a shared drive may appear only in that drive's own log, so each shared drive is followed
    /// through its log (`driveId`), and My Drive through the user's log restricted to it
    /// (`restrictToMyDrive`), unless the items shared with the user are mirrored too. Only a 400
    /// that names the `pageToken` comes back as [`DriveError::InvalidPageToken`]; any other error
    /// (a bad `fields` mask, a bad parameter, a gone drive) as Drive gave it.
    pub async fn changes_page(&self, corpus: &Corpus, token: &str) -> Result<ChangePage, DriveError> {
        let fields = format!(
            "nextPageToken,newStartPageToken,changes(changeType,removed,fileId,driveId,time,drive(id,name),file({FILE_FIELDS}))"
        );
        let r = self
            .paced("drive", || async {
                let mut d = RetryAfterCapture::default();
                let call = self.hub.changes().list(token).page_size(self.settings.page_size as i32);
                let (_, list) = of_log!(call, corpus)
                    .param("fields", &fields)
                    .add_scope(self.auth.scope())
                    .delegate(&mut d)
                    .doit()
                    .await
                    .map_err(|e| d.error(e))?;
                Ok(list)
            })
            .await;
        let list = r?;
        let changes = list.changes.unwrap_or_default().into_iter().filter_map(convert_change).collect();
        Ok(ChangePage {
            changes,
            next_page_token: list.next_page_token,
            new_start_page_token: list.new_start_page_token,
        })
    }

    /// Opens the content of `file` from byte `offset`: media download, or an export (through the
    /// export link when the doc is over the files.export size limit).
    pub async fn open(
        &self,
        item: &DriveFile,
        source: &crate::model::Source,
        offset: u64,
    ) -> Result<ByteStream, DriveError> {
        // A followed shortcut's bytes are its target's.
        let file = checked_id(item.content_id())?;
        // A link-shared file may need its resource key (Google: `X-Goog-Drive-Resource-Keys`).
        let key = item.resource_key.as_deref().map(|k| format!("{file}/{k}"));
        let key = key.as_deref();
        match source {
            crate::model::Source::Link { body } => Ok(in_memory(body.as_bytes(), offset)),
            crate::model::Source::Media => {
                let mut url =
                    format!("{}drive/v3/files/{}?alt=media&supportsAllDrives=true", self.settings.api_base_url, file);
                // files.get: `acknowledgeAbuse` applies only to the owner or a shared drive's organizer.
                let acknowledge = self.settings.acknowledge_abuse && self.may_acknowledge_abuse(item).await?;
                if acknowledge {
                    url.push_str("&acknowledgeAbuse=true");
                }
                match self.paced("drive", || self.get_stream(&url, offset, key)).await {
                    Err(DriveError::Api { status: 403, reason, message, .. })
                        if reason == "cannotDownloadAbusiveFile" =>
                    {
                        let acknowledgeable = !acknowledge && self.may_acknowledge_abuse(item).await?;
                        Err(DriveError::Abusive { acknowledgeable, message })
                    }
                    other => other,
                }
            }
            crate::model::Source::Download { .. } => {
                let uri = self.download_uri(file).await?;
                let uri = self.trusted_download_uri(&uri)?;
                self.paced("drive", || self.get_stream(&uri, offset, key)).await
            }
            crate::model::Source::Export { mime, link } => {
                let url = format!(
                    "{}drive/v3/files/{}/export?mimeType={}",
                    self.settings.api_base_url,
                    file,
                    url::form_urlencoded::byte_serialize(mime.as_bytes()).collect::<String>()
                );
                match self.paced("drive", || self.get_stream(&url, offset, key)).await {
                    Err(DriveError::Api { reason, .. }) if reason == "exportSizeLimitExceeded" && link.is_some() => {
                        let link = self.trusted_link(link.as_deref().unwrap_or_default())?;
                        self.paced("drive", || self.get_stream(&link, offset, key)).await
                    }
                    other => other,
                }
            }
        }
    }

    /// Whether `acknowledgeAbuse` can apply to `item`'s download (files.get: only for the file's owner
    /// or an organizer of its shared drive): `ownedByMe`, or the organizer role on its shared drive. A
    /// followed shortcut carries its own drive, not its target's, so only ownership counts for it.
    async fn may_acknowledge_abuse(&self, item: &DriveFile) -> Result<bool, DriveError> {
        match (&item.drive_id, &item.content_of) {
            _ if item.owned_by_me => Ok(true),
            (Some(drive), None) => self.organizes(drive).await,
            _ => Ok(false),
        }
    }

    /// Whether the user is an organizer of shared drive `id` (`capabilities.canManageMembers`), asked
    /// once per drive; a drive Drive no longer shows is not organized.
    async fn organizes(&self, id: &DriveId) -> Result<bool, DriveError> {
        let known = self.organizes.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied();
        if let Some(known) = known {
            return Ok(known);
        }
        let r = self
            .paced("drive", || async {
                let mut d = RetryAfterCapture::default();
                let call = self.hub.drives().get(&id.0).param("fields", "capabilities/canManageMembers");
                let (_, drive) =
                    call.add_scope(self.auth.scope()).delegate(&mut d).doit().await.map_err(|e| d.error(e))?;
                Ok(drive)
            })
            .await;
        let organizer = match r {
            Ok(drive) => drive.capabilities.and_then(|c| c.can_manage_members).unwrap_or(false),
            Err(DriveError::Api { status: 404, .. }) => false,
            Err(e) => return Err(e),
        };
        self.organizes.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), organizer);
        Ok(organizer)
    }

    /// `files.download` of `file` (the only way Drive hands over a Google Vid): starts the
    /// long-running operation, polls `operations.get` until it is done, and returns its `downloadUri`.
    /// No `mimeType` is sent: it is for Workspace documents with a choice of formats, and a Vid has
    /// one (MP4).
    async fn download_uri(&self, file: &FileId) -> Result<String, DriveError> {
        let mut op = self
            .paced("drive", || async {
                let mut d = RetryAfterCapture::default();
                let call = self.hub.files().download(file.as_str()).add_scope(self.auth.scope()).delegate(&mut d);
                Ok(call.doit().await.map_err(|e| d.error(e))?.1)
            })
            .await?;
        let started = tokio::time::Instant::now();
        let mut wait = OPERATION_FIRST_POLL;
        while !op.done.unwrap_or(false) {
            if started.elapsed() > OPERATION_DEADLINE {
                return Err(DriveError::TimedOut(OPERATION_DEADLINE));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(OPERATION_MAX_POLL);
            let name =
                op.name.clone().ok_or_else(|| DriveError::Decode("files.download: operation has no name".into()))?;
            op = self
                .paced("drive", || async {
                    let mut d = RetryAfterCapture::default();
                    let call = self.hub.operations().get(&name).add_scope(self.auth.scope()).delegate(&mut d);
                    Ok(call.doit().await.map_err(|e| d.error(e))?.1)
                })
                .await?;
        }
        if let Some(status) = op.error {
            return Err(DriveError::Api {
                status: 400,
                reason: "downloadOperationFailed".into(),
                message: format!("code {}: {}", status.code.unwrap_or(0), status.message.unwrap_or_default()),
                retry_after: None,
            });
        }
        let uri = op.response.as_ref().and_then(|r| r.get("downloadUri")).and_then(|u| u.as_str());
        uri.map(str::to_owned).ok_or_else(|| DriveError::Decode("files.download: done without a downloadUri".into()))
    }

    /// A `downloadUri` the bearer token may go to: on the configured API host, or Google's over https.
    fn trusted_download_uri(&self, uri: &str) -> Result<String, DriveError> {
        if uri.starts_with(&self.settings.api_base_url) || is_google_https(uri) {
            return Ok(uri.to_string());
        }
        let host = url::Url::parse(uri).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
        Err(DriveError::Refused(format!("download URI on {host:?} is not Google's: the token is not sent there")))
    }

    /// An export link rebased onto `docs_base_url`, if it may carry the bearer token: it must point at
    /// the configured docs host, or at Google over https (`*.google.com`, `*.googleusercontent.com`).
    fn trusted_link(&self, link: &str) -> Result<String, DriveError> {
        let rebased = self.rebase_docs_link(link);
        if rebased.starts_with(&self.settings.docs_base_url) || is_google_https(&rebased) {
            return Ok(rebased);
        }
        let host = url::Url::parse(&rebased).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
        Err(DriveError::Refused(format!("export link to {host:?} is not Google's: the token is not sent there")))
    }

    /// Points a `https://docs.google.com/…` export link at `docs_base_url`.
    pub fn rebase_docs_link(&self, link: &str) -> String {
        match link.strip_prefix(GOOGLE_DOCS_BASE) {
            Some(rest) => format!("{}{}", self.settings.docs_base_url, rest),
            None => link.to_string(),
        }
    }

    async fn get_stream(&self, url: &str, offset: u64, resource_key: Option<&str>) -> Result<ByteStream, DriveError> {
        let limit = self.settings.timeout;
        // The token and the response head within the time-out; the body then has `read_timeout` per read.
        let resp = tokio::time::timeout(limit, async {
            let token = self.auth.token().await?;
            let mut req = self.http.get(url).bearer_auth(token);
            if offset > 0 {
                req = req.header(reqwest::header::RANGE, format!("bytes={offset}-"));
            }
            if let Some(k) = resource_key {
                req = req.header("X-Goog-Drive-Resource-Keys", k);
            }
            req.send().await.map_err(|e| DriveError::Transport(e.to_string()))
        })
        .await
        .unwrap_or(Err(DriveError::TimedOut(limit)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(error_from_response(resp).await);
        }
        if offset > 0 && status != reqwest::StatusCode::PARTIAL_CONTENT {
            return Err(DriveError::Decode(format!("asked for a range, got {status}")));
        }
        let total_len = total_length(&resp, offset);
        let body = resp.bytes_stream().map(|r| r.map_err(|e| DriveError::Transport(e.to_string())));
        Ok(ByteStream { body: Box::pin(body), total_len })
    }
}

fn total_length(resp: &reqwest::Response, offset: u64) -> Option<u64> {
    if let Some(cr) = resp.headers().get(reqwest::header::CONTENT_RANGE).and_then(|v| v.to_str().ok()) {
        return cr.rsplit('/').next().and_then(|t| t.parse().ok());
    }
    resp.content_length().map(|l| l + offset)
}

/// Whether `link` is an https URL on one of Google's hosts.
fn is_google_https(link: &str) -> bool {
    let Ok(u) = url::Url::parse(link) else { return false };
    let host = u.host_str().unwrap_or_default();
    u.scheme() == "https"
        && ["google.com", "googleapis.com", "googleusercontent.com"]
            .iter()
            .any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

/// A file id as Drive issues them (letters, digits, `-` and `_`), before it goes into a URL.
fn checked_id(id: &FileId) -> Result<&FileId, DriveError> {
    let ok = !id.0.is_empty()
        && id.0.len() <= 256
        && id.0.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(id) } else { Err(DriveError::Refused(format!("{:?} is not a Drive file id", id.0))) }
}

/// The most of an error body read (an error envelope is small; a hostile server's body is not).
const ERROR_BODY_CAP: usize = 64 << 10;

async fn error_from_response(mut resp: reqwest::Response) -> DriveError {
    let status = resp.status().as_u16();
    let retry_after = error::parse_retry_after(resp.headers());
    let mut raw = Vec::new();
    while raw.len() < ERROR_BODY_CAP {
        match resp.chunk().await {
            Ok(Some(c)) => raw.extend_from_slice(&c[..c.len().min(ERROR_BODY_CAP - raw.len())]),
            _ => break,
        }
    }
    let body = String::from_utf8_lossy(&raw).into_owned();
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) if v.get("error").is_some() => DriveError::from_envelope(status, &v, retry_after),
        _ => DriveError::Api {
            status,
            reason: format!("http{status}"),
            message: body.chars().take(200).collect(),
            retry_after,
        },
    }
}

/// The first wait before `operations.get` polls a `files.download` operation; it doubles up to
/// [`OPERATION_MAX_POLL`].
const OPERATION_FIRST_POLL: Duration = Duration::from_millis(250);
/// The longest wait between two polls of one operation.
const OPERATION_MAX_POLL: Duration = Duration::from_secs(10);
/// How long a `files.download` operation may take before the file is given up (dead-lettered, tried
/// again by a later run).
const OPERATION_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// Converts google-drive3's `File` into the mirror's model; items without id are dropped.
pub fn convert_file(f: File) -> Option<DriveFile> {
    Some(DriveFile {
        id: FileId(f.id?),
        name: f.name.unwrap_or_default(),
        mime_type: f.mime_type.unwrap_or_default(),
        parents: f.parents.unwrap_or_default().into_iter().map(FileId).collect(),
        size: f.size.map(|s| s.max(0) as u64),
        md5: f.md5_checksum,
        sha256: f.sha256_checksum,
        version: f.version.unwrap_or(0).max(0) as u64,
        modified_time: f.modified_time.map(|t| t.to_rfc3339()),
        trashed: f.trashed.unwrap_or(false),
        drive_id: f.drive_id.map(DriveId),
        shortcut_target: f.shortcut_details.as_ref().and_then(|s| s.target_id.clone()).map(FileId),
        shortcut_target_key: f.shortcut_details.and_then(|s| s.target_resource_key),
        owned_by_me: f.owned_by_me.unwrap_or(false),
        export_links: f.export_links.map(|m| m.into_iter().collect::<BTreeMap<_, _>>()).unwrap_or_default(),
        can_download: f.capabilities.and_then(|c| c.can_download).unwrap_or(true),
        resource_key: f.resource_key,
        shared_with_me: f.shared_with_me_time.is_some(),
        web_view_link: f.web_view_link,
        target_link: None,
        content_of: None,
    })
}

fn convert_change(c: Change) -> Option<DriveChange> {
    match c.change_type.as_deref() {
        Some("drive") => {
            let id = DriveId(c.drive_id.or_else(|| c.drive.and_then(|d| d.id))?);
            Some(DriveChange::Drive { id })
        }
        None | Some("file") => {
            let file_id = FileId(c.file_id?);
            let file = if c.removed.unwrap_or(false) { None } else { c.file.and_then(convert_file) };
            Some(DriveChange::File { file_id, file })
        }
        Some(_) => None,
    }
}

/// A body made here rather than read from Drive (a shortcut's link), from `offset`.
fn in_memory(bytes: &[u8], offset: u64) -> ByteStream {
    let rest = Bytes::copy_from_slice(bytes.get(offset as usize..).unwrap_or_default());
    ByteStream { body: Box::pin(futures::stream::iter([Ok(rest)])), total_len: Some(bytes.len() as u64) }
}

impl DriveClient {
    /// `files.get` metadata of one item; `None` if it does not exist (404).
    pub async fn get_file(&self, id: &FileId) -> Result<Option<DriveFile>, DriveError> {
        let r = self
            .paced("drive", || async {
                let mut d = RetryAfterCapture::default();
                let (_, f) = self
                    .hub
                    .files()
                    .get(id.as_str())
                    .supports_all_drives(true)
                    .param("fields", FILE_FIELDS)
                    .add_scope(self.auth.scope())
                    .delegate(&mut d)
                    .doit()
                    .await
                    .map_err(|e| d.error(e))?;
                Ok(f)
            })
            .await;
        match r {
            Ok(f) => Ok(convert_file(f)),
            Err(DriveError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl DriveClient {
    /// `files.get` metadata of a shortcut's target, sending the target's resource key when the
    /// shortcut names one (`X-Goog-Drive-Resource-Keys`): a link-shared target the user never opened
    /// answers 404 without it. `None` if it does not exist (404).
    pub async fn get_file_with_key(&self, id: &FileId, key: Option<&str>) -> Result<Option<DriveFile>, DriveError> {
        let Some(key) = key else { return self.get_file(id).await };
        let id = checked_id(id)?;
        let fields = url::form_urlencoded::byte_serialize(FILE_FIELDS.as_bytes()).collect::<String>();
        let url = format!("{}drive/v3/files/{id}?supportsAllDrives=true&fields={fields}", self.settings.api_base_url);
        let header = format!("{id}/{key}");
        match self.paced("drive", || self.get_json::<File>(&url, &header)).await {
            Ok(f) => Ok(convert_file(f)),
            Err(DriveError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A metadata GET made with reqwest (google-drive3 sends no extra headers), with a resource key.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str, resource_key: &str) -> Result<T, DriveError> {
        let token = self.auth.token().await?;
        let req = self.http.get(url).bearer_auth(token).header("X-Goog-Drive-Resource-Keys", resource_key);
        let resp = req.send().await.map_err(|e| DriveError::Transport(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(error_from_response(resp).await);
        }
        resp.json::<T>().await.map_err(|e| DriveError::Decode(e.to_string()))
    }
}

/// A registered push-notification channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchChannel {
    /// Our channel id.
    pub id: String,
    /// Drive's resource id (needed to stop it).
    pub resource_id: String,
    /// The secret Drive echoes in `X-Goog-Channel-Token`.
    pub token: String,
    /// Expiry, Unix milliseconds.
    pub expiration_ms: i64,
}

impl DriveClient {
    /// `changes.watch` of one change log (the user's, or a shared drive's with `driveId`): asks Drive
    /// to POST that log's change notifications to `address`.
    pub async fn watch_changes(&self, log: &Corpus, address: &str, ttl: Duration) -> Result<WatchChannel, DriveError> {
        let page_token = self.start_page_token(log).await?;
        let id = random_hex(16);
        let token = random_hex(24);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let request = google_drive3::api::Channel {
            id: Some(id.clone()),
            type_: Some("web_hook".into()),
            address: Some(address.to_string()),
            token: Some(token.clone()),
            expiration: Some(now_ms + ttl.as_millis() as i64),
            ..Default::default()
        };
        let ch = self
            .paced("drive", || async {
                let mut d = RetryAfterCapture::default();
                let call = self.hub.changes().watch(request.clone(), &page_token);
                let (_, ch) = of_log!(call, log)
                    .add_scope(self.auth.scope())
                    .delegate(&mut d)
                    .doit()
                    .await
                    .map_err(|e| d.error(e))?;
                Ok(ch)
            })
            .await?;
        Ok(WatchChannel {
            id,
            resource_id: ch.resource_id.unwrap_or_default(),
            token,
            expiration_ms: ch.expiration.unwrap_or(now_ms + ttl.as_millis() as i64),
        })
    }

    /// `channels.stop`.
    pub async fn stop_channel(&self, ch: &WatchChannel) -> Result<(), DriveError> {
        let request = google_drive3::api::Channel {
            id: Some(ch.id.clone()),
            resource_id: Some(ch.resource_id.clone()),
            ..Default::default()
        };
        self.paced("drive", || async {
            let mut d = RetryAfterCapture::default();
            self.hub
                .channels()
                .stop(request.clone())
                .add_scope(self.auth.scope())
                .delegate(&mut d)
                .doit()
                .await
                .map_err(|e| d.error(e))?;
            Ok(())
        })
        .await
    }
}

/// A random lowercase hex string of `bytes` random bytes (channel ids and secrets).
pub fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_drive_shaped_ids_go_into_urls() {
        assert!(checked_id(&FileId("1aB-_9".into())).is_ok());
        for bad in ["", "a/b", "x?alt=media", "../etc", "a b", "é"] {
            assert!(checked_id(&FileId(bad.into())).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn export_links_carry_the_token_only_to_google() {
        assert!(is_google_https("https://docs.google.com/feeds/download/documents/export/Export?id=x"));
        assert!(is_google_https("https://script.google.com/feeds/download/export?id=x&format=json"));
        assert!(is_google_https("https://doc-0s-1c-docs.googleusercontent.com/export/x"));
        assert!(!is_google_https("http://docs.google.com/x"), "not over plain http");
        assert!(!is_google_https("https://docs.google.com.evil.example/x"));
        assert!(!is_google_https("https://evilgoogle.com/x"));
    }
}
