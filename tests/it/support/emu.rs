//! Shared setup for the emulator tests: start an in-process emulator on port 0 and build the real
//! google-drive3 hub + yup-oauth2 service-account authenticator against it.
#![allow(dead_code)]

use std::net::SocketAddr;

use drive_emulator::{Emulator, EmulatorConfig};
use google_drive3::DriveHub;
use google_drive3::hyper_rustls::{self, HttpsConnector};
use google_drive3::hyper_util::client::legacy::Client;
use google_drive3::hyper_util::client::legacy::connect::HttpConnector;
use google_drive3::hyper_util::rt::TokioExecutor;
use google_drive3::yup_oauth2::{self, authenticator::Authenticator};
use serde_json::Value;

/// Connector shared by the hub and the authenticator.
pub type Conn = HttpsConnector<HttpConnector>;

/// Drive read-only scope.
pub const SCOPE: &str = "https://www.googleapis.com/auth/drive.readonly";

/// One emulator with a client stack pointed at it.
pub struct Ctx {
    pub emu: Emulator,
    pub base: String,
    pub hub: DriveHub<Conn>,
    pub auth: Authenticator<Conn>,
    pub http: reqwest::Client,
}

fn connector() -> Conn {
    let tls =
        rustls::ClientConfig::builder().with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth();
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build()
}

/// Start an emulator with `config` and build the client stack.
pub async fn start(config: EmulatorConfig) -> Ctx {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let emu = Emulator::start(config, listen).await.expect("emulator starts");
    let base = emu.base_url();
    let key = yup_oauth2::parse_service_account_key(emu.service_account_key_json()).expect("key parses");
    let conn = connector();
    let auth_client = Client::builder(TokioExecutor::new()).build::<_, String>(conn.clone());
    let auth = yup_oauth2::ServiceAccountAuthenticator::with_client(
        key,
        yup_oauth2::CustomHyperClientBuilder::from(auth_client),
    )
    .build()
    .await
    .expect("authenticator");
    let hub_client = Client::builder(TokioExecutor::new()).build(conn);
    let mut hub = DriveHub::new(hub_client, auth.clone());
    hub.base_url(format!("{base}drive/v3/"));
    hub.root_url(base.clone());
    let http = reqwest::Client::builder().build().expect("reqwest");
    Ctx { emu, base, hub, auth, http }
}

impl Ctx {
    /// A current access token from the same authenticator the hub uses.
    pub async fn token(&self) -> String {
        let t = self.auth.token(&[SCOPE]).await.expect("token");
        t.token().expect("token string").to_string()
    }

    /// POST JSON to a control path (e.g. `mutate`), returning the JSON answer.
    pub async fn control(&self, path: &str, body: Value) -> Value {
        let resp = self.http.post(format!("{}_emu/{path}", self.base)).json(&body).send().await.expect("control");
        resp.json().await.expect("control json")
    }

    /// GET a control path.
    pub async fn control_get(&self, path: &str) -> Value {
        let resp = self.http.get(format!("{}_emu/{path}", self.base)).send().await.expect("control");
        resp.json().await.expect("control json")
    }

    /// GET an API path (relative to the base) with the current token; returns status and body bytes.
    pub async fn api_get(&self, path_and_query: &str) -> (u16, bytes::Bytes) {
        let token = self.token().await;
        let resp =
            self.http.get(format!("{}{path_and_query}", self.base)).bearer_auth(token).send().await.expect("api get");
        let status = resp.status().as_u16();
        (status, resp.bytes().await.unwrap_or_default())
    }

    /// GET an API path and parse JSON.
    pub async fn api_json(&self, path_and_query: &str) -> (u16, Value) {
        let (status, body) = self.api_get(path_and_query).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// The expected mirror.
    pub async fn tree(&self) -> drive_emulator::EmuTree {
        let v = self.control_get("tree").await;
        serde_json::from_value(v).expect("tree json")
    }
}

/// Google error envelope parts: (code, reason, status).
pub fn envelope(v: &Value) -> (u64, String, String) {
    let e = &v["error"];
    (
        e["code"].as_u64().unwrap_or(0),
        e["errors"][0]["reason"].as_str().unwrap_or("").to_string(),
        e["status"].as_str().unwrap_or("").to_string(),
    )
}

/// Reason of a google-drive3 error (from the parsed envelope).
pub fn hub_error_reason(err: &google_drive3::Error) -> String {
    match err {
        google_drive3::Error::BadRequest(v) => v["error"]["errors"][0]["reason"].as_str().unwrap_or("").to_string(),
        other => format!("{other:?}"),
    }
}

/// Form-encode `pairs` (reqwest here is built without its `form` feature).
pub fn form_body(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

impl Ctx {
    /// POST a form to the token endpoint and return status and JSON.
    pub async fn token_request(&self, pairs: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}token", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form_body(pairs))
            .send()
            .await
            .expect("token request");
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }
}

/// Our Drive client against the emulator: two attempts per call, backoff of at most 10 ms.
pub async fn drive_client(ctx: &Ctx, dir: &std::path::Path) -> mirrorflow::drive::DriveClient {
    let key = dir.join("key.json");
    ctx.emu.write_service_account_key(&key).unwrap();
    mirrorflow::drive::DriveClient::connect(mirrorflow::drive::DriveSettings {
        credentials: mirrorflow::drive::auth::Credentials {
            path: key,
            subject: None,
            token_cache: None,
            scope: "https://www.googleapis.com/auth/drive.readonly".into(),
        },
        api_base_url: ctx.base.clone(),
        docs_base_url: ctx.base.clone(),
        page_size: 100,
        acknowledge_abuse: false,
        retry: mirrorflow::retry::RetryPolicy {
            max_attempts: 2,
            base_delay: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(10),
        },
        breaker: mirrorflow::breaker::BreakerSettings::default(),
        rps: 1000.0,
        timeout: std::time::Duration::from_secs(30),
    })
    .await
    .expect("client connects")
}
