//! `pipeline.toml`: parsed strictly (unknown keys are errors), validated as a whole so that every
//! problem is reported at once, each naming its key, and resolved relative to the file's folder.

pub mod cli;
pub mod init;
pub mod keys;
pub mod reference;
pub mod schema;

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors a config file can have; all map to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax, unknown key or wrong type; the message names the key, line and column.
    #[error("config {path}: {message}")]
    Parse {
        /// The path given.
        path: PathBuf,
        /// toml's message (with line, column and key).
        message: String,
    },
    /// Semantically invalid values, all of them.
    #[error("config {path} is invalid:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The path given.
        path: PathBuf,
        /// One line per problem, each starting with the key.
        problems: Vec<String>,
    },
}

/// A secret value: never printed by Debug or Display.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// A byte count written as `1048576`, `"8MiB"`, `"5 MB"`…
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => parse_byte_size(&s).map(ByteSize).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `"8MiB"`, `"5 MB"`, `"512"`; binary and decimal units.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid byte size {text:?} (try \"8MiB\")"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => {
            return Err(format!("unknown byte unit {other:?} in {text:?} (use B, KiB, MiB, GiB, KB, MB, GB)"));
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("byte size {text:?} overflows"))
}

/// A duration written as `"30s"`, `"5m"`, `"250ms"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e} (try \"30s\")")))
    }
}

/// The whole pipeline configuration.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where files come from.
    pub source: SourceConfig,
    /// Where they go.
    pub destination: DestinationConfig,
    /// Embedded state store.
    #[serde(default)]
    pub state: StateConfig,
    /// Per-stage concurrency and channel capacity.
    #[serde(default)]
    pub stages: StagesConfig,
    /// Streaming parameters.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Retry policy for remote calls.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Drive request rate cap.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Restart intensity of the supervisor.
    #[serde(default)]
    pub supervisor: SupervisorConfig,
    /// The scheduled reconcile of a running pipeline.
    #[serde(default)]
    pub verify: VerifyConfig,
    /// The queryable index of the mirror in PostgreSQL (off unless a URL is given).
    #[serde(default)]
    pub index: IndexConfig,
    /// Which shard of a cluster this process is (one shard, `0/1`, when absent).
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Failure injection, for tests of the supervision tree only.
    #[serde(default)]
    pub testing: TestingConfig,
}

/// `[source]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Service-account key JSON (its `token_uri` is honoured).
    pub credentials: PathBuf,
    /// Drive API root, `https://www.googleapis.com/` by default.
    #[serde(default = "default_api_base")]
    pub api_base_url: String,
    /// Replaces `https://docs.google.com/` in export links.
    #[serde(default = "default_docs_base")]
    pub docs_base_url: String,
    /// `"my-drive"`, shared drive ids, or `"all"`.
    #[serde(default = "default_drives")]
    pub drives: Vec<String>,
    /// Continuous mode poll period.
    #[serde(default = "default_poll")]
    pub poll_interval: HumanDuration,
    /// Google Docs export formats.
    #[serde(default)]
    pub export: ExportConfig,
    /// Download abuse-flagged files anyway.
    #[serde(default)]
    pub acknowledge_abuse: bool,
    /// Files larger than this are dead-lettered instead of mirrored.
    pub max_file_size: Option<ByteSize>,
    /// files.list / changes.list page size (1..=1000).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Longest wait for one Drive request (token endpoint included) to answer, and for a download's
    /// body to make progress; a request that exceeds it is retried like any transient failure.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Email to impersonate with domain-wide delegation; with `subjects = "domain"`, the administrator
    /// the directory is listed as.
    pub subject: Option<String>,
    /// Several users of a domain (domain-wide delegation): their emails, or `"domain"` for every
    /// active user the directory lists. Absent: one account, as before.
    pub subjects: Option<Subjects>,
    /// How often continuous mode lists the domain's users again (`subjects = "domain"`).
    #[serde(default = "default_directory_interval")]
    pub directory_interval: HumanDuration,
    /// How many drives (a user's My Drive, a shared drive) are mirrored at once with `subjects`.
    #[serde(default = "default_drives_in_parallel")]
    pub drives_in_parallel: usize,
    /// Where `mirrorflow auth login` saves the sign-in of an installed OAuth client (mode 0600).
    pub token_cache: Option<PathBuf>,
    /// OAuth scope: `drive.readonly` (default) or `drive`.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Folder ids: only their subtrees are mirrored (at the keys a full mirror gives them).
    #[serde(default)]
    pub folders: Vec<String>,
    /// Glob patterns on the Drive path (`**/*.pdf`): when set, only matching files are mirrored.
    #[serde(default)]
    pub include: Vec<String>,
    /// Glob patterns on the Drive path (`**/node_modules/**`): matching files are not mirrored.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Drive mime types (`application/pdf`, `image/*`): when set, only those are mirrored.
    #[serde(default)]
    pub mime_types: Vec<String>,
    /// What a shortcut becomes: a `<name>.url` link to its target (default), nothing, or (follow) the
    /// target file's bytes.
    #[serde(default)]
    pub shortcuts: ShortcutMode,
    /// Also mirror the items other people shared with the user that are not in their My Drive, under
    /// `<prefix>/shared-with-me/`.
    #[serde(default)]
    pub shared_with_me: bool,
    /// Push notifications (continuous mode).
    pub webhook: Option<WebhookConfig>,
    /// Set for a shared drive's unit of a domain (never in a file): the drive's root key relative to
    /// the prefix (`shared-drives/<name>`, unique in the domain), fixed instead of claimed from the
    /// drive's name, and the only part of the prefix this unit may adopt or sweep.
    #[serde(skip)]
    pub drive_root: Option<String>,
}

/// `[source.webhook]`: Drive POSTs change notifications to `public_url`, which must reach `listen`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Local address to serve notifications on.
    pub listen: String,
    /// HTTPS URL Drive posts to (Google requires HTTPS on a verified domain).
    pub public_url: String,
    /// Channel lifetime before renewal (Drive caps change channels at one week).
    #[serde(default = "default_channel_ttl")]
    pub channel_ttl: HumanDuration,
}

fn default_channel_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}

/// `[source] subjects`: the users whose drives are mirrored.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum Subjects {
    /// These users (emails).
    Listed(Vec<String>),
    /// `"domain"`: every active user the directory lists.
    Named(String),
}

impl Subjects {
    /// The value that asks the directory for every user.
    pub const DOMAIN: &'static str = "domain";

