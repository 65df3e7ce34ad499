//! One description per `pipeline.toml` key: meaning, type, unit, default, accepted range and an
//! example. It is the single source of `mirrorflow config reference` (docs/CONFIG.md), of
//! `mirrorflow config schema` and of `config init`'s comments, and its ranges are the very values
//! `validate` checks (`Config::range_problems` reads them from here), so the documented range and the
//! enforced one cannot drift. Tests hold it to the parser: every key serde accepts is described here,
//! every described key parses, and every written default is the parser's default.

use super::{
    DAY_SECS, MAX_ATTEMPTS, MAX_BREAKER_THRESHOLD, MAX_CAPACITY, MAX_CHUNK_DEPTH, MAX_CONCURRENCY, MAX_DRIVE_RPS,
    MAX_KEY_BYTES, MAX_PART_CONCURRENCY, MAX_PART_MEMORY, MAX_PART_SIZE, MAX_RESTARTS, MAX_RETENTION_SECS,
    MAX_VERSIONS, MIN_CHUNK_SIZE, MIN_DRIVE_RPS, MIN_KEY_BYTES, MIN_PART_SIZE, StageName,
};
use std::time::Duration;

/// An inclusive range of a key's values; `max: None` is no upper bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits<T> {
    /// The smallest accepted value.
    pub min: T,
    /// The largest accepted value, if any.
    pub max: Option<T>,
}

impl<T> Limits<T> {
    /// `min..=max`.
    pub const fn new(min: T, max: T) -> Self {
        Limits { min, max: Some(max) }
    }

    /// `min..`.
    pub const fn at_least(min: T) -> Self {
        Limits { min, max: None }
    }
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
const HOUR: Duration = secs(3600);
const DAY: Duration = secs(DAY_SECS);

/// `[source] poll_interval`.
pub const POLL_INTERVAL: Limits<Duration> = Limits::new(ms(100), DAY);
/// `[source] directory_interval`.
pub const DIRECTORY_INTERVAL: Limits<Duration> = Limits::new(Duration::from_secs(60), Duration::from_secs(7 * 86_400));
/// `[source] drives_in_parallel`.
pub const DRIVES_IN_PARALLEL: Limits<u64> = Limits::new(1, 256);
/// `[source] timeout`.
pub const SOURCE_TIMEOUT: Limits<Duration> = Limits::new(ms(100), HOUR);
/// `[source.webhook] channel_ttl`: no upper bound, a longer lifetime is clamped to Drive's week.
pub const CHANNEL_TTL: Limits<Duration> = Limits::at_least(secs(60));
/// `[destination] timeout`.
pub const DESTINATION_TIMEOUT: Limits<Duration> = Limits::new(ms(100), DAY);
/// `[state] audit_retention`.
pub const AUDIT_RETENTION: Limits<Duration> = Limits::new(HOUR, secs(MAX_RETENTION_SECS));
/// `[retry] base_delay`.
pub const BASE_DELAY: Limits<Duration> = Limits::new(ms(1), HOUR);
/// `[retry] max_delay` (and at least `retry.base_delay`).
pub const MAX_DELAY: Limits<Duration> = Limits::new(ms(1), HOUR);
/// `[retry] breaker_cooldown`.
pub const BREAKER_COOLDOWN: Limits<Duration> = Limits::new(ms(100), HOUR);
/// `[supervisor] within`.
pub const SUPERVISOR_WITHIN: Limits<Duration> = Limits::new(secs(1), DAY);
/// `[index] catch_up_timeout`.
pub const CATCH_UP_TIMEOUT: Limits<Duration> = Limits::new(Duration::ZERO, DAY);
/// `[verify] every`.
pub const VERIFY_EVERY: Limits<Duration> = Limits::new(secs(1), secs(366 * DAY_SECS));

/// `[source] page_size`: Drive's own bounds.
pub const PAGE_SIZE: Limits<u64> = Limits::new(1, 1000);
/// `max_file_size` of `[source]` and `[destination]`.
pub const MAX_FILE_SIZE: Limits<u64> = Limits::at_least(1);
/// `[destination] versions`.
pub const VERSIONS: Limits<u64> = Limits::new(0, MAX_VERSIONS);
/// `[destination] max_key_bytes`.
pub const KEY_BYTES: Limits<u64> = Limits::new(MIN_KEY_BYTES, MAX_KEY_BYTES);
/// `[pipeline] part_size`: S3's smallest and largest part.
pub const PART_SIZE: Limits<u64> = Limits::new(MIN_PART_SIZE, MAX_PART_SIZE);
/// `[pipeline] chunk_size` (and at most `pipeline.part_size`).
pub const CHUNK_SIZE: Limits<u64> = Limits::new(MIN_CHUNK_SIZE, MAX_PART_SIZE);
/// The largest source one `CopyObject` copies on AWS S3 (and Supabase).
pub const COPY_OBJECT_LIMIT: u64 = 5 << 30;
/// S3's smallest part (all but the last).
pub const MIN_PART: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART: u64 = 5 << 30;

/// `[pipeline] memory_budget` (and at least `pipeline.part_size`).
pub const MEMORY_BUDGET: Limits<u64> = Limits::new(MIN_PART_SIZE, MAX_PART_MEMORY);
/// `[pipeline] chunk_depth`.
pub const CHUNK_DEPTH: Limits<u64> = Limits::new(1, MAX_CHUNK_DEPTH);
/// `[state] memory`.
pub const STATE_MEMORY: Limits<u64> = Limits::new(crate::state::MIN_STORE_MEMORY, crate::state::MAX_STORE_MEMORY);
/// `[retry] max_attempts`.
pub const RETRY_ATTEMPTS: Limits<u64> = Limits::new(1, MAX_ATTEMPTS);
/// `[retry] breaker_threshold`.
pub const BREAKER_THRESHOLD: Limits<u64> = Limits::new(1, MAX_BREAKER_THRESHOLD);
/// `[supervisor] max_restarts`.
pub const SUPERVISOR_RESTARTS: Limits<u64> = Limits::new(0, MAX_RESTARTS);
/// `[cluster] shards`.
pub const SHARDS: Limits<u64> = Limits::new(1, crate::cluster::MAX_SHARDS as u64);
/// `[testing] fail_after` and `crash_after_writes`.
pub const AT_LEAST_ONE: Limits<u64> = Limits::at_least(1);
/// `[testing] multipart_copy_part_size`: S3's part sizes.
pub const COPY_PART_SIZE: Limits<u64> = Limits::new(MIN_PART, MAX_PART);
/// `[testing] multipart_copy_above`: one CopyObject copies no more.
pub const COPY_ABOVE: Limits<u64> = Limits::new(0, COPY_OBJECT_LIMIT);
/// `[stages.<stage>] concurrency` of a stage that may run several workers.
pub const STAGE_CONCURRENCY: Limits<u64> = Limits::new(1, MAX_CONCURRENCY as u64);
/// `[stages.<stage>] concurrency` of a stage that keeps order.
pub const SINGLE_WORKER: Limits<u64> = Limits::new(1, 1);
/// `[stages.<stage>] capacity`.
pub const STAGE_CAPACITY: Limits<u64> = Limits::new(1, MAX_CAPACITY as u64);
/// `[stages.<stage>] part_concurrency`.
pub const PART_CONCURRENCY: Limits<u64> = Limits::new(1, MAX_PART_CONCURRENCY as u64);
/// `[rate_limit] drive_rps`.
pub const DRIVE_RPS: Limits<f64> = Limits::new(MIN_DRIVE_RPS, MAX_DRIVE_RPS);

/// What a key holds, with the range of a number, byte size or duration.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Free text.
    Text,
    /// A file or folder path, relative to the config file's folder.
    Path,
    /// A URL.
    Url,
    /// A socket address, `host:port`.
    Address,
    /// A secret (never printed).
    Secret,
    /// `true` or `false`.
    Bool,
    /// A list of strings.
    Texts,
    /// A string or a list of strings.
    TextOrTexts,
    /// One of these strings.
    Choice(Vec<&'static str>),
    /// A whole number.
    Count(Limits<u64>),
    /// A decimal number.
    Rate(Limits<f64>),
    /// A byte count: an integer or a string with a unit (`"8MiB"`).
    Bytes(Limits<u64>),
    /// A duration string (`"30s"`).
    Time(Limits<Duration>),
}

impl Kind {
    /// The type as the reference names it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Text | Kind::Url | Kind::Address | Kind::Secret => "string",
            Kind::Path => "path (string)",
            Kind::Bool => "boolean",
            Kind::Texts => "list of strings",
            Kind::TextOrTexts => "string or list of strings",
            Kind::Choice(_) => "string (one of the values below)",
            Kind::Count(_) => "integer",
            Kind::Rate(_) => "number",
            Kind::Bytes(_) => "byte size (integer, or a string with a unit: \"8MiB\", \"5 MB\")",
            Kind::Time(_) => "duration (string: \"250ms\", \"30s\", \"5min\", \"2h\", \"30days\")",
        }
    }
}

