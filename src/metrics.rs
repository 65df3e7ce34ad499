//! Every metric name in one place, with one small function per event so that call sites cannot
//! misspell a name or a label.

use metrics::{counter, gauge, histogram};
use std::time::Duration;

/// Events leaving a stage, by outcome.
pub const EVENTS_TOTAL: &str = "mirrorflow_events_total";
/// Counter `{kind, result}`: a unit of a domain (a user's drive, a shared drive) caught up (`ok`) or
/// failed (`failed`) in a round.
pub const UNIT_ROUNDS_TOTAL: &str = "mirrorflow_unit_rounds_total";
/// Time a stage spends on one item.
pub const STAGE_SECONDS: &str = "mirrorflow_stage_seconds";
/// Items waiting on a channel between two stages.
pub const QUEUE_DEPTH: &str = "mirrorflow_queue_depth";
/// Bytes moved, by direction (download, upload).
pub const BYTES_TOTAL: &str = "mirrorflow_bytes_total";
/// Retries, by remote and reason.
pub const RETRIES_TOTAL: &str = "mirrorflow_retries_total";
/// Stage restarts by the supervisor.
pub const RESTARTS_TOTAL: &str = "mirrorflow_restarts_total";
/// Events that ended without a write, by reason (`download_disabled`, `abusive`, `no_export`,
/// `quota_deferred`, `unchanged`…): what Drive would not hand over shows here, not only in logs.
pub const SKIPPED_TOTAL: &str = "mirrorflow_skipped_total";
/// Files in the dead-letter store.
pub const DLQ_FILES: &str = "mirrorflow_dlq_files";
/// Gauge: bytes of part buffers reserved under `[pipeline] memory_budget`.
pub const PART_MEMORY_BYTES: &str = "mirrorflow_part_memory_bytes";
/// Age of the oldest unfinished event when the checkpoint last moved.
pub const CHECKPOINT_LAG_SECONDS: &str = "mirrorflow_checkpoint_lag_seconds";
/// Drive API requests sent (before retries are counted separately).
pub const DRIVE_REQUESTS_TOTAL: &str = "mirrorflow_drive_requests_total";
/// Circuit breaker state per remote (`drive`, `destination`): 0 closed, 1 half-open, 2 open.
pub const CIRCUIT_STATE: &str = "mirrorflow_circuit_state";
/// Times a remote's circuit breaker opened.
pub const CIRCUIT_OPENINGS_TOTAL: &str = "mirrorflow_circuit_openings_total";

/// Push notifications refused for an unknown channel id or token (forged, or from a stopped channel).
pub const WEBHOOK_REJECTED_TOTAL: &str = "mirrorflow_webhook_rejected_total";

/// Scheduled verifies (`[verify] every`) that ran to the end.
pub const VERIFY_RUNS_TOTAL: &str = "mirrorflow_verify_runs_total";
/// Gauge: differences the last scheduled verify found, by kind (missing, mismatched, extra).
pub const VERIFY_DIFFERENCES: &str = "mirrorflow_verify_differences";

/// Gauge, always 1: this process's shard (`shard`, 0-based) of `count` (`[cluster]`), so a dashboard
/// can tell the shards of a cluster apart and count them.
pub const SHARD_INFO: &str = "mirrorflow_shard_info";

/// The process's Prometheus recorder, once installed.
static RECORDER: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();

/// Installs the Prometheus recorder once per process (every run records its metrics, so `top` can
/// show them without a listener); later calls return the same handle.
pub fn install_recorder() -> Result<&'static metrics_exporter_prometheus::PrometheusHandle, String> {
    if let Some(h) = RECORDER.get() {
        return Ok(h);
    }
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(STAGE_SECONDS.into()),
            &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0],
        )
        .map_err(|e| e.to_string())?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    let upkeep = handle.clone();
    // Histograms are drained by an upkeep (the exporter's own listener would run it).
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            upkeep.run_upkeep();
        }
    });
    Ok(RECORDER.get_or_init(|| handle))
}

/// The metrics of this process as Prometheus text, when the recorder is installed.
pub fn render() -> Option<String> {
    RECORDER.get().map(|h| h.render())
}

/// Installs the Prometheus recorder and serves it on `listen`, beside the probes a supervisor asks:
/// `/metrics` (Prometheus text), `/healthz` (alive: the pipeline supervisor runs) and `/readyz`
/// (ready: see [`crate::health`]); a failing probe answers 503 with the reason. Must be called
/// inside a Tokio runtime.
pub fn install_exporter(listen: std::net::SocketAddr) -> Result<(), String> {
    let socket = std::net::TcpListener::bind(listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| format!("cannot start metrics listener on {listen}: {e}"))?;
    let listener = tokio::net::TcpListener::from_std(socket)
        .map_err(|e| format!("cannot start metrics listener on {listen}: {e}"))?;
    let handle = install_recorder()?.clone();
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(move || std::future::ready(handle.render())))
        .route("/healthz", axum::routing::get(|| std::future::ready(probe(crate::health::liveness()))))
        .route("/readyz", axum::routing::get(|| std::future::ready(probe(crate::health::readiness()))));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}

