//! What one file becomes in the mirror: written (from which source, with which extension), skipped
//! (Drive will not hand it over, or has nothing to hand), or dead-lettered (too large to mirror). The
//! planner acts on it; `verify` expects by it.

use super::Layout;
use crate::mirror::export::ExportConfig;
use crate::model::{DriveFile, Refused, SkipReason, Source};
use serde::{Deserialize, Serialize};

/// Why one file is not mirrored, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipRecord {
    /// [`SkipReason::label`]: `download_disabled`, `abusive`, `no_export` or `quota_deferred`.
    pub reason: String,
    /// The Drive version refused; a newer one is tried again.
    pub version: u64,
    /// Drive name, for humans.
    pub name: String,
    /// When it was skipped (Unix ms).
    pub at_unix_ms: u64,
    /// A quota deferral's end (Unix ms): until then the file is not asked for.
    pub until_unix_ms: Option<u64>,
}

impl SkipRecord {
    /// True when an event of `version` seen at `now_ms` is still refused by this record: same version,
    /// and not a deferral that has ended.
    pub fn still_refuses(&self, version: u64, now_ms: u64) -> bool {
        self.version == version && self.until_unix_ms.is_none_or(|until| now_ms < until)
    }
}

/// What the mirror holds for one file.
#[derive(Clone, Debug, PartialEq)]
pub enum Disposition {
    /// An object, with these bytes, at a key ending in `ext` (an export's or a link's extension).
    Write {
        /// Where the bytes come from.
        source: Source,
        /// The extension the key gets.
        ext: Option<String>,
    },
    /// Nothing: Drive will not hand this version over, or has no bytes for it.
    Skip(SkipReason),
    /// Nothing, and an error for the operator: the file is too large. Its key (with `ext`) is still
    /// claimed, so the dead letter names where it would go.
    DeadLetter {
        /// The extension the key gets.
        ext: Option<String>,
        /// The dead-letter reason (`fileTooLarge`, `destination_too_large`).
        reason: &'static str,
        /// What to tell the operator.
        error: String,
    },
}

/// What `file` becomes under `layout`, given the store's record of an earlier refusal (`skip`) and
/// the time (`now_ms`, Unix ms). `file` is as planned: a shortcut already resolved and digested.
pub fn disposition(file: &DriveFile, layout: &Layout, skip: Option<&SkipRecord>, now_ms: u64) -> Disposition {
    if !file.is_shortcut()
        && let Some(reason) = refused(file, skip, now_ms)
    {
        return Disposition::Skip(reason);
    }
    let (source, ext) = match form(file, &layout.export) {
        Ok(form) => form,
        Err(reason) => return Disposition::Skip(reason),
    };
    match too_large(file, layout) {
        Some((reason, error)) => Disposition::DeadLetter { ext, reason, error },
        None => Disposition::Write { source, ext },
    }
}

/// Where a file's bytes come from and the extension its key gets: a shortcut's link (`.url`), a
/// download-only Google type, an export (`Err(NoExport)` when Drive has none: a Form, Site, Map…),
/// or the file's own bytes.
pub fn form(file: &DriveFile, export: &ExportConfig) -> Result<(Source, Option<String>), SkipReason> {
    if file.is_shortcut() {
        return Ok((Source::Link { body: file.link_body() }, Some("url".to_string())));
    }
    if let Some(vid) = crate::mirror::export::download_only(&file.mime_type) {
        return Ok((Source::Download { mime: vid.mime.to_string() }, Some(vid.ext.to_string())));
    }
    if !file.is_google_doc() {
        return Ok((Source::Media, None));
    }
    let Some(format) = export.format_for(&file.mime_type) else {
        return Err(SkipReason::NoExport(Refused::of(file)));
    };
    let (mime, ext) = (format.mime.to_string(), format.ext.to_string());
    let link = file.export_links.get(&mime).cloned();
    Ok((Source::Export { mime, link }, Some(ext)))
}

/// Why Drive will not hand this version over, known without asking it: the owner disabled
/// downloads (`capabilities.canDownload`), or the store recorded a refusal of this very version
/// (flagged abusive, or a download quota deferral not yet over). A new version is tried again.
fn refused(file: &DriveFile, skip: Option<&SkipRecord>, now_ms: u64) -> Option<SkipReason> {
    if !file.can_download {
        return Some(SkipReason::DownloadDisabled(Refused::of(file)));
    }
    let rec = skip.filter(|r| r.still_refuses(file.version, now_ms))?;
    let refused = Refused::of(file);
    match rec.reason.as_str() {
        "abusive" => Some(SkipReason::Abusive(refused)),
        "abusive_not_owned" => Some(SkipReason::AbusiveNotOwned(refused)),
        "quota_deferred" => Some(SkipReason::QuotaDeferred(refused)),
        _ => None,
    }
}

/// Why a file is too large to mirror, before any byte of it is downloaded: over `[source]
/// max_file_size` (`fileTooLarge`), or over `[destination] max_file_size`, the store's own limit
/// (`destination_too_large`, as the store's refusal of a larger upload is reported).
pub fn too_large(file: &DriveFile, layout: &Layout) -> Option<(&'static str, String)> {
    let size = file.size?;
    if let Some(max) = layout.max_file_size.filter(|max| size > *max) {
        return Some(("fileTooLarge", format!("{size} bytes is over max_file_size {max}")));
    }
    let max = layout.dest_max_file_size.filter(|max| size > *max)?;
    let (size, max) = (crate::mirror::refusal::human_size(size), crate::mirror::refusal::human_size(max));
    let error = format!(
        "{size} over destination.max_file_size ({max}), the store's limit: raise the store's file size \
         limit and destination.max_file_size, then `mirrorflow dlq retry`"
    );
    Some((crate::mirror::refusal::Refusal::TooLarge.reason(), error))
}
