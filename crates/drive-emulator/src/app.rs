//! Shared application state and the gate every Drive API call passes through
//! (latency, Bearer check, fault draw, per-endpoint statistics).

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::response::{IntoResponse, Response};
use http::HeaderMap;

use super::EmulatorConfig;
use super::auth::{Auth, Caller};
use super::errors::ApiError;
use super::faults::{Decision, Faults, Revocation};
use super::state::State;
use super::stats::Stats;
use super::watch::Watch;

/// Everything the handlers share.
pub(crate) struct App {
    state: Mutex<State>,
    epoch: AtomicU32,
    pub auth: Auth,
    pub faults: Faults,
    pub stats: Arc<Stats>,
    pub watch: Watch,
    pub base_url: String,
}

/// What the gate lets a handler do.
#[derive(Debug, Clone)]
pub(crate) struct Pass {
    /// Who the call acts as (`None`: the single user of single-user mode).
    pub viewer: Option<String>,
    /// The access token's account and scopes.
    pub caller: Caller,
    /// Drop the connection after this fraction of the body (downloads only).
    pub reset: Option<f64>,
    /// Flip one byte of the body (length intact), to prove corrupted downloads never replace good copies.
    pub corrupt: bool,
}

impl App {
    /// Build the state for `config` served at `base_url`.
    pub fn new(config: EmulatorConfig, base_url: String) -> std::io::Result<App> {
        let auth = Auth::new(config.token_lifetime_secs)?;
        let epoch = rand::random::<u32>() >> 1;
        Ok(App {
            state: Mutex::new(State::new(config, epoch)),
            epoch: AtomicU32::new(epoch),
            auth,
            faults: Faults::new(),
            stats: Arc::new(Stats::default()),
            watch: Watch::start(),
            base_url,
        })
    }

    /// Lock the state (poisoning is ignored: the state stays consistent per operation).
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Regenerate the corpus for `config` and clear the change log (old tokens become invalid).
    pub fn regenerate(&self, config: EmulatorConfig) {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let fresh = State::new(config, epoch);
        *self.state() = fresh;
    }

    /// The token endpoint URL (the JWT `aud`).
    pub fn token_uri(&self) -> String {
        format!("{}token", self.base_url)
    }

    /// Run `handler` behind latency, auth and faults; count the outcome under `endpoint`.
    pub async fn gate<F, Fut>(&self, endpoint: &str, headers: &HeaderMap, body: bool, handler: F) -> Response
    where
        F: FnOnce(Pass) -> Fut,
        Fut: Future<Output = Result<Response, ApiError>>,
    {
        let result = async {
            match self.faults.draw_revocation() {
                Revocation::Nothing => {}
                Revocation::AccessTokens => {
                    self.auth.revoke_access_tokens();
                }
                Revocation::RefreshTokens => self.auth.revoke_refresh_tokens(),
            }
            let caller = self.auth.check(headers)?;
            let viewer = self.state().corpus.viewer(caller.user.as_deref());
            let (decision, latency) = self.faults.draw(body);
            if latency > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
            }
            let corrupt = body && self.faults.draw_corrupt();
            match decision {
                Decision::Fail(e) => Err(e),
                Decision::Reset(f) => handler(Pass { viewer, caller, reset: Some(f), corrupt }).await,
                Decision::Pass => handler(Pass { viewer, caller, reset: None, corrupt }).await,
            }
        }
        .await;
        let resp = result.unwrap_or_else(IntoResponse::into_response);
        self.stats.count(endpoint, resp.status().as_u16());
        resp
    }
}
