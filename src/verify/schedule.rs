//! `[verify] every`: a running pipeline reconciles the mirror with Drive on a schedule and repairs
//! what it finds through the pipeline itself, so a fault that slipped past the stages (an object
//! deleted behind the mirror's back, a change Drive never reported) does not stay hidden.
//!
//! Each run waits until the pipeline is idle (no event in flight, no refresh request pending), so
//! work in progress is not taken for a difference. Missing and mismatched files, and the holders of
//! extra objects, get a `Refresh::Repair`; extra objects no record holds get a `Refresh::Stray`. The
//! feed serves them and the planner orders each with every other action on its key, so a repair never
//! races a write the pipeline has just ordered (a stray key a file has taken since is left alone).

use super::{Report, Sources, VerifyOptions, reconcile, request_repairs};
use crate::config::ExportConfig;
use crate::dest::Destination;
use crate::drive::DriveClient;
use crate::internal_events::{InternalEvent, ScheduledVerify};
use crate::stages::ledger::Ledger;
use crate::stages::planner::Scope;
use crate::state::{Store, unix_ms};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// What the scheduled verify publishes in `status.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyStatus {
    /// Runs that ended.
    pub runs: u64,
    /// When the last run ended (Unix ms).
    pub last_run_unix_ms: Option<u64>,
    /// When a run last found the mirror equal to Drive (Unix ms).
    pub last_clean_unix_ms: Option<u64>,
    /// Missing objects the last run found.
    pub missing: u64,
    /// Mismatched objects the last run found.
    pub mismatched: u64,
    /// Extra objects the last run found.
    pub extra: u64,
    /// Objects outside the mirror's namespaces the last run found (reported, never removed here).
    #[serde(default)]
    pub unknown: u64,
    /// Symbolic links the last run found in a local folder (reported, never followed).
    #[serde(default)]
    pub links: u64,
    /// Repair requests the last run recorded.
    pub repairs_requested: usize,
    /// Why the last run could not finish, if it could not.
    pub last_error: Option<String>,
}

/// Everything a scheduled reconcile needs, owned by its task.
pub struct Schedule {
    /// Time between runs.
    pub every: Duration,
    /// `[verify] checksum`.
    pub checksum: bool,
    /// The pipeline's store.
    pub store: Store,
    /// The destination.
    pub dest: Destination,
    /// Drive.
    pub drive: Arc<DriveClient>,
    /// The drives in scope.
    pub scope: Scope,
    /// `[source] export`.
    pub export: ExportConfig,
    /// `[source] max_file_size`.
    pub max_file_size: Option<u64>,
    /// See [`Sources::state_inside`].
    pub state_inside: Option<String>,
    /// The pipeline's ledger: a run waits until it is idle.
    pub ledger: Arc<Ledger>,
    /// Wakes the feed to serve the repair requests at once.
    pub wake: Arc<Notify>,
    /// Published in `status.json`.
    pub status: Arc<Mutex<VerifyStatus>>,
}

/// How often an idle check is made while the pipeline is busy.
const IDLE_POLL: Duration = Duration::from_secs(1);

impl Schedule {
    /// Runs forever (the pipeline aborts the task when it stops).
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(self.every).await;
                while !self.idle() {
                    tokio::time::sleep(IDLE_POLL).await;
                }
                self.run_once().await;
            }
        })
    }

    fn idle(&self) -> bool {
        self.ledger.is_idle() && !self.store.has_pending_refreshes().unwrap_or(true)
    }

    async fn run_once(&self) {
        let sources = Sources {
            store: Some(&self.store),
            dest: &self.dest,
            drive: &self.drive,
            scope: &self.scope,
            export: &self.export,
            max_file_size: self.max_file_size,
            state_inside: self.state_inside.clone(),
        };
        let opts = VerifyOptions { checksum: self.checksum, progress: false, prune_unknown: false };
        let outcome = match reconcile(&sources, &opts).await {
            Ok(report) => self.repair(&report).map(|n| (report, n)),
            Err(e) => Err(e),
        };
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.last_run_unix_ms = Some(unix_ms());
        match outcome {
            Ok((report, repairs)) => {
                status.runs += 1;
                (status.missing, status.mismatched, status.extra) =
                    (report.missing_count(), report.mismatched_count(), report.extra_count());
                (status.unknown, status.links) = (report.unknown_count(), report.link_count());
                status.repairs_requested = repairs;
                status.last_error = None;
                if report.equal() {
                    status.last_clean_unix_ms = status.last_run_unix_ms;
                }
                ScheduledVerify::Finished {
                    missing: status.missing,
                    mismatched: status.mismatched,
                    extra: status.extra,
                }
                .emit();
            }
            Err(e) => {
                ScheduledVerify::Failed { error: &e }.emit();
                status.last_error = Some(e.to_string());
            }
        }
    }

    /// Logs the differences and asks the pipeline to repair them; returns the requests recorded.
    fn repair(&self, report: &Report) -> Result<usize, super::VerifyError> {
        if report.equal() {
            ScheduledVerify::Clean { files: report.checked }.emit();
            return Ok(0);
        }
        let n = request_repairs(&self.store, report, false)?;
        ScheduledVerify::Repairing {
            missing: report.missing_count(),
            mismatched: report.mismatched_count(),
            extra: report.extra_count(),
            unknown: report.unknown_count(),
            links: report.link_count(),
            repairs: n,
        }
        .emit();
        self.wake.notify_one();
        Ok(n)
    }
}
