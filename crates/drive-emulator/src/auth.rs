//! OAuth 2 token endpoint: the service-account JWT-bearer grant (RS256, verified against the key the
//! emulator issued), the authorization-code grant of an installed app (see `consent`), the
//! refresh-token grant and token revocation, plus Bearer checks for API calls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::HeaderMap;
use serde::Serialize;
use serde_json::{Value, json};

use super::consent::{self, ConsentError, InstalledClient, PendingCode};
use super::errors::ApiError;
use super::model::now_ms;
use super::resources::USER_EMAIL;

const PROJECT_ID: &str = "mirrorflow-emulator";
const CLIENT_ID: &str = "109876543210987654321";

/// Why the token endpoint refused a grant (`{"error","error_description"}` with 400).
#[derive(Debug, thiserror::Error)]
pub(crate) enum GrantError {
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("Invalid grant_type: {0}")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    InvalidClient(String),
    #[error("{0}")]
    RedirectUriMismatch(String),
}

impl GrantError {
    /// OAuth error JSON as Google's token endpoint returns it.
    pub fn body(&self) -> Value {
        let code = match self {
            GrantError::InvalidGrant(_) => "invalid_grant",
            GrantError::InvalidRequest(_) => "invalid_request",
            GrantError::UnsupportedGrantType(_) => "unsupported_grant_type",
            GrantError::InvalidClient(_) => "invalid_client",
            GrantError::RedirectUriMismatch(_) => "redirect_uri_mismatch",
        };
        json!({"error": code, "error_description": self.to_string()})
    }

    /// 401 for a client that failed to authenticate, 400 otherwise (as Google answers).
    pub fn status(&self) -> u16 {
        if matches!(self, GrantError::InvalidClient(_)) { 401 } else { 400 }
    }
}

/// Successful token response.
#[derive(Debug, Serialize)]
pub(crate) struct TokenResponse {
    pub access_token: String,
    pub expires_in: u64,
    pub token_type: &'static str,
    /// Only in the answer to a code exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The granted scopes, space-separated (code exchange and refresh of a user's token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Who an access token acts as, and what it may do: a domain user (through the JWT's `sub`), the
/// service account itself, or (`user: None`) the single user of single-user mode.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caller {
    /// The acting account's email (domain mode).
    pub user: Option<String>,
    /// Granted OAuth scopes (the JWT's `scope` claim, or the consented scopes).
    pub scopes: Vec<String>,
}

impl Caller {
    /// True if any of `wanted` was granted.
    pub fn has_any_scope(&self, wanted: &[&str]) -> bool {
        self.scopes.iter().any(|s| wanted.contains(&s.as_str()))
    }
}

/// One issued access token.
struct Issued {
    /// Expiry, ms since the epoch.
    exp: i64,
    /// The refresh token it came from (revoking that one voids it).
    from: Option<String>,
    caller: Caller,
}

/// Maps a JWT's `sub` (absent: `None`) to the acting account, or refuses it as Google does.
pub(crate) type SubjectCheck<'a> = &'a dyn Fn(Option<&str>) -> Result<Option<String>, GrantError>;

fn split_scopes(scope: Option<&str>) -> Vec<String> {
    scope.unwrap_or_default().split_whitespace().map(str::to_owned).collect()
}

/// Who a refresh token was issued to, and for what.
#[derive(Clone)]
struct Grant {
    client_id: String,
    client_secret: String,
    scope: Option<String>,
}

/// The service account, issued tokens and refresh tokens.
pub(crate) struct Auth {
    pkcs8_pem: String,
    public_der: Vec<u8>,
    private_key_id: String,
    /// access token → its expiry, origin and caller
    tokens: Mutex<HashMap<String, Issued>>,
    /// refresh token → who it was issued to
    refresh: Mutex<HashMap<String, Grant>>,
    /// Installed-app OAuth clients (`/_emu/oauth_client`).
    clients: Mutex<Vec<InstalledClient>>,
    /// Codes handed out by the consent endpoint, not yet exchanged.
    codes: Mutex<HashMap<String, PendingCode>>,
    default_lifetime: AtomicU64,
    /// Override from `/_emu/faults` (0 = use the configured default).
    lifetime_override: AtomicU64,
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

fn pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

impl Auth {
    /// Generate a fresh RSA-2048 service account key.
    pub fn new(default_lifetime: u64) -> std::io::Result<Auth> {
        let io = |what: &str| std::io::Error::other(format!("RSA key {what} failed"));
        let kp = KeyPair::generate(KeySize::Rsa2048).map_err(|_| io("generation"))?;
        let pkcs8 = kp.as_der().map_err(|_| io("export"))?;
        let mut id = [0u8; 20];
        rand::fill(&mut id[..]);
        Ok(Auth {
            pkcs8_pem: pem(pkcs8.as_ref()),
            public_der: kp.public_key().as_ref().to_vec(),
            private_key_id: hex::encode(id),
            tokens: Mutex::new(HashMap::new()),
            refresh: Mutex::new(HashMap::new()),
            clients: Mutex::new(Vec::new()),
            codes: Mutex::new(HashMap::new()),
            default_lifetime: AtomicU64::new(default_lifetime),
            lifetime_override: AtomicU64::new(0),
        })
    }

