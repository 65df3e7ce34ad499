//! `mirrorflow top`: a live view of a running mirror, in the spirit of `vector top`. The running
//! process answers a [`Snapshot`] on its admin socket (built from its own metrics registry, channel
//! capacities and progress); the command asks once a second, turns counters into rates and draws one
//! screen (or, when stdout is not a terminal, one plain line per stage and a summary per tick).

use crate::config::StageName;
use crate::stages::committer::Progress;
use crate::stages::ledger::Ledger;
use crate::state::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

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
        snap.at_unix_ms = crate::state::unix_ms();
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
fn from_metrics(text: &str, capacities: &BTreeMap<StageName, usize>) -> Snapshot {
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

/// Renders `now` against the previous snapshot (for rates) as lines of text.
pub fn render(prev: Option<&Snapshot>, now: &Snapshot) -> Vec<String> {
    let secs = prev.map(|p| now.at_unix_ms.saturating_sub(p.at_unix_ms) as f64 / 1000.0).filter(|s| *s > 0.0);
    let rate = |stage: &StageRow| -> String {
        let before = prev.and_then(|p| p.stages.iter().find(|r| r.stage == stage.stage)).map(|r| r.items_total);
        match (before, secs) {
            (Some(b), Some(s)) => format!("{:.1}", (stage.items_total - b).max(0.0) / s),
            _ => "-".into(),
        }
    };
    let mut lines = vec![format!("{:<12} {:>10} {:>18} {:>9}", "STAGE", "ITEMS/S", "QUEUE / CAPACITY", "RESTARTS")];
    for s in &now.stages {
        let queue = match (s.queue_depth, s.capacity) {
            (Some(d), Some(c)) => format!("{d:.0} / {c}"),
            (None, Some(c)) => format!("- / {c}"),
            _ => "-".into(),
        };
        lines.push(format!("{:<12} {:>10} {:>18} {:>9}", s.stage, rate(s), queue, s.restarts));
    }
    let breakers: Vec<String> = now.breakers.iter().map(|(r, s)| format!("{r} {s}")).collect();
    let lag = now.checkpoint_lag_seconds.map_or("-".into(), |l| format!("{l:.1}s"));
    lines.push(format!(
        "files mirrored {}  bytes mirrored {}  in flight {}  dead letters {}",
        now.files_mirrored, now.bytes_mirrored, now.in_flight, now.dead_letters
    ));
    lines.push(format!(
        "breakers: {}  checkpoint lag {lag}",
        if breakers.is_empty() { "-".to_string() } else { breakers.join(", ") }
    ));
    lines
}

/// Why `top` stopped short.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The running mirror did not answer.
    #[error("{0}")]
    Admin(#[from] crate::admin::AdminError),
    /// Its answer was not a snapshot.
    #[error("the running mirror's answer is not a snapshot: {0}")]
    Decode(#[from] serde_json::Error),
    /// The terminal failed.
    #[error("terminal: {0}")]
    Io(#[from] std::io::Error),
}

/// Asks the mirror running over `dir` for one snapshot.
pub fn ask(dir: &std::path::Path) -> Result<Snapshot, TopError> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = crate::admin::ask(
        dir,
        &crate::admin::Request::Top,
        &mut crate::admin::Output { out: &mut out, err: &mut err },
    )?;
    if code != 0 {
        let why = String::from_utf8_lossy(&err).trim().to_string();
        return Err(crate::admin::AdminError::Usage(why).into());
    }
    Ok(serde_json::from_slice(&out)?)
}

/// Runs `top` until `q`, Ctrl-C, or (when `ticks` is given) that many refreshes. On a terminal it
/// redraws one screen; otherwise it prints the lines of each tick, separated by a blank line.
pub fn run(dir: &std::path::Path, every: Duration, ticks: Option<u64>) -> Result<(), TopError> {
    let term = console::Term::stdout();
    let interactive = term.is_term();
    let (quit_tx, quit) = std::sync::mpsc::channel::<()>();
    if interactive {
        let keys = term.clone();
        std::thread::spawn(move || {
            loop {
                match keys.read_key() {
                    Ok(console::Key::Char('q' | 'Q')) | Ok(console::Key::CtrlC) | Err(_) => {
                        let _ = quit_tx.send(());
                        return;
                    }
                    Ok(_) => {}
                }
            }
        });
        term.hide_cursor()?;
    }
    let result = draw_loop(dir, &term, interactive, every, ticks, &quit);
    if interactive {
        let _ = term.show_cursor();
    }
    result
}

fn draw_loop(
    dir: &std::path::Path,
    term: &console::Term,
    interactive: bool,
    every: Duration,
    ticks: Option<u64>,
    quit: &std::sync::mpsc::Receiver<()>,
) -> Result<(), TopError> {
    let mut prev: Option<Snapshot> = None;
    let mut n = 0u64;
    loop {
        let now = ask(dir)?;
        let lines = render(prev.as_ref(), &now);
        if interactive {
            term.clear_screen()?;
            term.write_line(&format!("mirrorflow top ({}) — q to quit", dir.display()))?;
        }
        let mut out = std::io::stdout().lock();
        for l in &lines {
            writeln!(out, "{l}")?;
        }
        if !interactive {
            writeln!(out)?;
        }
        out.flush()?;
        drop(out);
        prev = Some(now);
        n += 1;
        if ticks.is_some_and(|t| n >= t) {
            return Ok(());
        }
        match quit.recv_timeout(every) {
            Ok(()) => return Ok(()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // No key reader (not a terminal): only a signal or `ticks` ends it.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(every),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE mirrorflow_events_total counter\n\
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

    #[test]
    fn rates_are_items_per_second_between_two_snapshots() {
        let caps = BTreeMap::new();
        let before = Snapshot { at_unix_ms: 1_000, ..from_metrics(TEXT, &caps) };
        let after_text = TEXT.replace("committed\"} 40", "committed\"} 60");
        let after = Snapshot { at_unix_ms: 3_000, ..from_metrics(&after_text, &caps) };
        let lines = render(Some(&before), &after);
        let committer = lines.iter().find(|l| l.starts_with("committer")).unwrap();
        assert!(committer.contains("10.0"), "{committer}");
        assert!(render(None, &after).iter().any(|l| l.starts_with("committer") && l.contains(" - ")));
    }
}
