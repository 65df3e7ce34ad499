//! The `/_emu/` control API (JSON, no auth): reset, seed, mutate, faults, tree, stats, refresh tokens.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State as AxState};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::EmulatorConfig;
use super::api::json_response;
use super::app::App;
use super::content::{DocKind, ensure_digests, export_size};
use super::faults::FaultSettings;
use super::model::{Kind, rfc3339};
use super::mutate::{MutateError, MutateOp};
use super::params::Params;
use super::state::State;

/// The expected mirror: every existing item (trashed included) plus drives and the root id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmuTree {
    /// Id of My Drive's root folder (parents of top-level My Drive items).
    pub root_id: String,
    /// Shared drives (their ids are the parents of their top-level items).
    pub drives: Vec<EmuDrive>,
    /// Items in listing (creation) order; roots are not included.
    pub items: Vec<EmuItem>,
}

/// A shared drive in [`EmuTree`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmuDrive {
    /// Drive id (also its root folder id).
    pub id: String,
    /// Display name.
    pub name: String,
}

/// One item of [`EmuTree`], with what a correct mirror must hold for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmuItem {
    /// Drive file id.
    pub id: String,
    /// Raw name (may contain `/`, control characters, ...).
    pub name: String,
    /// Parent folder ids.
    pub parents: Vec<String>,
    /// Drive mime type.
    pub mime_type: String,
    /// Byte size for binary files.
    pub size: Option<u64>,
    /// Hex md5 for binary files (None when `?checksums=false`).
    pub md5: Option<String>,
    /// Hex sha256 for binary files (None when `?checksums=false`).
    pub sha256: Option<String>,
    /// Effective trashed state (explicitly or via a trashed ancestor).
    pub trashed: bool,
    /// Trashed by itself.
    pub explicitly_trashed: bool,
    /// Shared drive id, None for My Drive.
    pub drive_id: Option<String>,
    /// Drive `version`.
    pub version: u64,
    /// Drive `modifiedTime`.
    pub modified_time: String,
    /// Target id for shortcuts.
    pub shortcut_target: Option<String>,
    /// Export mime type → export size in bytes, for Google Docs Editors files.
    pub export_sizes: Option<BTreeMap<String, u64>>,
    /// alt=media needs `acknowledgeAbuse=true`, which only the owner (or a shared drive's organizer)
    /// can give.
    pub abusive: bool,
    /// False when the owner disabled downloads (`capabilities.canDownload`): no mirror can hold it.
    #[serde(default = "yes")]
    pub can_download: bool,
    /// Shared with the user directly by another user (`sharedWithMeTime` is set): with no parent the
    /// user can see, it is a top item of `[source] shared_with_me`.
    #[serde(default)]
    pub shared_with_me: bool,
    /// Drive's `webViewLink`: what a shortcut's `.url` object opens.
    #[serde(default)]
    pub web_view_link: String,
}

fn yes() -> bool {
    true
}

fn summary(st: &State) -> Value {
    let c = &st.corpus;
    let live = c.order.values().filter_map(|id| c.items.get(id));
    let (mut folders, mut files, mut docs, mut shortcuts, mut trashed, mut items) = (0, 0, 0, 0, 0, 0);
    for item in live {
        items += 1;
        match item.kind {
            Kind::Folder => folders += 1,
            Kind::Binary { .. } => files += 1,
            Kind::Doc { .. } => docs += 1,
            Kind::Shortcut { .. } => shortcuts += 1,
        }
        if c.is_trashed(&item.id) {
            trashed += 1;
        }
    }
    json!({
        "root_id": c.root_id, "items": items, "folders": folders, "files": files, "docs": docs,
        "shortcuts": shortcuts, "trashed": trashed, "drives": c.drives.len(),
        "changes": st.log.records.len(), "start_page_token": st.log.token(st.log.records.len()),
    })
}

/// Parse a control body (empty = all defaults); the error is a ready 400 response.
fn parse_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let answer = json!({"error": format!("invalid body: {e}")});
        Box::new((StatusCode::BAD_REQUEST, axum::Json(answer)).into_response())
    })
}

/// `POST /_emu/reset`: back to the current seed's corpus, changes cleared.
pub(crate) async fn reset(AxState(app): AxState<Arc<App>>) -> Response {
    let config = app.state().config.clone();
    app.regenerate(config);
    json_response(summary(&app.state()))
}

/// `POST /_emu/seed`: regenerate with new knobs (missing ones take defaults).
pub(crate) async fn seed(AxState(app): AxState<Arc<App>>, body: Bytes) -> Response {
    let config: EmulatorConfig = match parse_body(&body) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    app.auth.set_default_lifetime(config.token_lifetime_secs);
    app.regenerate(config);
    json_response(summary(&app.state()))
}

