//! Every number and duration key of `pipeline.toml` filled with extreme values (0, 1, the type's
//! limits, negatives, 1e-30, 1e300, inf, NaN, durations of billions of years): `validate` exits 0 or 2,
//! never 101; a refusal names the key (and its line); and whatever it accepts builds the pieces a run
//! derives from those values (the Drive token bucket, the retry policy, the S3 client's backoff, the
//! circuit breakers, the stage channels, the memory budget, deadlines, the audit prune's cutoff)
//! without panicking.

use crate::support::text;
use mirrorflow::breaker::{Breaker, BreakerState};
use mirrorflow::config::{Config, ConfigError, StageName};
use mirrorflow::retry::{Classified, ErrorClass, TokenBucket};
use proptest::prelude::*;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Count,
    Bytes,
    Time,
    Rate,
}

/// Every number and duration key, as (table, key, kind); the stage keys are added per stage.
const KEYS: &[(&str, &str, Kind)] = &[
    ("source", "poll_interval", Kind::Time),
    ("source", "timeout", Kind::Time),
    ("source", "page_size", Kind::Count),
    ("source", "max_file_size", Kind::Bytes),
    ("source.webhook", "channel_ttl", Kind::Time),
    ("destination", "versions", Kind::Count),
    ("destination", "timeout", Kind::Time),
    ("destination", "max_file_size", Kind::Bytes),
    ("destination", "max_key_bytes", Kind::Count),
    ("state", "audit_retention", Kind::Time),
    ("pipeline", "chunk_size", Kind::Bytes),
    ("pipeline", "chunk_depth", Kind::Count),
    ("pipeline", "part_size", Kind::Bytes),
    ("pipeline", "memory_budget", Kind::Bytes),
    ("retry", "max_attempts", Kind::Count),
    ("retry", "base_delay", Kind::Time),
    ("retry", "max_delay", Kind::Time),
    ("retry", "breaker_threshold", Kind::Count),
    ("retry", "breaker_cooldown", Kind::Time),
    ("rate_limit", "drive_rps", Kind::Rate),
    ("supervisor", "max_restarts", Kind::Count),
    ("supervisor", "within", Kind::Time),
    ("index", "catch_up_timeout", Kind::Time),
    ("verify", "every", Kind::Time),
    ("testing", "fail_after", Kind::Count),
    ("testing", "fail_times", Kind::Count),
    ("testing", "crash_after_writes", Kind::Count),
];

const STAGE_KEYS: [(&str, Kind); 3] =
    [("concurrency", Kind::Count), ("capacity", Kind::Count), ("part_concurrency", Kind::Count)];

/// Tables in the order they are written (a table's keys before its sub-tables).
const TABLES: &[&str] = &[
    "source",
    "source.webhook",
    "destination",
    "state",
    "stages.change_feed",
    "stages.dedup",
    "stages.planner",
    "stages.downloader",
    "stages.uploader",
    "stages.verifier",
    "stages.committer",
    "pipeline",
    "retry",
    "rate_limit",
    "supervisor",
    "index",
    "verify",
    "testing",
];

const COUNTS: &[&str] = &[
    "0",
    "1",
    "2",
    "64",
    "1000",
    "1001",
    "1024",
    "1000000",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "-1",
    "-9223372036854775808",
    "1e300",
    "nan",
    "\"many\"",
];
const BYTES: &[&str] = &[
    "\"0B\"",
    "\"1KiB\"",
    "\"1MiB\"",
    "\"5MiB\"",
    "\"5GiB\"",
    "\"16GiB\"",
    "\"17GiB\"",
    "\"17179869184GiB\"",
    "\"-1MiB\"",
    "\"1e300\"",
];
const TIMES: &[&str] = &[
    "\"0s\"",
    "\"1ns\"",
    "\"1ms\"",
    "\"100ms\"",
    "\"1s\"",
    "\"1h\"",
    "\"24h\"",
    "\"367days\"",
    "\"100years\"",
    "\"500000000000years\"",
    "\"584942417355years\"",
    "\"-1s\"",
    "\"1e-30s\"",
    "\"NaN\"",
    "0",
    "1e300",
];
const RATES: &[&str] =
    &["0", "-1", "1e-30", "0.009", "0.01", "1", "150", "100000", "1000000", "1e300", "inf", "-inf", "nan", "\"fast\""];

fn values(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::Count => COUNTS.to_vec(),
        Kind::Bytes => [BYTES, COUNTS].concat(),
        Kind::Time => TIMES.to_vec(),
        Kind::Rate => RATES.to_vec(),
    }
}

/// Every (table, key, kind), stage keys included.
fn every_key() -> Vec<(String, &'static str, Kind)> {
    let mut keys: Vec<(String, &str, Kind)> = KEYS.iter().map(|(t, k, kind)| (t.to_string(), *k, *kind)).collect();
    for stage in StageName::ALL {
        for (k, kind) in STAGE_KEYS {
            keys.push((format!("stages.{stage}"), k, kind));
        }
    }
    keys
}

