//! Drive v3 metadata endpoints: about, files.list, files.get, drives.list/get.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State as AxState};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};
use serde_json::{Value, json};

use super::app::App;
use super::changes::{list_token, parse_list_token};
use super::content::{content_key, ensure_digests};
use super::errors::ApiError;
use super::fields::{self, Mask, mask_for};
use super::media;
use super::model::Item;
use super::params::Params;
use super::query::{self, Query};
use super::resources::{about_json, drive_json};
use super::state::{Pending, Scope, State, attach_digests};

/// JSON answer with Google's content type.
pub(crate) fn json_response(v: Value) -> Response {
    let mut resp = axum::Json(v).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
    resp
}

/// True if a mask asks for any checksum below `prefix`.
pub(crate) fn wants_digests(mask: &Mask, prefix: &[&str]) -> bool {
    ["md5Checksum", "sha1Checksum", "sha256Checksum"].iter().any(|f| {
        let mut path = prefix.to_vec();
        path.push(f);
        mask.selects(&path)
    })
}

/// Compute pending checksums off the lock and attach them (at `/file` for changes when `nested`).
pub(crate) async fn finish(pending: Vec<Pending>, nested: bool) -> Vec<Value> {
    let blobs = pending.iter().filter_map(|(_, b)| b.clone()).collect();
    ensure_digests(blobs).await;
    pending
        .into_iter()
        .map(|(mut v, blob)| {
            if let Some(blob) = blob {
                let target = if nested { v.get_mut("file") } else { Some(&mut v) };
                if let Some(t) = target {
                    attach_digests(t, &blob);
                }
            }
            v
        })
        .collect()
}

/// `GET /drive/v3/about`.
pub(crate) async fn about(AxState(app): AxState<Arc<App>>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let p = Params::parse(q.as_deref());
    let app = &*app;
    app.gate("about.get", &headers, false, |pass| async move {
        let fields = p
            .get("fields")
            .ok_or_else(|| ApiError::required("fields", "The 'fields' parameter is required for this method."))?;
        let mask = mask_for(Some(fields), "", &fields::ABOUT)?;
        let body = about_json(&app.state().corpus, pass.viewer.as_deref());
        Ok(json_response(mask.apply(body)))
    })
    .await
}

/// Which corpus a files.list covers, validated like Drive does.
fn list_scope(p: &Params) -> Result<Scope, ApiError> {
    let include_all = p.flag("includeItemsFromAllDrives", false)? || p.flag("includeTeamDriveItems", false)?;
    let drive_id = p.get("driveId").or_else(|| p.get("teamDriveId")).filter(|d| !d.is_empty());
    let default_corpora = if drive_id.is_some() { "drive" } else { "user" };
    let corpora = p.get("corpora").or_else(|| p.get("corpus")).unwrap_or(default_corpora);
    let need_all = || {
        ApiError::invalid_value(
            "includeItemsFromAllDrives",
            "The includeItemsFromAllDrives parameter must be set to true when corpora is drive or allDrives.",
        )
    };
    match corpora {
        "user" | "domain" => match drive_id {
            Some(_) => Err(ApiError::invalid_value(
                "driveId",
                "The driveId parameter must be specified if and only if corpora is set to drive.",
            )),
            None if include_all => Ok(Scope::All),
            None => Ok(Scope::MyDrive),
        },
        "drive" => {
            let d = drive_id.ok_or_else(|| {
                ApiError::required(
                    "driveId",
                    "The driveId parameter must be specified if and only if corpora is set to drive.",
                )
            })?;
            if include_all { Ok(Scope::Drive(d.to_string())) } else { Err(need_all()) }
        }
        "allDrives" => {
            if include_all {
                Ok(Scope::All)
            } else {
                Err(need_all())
            }
        }
        other => Err(ApiError::invalid_value("corpora", format!("Invalid Value: {other}"))),
    }
}

/// Fingerprint binding a page token to its query.
fn fingerprint(scope: &Scope, q: &Query) -> u64 {
    content_key(&format!("{scope:?}|{q:?}"), 0, "list") & 0xffff_ffff
}

/// `GET /drive/v3/files`.
pub(crate) async fn files_list(AxState(app): AxState<Arc<App>>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let p = Params::parse(q.as_deref());
    app.gate("files.list", &headers, false, |pass| list_inner(&app, &p, pass.viewer)).await
}

