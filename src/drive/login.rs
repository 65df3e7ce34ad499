//! `mirrorflow auth login`: a person signs in with their own Google account through an OAuth client
//! of type "installed" (the Google Cloud console's "Desktop app"), the way Google documents it for
//! installed apps: a loopback redirect on a free port, PKCE (S256), `state` against forged redirects,
//! `access_type=offline` for a refresh token. The client file's own `auth_uri` and `token_uri` are
//! used, so the same code talks to Google or to the emulator. Nothing secret is printed or logged.

use super::DriveError;
use super::token_cache::SignIn;
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An OAuth client of type "installed", read from `[source] credentials`.
#[derive(Clone)]
pub struct InstalledClient {
    /// Public id of the client.
    pub client_id: String,
    /// Google calls it a secret but documents that an installed app cannot keep it one; still never printed.
    pub client_secret: String,
    /// Where the consent screen is (Google's `accounts.google.com/o/oauth2/auth`).
    pub auth_uri: String,
    /// Where codes and refresh tokens are exchanged for access tokens.
    pub token_uri: String,
}

/// The `installed` (or `web`) object of a client file.
#[derive(serde::Deserialize)]
struct ClientFile {
    installed: Option<ClientFields>,
    web: Option<ClientFields>,
}

#[derive(serde::Deserialize)]
struct ClientFields {
    client_id: String,
    client_secret: String,
    #[serde(default = "google_auth_uri")]
    auth_uri: String,
    #[serde(default = "google_token_uri")]
    token_uri: String,
}

fn google_auth_uri() -> String {
    "https://accounts.google.com/o/oauth2/auth".into()
}

fn google_token_uri() -> String {
    super::auth::GOOGLE_TOKEN_URI.into()
}

impl InstalledClient {
    /// Parses a client file; a "web" client is refused (its redirect URIs are not loopback ones).
    pub fn parse(path: &Path, text: &str) -> Result<InstalledClient, DriveError> {
        let file: ClientFile = serde_json::from_str(text)
            .map_err(|e| DriveError::Auth(format!("OAuth client file {}: {e}", path.display())))?;
        if file.web.is_some() && file.installed.is_none() {
            return Err(DriveError::Auth(format!(
                "{} is a \"Web application\" OAuth client; create a \"Desktop app\" client in the Google Cloud \
                 console (APIs & Services → Credentials) and download its JSON",
                path.display()
            )));
        }
        let f = file.installed.ok_or_else(|| {
            DriveError::Auth(format!("{} is not an OAuth client file (no \"installed\" object)", path.display()))
        })?;
        Ok(InstalledClient {
            client_id: f.client_id,
            client_secret: f.client_secret,
            auth_uri: f.auth_uri,
            token_uri: f.token_uri,
        })
    }

    /// Google's revocation endpoint sits beside its token endpoint (`oauth2.googleapis.com/revoke`);
    /// a client file does not name it, so it is derived from `token_uri`.
    pub fn revoke_uri(&self) -> String {
        match self.token_uri.strip_suffix("token") {
            Some(base) => format!("{base}revoke"),
            None => "https://oauth2.googleapis.com/revoke".into(),
        }
    }
}

/// A PKCE pair (RFC 7636): the verifier stays here, its S256 challenge goes in the consent URL.
struct Pkce {
    verifier: String,
    challenge: String,
}

impl Pkce {
    fn new() -> Pkce {
        // 64 random bytes: an 86-character verifier, within RFC 7636's 43..=128.
        let verifier = random_text(64);
        let challenge = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
        Pkce { verifier, challenge }
    }
}

fn random_text(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// How the sign-in runs.
pub struct LoginOptions {
    /// The scope URL asked for.
    pub scope: String,
    /// Drive API root, for `about.user` (the signed-in account).
    pub api_base_url: String,
    /// How long to wait for the browser's redirect.
    pub wait: Duration,
    /// The loopback port to receive it on (`--port`), known before the URL is printed so that an
    /// `ssh -L N:127.0.0.1:N` tunnel can be set up first; `None`: any free port.
    pub port: Option<u16>,
}

/// The consent URL of one sign-in attempt.
fn consent_url(client: &InstalledClient, redirect: &str, scope: &str, state: &str, pkce: &Pkce) -> String {
    let mut url = client.auth_uri.clone();
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(
        &url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &client.client_id)
            .append_pair("redirect_uri", redirect)
            .append_pair("response_type", "code")
            .append_pair("scope", scope)
            .append_pair("state", state)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("access_type", "offline")
            // Consent every time: Google hands out a refresh token only on consent.
            .append_pair("prompt", "consent")
            .finish(),
    );
    url
}

