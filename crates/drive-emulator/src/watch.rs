//! Push notifications: `changes.watch` channels and the webhook POSTs Drive sends to them.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::errors::ApiError;
use super::model::now_ms;
use super::state::ChangesRequest;

/// Drive's maximum lifetime for changes channels (one week).
const MAX_LIFETIME_MS: i64 = 7 * 24 * 3_600_000;
/// Lifetime when the client does not ask for one.
const DEFAULT_LIFETIME_MS: i64 = 3_600_000;

/// Body of `changes.watch`.
#[derive(Debug, Deserialize)]
pub(crate) struct WatchRequest {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub address: Option<String>,
    pub token: Option<String>,
    /// Milliseconds since the epoch, as a string (Drive's int64 encoding) or a number.
    pub expiration: Option<Value>,
}

/// Body of `channels.stop`.
#[derive(Debug, Deserialize)]
pub(crate) struct StopRequest {
    pub id: Option<String>,
    #[serde(rename = "resourceId")]
    pub resource_id: Option<String>,
}

#[derive(Debug, Clone)]
struct Channel {
    id: String,
    /// The `changes.list` parameters given to `changes.watch`: the channel hears of the changes they
    /// select (its log, `restrictToMyDrive`, `includeItemsFromAllDrives`), as Drive does.
    filter: ChangesRequest,
    resource_id: String,
    resource_uri: String,
    token: Option<String>,
    address: String,
    expiration_ms: i64,
    next_message: u64,
}

/// One notification to deliver.
#[derive(Debug)]
struct Notification {
    address: String,
    headers: Vec<(&'static str, String)>,
}

/// Open channels and the queue to the delivery task.
pub(crate) struct Watch {
    channels: Mutex<HashMap<String, Channel>>,
    queue: mpsc::UnboundedSender<Notification>,
}

impl Watch {
    /// Start the delivery task (POSTs are sent in order, one at a time).
    pub fn start() -> Watch {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(deliver(rx));
        Watch { channels: Mutex::new(HashMap::new()), queue: tx }
    }

    /// Open a channel for the changes `filter` selects; returns Drive's Channel resource.
    pub fn open(&self, req: WatchRequest, resource_uri: String, filter: ChangesRequest) -> Result<Value, ApiError> {
        let id = req.id.filter(|s| !s.is_empty()).ok_or_else(|| ApiError::bad_request("Required: id"))?;
        let address =
            req.address.filter(|s| !s.is_empty()).ok_or_else(|| ApiError::bad_request("Required: address"))?;
        match req.kind.as_deref() {
            Some("web_hook") | Some("webhook") => {}
            _ => return Err(ApiError::bad_request("Invalid value for type: expected web_hook")),
        }
        if !deliverable(&address) {
            return Err(ApiError::webhook_url_not_https(&address));
        }
        let now = now_ms();
        let asked = req.expiration.as_ref().and_then(|v| match v {
            Value::String(s) => s.parse::<i64>().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        });
        let expiration_ms = asked.unwrap_or(now + DEFAULT_LIFETIME_MS).min(now + MAX_LIFETIME_MS);
        let mut rid = [0u8; 12];
        rand::fill(&mut rid[..]);
        let channel = Channel {
            id: id.clone(),
            filter,
            resource_id: base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, rid),
            resource_uri,
            token: req.token,
            address,
            expiration_ms,
            next_message: 1,
        };
        let body = channel_json(&channel);
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.insert(id.clone(), channel);
        if let Some(ch) = channels.get_mut(&id) {
            self.send(ch, "sync");
        }
        Ok(body)
    }

    /// Close a channel; false when unknown.
    pub fn stop(&self, req: &StopRequest) -> bool {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let Some(id) = &req.id else { return false };
        let matches = channels.get(id).is_some_and(|c| req.resource_id.as_ref().is_none_or(|r| *r == c.resource_id));
        matches && channels.remove(id).is_some()
    }

    /// Tell every live channel that `changed` says has news (given the channel's parameters).
    pub fn notify_change(&self, changed: impl Fn(&ChangesRequest) -> bool) {
        let now = now_ms();
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.retain(|_, c| c.expiration_ms > now);
        for ch in channels.values_mut() {
            if changed(&ch.filter) {
                self.send(ch, "change");
            }
        }
    }

    fn send(&self, ch: &mut Channel, state: &str) {
        let number = ch.next_message;
        ch.next_message += 1;
        let mut headers = vec![
            ("X-Goog-Channel-ID", ch.id.clone()),
            ("X-Goog-Channel-Expiration", http_date(ch.expiration_ms)),
            ("X-Goog-Resource-State", state.to_string()),
            ("X-Goog-Resource-ID", ch.resource_id.clone()),
            ("X-Goog-Resource-URI", ch.resource_uri.clone()),
            ("X-Goog-Message-Number", number.to_string()),
        ];
        if let Some(t) = &ch.token {
            headers.push(("X-Goog-Channel-Token", t.clone()));
        }
        let _ = self.queue.send(Notification { address: ch.address.clone(), headers });
    }
}

/// Whether Drive would deliver to `address`: Google requires HTTPS. Plain `http` to a loopback host is
/// the emulator's one allowance, so tests can receive notifications without a certificate.
fn deliverable(address: &str) -> bool {
    let Ok(u) = url::Url::parse(address) else { return false };
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match u.scheme() {
        "https" => u.host().is_some(),
        "http" => loopback,
        _ => false,
    }
}

fn channel_json(c: &Channel) -> Value {
    let mut v = json!({
        "kind": "api#channel",
        "id": c.id,
        "resourceId": c.resource_id,
        "resourceUri": c.resource_uri,
        "expiration": c.expiration_ms.to_string(),
    });
    if let Some(t) = &c.token {
        v["token"] = json!(t);
    }
    v
}

/// RFC 1123 date as in `X-Goog-Channel-Expiration`.
fn http_date(ms: i64) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from_unix_timestamp(ms / 1000).ok().and_then(|t| t.format(&fmt).ok()).unwrap_or_default()
}

async fn deliver(mut rx: mpsc::UnboundedReceiver<Notification>) {
    let client = match reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("emulator: cannot build webhook client: {e}");
            return;
        }
    };
    while let Some(n) = rx.recv().await {
        let mut req = client.post(&n.address).body("");
        for (k, v) in &n.headers {
            req = req.header(*k, v);
        }
        if let Err(e) = req.send().await {
            tracing::debug!("emulator: webhook to {} failed: {e}", n.address);
        }
    }
}