/// One key of `pipeline.toml`.
#[derive(Debug, Clone)]
pub struct Key {
    /// Dotted path: `source.page_size`.
    pub path: String,
    /// Type and range.
    pub kind: Kind,
    /// The file must set it.
    pub required: bool,
    /// The parser's default, as a TOML value (`"30s"`, `1000`); `None` when the key has none.
    pub default: Option<&'static str>,
    /// What leaving a key without `default` out means.
    pub absent: Option<&'static str>,
    /// The value code applies when the key is absent (`[stages.<stage>]`, whose keys are optional so a
    /// stage's settings never fall back to another's), as a TOML value.
    pub implied: Option<&'static str>,
    /// Meaning, in Markdown.
    pub doc: String,
    /// A value `validate` accepts, as a TOML value.
    pub example: String,
    /// The unit of a plain number (`requests per second`).
    pub unit: Option<&'static str>,
    /// Another key whose value is also a lower bound (`retry.max_delay` ≥ `retry.base_delay`).
    pub min_key: Option<&'static str>,
    /// Another key whose value is also an upper bound (`pipeline.chunk_size` ≤ `pipeline.part_size`).
    pub max_key: Option<&'static str>,
    /// The parser takes the key but `validate` always refuses it: why.
    pub refused: Option<&'static str>,
}

impl Key {
    fn new(path: impl Into<String>, kind: Kind, doc: impl Into<String>) -> Key {
        Key {
            path: path.into(),
            kind,
            required: false,
            default: None,
            absent: None,
            implied: None,
            doc: doc.into(),
            example: String::new(),
            unit: None,
            min_key: None,
            max_key: None,
            refused: None,
        }
    }
    fn required(self) -> Key {
        Key { required: true, ..self }
    }
    fn default(self, toml: &'static str) -> Key {
        Key { default: Some(toml), ..self }
    }
    fn absent(self, meaning: &'static str) -> Key {
        Key { absent: Some(meaning), ..self }
    }
    fn implied(self, toml: &'static str) -> Key {
        Key { implied: Some(toml), ..self }
    }
    fn example(self, toml: impl Into<String>) -> Key {
        Key { example: toml.into(), ..self }
    }
    fn unit(self, unit: &'static str) -> Key {
        Key { unit: Some(unit), ..self }
    }
    fn min_key(self, key: &'static str) -> Key {
        Key { min_key: Some(key), ..self }
    }
    fn max_key(self, key: &'static str) -> Key {
        Key { max_key: Some(key), ..self }
    }
    fn refused(self, why: &'static str) -> Key {
        Key { refused: Some(why), ..self }
    }

    /// The table the key is in (`source.webhook`) and its name there (`listen`).
    pub fn split(&self) -> (&str, &str) {
        self.path.rsplit_once('.').unwrap_or(("", &self.path))
    }
}

/// One table of `pipeline.toml`.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// Dotted path: `source.webhook`.
    pub path: &'static str,
    /// The file must have it.
    pub required: bool,
    /// What it configures, in Markdown.
    pub doc: &'static str,
}

