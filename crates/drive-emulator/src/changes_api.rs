//! Drive v3 change-feed endpoints: changes.getStartPageToken, changes.list, changes.watch, channels.stop.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State as AxState};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use super::api::{finish, json_response, wants_digests};
use super::app::App;
use super::errors::ApiError;
use super::fields::{self, mask_for};
use super::params::Params;
use super::state::ChangesRequest;
use super::watch::{StopRequest, WatchRequest};

fn check_drive(app: &App, p: &Params, viewer: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(d) = p.get("driveId").or_else(|| p.get("teamDriveId")).filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    let st = app.state();
    if st.corpus.drive(d).is_none() || !st.member(viewer, d) {
        return Err(ApiError::drive_not_found(d));
    }
    Ok(Some(d.to_string()))
}

/// `GET /drive/v3/changes/startPageToken`.
pub(crate) async fn start_page_token(
    AxState(app): AxState<Arc<App>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let p = Params::parse(q.as_deref());
    let app = &*app;
    app.gate("changes.getStartPageToken", &headers, false, |pass| async move {
        let mask = mask_for(p.get("fields"), "kind,startPageToken", &fields::START_TOKEN)?;
        p.flag("supportsAllDrives", false)?;
        check_drive(app, &p, pass.viewer.as_deref())?;
        let st = app.state();
        let token = st.log.token(st.log.records.len());
        Ok(json_response(mask.apply(json!({"kind": "drive#startPageToken", "startPageToken": token}))))
    })
    .await
}

fn invalid_token() -> ApiError {
    ApiError::invalid_value("pageToken", "Invalid Value")
}

/// The parameters `changes.list` and `changes.watch` share: which changes of which log.
fn changes_request(app: &App, p: &Params, viewer: Option<String>) -> Result<ChangesRequest, ApiError> {
    let drive = check_drive(app, p, viewer.as_deref())?;
    Ok(ChangesRequest {
        pos: 0,
        page_size: p.int_in("pageSize", 100, 1, 1000)?,
        include_removed: p.flag("includeRemoved", true)?,
        all_drives: drive.is_some()
            || p.flag("includeItemsFromAllDrives", false)?
            || p.flag("includeTeamDriveItems", false)?,
        restrict_to_my_drive: p.flag("restrictToMyDrive", false)?,
        drive,
        with_digests: false,
        viewer,
    })
}

/// `GET /drive/v3/changes`.
pub(crate) async fn changes_list(
    AxState(app): AxState<Arc<App>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let p = Params::parse(q.as_deref());
    app.gate("changes.list", &headers, false, |pass| list_inner(&app, &p, pass.viewer)).await
}

async fn list_inner(app: &App, p: &Params, viewer: Option<String>) -> Result<Response, ApiError> {
    let mask = mask_for(p.get("fields"), fields::DEFAULT_CHANGE_LIST, &fields::CHANGE_LIST)?;
    if let Some(unknown) = app.faults.unknown_change_fields().into_iter().find(|f| mask.names(&["changes", f])) {
        return Err(ApiError::invalid_fields(&format!("changes/{unknown}")));
    }
    let token = p.require("pageToken")?;
    let mut req = changes_request(app, p, viewer)?;
    req.with_digests = wants_digests(&mask, &["changes", "file"]);
    let (page, next, new_start) = {
        let st = app.state();
        req.pos = st.log.parse_token(token).ok_or_else(invalid_token)?;
        req.page_size = req.page_size.min(st.config.page_size_max.max(1));
        let page = st.changes(&req);
        let next = page.next_pos.map(|n| st.log.token(n));
        let new_start = page.new_start_pos.map(|n| st.log.token(n));
        (page.changes, next, new_start)
    };
    let changes = finish(page, true).await;
    let mut body = json!({"kind": "drive#changeList", "changes": changes});
    if let Some(n) = next {
        body["nextPageToken"] = json!(n);
    }
    if let Some(n) = new_start {
        body["newStartPageToken"] = json!(n);
    }
    Ok(json_response(mask.apply(body)))
}

/// `POST /drive/v3/changes/watch`.
pub(crate) async fn watch(
    AxState(app): AxState<Arc<App>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref());
    let app = &*app;
    app.gate("changes.watch", &headers, false, |pass| async move {
        let token = p.require("pageToken")?;
        app.state().log.parse_token(token).ok_or_else(invalid_token)?;
        let filter = changes_request(app, &p, pass.viewer)?;
        let req: WatchRequest =
            serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("Parse Error: {e}")))?;
        let mut uri = format!("{}drive/v3/changes?alt=json&pageToken={token}", app.base_url);
        if let Some(d) = &filter.drive {
            uri.push_str(&format!("&driveId={d}"));
        }
        let channel = app.watch.open(req, uri, filter)?;
        Ok(json_response(channel))
    })
    .await
}

/// `POST /drive/v3/channels/stop`.
pub(crate) async fn channels_stop(AxState(app): AxState<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    app.gate("channels.stop", &headers, false, |_| async {
        let req: StopRequest =
            serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("Parse Error: {e}")))?;
        if app.watch.stop(&req) {
            Ok(StatusCode::NO_CONTENT.into_response())
        } else {
            Err(ApiError::channel_not_found(req.id.as_deref().unwrap_or("")))
        }
    })
    .await
}