/// Body of `POST /_emu/mutate`.
#[derive(Debug, Default, Deserialize)]
struct MutateBody {
    #[serde(default)]
    ops: Vec<MutateOp>,
}

/// `POST /_emu/mutate`: apply ops in order; stops at the first failing one.
pub(crate) async fn mutate(AxState(app): AxState<Arc<App>>, body: Bytes) -> Response {
    let req: MutateBody = match parse_body(&body) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let (status, value) = {
        let mut st = app.state();
        let before = st.log.records.len();
        let mut created = Vec::new();
        let mut failure = None;
        for (i, op) in req.ops.iter().enumerate() {
            match st.apply(op) {
                Ok(ids) => created.extend(ids),
                Err(e) => {
                    failure = Some((i, e));
                    break;
                }
            }
        }
        app.watch.notify_change(|filter| st.changed_since(before, filter));
        let mut value = json!({"created": created, "applied": failure.as_ref().map_or(req.ops.len(), |f| f.0), "summary": summary(&st)});
        let status = match &failure {
            None => StatusCode::OK,
            Some((_, MutateError::NotFound(_))) => StatusCode::NOT_FOUND,
            Some((_, MutateError::Invalid(_))) => StatusCode::BAD_REQUEST,
        };
        if let Some((_, e)) = failure {
            value["error"] = json!(e.to_string());
        }
        (status, value)
    };
    (status, json_response(value)).into_response()
}

/// `GET /_emu/faults`.
pub(crate) async fn faults_get(AxState(app): AxState<Arc<App>>) -> Response {
    json_response(json!(app.faults.get()))
}

/// `POST /_emu/faults`: replace the fault settings (missing fields = off).
pub(crate) async fn faults_set(AxState(app): AxState<Arc<App>>, body: Bytes) -> Response {
    let settings: FaultSettings = match parse_body(&body) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    app.auth.set_lifetime(settings.token_lifetime_secs);
    app.faults.set(settings);
    json_response(json!(app.faults.get()))
}

/// `GET /_emu/tree[?checksums=false][&user=EMAIL]`.
pub(crate) async fn tree(AxState(app): AxState<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref());
    let with_checksums = p.get("checksums") != Some("false");
    json_response(json!(full_tree(&app, with_checksums, p.get("user")).await))
}

/// Whose view a tree shows.
enum TreeOf {
    /// Every item.
    All,
    /// What this account sees.
    User(String),
    /// Nothing (an unknown account).
    Nobody,
}

/// Build the tree (of what `user` sees, when given); checksums are computed off the state lock when
/// asked for.
pub(crate) async fn full_tree(app: &App, with_checksums: bool, user: Option<&str>) -> EmuTree {
    let (mut tree, blobs) = {
        let st = app.state();
        let of = match user {
            None => TreeOf::All,
            Some(u) => match st.corpus.user(u) {
                Some(rec) if st.corpus.is_domain() => TreeOf::User(rec.email.clone()),
                _ if !st.corpus.is_domain() && u.eq_ignore_ascii_case(super::resources::USER_EMAIL) => TreeOf::All,
                _ => TreeOf::Nobody,
            },
        };
        build_tree(&st, app, &of)
    };
    if with_checksums {
        ensure_digests(blobs.iter().flatten().cloned().collect()).await;
        for (item, blob) in tree.items.iter_mut().zip(&blobs) {
            if let Some(d) = blob.as_ref().map(|b| b.digests()) {
                item.md5 = Some(d.md5.clone());
                item.sha256 = Some(d.sha256.clone());
            }
        }
    }
    tree
}

type Blobs = Vec<Option<Arc<super::content::Blob>>>;