/// Every table, in the order the reference and `config init` present them.
pub fn tables() -> Vec<Table> {
    let t = |path, required, doc| Table { path, required, doc };
    let mut all = vec![
        t(
            "source",
            true,
            "Where files come from: the Google Drive API, the credentials that read it, and what to mirror of it.",
        ),
        t(
            "source.export",
            false,
            "The format each kind of Google Workspace file is exported to. Each kind takes only the formats in \
             Google's export table. Forms, Sites and Maps have no export: they are not mirrored and the run \
             summary counts them; Google Vids are mirrored as `<name>.mp4` through `files.download`.",
        ),
        t(
            "source.webhook",
            false,
            "Push notifications in continuous mode: Drive POSTs change notifications to `public_url`, which must \
             reach `listen`; a valid notification polls at once, a forged one gets 401. One channel per change \
             log followed, renewed at 80 % of the lifetime Drive granted and stopped on shutdown; a channel \
             Drive refuses outright is logged once and that log is polled every `poll_interval`.",
        ),
        t("destination", true, "Where the mirror is written, and what a Drive delete does to it."),
        t("state", false, "The embedded state store (fjall) and its audit log."),
        t(
            "stages",
            false,
            "Per-stage workers and input channel capacity, one table per stage: `[stages.downloader]`, …",
        ),
    ];
    for stage in StageName::ALL {
        all.push(t(stage_table(stage), false, stage_doc(stage)));
    }
    all.extend([
        t(
            "pipeline",
            false,
            "Streaming parameters. Memory is set by these keys, not by file or drive size: see \
             [Memory](../README.md#memory).",
        ),
        t(
            "retry",
            false,
            "Retries of remote calls, and each remote's circuit breaker: after `breaker_threshold` consecutive \
             retryable failures (429, 5xx, resets, timeouts; not 404s, refusals or 401s) of Drive or of the \
             destination, that remote's breaker holds every call to it for `breaker_cooldown` (files wait, \
             they are not dead-lettered), then lets one probe through.",
        ),
        t("rate_limit", false, "Drive request rate cap."),
        t("metrics", false, "The Prometheus exporter."),
        t(
            "supervisor",
            false,
            "Restart intensity: a stage that fails more than `max_restarts` times within `within` ends the run.",
        ),
        t(
            "verify",
            false,
            "The scheduled reconcile of a running pipeline: the same comparison as `mirrorflow verify`, run \
             each time the pipeline is idle, repairing what it finds through the pipeline.",
        ),
        t(
            "index",
            false,
            "The mirror's file index, versions and audit trail in PostgreSQL (a Supabase project's database, \
             say), fed from the committed outcomes; the mirror never waits for it. See \
             [The index in PostgreSQL](../README.md#the-index-in-postgresql-supabase).",
        ),
        t(
            "cluster",
            false,
            "Shards: several processes (a Kubernetes StatefulSet's pods, say) share one mirror, each mirroring the \
             users and shared drives that rendezvous hashing of the user's email or the drive's id gives its shard, \
             with its own `[state] dir`. Without this table one process mirrors everything (shard `0/1`). The \
             variable `MIRRORFLOW_SHARD` (`\"i/n\"`) overrides `shard`. See \
             [Run on Kubernetes](../README.md#run-on-kubernetes).",
        ),
        t("testing", false, "Failure injection for the tests of the supervision tree. Not for production."),
    ]);
    all
}

/// `stages.<stage>`.
fn stage_table(stage: StageName) -> &'static str {
    match stage {
        StageName::ChangeFeed => "stages.change_feed",
        StageName::Dedup => "stages.dedup",
        StageName::Planner => "stages.planner",
        StageName::Downloader => "stages.downloader",
        StageName::Uploader => "stages.uploader",
        StageName::Verifier => "stages.verifier",
        StageName::Committer => "stages.committer",
    }
}

fn stage_doc(stage: StageName) -> &'static str {
    match stage {
        StageName::ChangeFeed => "The change feed: reads Drive's listings and change logs (it has no input channel).",
        StageName::Dedup => "Dedup: lets one event per file be in flight.",
        StageName::Planner => "The planner: decides each event's action and key.",
        StageName::Downloader => "The downloader: streams bytes from Drive.",
        StageName::Uploader => "The chunk uploader: writes them to the destination.",
        StageName::Verifier => "The verifier: checks what was written.",
        StageName::Committer => {
            "The committer: records outcomes and checkpoints (its channel holds at least one \
                                  1,024-outcome batch)."
        }
    }
}

fn stage_keys(stage: StageName) -> Vec<Key> {
    let table = stage_table(stage);
    let workers = stage.default_concurrency();
    let concurrency = if stage.single_worker() {
        Key::new(
            format!("{table}.concurrency"),
            Kind::Count(SINGLE_WORKER),
            "Workers. This stage keeps order and runs exactly one.",
        )
        .example("1")
    } else {
        Key::new(format!("{table}.concurrency"), Kind::Count(STAGE_CONCURRENCY), "Workers running this stage at once.")
            .example((workers * 2).to_string())
    };
    let concurrency = concurrency.implied(match workers {
        8 => "8",
        4 => "4",
        _ => "1",
    });
    let capacity =
        Key::new(format!("{table}.capacity"), Kind::Count(STAGE_CAPACITY), "Capacity of the stage's input channel.")
            .implied("256")
            .example("512");
    let capacity = if stage.has_input() {
        capacity
    } else {
        capacity.refused(
            "the change feed reads Drive and has no input channel; what it emits waits in [stages.dedup] capacity",
        )
    };
    let part_concurrency = Key::new(
        format!("{table}.part_concurrency"),
        Kind::Count(PART_CONCURRENCY),
        "Multipart parts uploaded in parallel per file (read by the uploader only).",
    )
    .implied("4")
    .example("8");
    vec![concurrency, capacity, part_concurrency]
}

/// Every key, table by table in the order of [`tables`].
pub fn all() -> Vec<Key> {
    let mut keys = source_keys();
    keys.extend(export_keys());
    keys.extend(webhook_keys());
    keys.extend(destination_keys());
    keys.extend(state_keys());
    for stage in StageName::ALL {
        keys.extend(stage_keys(stage));
    }
    keys.extend(pipeline_keys());
    keys.extend(retry_keys());
    keys.extend(other_keys());
    keys.extend(cluster_keys());
    keys.extend(testing_keys());
    keys
}

