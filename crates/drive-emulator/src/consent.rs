//! Google's part of the installed-app sign-in (OAuth 2 authorization code with PKCE, RFC 7636): the
//! consent endpoint consents at once and redirects to the app's loopback `redirect_uri` with a
//! one-time code; the token endpoint then checks that code's client, redirect URI and PKCE verifier
//! as Google's does. Only loopback redirect URIs are accepted, as Google now requires for desktop
//! clients.

use std::collections::HashMap;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::auth::GrantError;
use super::model::now_ms;

/// How long a code may wait for its exchange (Google's are short-lived too).
const CODE_LIFETIME_MS: i64 = 10 * 60 * 1000;

/// An OAuth client of type "installed" (Google Cloud console's "Desktop app").
#[derive(Clone, Debug)]
pub(crate) struct InstalledClient {
    pub client_id: String,
    pub client_secret: String,
}

/// A code handed out by the consent endpoint, waiting for its exchange.
#[derive(Clone, Debug)]
pub(crate) struct PendingCode {
    client_id: String,
    redirect_uri: String,
    /// `(challenge, method)` when the request used PKCE.
    challenge: Option<(String, String)>,
    pub scope: String,
    expires_at_ms: i64,
}

/// Why the consent endpoint would not redirect (Google shows an error page instead).
#[derive(Debug, thiserror::Error)]
#[error("Error 400: {code}\n{detail}")]
pub(crate) struct ConsentError {
    /// Google's error name, e.g. `invalid_request`, `redirect_uri_mismatch`.
    pub code: &'static str,
    detail: String,
}

fn refuse(code: &'static str, detail: impl Into<String>) -> ConsentError {
    ConsentError { code, detail: detail.into() }
}

/// True for `http://127.0.0.1[:port]/…`, `http://[::1]…` and `http://localhost…`: the only redirect
/// URIs Google accepts for a desktop client.
fn is_loopback(uri: &str) -> bool {
    let Ok(url) = url::Url::parse(uri) else { return false };
    let host_ok = matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
    url.scheme() == "http" && host_ok && url.fragment().is_none()
}

/// Checks a consent request against the registered clients; the code to hand out when it is valid.
pub(crate) fn authorize(
    params: &HashMap<String, String>,
    clients: &[InstalledClient],
) -> Result<PendingCode, ConsentError> {
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let client_id =
        get("client_id").ok_or_else(|| refuse("invalid_request", "Missing required parameter: client_id"))?;
    if !clients.iter().any(|c| c.client_id == client_id) {
        return Err(refuse("invalid_client", "The OAuth client was not found."));
    }
    let redirect_uri =
        get("redirect_uri").ok_or_else(|| refuse("invalid_request", "Missing required parameter: redirect_uri"))?;
    if !is_loopback(redirect_uri) {
        return Err(refuse("redirect_uri_mismatch", format!("redirect_uri={redirect_uri} is not a loopback address")));
    }
    if get("response_type") != Some("code") {
        return Err(refuse("unsupported_response_type", "Invalid response_type: only code is supported"));
    }
    let scope = get("scope").ok_or_else(|| refuse("invalid_request", "Missing required parameter: scope"))?;
    let challenge = match (get("code_challenge"), get("code_challenge_method").unwrap_or("plain")) {
        (None, _) => None,
        (Some(c), m @ ("S256" | "plain")) => Some((c.to_string(), m.to_string())),
        (Some(_), m) => return Err(refuse("invalid_request", format!("Invalid code_challenge_method: {m}"))),
    };
    Ok(PendingCode {
        client_id: client_id.to_string(),
        redirect_uri: redirect_uri.to_string(),
        challenge,
        scope: scope.to_string(),
        expires_at_ms: now_ms() + CODE_LIFETIME_MS,
    })
}