/// Signs in: `present` is given the consent URL (to open a browser or print it); then waits for the
/// redirect, exchanges the code and asks Drive whose account it is.
pub async fn login(
    client: &InstalledClient,
    options: &LoginOptions,
    present: impl FnOnce(&str),
) -> Result<SignIn, DriveError> {
    let listener = TcpListener::bind(("127.0.0.1", options.port.unwrap_or(0))).await.map_err(|e| {
        DriveError::Auth(match options.port {
            Some(port) => format!(
                "cannot listen on 127.0.0.1:{port} for the sign-in (--port {port}): {e}; \
                 is another program (or an ssh tunnel's local end) using it? Choose another port"
            ),
            None => format!("cannot listen on a loopback port for the sign-in: {e}"),
        })
    })?;
    let port = listener.local_addr().map_err(|e| DriveError::Auth(e.to_string()))?.port();
    let redirect = format!("http://127.0.0.1:{port}/");
    let (state, pkce) = (random_text(24), Pkce::new());
    present(&consent_url(client, &redirect, &options.scope, &state, &pkce));
    let code = redirect_code(&listener, &state, options.wait).await?;
    let answer = exchange(client, &code, &redirect, &pkce.verifier).await?;
    let refresh_token = answer.refresh_token.ok_or_else(|| {
        DriveError::Auth(
            "Google gave no refresh token; remove mirrorflow's access in your Google account and sign in again".into(),
        )
    })?;
    let account = account_email(&options.api_base_url, &answer.access_token).await?;
    let scopes = answer.scope.unwrap_or_else(|| options.scope.clone());
    Ok(SignIn {
        account,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        client_id: client.client_id.clone(),
        refresh_token,
        access_token: Some(answer.access_token),
        expires_at: Some(time::OffsetDateTime::now_utc().unix_timestamp() + answer.expires_in.unwrap_or(0) as i64),
    })
}

/// The `code` of this sign-in's redirect, if it comes within `wait`.
async fn redirect_code(listener: &TcpListener, state: &str, wait: Duration) -> Result<String, DriveError> {
    tokio::time::timeout(wait, await_redirect(listener, state))
        .await
        .map_err(|_| DriveError::Auth(format!("no sign-in within {wait:?}; run `auth login` again")))?
}

/// Serves the loopback port until the redirect of this sign-in arrives; its `code`. A request with
/// another `state` is answered 400 and ignored: any local process can reach the port, and must not be
/// able to cancel the sign-in (RFC 8252 §8.9: the state only proves which redirect is ours).
async fn await_redirect(listener: &TcpListener, state: &str) -> Result<String, DriveError> {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let Some(target) = read_request_target(&mut stream).await else { continue };
        let query = url::Url::parse(&format!("http://127.0.0.1{target}"))
            .map(|u| u.query_pairs().into_owned().collect::<std::collections::HashMap<_, _>>())
            .unwrap_or_default();
        if !query.contains_key("code") && !query.contains_key("error") {
            respond(&mut stream, "404 Not Found", "Not the sign-in redirect.").await;
            continue;
        }
        if query.get("state").map(String::as_str) != Some(state) {
            respond(&mut stream, "400 Bad Request", "This redirect is not from the sign-in mirrorflow started.").await;
            tracing::warn!("ignored a request to the sign-in port whose state is not this sign-in's");
            continue;
        }
        if let Some(error) = query.get("error") {
            respond(&mut stream, "200 OK", "Sign-in cancelled. You can close this tab.").await;
            return Err(DriveError::Auth(format!("the sign-in was not completed: {error}")));
        }
        respond(&mut stream, "200 OK", "mirrorflow is signed in. You can close this tab.").await;
        return Ok(query.get("code").cloned().unwrap_or_default());
    }
}

/// The request target (`/?code=…`) of one HTTP/1 request, read within a few seconds.
async fn read_request_target(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.ok()??;
    let line = buf.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    (parts.next() == Some("GET")).then_some(())?;
    parts.next().map(str::to_owned)
}

async fn respond(stream: &mut tokio::net::TcpStream, status: &str, message: &str) {
    let body = format!("<!doctype html><title>mirrorflow</title><p>{message}</p>\n");
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The token endpoint's answer to a code exchange.
#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
    refresh_token: Option<String>,
    scope: Option<String>,
}

fn http() -> Result<reqwest::Client, DriveError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| DriveError::Transport(e.to_string()))
}

/// POSTs a form-encoded body, as OAuth endpoints take it.
async fn post_form(url: &str, pairs: &[(&str, &str)]) -> Result<reqwest::Response, DriveError> {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    http()?
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| DriveError::Transport(e.to_string()))
}

/// Exchanges the code (with the PKCE verifier) at the client's token endpoint.
async fn exchange(
    client: &InstalledClient,
    code: &str,
    redirect: &str,
    verifier: &str,
) -> Result<TokenAnswer, DriveError> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("client_id", &client.client_id),
        ("client_secret", &client.client_secret),
        ("redirect_uri", redirect),
        ("code_verifier", verifier),
    ];
    let resp = post_form(&client.token_uri, &form).await?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        return Err(DriveError::Auth(format!(
            "the token endpoint refused the sign-in ({status}: {} {})",
            body["error"].as_str().unwrap_or("?"),
            body["error_description"].as_str().unwrap_or("")
        )));
    }
    resp.json().await.map_err(|e| DriveError::Decode(format!("token endpoint answer: {e}")))
}

