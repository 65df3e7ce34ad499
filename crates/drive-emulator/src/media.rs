//! Content endpoints: alt=media (with Range), files.export, and the docs.google.com exportLinks paths.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State as AxState};
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::api::visible;
use super::app::{App, Pass};
use super::body::{GenBody, RangeSpec, parse_range};
use super::content::{DocKind, EXPORT_LIMIT, export_key, export_size};
use super::errors::ApiError;
use super::model::Kind;
use super::params::Params;
use super::stats::ByteCounter;

/// What to stream and how to label it.
pub(crate) struct Source {
    pub key: u64,
    pub size: u64,
    pub content_type: String,
    pub file_id: String,
    pub export: bool,
    pub disposition: Option<String>,
    /// Who downloads it (`downloads_by_user`); `None` is the single user.
    pub user: Option<String>,
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// Build the streamed response for `src`, honouring `range` and an injected reset.
pub(crate) fn stream(app: &App, src: Source, range: RangeSpec, pass: Pass) -> Result<Response, ApiError> {
    let (start, end, status) = match range {
        RangeSpec::Full => (0, src.size, StatusCode::OK),
        RangeSpec::Part(a, b) => (a, b + 1, StatusCode::PARTIAL_CONTENT),
        RangeSpec::Unsatisfiable => return Err(ApiError::range_not_satisfiable(src.size)),
    };
    let len = end - start;
    let abort_at = pass.reset.filter(|_| len > 1).map(|f| start + ((len as f64 * f) as u64).clamp(1, len - 1));
    app.stats.count_download(&src.file_id, src.user.as_deref());
    let counter =
        ByteCounter { stats: app.stats.clone(), export: src.export, file_id: src.file_id.clone(), pending: 0 };
    let flip_at = (pass.corrupt && !src.export && src.size > 0).then_some(src.size / 2);
    let body = GenBody { key: src.key, pos: start, end, abort_at, flip_at, counter }.into_body();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, header_value(&src.content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(header::CONTENT_RANGE, header_value(&format!("bytes {start}-{}/{}", end - 1, src.size)));
    }
    if let Some(d) = src.disposition {
        h.insert(header::CONTENT_DISPOSITION, header_value(&d));
    }
    Ok(resp)
}

/// alt=media for a binary file.
pub(crate) async fn media(
    app: &App,
    id: &str,
    p: &Params,
    headers: &HeaderMap,
    pass: Pass,
) -> Result<Response, ApiError> {
    let ack = p.flag("acknowledgeAbuse", false)?;
    let viewer = pass.viewer.clone();
    let src = {
        let mut st = app.state();
        if app.faults.deletes_on_download(id) {
            let _ = st.apply(&super::MutateOp::Delete { id: id.to_string(), user: viewer.clone() });
        }
        let item = visible(&st, id, p, viewer.as_deref())?;
        let Kind::Binary { blob, .. } = &item.kind else {
            return Err(ApiError::not_downloadable());
        };
        if let Some(key) = &item.resource_key
            && !resource_key_given(headers, id, key)
        {
            // A link-shared file the user never opened: without its key Drive does not show it.
            return Err(ApiError::file_not_found(id));
        }
        if !item.can_download {
            return Err(ApiError::cannot_download());
        }
        // `acknowledgeAbuse` applies only to the file's owner, or an organizer of its shared drive
        // (the emulator's user organizes every shared drive it has).
        let may_acknowledge = item.drive_id.is_some() || !item.foreign;
        if (item.abusive || app.faults.is_abusive(&item.id)) && !(ack && may_acknowledge) {
            return Err(ApiError::abusive());
        }
        if app.faults.quota_exceeded(&item.id) {
            return Err(ApiError::download_quota_exceeded());
        }
        Source {
            key: blob.key,
            size: blob.size,
            content_type: item.mime.clone(),
            file_id: item.id.clone(),
            export: false,
            disposition: None,
            user: viewer,
        }
    };
    let range = parse_range(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), src.size);
    stream(app, src, range, pass)
}

