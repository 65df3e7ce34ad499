//! Push notifications: registers a `changes.watch` channel with a random secret, answers Drive's
//! notifications (a valid `change` wakes the feed's poll at once; a forged one gets 401 and is counted),
//! renews the channel before it expires and stops it on shutdown. Polling remains the fallback.

use super::{DriveClient, WatchChannel};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Counter of rejected notifications.
pub const REJECTED_TOTAL: &str = "mirrorflow_webhook_rejected_total";

/// Channels whose notifications we accept (the current one and, during a renewal, the previous one).
#[derive(Default)]
struct Accepted {
    channels: Vec<WatchChannel>,
}

#[derive(Clone)]
struct Shared {
    accepted: Arc<Mutex<Accepted>>,
    wake: Arc<Notify>,
}

/// Whether a notification's headers name one of our channels with its secret (pure, for tests).
fn verify(headers: &HeaderMap, channels: &[WatchChannel]) -> bool {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (id, token) = (get("x-goog-channel-id"), get("x-goog-channel-token"));
    channels.iter().any(|c| c.id == id && c.token == token)
}

async fn notification(State(s): State<Shared>, headers: HeaderMap) -> StatusCode {
    let ok = verify(&headers, &s.accepted.lock().unwrap_or_else(|p| p.into_inner()).channels);
    if !ok {
        metrics::counter!(REJECTED_TOTAL).increment(1);
        tracing::warn!("rejected a push notification with an unknown channel id or token");
        return StatusCode::UNAUTHORIZED;
    }
    let state = headers.get("x-goog-resource-state").and_then(|v| v.to_str().ok()).unwrap_or("");
    if state != "sync" {
        s.wake.notify_one();
    }
    StatusCode::OK
}

/// A running webhook: its server and channel renewal task.
pub struct Webhook {
    task: tokio::task::JoinHandle<()>,
    accepted: Arc<Mutex<Accepted>>,
    drive: Arc<DriveClient>,
    /// Address actually bound.
    pub local_addr: SocketAddr,
}

impl Webhook {
    /// Binds `listen`, registers a channel delivering to `public_url`, and renews it at 80% of `ttl`.
    pub async fn start(
        listen: SocketAddr,
        public_url: String,
        ttl: Duration,
        drive: Arc<DriveClient>,
        wake: Arc<Notify>,
    ) -> Result<Webhook, String> {
        let accepted = Arc::new(Mutex::new(Accepted::default()));
        let shared = Shared { accepted: accepted.clone(), wake };
        let app = axum::Router::new().fallback(axum::routing::post(notification)).with_state(shared);
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("source.webhook.listen {listen}: {e}"))?;
        let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let first = drive.watch_changes(&public_url, ttl).await.map_err(|e| format!("changes.watch: {e}"))?;
        accepted.lock().unwrap_or_else(|p| p.into_inner()).channels.push(first);
        let (acc, d) = (accepted.clone(), drive.clone());
        let task = tokio::spawn(async move {
            renew_forever(acc, d, public_url, ttl).await;
            server.abort();
        });
        Ok(Webhook { task, accepted, drive, local_addr })
    }

    /// Stops the channels with Drive and the server.
    pub async fn stop(self) {
        self.task.abort();
        let channels = std::mem::take(&mut self.accepted.lock().unwrap_or_else(|p| p.into_inner()).channels);
        for ch in channels {
            if let Err(e) = self.drive.stop_channel(&ch).await {
                tracing::warn!(error = %e, "could not stop the push channel");
            }
        }
    }
}

async fn renew_forever(accepted: Arc<Mutex<Accepted>>, drive: Arc<DriveClient>, public_url: String, ttl: Duration) {
    loop {
        tokio::time::sleep(ttl.mul_f64(0.8)).await;
        match drive.watch_changes(&public_url, ttl).await {
            Ok(new) => {
                let old: Vec<WatchChannel> = {
                    let mut a = accepted.lock().unwrap_or_else(|p| p.into_inner());
                    let old = std::mem::take(&mut a.channels);
                    a.channels = vec![new];
                    old
                };
                for ch in old {
                    let _ = drive.stop_channel(&ch).await;
                }
                tracing::info!("push channel renewed");
            }
            Err(e) => tracing::warn!(error = %e, "push channel renewal failed; polling continues, will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch() -> WatchChannel {
        WatchChannel { id: "c1".into(), resource_id: "r".into(), token: "secret".into(), expiration_ms: 0 }
    }

    #[test]
    fn only_our_channel_with_its_secret_is_accepted() {
        let mut h = HeaderMap::new();
        h.insert("x-goog-channel-id", "c1".parse().unwrap());
        h.insert("x-goog-channel-token", "secret".parse().unwrap());
        assert!(verify(&h, &[ch()]));
        h.insert("x-goog-channel-token", "guess".parse().unwrap());
        assert!(!verify(&h, &[ch()]));
        h.insert("x-goog-channel-id", "other".parse().unwrap());
        h.insert("x-goog-channel-token", "secret".parse().unwrap());
        assert!(!verify(&h, &[ch()]));
    }
}
