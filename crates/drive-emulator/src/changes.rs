//! The change log behind `changes.list`, and the opaque page tokens of both listings.

use std::collections::{BTreeSet, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// One change record: a file reached a new state (or was removed) at `time_ms`.
#[derive(Debug, Clone)]
pub(crate) struct ChangeRecord {
    pub file_id: String,
    pub time_ms: i64,
    pub removed: bool,
    /// Shared drive of the item when the change happened.
    pub drive_id: Option<String>,
    /// A drive-level change (`changeType = "drive"`): `file_id` holds the shared drive's id.
    pub drive_change: bool,
    /// Whose change logs hold it (domain mode): the users who saw the item at that moment, or the
    /// one user a share, unshare or membership change concerns. `None`: every reader of the item
    /// (single-user mode, and shared-drive items, read by the drive's members).
    pub viewers: Option<BTreeSet<String>>,
}

/// Append-only log; a file's older records are superseded by its latest one.
#[derive(Debug, Clone)]
pub(crate) struct ChangeLog {
    /// Changes with every reset/seed so old tokens are rejected (clients must relist).
    pub epoch: u32,
    pub records: Vec<ChangeRecord>,
    latest: HashMap<String, usize>,
    /// (file id, user) → the latest record of that file in that user's log (domain mode).
    latest_for: HashMap<(String, String), usize>,
}

impl ChangeLog {
    /// An empty log for a fresh corpus.
    pub fn new(epoch: u32) -> Self {
        ChangeLog { epoch, records: Vec::new(), latest: HashMap::new(), latest_for: HashMap::new() }
    }

    /// Append a record.
    pub fn push(&mut self, rec: ChangeRecord) {
        self.latest.insert(rec.file_id.clone(), self.records.len());
        for v in rec.viewers.iter().flatten() {
            self.latest_for.insert((rec.file_id.clone(), v.to_ascii_lowercase()), self.records.len());
        }
        self.records.push(rec);
    }

    /// True if record `index` is the latest for its file (Drive reports a file once, at its latest change).
    pub fn is_latest(&self, index: usize) -> bool {
        self.records.get(index).is_some_and(|r| self.latest.get(&r.file_id) == Some(&index))
    }

    /// True if record `index` is in `viewer`'s log and the latest there for its file. Records meant
    /// for every reader (`viewers` is `None`) follow [`ChangeLog::is_latest`].
    pub fn is_latest_for(&self, index: usize, viewer: Option<&str>) -> bool {
        let Some(rec) = self.records.get(index) else {
            return false;
        };
        match (&rec.viewers, viewer) {
            (Some(viewers), Some(v)) => {
                let key = (rec.file_id.clone(), v.to_ascii_lowercase());
                viewers.iter().any(|x| x.eq_ignore_ascii_case(v)) && self.latest_for.get(&key) == Some(&index)
            }
            _ => self.is_latest(index),
        }
    }

    /// Opaque token for "changes after position `pos`".
    pub fn token(&self, pos: usize) -> String {
        encode(&format!("c{}.{}", self.epoch, pos))
    }

    /// Position of a token, if it was issued by this log.
    pub fn parse_token(&self, token: &str) -> Option<usize> {
        let raw = decode(token)?;
        let (epoch, pos) = raw.strip_prefix('c')?.split_once('.')?;
        let pos: usize = pos.parse().ok()?;
        (epoch.parse::<u32>().ok()? == self.epoch && pos <= self.records.len()).then_some(pos)
    }
}

/// Opaque files.list page token: epoch, last listed seq and a fingerprint of the query.
pub(crate) fn list_token(epoch: u32, last_seq: u64, fingerprint: u64) -> String {
    encode(&format!("l{epoch}.{last_seq}.{fingerprint:x}"))
}

/// Decode a files.list page token issued for the same epoch and query.
pub(crate) fn parse_list_token(token: &str, epoch: u32, fingerprint: u64) -> Option<u64> {
    let raw = decode(token)?;
    let mut parts = raw.strip_prefix('l')?.split('.');
    let e: u32 = parts.next()?.parse().ok()?;
    let seq: u64 = parts.next()?.parse().ok()?;
    let fp = u64::from_str_radix(parts.next()?, 16).ok()?;
    (e == epoch && fp == fingerprint && parts.next().is_none()).then_some(seq)
}

fn encode(raw: &str) -> String {
    URL_SAFE_NO_PAD.encode(raw.as_bytes())
}

fn decode(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token.trim().as_bytes()).ok()?;
    String::from_utf8(bytes).ok()
}
