//! What a running mirror answers `mirrorflow top` with: a [`Snapshot`] built from its own metrics
//! registry, channel capacities and progress. The server half of `top`, beside the admin socket that
//! serves it; the client (`crate::top`) asks for it and draws it.

use crate::model::StageName;
use crate::stages::committer::Progress;
use crate::stages::ledger::Ledger;
use crate::state::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The channel feeding each stage, as `mirrorflow_queue_depth{edge}` names it.
const INPUT_EDGE: [(StageName, &str); 6] = [
    (StageName::Dedup, "feed_dedup"),
    (StageName::Planner, "dedup_planner"),
    (StageName::Downloader, "planner_downloader"),
    (StageName::Uploader, "downloader_uploader"),
    (StageName::Verifier, "uploader_verifier"),
    (StageName::Committer, "to_committer"),
];

/// What the running pipeline hands its admin socket for `top`.
#[derive(Clone)]
pub struct Source {
    /// The capacity of each stage's input channel.
    pub capacities: BTreeMap<StageName, usize>,
    /// The committer's running counts.
    pub progress: tokio::sync::watch::Receiver<Progress>,
}

/// One stage's row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageRow {
    /// The stage's name.
    pub stage: String,
    /// Items that left it so far (every outcome).
    pub items_total: f64,
    /// Items waiting on its input channel.
    pub queue_depth: Option<f64>,
    /// That channel's capacity.
    pub capacity: Option<usize>,
    /// Times the supervisor restarted it.
    pub restarts: f64,
}

/// What a running mirror answers `top` with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was taken (Unix ms).
    pub at_unix_ms: u64,
    /// Every stage, in pipeline order.
    pub stages: Vec<StageRow>,
    /// Files written this run.
    pub files_mirrored: u64,
    /// Bytes written this run.
    pub bytes_mirrored: u64,
    /// Files admitted and not yet committed.
    pub in_flight: usize,
    /// Files in the dead-letter store.
    pub dead_letters: usize,
    /// Each remote's circuit breaker: closed, half-open or open.
    pub breakers: BTreeMap<String, String>,
    /// Age of the oldest unfinished event when the checkpoint last moved.
    pub checkpoint_lag_seconds: Option<f64>,
}

impl Source {
    /// A snapshot now, from the metrics registry (when one is installed), the store and the ledger.
    pub fn snapshot(&self, store: &Store, ledger: &Ledger) -> Snapshot {
        let metrics = crate::metrics::render().unwrap_or_default();
        let progress = self.progress.borrow().clone();
        let mut snap = from_metrics(&metrics, &self.capacities);
        snap.at_unix_ms = crate::model::unix_ms();
        snap.files_mirrored = progress.committed;
        snap.bytes_mirrored = progress.bytes;
        snap.in_flight = ledger.files_in_flight();
        snap.dead_letters = store.dead_letter_count().unwrap_or(0);
        snap
    }
}

/// One sample of Prometheus text: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// The samples of a Prometheus text exposition (comments skipped).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some((name.to_string(), labels, value))
        })
        .collect()
}

/// The stage rows, breakers and checkpoint lag in a metrics exposition.
pub(crate) fn from_metrics(text: &str, capacities: &BTreeMap<StageName, usize>) -> Snapshot {
    let all = samples(text);
    let sum = |name: &str, label: &str, value: &str| -> f64 {
        all.iter().filter(|(n, l, _)| n == name && l.get(label).is_some_and(|v| v == value)).map(|(_, _, v)| v).sum()
    };
    let one = |name: &str, label: &str, value: &str| {
        all.iter().find(|(n, l, _)| n == name && l.get(label).is_some_and(|v| v == value)).map(|(_, _, v)| *v)
    };
    let stages = StageName::ALL
        .into_iter()
        .map(|s| {
            let edge = INPUT_EDGE.iter().find(|(st, _)| *st == s).map(|(_, e)| *e);
            StageRow {
                stage: s.as_str().to_string(),
                items_total: sum(crate::metrics::EVENTS_TOTAL, "stage", s.as_str()),
                queue_depth: edge.and_then(|e| one(crate::metrics::QUEUE_DEPTH, "edge", e)),
                capacity: capacities.get(&s).copied(),
                restarts: sum(crate::metrics::RESTARTS_TOTAL, "stage", s.as_str()),
            }
        })
        .collect();
    let breakers = all
        .iter()
        .filter(|(n, _, _)| n == crate::metrics::CIRCUIT_STATE)
        .filter_map(|(_, l, v)| {
            let state = match *v as u8 {
                0 => "closed",
                1 => "half-open",
                _ => "open",
            };
            Some((l.get("remote")?.clone(), state.to_string()))
        })
        .collect();
    let checkpoint_lag_seconds =
        all.iter().find(|(n, _, _)| n == crate::metrics::CHECKPOINT_LAG_SECONDS).map(|(_, _, v)| *v);
    Snapshot { stages, breakers, checkpoint_lag_seconds, ..Default::default() }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const TEXT: &str = "# TYPE mirrorflow_events_total counter\n\
mirrorflow_events_total{stage=\"committer\",outcome=\"committed\"} 40\n\
mirrorflow_events_total{stage=\"committer\",outcome=\"skipped\"} 2\n\
mirrorflow_events_total{stage=\"planner\",outcome=\"planned\"} 50\n\
mirrorflow_queue_depth{edge=\"to_committer\"} 7\n\
mirrorflow_restarts_total{stage=\"downloader\"} 3\n\
mirrorflow_circuit_state{remote=\"drive\"} 2\n\
mirrorflow_checkpoint_lag_seconds 1.5\n";

    #[test]
    fn a_snapshot_reads_each_stage_s_items_queue_and_restarts_from_the_metrics() {
        let caps = BTreeMap::from([(StageName::Committer, 64)]);
        let s = from_metrics(TEXT, &caps);
        let committer = s.stages.iter().find(|r| r.stage == "committer").unwrap();
        assert_eq!((committer.items_total, committer.queue_depth, committer.capacity), (42.0, Some(7.0), Some(64)));
        let downloader = s.stages.iter().find(|r| r.stage == "downloader").unwrap();
        assert_eq!(downloader.restarts, 3.0);
        assert_eq!(s.breakers.get("drive").map(String::as_str), Some("open"));
        assert_eq!(s.checkpoint_lag_seconds, Some(1.5));
        assert_eq!(s.stages.len(), StageName::ALL.len());
    }
}