/// `about.user.emailAddress`: whose Drive this sign-in reaches.
async fn account_email(api_base_url: &str, access_token: &str) -> Result<String, DriveError> {
    let url = format!("{api_base_url}drive/v3/about?fields=user(emailAddress)");
    let resp =
        http()?.get(url).bearer_auth(access_token).send().await.map_err(|e| DriveError::Transport(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(DriveError::Auth(format!("Drive refused the new sign-in ({})", resp.status())));
    }
    let about: serde_json::Value = resp.json().await.map_err(|e| DriveError::Decode(e.to_string()))?;
    Ok(about["user"]["emailAddress"].as_str().unwrap_or("unknown account").to_string())
}

/// Revokes the sign-in's refresh token at Google (the access tokens it gave stop working too).
pub async fn revoke(client: &InstalledClient, sign_in: &SignIn) -> Result<(), DriveError> {
    let resp = post_form(&client.revoke_uri(), &[("token", sign_in.refresh_token.as_str())]).await?;
    match resp.status() {
        s if s.is_success() => Ok(()),
        // Already revoked or expired: the sign-in is gone either way.
        reqwest::StatusCode::BAD_REQUEST => Ok(()),
        s => Err(DriveError::Auth(format!("the revocation endpoint answered {s}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> InstalledClient {
        InstalledClient {
            client_id: "id.apps.googleusercontent.com".into(),
            client_secret: "GOCSPX-secret".into(),
            auth_uri: "https://accounts.google.com/o/oauth2/auth".into(),
            token_uri: "https://oauth2.googleapis.com/token".into(),
        }
    }

    #[test]
    fn the_consent_url_carries_pkce_state_and_offline_access_but_no_secret() {
        let pkce = Pkce::new();
        assert!((43..=128).contains(&pkce.verifier.len()));
        let url = consent_url(
            &client(),
            "http://127.0.0.1:5/",
            "https://www.googleapis.com/auth/drive.readonly",
            "st",
            &pkce,
        );
        let parsed = url::Url::parse(&url).unwrap();
        let q: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(
            q["code_challenge"],
            URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, pkce.verifier.as_bytes()))
        );
        assert_eq!((q["state"].as_str(), q["access_type"].as_str()), ("st", "offline"));
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:5/");
        assert!(!url.contains("GOCSPX") && !url.contains(&pkce.verifier));
    }

    /// Sends one GET to the sign-in port; the status line of the answer.
    async fn visit(port: u16, target: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!("GET {target} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer.lines().next().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn a_redirect_with_another_state_is_ignored_and_the_right_one_still_signs_in() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let waiting = tokio::spawn(async move { redirect_code(&listener, "right", Duration::from_secs(30)).await });
        assert!(visit(port, "/?code=forged&state=wrong").await.contains("400"));
        assert!(visit(port, "/?error=access_denied&state=wrong").await.contains("400"));
        assert!(visit(port, "/?code=forged").await.contains("400"), "no state at all");
        assert!(!waiting.is_finished(), "a forged redirect ended the sign-in");
        assert!(visit(port, "/?code=the-code&state=right").await.contains("200"));
        assert_eq!(waiting.await.unwrap().unwrap(), "the-code");
    }

    #[tokio::test]
    async fn a_sign_in_that_gets_only_forged_redirects_ends_at_the_time_out() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let wait = Duration::from_millis(700);
        let waiting = tokio::spawn(async move { redirect_code(&listener, "right", wait).await });
        assert!(visit(port, "/?code=forged&state=wrong").await.contains("400"));
        let e = waiting.await.unwrap().unwrap_err().to_string();
        assert!(e.contains("no sign-in within") && e.contains("auth login"), "{e}");
    }

    #[test]
    fn the_revoke_endpoint_sits_beside_the_token_endpoint() {
        assert_eq!(client().revoke_uri(), "https://oauth2.googleapis.com/revoke");
        let emu = InstalledClient { token_uri: "http://127.0.0.1:9/token".into(), ..client() };
        assert_eq!(emu.revoke_uri(), "http://127.0.0.1:9/revoke");
    }

    #[test]
    fn a_web_client_is_refused_with_what_to_create() {
        let e = InstalledClient::parse(Path::new("c.json"), r#"{"web":{"client_id":"a","client_secret":"b"}}"#);
        assert!(e.err().unwrap().to_string().contains("Desktop app"));
        let ok = InstalledClient::parse(Path::new("c.json"), r#"{"installed":{"client_id":"a","client_secret":"b"}}"#);
        assert_eq!(ok.unwrap().auth_uri, "https://accounts.google.com/o/oauth2/auth");
    }
}
