//! OAuth through yup-oauth2. `[source] credentials` is told apart by its content: a service-account
//! key (JWT-bearer grant; `subject` for domain-wide delegation), an `authorized_user` file
//! (`client_id`, `client_secret`, `refresh_token`, as `gcloud auth application-default login` writes
//! it; refresh-token grant), or an OAuth client of type "installed" whose sign-in `mirrorflow auth
//! login` saved in `[source] token_cache`. All take their token endpoint from the file (`token_uri`,
//! Google's by default), so the same code talks to Google or to the emulator.

use super::DriveError;
use google_drive3::api::Scope;
use google_drive3::hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use google_drive3::hyper_util::client::legacy::connect::HttpConnector;
use google_drive3::yup_oauth2::authenticator_delegate::InstalledFlowDelegate;
use google_drive3::yup_oauth2::storage::{TokenInfo, TokenStorage, TokenStorageError};
use google_drive3::yup_oauth2::{self, ApplicationSecret, authenticator::Authenticator};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// The OAuth scope URL of a `[source] scope` name: `drive.readonly` (the default) or `drive`, short or
/// as a full URL. Metadata-only scopes are refused: they cannot read file content.
pub fn scope_url(name: &str) -> Option<String> {
    const BASE: &str = "https://www.googleapis.com/auth/";
    let short = name.strip_prefix(BASE).unwrap_or(name);
    matches!(short, "drive.readonly" | "drive").then(|| format!("{BASE}{short}"))
}

/// Where the credentials are and what they are for (`[source] credentials`, `subject`,
/// `token_cache`, `scope`).
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The JSON file: service-account key, `authorized_user` file or installed OAuth client.
    pub path: std::path::PathBuf,
    /// Impersonated user (service accounts with domain-wide delegation).
    pub subject: Option<String>,
    /// The sign-in saved by `auth login` (installed OAuth clients).
    pub token_cache: Option<std::path::PathBuf>,
    /// The scope URL tokens are asked for.
    pub scope: String,
}

/// A cloneable token source shared by the hub and the media downloads.
#[derive(Clone)]
pub struct Auth {
    pub(super) inner: Authenticator<HttpsConnector<HttpConnector>>,
    scope: String,
    /// Set once the token endpoint refused the refresh token (revoked or expired): every later call
    /// fails at once with [`DriveError::SignInRefused`] instead of being retried.
    refused: Arc<Mutex<Option<String>>>,
    /// Forced renewals (after Drive's 401) one at a time, and how many have been done.
    renewals: Arc<Renewals>,
    /// A service account's `subject`: the user it acts as through domain-wide delegation.
    delegated_to: Option<String>,
}

/// Which access token a call used, as the count of forced renewals before it: a 401 renews the token
/// only if no other call renewed it since, so many calls refused at once cause one renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenGeneration(u64);

/// The forced-renewal state shared by every clone of one [`Auth`].
#[derive(Default)]
struct Renewals {
    /// Bumped after each forced renewal, once the new token is in the storage.
    generation: std::sync::atomic::AtomicU64,
    /// Held while renewing.
    lock: tokio::sync::Mutex<()>,
}

/// Google's token endpoint, for an `authorized_user` file that names none.
pub(super) const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// An `authorized_user` credentials file.
#[derive(serde::Deserialize)]
struct AuthorizedUser {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    #[serde(default)]
    token_uri: Option<String>,
}

/// The refresh token of an `authorized_user` file, kept in memory only (that file is never rewritten).
struct RefreshTokenStore {
    token: Mutex<TokenInfo>,
}

#[async_trait::async_trait]
impl TokenStorage for RefreshTokenStore {
    async fn set(&self, _scopes: &[&str], token: TokenInfo) -> Result<(), TokenStorageError> {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = token;
        Ok(())
    }