    /// Service-account key JSON whose `token_uri` points at this emulator.
    pub fn key_json(&self, base_url: &str) -> String {
        let key = json!({
            "type": "service_account",
            "project_id": PROJECT_ID,
            "private_key_id": self.private_key_id,
            "private_key": self.pkcs8_pem,
            "client_email": USER_EMAIL,
            "client_id": CLIENT_ID,
            "auth_uri": format!("{base_url}o/oauth2/auth"),
            "token_uri": format!("{base_url}token"),
            "auth_provider_x509_cert_url": format!("{base_url}oauth2/v1/certs"),
            "client_x509_cert_url": format!("{base_url}robot/v1/metadata/x509/{USER_EMAIL}"),
        });
        serde_json::to_string_pretty(&key).unwrap_or_default()
    }

    /// Set the configured lifetime (after `/_emu/seed`).
    pub fn set_default_lifetime(&self, secs: u64) {
        self.default_lifetime.store(secs, Ordering::Relaxed);
    }

    /// Set the token lifetime override (0 restores the configured default).
    pub fn set_lifetime(&self, secs: u64) {
        self.lifetime_override.store(secs, Ordering::Relaxed);
    }

    fn lifetime(&self) -> u64 {
        match self.lifetime_override.load(Ordering::Relaxed) {
            0 => self.default_lifetime.load(Ordering::Relaxed).max(1),
            n => n,
        }
    }

    /// Check the `Authorization: Bearer` header of an API call.
    pub fn check(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let value =
            headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(ApiError::auth)?;
        let token =
            value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).ok_or_else(ApiError::auth)?.trim();
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match tokens.get(token) {
            Some(issued) if issued.exp > now_ms() => Ok(issued.caller.clone()),
            _ => Err(ApiError::invalid_credentials()),
        }
    }

    /// Voids every access token issued so far (Google may revoke one before it expires: a password
    /// change, a security event), while refresh tokens and service-account keys keep minting new ones.
    pub fn revoke_access_tokens(&self) -> usize {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let revoked = tokens.len();
        tokens.clear();
        revoked
    }

    /// A new access token, remembered with the refresh token it came from (revoking that one voids it).
    fn issue(&self, from: Option<&str>, caller: Caller) -> TokenResponse {
        let lifetime = self.lifetime();
        let token = format!("ya29.emu-{}", random_token(32));
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        if tokens.len() > 10_000 {
            tokens.retain(|_, issued| issued.exp > now);
        }
        let issued = Issued { exp: now + (lifetime as i64) * 1000, from: from.map(str::to_owned), caller };
        tokens.insert(token.clone(), issued);
        TokenResponse {
            access_token: token,
            expires_in: lifetime,
            token_type: "Bearer",
            refresh_token: None,
            scope: None,
        }
    }

    /// Mint a refresh token for the refresh grant: `(refresh_token, client_id, client_secret)`.
    pub fn mint_refresh_token(&self) -> (String, String, String) {
        let refresh = format!("1//emu-{}", random_token(24));
        let client_id = format!("{}-emulator.apps.googleusercontent.com", &CLIENT_ID[..12]);
        let secret = format!("GOCSPX-{}", random_token(18));
        let grant = Grant { client_id: client_id.clone(), client_secret: secret.clone(), scope: None };
        self.refresh.lock().unwrap_or_else(|e| e.into_inner()).insert(refresh.clone(), grant);
        (refresh, client_id, secret)
    }

