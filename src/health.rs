//! `/healthz` and `/readyz` on the metrics listener: what a process supervisor (systemd, Kubernetes)
//! and a load balancer ask a running mirror. Kept process-wide, like the metrics registry it sits
//! beside, so the stages report into it without being handed another value.
//!
//! Alive means the pipeline's supervisor runs. Ready means the initial sync is done (a checkpoint in
//! the change phase was committed: every listed file has an outcome) and every change log was read
//! to its end within 3 × `[source] poll_interval`.

use crate::model::Corpus;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many poll intervals a change log may go unread before the mirror is not ready.
pub const STALE_AFTER_POLLS: u32 = 3;

/// What the probes answer from.
#[derive(Debug, Default)]
pub struct Health {
    /// The pipeline supervisor is running.
    pub supervisor: bool,
    /// A checkpoint in the change phase was committed (this run, or an earlier one).
    pub initial_sync_done: bool,
    /// `[source] poll_interval` of this run.
    pub poll_interval: Duration,
    /// Every change log followed, by label, with when it was last read to its end.
    pub logs: BTreeMap<String, Option<Instant>>,
    /// Several units of a domain run in turn (`[source] subjects`): the probes answer for the domain,
    /// not for whichever unit's pipeline reported last.
    pub domain: Option<DomainHealth>,
}

/// The probes' view of a domain run.
#[derive(Debug, Default, Clone, Copy)]
pub struct DomainHealth {
    /// A round ended (every unit of this shard caught up once, or failed with its reason).
    pub rounds: u64,
    /// Every unit of the last round caught up.
    pub all_ok: bool,
}

impl Health {
    /// `/healthz`: Ok, or why not.
    pub fn liveness(&self) -> Result<(), String> {
        if self.domain.is_some() {
            return Ok(());
        }
        if self.supervisor { Ok(()) } else { Err("the pipeline supervisor is not running".into()) }
    }