    async fn get(&self, _scopes: &[&str]) -> Option<TokenInfo> {
        Some(self.token.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// yup-oauth2 falls back to an interactive consent when a refresh fails. mirrorflow never prompts:
/// this delegate fails instead, after asking the token endpoint once whether the refresh token itself
/// was refused (`invalid_grant`: the run must end and the user sign in again) or the endpoint was
/// only unreachable (retried like any transient failure).
struct NoPrompt {
    probe: RefreshProbe,
    refused: Arc<Mutex<Option<String>>>,
}

/// What is needed to ask the token endpoint about the refresh token.
#[derive(Clone)]
struct RefreshProbe {
    token_uri: String,
    form: Vec<(&'static str, String)>,
    source: String,
    /// What the user must do to sign in again.
    remedy: String,
}

impl RefreshProbe {
    fn new(client_id: &str, client_secret: &str, refresh_token: &str, token_uri: String, source: &Path) -> Self {
        RefreshProbe {
            token_uri,
            form: vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", refresh_token.into()),
                ("client_id", client_id.into()),
                ("client_secret", client_secret.into()),
            ],
            source: source.display().to_string(),
            remedy: String::new(),
        }
    }

    fn remedy(self, remedy: &str) -> Self {
        RefreshProbe { remedy: remedy.into(), ..self }
    }

    /// `Some(why)` when the endpoint answers `invalid_grant` (or `unauthorized_client`).
    async fn refused(&self) -> Option<String> {
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().ok()?;
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&self.form).finish();
        let resp = client
            .post(&self.token_uri)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .ok()?;
        if resp.status() != reqwest::StatusCode::BAD_REQUEST && resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return None;
        }
        let body: serde_json::Value = resp.json().await.ok()?;
        let error = body["error"].as_str()?;
        matches!(error, "invalid_grant" | "unauthorized_client" | "invalid_client").then(|| {
            format!(
                "the token endpoint refused the refresh token of {} ({error}): it was revoked or has expired; {}",
                self.source, self.remedy
            )
        })
    }
}

impl InstalledFlowDelegate for NoPrompt {
    fn present_user_url<'a>(
        &'a self,
        _url: &'a str,
        _need_code: bool,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            let why = self.probe.refused().await;
            if let Some(why) = &why {
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
            }
            Err(why.unwrap_or_else(|| "could not refresh the access token".into()))
        })
    }
}

/// An https-or-http connector with native roots, HTTP/1 and HTTP/2.
pub fn connector() -> Result<HttpsConnector<HttpConnector>, DriveError> {
    Ok(HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| DriveError::Auth(format!("no TLS roots: {e}")))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build())
}