    /// Whether the users come from the directory rather than from the list.
    pub fn from_directory(&self) -> bool {
        matches!(self, Subjects::Named(n) if n == Self::DOMAIN)
    }
}

fn default_directory_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn default_drives_in_parallel() -> usize {
    8
}

fn default_api_base() -> String {
    "https://www.googleapis.com/".into()
}
fn default_docs_base() -> String {
    "https://docs.google.com/".into()
}
fn default_drives() -> Vec<String> {
    vec!["my-drive".into()]
}
fn default_poll() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
/// The `type` a credentials file declares (`service_account`, `authorized_user`), when it can be read.
fn credential_type(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let v = serde_json::from_str::<serde_json::Value>(&text).ok()?;
    v.get("type").and_then(|t| t.as_str()).map(str::to_string)
}

/// One `@` with something on both sides, no space or slash: enough to catch a name that is not an
/// email (the directory decides whether the user exists).
fn looks_like_email(s: &str) -> bool {
    let mut parts = s.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else { return false };
    !local.is_empty() && domain.contains('.') && !s.contains(['/', ' ', '\\'])
}

/// Whether `path` holds a "Desktop app" OAuth client rather than a key or a sign-in.
fn is_oauth_client_file(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("installed").is_some())
}

fn default_scope() -> String {
    "drive.readonly".into()
}
fn default_page_size() -> u32 {
    1000
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

pub use crate::mirror::export::ExportConfig;

pub use crate::mirror::selection::ShortcutMode;

pub use crate::mirror::keys::KeyMode;

/// What a Drive delete does to the mirror.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeletePolicy {
    /// Move under `<prefix>/.trash/`.
    #[default]
    Trash,
    /// Delete the object.
    Delete,
    /// Leave it.
    Keep,
}

/// `[destination]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// `s3://bucket/prefix`, `file:///abs/path`, `gs://…`, `az://…`.
    pub url: String,
    /// S3-compatible endpoint (http allowed).
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Access key (or AWS_ACCESS_KEY_ID).
    pub access_key_id: Option<String>,
    /// Secret key (or AWS_SECRET_ACCESS_KEY).
    pub secret_access_key: Option<Secret>,
    /// Key alphabet; default utf8, supabase when the endpoint is a Supabase storage URL.
    pub keys: Option<KeyMode>,
    /// What Drive deletes do.
    #[serde(default)]
    pub deletes: DeletePolicy,
    /// Earlier contents kept per key under `<prefix>/.versions/` when a file's object is replaced by
    /// new content or removed (0: none); the oldest beyond this many are pruned.
    #[serde(default)]
    pub versions: usize,
    /// Longest wait for one destination request, its body included (a part upload must finish
    /// within it); a request that exceeds it is retried.
    #[serde(default = "default_destination_timeout")]
    pub timeout: HumanDuration,
    /// Largest file the store takes (a Supabase project's or bucket's file size limit): a larger
    /// file is dead-lettered before it is downloaded, instead of downloaded and then refused.
    pub max_file_size: Option<ByteSize>,
    /// Longest whole key written, in bytes; default [`crate::mirror::keys::default_max_key_bytes`]
    /// (1,024, S3's limit; 900 with `keys = "supabase"`, whose hosted store adds its own path).
    pub max_key_bytes: Option<u64>,
}

fn default_destination_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(120))
}

impl DestinationConfig {
    /// The key mode in force, applying the Supabase-endpoint default.
    pub fn key_mode(&self) -> KeyMode {
        let mode = self.keys.unwrap_or_else(|| match &self.endpoint {
            Some(e) if e.contains("supabase.co") || e.contains("/storage/v1/s3") => KeyMode::Supabase,
            _ => KeyMode::Utf8,
        });
        match mode {
            KeyMode::Utf8 if self.url.starts_with("file:") => KeyMode::Local,
            mode => mode,
        }
    }

    /// The longest whole key in force: `max_key_bytes`, or the key mode's default.
    pub fn max_key_bytes(&self) -> usize {
        let default = crate::mirror::keys::default_max_key_bytes(self.key_mode());
        self.max_key_bytes.map_or(default, |b| usize::try_from(b).unwrap_or(default))
    }
}

/// `[state]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// fjall directory.
    pub dir: PathBuf,
    /// How long the audit log keeps an entry (`"30days"`): older entries are removed as the mirror
    /// runs, so the log does not grow with the mirror's age.
    pub audit_retention: HumanDuration,
    /// The state store's memory: fjall's memtables and block cache together (`"64MiB"`). A run's
    /// memory is this, the pipeline's `memory_budget` and the channels, whatever the drive's size.
    pub memory: ByteSize,
}

impl StateConfig {
    /// The store's memory budget.
    pub fn store_memory(&self) -> crate::state::StoreMemory {
        crate::state::StoreMemory(self.memory.0)
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from(".mirrorflow"),
            audit_retention: HumanDuration(Duration::from_secs(30 * 24 * 3600)),
            memory: ByteSize(crate::state::DEFAULT_STORE_MEMORY),
        }
    }
}

/// `[stages.<name>]`.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Workers.
    pub concurrency: Option<usize>,
    /// Capacity of the stage's input channel.
    pub capacity: Option<usize>,
    /// Parts uploaded in parallel per file (uploader only).
    pub part_concurrency: Option<usize>,
}

pub use crate::model::StageName;

/// `[stages]`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct StagesConfig {
    /// Change feed (no input channel: its output is dedup's input).
    pub change_feed: Option<StageConfig>,
    /// Dedup.
    pub dedup: Option<StageConfig>,
    /// Planner.
    pub planner: Option<StageConfig>,
    /// Downloader.
    pub downloader: Option<StageConfig>,
    /// Chunk uploader.
    pub uploader: Option<StageConfig>,
    /// Verifier.
    pub verifier: Option<StageConfig>,
    /// Committer.
    pub committer: Option<StageConfig>,
}

/// Resolved settings of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageSettings {
    /// Workers.
    pub concurrency: usize,
    /// Input channel capacity.
    pub capacity: usize,
    /// Parallel parts per upload.
    pub part_concurrency: usize,
}

/// A stage's input channel when the config does not size it.
pub const DEFAULT_CAPACITY: usize = 256;
/// Parts in flight per upload when the config does not say.
pub const DEFAULT_PART_CONCURRENCY: usize = 4;

