//! Many users of a Google Workspace domain (`[source] subjects`): a service account with domain-wide
//! delegation reads each user's Drive as that user, and every shared drive once through one of its
//! members.
//!
//! The domain is cut into **units**: a user's own drive (My Drive, and with `shared_with_me` what others
//! shared with them) or one shared drive. Each unit is mirrored by the ordinary pipeline, under its own
//! prefix (`users/<email>/`, `shared-drives/<name>/`), with its own change log, checkpoint, low
//! watermark, breaker and state store (`[state] dir/units/<unit>`), so a user whose delegation is
//! revoked or whose account is suspended holds only their own unit. Units run `drives_in_parallel` at a
//! time, in rounds (each unit catches up, then the next waits its turn); memory is therefore set by
//! that number, not by the domain's size. A shard mirrors the units it owns ([`Ownership`]); a unit
//! that moves to another shard is released here (its state dropped, its objects left for the new
//! owner, which adopts them without downloading again).

pub mod units;

use crate::config::Config;
use crate::pipeline::{PipelineError, RunOptions, RunSummary};
use crate::retry::TokenBucket;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Instant;
pub use units::{Unit, UnitError};

/// Which units this process mirrors: all of them, or a shard's share.
pub trait Ownership: Send + Sync {
    /// Whether the unit with this shard key (a user's lower-cased email, `drive:<id>`) is ours.
    fn owns(&self, shard_key: &str) -> bool;
    /// How the shard is named in logs and status (`"0/1"` when not sharded).
    fn label(&self) -> String;
}

/// One process mirrors the whole domain.
pub struct Everything;

impl Ownership for Everything {
    fn owns(&self, _: &str) -> bool {
        true
    }
    fn label(&self) -> String {
        "0/1".into()
    }
}

impl Ownership for crate::cluster::Shard {
    fn owns(&self, shard_key: &str) -> bool {
        crate::cluster::Shard::owns(self, shard_key)
    }
    fn label(&self) -> String {
        self.to_string()
    }
}

/// How one unit's run ended.
#[derive(Debug)]
pub struct UnitResult {
    /// The unit.
    pub unit: Unit,
    /// Its pipeline's summary, or why it failed (the other units went on).
    pub outcome: Result<RunSummary, String>,
}

/// What a domain run did, unit by unit (of the last round).
#[derive(Debug, Default)]
pub struct DomainSummary {
    /// Each unit this process mirrored in the last round.
    pub units: Vec<UnitResult>,
    /// Units of the domain another shard owns.
    pub elsewhere: usize,
    /// A stop signal ended the run.
    pub interrupted: bool,
}

impl DomainSummary {
    /// Units whose run failed, with the reason.
    pub fn failures(&self) -> impl Iterator<Item = (&Unit, &str)> {
        self.units.iter().filter_map(|r| r.outcome.as_ref().err().map(|e| (&r.unit, e.as_str())))
    }

    /// Files in the dead-letter stores of the units, at the end.
    pub fn dead_letters(&self) -> usize {
        self.units.iter().filter_map(|r| r.outcome.as_ref().ok()).map(|s| s.dead_letters.len()).sum()
    }
}

