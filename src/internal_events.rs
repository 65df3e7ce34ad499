//! Things mirrorflow does that an operator watches, each as a small struct whose `emit` writes the log
//! line and moves the metric together (Vector's `internal_events`), so the two never disagree and a
//! call site cannot log without counting. Metric names stay in [`crate::metrics`].

use crate::model::StageName;
use crate::model::{FileId, ObjectKey};
use std::sync::atomic::{AtomicU64, Ordering};

/// An event that logs and counts.
pub trait InternalEvent {
    /// Writes the log line and updates the metric.
    fn emit(self);
}

/// A file went to the dead-letter store.
pub struct DeadLettered<'a> {
    /// The stage that gave up.
    pub stage: StageName,
    /// The file.
    pub file: &'a FileId,
    /// Its Drive name.
    pub name: &'a str,
    /// The key it was meant for.
    pub key: &'a ObjectKey,
    /// Short reason (`downloadQuotaExceeded`, `checksumMismatch`, `destinationError`, …).
    pub reason: &'a str,
    /// The last error in full.
    pub error: &'a str,
}

impl InternalEvent for DeadLettered<'_> {
    fn emit(self) {
        let (stage, file, name, key, reason, error) =
            (self.stage.as_str(), self.file, self.name, self.key, self.reason, self.error);
        tracing::warn!(stage, %file, name, %key, reason, error, "dead-lettered");
        crate::metrics::event(stage, "dead_lettered");
    }
}

/// Written bytes did not match Drive's metadata; the file is fetched again.
pub struct MismatchRefetched<'a> {
    /// The file.
    pub file: &'a FileId,
    /// What differed.
    pub mismatch: &'a dyn std::fmt::Debug,
    /// Fetches so far.
    pub attempt: u32,
}

impl InternalEvent for MismatchRefetched<'_> {
    fn emit(self) {
        let (file, attempt) = (self.file, self.attempt);
        tracing::info!(%file, mismatch = ?self.mismatch, attempt, "verification failed; fetching again");
        crate::metrics::retry("verify", "mismatch");
    }
}

/// A download's body broke and is resumed with `Range`.
pub struct DownloadResumed<'a> {
    /// The file.
    pub file: &'a FileId,
    /// Where it resumes.
    pub offset: u64,
    /// What broke it.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for DownloadResumed<'_> {
    fn emit(self) {
        tracing::info!(file = %self.file, offset = self.offset, error = %self.error, "download interrupted; resuming with Range");
        crate::metrics::retry("drive", "body_interrupted");
    }
}

/// The supervisor restarts a failed stage.
pub struct StageFailed<'a> {
    /// The stage.
    pub stage: StageName,
    /// Why it failed.
    pub error: &'a str,
}

impl InternalEvent for StageFailed<'_> {
    fn emit(self) {
        tracing::error!(stage = self.stage.as_str(), error = %self.error, "stage failed; restarting it");
        crate::metrics::restart(self.stage.as_str());
    }
}

/// A push notification with an unknown channel id or token was refused. Every one is counted; the
/// warning is written at most once per ten seconds, so a flood does not flood the log.
pub struct ForgedNotificationRejected;

/// When the last forged-notification warning was written (Unix ms).
static LAST_FORGED_WARN_MS: AtomicU64 = AtomicU64::new(0);
const FORGED_WARN_EVERY_MS: u64 = 10_000;

impl InternalEvent for ForgedNotificationRejected {
    fn emit(self) {
        crate::metrics::webhook_rejected();
        let now = crate::model::unix_ms();
        let last = LAST_FORGED_WARN_MS.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= FORGED_WARN_EVERY_MS
            && LAST_FORGED_WARN_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                "rejected a push notification with an unknown channel id or token (further ones for 10 s are only counted in {})",
                crate::metrics::WEBHOOK_REJECTED_TOTAL
            );
        }
    }
}