impl StagesConfig {
    /// What the file says about `stage`.
    fn configured(&self, stage: StageName) -> Option<StageConfig> {
        match stage {
            StageName::ChangeFeed => self.change_feed,
            StageName::Dedup => self.dedup,
            StageName::Planner => self.planner,
            StageName::Downloader => self.downloader,
            StageName::Uploader => self.uploader,
            StageName::Verifier => self.verifier,
            StageName::Committer => self.committer,
        }
    }

    /// Settings of `stage`, defaults applied.
    pub fn settings(&self, stage: StageName) -> StageSettings {
        let cfg =
            self.configured(stage).unwrap_or(StageConfig { concurrency: None, capacity: None, part_concurrency: None });
        StageSettings {
            concurrency: cfg.concurrency.unwrap_or(stage.default_concurrency()),
            capacity: cfg.capacity.unwrap_or(DEFAULT_CAPACITY),
            part_concurrency: cfg.part_concurrency.unwrap_or(DEFAULT_PART_CONCURRENCY),
        }
    }
}

/// `[pipeline]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Size of a streamed chunk.
    pub chunk_size: ByteSize,
    /// Chunks buffered between one download and its upload.
    pub chunk_depth: usize,
    /// Multipart part size; files smaller go in one PUT.
    pub part_size: ByteSize,
    /// Whether sha256 is computed on the stream beside md5 (and checked against Drive's
    /// `sha256Checksum`). Off, one large file streams about twice as fast on a CPU without SHA
    /// extensions; md5 is still verified.
    pub sha256: bool,
    /// The most bytes all uploads together hold in part buffers (parts being filled and in flight).
    pub memory_budget: ByteSize,
}

impl PipelineConfig {
    /// The digests the chunk path computes.
    pub fn digests(&self) -> crate::hashing::Digests {
        if self.sha256 { crate::hashing::Digests::Md5AndSha256 } else { crate::hashing::Digests::Md5 }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            chunk_size: ByteSize(1 << 20),
            chunk_depth: 4,
            part_size: ByteSize(8 << 20),
            sha256: true,
            memory_budget: ByteSize(256 << 20),
        }
    }
}

/// `[retry]`.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per call, including the first.
    pub max_attempts: u32,
    /// First backoff.
    pub base_delay: HumanDuration,
    /// Backoff cap.
    pub max_delay: HumanDuration,
    /// Consecutive retryable failures of one remote that open its circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker holds calls before one probe is let through.
    pub breaker_cooldown: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 6,
            base_delay: HumanDuration(Duration::from_millis(200)),
            max_delay: HumanDuration(Duration::from_secs(30)),
            breaker_threshold: 5,
            breaker_cooldown: HumanDuration(Duration::from_secs(30)),
        }
    }
}

impl RetryConfig {
    /// The circuit-breaker settings these keys describe.
    pub fn breaker(&self) -> crate::breaker::BreakerSettings {
        crate::breaker::BreakerSettings { threshold: self.breaker_threshold, cooldown: self.breaker_cooldown.0 }
    }
}

/// `[rate_limit]`.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Drive requests per second (Google allows ~200/s per user), for all requests of the process.
    pub drive_rps: f64,
    /// With `[source] subjects`: each user's own requests per second, within `drive_rps` (Google's
    /// quota is per user, so users proceed side by side). Absent: no limit beyond `drive_rps`.
    pub user_rps: Option<f64>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { drive_rps: 150.0, user_rps: None }
    }
}

/// `[metrics]`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Prometheus listen address; none = no exporter.
    pub listen: Option<String>,
}

/// `[verify]`: a running pipeline compares the mirror with Drive on a schedule and repairs what
/// differs (the same reconcile as `mirrorflow verify --repair`).
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// How often; off when absent. Each run waits until the pipeline is idle.
    pub every: Option<HumanDuration>,
    /// Read and hash every object, as `verify --checksum` does.
    #[serde(default)]
    pub checksum: bool,
}

/// `[index]`: the mirror's file index, versions and audit trail in PostgreSQL (a Supabase project's
/// database, say), fed from the committed outcomes; the mirror never waits for it.
#[derive(Debug, Deserialize, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// `postgresql://user:password@host:port/db?sslmode=…`; else `MIRRORFLOW_INDEX_URL`. Unset: no
    /// index. Never logged (the password is in it).
    pub url: Option<Secret>,
    /// Schema holding mirrorflow's tables (created and migrated by mirrorflow).
    pub schema: String,
    /// How long `run --once` waits, once the mirror is done, for the index to catch up before it
    /// exits 1 saying the index is behind.
    pub catch_up_timeout: HumanDuration,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig { url: None, schema: "mirrorflow".into(), catch_up_timeout: HumanDuration(Duration::from_secs(60)) }
    }
}

/// Environment variable that supplies `[index] url` (kept out of the file, like other secrets).
pub const INDEX_URL_ENV: &str = "MIRRORFLOW_INDEX_URL";

impl IndexConfig {
    /// The URL in force: the file's, else [`INDEX_URL_ENV`]'s; `None` when the index is off.
    pub fn url(&self) -> Option<Secret> {
        self.url.clone().or_else(|| std::env::var(INDEX_URL_ENV).ok().filter(|u| !u.is_empty()).map(Secret))
    }

    fn problems(&self, p: &mut Vec<String>) {
        let valid_schema = self.schema.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && self.schema.len() <= 63
            && self.schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid_schema {
            p.push(format!(
                "index.schema: {:?} is not a plain PostgreSQL name (lowercase letters, digits, _; at most 63)",
                self.schema
            ));
        }
        if let Some(url) = self.url()
            && let Err(e) = crate::index::connect::Target::parse(url.expose())
        {
            let key = if self.url.is_some() { "index.url" } else { INDEX_URL_ENV };
            p.push(format!("{key}: {e}"));
        }
    }
}

/// `[cluster]`: several processes share the mirror, each owning the users and shared drives that
/// rendezvous hashing gives its shard ([`crate::cluster`]).
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `"i/n"`: this process is shard `i` (0-based) of `n`; [`crate::cluster::SHARD_ENV`] overrides it.
    pub shard: Option<String>,
    /// `n` alone: `i` is the host name's trailing `-<digits>` (a StatefulSet pod's ordinal).
    pub shards: Option<u64>,
}

