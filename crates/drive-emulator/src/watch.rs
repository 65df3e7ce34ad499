//! Push notifications: `changes.watch` channels and the webhook POSTs Drive sends to them.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::model::now_ms;

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
    /// The shared drive whose log the channel watches; `None` for the user's log.
    drive: Option<String>,
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

/// Which change logs a batch of mutations wrote to: a channel is notified only for its own log, as
/// Drive does (a channel on a shared drive's log hears nothing of My Drive, and the other way round).
#[derive(Debug, Default)]
pub(crate) struct Touched {
    /// The user's log got a change.
    pub user_log: bool,
    /// These shared drives' logs got changes.
    pub drives: std::collections::HashSet<String>,
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

    /// Open a channel; returns Drive's Channel resource or a message for a 400.
    pub fn open(&self, req: WatchRequest, resource_uri: String, drive: Option<String>) -> Result<Value, String> {
        let id = req.id.filter(|s| !s.is_empty()).ok_or("Required: id")?;
        let address = req.address.filter(|s| !s.is_empty()).ok_or("Required: address")?;
        match req.kind.as_deref() {
            Some("web_hook") | Some("webhook") => {}
            _ => return Err("Invalid value for type: expected web_hook".into()),
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
            drive,
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

    /// Tell every live channel whose log received changes (see [`Touched`]).
    pub fn notify_change(&self, touched: &Touched) {
        let now = now_ms();
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.retain(|_, c| c.expiration_ms > now);
        for ch in channels.values_mut() {
            let hit = match &ch.drive {
                None => touched.user_log,
                Some(d) => touched.drives.contains(d),
            };
            if hit {
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
