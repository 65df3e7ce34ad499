//! Router: Drive v3 paths, the token endpoint, exportLinks paths and the control API.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;

use super::api::{self, json_response};
use super::app::App;
use super::{changes_api, control, download_op, media};

/// `POST /token`: OAuth 2 token endpoint.
async fn token(AxState(app): AxState<Arc<App>>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let subject = |sub: Option<&str>| app.state().corpus.delegate(sub);
    let resp = match app.auth.grant(&form, &app.token_uri(), &subject) {
        Ok(t) => json_response(serde_json::json!(t)),
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            (status, json_response(e.body())).into_response()
        }
    };
    app.stats.count("token", resp.status().as_u16());
    resp
}

/// `GET /o/oauth2/auth` and `/o/oauth2/v2/auth`: the consent screen. The user consents at once: a 302
/// to the loopback `redirect_uri` with `code` and `state`; a bad request gets Google's error page.
async fn consent(AxState(app): AxState<Arc<App>>, Query(params): Query<HashMap<String, String>>) -> Response {
    let resp = match app.auth.consent(&params) {
        Ok((_code, location)) => (StatusCode::FOUND, [(http::header::LOCATION, location)]).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    app.stats.count("consent", resp.status().as_u16());
    resp
}

/// `POST /revoke` (Google's `oauth2.googleapis.com/revoke`): `token` in the form or the query.
async fn revoke(
    AxState(app): AxState<Arc<App>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let token = form.get("token").or_else(|| query.get("token")).cloned().unwrap_or_default();
    let resp = if app.auth.revoke(&token) {
        json_response(serde_json::json!({}))
    } else {
        let body = serde_json::json!({"error": "invalid_token", "error_description": "Token expired or revoked"});
        (StatusCode::BAD_REQUEST, json_response(body)).into_response()
    };
    app.stats.count("revoke", resp.status().as_u16());
    resp
}

/// All routes of the emulator.
pub(crate) fn router(app: Arc<App>) -> Router {
    let drive = Router::new()
        .route("/about", get(api::about))
        .route("/files", get(api::files_list))
        .route("/files/{id}", get(api::files_get))
        .route("/files/{id}/export", get(media::export))
        .route("/files/{id}/download", post(download_op::start))
        .route("/operations/{name}", get(download_op::get))
        .route("/changes/startPageToken", get(changes_api::start_page_token))
        .route("/changes", get(changes_api::changes_list))
        .route("/changes/watch", post(changes_api::watch))
        .route("/channels/stop", post(changes_api::channels_stop))
        .route("/drives", get(api::drives_list))
        .route("/drives/{id}", get(api::drives_get))
        .fallback(api::not_found);
    let control = Router::new()
        .route("/reset", post(control::reset))
        .route("/seed", post(control::seed))
        .route("/mutate", post(control::mutate))
        .route("/faults", get(control::faults_get).post(control::faults_set))
        .route("/tree", get(control::tree))
        .route("/stats", get(control::stats))
        .route("/stats/reset", post(control::stats_reset))
        .route("/expire_page_tokens", post(control::expire_page_tokens))
        .route("/refresh_token", post(control::refresh_token))
        .route("/revoke_refresh_tokens", post(control::revoke_refresh_tokens))
        .route("/revoke_access_tokens", post(control::revoke_access_tokens))
        .route("/oauth_client", post(control::oauth_client));
    let mut router = Router::new()
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .route("/o/oauth2/auth", get(consent))
        .route("/o/oauth2/v2/auth", get(consent))
        .nest("/drive/v3", drive)
        .route("/admin/directory/v1/users", get(super::directory::users_list))
        .nest("/_emu", control)
        .route("/feeds/download/drawings/export/{fmt}", get(media::export_link_fmt))
        .route("/download/{name}", get(download_op::content));
    for path in media::link_paths() {
        router = router.route(path, get(media::export_link));
    }
    router.with_state(app)
}