impl ClusterConfig {
    /// This process's shard: [`crate::cluster::SHARD_ENV`], else `shard`, else `shards` with the host
    /// name's ordinal, else the sole shard `0/1`. `validate` has resolved it once already, so at run
    /// time an error means the environment changed since.
    pub fn shard(&self) -> Result<crate::cluster::Shard, crate::cluster::ShardError> {
        let env = std::env::var(crate::cluster::SHARD_ENV).ok().filter(|v| !v.trim().is_empty());
        let settings =
            crate::cluster::ShardSettings { env: env.as_deref(), shard: self.shard.as_deref(), shards: self.shards };
        settings.resolve(crate::cluster::host_name)
    }
}

/// `[supervisor]`.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// Restarts allowed within `within` before the pipeline gives up.
    pub max_restarts: u32,
    /// Window for `max_restarts`.
    pub within: HumanDuration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig { max_restarts: 10, within: HumanDuration(Duration::from_secs(60)) }
    }
}

/// `[testing]`: makes a named stage fail on purpose, to prove supervision. Not for production.
#[derive(Debug, Deserialize, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct TestingConfig {
    /// Stage to fail: change_feed, dedup, planner, downloader, uploader, verifier, committer.
    pub fail_stage: Option<String>,
    /// Fail when processing this many-th item (1-based).
    pub fail_after: u64,
    /// `panic` or `error`.
    pub fail_mode: String,
    /// How many times to fail in all.
    pub fail_times: u64,
    /// Aborts the process (like `kill -9`: no cleanup, no flush) right after this many writes to the
    /// destination (puts, part uploads, completions, copies, deletes), so crash tests kill at an exact
    /// amount of work instead of at a wall-clock time.
    pub crash_after_writes: Option<u64>,
    /// S3 copies (moves, trash, versions, dedup) of objects larger than this go multipart
    /// (`UploadPartCopy`) instead of one `CopyObject`; by default above `CopyObject`'s 5 GiB limit.
    pub multipart_copy_above: Option<ByteSize>,
    /// Part size of those copies (default 512 MiB; S3 allows 5 MiB to 5 GiB).
    pub multipart_copy_part_size: Option<ByteSize>,
}

impl Default for TestingConfig {
    fn default() -> Self {
        TestingConfig {
            fail_stage: None,
            fail_after: 3,
            fail_mode: "panic".into(),
            fail_times: 1,
            crash_after_writes: None,
            multipart_copy_above: None,
            multipart_copy_part_size: None,
        }
    }
}

/// An inclusive range of a key's values (`high: None`: no upper bound). A bound that is another
/// key's value is named in the message (`retry.max_delay` starts at `retry.base_delay`).
#[derive(Debug, Clone, Copy)]
struct Between<T> {
    low: T,
    high: Option<T>,
    low_key: Option<&'static str>,
    high_key: Option<&'static str>,
    bytes: bool,
}

/// How a bound reads in a message: durations as `"100ms"`, byte sizes as `"5MiB"`.
trait Bound: Copy + PartialOrd {
    fn show(self, bytes: bool) -> String;
}

impl Bound for Duration {
    fn show(self, _: bool) -> String {
        humantime::format_duration(self).to_string()
    }
}

impl Bound for u64 {
    fn show(self, bytes: bool) -> String {
        let unit = [(30, "GiB"), (20, "MiB"), (10, "KiB")]
            .into_iter()
            .find(|(shift, _)| self >= 1 << shift && self.is_multiple_of(1 << shift));
        match unit {
            Some((shift, name)) if bytes => format!("{}{name}", self >> shift),
            _ if bytes => format!("{self}B"),
            _ => self.to_string(),
        }
    }
}

impl<T: Bound> Between<T> {
    /// The range [`keys`] documents for a key.
    fn of(limits: keys::Limits<T>) -> Self {
        Between { low: limits.min, high: limits.max, low_key: None, high_key: None, bytes: false }
    }

    /// Raises the lower bound to another key's value (never below the documented one).
    fn low_at(self, low: T) -> Self {
        if low > self.low { Between { low, ..self } } else { self }
    }

    /// Lowers the upper bound to another key's value.
    fn high_at(self, high: T) -> Self {
        match self.high {
            Some(h) if h <= high => self,
            _ => Between { high: Some(high), ..self },
        }
    }

    fn bytes(self) -> Self {
        Between { bytes: true, ..self }
    }

    fn low_named(self, key: &'static str) -> Self {
        Between { low_key: Some(key), ..self }
    }

    fn high_named(self, key: &'static str) -> Self {
        Between { high_key: Some(key), ..self }
    }

    /// Pushes `"<key>: must be between <low> and <high>, not <value>"` when `value` is outside.
    fn check(&self, key: &str, value: T, p: &mut Vec<String>) {
        if value >= self.low && self.high.is_none_or(|h| value <= h) {
            return;
        }
        let name = |bound: T, key: Option<&str>| match key {
            Some(k) => format!("{k} ({})", bound.show(self.bytes)),
            None => bound.show(self.bytes),
        };
        let low = name(self.low, self.low_key);
        let range = match self.high {
            Some(high) => format!("between {low} and {}", name(high, self.high_key)),
            None => format!("at least {low}"),
        };
        p.push(format!("{key}: must be {range}, not {}", value.show(self.bytes)));
    }
}

/// Appends the line of the key a problem names (`"stages.uploader.capacity: …"` → `… (line 12)`), so
/// a semantic error points into the file like a syntax error does. Problems about a key the file
/// leaves to its default stay as they are.
fn with_line(text: &str, problem: String) -> String {
    let key = problem.split(':').next().unwrap_or_default().trim();
    match line_of(text, key) {
        Some(n) => format!("{problem} (line {n})"),
        None => problem,
    }
}

/// The 1-based line where dotted `key` is set: a `name = …` line under its `[table]` header, or the
/// header itself when `key` names a table.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let mut table = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = header.trim().to_string();
            if table == key {
                return Some(i + 1);
            }
            continue;
        }
        let Some((name, _)) = line.split_once('=') else { continue };
        let name = name.trim().trim_matches('"');
        let full = if table.is_empty() { name.to_string() } else { format!("{table}.{name}") };
        if full == key {
            return Some(i + 1);
        }
    }
    None
}

/// What is wrong with a webhook `public_url`, if anything. Google delivers push notifications only to
/// an HTTPS address (Drive API, "Push notifications") and refuses any other at `changes.watch`; plain
/// `http` is kept for a loopback host, where only the local emulator can deliver.
fn public_url_problem(public_url: &str) -> Option<&'static str> {
    let Ok(u) = url::Url::parse(public_url) else { return Some("is not an https URL") };
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match u.scheme() {
        "https" if u.host().is_some() => None,
        "http" if loopback => None,
        "http" => Some("must be https: Google delivers push notifications only to an HTTPS address"),
        _ => Some("is not an https URL"),
    }
}