/// Runs the domain: lists its units, mirrors this shard's share of them round after round (`--once`:
/// one round), and lists the directory again every `directory_interval`.
pub async fn run(cfg: &Config, opts: &RunOptions, shard: &dyn Ownership) -> Result<DomainSummary, PipelineError> {
    crate::install_crypto_provider();
    if let Err(e) = crate::metrics::install_recorder() {
        tracing::debug!(error = %e, "metrics recorder");
    }
    if let Some(listen) = &cfg.metrics.listen {
        let addr = listen.parse().map_err(|e| PipelineError::Metrics(format!("{listen}: {e}")))?;
        crate::metrics::install_exporter(addr).map_err(PipelineError::Metrics)?;
    }
    crate::health::domain_started();
    let limit = Arc::new(TokenBucket::per_second(cfg.rate_limit.drive_rps));
    let mut listed_at = Instant::now();
    let mut domain = units::discover(cfg).await?;
    let shutdown = crate::pipeline::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (mine, elsewhere): (Vec<Unit>, Vec<Unit>) =
            domain.iter().cloned().partition(|u| shard.owns(&u.shard_key()));
        units::release(cfg, &elsewhere);
        tracing::info!(shard = %shard.label(), units = mine.len(), elsewhere = elsewhere.len(), "round starts");
        let results = run_round(cfg, &mine, &limit).await;
        let interrupted = results.iter().any(|r| r.outcome.as_ref().is_ok_and(|s| s.interrupted));
        report_round(cfg, shard, &results);
        crate::health::domain_round_done(results.iter().all(|r| r.outcome.is_ok()));
        let summary = DomainSummary { units: results, elsewhere: elsewhere.len(), interrupted };
        if opts.once || interrupted {
            return Ok(summary);
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.source.poll_interval.0) => {}
            _ = &mut shutdown => return Ok(DomainSummary { interrupted: true, ..summary }),
        }
        // A failed unit may be a shared drive whose reader lost it: listing again picks another member.
        let failed = summary.failures().next().is_some();
        let directory_due = cfg.source.subjects.as_ref().is_some_and(|s| s.from_directory())
            && listed_at.elapsed() >= cfg.source.directory_interval.0;
        if failed || directory_due {
            match units::discover(cfg).await {
                Ok(d) => {
                    domain = d;
                    listed_at = Instant::now();
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the domain again; the units listed before go on"),
            }
        }
    }
}

/// One round: every unit caught up once, `drives_in_parallel` at a time.
async fn run_round(cfg: &Config, mine: &[Unit], limit: &Arc<TokenBucket>) -> Vec<UnitResult> {
    let parallel = cfg.source.drives_in_parallel.max(1);
    futures::stream::iter(mine.iter().cloned())
        .map(|unit| run_unit(cfg, unit, limit.clone()))
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// One unit caught up by the ordinary pipeline, with its own config (subject, drives, prefix, state).
async fn run_unit(cfg: &Config, unit: Unit, limit: Arc<TokenBucket>) -> UnitResult {
    let started = Instant::now();
    let outcome = match unit.config(cfg) {
        Ok(unit_cfg) => {
            let unit_opts = RunOptions { once: true, progress: false, shared_drive_limit: Some(limit) };
            crate::pipeline::run(&unit_cfg, unit_opts).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    match &outcome {
        Ok(s) => tracing::info!(
            unit = %unit.label(),
            written = s.progress.committed,
            removed = s.progress.removed,
            dead_letters = s.dead_letters.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "unit caught up"
        ),
        Err(e) => tracing::warn!(unit = %unit.label(), error = %e, "unit failed; the other units go on"),
    }
    crate::metrics::unit_round(unit.kind_label(), outcome.is_ok());
    UnitResult { unit, outcome }
}

/// `domain.json` in `[state] dir`: the last round's result of each unit, for `status` and operators.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DomainReport {
    /// This process's shard, `"i/n"`.
    pub shard: String,
    /// When the round ended (Unix ms).
    pub finished_unix_ms: u64,
    /// Each unit of the round.
    pub units: Vec<UnitReport>,
}

/// One unit's line of [`DomainReport`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct UnitReport {
    /// The unit as logs name it.
    pub unit: String,
    /// Its folder under `[state] dir/units/`.
    pub state: String,
    /// Why its run failed, if it did.
    pub error: Option<String>,
    /// Files written in the round.
    pub written: u64,
    /// Files in its dead-letter store.
    pub dead_letters: usize,
}

fn report_round(cfg: &Config, shard: &dyn Ownership, results: &[UnitResult]) {
    let units = results
        .iter()
        .map(|r| {
            let (error, written, dead_letters) = match &r.outcome {
                Ok(s) => (None, s.progress.committed, s.dead_letters.len()),
                Err(e) => (Some(e.clone()), 0, 0),
            };
            UnitReport { unit: r.unit.label(), state: r.unit.dir_name(), error, written, dead_letters }
        })
        .collect();
    let report = DomainReport { shard: shard.label(), finished_unix_ms: crate::model::unix_ms(), units };
    let path = cfg.state.dir.join("domain.json");
    let text = serde_json::to_vec_pretty(&report).unwrap_or_default();
    if let Err(e) = std::fs::create_dir_all(&cfg.state.dir).and_then(|()| std::fs::write(&path, text)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the domain's status");
    }
}