async fn list_inner(app: &App, p: &Params, viewer: Option<String>) -> Result<Response, ApiError> {
    let viewer = viewer.as_deref();
    let mask = mask_for(p.get("fields"), fields::DEFAULT_FILE_LIST, &fields::FILE_LIST)?;
    let query = query::parse(p.get("q").unwrap_or(""))?;
    let page_size = p.int_in("pageSize", 100, 1, 1000)?;
    let mut scope = list_scope(p)?;
    // Google: an `allDrives` search may not cover every corpus; the fault searches My Drive only.
    let incomplete =
        p.get("corpora").or_else(|| p.get("corpus")) == Some("allDrives") && app.faults.incomplete_all_drives();
    if incomplete {
        scope = Scope::MyDrive;
    }
    let with_digests = wants_digests(&mask, &["files"]);
    let fp = fingerprint(&scope, &query);
    let (pending, next) = {
        let st = app.state();
        if let Scope::Drive(d) = &scope
            && (st.corpus.drive(d).is_none() || !st.member(viewer, d))
        {
            return Err(ApiError::drive_not_found(d));
        }
        let after = match p.get("pageToken").filter(|t| !t.is_empty()) {
            Some(t) => parse_list_token(t, st.log.epoch.wrapping_add(st.list_epoch), fp)
                .ok_or_else(|| ApiError::invalid_value("pageToken", "Invalid Value"))?,
            None => 0,
        };
        let size = page_size.min(st.config.page_size_max.max(1));
        let (items, more) = st.list(&scope, &query, after, size, viewer);
        let next = if more {
            items.last().map(|i| list_token(st.log.epoch.wrapping_add(st.list_epoch), i.seq, fp))
        } else {
            None
        };
        let pending: Vec<Pending> = items.iter().map(|i| st.render(i, with_digests, viewer)).collect();
        (pending, next)
    };
    let files = finish(pending, false).await;
    let mut body = json!({"kind": "drive#fileList", "incompleteSearch": incomplete, "files": files});
    if let Some(n) = next {
        body["nextPageToken"] = json!(n);
    }
    Ok(json_response(mask.apply(body)))
}

/// Item by id as visible to this request (shared-drive items need `supportsAllDrives`; in domain
/// mode only what `viewer` may see exists for them).
pub(crate) fn visible<'a>(st: &'a State, id: &str, p: &Params, viewer: Option<&str>) -> Result<&'a Item, ApiError> {
    let supports_all = p.flag("supportsAllDrives", false)? || p.flag("supportsTeamDrives", false)?;
    let item = st.corpus.items.get(st.corpus.resolve_for(id, viewer)).ok_or_else(|| ApiError::file_not_found(id))?;
    if item.drive_id.is_some() && !supports_all || !st.corpus.sees(viewer, item) {
        return Err(ApiError::file_not_found(id));
    }
    Ok(item)
}

/// `GET /drive/v3/files/{id}` (metadata, or content with `alt=media`).
pub(crate) async fn files_get(
    AxState(app): AxState<Arc<App>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let p = Params::parse(q.as_deref());
    let (app, id, headers) = (&*app, &id, &headers);
    if p.get("alt") == Some("media") {
        return app.gate("files.get.media", headers, true, |pass| media::media(app, id, &p, headers, pass)).await;
    }
    app.gate("files.get", headers, false, |pass| async move {
        let viewer = pass.viewer.as_deref();
        let mask = mask_for(p.get("fields"), fields::DEFAULT_FILE, &fields::FILE_NODE)?;
        let with_digests = wants_digests(&mask, &[]);
        let pending = {
            let st = app.state();
            let item = visible(&st, id, &p, viewer)?;
            if item.unopened_link_share()
                && let Some(key) = &item.resource_key
                && !media::resource_key_given(headers, &item.id, key)
            {
                // Another user's link-shared file this user never opened: Drive shows it only to a
                // request that carries its resource key.
                return Err(ApiError::file_not_found(id));
            }
            st.render(item, with_digests, viewer)
        };
        let value = finish(vec![pending], false).await.pop().unwrap_or_default();
        Ok(json_response(mask.apply(value)))
    })
    .await
}

/// `GET /drive/v3/drives`.
pub(crate) async fn drives_list(
    AxState(app): AxState<Arc<App>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let p = Params::parse(q.as_deref());
    let app = &*app;
    app.gate("drives.list", &headers, false, |pass| async move {
        let mask = mask_for(p.get("fields"), fields::DEFAULT_DRIVE_LIST, &fields::DRIVE_LIST)?;
        let page_size = p.int_in("pageSize", 10, 1, 100)?;
        let st = app.state();
        let after = match p.get("pageToken").filter(|t| !t.is_empty()) {
            Some(t) => parse_list_token(t, st.log.epoch.wrapping_add(st.list_epoch), 0xd71e)
                .ok_or_else(|| ApiError::invalid_value("pageToken", "Invalid Value"))?,
            None => 0,
        } as usize;
        let mine: Vec<_> = st.corpus.drives.iter().filter(|d| st.member(pass.viewer.as_deref(), &d.id)).collect();
        let drives: Vec<Value> = mine.iter().skip(after).take(page_size).map(|d| drive_json(d)).collect();
        let mut body = json!({"kind": "drive#driveList", "drives": drives});
        if after + page_size < mine.len() {
            body["nextPageToken"] =
                json!(list_token(st.log.epoch.wrapping_add(st.list_epoch), (after + page_size) as u64, 0xd71e));
        }
        Ok(json_response(mask.apply(body)))
    })
    .await
}

/// `GET /drive/v3/drives/{id}`.
pub(crate) async fn drives_get(
    AxState(app): AxState<Arc<App>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let p = Params::parse(q.as_deref());
    let app = &*app;
    app.gate("drives.get", &headers, false, |pass| async move {
        let mask = mask_for(p.get("fields"), fields::DEFAULT_DRIVE, &fields::DRIVE_NODE)?;
        let st = app.state();
        let drive = st.corpus.drive(&id).filter(|d| st.member(pass.viewer.as_deref(), &d.id));
        let drive = drive.ok_or_else(|| ApiError::drive_not_found(&id))?;
        Ok(json_response(mask.apply(drive_json(drive))))
    })
    .await
}

/// Any other path under `/drive/v3/`.
pub(crate) async fn not_found(uri: http::Uri) -> Response {
    ApiError::route_not_found(uri.path()).into_response()
}