/// Upper bounds that catch a typo'd or absurd value before it costs memory or threads: workers per
/// stage, channel capacity, parts in flight per upload, chunks in flight per transfer.
const MAX_CONCURRENCY: usize = 1024;
const MAX_CAPACITY: usize = 1_000_000;
const MAX_PART_CONCURRENCY: usize = 64;
const MAX_CHUNK_DEPTH: u64 = 1024;
/// Most earlier contents kept per key (`[destination] versions`).
const MAX_VERSIONS: u64 = 1000;
/// `[destination] max_key_bytes` bounds: S3's key limit, and a floor that leaves a deep folder's
/// shortened key (`keys::fit_parent`) room for the prefix and part of the path.
const MIN_KEY_BYTES: u64 = 512;
const MAX_KEY_BYTES: u64 = crate::mirror::keys::MAX_KEY_BYTES as u64;
/// S3's smallest and largest part.
const MIN_PART_SIZE: u64 = 5 << 20;
const MAX_PART_SIZE: u64 = 5 << 30;
/// The smallest streamed chunk (smaller ones cost a channel send per few bytes).
const MIN_CHUNK_SIZE: u64 = 1 << 10;
/// `[retry]` bounds: attempts per call, failures that open a breaker.
const MAX_ATTEMPTS: u64 = 100;
const MAX_BREAKER_THRESHOLD: u64 = 1000;
/// `[supervisor] max_restarts` bound.
const MAX_RESTARTS: u64 = 1000;
/// `[rate_limit] drive_rps` bounds: one request per 100 s up to far beyond Google's quota (benches
/// against the emulator run at 100,000/s). Outside them the token bucket's wait is not a `Duration`.
pub const MIN_DRIVE_RPS: f64 = 0.01;
/// See [`MIN_DRIVE_RPS`].
pub const MAX_DRIVE_RPS: f64 = 1_000_000.0;
const DAY_SECS: u64 = 24 * 3600;
/// `[state] audit_retention` bound: 100 years (in milliseconds it still fits the u64 the prune uses).
const MAX_RETENTION_SECS: u64 = 36_525 * DAY_SECS;
/// The most part buffers all uploads may hold at once (uploaders × parts in flight × part size).
const MAX_PART_MEMORY: u64 = 16 << 30;