fn source_keys() -> Vec<Key> {
    vec![
        Key::new(
            "source.credentials",
            Kind::Path,
            "The credentials that read Drive, told apart by their content: a service-account key JSON; a \
             person's own `authorized_user` file (`client_id`, `client_secret`, `refresh_token`, as `gcloud auth \
             application-default login --client-id-file=…` writes it); or a \"Desktop app\" OAuth client file \
             (`installed`) signed in with `mirrorflow auth login` (then `token_cache` is required). The file's \
             `token_uri` is honoured. A token Drive refuses before it expires is renewed once and the call \
             retried; a refresh token the endpoint refuses ends the run with exit 1 saying to sign in again. \
             See [Mirror your own Drive](../README.md#mirror-your-own-drive).",
        )
        .required()
        .example("\"service-account.json\""),
        Key::new("source.token_cache", Kind::Path, "Where `mirrorflow auth login` saves the sign-in of an OAuth client (mode 0600); required with an OAuth client file as `credentials`.")
            .absent("no cache: the credentials are a key or an `authorized_user` file")
            .example("\"token.json\""),
        Key::new("source.scope", Kind::Choice(vec!["drive.readonly", "drive"]), "The OAuth scope asked for.")
            .default("\"drive.readonly\"")
            .example("\"drive\""),
        Key::new("source.subject", Kind::Text, "Email to impersonate with domain-wide delegation (service accounts).")
            .absent("no impersonation")
            .example("\"someone@example.com\""),
        Key::new(
            "source.subjects",
            Kind::TextOrTexts,
            "Mirror several users of a Google Workspace domain with a service account granted domain-wide \
             delegation: their emails, or `\"domain\"` for every active user the Admin SDK Directory lists \
             (as the administrator `subject`; suspended users are skipped; listed again at each start and every \
             `directory_interval`). Each user's My Drive goes under `users/<email>/my-drive/` (and with \
             `shared_with_me`, `users/<email>/shared-with-me/`); every shared drive of `drives` once under \
             `shared-drives/<name>/`, read through one of its members. A user gone from the directory is left in \
             place. See [Many users of a domain](../README.md#many-users-of-a-domain).",
        )
        .absent("one account: the credentials' own (or `subject`'s)")
        .example("[\"alice@example.com\", \"bob@example.com\"]"),
        Key::new(
            "source.directory_interval",
            Kind::Time(DIRECTORY_INTERVAL),
            "With `subjects = \"domain\"`: how often continuous mode lists the domain's users again (a new user's \
             Drive is then mirrored).",
        )
        .default("\"1h\"")
        .example("\"15min\""),
        Key::new(
            "source.drives_in_parallel",
            Kind::Count(DRIVES_IN_PARALLEL),
            "With `subjects`: how many drives (a user's My Drive, a shared drive) are mirrored at once, each \
             with its own pipeline and state; the others wait their turn. Memory grows with it.",
        )
        .unit("drives")
        .default("8")
        .example("16"),
        Key::new(
            "source.drives",
            Kind::Texts,
            "The drives mirrored: `\"my-drive\"`, shared drive ids, or `\"all\"` (My Drive and every shared drive). \
             See [Shared drives](../README.md#shared-drives-what-each-drive-level-change-does).",
        )
        .default("[\"my-drive\"]")
        .example("[\"all\"]"),
        Key::new(
            "source.folders",
            Kind::Texts,
            "Folder ids (the part after `/folders/` in a folder's URL): only their subtrees are mirrored, at the \
             keys a full mirror gives them. See [Choosing what to mirror](../README.md#choosing-what-to-mirror).",
        )
        .default("[]")
        .example("[\"1AbCdEfGhIjKlMnOpQrStUvWxYz\"]"),
        Key::new(
            "source.include",
            Kind::Texts,
            "Glob patterns on the Drive path relative to the drive's root (`*` within one folder, `**` across \
             folders): when set, only matching files are mirrored.",
        )
        .default("[]")
        .example("[\"**/*.pdf\"]"),
        Key::new("source.exclude", Kind::Texts, "Glob patterns on the Drive path: matching files are not mirrored.")
            .default("[]")
            .example("[\"**/node_modules/**\"]"),
        Key::new("source.mime_types", Kind::Texts, "Drive mime types (`application/pdf`, `image/*`): when set, only those are mirrored.")
            .default("[]")
            .example("[\"application/pdf\", \"image/*\"]"),
        Key::new(
            "source.shortcuts",
            Kind::Choice(vec!["link", "skip", "follow"]),
            "What a shortcut becomes: `link`, a `<name>.url` object opening its target; `skip`, nothing; `follow`, \
             a shortcut to a file holds that file's bytes (a shortcut to a folder stays a link). See \
             [Layout](../README.md#layout-in-the-destination).",
        )
        .default("\"link\"")
        .example("\"follow\""),
        Key::new(
            "source.shared_with_me",
            Kind::Bool,
            "Also mirror what other people shared with you outside your My Drive, under `shared-with-me/`.",
        )
        .default("false")
        .example("true"),
        Key::new("source.api_base_url", Kind::Url, "Drive API root; an http(s) URL ending with `/` (the bundled emulator serves the same API under its own address).")
            .default("\"https://www.googleapis.com/\"")
            .example("\"http://127.0.0.1:8700/\""),
        Key::new("source.docs_base_url", Kind::Url, "Replaces `https://docs.google.com/` in export links; an http(s) URL ending with `/`.")
            .default("\"https://docs.google.com/\"")
            .example("\"http://127.0.0.1:8700/\""),
        Key::new("source.poll_interval", Kind::Time(POLL_INTERVAL), "How often continuous mode (`mirrorflow run` without `--once`) asks Drive for changes.")
            .default("\"30s\"")
            .example("\"5min\""),
        Key::new("source.acknowledge_abuse", Kind::Bool, "Download files Drive flags as abusive anyway.")
            .default("false")
            .example("true"),
        Key::new("source.max_file_size", Kind::Bytes(MAX_FILE_SIZE), "Files larger than this are dead-lettered instead of mirrored.")
            .absent("no limit")
            .example("\"50GiB\""),
        Key::new("source.page_size", Kind::Count(PAGE_SIZE), "Items per `files.list` / `changes.list` page.")
            .unit("items")
            .default("1000")
            .example("500"),
        Key::new(
            "source.timeout",
            Kind::Time(SOURCE_TIMEOUT),
            "The longest wait for one Drive request (token endpoint included) to answer, and for a download to \
             make progress; a request that times out is retried, at most 3 times, so a Drive that never answers \
             ends the run with exit 1 within about 3 minutes and a message naming `source.timeout`.",
        )
        .default("\"60s\"")
        .example("\"2min\""),
    ]
}

fn export_keys() -> Vec<Key> {
    let mut keys: Vec<Key> = crate::drive::export::EXPORTABLE
        .iter()
        .map(|kind| {
            let mut names: Vec<&'static str> = Vec::new();
            for f in kind.formats {
                names.push(f.ext);
                names.extend(f.aliases.iter().copied());
            }
            let partial: Vec<String> =
                kind.formats.iter().filter_map(|f| f.partial.map(|what| format!("`{}` ({what})", f.ext))).collect();
            let mut doc = format!("The format a Google {} is exported to.", kind.config_key);
            if !partial.is_empty() {
                doc.push_str(&format!(" Partial formats, which need `allow_partial = true`: {}.", partial.join(", ")));
            }
            let example = kind
                .formats
                .iter()
                .find(|f| f.ext != kind.default_ext && f.partial.is_none())
                .map_or(kind.default_ext, |f| f.ext);
            Key::new(format!("source.export.{}", kind.config_key), Kind::Choice(names), doc)
                .default(export_default(kind.config_key))
                .example(format!("{example:?}"))
        })
        .collect();
    keys.push(
        Key::new(
            "source.export.allow_partial",
            Kind::Bool,
            "Accept formats that hold only part of a file (CSV/TSV of a Sheet: its first sheet; a Slides image: \
             its first slide). Off, so nobody loses the rest of a file without having asked for it.",
        )
        .default("false")
        .example("true"),
    );
    keys
}

/// The default of a `[source.export]` kind as a TOML string (the defaults are `ExportConfig::default`).
fn export_default(config_key: &str) -> &'static str {
    match config_key {
        "document" => "\"docx\"",
        "spreadsheet" => "\"xlsx\"",
        "presentation" => "\"pptx\"",
        "drawing" => "\"pdf\"",
        _ => "\"json\"",
    }
}