    /// `/readyz` at `now`: Ok, or the first reason the mirror is not ready.
    pub fn readiness(&self, now: Instant) -> Result<(), String> {
        if let Some(d) = self.domain {
            return if d.rounds == 0 {
                Err("the first round over the domain's units is not done yet".into())
            } else {
                Ok(())
            };
        }
        self.liveness()?;
        if !self.initial_sync_done {
            return Err("the initial sync is not done yet".into());
        }
        let limit = self.poll_interval * STALE_AFTER_POLLS;
        for (log, read) in &self.logs {
            match read {
                None => return Err(format!("change log {log} was not read yet")),
                Some(at) if now.saturating_duration_since(*at) > limit => {
                    let ago = now.saturating_duration_since(*at).as_secs();
                    return Err(format!(
                        "change log {log} was last read {ago}s ago (more than {STALE_AFTER_POLLS} x poll_interval = {}s)",
                        limit.as_secs()
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

static HEALTH: Mutex<Option<Health>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Health) -> R) -> R {
    let mut guard = HEALTH.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(Health::default))
}

/// A name for a change log in a probe's reason.
pub fn log_label(log: &Corpus) -> String {
    match log {
        Corpus::MyDrive => "my-drive".into(),
        Corpus::MyDriveAndShared => "user (my-drive and shared-with-me)".into(),
        Corpus::SharedDrive(id) => format!("shared-drive {}", id.0),
    }
}

/// A run starts: the logs it follows (none read yet), and whether an earlier run finished the initial
/// sync (its saved checkpoint is in the change phase).
pub fn run_started(poll_interval: Duration, initial_sync_done: bool, logs: &[Corpus]) {
    with(|h| {
        *h = Health {
            supervisor: false,
            initial_sync_done,
            poll_interval,
            logs: logs.iter().map(|l| (log_label(l), None)).collect(),
            domain: h.domain,
        }
    });
}

/// A domain run starts: from now on the probes answer for the domain (alive while the process runs,
/// ready once the first round over its units ended), whatever the units' pipelines report.
pub fn domain_started() {
    with(|h| h.domain = Some(DomainHealth::default()));
}

/// A round over the domain's units ended; `all_ok`: no unit failed.
pub fn domain_round_done(all_ok: bool) {
    with(|h| {
        let d = h.domain.get_or_insert_with(DomainHealth::default);
        d.rounds += 1;
        d.all_ok = all_ok;
    });
}

/// The supervisor started (true) or stopped (false).
pub fn supervisor_running(running: bool) {
    with(|h| h.supervisor = running);
}

/// The committer saved a checkpoint in the change phase: every listed file has an outcome.
pub fn initial_sync_done() {
    with(|h| h.initial_sync_done = true);
}

/// The feed read `log` to its end now.
pub fn change_log_read(log: &Corpus) {
    with(|h| {
        h.logs.insert(log_label(log), Some(Instant::now()));
    });
}

/// The feed follows exactly `logs` now (a shared drive left, or joined): others are forgotten.
pub fn follows(logs: &[Corpus]) {
    let labels: Vec<String> = logs.iter().map(log_label).collect();
    with(|h| {
        h.logs.retain(|l, _| labels.contains(l));
        for l in labels {
            h.logs.entry(l).or_insert(None);
        }
    });
}

/// `/healthz` now.
pub fn liveness() -> Result<(), String> {
    with(|h| h.liveness())
}

/// `/readyz` now.
pub fn readiness() -> Result<(), String> {
    with(|h| h.readiness(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DriveId;

    fn ready_health(now: Instant) -> Health {
        Health {
            supervisor: true,
            initial_sync_done: true,
            poll_interval: Duration::from_secs(10),
            logs: [("my-drive".to_string(), Some(now))].into_iter().collect(),
            domain: None,
        }
    }

    #[test]
    fn a_domain_is_ready_after_its_first_round_whatever_a_units_pipeline_reported() {
        let now = Instant::now();
        let mut h = Health {
            supervisor: false,
            initial_sync_done: false,
            domain: Some(DomainHealth::default()),
            ..ready_health(now)
        };
        assert!(h.liveness().is_ok());
        assert!(h.readiness(now).is_err());
        h.domain = Some(DomainHealth { rounds: 1, all_ok: false });
        assert!(h.readiness(now).is_ok());
    }

    #[test]
    fn a_running_synced_mirror_with_fresh_logs_is_ready() {
        let now = Instant::now();
        assert_eq!(ready_health(now).readiness(now + Duration::from_secs(29)), Ok(()));
    }

    #[test]
    fn a_stopped_supervisor_is_neither_alive_nor_ready() {
        let now = Instant::now();
        let h = Health { supervisor: false, ..ready_health(now) };
        assert!(h.liveness().unwrap_err().contains("supervisor"));
        assert!(h.readiness(now).unwrap_err().contains("supervisor"));
    }

    #[test]
    fn the_initial_sync_must_be_done_to_be_ready() {
        let now = Instant::now();
        let h = Health { initial_sync_done: false, ..ready_health(now) };
        assert_eq!(h.liveness(), Ok(()));
        assert!(h.readiness(now).unwrap_err().contains("initial sync"));
    }

    #[test]
    fn a_log_unread_for_more_than_three_poll_intervals_is_not_ready_and_named() {
        let now = Instant::now();
        let mut h = ready_health(now);
        h.logs.insert(log_label(&Corpus::SharedDrive(DriveId("0AB".into()))), Some(now));
        h.logs.insert("my-drive".into(), Some(now - Duration::from_secs(31)));
        let why = h.readiness(now).unwrap_err();
        assert!(why.contains("my-drive") && why.contains("31s ago"), "{why}");
    }

    #[test]
    fn a_log_never_read_is_not_ready() {
        let now = Instant::now();
        let mut h = ready_health(now);
        h.logs.insert("my-drive".into(), None);
        assert!(h.readiness(now).unwrap_err().contains("not read yet"));
    }
}
