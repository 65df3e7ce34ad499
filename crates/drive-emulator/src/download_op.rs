//! `files.download` as Drive documents it: `POST files/{id}/download` starts a long-running operation,
//! `operations.get` polls it until `done`, and the finished operation's `response.downloadUri` serves
//! the bytes. The only way Drive hands over a Google Vid (as MP4); the emulator supports it for Vids
//! and binary files.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State as AxState};
use axum::response::Response;
use http::HeaderMap;
use serde_json::{Value, json};

use super::api::{json_response, visible};
use super::app::App;
use super::body::parse_range;
use super::content::{DocKind, content_key};
use super::errors::ApiError;
use super::media::{Source, stream};
use super::model::Kind;
use super::params::Params;

/// The MIME type a Vid is downloaded as.
pub const VID_MIME: &str = "video/mp4";

/// `operations.get` answers this many times with `done: false` before the operation is done, so a
/// client must poll.
const POLLS_BEFORE_DONE: u32 = 1;

/// One started download: what it serves, and how many polls remain until it is done.
#[derive(Debug, Clone)]
pub(crate) struct DownloadOp {
    file_id: String,
    key: u64,
    size: u64,
    content_type: String,
    polls_left: u32,
    /// Who started it (counted as the downloader).
    user: Option<String>,
}

/// The MP4 size of a Vid revision.
pub(crate) fn vid_size(id: &str, rev: u64, base: u64) -> u64 {
    base + rev * 733 + content_key(id, rev, "vid") % 4096
}

/// `POST /drive/v3/files/{id}/download[?mimeType=..]`.
pub(crate) async fn start(
    AxState(app): AxState<Arc<App>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let p = Params::parse(q.as_deref());
    let (a, p, id) = (&*app, &p, &id);
    app.gate("files.download", &headers, false, |pass| async move {
        let mut st = a.state();
        let item = visible(&st, id, p, pass.viewer.as_deref())?;
        if !item.can_download {
            return Err(ApiError::cannot_download());
        }
        let (key, size, content_type) = match &item.kind {
            Kind::Doc { kind: DocKind::Vid, rev, export_base } => {
                if p.get("mimeType").is_some_and(|m| m != VID_MIME) {
                    return Err(ApiError::unsupported_conversion());
                }
                (content_key(&item.id, *rev, "vid"), vid_size(&item.id, *rev, *export_base), VID_MIME.to_string())
            }
            Kind::Binary { blob, .. } if p.get("mimeType").is_none() => (blob.key, blob.size, item.mime.clone()),
            _ => return Err(ApiError::not_exportable()),
        };
        let file_id = item.id.clone();
        let name = format!("dl{:016x}", st.corpus.rng.next_u64());
        let op = DownloadOp { file_id, key, size, content_type, polls_left: POLLS_BEFORE_DONE, user: pass.viewer };
        st.operations.insert(name.clone(), op);
        Ok(json_response(json!({"name": name, "done": false})))
    })
    .await
}

/// `GET /drive/v3/operations/{name}`.
pub(crate) async fn get(AxState(app): AxState<Arc<App>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let (a, name) = (&*app, &name);
    app.gate("operations.get", &headers, false, |_| async move {
        let mut st = a.state();
        let op = st.operations.get_mut(name).ok_or_else(|| ApiError::file_not_found(name))?;
        if op.polls_left > 0 {
            op.polls_left -= 1;
            return Ok(json_response(json!({"name": name, "done": false})));
        }
        Ok(json_response(done(&a.base_url, name)))
    })
    .await
}

fn done(base_url: &str, name: &str) -> Value {
    json!({
        "name": name,
        "done": true,
        "response": {
            "@type": "type.googleapis.com/google.apps.drive.v3.DownloadFileResponse",
            "downloadUri": format!("{base_url}download/{name}"),
            "partialDownloadAllowed": true,
        },
    })
}

/// `GET /download/{name}`: the bytes of a done operation (bearer token required, Range honoured).
pub(crate) async fn content(AxState(app): AxState<Arc<App>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let (a, name, h) = (&*app, &name, &headers);
    app.gate("download_uri", &headers, true, |pass| async move {
        let src = {
            let st = a.state();
            let op = st.operations.get(name).filter(|o| o.polls_left == 0);
            let op = op.ok_or_else(|| ApiError::file_not_found(name))?;
            Source {
                key: op.key,
                size: op.size,
                content_type: op.content_type.clone(),
                file_id: op.file_id.clone(),
                export: false,
                disposition: None,
                user: op.user.clone(),
            }
        };
        let range = parse_range(h.get(http::header::RANGE).and_then(|v| v.to_str().ok()), src.size);
        stream(a, src, range, pass)
    })
    .await
}
