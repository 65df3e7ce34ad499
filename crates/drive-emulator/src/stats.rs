//! Request and byte counters exposed at `/_emu/stats`, so tests can see what a client really did.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Snapshot returned by `GET /_emu/stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmuStats {
    /// `"<endpoint> <status>"` → count, e.g. `"files.list 200"`.
    pub requests: BTreeMap<String, u64>,
    /// Body bytes handed to the connection.
    pub bytes_served: BytesServed,
    /// Media bytes per file id.
    pub media_bytes_by_file: BTreeMap<String, u64>,
    /// Content downloads started (alt=media, files.export, exportLinks, files.download bodies) per
    /// file id: a test proves each content was fetched once.
    #[serde(default)]
    pub downloads_by_file: BTreeMap<String, u64>,
    /// Content downloads started per acting user's email (the single user's in single-user mode).
    #[serde(default)]
    pub downloads_by_user: BTreeMap<String, u64>,
}

/// Body bytes by kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BytesServed {
    /// alt=media bodies.
    pub media: u64,
    /// files.export and exportLinks bodies.
    pub export: u64,
}

/// Shared counters.
#[derive(Default)]
pub(crate) struct Stats {
    inner: Mutex<EmuStats>,
}

impl Stats {
    /// Count one answered request.
    pub fn count(&self, endpoint: &str, status: u16) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *s.requests.entry(format!("{endpoint} {status}")).or_default() += 1;
    }

    /// Count one content download of `file_id` by `user` (`None`: the single user).
    pub fn count_download(&self, file_id: &str, user: Option<&str>) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *s.downloads_by_file.entry(file_id.to_string()).or_default() += 1;
        let user = user.unwrap_or(super::resources::USER_EMAIL).to_ascii_lowercase();
        *s.downloads_by_user.entry(user).or_default() += 1;
    }

    /// Add streamed body bytes.
    pub fn add_bytes(&self, export: bool, file_id: &str, bytes: u64) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if export {
            s.bytes_served.export += bytes;
        } else {
            s.bytes_served.media += bytes;
            *s.media_bytes_by_file.entry(file_id.to_string()).or_default() += bytes;
        }
    }

    /// Current counters.
    pub fn snapshot(&self) -> EmuStats {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Zero all counters.
    pub fn reset(&self) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = EmuStats::default();
    }
}

/// Counts bytes of one body and flushes them into [`Stats`] when the body ends or is dropped.
pub(crate) struct ByteCounter {
    pub stats: Arc<Stats>,
    pub export: bool,
    pub file_id: String,
    pub pending: u64,
}

impl ByteCounter {
    /// Note `n` more bytes; flush every 8 MiB so long downloads show progress.
    pub fn add(&mut self, n: u64) {
        self.pending += n;
        if self.pending >= 8 * 1024 * 1024 {
            self.flush();
        }
    }

    /// Publish the pending count (done at the end of a body so tests see it before the last byte).
    pub fn flush(&mut self) {
        if self.pending > 0 {
            self.stats.add_bytes(self.export, &self.file_id, self.pending);
            self.pending = 0;
        }
    }
}

impl Drop for ByteCounter {
    fn drop(&mut self) {
        self.flush();
    }
}
