//! `status.json`: what a running pipeline publishes every two seconds in its state folder, for
//! `mirrorflow status` (the store itself is locked by the running process). One type, written by the
//! pipeline and read by the command, so the two cannot drift apart.

use crate::stages::committer::Progress;
use crate::verify::schedule::VerifyStatus;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file's name inside `[state] dir`.
pub const LIVE_STATUS_FILE: &str = "status.json";

/// One snapshot of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveStatus {
    /// The scheduled verify's last runs (`[verify] every`), when it is on.
    pub verify: Option<VerifyStatus>,
    /// False once the run has ended (the last snapshot is kept).
    pub running: bool,
    /// The pipeline's process id.
    pub pid: u32,
    /// When this snapshot was written (Unix ms).
    pub updated_unix_ms: u64,
    /// Files admitted and not yet committed.
    pub in_flight: usize,
    /// Counts of this run so far.
    pub this_run: RunCounts,
    /// This process's shard (`"i/n"`, `[cluster]`); absent in files written before shards existed.
    #[serde(default)]
    pub shard: Option<crate::cluster::Shard>,
}

/// What a run did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    /// Files written.
    pub mirrored: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Files removed.
    pub removed: u64,
    /// Events skipped.
    pub skipped: u64,
    /// Google files Drive has no export for.
    pub no_export: u64,
    /// Files whose owner disabled downloads (skipped).
    #[serde(default)]
    pub download_disabled: u64,
    /// Files Drive flagged as abusive, `acknowledge_abuse` off (skipped).
    #[serde(default)]
    pub abusive: u64,
    /// Files whose download quota is used up (deferred for hours).
    #[serde(default)]
    pub quota_deferred: u64,
    /// Folders recorded.
    pub folders: u64,
    /// Files dead-lettered.
    pub dead_lettered: u64,
}

impl From<&Progress> for RunCounts {
    fn from(p: &Progress) -> Self {
        RunCounts {
            mirrored: p.committed,
            bytes: p.bytes,
            removed: p.removed,
            skipped: p.skipped,
            no_export: p.no_export,
            download_disabled: p.download_disabled,
            abusive: p.abusive,
            quota_deferred: p.quota_deferred,
            folders: p.folders,
            dead_lettered: p.dead_lettered,
        }
    }
}

impl LiveStatus {
    /// A snapshot of this process now.
    pub fn now(progress: &Progress, in_flight: usize, running: bool, verify: Option<VerifyStatus>) -> LiveStatus {
        LiveStatus {
            verify,
            running,
            pid: std::process::id(),
            updated_unix_ms: crate::model::unix_ms(),
            in_flight,
            this_run: RunCounts::from(progress),
            shard: None,
        }
    }

    /// The snapshot, saying which shard of the cluster wrote it.
    pub fn with_shard(self, shard: Option<crate::cluster::Shard>) -> LiveStatus {
        LiveStatus { shard, ..self }
    }

    /// Replaces the file in `dir` atomically (write, then rename). Best effort: a status file that
    /// cannot be written must not stop the mirror.
    pub fn publish(&self, dir: &Path) {
        let Ok(text) = serde_json::to_vec(self) else { return };
        let tmp = dir.join(format!("{LIVE_STATUS_FILE}.tmp"));
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, dir.join(LIVE_STATUS_FILE));
        }
    }

    /// The last snapshot published in `dir`, if any can be read.
    pub fn read(dir: &Path) -> Option<LiveStatus> {
        let bytes = std::fs::read(dir.join(LIVE_STATUS_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_snapshot_reads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let progress = Progress { committed: 3, bytes: 42, removed: 1, ..Default::default() };
        let verify = VerifyStatus { runs: 2, missing: 1, ..Default::default() };
        let shard = "2/3".parse::<crate::cluster::Shard>().ok();
        let status = LiveStatus::now(&progress, 7, true, Some(verify)).with_shard(shard);
        status.publish(dir.path());
        assert_eq!(LiveStatus::read(dir.path()), Some(status));
        assert!(!dir.path().join(format!("{LIVE_STATUS_FILE}.tmp")).exists());
    }

    #[test]
    fn the_file_keeps_the_documented_field_names() {
        let status =
            LiveStatus::now(&Progress::default(), 0, false, None).with_shard(Some(crate::cluster::Shard::SOLE));
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["shard"], "0/1", "{v}");
        for key in ["verify", "running", "pid", "updated_unix_ms", "in_flight", "this_run", "shard"] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        for key in [
            "mirrored",
            "bytes",
            "removed",
            "skipped",
            "no_export",
            "download_disabled",
            "abusive",
            "quota_deferred",
            "folders",
            "dead_lettered",
        ] {
            assert!(v["this_run"].get(key).is_some(), "this_run.{key} missing from {v}");
        }
    }

    #[test]
    fn a_snapshot_from_before_shards_reads_as_having_none() {
        let mut v = serde_json::to_value(LiveStatus::now(&Progress::default(), 0, true, None)).unwrap();
        v.as_object_mut().unwrap().remove("shard");
        let read: LiveStatus = serde_json::from_value(v).unwrap();
        assert_eq!(read.shard, None);
    }
}