fn webhook_keys() -> Vec<Key> {
    vec![
        Key::new("source.webhook.listen", Kind::Address, "Local address the notifications are served on.")
            .required()
            .example("\"0.0.0.0:8080\""),
        Key::new(
            "source.webhook.public_url",
            Kind::Url,
            "The HTTPS URL Drive posts to, which must reach `listen`. Google delivers only to HTTPS on a domain \
             verified for the project; plain `http` is accepted only to a loopback host (the bundled emulator).",
        )
        .required()
        .example("\"https://mirror.example.com/drive-hook\""),
        Key::new(
            "source.webhook.channel_ttl",
            Kind::Time(CHANNEL_TTL),
            "Lifetime asked for each notification channel before it is renewed; longer than a week is clamped to \
             a week, Drive's maximum.",
        )
        .default("\"1day\"")
        .example("\"6h\""),
    ]
}

fn destination_keys() -> Vec<Key> {
    vec![
        Key::new(
            "destination.url",
            Kind::Url,
            "Where the mirror goes: `s3://bucket/prefix`, `file:///absolute/path`, `gs://bucket/prefix`, \
             `az://container/prefix`.",
        )
        .required()
        .example("\"s3://my-bucket/drive\""),
        Key::new(
            "destination.endpoint",
            Kind::Url,
            "An S3-compatible endpoint (http allowed): MinIO, Supabase (`https://<ref>.storage.supabase.co/storage/v1/s3`), …",
        )
        .absent("AWS S3 (or the store the URL names)")
        .example("\"http://127.0.0.1:9000\""),
        Key::new("destination.region", Kind::Text, "The bucket's region.").absent("the SDK's default").example("\"us-east-1\""),
        Key::new("destination.access_key_id", Kind::Text, "S3 access key.")
            .absent("`AWS_ACCESS_KEY_ID` and the usual AWS sources")
            .example("\"AKIAIOSFODNN7EXAMPLE\""),
        Key::new("destination.secret_access_key", Kind::Secret, "S3 secret key (never printed).")
            .absent("`AWS_SECRET_ACCESS_KEY` and the usual AWS sources")
            .example("\"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\""),
        Key::new(
            "destination.keys",
            Kind::Choice(vec!["utf8", "supabase", "local"]),
            "How Drive names become keys: `utf8` (S3, GCS, Azure), `supabase` (Supabase Storage's restricted \
             alphabet), `local` (a local folder). See [Layout](../README.md#layout-in-the-destination).",
        )
        .absent("`supabase` with a Supabase endpoint, `local` with a `file://` URL, `utf8` otherwise")
        .example("\"supabase\""),
        Key::new(
            "destination.deletes",
            Kind::Choice(vec!["trash", "delete", "keep"]),
            "What a Drive delete does: `trash` moves the object under `<prefix>/.trash/`, `delete` removes it, \
             `keep` leaves it.",
        )
        .default("\"trash\"")
        .example("\"delete\""),
        Key::new(
            "destination.versions",
            Kind::Count(VERSIONS),
            "Earlier contents kept per key: before a file's object is replaced by other content or removed, its \
             content is copied under `<prefix>/.versions/<key>/<modifiedTime>-<version>`, at most this many per \
             key, the oldest pruned (0: none). See [Versions](../README.md#versions).",
        )
        .unit("versions per key")
        .default("0")
        .example("5"),
        Key::new(
            "destination.timeout",
            Kind::Time(DESTINATION_TIMEOUT),
            "The longest wait for one destination request, a part upload's body included; a request that times \
             out is retried, so a store that never answers ends the run with exit 1 within about 5 minutes and a \
             message naming `destination.timeout`.",
        )
        .default("\"120s\"")
        .example("\"5min\""),
        Key::new(
            "destination.max_file_size",
            Kind::Bytes(MAX_FILE_SIZE),
            "Largest file the store takes (a Supabase project's or bucket's file size limit): a larger file is \
             dead-lettered as `destination_too_large` before it is downloaded.",
        )
        .absent("no limit")
        .example("\"50MiB\""),
        Key::new(
            "destination.max_key_bytes",
            Kind::Count(KEY_BYTES),
            "Longest whole key written; a longer one is shortened stably. See \
             [Layout](../README.md#layout-in-the-destination).",
        )
        .unit("bytes")
        .absent("1024 (S3's limit); 900 with `keys = \"supabase\"`")
        .example("900"),
    ]
}

fn state_keys() -> Vec<Key> {
    vec![
        Key::new(
            "state.dir",
            Kind::Path,
            "The state store's folder, relative to the config file's folder. Give each pipeline its own: a state \
             records the destination it describes, and a run whose config names another stops with exit 2.",
        )
        .default("\".mirrorflow\"")
        .example("\"/var/lib/mirrorflow/work\""),
        Key::new(
            "state.audit_retention",
            Kind::Time(AUDIT_RETENTION),
            "How long the audit log (`mirrorflow log`) keeps an entry; older ones are removed as the mirror runs, \
             so the log does not grow with the mirror's age.",
        )
        .default("\"30days\"")
        .example("\"90days\""),
        Key::new(
            "state.memory",
            Kind::Bytes(STATE_MEMORY),
            "The state store's memory, fjall's memtables and block cache together, whatever the number of files. \
             More makes first syncs of millions of files commit faster.",
        )
        .default("\"64MiB\"")
        .example("\"256MiB\""),
    ]
}

fn pipeline_keys() -> Vec<Key> {
    vec![
        Key::new("pipeline.chunk_size", Kind::Bytes(CHUNK_SIZE), "Size of a streamed chunk.")
            .max_key("pipeline.part_size")
            .default("\"1MiB\"")
            .example("\"2MiB\""),
        Key::new(
            "pipeline.chunk_depth",
            Kind::Count(CHUNK_DEPTH),
            "Chunks buffered between one download and its upload.",
        )
        .unit("chunks")
        .default("4")
        .example("8"),
        Key::new(
            "pipeline.part_size",
            Kind::Bytes(PART_SIZE),
            "Multipart part size; smaller files go in one PUT. Uploader `concurrency × part_concurrency × \
             part_size` must stay within 16GiB. A file that would need more than S3's 10,000 parts gets the \
             smallest whole-MiB part size that fits.",
        )
        .default("\"8MiB\"")
        .example("\"16MiB\""),
        Key::new(
            "pipeline.memory_budget",
            Kind::Bytes(MEMORY_BUDGET),
            "The most bytes all uploads together hold in part buffers (parts being filled and in flight); uploads \
             take turns within it (`mirrorflow_part_memory_bytes` shows the use).",
        )
        .min_key("pipeline.part_size")
        .default("\"256MiB\"")
        .example("\"512MiB\""),
        Key::new(
            "pipeline.sha256",
            Kind::Bool,
            "Compute sha256 on the stream beside md5 and check it against Drive's `sha256Checksum`. `false` keeps \
             md5 only, about twice as fast per large file on a CPU without SHA extensions.",
        )
        .default("true")
        .example("false"),
    ]
}