impl Auth {
    /// Reads `[source] credentials` and builds the authenticator its kind needs.
    pub async fn from_credentials(
        creds: &Credentials,
        connector: HttpsConnector<HttpConnector>,
    ) -> Result<Auth, DriveError> {
        let path = creds.path.as_path();
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| DriveError::Auth(format!("cannot read credentials {}: {e}", path.display())))?;
        let kind: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| DriveError::Auth(format!("credentials {} are not JSON: {e}", path.display())))?;
        let auth = match kind["type"].as_str() {
            Some("authorized_user") => Self::authorized_user(path, &text, connector).await,
            Some("service_account") => Self::service_account(path, creds.subject.clone(), connector).await,
            _ if kind.get("installed").is_some() || kind.get("web").is_some() => {
                Self::installed(creds, &text, connector).await
            }
            other => Err(DriveError::Auth(format!(
                "credentials {}: type {:?} is not supported (a service_account key, an authorized_user file \
                 or a \"Desktop app\" OAuth client)",
                path.display(),
                other.unwrap_or("missing")
            ))),
        }?;
        Ok(Auth { scope: creds.scope.clone(), ..auth })
    }

    /// A user's own account from an `authorized_user` file: access tokens come from its refresh token.
    async fn authorized_user(
        path: &Path,
        text: &str,
        connector: HttpsConnector<HttpConnector>,
    ) -> Result<Auth, DriveError> {
        let user: AuthorizedUser =
            serde_json::from_str(text).map_err(|e| DriveError::Auth(format!("credentials {}: {e}", path.display())))?;
        let token_uri = user.token_uri.clone().unwrap_or_else(|| GOOGLE_TOKEN_URI.into());
        // Expired from the start: the first call refreshes it.
        let stored = TokenInfo {
            access_token: None,
            refresh_token: Some(user.refresh_token.clone()),
            expires_at: Some(time::OffsetDateTime::UNIX_EPOCH),
            id_token: None,
        };
        let probe = RefreshProbe::new(&user.client_id, &user.client_secret, &user.refresh_token, token_uri, path);
        let remedy = "sign in again and write a new authorized_user file (gcloud auth application-default login)";
        let storage = Box::new(RefreshTokenStore { token: Mutex::new(stored) });
        Self::refresh_flow(&user.client_id, &user.client_secret, storage, probe.remedy(remedy), connector).await
    }

    /// A person signed in with `mirrorflow auth login` through an installed OAuth client: the refresh
    /// token is in `[source] token_cache`, where refreshed access tokens are saved too.
    async fn installed(
        creds: &Credentials,
        text: &str,
        connector: HttpsConnector<HttpConnector>,
    ) -> Result<Auth, DriveError> {
        let client = super::login::InstalledClient::parse(&creds.path, text)?;
        let cache = creds.token_cache.clone().ok_or_else(|| {
            DriveError::Auth(format!(
                "credentials {} is an OAuth client: set [source] token_cache and sign in with `mirrorflow auth login`",
                creds.path.display()
            ))
        })?;
        let remedy = "sign in again with `mirrorflow auth login`";
        let sign_in = super::token_cache::SignIn::load(&cache)?.ok_or_else(|| {
            DriveError::SignInRefused(format!("nobody is signed in (no token cache at {}): {remedy}", cache.display()))
        })?;
        if sign_in.client_id != client.client_id {
            return Err(DriveError::SignInRefused(format!(
                "the token cache {} belongs to another OAuth client: {remedy}",
                cache.display()
            )));
        }
        let probe = RefreshProbe::new(
            &client.client_id,
            &client.client_secret,
            &sign_in.refresh_token,
            client.token_uri.clone(),
            &cache,
        );
        let storage = Box::new(super::token_cache::CacheStore::new(cache, sign_in));
        Self::refresh_flow(&client.client_id, &client.client_secret, storage, probe.remedy(remedy), connector).await
    }

    /// An authenticator that gets access tokens from a stored refresh token and never prompts.
    async fn refresh_flow(
        client_id: &str,
        client_secret: &str,
        storage: Box<dyn TokenStorage>,
        probe: RefreshProbe,
        connector: HttpsConnector<HttpConnector>,
    ) -> Result<Auth, DriveError> {
        let secret = ApplicationSecret {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            token_uri: probe.token_uri.clone(),
            ..Default::default()
        };
        let refused = Arc::new(Mutex::new(None));
        let client = google_drive3::hyper_util::client::legacy::Client::builder(
            google_drive3::hyper_util::rt::TokioExecutor::new(),
        )
        .build::<_, String>(connector);
        let inner = yup_oauth2::InstalledFlowAuthenticator::with_client(
            secret,
            // Interactive: a delegate error ends the flow (the redirect method would wait for a browser).
            yup_oauth2::InstalledFlowReturnMethod::Interactive,
            yup_oauth2::CustomHyperClientBuilder::from(client),
        )
        .with_storage(storage)
        .flow_delegate(Box::new(NoPrompt { probe, refused: refused.clone() }))
        .build()
        .await
        .map_err(|e| DriveError::Auth(e.to_string()))?;
        Ok(Auth { inner, refused, scope: String::new(), renewals: Arc::default(), delegated_to: None })
    }

    /// Reads the key file and builds the service-account authenticator.
    pub async fn service_account(
        key_path: &Path,
        subject: Option<String>,
        connector: HttpsConnector<HttpConnector>,
    ) -> Result<Auth, DriveError> {
        let key = yup_oauth2::read_service_account_key(key_path)
            .await
            .map_err(|e| DriveError::Auth(format!("cannot read service-account key {}: {e}", key_path.display())))?;
        let client = google_drive3::hyper_util::client::legacy::Client::builder(
            google_drive3::hyper_util::rt::TokioExecutor::new(),
        )
        .build::<_, String>(connector);
        let mut builder = yup_oauth2::ServiceAccountAuthenticator::with_client(
            key,
            yup_oauth2::CustomHyperClientBuilder::from(client),
        );
        if let Some(s) = &subject {
            builder = builder.subject(s.clone());
        }
        let inner = builder.build().await.map_err(|e| DriveError::Auth(e.to_string()))?;
        Ok(Auth {
            inner,
            refused: Arc::default(),
            scope: String::new(),
            renewals: Arc::default(),
            delegated_to: subject,
        })
    }

    /// A valid access token (refreshed ahead of expiry by yup-oauth2).
    pub async fn token(&self) -> Result<String, DriveError> {
        if let Some(why) = self.refusal() {
            return Err(DriveError::SignInRefused(why));
        }
        let t = self.inner.token(&[self.scope()]).await.map_err(|e| self.explain(DriveError::Auth(e.to_string())))?;
        t.token().map(str::to_owned).ok_or_else(|| DriveError::Auth("empty token".into()))
    }

    /// A token request the endpoint refused. Acting as a user through domain-wide delegation, Google's
    /// `invalid_grant` (no such user, a suspended one, a bad JWT) and `unauthorized_client` (the client
    /// id is not granted these scopes in the Admin console) never pass by retrying: the run for that
    /// user ends at once, with what to check, instead of holding the breaker open for minutes.
    fn token_refused(&self, msg: String) -> DriveError {
        let lasting = ["invalid_grant", "unauthorized_client", "access_denied"].iter().any(|c| msg.contains(c));
        match &self.delegated_to {
            Some(user) if lasting => DriveError::SignInRefused(format!(
                "acting as {user}: {msg} (the user does not exist or is suspended, or the service account's \
                 client id is not granted these scopes under domain-wide delegation in the Admin console)"
            )),
            _ => DriveError::Auth(msg),
        }
    }

    /// The generation of the access token calls get now (see [`Auth::renew_after`]).
    pub fn generation(&self) -> TokenGeneration {
        TokenGeneration(self.renewals.generation.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Drive refused the access token of generation `seen` (401: revoked before it expired). Google's
    /// remedy: get a new one from the refresh token (or the service-account key) and try again. Done
    /// once for every call refused with that generation: a caller that finds it already renewed
    /// returns at once. A refresh token the endpoint refuses ends in [`DriveError::SignInRefused`].
    pub async fn renew_after(&self, seen: TokenGeneration) -> Result<(), DriveError> {
        let _one_at_a_time = self.renewals.lock.lock().await;
        if self.generation() != seen {
            return Ok(());
        }
        if let Some(why) = self.refusal() {
            return Err(DriveError::SignInRefused(why));
        }
        tracing::info!("Drive refused the access token (401): getting a new one");
        self.inner
            .force_refreshed_token(&[self.scope()])
            .await
            .map_err(|e| self.explain(DriveError::Auth(format!("could not renew the access token: {e}"))))?;
        // The new token is in the storage: from now on calls get it.
        self.renewals.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// The scope URL every token is asked for.
    pub fn scope(&self) -> &str {
        if self.scope.is_empty() { Scope::Readonly.as_ref() } else { &self.scope }
    }

    fn refusal(&self) -> Option<String> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// An authentication failure after the token endpoint refused the refresh token is that refusal:
    /// permanent for the whole run, never retried; so is a service account's delegation the endpoint
    /// refuses (see `token_refused`).
    pub fn explain(&self, e: DriveError) -> DriveError {
        match (e, self.refusal()) {
            (DriveError::Auth(_), Some(why)) => DriveError::SignInRefused(why),
            (DriveError::Auth(msg), None) => self.token_refused(msg),
            (e, _) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPE: &str = "https://www.googleapis.com/auth/drive.readonly";

    async fn emulator() -> drive_emulator::Emulator {
        crate::install_crypto_provider();
        let config = drive_emulator::EmulatorConfig { files: 1, folders: 1, ..Default::default() };
        drive_emulator::Emulator::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap()
    }

    async fn control(emu: &drive_emulator::Emulator, path: &str) -> serde_json::Value {
        let url = format!("{}_emu/{path}", emu.base_url());
        let resp =
            if path == "stats" { reqwest::get(url).await } else { reqwest::Client::new().post(url).send().await };
        let resp = resp.unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn minted(emu: &drive_emulator::Emulator) -> u64 {
        control(emu, "stats").await["requests"]["token 200"].as_u64().unwrap_or(0)
    }

    fn credentials(path: std::path::PathBuf) -> Credentials {
        Credentials { path, subject: None, token_cache: None, scope: SCOPE.into() }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_calls_refused_at_once_renew_the_token_once() {
        let emu = emulator().await;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.json");
        emu.write_service_account_key(&key).unwrap();
        let auth = Auth::from_credentials(&credentials(key), connector().unwrap()).await.unwrap();
        let old = auth.token().await.unwrap();
        let seen = auth.generation();
        control(&emu, "revoke_access_tokens").await;
        let before = minted(&emu).await;
        let renewals = (0..16).map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.renew_after(seen).await })
        });
        for r in futures::future::join_all(renewals).await {
            r.unwrap().unwrap();
        }
        assert_eq!(minted(&emu).await - before, 1, "16 refused calls, one new token");
        assert_ne!(auth.generation(), seen);
        let new = auth.token().await.unwrap();
        assert_ne!(new, old, "calls now get the new token");
        // A later refusal of the new token renews it again.
        auth.renew_after(auth.generation()).await.unwrap();
        assert_eq!(minted(&emu).await - before, 2);
        emu.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_renewal_the_token_endpoint_refuses_says_to_sign_in_again() {
        let emu = emulator().await;
        let dir = tempfile::tempdir().unwrap();
        let mut file = control(&emu, "refresh_token").await;
        file["type"] = serde_json::json!("authorized_user");
        let path = dir.path().join("user.json");
        std::fs::write(&path, file.to_string()).unwrap();
        let auth = Auth::from_credentials(&credentials(path), connector().unwrap()).await.unwrap();
        auth.token().await.unwrap();
        control(&emu, "revoke_refresh_tokens").await;
        let e = auth.renew_after(auth.generation()).await.unwrap_err();
        assert!(matches!(e, DriveError::SignInRefused(_)), "{e}");
        assert!(e.to_string().contains("sign in again"), "{e}");
        emu.shutdown().await;
    }
}