/// The `Location` of the redirect that carries the code back to the app.
pub(crate) fn redirect_location(redirect_uri: &str, code: &str, params: &HashMap<String, String>) -> String {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => return redirect_uri.to_string(),
    };
    {
        let mut q = url.query_pairs_mut();
        if let Some(state) = params.get("state") {
            q.append_pair("state", state);
        }
        q.append_pair("code", code);
        q.append_pair("scope", params.get("scope").map(String::as_str).unwrap_or_default());
    }
    url.to_string()
}

/// Checks a code exchange (`grant_type=authorization_code`) against the code's pending request.
pub(crate) fn check_exchange(
    pending: &PendingCode,
    form: &HashMap<String, String>,
    clients: &[InstalledClient],
) -> Result<(), GrantError> {
    let client = clients
        .iter()
        .find(|c| Some(&c.client_id) == form.get("client_id"))
        .ok_or_else(|| GrantError::InvalidClient("The OAuth client was not found.".into()))?;
    if form.get("client_secret") != Some(&client.client_secret) {
        return Err(GrantError::InvalidClient("Unauthorized".into()));
    }
    if pending.expires_at_ms <= now_ms() || pending.client_id != client.client_id {
        return Err(GrantError::InvalidGrant("Malformed auth code.".into()));
    }
    if form.get("redirect_uri") != Some(&pending.redirect_uri) {
        return Err(GrantError::RedirectUriMismatch("Bad Request".into()));
    }
    let Some((challenge, method)) = &pending.challenge else { return Ok(()) };
    let verifier =
        form.get("code_verifier").ok_or_else(|| GrantError::InvalidGrant("Missing code verifier.".into()))?;
    let derived = match method.as_str() {
        "S256" => URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes())),
        _ => verifier.clone(),
    };
    if &derived == challenge { Ok(()) } else { Err(GrantError::InvalidGrant("Invalid code verifier.".into())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients() -> Vec<InstalledClient> {
        vec![InstalledClient { client_id: "c1".into(), client_secret: "s1".into() }]
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn request(redirect: &str) -> HashMap<String, String> {
        let challenge = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, b"verifier-123"));
        params(&[
            ("client_id", "c1"),
            ("redirect_uri", redirect),
            ("response_type", "code"),
            ("scope", "https://www.googleapis.com/auth/drive.readonly"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "xyz"),
        ])
    }

    #[test]
    fn only_loopback_redirects_of_known_clients_get_a_code() {
        assert!(authorize(&request("http://127.0.0.1:4321/"), &clients()).is_ok());
        assert!(authorize(&request("http://localhost:9/cb"), &clients()).is_ok());
        let remote = authorize(&request("https://evil.example/"), &clients()).unwrap_err();
        assert_eq!(remote.code, "redirect_uri_mismatch");
        let mut unknown = request("http://127.0.0.1:1/");
        unknown.insert("client_id".into(), "other".into());
        assert_eq!(authorize(&unknown, &clients()).unwrap_err().code, "invalid_client");
    }

    #[test]
    fn the_exchange_checks_client_redirect_and_pkce_verifier() {
        let pending = authorize(&request("http://127.0.0.1:4321/"), &clients()).unwrap();
        let exchange = |pairs: &[(&str, &str)]| check_exchange(&pending, &params(pairs), &clients());
        let good = [
            ("client_id", "c1"),
            ("client_secret", "s1"),
            ("redirect_uri", "http://127.0.0.1:4321/"),
            ("code_verifier", "verifier-123"),
        ];
        assert!(exchange(&good).is_ok());
        let mut wrong = good;
        wrong[3] = ("code_verifier", "verifier-124");
        assert!(matches!(exchange(&wrong), Err(GrantError::InvalidGrant(_))));
        assert!(matches!(exchange(&good[..3]), Err(GrantError::InvalidGrant(_))));
        let mut moved = good;
        moved[2] = ("redirect_uri", "http://127.0.0.1:4322/");
        assert!(matches!(exchange(&moved), Err(GrantError::RedirectUriMismatch(_))));
        let mut secret = good;
        secret[1] = ("client_secret", "nope");
        assert!(matches!(exchange(&secret), Err(GrantError::InvalidClient(_))));
    }
}