fn retry_keys() -> Vec<Key> {
    vec![
        Key::new("retry.max_attempts", Kind::Count(RETRY_ATTEMPTS), "Attempts per call, the first included.")
            .unit("attempts")
            .default("6")
            .example("10"),
        Key::new("retry.base_delay", Kind::Time(BASE_DELAY), "First backoff; it doubles per attempt.")
            .default("\"200ms\"")
            .example("\"500ms\""),
        Key::new(
            "retry.max_delay",
            Kind::Time(MAX_DELAY),
            "Backoff cap. A server's `Retry-After` is honoured even beyond it, up to 5 minutes.",
        )
        .min_key("retry.base_delay")
        .default("\"30s\"")
        .example("\"1min\""),
        Key::new(
            "retry.breaker_threshold",
            Kind::Count(BREAKER_THRESHOLD),
            "Consecutive retryable failures of one remote that open its circuit breaker.",
        )
        .unit("failures")
        .default("5")
        .example("10"),
        Key::new(
            "retry.breaker_cooldown",
            Kind::Time(BREAKER_COOLDOWN),
            "How long an open breaker holds calls before it lets one probe through (success closes it, failure \
             re-opens it).",
        )
        .default("\"30s\"")
        .example("\"1min\""),
    ]
}

fn other_keys() -> Vec<Key> {
    vec![
        Key::new(
            "rate_limit.drive_rps",
            Kind::Rate(DRIVE_RPS),
            "Drive requests per second (Google allows about 200 per user).",
        )
        .unit("requests per second")
        .default("150.0")
        .example("50.0"),
        Key::new(
            "rate_limit.user_rps",
            Kind::Rate(DRIVE_RPS),
            "With `[source] subjects`: each user's own Drive requests per second, within `drive_rps` (Google's \
             quota is per user, so users proceed side by side instead of taking turns).",
        )
        .unit("requests per second")
        .absent("no limit per user beyond `drive_rps`")
        .example("20.0"),
        Key::new(
            "metrics.listen",
            Kind::Address,
            "Address of the Prometheus exporter. See [Metrics](../README.md#metrics).",
        )
        .absent("no exporter")
        .example("\"127.0.0.1:9898\""),
        Key::new(
            "supervisor.max_restarts",
            Kind::Count(SUPERVISOR_RESTARTS),
            "Restarts allowed within `within` before the pipeline gives up.",
        )
        .unit("restarts")
        .default("10")
        .example("20"),
        Key::new("supervisor.within", Kind::Time(SUPERVISOR_WITHIN), "The window `max_restarts` counts in.")
            .default("\"60s\"")
            .example("\"5min\""),
        Key::new(
            "verify.every",
            Kind::Time(VERIFY_EVERY),
            "How often a running pipeline compares the mirror with Drive and repairs it; each run waits until the \
             pipeline is idle. See [Verify the mirror](../README.md#verify-the-mirror).",
        )
        .absent("no scheduled verify")
        .example("\"1day\""),
        Key::new("verify.checksum", Kind::Bool, "Read and hash every object, as `verify --checksum` does.")
            .default("false")
            .example("true"),
        Key::new(
            "index.url",
            Kind::Secret,
            "`postgresql://user:password@host:port/db?sslmode=…`. Never logged (the password is in it).",
        )
        .absent("`MIRRORFLOW_INDEX_URL`; no index when neither is set")
        .example("\"postgresql://postgres:secret@db.example.supabase.co:5432/postgres?sslmode=require\""),
        Key::new(
            "index.schema",
            Kind::Text,
            "Schema holding mirrorflow's tables (created and migrated by mirrorflow): a plain PostgreSQL name \
             (lowercase letters, digits, `_`; at most 63).",
        )
        .default("\"mirrorflow\"")
        .example("\"drive_mirror\""),
        Key::new(
            "index.catch_up_timeout",
            Kind::Time(CATCH_UP_TIMEOUT),
            "How long `run --once` waits, once the mirror is done, for the index to catch up before it exits 1 \
             saying the index is behind.",
        )
        .default("\"60s\"")
        .example("\"5min\""),
    ]
}

fn cluster_keys() -> Vec<Key> {
    vec![
        Key::new(
            "cluster.shard",
            Kind::Text,
            "This process's shard as `\"i/n\"`: shard `i` (0-based, below `n`) of `n`. The variable \
             `MIRRORFLOW_SHARD` overrides it. With `shards` also set, `n` must equal it.",
        )
        .absent("`MIRRORFLOW_SHARD`; else `shards` with the host name's ordinal; else `0/1` (one process)")
        .example("\"1/3\""),
        Key::new(
            "cluster.shards",
            Kind::Count(SHARDS),
            "How many shards the cluster has. Alone (no `shard`, no `MIRRORFLOW_SHARD`), this process's index is \
             its host name's trailing `-<digits>` (`HOSTNAME`, else the system's name): a StatefulSet's pod \
             `mirrorflow-2` is shard 2. Keep it equal to the StatefulSet's `replicas`.",
        )
        .unit("shards")
        .absent("the `n` of `shard`; one shard when neither is set")
        .example("3"),
    ]
}

fn testing_keys() -> Vec<Key> {
    let stages: Vec<&'static str> = StageName::ALL.iter().map(|s| s.as_str()).collect();
    vec![
        Key::new("testing.fail_stage", Kind::Choice(stages), "Stage to fail on purpose.")
            .absent("no failure injected")
            .example("\"downloader\""),
        Key::new("testing.fail_after", Kind::Count(AT_LEAST_ONE), "Fail when processing this many-th item (1-based).")
            .unit("items")
            .default("3")
            .example("5"),
        Key::new("testing.fail_mode", Kind::Choice(vec!["panic", "error"]), "How the stage fails.")
            .default("\"panic\"")
            .example("\"error\""),
        Key::new("testing.fail_times", Kind::Count(Limits::at_least(0)), "How many times to fail in all.")
            .unit("failures")
            .default("1")
            .example("2"),
        Key::new(
            "testing.crash_after_writes",
            Kind::Count(AT_LEAST_ONE),
            "Abort the process (like `kill -9`) right after this many destination writes, so crash tests kill at \
             an exact amount of work.",
        )
        .unit("writes")
        .absent("never")
        .example("10"),
        Key::new(
            "testing.multipart_copy_above",
            Kind::Bytes(COPY_ABOVE),
            "S3 copies (moves, trash, versions, dedup) of objects larger than this go multipart (`UploadPartCopy`).",
        )
        .absent("5GiB, `CopyObject`'s limit")
        .example("\"6MiB\""),
        Key::new(
            "testing.multipart_copy_part_size",
            Kind::Bytes(COPY_PART_SIZE),
            "Part size of those multipart copies.",
        )
        .absent("512MiB")
        .example("\"5MiB\""),
    ]
}

