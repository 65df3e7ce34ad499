//! Deterministic file bytes: a pure function of (id, content revision, offset), generated on the fly.
//!
//! Bytes come from a counter-mode splitmix64 over 8-byte blocks keyed by a hash of the id and revision,
//! so any range can be produced without materializing the file, and checksums can be recomputed by
//! streaming the generator.

use std::sync::{Arc, OnceLock};

use aws_lc_rs::digest;
use md5::{Digest, Md5};

/// Streaming chunk size for bodies and hashing.
pub(crate) const CHUNK: usize = 64 * 1024;

/// FNV-1a over bytes, the base of content keys.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64 finalizer: a good 64-bit mixer.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Key of one content revision of a file (or of one export format when `salt` is the format).
pub(crate) fn content_key(id: &str, rev: u64, salt: &str) -> u64 {
    mix(fnv1a(id.as_bytes(), rev) ^ fnv1a(salt.as_bytes(), 0x5bd1_e995).rotate_left(17) ^ rev)
}

/// Fill `buf` with the bytes at `[offset, offset + buf.len())` of the stream keyed by `key`.
pub(crate) fn fill(key: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut out = 0usize;
    while out < buf.len() {
        let block = pos / 8;
        let within = (pos % 8) as usize;
        let word = mix(key ^ block.wrapping_mul(0xD6E8_FEB8_6659_FD93)).to_le_bytes();
        let take = (8 - within).min(buf.len() - out);
        buf[out..out + take].copy_from_slice(&word[within..within + take]);
        out += take;
        pos += take as u64;
    }
}

/// Hex checksums of one content revision, as Drive reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digests {
    pub md5: String,
    pub sha1: String,
    pub sha256: String,
}

/// Compute all three checksums by streaming the generator (never holding the content).
pub(crate) fn compute_digests(key: u64, size: u64) -> Digests {
    let mut md5 = Md5::new();
    let mut sha1 = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    let mut sha256 = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 4 * CHUNK];
    let mut pos = 0u64;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        fill(key, pos, &mut buf[..n]);
        md5.update(&buf[..n]);
        sha1.update(&buf[..n]);
        sha256.update(&buf[..n]);
        pos += n as u64;
    }
    Digests {
        md5: hex::encode(md5.finalize()),
        sha1: hex::encode(sha1.finish().as_ref()),
        sha256: hex::encode(sha256.finish().as_ref()),
    }
}

/// One immutable content revision of a binary file; checksums are computed lazily and cached.
#[derive(Debug)]
pub(crate) struct Blob {
    pub key: u64,
    pub size: u64,
    digests: OnceLock<Digests>,
}

/// Up to this many pending bytes, checksums are computed inline on the async executor.
const INLINE_DIGEST_LIMIT: u64 = 1024 * 1024;

impl Blob {
    /// A new revision: the key is derived from id and revision.
    pub fn new(id: &str, rev: u64, size: u64) -> Arc<Blob> {
        Arc::new(Blob { key: content_key(id, rev, "content"), size, digests: OnceLock::new() })
    }

    /// Checksums, computing them now if needed (blocking for big files).
    pub fn digests(&self) -> &Digests {
        self.digests.get_or_init(|| compute_digests(self.key, self.size))
    }

    /// Checksums if already known.
    pub fn cached_digests(&self) -> Option<&Digests> {
        self.digests.get()
    }
}

/// Make sure the checksums of all `blobs` are cached, hashing off the async executor unless the
/// pending work is small.
pub(crate) async fn ensure_digests(blobs: Vec<Arc<Blob>>) {
    let missing: Vec<Arc<Blob>> = blobs.into_iter().filter(|b| b.cached_digests().is_none()).collect();
    let pending: u64 = missing.iter().map(|b| b.size).sum();
    let hash_all = move || {
        for blob in &missing {
            blob.digests();
        }
    };
    if pending <= INLINE_DIGEST_LIMIT {
        hash_all();
    } else {
        let _ = tokio::task::spawn_blocking(hash_all).await;
    }
}

/// The kinds of Google Workspace files the emulator holds: the four Docs Editors types, Apps Script
/// projects (exported as JSON) and Forms (which Drive cannot export at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    /// Google Docs.
    Document,
    /// Google Sheets.
    Spreadsheet,
    /// Google Slides.
    Presentation,
    /// Google Drawings.
    Drawing,
    /// An Apps Script project.
    Script,
    /// Google Forms: listed in Drive, never exportable.
    Form,
    /// Google Vids: no `files.export`; Drive hands them over only through `files.download` (a
    /// long-running operation), as MP4.
    Vid,
}

