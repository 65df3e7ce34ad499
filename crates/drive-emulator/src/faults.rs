//! Fault injection: rate limits, 5xx, connection resets part-way through bodies, latency.
//! Draws come from a seeded generator so a sequential client sees the same faults on every run.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use super::rng::Rng64;

/// Fault settings as set with `POST /_emu/faults` (missing fields = 0/off/empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultSettings {
    /// % of API calls answered 403 userRateLimitExceeded / 403 rateLimitExceeded / 429.
    pub rate_limit_pct: f64,
    /// % of API calls answered 500 or 503 backendError.
    pub server_error_pct: f64,
    /// % of media/export downloads whose connection is dropped part-way through the body.
    pub reset_pct: f64,
    /// % of media downloads (alt=media) with one byte flipped in the middle of the file, length and
    /// headers intact: what a bad proxy or disk does, and what only a checksum catches.
    pub corrupt_pct: f64,
    /// Delay before every API answer.
    pub latency_ms: u64,
    /// When > 0, injected 429 answers carry `Retry-After: <n>` (some Google APIs send it on 429;
    /// Drive usually does not, so 0, the default, sends none). 403 rate limits never carry it.
    pub retry_after_secs: u32,
    /// Access token lifetime (0 = the configured default).
    pub token_lifetime_secs: u64,
    /// Seed of the fault generator.
    pub seed: u64,
    /// Extra ids flagged as abusive (403 cannotDownloadAbusiveFile without acknowledgeAbuse).
    pub abuse_ids: Vec<String>,
    /// Ids deleted for good the moment their bytes are asked for (alt=media): the client read the
    /// change, then the file went away before its download (404, and a removal in the change log).
    pub delete_on_download_ids: Vec<String>,
    /// Ids whose downloads (alt=media) answer 403 `downloadQuotaExceeded`: the file was downloaded
    /// too often lately, and Drive refuses it for hours.
    pub quota_exceeded_ids: Vec<String>,
    /// When > 0, every n-th API call (counted from this setting) first revokes every access token
    /// issued so far, so that call and every other one still holding an old token get 401
    /// "Invalid Credentials"; refresh tokens and service-account keys still mint new ones.
    pub revoke_access_tokens_every: u64,
    /// When > 0, the n-th API call (counted from this setting) first revokes every refresh token and
    /// access token, as a user removing the app's access in the middle of a run does.
    pub revoke_refresh_tokens_at_call: u64,
    /// When true, `files.list` with `corpora=allDrives` searches My Drive only and answers
    /// `incompleteSearch: true`: Google's "some search results might be missing, since all
    /// documents were not searched", which can occur with `allDrives`. Narrower corpora (`user`,
    /// `drive`) are searched in full.
    pub incomplete_all_drives: bool,
    /// Fields of the change resource this Drive does not know (e.g. `"time"`): a `changes.list`
    /// whose `fields` names one (`changes(time)`) is refused 400 `invalidParameter` at `fields`, as
    /// Drive refuses a field selection naming any field it does not have.
    pub unknown_change_fields: Vec<String>,
}

/// Which tokens an API call revokes before it is checked (fault settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Revocation {
    /// None.
    Nothing,
    /// Every access token.
    AccessTokens,
    /// Every refresh token and access token.
    RefreshTokens,
}

/// What to do with one request.
#[derive(Debug)]
pub(crate) enum Decision {
    Pass,
    Fail(ApiError),
    /// Serve headers, then drop the connection after this fraction of the body.
    Reset(f64),
}

/// Current settings and the generator.
pub(crate) struct Faults {
    inner: Mutex<(FaultSettings, Rng64)>,
    /// API calls since the settings were set (for the revocation faults).
    calls: AtomicU64,
}

impl Faults {
    /// No faults.
    pub fn new() -> Faults {
        Faults { inner: Mutex::new((FaultSettings::default(), Rng64::new(0, 0xfa17))), calls: AtomicU64::new(0) }
    }

    /// Replace the settings and restart the generator from their seed.
    pub fn set(&self, settings: FaultSettings) {
        let rng = Rng64::new(settings.seed, 0xfa17);
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = (settings, rng);
        self.calls.store(0, Ordering::Relaxed);
    }

    /// Counts one API call and says which tokens it revokes first.
    pub fn draw_revocation(&self) -> Revocation {
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (every, at) = (guard.0.revoke_access_tokens_every, guard.0.revoke_refresh_tokens_at_call);
        if at > 0 && call == at {
            Revocation::RefreshTokens
        } else if every > 0 && call.is_multiple_of(every) {
            Revocation::AccessTokens
        } else {
            Revocation::Nothing
        }
    }

    /// Current settings.
    pub fn get(&self) -> FaultSettings {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Is `id` to be deleted when its bytes are asked for?
    pub fn deletes_on_download(&self, id: &str) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0.delete_on_download_ids.iter().any(|a| a == id)
    }

    /// Has `id` used up its download quota (fault settings)?
    pub fn quota_exceeded(&self, id: &str) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0.quota_exceeded_ids.iter().any(|a| a == id)
    }

    /// Does an `allDrives` search leave the shared drives out (fault settings)?
    pub fn incomplete_all_drives(&self) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0.incomplete_all_drives
    }

    /// Change fields the fault settings make unknown.
    pub fn unknown_change_fields(&self) -> Vec<String> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0.unknown_change_fields.clone()
    }

    /// Is `id` flagged abusive by the fault settings?
    pub fn is_abusive(&self, id: &str) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0.abuse_ids.iter().any(|a| a == id)
    }

    /// Whether this download's body is corrupted (drawn apart from the other faults, so setting it
    /// does not shift their sequence).
    pub fn draw_corrupt(&self) -> bool {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (settings, rng) = &mut *guard;
        settings.corrupt_pct > 0.0 && (settings.corrupt_pct >= 100.0 || rng.percent() < settings.corrupt_pct)
    }

    /// Draw the fate of one request; `body` is true for media/export downloads.
    pub fn draw(&self, body: bool) -> (Decision, u64) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (settings, rng) = &mut *guard;
        let latency = settings.latency_ms;
        let roll = rng.percent();
        let variant = rng.below(3);
        let fraction = 0.05 + (rng.below(900) as f64) / 1000.0;
        let rate = settings.rate_limit_pct;
        let server = rate + settings.server_error_pct;
        let decision = if roll < rate {
            Decision::Fail(match variant {
                0 => ApiError::user_rate_limit(),
                1 => ApiError::rate_limit(),
                _ => ApiError::too_many_requests().retry_after(settings.retry_after_secs),
            })
        } else if roll < server {
            let status = if variant == 0 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::INTERNAL_SERVER_ERROR };
            Decision::Fail(ApiError::backend(status))
        } else if body && roll < server + settings.reset_pct {
            Decision::Reset(fraction)
        } else {
            Decision::Pass
        };
        (decision, latency)
    }
}