impl Key {
    /// The accepted range in words (`100ms – 1day`, `at least 1`, `5MiB – 16GiB, and at least
    /// pipeline.part_size`), as `validate`'s messages write the bounds; `None` for a key without one.
    pub fn range_text(&self) -> Option<String> {
        fn span<T: super::Bound>(l: &Limits<T>, bytes: bool) -> String {
            match l.max {
                Some(max) if max == l.min => format!("exactly {}", l.min.show(bytes)),
                Some(max) => format!("{} – {}", l.min.show(bytes), max.show(bytes)),
                None => format!("at least {}", l.min.show(bytes)),
            }
        }
        let mut text = match &self.kind {
            Kind::Count(l) => span(l, false),
            Kind::Bytes(l) => span(l, true),
            Kind::Time(l) => span(l, false),
            Kind::Rate(l) => match l.max {
                Some(max) => format!("{} – {max} (a decimal number; `inf` and `nan` are refused)", l.min),
                None => format!("at least {}", l.min),
            },
            _ => return None,
        };
        if let Some(k) = self.min_key {
            text.push_str(&format!(", and at least `{k}`"));
        }
        if let Some(k) = self.max_key {
            text.push_str(&format!(", and at most `{k}`"));
        }
        Some(text)
    }

    /// The meaning of the key's absence: its default, or what leaving it out does.
    pub fn default_text(&self) -> String {
        if let Some(why) = self.refused {
            return format!("refused: {why}");
        }
        match (self.default.or(self.implied), self.absent, self.required) {
            (_, _, true) => "required".into(),
            (Some(d), _, _) => format!("`{d}`"),
            (None, Some(a), _) => format!("none: {a}"),
            (None, None, _) => "none".into(),
        }
    }

    /// The key's name inside its table.
    pub fn name(&self) -> &str {
        self.split().1
    }

    /// The key's table.
    pub fn table(&self) -> &str {
        self.split().0
    }
}

#[cfg(test)]
mod tests {
    //! The registry against the parser and `validate`: no key undocumented, no documented key refused,
    //! every written default the parser's own, and the schema's ranges exactly `validate`'s.