/// Whether `X-Goog-Drive-Resource-Keys` (`fileId/resourceKey`, comma-separated) holds `id`'s key.
pub(crate) fn resource_key_given(headers: &HeaderMap, id: &str, key: &str) -> bool {
    headers
        .get_all("x-goog-drive-resource-keys")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|pair| pair.trim().split_once('/') == Some((id, key)))
}

/// Export source for a document and format; `limit` applies files.export's 10 MB cap.
fn export_source(
    app: &App,
    id: &str,
    format: Format<'_>,
    limit: bool,
    viewer: Option<String>,
) -> Result<Source, ApiError> {
    let st = app.state();
    let item = st.corpus.get(id).filter(|i| st.corpus.sees(viewer.as_deref(), i));
    let item = item.ok_or_else(|| ApiError::file_not_found(id))?;
    let Kind::Doc { kind, rev, export_base } = &item.kind else {
        return Err(ApiError::not_exportable());
    };
    if !item.can_download {
        return Err(ApiError::cannot_download());
    }
    if kind.formats().is_empty() {
        return Err(ApiError::not_exportable());
    }
    let (fmt, mime) = match format {
        Format::Mime(m) => (kind.format_for_mime(m).ok_or_else(ApiError::unsupported_conversion)?, m.to_string()),
        Format::Name(f) => (f, kind.mime_for_format(f).ok_or_else(ApiError::unsupported_conversion)?.to_string()),
    };
    let size = export_size(&item.id, *rev, *export_base, fmt);
    if limit && size > EXPORT_LIMIT {
        return Err(ApiError::export_too_large());
    }
    let disposition = (!limit).then(|| content_disposition(&item.name, fmt));
    Ok(Source {
        key: export_key(&item.id, *rev, fmt),
        size,
        content_type: mime,
        file_id: item.id.clone(),
        export: true,
        disposition,
        user: viewer,
    })
}

enum Format<'a> {
    Mime(&'a str),
    Name(&'a str),
}

fn content_disposition(name: &str, fmt: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(format!("{name}.{fmt}").as_bytes()).collect();
    format!("attachment; filename=\"export.{fmt}\"; filename*=UTF-8''{}", encoded.replace('+', "%20"))
}

/// `GET /drive/v3/files/{id}/export?mimeType=...`.
pub(crate) async fn export(
    AxState(app): AxState<Arc<App>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let p = Params::parse(q.as_deref());
    let (a, p, id) = (&*app, &p, &id);
    app.gate("files.export", &headers, true, |pass| async move {
        let mime = p.require("mimeType")?;
        let src = export_source(a, id, Format::Mime(mime), true, pass.viewer.clone())?;
        stream(a, src, RangeSpec::Full, pass)
    })
    .await
}

/// The docs.google.com exportLinks paths (`?id=..&exportFormat=..`), no size limit.
pub(crate) async fn export_link(
    AxState(app): AxState<Arc<App>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    link_inner(app, None, q, headers).await
}

/// Drawings' `/feeds/download/drawings/export/{fmt}?id=..` variant.
pub(crate) async fn export_link_fmt(
    AxState(app): AxState<Arc<App>>,
    Path(fmt): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    link_inner(app, Some(fmt), q, headers).await
}

async fn link_inner(app: Arc<App>, path_fmt: Option<String>, q: Option<String>, headers: HeaderMap) -> Response {
    let p = Params::parse(q.as_deref());
    let (a, p, path_fmt) = (&*app, &p, &path_fmt);
    app.gate("export_link", &headers, true, |pass| async move {
        let app = a;
        let id = p.require("id")?;
        let fmt = p
            .get("exportFormat")
            .or(path_fmt.as_deref())
            .ok_or_else(|| ApiError::required("exportFormat", "Required parameter: exportFormat"))?;
        let src = export_source(app, id, Format::Name(fmt), false, pass.viewer.clone())?;
        stream(app, src, RangeSpec::Full, pass)
    })
    .await
}

/// Keep `DocKind` in this module's vocabulary for the router.
pub(crate) fn link_paths() -> Vec<&'static str> {
    DocKind::ALL.iter().filter(|k| !k.formats().is_empty()).map(|k| k.link_path()).collect()
}
