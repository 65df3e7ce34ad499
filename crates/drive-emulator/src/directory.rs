//! Admin SDK Directory API `users.list` (`GET admin/directory/v1/users`), as Google documents it at
//! <https://developers.google.com/admin-sdk/directory/reference/rest/v1/users/list>: the
//! domain's users (suspended ones too, flagged), paged by `maxResults` (default 100, at most 500) and
//! `pageToken`, for a caller whose token carries a directory scope and who is an administrator.

use std::sync::Arc;

use axum::extract::{RawQuery, State as AxState};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::api::json_response;
use super::app::App;
use super::changes::{list_token, parse_list_token};
use super::domain::{CUSTOMER_ID, UserRec};
use super::errors::ApiError;
use super::params::Params;

/// Scopes that allow `users.list` (Google's "Authorization scopes" of the method).
const DIRECTORY_SCOPES: [&str; 3] = [
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
    "https://www.googleapis.com/auth/admin.directory.user",
    "https://www.googleapis.com/auth/cloud-platform",
];

/// Binds a page token to this listing.
const PAGE_FINGERPRINT: u64 = 0xd1_4ec7;

/// Directory `User` resource.
fn user_json(u: &UserRec) -> Value {
    let full = u.full_name();
    json!({
        "kind": "admin#directory#user",
        "id": u.id,
        "primaryEmail": u.email,
        "name": {"givenName": full, "familyName": "", "fullName": full},
        "isAdmin": u.admin,
        "isDelegatedAdmin": false,
        "suspended": u.suspended,
        "archived": false,
        "customerId": CUSTOMER_ID,
        "orgUnitPath": "/",
        "isMailboxSetup": true,
    })
}

/// The domain part of an email, lowercased.
fn domain_of(email: &str) -> String {
    email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default()
}

/// `GET /admin/directory/v1/users`.
pub(crate) async fn users_list(AxState(app): AxState<Arc<App>>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let p = Params::parse(q.as_deref());
    let (a, p) = (&*app, &p);
    app.gate("directory.users.list", &headers, false, |pass| async move {
        if !pass.caller.has_any_scope(&DIRECTORY_SCOPES) {
            return Err(ApiError::insufficient_scopes());
        }
        let max = p.int_in("maxResults", 100, 1, 500)?;
        let st = a.state();
        let c = &st.corpus;
        let caller = pass.viewer.as_deref().and_then(|v| c.user(v)).filter(|u| u.admin && !u.service_account);
        let caller = caller.ok_or_else(ApiError::not_authorized)?;
        let customer = p.get("customer").filter(|s| !s.is_empty());
        let domain = p.get("domain").filter(|s| !s.is_empty());
        match (customer, domain) {
            (None, None) => return Err(ApiError::bad_request("Bad Request")),
            (Some(cust), _) if cust != "my_customer" && cust != CUSTOMER_ID => return Err(ApiError::not_authorized()),
            (_, Some(d)) if !d.eq_ignore_ascii_case(&domain_of(&caller.email)) => {
                return Err(ApiError::not_authorized());
            }
            _ => {}
        }
        let wanted = domain.map(str::to_ascii_lowercase);
        let mut users: Vec<&UserRec> = c
            .users
            .iter()
            .filter(|u| !u.service_account && wanted.as_ref().is_none_or(|d| domain_of(&u.email) == *d))
            .collect();
        users.sort_by_key(|u| u.email.to_ascii_lowercase());
        let epoch = st.log.epoch.wrapping_add(st.list_epoch);
        let after = match p.get("pageToken").filter(|t| !t.is_empty()) {
            Some(t) => parse_list_token(t, epoch, PAGE_FINGERPRINT)
                .ok_or_else(|| ApiError::invalid_value("pageToken", "Invalid Input: pageToken"))?
                as usize,
            None => 0,
        };
        let page: Vec<Value> = users.iter().skip(after).take(max).map(|u| user_json(u)).collect();
        let etag = format!("\"{:x}\"", super::content::content_key(&format!("{page:?}"), 0, "etag"));
        let mut body = json!({"kind": "admin#directory#users", "etag": etag, "users": page});
        if after + max < users.len() {
            body["nextPageToken"] = json!(list_token(epoch, (after + max) as u64, PAGE_FINGERPRINT));
        }
        Ok(json_response(body))
    })
    .await
}

impl ApiError {
    /// A token without any scope the method needs: Google's 403 "Request had insufficient
    /// authentication scopes." (`insufficientPermissions`, `PERMISSION_DENIED`).
    pub fn insufficient_scopes() -> Self {
        let mut e = Self::bad_request("Request had insufficient authentication scopes.");
        e.status = StatusCode::FORBIDDEN;
        e.reason = "insufficientPermissions";
        e
    }

    /// A caller the Directory API refuses (not an administrator, or another customer or domain):
    /// Google's 403 "Not Authorized to access this resource/api" (`forbidden`).
    pub fn not_authorized() -> Self {
        let mut e = Self::bad_request("Not Authorized to access this resource/api");
        e.status = StatusCode::FORBIDDEN;
        e.reason = "forbidden";
        e
    }
}