    use super::*;
    use crate::config::Config;
    use proptest::prelude::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    /// A TOML document from (dotted key, TOML value) pairs; later pairs replace earlier ones.
    fn document(pairs: &[(String, String)]) -> String {
        let mut root = toml::Table::new();
        for (key, literal) in pairs {
            let value: toml::Table = toml::from_str(&format!("v = {literal}")).expect("a TOML value");
            let mut parts: Vec<&str> = key.split('.').collect();
            let last = parts.pop().expect("a key");
            let mut table = &mut root;
            for part in parts {
                table = table
                    .entry(part.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .expect("a table");
            }
            table.insert(last.to_string(), value["v"].clone());
        }
        toml::to_string(&root).expect("serializable")
    }

    /// What every test file sets: the required keys, and those a key's own table requires.
    fn base(for_key: &str) -> Vec<(String, String)> {
        let mut pairs = vec![
            ("source.credentials".to_string(), "\"service-account.json\"".to_string()),
            ("destination.url".to_string(), "\"file:///tmp/mirrorflow-config-test\"".to_string()),
        ];
        if for_key == "cluster.shards" {
            // Not the host name's ordinal: the machine running the tests has none.
            pairs.push(("cluster.shard".to_string(), "\"1/3\"".to_string()));
        }
        if for_key.starts_with("source.webhook.") {
            for k in webhook_keys().into_iter().filter(|k| k.required) {
                pairs.push((k.path.clone(), k.example.clone()));
            }
        }
        pairs
    }

    /// The fields the parser accepts in `table`, as its error for an unknown key lists them.
    fn parser_fields(table: &str) -> BTreeSet<String> {
        let probe = if table.is_empty() { "zz_probe".to_string() } else { format!("{table}.zz_probe") };
        let mut pairs = base(&probe);
        pairs.push((probe, "1".into()));
        let err = Config::parse(&document(&pairs)).expect_err("an unknown key is refused");
        let expected = err.split("expected").nth(1).unwrap_or_else(|| panic!("no field list in {err}"));
        expected.split('`').skip(1).step_by(2).map(str::to_string).collect()
    }

    /// The keys and tables the schema lists in `table`.
    fn schema_fields(schema: &Value, table: &str) -> BTreeSet<String> {
        let mut node = schema;
        for part in table.split('.').filter(|p| !p.is_empty()) {
            node = &node["properties"][part];
        }
        node["properties"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    #[test]
    fn every_key_the_parser_accepts_is_in_the_schema_and_the_reference_and_no_other() {
        let schema = crate::config::schema::schema();
        let reference = crate::config::reference::markdown();
        let mut tables: Vec<&str> = vec![""];
        tables.extend(tables_paths());
        for table in tables {
            assert_eq!(schema_fields(&schema, table), parser_fields(table), "keys of [{table}]: schema vs parser");
        }
        for key in all() {
            assert!(reference.contains(&format!("### `{}`", key.path)), "{} is not in the reference", key.path);
        }
    }

    fn tables_paths() -> Vec<&'static str> {
        super::tables().into_iter().map(|t| t.path).collect()
    }

    #[test]
    fn every_documented_key_parses_and_validates_with_its_example() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("service-account.json"), r#"{"type": "service_account"}"#).expect("key");
        for key in all() {
            assert!(!key.example.is_empty(), "{} has no example", key.path);
            let mut pairs = base(&key.path);
            pairs.push((key.path.clone(), key.example.clone()));
            let path = dir.path().join("pipeline.toml");
            std::fs::write(&path, document(&pairs)).expect("write");
            let loaded = Config::load(&path);
            match key.refused {
                None => assert!(
                    loaded.is_ok(),
                    "{} = {}: {}",
                    key.path,
                    key.example,
                    loaded.err().map(|e| e.to_string()).unwrap_or_default()
                ),
                Some(_) => {
                    let err = loaded.err().map(|e| e.to_string()).unwrap_or_default();
                    assert!(err.contains(&key.path), "{} is documented as refused but validate took it", key.path);
                }
            }
        }
    }

    #[test]
    fn every_documented_default_is_the_parsers_default() {
        let mut checked = 0;
        for key in all() {
            let Some(default) = key.default else { continue };
            let absent = Config::parse(&document(&base(&key.path))).expect("base parses");
            let mut pairs = base(&key.path);
            pairs.push((key.path.clone(), default.to_string()));
            let explicit = Config::parse(&document(&pairs)).unwrap_or_else(|e| panic!("{}: {e}", key.path));
            assert_eq!(format!("{absent:?}"), format!("{explicit:?}"), "{} = {default} is not its default", key.path);
            checked += 1;
        }
        assert!(checked > 40, "only {checked} defaults checked");
        // A stage's keys are optional (so its settings never fall back to another stage's): the value
        // applied in their absence is what the resolved settings hold.
        let settings = |c: &Config| format!("{:?}", StageName::ALL.map(|s| c.stages.settings(s)));
        for key in all().into_iter().filter(|k| k.refused.is_none()) {
            let Some(implied) = key.implied else { continue };
            let absent = Config::parse(&document(&base(&key.path))).expect("base parses");
            let mut pairs = base(&key.path);
            pairs.push((key.path.clone(), implied.to_string()));
            let explicit = Config::parse(&document(&pairs)).unwrap_or_else(|e| panic!("{}: {e}", key.path));
            assert_eq!(
                settings(&absent),
                settings(&explicit),
                "{} = {implied} is not what its absence means",
                key.path
            );
        }
    }

    /// A key with a range, and how a drawn value is written and compared.
    #[derive(Debug, Clone)]
    struct Ranged {
        path: String,
        /// Bounds in the unit values are drawn in (ms for durations, bytes, counts; rates apart).
        min: f64,
        max: Option<f64>,
        kind: Kind,
        companions: Vec<(String, String)>,
    }

    /// Every ranged key, with the bounds read back from the schema (not from the registry).
    fn ranged() -> Vec<Ranged> {
        let schema = crate::config::schema::schema();
        let keys = all();
        let prop = |path: &str| {
            let mut node = &schema;
            for part in path.split('.') {
                node = &node["properties"][part];
            }
            node.clone()
        };
        let ms = |v: &Value| {
            humantime::parse_duration(v.as_str().expect("a duration")).expect("duration").as_millis() as f64
        };
        let mut out = Vec::new();
        for key in keys.iter().filter(|k| k.refused.is_none()) {
            let p = prop(&key.path);
            let (min, max) = match &key.kind {
                Kind::Count(_) | Kind::Rate(_) => (p["minimum"].as_f64(), p["maximum"].as_f64()),
                Kind::Bytes(_) => (p["anyOf"][0]["minimum"].as_f64(), p["anyOf"][0]["maximum"].as_f64()),
                Kind::Time(_) => (Some(ms(&p["x-minimum"])), p.get("x-maximum").map(ms)),
                _ => continue,
            };
            let mut companions = vec![
                ("stages.uploader.concurrency".to_string(), "1".to_string()),
                ("stages.uploader.part_concurrency".to_string(), "1".to_string()),
            ];
            // A bound that is another key's value: that key at its own extreme leaves the static bound
            // the one in force.
            for (other, low) in [(key.min_key, true), (key.max_key, false)] {
                let Some(other) = other else { continue };
                let o = keys.iter().find(|k| k.path == other).expect("bound key documented");
                let limit = match (&o.kind, low) {
                    (Kind::Time(l), true) => format!("\"{}ms\"", l.min.as_millis()),
                    (Kind::Time(l), false) => format!("\"{}ms\"", l.max.expect("max").as_millis()),
                    (Kind::Bytes(l), true) => l.min.to_string(),
                    (Kind::Bytes(l), false) => l.max.expect("max").to_string(),
                    _ => unreachable!("bounds between durations or byte sizes"),
                };
                companions.push((other.to_string(), limit));
            }
            let min = min.unwrap_or_else(|| panic!("{} has no minimum in the schema", key.path));
            out.push(Ranged { path: key.path.clone(), min, max, kind: key.kind.clone(), companions });
        }
        out
    }

    /// Whether `validate` accepts `literal` for the key: it parses, and no problem names the key.
    fn validate_accepts(r: &Ranged, literal: &str) -> bool {
        let mut pairs = base(&r.path);
        pairs.extend(r.companions.iter().filter(|(k, _)| *k != r.path).cloned());
        pairs.push((r.path.clone(), literal.to_string()));
        match Config::parse(&document(&pairs)) {
            Err(_) => false,
            Ok(c) => !c.problems().iter().any(|p| p.starts_with(&format!("{}:", r.path))),
        }
    }

    /// A value near an edge of the range (or anywhere in it), as a TOML literal and as a number.
    fn draw(r: &Ranged, edge: u8, step: i64, frac: f64) -> Option<(String, f64)> {
        if let Kind::Rate(_) = r.kind {
            let mut v = match (edge, r.max) {
                (0, _) | (_, None) => r.min,
                (1, Some(max)) => max,
                (_, Some(max)) => r.min + frac * (max - r.min),
            };
            for _ in 0..step.unsigned_abs() {
                v = if step > 0 { v.next_up() } else { v.next_down() };
            }
            return Some((format!("{v:?}"), v));
        }
        let (min, max) = (r.min as i128, r.max.map(|m| m as i128));
        let v = match (edge, max) {
            (0, _) => min + step as i128,
            (1, Some(max)) => max + step as i128,
            (1, None) => min + (frac * 1e12) as i128,
            (_, Some(max)) => min + (frac * (max - min) as f64) as i128,
            (_, None) => min + (frac * 1e6) as i128,
        };
        let v = i64::try_from(v).ok()?;
        let literal = match r.kind {
            Kind::Time(_) if v < 0 => return None,
            Kind::Time(_) => format!("\"{v}ms\""),
            _ => v.to_string(),
        };
        Some((literal, v as f64))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn the_schema_and_validate_accept_the_same_values_across_each_range(
            pick in any::<prop::sample::Index>(),
            edge in 0u8..3,
            step in -3i64..=3,
            frac in 0.0f64..1.0,
        ) {
            let keys = ranged();
            let r = &keys[pick.index(keys.len())];
            let Some((literal, value)) = draw(r, edge, step, frac) else { return Ok(()) };
            let schema_accepts = value >= r.min && r.max.is_none_or(|m| value <= m);
            prop_assert_eq!(schema_accepts, validate_accepts(r, &literal), "{} = {}", r.path, literal);
        }
    }

    #[test]
    fn every_key_with_a_range_is_drawn_at_both_edges_and_validate_refuses_beyond_them() {
        let keys = ranged();
        assert!(keys.len() >= 40, "{} ranged keys", keys.len());
        for r in &keys {
            for (edge, step, inside) in [(0, 0, true), (0, -1, false), (1, 0, true), (1, 1, false)] {
                if edge == 1 && r.max.is_none() {
                    continue;
                }
                let Some((literal, _)) = draw(r, edge, step, 0.0) else { continue };
                assert_eq!(validate_accepts(r, &literal), inside, "{} = {literal}", r.path);
            }
        }
    }
}