fn build_tree(st: &State, app: &App, of: &TreeOf) -> (EmuTree, Blobs) {
    let c = &st.corpus;
    let viewer = match of {
        TreeOf::User(u) => Some(u.as_str()),
        _ => None,
    };
    let shown = |item: &&super::model::Item| match of {
        TreeOf::All => true,
        TreeOf::User(u) => c.sees(Some(u), item),
        TreeOf::Nobody => false,
    };
    let mut items = Vec::new();
    let mut blobs = Vec::new();
    for item in c.order.values().filter_map(|id| c.items.get(id)).filter(shown) {
        let (blob, shortcut_target, export_sizes) = match &item.kind {
            Kind::Binary { blob, .. } => (Some(blob.clone()), None, None),
            Kind::Shortcut { target_id, .. } => (None, Some(target_id.clone()), None),
            Kind::Doc { kind: DocKind::Vid, rev, export_base } => {
                let size = super::download_op::vid_size(&item.id, *rev, *export_base);
                (None, None, Some(BTreeMap::from([(super::download_op::VID_MIME.to_string(), size)])))
            }
            Kind::Doc { kind, rev, export_base } => {
                let sizes = kind
                    .formats()
                    .iter()
                    .map(|(mime, fmt)| (mime.to_string(), export_size(&item.id, *rev, *export_base, fmt)))
                    .collect();
                (None, None, Some(sizes))
            }
            Kind::Folder => (None, None, None),
        };
        items.push(EmuItem {
            id: item.id.clone(),
            name: item.name.clone(),
            parents: item.parents.clone(),
            mime_type: item.mime.clone(),
            size: item.size(),
            md5: None,
            sha256: None,
            trashed: c.is_trashed(&item.id),
            explicitly_trashed: item.explicitly_trashed,
            drive_id: item.drive_id.clone(),
            version: item.version,
            modified_time: rfc3339(item.modified_ms),
            shortcut_target,
            export_sizes,
            abusive: item.abusive || app.faults.is_abusive(&item.id),
            can_download: item.can_download,
            shared_with_me: match viewer {
                Some(v) => c.shared_with(v, item).is_some(),
                None => item.shared_with_me_ms.is_some(),
            },
            web_view_link: super::resources::web_view_link(item),
        });
        blobs.push(blob);
    }
    let drives = c
        .drives
        .iter()
        .filter(|d| !matches!(of, TreeOf::Nobody) && st.member(viewer, &d.id))
        .map(|d| EmuDrive { id: d.id.clone(), name: d.name.clone() })
        .collect();
    let root_id = match of {
        TreeOf::Nobody => String::new(),
        _ => c.root_for(viewer).to_string(),
    };
    (EmuTree { root_id, drives, items }, blobs)
}

/// `GET /_emu/stats`.
pub(crate) async fn stats(AxState(app): AxState<Arc<App>>) -> Response {
    json_response(json!(app.stats.snapshot()))
}

/// `POST /_emu/expire_page_tokens`: every `files.list` page token handed out so far is rejected from
/// now on (400 `invalid`), as Drive may do with an old page token; change tokens keep working.
pub(crate) async fn expire_page_tokens(AxState(app): AxState<Arc<App>>) -> Response {
    let mut st = app.state();
    st.list_epoch = st.list_epoch.wrapping_add(1);
    json_response(json!({"list_epoch": st.list_epoch}))
}

/// `POST /_emu/stats/reset`.
pub(crate) async fn stats_reset(AxState(app): AxState<Arc<App>>) -> Response {
    app.stats.reset();
    json_response(json!(app.stats.snapshot()))
}

/// `POST /_emu/refresh_token`: mint a refresh token for the refresh grant.
pub(crate) async fn refresh_token(AxState(app): AxState<Arc<App>>) -> Response {
    let (refresh_token, client_id, client_secret) = app.auth.mint_refresh_token();
    json_response(
        json!({"refresh_token": refresh_token, "client_id": client_id, "client_secret": client_secret, "token_uri": app.token_uri()}),
    )
}

/// `POST /_emu/revoke_refresh_tokens`: every refresh token minted so far is refused from now on
/// (`invalid_grant`), and every access token is void.
pub(crate) async fn revoke_refresh_tokens(AxState(app): AxState<Arc<App>>) -> Response {
    app.auth.revoke_refresh_tokens();
    json_response(json!({"revoked": true}))
}

/// `POST /_emu/revoke_access_tokens`: every access token issued so far is refused from now on (401
/// "Invalid Credentials"); refresh tokens and service-account keys still mint new ones.
pub(crate) async fn revoke_access_tokens(AxState(app): AxState<Arc<App>>) -> Response {
    let revoked = app.auth.revoke_access_tokens();
    json_response(json!({"revoked": revoked}))
}

/// `POST /_emu/oauth_client`: a new OAuth client of type "installed", as the Google Cloud console's
/// "Desktop app" download writes it (its `auth_uri` and `token_uri` point at this emulator).
pub(crate) async fn oauth_client(AxState(app): AxState<Arc<App>>) -> Response {
    let client = app.auth.new_installed_client();
    json_response(json!({"installed": {
        "client_id": client.client_id,
        "project_id": "mirrorflow-emulator",
        "auth_uri": format!("{}o/oauth2/auth", app.base_url),
        "token_uri": app.token_uri(),
        "auth_provider_x509_cert_url": format!("{}oauth2/v1/certs", app.base_url),
        "client_secret": client.client_secret,
        "redirect_uris": ["http://localhost"],
    }}))
}