/// A valid config with `settings` ((table, key, value)) added; also the line each setting is on.
fn config_text(credentials: &Path, settings: &[(String, &str, String)]) -> (String, Vec<usize>) {
    let mut text = String::new();
    let mut lines = vec![0; settings.len()];
    for table in TABLES {
        text.push_str(&format!("[{table}]\n"));
        match *table {
            "source" => text.push_str(&format!("credentials = \"{}\"\n", credentials.display())),
            "source.webhook" => text.push_str("listen = \"127.0.0.1:0\"\npublic_url = \"https://example.com/hook\"\n"),
            "destination" => text.push_str("url = \"file:///tmp/mirrorflow-extremes\"\n"),
            _ => {}
        }
        for (i, (t, key, value)) in settings.iter().enumerate() {
            if t == table {
                text.push_str(&format!("{key} = {value}\n"));
                lines[i] = text.lines().count();
            }
        }
    }
    (text, lines)
}

/// Loads `text` as `validate` does; a refusal must name each setting it is about.
fn load(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path)
}

/// A refusal of one setting names its key, and the line it is on.
fn assert_names(err: &ConfigError, table: &str, key: &str, line: usize) {
    let full = format!("{table}.{key}");
    match err {
        ConfigError::Parse { message, .. } => {
            assert!(message.contains(key) && message.contains(&format!("line {line}")), "{full}: {message}");
        }
        ConfigError::Invalid { problems, .. } => {
            assert!(problems.iter().any(|p| p.contains(&full)), "{full} not named: {problems:#?}");
            for p in problems.iter().filter(|p| p.starts_with(&format!("{full}:"))) {
                assert!(p.ends_with(&format!("(line {line})")), "{p}");
            }
        }
        ConfigError::Read { .. } => panic!("{err}"),
    }
}

#[derive(Debug)]
struct Flaky;
impl Classified for Flaky {
    fn class(&self) -> ErrorClass {
        ErrorClass::Retryable
    }
    fn reason(&self) -> String {
        "flaky".into()
    }
}

/// The S3 client's backoff between retries (object_store 0.14, `client/backoff.rs`, `Backoff::next`)
/// with `init_backoff = base_delay`, `max_backoff = max_delay`, base 2, as `dest::build_s3` sets it:
/// each wait is drawn from `init..next × 2`, and an empty or non-finite range panics in `rand`.
fn assert_s3_backoff_is_drawable(base: Duration, max: Duration, retries: u32) {
    let (init, max) = (base.as_secs_f64(), max.as_secs_f64());
    let mut next = init;
    for attempt in 0..retries {
        let high = next * 2.0;
        assert!(init < high && high.is_finite(), "retry {attempt}: S3 backoff range {init}..{high} is empty");
        // Both ends of the draw, as the next state.
        for drawn in [init, high] {
            assert!(Duration::try_from_secs_f64(max.min(drawn)).is_ok());
        }
        next = max.min(high);
    }
}

