//! The Admin SDK Directory's `users.list`: which users a domain has, for `[source] subjects =
//! "domain"`. Asked as an administrator (the service account impersonates `[source] subject`) with the
//! read-only user scope, at `<api_base_url>admin/directory/v1/users`, where Google serves it beside
//! admin.googleapis.com (so the bundled emulator, or another Drive implementation, can serve it too).

use super::auth::{Auth, Credentials, connector};
use super::error::DriveError;
use crate::retry::RetryPolicy;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// The scope `users.list` needs (granted to the service account's client id in the Admin console's
/// domain-wide delegation, beside Drive's).
pub const DIRECTORY_SCOPE: &str = "https://www.googleapis.com/auth/admin.directory.user.readonly";

/// The most users one page holds (Google's `maxResults` limit).
const PAGE_SIZE: u32 = 500;

/// One user of the domain, as the directory lists them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryUser {
    /// The user's primary email: the subject their Drive is read as.
    pub primary_email: String,
    /// A suspended user cannot be impersonated; their Drive is not mirrored.
    #[serde(default)]
    pub suspended: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsersPage {
    #[serde(default)]
    users: Vec<DirectoryUser>,
    next_page_token: Option<String>,
}

/// A Directory client acting as one administrator.
pub struct Directory {
    auth: Auth,
    http: reqwest::Client,
    users_url: String,
    retry: RetryPolicy,
}

impl Directory {
    /// Signs in as `admin` through the service-account key at `key`.
    pub async fn connect(
        key: &Path,
        admin: &str,
        api_base_url: &str,
        retry: RetryPolicy,
        timeout: Duration,
    ) -> Result<Directory, DriveError> {
        crate::install_crypto_provider();
        let creds = Credentials {
            path: key.to_path_buf(),
            subject: Some(admin.to_string()),
            token_cache: None,
            scope: DIRECTORY_SCOPE.to_string(),
        };
        let auth = Auth::from_credentials(&creds, connector()?).await?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            .build()
            .map_err(|e| DriveError::Transport(e.to_string()))?;
        let users_url = format!("{api_base_url}admin/directory/v1/users");
        Ok(Directory { auth, http, users_url, retry })
    }

    /// Every user of the administrator's account (`customer=my_customer`), all pages, in email order.
    pub async fn users(&self) -> Result<Vec<DirectoryUser>, DriveError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.retry.run("directory", || self.page(token.as_deref())).await?;
            out.extend(page.users);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    async fn page(&self, token: Option<&str>) -> Result<UsersPage, DriveError> {
        let bearer = self.auth.token().await?;
        let mut query = vec![
            ("customer", "my_customer".to_string()),
            ("maxResults", PAGE_SIZE.to_string()),
            ("orderBy", "email".to_string()),
        ];
        if let Some(t) = token {
            query.push(("pageToken", t.to_string()));
        }
        let url = url::Url::parse_with_params(&self.users_url, &query)
            .map_err(|e| DriveError::Decode(format!("users.list URL: {e}")))?;
        let resp =
            self.http.get(url).bearer_auth(bearer).send().await.map_err(|e| DriveError::Transport(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(super::error_from_response(resp).await);
        }
        resp.json::<UsersPage>().await.map_err(|e| DriveError::Decode(format!("users.list: {e}")))
    }
}

/// The users whose Drives are mirrored: the active ones, each once (lower-cased email), in order.
pub fn active_users(users: &[DirectoryUser]) -> Vec<String> {
    let mut emails: Vec<String> =
        users.iter().filter(|u| !u.suspended).map(|u| u.primary_email.trim().to_lowercase()).collect();
    emails.sort();
    emails.dedup();
    emails
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(email: &str, suspended: bool) -> DirectoryUser {
        DirectoryUser { primary_email: email.into(), suspended }
    }

    #[test]
    fn suspended_users_are_left_out_and_each_user_counts_once() {
        let users = [user("Bob@example.com", false), user("carol@example.com", true), user("bob@example.com", false)];
        assert_eq!(active_users(&users), vec!["bob@example.com".to_string()]);
    }

    #[test]
    fn a_page_as_google_sends_it_parses() {
        let page: UsersPage = serde_json::from_str(
            r#"{"kind":"admin#directory#users","users":[{"id":"1","primaryEmail":"a@example.com","suspended":false,
                "name":{"fullName":"A"}},{"primaryEmail":"b@example.com","suspended":true}],"nextPageToken":"t2"}"#,
        )
        .expect("parses");
        assert_eq!(page.users, vec![user("a@example.com", false), user("b@example.com", true)]);
        assert_eq!(page.next_page_token.as_deref(), Some("t2"));
        let last: UsersPage = serde_json::from_str(r#"{"kind":"admin#directory#users"}"#).expect("parses");
        assert!(last.users.is_empty() && last.next_page_token.is_none());
    }
}