impl Config {
    /// Reads, parses and validates `path`; relative paths inside are resolved against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut cfg = Config::parse(&text).map_err(|message| ConfigError::Parse { path: path.into(), message })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        let problems: Vec<String> = cfg.problems().into_iter().map(|p| with_line(&text, p)).collect();
        if problems.is_empty() { Ok(cfg) } else { Err(ConfigError::Invalid { path: path.into(), problems }) }
    }

    /// Parses TOML text; the error names the key, line and column.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    fn resolve_paths(&mut self, base: &Path) {
        if self.source.credentials.is_relative() {
            self.source.credentials = base.join(&self.source.credentials);
        }
        if let Some(cache) = self.source.token_cache.as_mut().filter(|c| c.is_relative()) {
            *cache = base.join(&*cache);
        }
        if self.state.dir.is_relative() {
            self.state.dir = base.join(&self.state.dir);
        }
    }

    /// What to mirror of the drives in scope (`[source] folders`, `include`, `exclude`, `mime_types`).
    pub fn selection(&self) -> Result<crate::mirror::selection::Selection, crate::mirror::selection::SelectionError> {
        let s = &self.source;
        crate::mirror::selection::Selection::new(&s.folders, &s.include, &s.exclude, &s.mime_types)
            .map(|sel| sel.with_shortcuts(s.shortcuts))
    }

    /// Every semantic problem, each starting with the key it concerns.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        self.source_problems(&mut p);
        self.destination_problems(&mut p);
        self.index.problems(&mut p);
        self.stage_problems(&mut p);
        self.range_problems(&mut p);
        if let Err(e) = self.cluster.shard() {
            let e = e.to_string();
            // A count out of range is already reported by `range_problems` under the same key.
            if !p.iter().any(|q| q.split(':').next() == e.split(':').next()) {
                p.push(e);
            }
        }
        if let Some(l) = &self.metrics.listen
            && l.parse::<std::net::SocketAddr>().is_err()
        {
            p.push(format!("metrics.listen: {l:?} is not an address like \"127.0.0.1:9898\""));
        }
        if let Some(s) = &self.testing.fail_stage {
            if StageName::parse(s).is_none() {
                let names: Vec<&str> = StageName::ALL.iter().map(|n| n.as_str()).collect();
                p.push(format!("testing.fail_stage: unknown stage {s:?} (one of {})", names.join(", ")));
            }
            if !["panic", "error"].contains(&self.testing.fail_mode.as_str()) {
                p.push("testing.fail_mode: must be \"panic\" or \"error\"".into());
            }
        }
        p
    }

    fn source_problems(&self, p: &mut Vec<String>) {
        let s = &self.source;
        self.subjects_problems(p);
        if !s.credentials.is_file() {
            p.push(format!("source.credentials: no such file {}", s.credentials.display()));
        } else if s.token_cache.is_none() && is_oauth_client_file(&s.credentials) {
            p.push(
                "source.token_cache: an OAuth client file (source.credentials) needs it: where `mirrorflow auth login` \
                 saves the sign-in, e.g. \"token.json\""
                    .into(),
            );
        }
        for (key, url) in [("source.api_base_url", &s.api_base_url), ("source.docs_base_url", &s.docs_base_url)] {
            match url::Url::parse(url) {
                Ok(u) if ["http", "https"].contains(&u.scheme()) && url.ends_with('/') => {}
                _ => p.push(format!("{key}: {url:?} must be an http(s) URL ending with '/'")),
            }
        }
        if s.drives.is_empty() {
            p.push("source.drives: list at least one drive (\"my-drive\", a shared drive id, or \"all\")".into());
        }
        if let Some(w) = &s.webhook {
            if w.listen.parse::<std::net::SocketAddr>().is_err() {
                p.push(format!("source.webhook.listen: {:?} is not an address like \"0.0.0.0:8080\"", w.listen));
            }
            if let Some(problem) = public_url_problem(&w.public_url) {
                p.push(format!("source.webhook.public_url: {:?} {problem}", w.public_url));
            }
        }
        if let Err(e) = self.selection() {
            p.push(e.to_string());
        }
        for (i, id) in s.folders.iter().enumerate() {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                p.push(format!(
                    "source.folders[{i}]: {id:?} is not a Drive folder id (the part after /folders/ in its URL)"
                ));
            }
        }
        if crate::drive::auth::scope_url(&s.scope).is_none() {
            p.push(format!(
                "source.scope: {:?} is not a scope mirrorflow can read files with (\"drive.readonly\" or \"drive\")",
                s.scope
            ));
        }
        s.export.problems(p);
    }

    fn destination_problems(&self, p: &mut Vec<String>) {
        let d = &self.destination;
        match url::Url::parse(&d.url) {
            Ok(u) if ["s3", "file", "gs", "az", "azure", "abfs", "memory"].contains(&u.scheme()) => {
                if u.scheme() == "file" && !u.path().starts_with('/') {
                    p.push(format!("destination.url: {:?} must be an absolute file:/// URL", d.url));
                }
            }
            _ => p.push(format!(
                "destination.url: {:?} is not a supported URL (s3://bucket/prefix, file:///absolute/path, gs://, az://)",
                d.url
            )),
        }
        if let Some(e) = &d.endpoint
            && url::Url::parse(e).is_err()
        {
            p.push(format!("destination.endpoint: {e:?} is not a URL"));
        }
        let uploader = self.stages.settings(StageName::Uploader);
        let part_memory = (uploader.concurrency as u64)
            .saturating_mul(uploader.part_concurrency as u64)
            .saturating_mul(self.pipeline.part_size.0);
        if part_memory > MAX_PART_MEMORY {
            p.push(format!(
                "pipeline.part_size: {} uploads (stages.uploader.concurrency) × {} parts in flight \
                 (stages.uploader.part_concurrency) × this part size would hold {} GiB in memory (at most 16 GiB)",
                uploader.concurrency,
                uploader.part_concurrency,
                part_memory >> 30
            ));
        }
    }

    /// `[source] subjects`: emails (each once) or `"domain"` with the administrator to list it as, read
    /// with a service-account key (only a service account can act as other users).
    fn subjects_problems(&self, p: &mut Vec<String>) {
        let s = &self.source;
        let Some(subjects) = &s.subjects else { return };
        match subjects {
            Subjects::Named(n) if n == Subjects::DOMAIN => {
                if s.subject.is_none() {
                    p.push(
                        "source.subjects: \"domain\" lists the users through the Admin SDK Directory as an \
                         administrator: name one with source.subject"
                            .into(),
                    );
                }
            }
            Subjects::Named(n) => p.push(format!(
                "source.subjects: {n:?} is neither \"domain\" nor a list of emails like [\"alice@example.com\"]"
            )),
            Subjects::Listed(list) if list.is_empty() => {
                p.push("source.subjects: the list is empty; name at least one user, or \"domain\"".into())
            }
            Subjects::Listed(list) => {
                let mut seen = std::collections::BTreeSet::new();
                for email in list {
                    if !looks_like_email(email) {
                        p.push(format!("source.subjects: {email:?} is not an email address"));
                    } else if !seen.insert(email.to_lowercase()) {
                        p.push(format!("source.subjects: {email:?} is listed twice"));
                    }
                }
            }
        }
        if self.index.url().is_some() {
            p.push(
                "index.url: the PostgreSQL index of several users (partitioned by user) is not built yet; leave \
                 [index] out with source.subjects"
                    .into(),
            );
        }
        if s.webhook.is_some() {
            p.push(
                "source.webhook: push notifications for several users are not built yet; with source.subjects \
                 each drive is polled every poll_interval"
                    .into(),
            );
        }
        if credential_type(&s.credentials).is_some_and(|t| t != "service_account") {
            p.push(
                "source.subjects: acting as other users needs a service-account key with domain-wide \
                 delegation as source.credentials"
                    .into(),
            );
        }
    }

    /// Every number and duration key against its range in [`keys`] (docs/CONFIG.md): a value
    /// outside it is refused here rather than overflowing, panicking or busy-looping at run time.
    fn range_problems(&self, p: &mut Vec<String>) {
        for (key, value, range) in self.duration_keys() {
            if let Some(value) = value {
                range.check(key, value, p);
            }
        }
        for (key, value, range) in self.count_keys() {
            if let Some(value) = value {
                range.check(key, value, p);
            }
        }
        let rates = [
            ("rate_limit.drive_rps", Some(self.rate_limit.drive_rps)),
            ("rate_limit.user_rps", self.rate_limit.user_rps),
        ];
        for (key, rps) in rates {
            let Some(rps) = rps else { continue };
            if !(keys::DRIVE_RPS.min..=keys::DRIVE_RPS.max.unwrap_or(f64::MAX)).contains(&rps) {
                p.push(format!("{key}: must be between {MIN_DRIVE_RPS} and {MAX_DRIVE_RPS}, not {rps}"));
            }
        }
    }

    /// Each duration key, its value (`None`: an optional key left out) and its range, from [`keys`].
    fn duration_keys(&self) -> [(&'static str, Option<Duration>, Between<Duration>); 12] {
        let (s, r) = (&self.source, &self.retry);
        let base_delay = r.base_delay.0.clamp(keys::BASE_DELAY.min, keys::BASE_DELAY.max.unwrap_or(Duration::MAX));
        [
            ("source.poll_interval", Some(s.poll_interval.0), Between::of(keys::POLL_INTERVAL)),
            ("source.timeout", Some(s.timeout.0), Between::of(keys::SOURCE_TIMEOUT)),
            ("source.directory_interval", Some(s.directory_interval.0), Between::of(keys::DIRECTORY_INTERVAL)),
            ("source.webhook.channel_ttl", s.webhook.as_ref().map(|w| w.channel_ttl.0), Between::of(keys::CHANNEL_TTL)),
            ("destination.timeout", Some(self.destination.timeout.0), Between::of(keys::DESTINATION_TIMEOUT)),
            ("state.audit_retention", Some(self.state.audit_retention.0), Between::of(keys::AUDIT_RETENTION)),
            ("retry.base_delay", Some(r.base_delay.0), Between::of(keys::BASE_DELAY)),
            (
                "retry.max_delay",
                Some(r.max_delay.0),
                Between::of(keys::MAX_DELAY).low_at(base_delay).low_named("retry.base_delay"),
            ),
            ("retry.breaker_cooldown", Some(r.breaker_cooldown.0), Between::of(keys::BREAKER_COOLDOWN)),
            ("supervisor.within", Some(self.supervisor.within.0), Between::of(keys::SUPERVISOR_WITHIN)),
            ("index.catch_up_timeout", Some(self.index.catch_up_timeout.0), Between::of(keys::CATCH_UP_TIMEOUT)),
            ("verify.every", self.verify.every.map(|e| e.0), Between::of(keys::VERIFY_EVERY)),
        ]
    }

    /// Each count and byte-size key (stage settings apart), its value and its range, from [`keys`].
    fn count_keys(&self) -> [(&'static str, Option<u64>, Between<u64>); 19] {
        let (s, pl, r, t) = (&self.source, &self.pipeline, &self.retry, &self.testing);
        let part_size = pl.part_size.0.clamp(MIN_PART_SIZE, MAX_PART_SIZE);
        let bytes = |l| Between::of(l).bytes();
        [
            ("source.page_size", Some(s.page_size.into()), Between::of(keys::PAGE_SIZE)),
            ("source.drives_in_parallel", Some(s.drives_in_parallel as u64), Between::of(keys::DRIVES_IN_PARALLEL)),
            ("source.max_file_size", s.max_file_size.map(|b| b.0), bytes(keys::MAX_FILE_SIZE)),
            ("destination.versions", Some(self.destination.versions as u64), Between::of(keys::VERSIONS)),
            ("destination.max_file_size", self.destination.max_file_size.map(|b| b.0), bytes(keys::MAX_FILE_SIZE)),
            ("destination.max_key_bytes", self.destination.max_key_bytes, Between::of(keys::KEY_BYTES)),
            ("pipeline.part_size", Some(pl.part_size.0), bytes(keys::PART_SIZE)),
            (
                "pipeline.chunk_size",
                Some(pl.chunk_size.0),
                bytes(keys::CHUNK_SIZE).high_at(part_size).high_named("pipeline.part_size"),
            ),
            (
                "pipeline.memory_budget",
                Some(pl.memory_budget.0),
                bytes(keys::MEMORY_BUDGET).low_at(part_size).low_named("pipeline.part_size"),
            ),
            ("pipeline.chunk_depth", Some(pl.chunk_depth as u64), Between::of(keys::CHUNK_DEPTH)),
            ("state.memory", Some(self.state.memory.0), bytes(keys::STATE_MEMORY)),
            ("retry.max_attempts", Some(r.max_attempts.into()), Between::of(keys::RETRY_ATTEMPTS)),
            ("retry.breaker_threshold", Some(r.breaker_threshold.into()), Between::of(keys::BREAKER_THRESHOLD)),
            (
                "supervisor.max_restarts",
                Some(self.supervisor.max_restarts.into()),
                Between::of(keys::SUPERVISOR_RESTARTS),
            ),
            ("cluster.shards", self.cluster.shards, Between::of(keys::SHARDS)),
            ("testing.fail_after", Some(t.fail_after), Between::of(keys::AT_LEAST_ONE)),
            ("testing.crash_after_writes", t.crash_after_writes, Between::of(keys::AT_LEAST_ONE)),
            ("testing.multipart_copy_above", t.multipart_copy_above.map(|b| b.0), bytes(keys::COPY_ABOVE)),
            ("testing.multipart_copy_part_size", t.multipart_copy_part_size.map(|b| b.0), bytes(keys::COPY_PART_SIZE)),
        ]
    }

    fn stage_problems(&self, p: &mut Vec<String>) {
        for stage in StageName::ALL {
            let s = self.stages.settings(stage);
            for (key, value, range) in [
                ("concurrency", s.concurrency, keys::STAGE_CONCURRENCY),
                ("capacity", s.capacity, keys::STAGE_CAPACITY),
                ("part_concurrency", s.part_concurrency, keys::PART_CONCURRENCY),
            ] {
                Between::of(range).check(&format!("stages.{stage}.{key}"), value as u64, p);
            }
            if stage.single_worker() && s.concurrency != 1 {
                p.push(format!("stages.{stage}.concurrency: this stage keeps order and must run with 1 worker"));
            }
            let configured = self.stages.configured(stage);
            if !stage.has_input() && configured.is_some_and(|c| c.capacity.is_some()) {
                p.push(format!(
                    "stages.{stage}.capacity: the change feed reads Drive and has no input channel; \
                     what it emits waits in [stages.dedup] capacity"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[source]\ncredentials = \"k.json\"\n[destination]\nurl = \"file:///tmp/m\"\n";

    #[test]
    fn absurd_values_are_problems_that_name_their_key_and_line() {
        let text = format!(
            "{MINIMAL}[stages.uploader]\ncapacity = 4611686018427387904\nconcurrency = 64\npart_concurrency = 16\n\
             [pipeline]\nchunk_depth = 4611686018427387904\npart_size = \"1GiB\"\nmemory_budget = \"8MiB\"\n"
        )
        .replace("[source]\n", "[source]\npoll_interval = \"0s\"\n");
        let c = Config::parse(&text).unwrap();
        let problems: Vec<String> = c.problems().into_iter().map(|p| with_line(&text, p)).collect();
        let find = |key: &str| problems.iter().find(|p| p.starts_with(key)).cloned().unwrap_or_default();
        assert!(find("source.poll_interval").ends_with("(line 2)"), "{problems:#?}");
        assert!(find("stages.uploader.capacity").ends_with("(line 7)"), "{problems:#?}");
        assert!(find("pipeline.chunk_depth").ends_with("(line 11)"), "{problems:#?}");
        assert!(find("pipeline.part_size").contains("GiB in memory"), "{problems:#?}");
        assert!(find("pipeline.memory_budget").ends_with("(line 13)"), "a budget under one part: {problems:#?}");
        assert_eq!(line_of(&text, "stages.uploader"), Some(6));
        assert_eq!(line_of(&text, "source.page_size"), None, "a defaulted key has no line");
    }

    #[test]
    fn a_webhook_public_url_must_be_https_except_on_a_loopback_host() {
        let text =
            |url: &str| format!("{MINIMAL}[source.webhook]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"{url}\"\n");
        let problem = |url: &str| {
            let t = text(url);
            let c = Config::parse(&t).unwrap();
            c.problems().into_iter().map(|p| with_line(&t, p)).find(|p| p.starts_with("source.webhook.public_url"))
        };
        let refused = problem("http://mirror.example.com/hook").expect("plain http to a public host is refused");
        assert!(refused.contains("must be https") && refused.ends_with("(line 7)"), "{refused}");
        assert!(problem("ftp://mirror.example.com/hook").is_some());
        assert!(problem("not a url").is_some());
        for ok in
            ["https://mirror.example.com/hook", "http://127.0.0.1:8080/hook", "http://localhost/h", "http://[::1]/h"]
        {
            assert_eq!(problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn a_bad_shard_is_a_problem_naming_its_key_and_line() {
        let problems = |cluster: &str| {
            let text = format!("{MINIMAL}[cluster]\n{cluster}");
            let c = Config::parse(&text).unwrap();
            c.problems()
                .into_iter()
                .map(|p| with_line(&text, p))
                .filter(|p| p.starts_with("cluster."))
                .collect::<Vec<_>>()
        };
        let syntax = problems("shard = \"3\"\n");
        assert!(syntax.len() == 1 && syntax[0].contains("\"i/n\"") && syntax[0].ends_with("(line 6)"), "{syntax:?}");
        let past = problems("shard = \"3/3\"\n");
        assert!(past.len() == 1 && past[0].starts_with("cluster.shard: ") && past[0].ends_with("(line 6)"), "{past:?}");
        let disagree = problems("shards = 4\nshard = \"1/3\"\n");
        assert!(disagree.len() == 1 && disagree[0].contains("cluster.shards = 4"), "{disagree:?}");
        let zero = problems("shards = 0\nshard = \"0/1\"\n");
        assert!(zero.iter().any(|p| p.starts_with("cluster.shards: must be between 1 and 1024")), "{zero:?}");
        assert_eq!(problems("shard = \"2/3\"\nshards = 3\n"), Vec::<String>::new());
    }

    #[test]
    fn without_a_cluster_table_this_process_is_the_sole_shard() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.cluster.shard(), Ok(crate::cluster::Shard::SOLE));
        let two = Config::parse(&format!("{MINIMAL}[cluster]\nshard = \"1/2\"\n")).unwrap();
        assert_eq!(two.cluster.shard().map(|s| s.to_string()), Ok("1/2".to_string()));
    }

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.source.drives, vec!["my-drive"]);
        assert_eq!(c.stages.settings(StageName::Downloader).concurrency, 8);
        // A local folder escapes the names object_store's local store refuses; other stores take UTF-8.
        assert_eq!(c.destination.key_mode(), KeyMode::Local);
        let s3 = Config::parse(&MINIMAL.replace("file:///tmp/m", "s3://bucket/p")).unwrap();
        assert_eq!(s3.destination.key_mode(), KeyMode::Utf8);
    }

    #[test]
    fn an_absent_section_equals_its_defaults_and_an_empty_one_too() {
        let absent = Config::parse(MINIMAL).unwrap();
        let empty = Config::parse(&format!("{MINIMAL}[testing]\n[retry]\n[pipeline]\n[supervisor]\n")).unwrap();
        let default = TestingConfig::default();
        for t in [&absent.testing, &empty.testing] {
            assert_eq!((t.fail_after, t.fail_mode.as_str(), t.fail_times), (default.fail_after, "panic", 1));
        }
        assert_eq!(absent.retry.max_attempts, empty.retry.max_attempts);
        assert_eq!(absent.pipeline.part_size, empty.pipeline.part_size);
        assert_eq!(absent.supervisor.max_restarts, empty.supervisor.max_restarts);
    }

    #[test]
    fn every_stage_name_round_trips_and_settings_never_fall_back_to_another_stage() {
        for stage in StageName::ALL {
            assert_eq!(StageName::parse(stage.as_str()), Some(stage));
            let text = format!("{MINIMAL}[stages.{stage}]\nconcurrency = 1\ncapacity = 77\n");
            let c = Config::parse(&text).unwrap();
            for other in StageName::ALL {
                let expected = if other == stage { 77 } else { DEFAULT_CAPACITY };
                assert_eq!(c.stages.settings(other).capacity, expected, "{stage} set, {other} read");
            }
        }
        assert_eq!(StageName::parse("committers"), None);
    }

    #[test]
    fn a_capacity_for_the_feed_is_refused_because_it_has_no_input_channel() {
        let text = format!("{MINIMAL}[stages.change_feed]\ncapacity = 9\n");
        let problems = Config::parse(&text).unwrap().problems();
        assert!(problems.iter().any(|p| p.starts_with("stages.change_feed.capacity:")), "{problems:#?}");
        let ok = format!("{MINIMAL}[stages.change_feed]\nconcurrency = 1\n");
        let problems = Config::parse(&ok).unwrap().problems();
        assert!(!problems.iter().any(|p| p.contains("change_feed")), "{problems:#?}");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = format!("{MINIMAL}[state]\ndri = \"x\"\n");
        let err = Config::parse(&text).unwrap_err();
        assert!(err.contains("dri") && err.contains("line 6"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let text = format!("{MINIMAL}[stages.downloader]\nconcurrency = \"eight\"\n");
        let err = Config::parse(&text).unwrap_err();
        assert!(err.contains("concurrency") && err.contains("line 6"), "{err}");
    }

    #[test]
    fn byte_sizes_parse_with_units() {
        assert_eq!(parse_byte_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_byte_size("5 MB").unwrap(), 5_000_000);
        assert!(parse_byte_size("5 parsecs").is_err());
    }

    #[test]
    fn supabase_endpoint_implies_supabase_keys() {
        let text = MINIMAL.replace(
            "url = \"file:///tmp/m\"",
            "url = \"s3://b/p\"\nendpoint = \"https://abc.storage.supabase.co/storage/v1/s3\"",
        );
        assert_eq!(Config::parse(&text).unwrap().destination.key_mode(), KeyMode::Supabase);
    }

    #[test]
    fn breaker_keys_default_and_are_validated() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.retry.breaker(), crate::breaker::BreakerSettings::default());
        let text = format!("{MINIMAL}[retry]\nbreaker_threshold = 0\nbreaker_cooldown = \"0s\"\n");
        let problems = Config::parse(&text).unwrap().problems();
        assert!(problems.iter().any(|p| p.starts_with("retry.breaker_threshold:")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("retry.breaker_cooldown:")), "{problems:?}");
        let text = format!("{MINIMAL}[retry]\nbreaker_cooldown = \"soon\"\n");
        let err = Config::parse(&text).unwrap_err();
        assert!(err.contains("breaker_cooldown") && err.contains("line 6"), "{err}");
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let text = MINIMAL.replace("url = \"file:///tmp/m\"", "url = \"s3://b\"\nsecret_access_key = \"hunter2\"");
        let c = Config::parse(&text).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
