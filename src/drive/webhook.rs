//! Push notifications: registers one `changes.watch` channel per change log followed (the user's, and
//! each shared drive's own: Drive notifies a channel only of its log), each with a random secret;
//! answers Drive's notifications (a valid `change` wakes the feed's poll at once; a forged one gets 401
//! and is counted), renews each channel before it expires and stops them on shutdown. Polling remains
//! the fallback.

use super::{Corpus, DriveClient, WatchChannel};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Channels whose notifications we accept: per log, the current one and, during a renewal, the
/// previous one.
#[derive(Default)]
struct Accepted {
    channels: std::collections::BTreeMap<Corpus, Vec<WatchChannel>>,
}

impl Accepted {
    fn all(&self) -> Vec<WatchChannel> {
        self.channels.values().flatten().cloned().collect()
    }
}

#[derive(Clone)]
struct Shared {
    accepted: Arc<Mutex<Accepted>>,
    wake: Arc<Notify>,
}

/// Whether a notification's headers name one of our channels with its secret (pure, for tests). The
/// secret is compared in constant time, so its bytes cannot be guessed one by one from response times.
fn verify(headers: &HeaderMap, channels: &[WatchChannel]) -> bool {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (id, token) = (get("x-goog-channel-id"), get("x-goog-channel-token"));
    channels.iter().any(|c| c.id == id && constant_time_eq(c.token.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn notification(State(s): State<Shared>, headers: HeaderMap) -> StatusCode {
    let ok = verify(&headers, &s.accepted.lock().unwrap_or_else(|p| p.into_inner()).all());
    if !ok {
        crate::internal_events::InternalEvent::emit(crate::internal_events::ForgedNotificationRejected);
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

/// Drive's longest channel lifetime for the changes resource (one week, Drive API "Push
/// notifications"): a longer `channel_ttl` is clamped to it.
pub const MAX_CHANGES_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// First wait before registering again after a failed registration or renewal; doubles up to
/// [`MAX_RETRY`]. Polling goes on meanwhile.
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// The lifetime asked of Drive: the configured one, at most Drive's maximum.
pub fn clamp_ttl(ttl: Duration) -> Duration {
    ttl.min(MAX_CHANGES_TTL)
}

/// When to renew a channel Drive says expires at `expiration_ms`: at 80 % of the time left (never
/// sooner than in one second), so a channel Drive granted for less than asked is renewed in time.
pub fn renewal_delay(expiration_ms: i64, now_ms: i64) -> Duration {
    let left = expiration_ms.saturating_sub(now_ms).max(0) as u64;
    Duration::from_millis(left * 4 / 5).max(Duration::from_secs(1))
}

/// Whether a failed registration is final: Drive refused the request itself (a 400 such as
/// `push.webhookUrlNotHttps`, a 403 for an unverified domain, a 404): asking again gets the same answer,
/// so the log is left to polling. Rate limits, 5xx and transport failures are retried with backoff.
fn gives_up(e: &super::DriveError) -> bool {
    use crate::retry::{Classified, ErrorClass};
    e.class() != ErrorClass::Retryable
}

/// Says once, as an error, that `log` has no push channel and why.
fn refused(log: &Corpus, e: &super::DriveError) {
    tracing::error!(
        ?log,
        error = %e,
        "Drive refused the push channel (check source.webhook.public_url: Google requires an HTTPS address \
         on a verified domain); not retrying: this log is polled every source.poll_interval"
    );
}

fn now_ms() -> i64 {
    crate::model::unix_ms() as i64
}

impl Webhook {
    /// Binds `listen` and registers a channel per log in `logs` delivering to `public_url` (lifetime
    /// `ttl`, clamped to Drive's maximum), each renewed from the expiration Drive returns. A
    /// registration that fails for a passing reason is retried with backoff while the feed keeps
    /// polling; one Drive refuses outright is logged as an error and not retried (see [`gives_up`]);
    /// only a listen address that cannot be bound is an error.
    pub async fn start(
        listen: SocketAddr,
        public_url: String,
        ttl: Duration,
        drive: Arc<DriveClient>,
        wake: Arc<Notify>,
        logs: Vec<Corpus>,
    ) -> Result<Webhook, String> {
        let ttl = clamp_ttl(ttl);
        let accepted = Arc::new(Mutex::new(Accepted::default()));
        let shared = Shared { accepted: accepted.clone(), wake };
        let app = axum::Router::new().fallback(axum::routing::post(notification)).with_state(shared);
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("source.webhook.listen {listen}: {e}"))?;
        let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let mut renewals = tokio::task::JoinSet::new();
        for log in logs {
            let first_wait = match drive.watch_changes(&log, &public_url, ttl).await {
                Ok(first) => {
                    let wait = renewal_delay(first.expiration_ms, now_ms());
                    accepted.lock().unwrap_or_else(|p| p.into_inner()).channels.insert(log.clone(), vec![first]);
                    wait
                }
                Err(e) if gives_up(&e) => {
                    refused(&log, &e);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(?log, error = %e, "push channel registration failed; polling continues, retrying");
                    FIRST_RETRY
                }
            };
            let registration = Registration {
                log,
                accepted: accepted.clone(),
                drive: drive.clone(),
                public_url: public_url.clone(),
                ttl,
            };
            renewals.spawn(registration.keep(first_wait));
        }
        let task = tokio::spawn(async move {
            while renewals.join_next().await.is_some() {}
            server.abort();
        });
        Ok(Webhook { task, accepted, drive, local_addr })
    }

    /// Stops the channels with Drive and the server.
    pub async fn stop(self) {
        self.task.abort();
        let channels = std::mem::take(&mut self.accepted.lock().unwrap_or_else(|p| p.into_inner()).channels);
        for ch in channels.into_values().flatten() {
            if let Err(e) = self.drive.stop_channel(&ch).await {
                tracing::warn!(error = %e, "could not stop the push channel");
            }
        }
    }
}

/// One log's channel, kept registered.
struct Registration {
    log: Corpus,
    accepted: Arc<Mutex<Accepted>>,
    drive: Arc<DriveClient>,
    public_url: String,
    ttl: Duration,
}

impl Registration {
    /// Registers a new channel each time the current one is due (or after a failure, with backoff),
    /// then stops the one it replaces.
    async fn keep(self, mut wait: Duration) {
        let mut retry = FIRST_RETRY;
        loop {
            tokio::time::sleep(wait).await;
            match self.drive.watch_changes(&self.log, &self.public_url, self.ttl).await {
                Ok(new) => {
                    wait = renewal_delay(new.expiration_ms, now_ms());
                    retry = FIRST_RETRY;
                    let old = {
                        let mut a = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
                        a.channels.insert(self.log.clone(), vec![new]).unwrap_or_default()
                    };
                    for ch in old {
                        let _ = self.drive.stop_channel(&ch).await;
                    }
                    tracing::info!(log = ?self.log, renew_in = ?wait, "push channel registered");
                }
                Err(e) if gives_up(&e) => {
                    refused(&self.log, &e);
                    return;
                }
                Err(e) => {
                    tracing::warn!(log = ?self.log, error = %e, retry_in = ?retry, "push channel registration failed; polling continues");
                    wait = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
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

    #[test]
    fn the_lifetime_is_clamped_to_a_week_and_renewal_follows_drives_expiration() {
        assert_eq!(clamp_ttl(Duration::from_secs(30 * 24 * 3600)), MAX_CHANGES_TTL);
        assert_eq!(clamp_ttl(Duration::from_secs(3600)), Duration::from_secs(3600));
        // Drive granted 10 minutes although more was asked: renew after 8, not after 80 % of the ask.
        assert_eq!(renewal_delay(1_000 + 600_000, 1_000), Duration::from_secs(480));
        assert_eq!(renewal_delay(0, 5_000), Duration::from_secs(1), "already expired: renew at once");
    }
}