    /// Registers a new installed-app OAuth client (what "Create credentials → Desktop app" gives).
    pub fn new_installed_client(&self) -> InstalledClient {
        let client = InstalledClient {
            client_id: format!("{}-{}.apps.googleusercontent.com", &CLIENT_ID[..12], random_token(12).to_lowercase()),
            client_secret: format!("GOCSPX-{}", random_token(18)),
        };
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).push(client.clone());
        client
    }

    /// The consent endpoint: the user consents at once; the code to send back to the redirect URI.
    pub fn consent(&self, params: &HashMap<String, String>) -> Result<(String, String), ConsentError> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let pending = consent::authorize(params, &clients)?;
        let code = format!("4/0emu-{}", random_token(24));
        let location = consent::redirect_location(params.get("redirect_uri").map_or("", |s| s), &code, params);
        self.codes.lock().unwrap_or_else(|e| e.into_inner()).insert(code.clone(), pending);
        Ok((code, location))
    }

    /// Revokes a refresh token (and the access tokens it gave) or one access token; false when the
    /// token is unknown (Google answers 400 `invalid_token`).
    pub fn revoke(&self, token: &str) -> bool {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if self.refresh.lock().unwrap_or_else(|e| e.into_inner()).remove(token).is_some() {
            tokens.retain(|_, issued| issued.from.as_deref() != Some(token));
            return true;
        }
        tokens.remove(token).is_some()
    }

    /// Revokes every refresh token (as a user removing the app's access does) and every access token
    /// issued so far: the next call of every client must get a new one.
    pub fn revoke_refresh_tokens(&self) {
        self.refresh.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Handle a form-encoded token request.
    pub fn grant(
        &self,
        form: &HashMap<String, String>,
        token_uri: &str,
        subject: SubjectCheck<'_>,
    ) -> Result<TokenResponse, GrantError> {
        let grant_type = form.get("grant_type").map(String::as_str).unwrap_or_default();
        match grant_type {
            "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
                let assertion = form
                    .get("assertion")
                    .ok_or_else(|| GrantError::InvalidRequest("Missing required parameter: assertion".into()))?;
                let claims = self.verify_jwt(assertion, token_uri)?;
                let user = subject(claims.get("sub").and_then(Value::as_str))?;
                let scopes = split_scopes(claims.get("scope").and_then(Value::as_str));
                Ok(self.issue(None, Caller { user, scopes }))
            }
            "refresh_token" => {
                let (token, scope) = self.verify_refresh(form)?;
                let caller = Caller { user: None, scopes: split_scopes(scope.as_deref()) };
                Ok(TokenResponse { scope, ..self.issue(Some(&token), caller) })
            }
            "authorization_code" => self.exchange_code(form),
            other => Err(GrantError::UnsupportedGrantType(other.to_string())),
        }
    }

    /// The refresh token of a valid refresh grant, and the scopes it was granted.
    fn verify_refresh(&self, form: &HashMap<String, String>) -> Result<(String, Option<String>), GrantError> {
        let token = form
            .get("refresh_token")
            .ok_or_else(|| GrantError::InvalidRequest("Missing required parameter: refresh_token".into()))?;
        let map = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
        // Google's answer for a revoked or expired refresh token.
        let revoked = || GrantError::InvalidGrant("Token has been expired or revoked.".into());
        let grant = map.get(token).ok_or_else(revoked)?;
        let id_ok = form.get("client_id").is_none_or(|c| c == &grant.client_id);
        let secret_ok = form.get("client_secret").is_none_or(|s| s == &grant.client_secret);
        if id_ok && secret_ok {
            Ok((token.clone(), grant.scope.clone()))
        } else {
            Err(GrantError::InvalidGrant("Unauthorized client or scope in request.".into()))
        }
    }

    /// `grant_type=authorization_code`: a one-time code (gone after its first exchange, good or bad)
    /// for an access token and a refresh token.
    fn exchange_code(&self, form: &HashMap<String, String>) -> Result<TokenResponse, GrantError> {
        let code =
            form.get("code").ok_or_else(|| GrantError::InvalidRequest("Missing required parameter: code".into()))?;
        let pending = self
            .codes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(code)
            .ok_or_else(|| GrantError::InvalidGrant("Malformed auth code.".into()))?;
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner()).clone();
        consent::check_exchange(&pending, form, &clients)?;
        let refresh = format!("1//emu-{}", random_token(24));
        let grant = Grant {
            client_id: form.get("client_id").cloned().unwrap_or_default(),
            client_secret: form.get("client_secret").cloned().unwrap_or_default(),
            scope: Some(pending.scope.clone()),
        };
        self.refresh.lock().unwrap_or_else(|e| e.into_inner()).insert(refresh.clone(), grant);
        let caller = Caller { user: None, scopes: split_scopes(Some(&pending.scope)) };
        let issued = self.issue(Some(&refresh), caller);
        Ok(TokenResponse { refresh_token: Some(refresh), scope: Some(pending.scope), ..issued })
    }

    fn verify_jwt(&self, jwt: &str, token_uri: &str) -> Result<Value, GrantError> {
        let bad = |m: &str| GrantError::InvalidGrant(m.to_string());
        let mut parts = jwt.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad("Invalid JWT: Token must be a short-lived token and in a reasonable timeframe"));
        };
        let header = decode_json(h).ok_or_else(|| bad("Invalid JWT header"))?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(bad("Invalid JWT: unsupported algorithm"));
        }
        let sig = decode_b64(s).ok_or_else(|| bad("Invalid JWT Signature."))?;
        let input = format!("{h}.{p}");
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.public_der)
            .verify(input.as_bytes(), &sig)
            .map_err(|_| bad("Invalid JWT Signature."))?;
        let claims = decode_json(p).ok_or_else(|| bad("Invalid JWT claims"))?;
        check_claims(&claims, token_uri).map_err(|m| bad(&m))?;
        Ok(claims)
    }
}

fn check_claims(claims: &Value, token_uri: &str) -> Result<(), String> {
    if claims.get("iss").and_then(Value::as_str) != Some(USER_EMAIL) {
        return Err("Invalid JWT: iss is not the service account".into());
    }
    if claims.get("aud").and_then(Value::as_str) != Some(token_uri) {
        return Err(format!("Invalid JWT: aud must be {token_uri}"));
    }
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or("Invalid JWT: missing exp")?;
    if exp * 1000 <= now_ms() {
        return Err("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.".into());
    }
    Ok(())
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

fn decode_json(s: &str) -> Option<Value> {
    serde_json::from_slice(&decode_b64(s)?).ok()
}