/// A probe's answer: 200 "ok", or 503 with the reason.
fn probe(result: Result<(), String>) -> (http::StatusCode, String) {
    match result {
        Ok(()) => (http::StatusCode::OK, "ok\n".into()),
        Err(why) => (http::StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Exports the series dashboards and alerts read from the start of a run, at their current values
/// (Prometheus convention: a series that exists at zero, not one that appears with its first event),
/// so `increase()` sees the first restart and a dashboard shows 0 instead of "no data".
pub fn baseline(dead_letters: usize) {
    for stage in crate::model::StageName::ALL {
        counter!(RESTARTS_TOTAL, "stage" => stage.as_str()).increment(0);
    }
    dlq_files(dead_letters);
    checkpoint_lag(0.0);
}

/// This process runs as `shard`.
pub fn shard_info(shard: crate::cluster::Shard) {
    gauge!(SHARD_INFO, "shard" => shard.index().to_string(), "count" => shard.count().to_string()).set(1.0);
}

/// A stage finished an item with `outcome`.
pub fn event(stage: &'static str, outcome: &'static str) {
    counter!(EVENTS_TOTAL, "stage" => stage, "outcome" => outcome).increment(1);
}

/// The committer recorded an event skipped for `reason` ([`crate::model::SkipReason::label`]).
pub fn skipped(reason: &'static str) {
    counter!(SKIPPED_TOTAL, "reason" => reason).increment(1);
}

/// A stage spent `d` on an item.
pub fn stage_time(stage: &'static str, d: Duration) {
    histogram!(STAGE_SECONDS, "stage" => stage).record(d.as_secs_f64());
}

/// Current depth of a channel.
pub fn queue_depth(edge: &'static str, depth: usize) {
    gauge!(QUEUE_DEPTH, "edge" => edge).set(depth as f64);
}

/// Part buffers now hold `n` bytes of the memory budget.
pub fn part_memory(n: u64) {
    gauge!(PART_MEMORY_BYTES).set(n as f64);
}

/// Bytes moved.
pub fn bytes(direction: &'static str, n: u64) {
    counter!(BYTES_TOTAL, "direction" => direction).increment(n);
}

/// A call to `remote` is being retried because of `reason`.
pub fn retry(remote: &'static str, reason: &str) {
    counter!(RETRIES_TOTAL, "remote" => remote, "reason" => reason.to_string()).increment(1);
}

/// The supervisor restarted `stage`.
pub fn restart(stage: &'static str) {
    counter!(RESTARTS_TOTAL, "stage" => stage).increment(1);
}

/// The dead-letter store now holds `n` files.
pub fn dlq_files(n: usize) {
    gauge!(DLQ_FILES).set(n as f64);
}

/// Seconds between the oldest unfinished event and now.
pub fn checkpoint_lag(secs: f64) {
    gauge!(CHECKPOINT_LAG_SECONDS).set(secs);
}

/// A unit of a domain finished its turn of a round.
pub fn unit_round(kind: &'static str, ok: bool) {
    counter!(UNIT_ROUNDS_TOTAL, "kind" => kind, "result" => if ok { "ok" } else { "failed" }).increment(1);
}

/// A Drive request is about to be sent.
pub fn drive_request(remote: &'static str) {
    counter!(DRIVE_REQUESTS_TOTAL, "remote" => remote).increment(1);
}

/// The circuit breaker of `remote` is now in `state` (0 closed, 1 half-open, 2 open).
pub fn circuit_state(remote: &'static str, state: u8) {
    gauge!(CIRCUIT_STATE, "remote" => remote).set(f64::from(state));
}

/// The circuit breaker of `remote` opened.
pub fn circuit_opened(remote: &'static str) {
    counter!(CIRCUIT_OPENINGS_TOTAL, "remote" => remote).increment(1);
}

/// A scheduled verify ended with these differences.
pub fn verify_run(missing: u64, mismatched: u64, extra: u64) {
    counter!(VERIFY_RUNS_TOTAL).increment(1);
    for (kind, n) in [("missing", missing), ("mismatched", mismatched), ("extra", extra)] {
        gauge!(VERIFY_DIFFERENCES, "kind" => kind).set(n as f64);
    }
}

/// Counts a refused push notification.
pub fn webhook_rejected() {
    counter!(WEBHOOK_REJECTED_TOTAL).increment(1);
}

/// Gauge: audit entries the PostgreSQL index has not applied yet.
pub const INDEX_LAG_EVENTS: &str = "mirrorflow_index_lag_events";
/// Rows the index sink wrote or deleted in `file_hierarchy`.
pub const INDEX_ROWS_TOTAL: &str = "mirrorflow_index_rows_total";
/// Index sink attempts that failed (connection, migration or a batch); each is retried with backoff.
pub const INDEX_ERRORS_TOTAL: &str = "mirrorflow_index_errors_total";

/// The index is `lag` audit entries behind the store.
pub fn index_lag(lag: u64) {
    gauge!(INDEX_LAG_EVENTS).set(lag as f64);
}

/// The index sink applied a batch that wrote or deleted `rows` rows.
pub fn index_rows(rows: usize) {
    counter!(INDEX_ROWS_TOTAL).increment(rows as u64);
}

/// An index sink attempt failed.
pub fn index_error() {
    counter!(INDEX_ERRORS_TOTAL).increment(1);
}