/// Builds and drives what a run derives from the numbers of `cfg`, as `pipeline` and the clients do.
async fn exercise(cfg: &Config) {
    // The Drive client's token bucket: a burst, then waits (1 / rps each).
    let bucket = TokenBucket::per_second(cfg.rate_limit.drive_rps);
    let now = Instant::now();
    for _ in 0..3 {
        bucket.reserve(now);
    }
    // The Drive retry policy, every attempt's delay at both ends of the jitter.
    let policy = mirrorflow::pipeline::retry_policy(cfg);
    for failures in 1..=policy.max_attempts {
        policy.delay(failures, 0.0);
        policy.delay(failures, 1.0);
    }
    assert_s3_backoff_is_drawable(cfg.retry.base_delay.0, cfg.retry.max_delay.0, cfg.retry.max_attempts);
    // A breaker opened by `threshold` failures holds calls until now + cooldown.
    let breaker = Breaker::new("extremes", cfg.retry.breaker());
    for _ in 0..cfg.retry.breaker_threshold {
        let _ = breaker.call(|| async { Err::<(), _>(Flaky) }).await;
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    // Keys within the key limit, however deep.
    let max_key = cfg.destination.max_key_bytes();
    let deep = "d/".repeat(600);
    let key = mirrorflow::dest::keys::child_key(deep.trim_end_matches('/'), &"n".repeat(200), max_key);
    assert!(key.len() <= max_key, "{} bytes over {max_key}", key.len());
    // Channels sized by the stages' capacities (a zero capacity panics in tokio).
    for stage in StageName::ALL {
        let s = cfg.stages.settings(stage);
        let _ = tokio::sync::mpsc::channel::<()>(s.capacity);
        assert!(s.concurrency >= 1 && s.part_concurrency >= 1);
    }
    let _ = tokio::sync::mpsc::channel::<()>(mirrorflow::pipeline::in_flight_limit(cfg));
    let _ = tokio::sync::mpsc::channel::<()>(cfg.pipeline.chunk_depth);
    let _ = mirrorflow::stages::budget::MemoryBudget::new(cfg.pipeline.memory_budget.0);
    assert!(cfg.pipeline.chunk_size.0 >= 1 && cfg.pipeline.chunk_size.0 <= cfg.pipeline.part_size.0);
    // Every duration can be a deadline; the audit prune's cutoff is in u64 milliseconds.
    let ttl = cfg.source.webhook.as_ref().map(|w| mirrorflow::drive::webhook::clamp_ttl(w.channel_ttl.0));
    let durations = [
        Some(cfg.source.poll_interval.0),
        Some(cfg.source.timeout.0),
        ttl,
        Some(cfg.destination.timeout.0),
        Some(cfg.state.audit_retention.0),
        Some(cfg.retry.base_delay.0),
        Some(cfg.retry.max_delay.0),
        Some(cfg.retry.breaker_cooldown.0),
        Some(cfg.supervisor.within.0),
        Some(cfg.index.catch_up_timeout.0),
        cfg.verify.every.map(|e| e.0),
    ];
    for d in durations.into_iter().flatten() {
        assert!(tokio::time::Instant::now().checked_add(d).is_some(), "{d:?} is no deadline");
    }
    assert!(u64::try_from(cfg.state.audit_retention.0.as_millis()).is_ok());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

/// One key at a time, every extreme value: the real `validate` exits 0 or 2 (never 101), agrees
/// with the config loader, and names the key and its line when it refuses; what it accepts runs.
#[test]
fn each_key_at_each_extreme_is_accepted_and_runs_or_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("key.json");
    std::fs::write(&credentials, "{}").unwrap();
    let rt = runtime();
    let (mut accepted, mut refused) = (0, 0);
    for (table, key, kind) in every_key() {
        for value in values(kind) {
            let setting = vec![(table.clone(), key, value.to_string())];
            let (toml, lines) = config_text(&credentials, &setting);
            let loaded = load(dir.path(), &toml);
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirrorflow"))
                .args(["validate", dir.path().join("pipeline.toml").to_str().unwrap()])
                .env_remove("AWS_CA_BUNDLE")
                .output()
                .unwrap();
            let case = format!("[{table}] {key} = {value}\n{}", text(&out));
            match loaded {
                Ok(cfg) => {
                    assert_eq!(out.status.code(), Some(0), "{case}");
                    rt.block_on(exercise(&cfg));
                    accepted += 1;
                }
                Err(e) => {
                    assert_eq!(out.status.code(), Some(2), "{case}");
                    assert_names(&e, &table, key, lines[0]);
                    assert!(String::from_utf8_lossy(&out.stderr).contains(key), "{case}");
                    refused += 1;
                }
            }
        }
    }
    assert!(accepted > 100 && refused > 300, "{accepted} accepted, {refused} refused");
}

/// Every (table, key, value) that the loader accepts on its own: the mixes below combine them, so
/// they test how keys bound each other rather than being refused for one value alone.
fn accepted_alone() -> Vec<(String, &'static str, String)> {
    static ACCEPTED: std::sync::OnceLock<Vec<(String, &'static str, String)>> = std::sync::OnceLock::new();
    ACCEPTED
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let credentials = dir.path().join("key.json");
            std::fs::write(&credentials, "{}").unwrap();
            let mut accepted = Vec::new();
            for (table, key, kind) in every_key() {
                for value in values(kind) {
                    let setting = vec![(table.clone(), key, value.to_string())];
                    if load(dir.path(), &config_text(&credentials, &setting).0).is_ok() {
                        accepted.extend(setting);
                    }
                }
            }
            accepted
        })
        .clone()
}

fn any_setting() -> impl Strategy<Value = (String, &'static str, String)> {
    proptest::sample::select(accepted_alone())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// Several keys at values each accepted alone, together (a delay against its cap, a part size
    /// against the chunk size and the budget, workers × parts): the loader accepts or refuses naming
    /// keys, never panics, and what it accepts runs.
    #[test]
    fn any_mix_of_extremes_is_accepted_and_runs_or_refused_naming_keys(
        settings in proptest::collection::vec(any_setting(), 1..8)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("key.json");
        std::fs::write(&credentials, "{}").unwrap();
        let mut seen = std::collections::HashSet::new();
        let settings: Vec<_> = settings.into_iter().filter(|(t, k, _)| seen.insert((t.clone(), *k))).collect();
        let (text, _) = config_text(&credentials, &settings);
        match load(dir.path(), &text) {
            Ok(cfg) => runtime().block_on(exercise(&cfg)),
            Err(ConfigError::Parse { message, .. }) => prop_assert!(message.contains("line "), "{message}"),
            Err(ConfigError::Invalid { problems, .. }) => {
                for p in &problems {
                    let key = p.split(':').next().unwrap_or_default();
                    prop_assert!(
                        every_key().iter().any(|(t, k, _)| key == format!("{t}.{k}")),
                        "{p} does not start with a key of the file"
                    );
                }
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}