/// `(export mime type, exportFormat)` pairs per kind, as in Drive's `exportLinks`.
const DOC_FORMATS: &[(&str, &str)] = &[
    ("application/rtf", "rtf"),
    ("application/vnd.oasis.opendocument.text", "odt"),
    ("text/html", "html"),
    ("application/pdf", "pdf"),
    ("text/markdown", "md"),
    ("application/epub+zip", "epub"),
    ("application/zip", "zip"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
    ("text/plain", "txt"),
];
const SHEET_FORMATS: &[(&str, &str)] = &[
    ("application/x-vnd.oasis.opendocument.spreadsheet", "ods"),
    ("text/tab-separated-values", "tsv"),
    ("application/pdf", "pdf"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    ("text/csv", "csv"),
    ("application/zip", "zip"),
    ("application/vnd.oasis.opendocument.spreadsheet", "ods"),
];
const SLIDES_FORMATS: &[(&str, &str)] = &[
    ("application/vnd.oasis.opendocument.presentation", "odp"),
    ("application/pdf", "pdf"),
    ("application/vnd.openxmlformats-officedocument.presentationml.presentation", "pptx"),
    ("text/plain", "txt"),
    ("image/jpeg", "jpeg"),
    ("image/png", "png"),
    ("image/svg+xml", "svg"),
];
const DRAWING_FORMATS: &[(&str, &str)] =
    &[("image/svg+xml", "svg"), ("image/png", "png"), ("application/pdf", "pdf"), ("image/jpeg", "jpeg")];
const SCRIPT_FORMATS: &[(&str, &str)] = &[("application/vnd.google-apps.script+json", "json")];

/// Drive's limit for `files.export` (exportLinks have none).
pub(crate) const EXPORT_LIMIT: u64 = 10_000_000;

impl DocKind {
    /// Every kind, for lookups by mime type.
    pub const ALL: [DocKind; 7] = [
        DocKind::Document,
        DocKind::Spreadsheet,
        DocKind::Presentation,
        DocKind::Drawing,
        DocKind::Script,
        DocKind::Form,
        DocKind::Vid,
    ];

    /// The Google Apps mime type.
    pub fn mime(self) -> &'static str {
        match self {
            DocKind::Document => "application/vnd.google-apps.document",
            DocKind::Spreadsheet => "application/vnd.google-apps.spreadsheet",
            DocKind::Presentation => "application/vnd.google-apps.presentation",
            DocKind::Drawing => "application/vnd.google-apps.drawing",
            DocKind::Script => "application/vnd.google-apps.script",
            DocKind::Form => "application/vnd.google-apps.form",
            DocKind::Vid => "application/vnd.google-apps.vid",
        }
    }

    /// Supported export formats.
    pub fn formats(self) -> &'static [(&'static str, &'static str)] {
        match self {
            DocKind::Document => DOC_FORMATS,
            DocKind::Spreadsheet => SHEET_FORMATS,
            DocKind::Presentation => SLIDES_FORMATS,
            DocKind::Drawing => DRAWING_FORMATS,
            DocKind::Script => SCRIPT_FORMATS,
            DocKind::Form | DocKind::Vid => &[],
        }
    }

    /// The docs.google.com path serving this kind's exportLinks.
    pub fn link_path(self) -> &'static str {
        match self {
            DocKind::Document => "/feeds/download/documents/export/Export",
            DocKind::Spreadsheet => "/spreadsheets/export",
            DocKind::Presentation => "/feeds/download/presentations/Export",
            DocKind::Drawing => "/feeds/download/drawings/Export",
            // Drive serves these from script.google.com; the emulator keeps one host for its links.
            DocKind::Script => "/feeds/download/scripts/Export",
            DocKind::Form => "/forms/export",
            DocKind::Vid => "/vids/export",
        }
    }

    /// exportFormat for an export mime type.
    pub fn format_for_mime(self, mime: &str) -> Option<&'static str> {
        self.formats().iter().find(|(m, _)| *m == mime).map(|(_, f)| *f)
    }

    /// A mime type for an exportFormat (the first listed).
    pub fn mime_for_format(self, format: &str) -> Option<&'static str> {
        self.formats().iter().find(|(_, f)| *f == format).map(|(m, _)| *m)
    }

    /// Kind from a Google Apps mime type.
    pub fn from_mime(mime: &str) -> Option<DocKind> {
        DocKind::ALL.into_iter().find(|k| k.mime() == mime)
    }

    /// Drive's `exportLinks` map for a document id.
    pub fn export_links(self, id: &str) -> serde_json::Map<String, serde_json::Value> {
        self.formats()
            .iter()
            .map(|(mime, fmt)| {
                let url = format!("https://docs.google.com{}?id={id}&exportFormat={fmt}", self.link_path());
                (mime.to_string(), serde_json::Value::String(url))
            })
            .collect()
    }
}

/// Size in bytes of one export format of a document revision.
pub(crate) fn export_size(id: &str, rev: u64, base: u64, format: &str) -> u64 {
    let h = content_key(id, rev, format);
    let percent = 80 + h % 51; // 80..=130 % of the base
    let jitter = (h >> 16) % 4096;
    (base + rev * 517) * percent / 100 + jitter
}

/// Key of the export bytes of one document revision and format.
pub(crate) fn export_key(id: &str, rev: u64, format: &str) -> u64 {
    content_key(id, rev, &format!("export:{format}"))
}
