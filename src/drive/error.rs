//! The Drive boundary's error, and the one function that classifies Drive failures.

use crate::retry::{Classified, ErrorClass};
use std::time::Duration;

/// Everything that can go wrong talking to Drive.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// Drive answered with an error envelope.
    #[error("Drive API {status} {reason}: {message}")]
    Api {
        /// HTTP status (from the envelope's `code`).
        status: u16,
        /// `errors[0].reason`, e.g. `userRateLimitExceeded`.
        reason: String,
        /// Human message.
        message: String,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// The connection failed, was reset or timed out.
    #[error("Drive transport error: {0}")]
    Transport(String),
    /// Drive (or its token endpoint) did not answer within `[source] timeout`.
    #[error("Drive did not answer within {0:?} (source.timeout)")]
    TimedOut(Duration),
    /// A URL or id from Drive that mirrorflow will not use: an export link off Google's hosts (the
    /// bearer token would go with it), or a file id outside Drive's alphabet.
    #[error("refused: {0}")]
    Refused(String),
    /// No token could be obtained.
    #[error("Drive authentication failed: {0}")]
    Auth(String),
    /// The token endpoint refused the user's refresh token (revoked or expired): nothing works until
    /// the user signs in again, so the run ends (never retried, never a file's fault).
    #[error("Drive sign-in refused: {0}")]
    SignInRefused(String),
    /// Drive answered something we cannot read.
    #[error("unexpected Drive response: {0}")]
    Decode(String),
    /// A download Drive refused because the file is flagged as malware or spam
    /// (`cannotDownloadAbusiveFile`).
    #[error("Drive API 403 cannotDownloadAbusiveFile: {message}")]
    Abusive {
        /// Whether `acknowledge_abuse` would get it: it is off, and the user owns the file or
        /// organizes its shared drive (the only users `acknowledgeAbuse` applies to).
        acknowledgeable: bool,
        /// Drive's message.
        message: String,
    },
    /// Drive said the request's `pageToken` is invalid (a 400 whose error names the `pageToken`
    /// parameter): for a change log, a full listing is needed; for a listing, it starts over. Any
    /// other 400 is a request Drive refuses as made, never read as a lost token.
    #[error("Drive rejected the page token: {0}")]
    InvalidPageToken(String),
    /// Drive marked a narrowed `files.list` page incomplete (`incompleteSearch`) on every attempt:
    /// items may be missing from it, so it is neither listed, marked nor swept from.
    #[error("{0}: Drive marked the listing incomplete (incompleteSearch) on every attempt; not trusted")]
    IncompleteListing(String),
}

impl DriveError {
    /// Builds the error from a Google error envelope (`{"error":{code,message,errors:[{reason}]}}`).
    pub fn from_envelope(status: u16, body: &serde_json::Value, retry_after: Option<Duration>) -> DriveError {
        let err = &body["error"];
        let status = err["code"].as_u64().map(|c| c as u16).unwrap_or(status);
        let reason =
            err["errors"][0]["reason"].as_str().or_else(|| err["status"].as_str()).unwrap_or("unknown").to_string();
        let message = err["message"].as_str().unwrap_or("").to_string();
        if status == 400 && names_page_token(err) {
            return DriveError::InvalidPageToken(message);
        }
        DriveError::Api { status, reason, message, retry_after }
    }

    /// Attaches a `Retry-After` captured outside the error (google-drive3 drops response headers).
    pub fn with_retry_after(mut self, delay: Option<Duration>) -> DriveError {
        if let DriveError::Api { retry_after, .. } = &mut self
            && retry_after.is_none()
        {
            *retry_after = delay;
        }
        self
    }

    /// Drive refused the access token (401: revoked or expired before its time). Google's "Resolve
    /// errors" guide: refresh the access token with the long-lived refresh token and try again.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, DriveError::Api { status: 401, .. })
    }

    /// The short reason, for the dead-letter store.
    pub fn short_reason(&self) -> String {
        match self {
            DriveError::Api { reason, .. } => reason.clone(),
            DriveError::Transport(_) => "transport".into(),
            DriveError::TimedOut(_) => "timeout".into(),
            DriveError::Refused(_) => "refused".into(),
            DriveError::Auth(_) => "auth".into(),
            DriveError::SignInRefused(_) => "sign_in_refused".into(),
            DriveError::Decode(_) => "decode".into(),
            DriveError::InvalidPageToken(_) => "invalidPageToken".into(),
            DriveError::IncompleteListing(_) => "incompleteSearch".into(),
            DriveError::Abusive { .. } => "cannotDownloadAbusiveFile".into(),
        }
    }
}

impl From<google_drive3::Error> for DriveError {
    fn from(e: google_drive3::Error) -> Self {
        use google_drive3::Error as G;
        match e {
            G::BadRequest(v) => DriveError::from_envelope(v["error"]["code"].as_u64().unwrap_or(400) as u16, &v, None),
            G::HttpError(e) => DriveError::Transport(e.to_string()),
            G::Io(e) => DriveError::Transport(e.to_string()),
            G::MissingToken(e) => DriveError::Auth(e.to_string()),
            G::Failure(r) => DriveError::Api {
                status: r.status().as_u16(),
                reason: r.status().canonical_reason().unwrap_or("failure").into(),
                message: "non-JSON error body".into(),
                retry_after: parse_retry_after(r.headers()),
            },
            other => DriveError::Decode(other.to_string()),
        }
    }
}

/// Whether a 400's error says the `pageToken` parameter is what is wrong: Google reports a bad
/// parameter value as `errors[].location` naming it (`locationType` "parameter"; Drive answers an
/// unknown or expired page token with reason `invalid`, "Invalid Value", at `pageToken`). A Drive
/// that sends no location is believed when its message speaks of the page token.
fn names_page_token(err: &serde_json::Value) -> bool {
    let located = err["errors"]
        .as_array()
        .is_some_and(|items| items.iter().any(|e| e["location"].as_str().is_some_and(|l| l == "pageToken")));
    let said = || {
        let m = err["message"].as_str().unwrap_or("").to_ascii_lowercase();
        m.contains("pagetoken") || m.contains("page token")
    };
    located || said()
}

/// `Retry-After` as delay-seconds or an HTTP date (a date in the past means no wait).
pub fn parse_retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// A google-drive3 delegate for one metadata call: the hub's error keeps the JSON body but drops the
/// response headers, so this keeps the `Retry-After` of a failed answer, and never retries on its own
/// (our `RetryPolicy` stays the one place that decides).
#[derive(Debug, Default)]
pub struct RetryAfterCapture {
    retry_after: Option<Duration>,
}

impl RetryAfterCapture {
    /// The hub's error as ours, with the captured `Retry-After`.
    pub fn error(&self, e: google_drive3::Error) -> DriveError {
        DriveError::from(e).with_retry_after(self.retry_after)
    }
}

impl google_drive3::Delegate for RetryAfterCapture {
    fn http_failure(
        &mut self,
        response: &google_drive3::common::Response,
        _err: Option<&serde_json::Value>,
    ) -> google_drive3::common::Retry {
        self.retry_after = parse_retry_after(response.headers());
        google_drive3::common::Retry::Abort
    }
}

impl Classified for DriveError {
    fn class(&self) -> ErrorClass {
        match self {
            DriveError::Api { status, reason, .. } => classify_api(*status, reason),
            DriveError::Transport(_) | DriveError::TimedOut(_) => ErrorClass::Retryable,
            DriveError::Auth(_) => ErrorClass::Retryable,
            // Asked again after a pause: Drive may search every corpus next time.
            DriveError::IncompleteListing(_) => ErrorClass::Retryable,
            DriveError::SignInRefused(_) => ErrorClass::Fatal,
            DriveError::Decode(_)
            | DriveError::InvalidPageToken(_)
            | DriveError::Refused(_)
            | DriveError::Abusive { .. } => ErrorClass::Permanent,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            DriveError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
    fn reason(&self) -> String {
        self.short_reason()
    }
    fn timed_out(&self) -> bool {
        matches!(self, DriveError::TimedOut(_))
    }
    /// A 401 is Drive answering that the token is bad: the token is renewed, Drive is not down.
    /// An incomplete listing is Drive answering, not Drive down.
    fn trips_breaker(&self) -> bool {
        self.class() == ErrorClass::Retryable
            && !self.is_unauthorized()
            && !matches!(self, DriveError::IncompleteListing(_))
    }
}

/// Google's guidance: retry 429, 5xx, 403 rate limits and 401 (after a token refresh, see
/// `DriveClient::paced`); everything else is final.
pub fn classify_api(status: u16, reason: &str) -> ErrorClass {
    match (status, reason) {
        (429, _) | (500..=599, _) | (401, _) => ErrorClass::Retryable,
        (403, "rateLimitExceeded" | "userRateLimitExceeded" | "backendError" | "sharingRateLimitExceeded") => {
            ErrorClass::Retryable
        }
        _ => ErrorClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_and_server_errors_are_retryable() {
        assert_eq!(classify_api(403, "userRateLimitExceeded"), ErrorClass::Retryable);
        assert_eq!(classify_api(403, "rateLimitExceeded"), ErrorClass::Retryable);
        assert_eq!(classify_api(429, "rateLimitExceeded"), ErrorClass::Retryable);
        assert_eq!(classify_api(503, "backendError"), ErrorClass::Retryable);
    }

    #[test]
    fn a_refused_access_token_is_retried_but_never_trips_the_breaker() {
        let v =
            serde_json::json!({"error":{"code":401,"message":"Invalid Credentials","errors":[{"reason":"authError"}]}});
        let e = DriveError::from_envelope(401, &v, None);
        assert!(e.is_unauthorized());
        assert_eq!(e.class(), ErrorClass::Retryable);
        assert!(!e.trips_breaker());
        assert!(DriveError::from_envelope(503, &serde_json::json!({}), None).trips_breaker());
    }

    #[test]
    fn refusals_are_permanent() {
        assert_eq!(classify_api(403, "cannotDownloadAbusiveFile"), ErrorClass::Permanent);
        assert_eq!(classify_api(403, "fileNotDownloadable"), ErrorClass::Permanent);
        assert_eq!(classify_api(403, "exportSizeLimitExceeded"), ErrorClass::Permanent);
        assert_eq!(classify_api(404, "notFound"), ErrorClass::Permanent);
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        let mut h = http::HeaderMap::new();
        assert_eq!(parse_retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(120);
        let date = later.format(&time::format_description::well_known::Rfc2822).unwrap();
        h.insert(http::header::RETRY_AFTER, http::HeaderValue::from_str(&date).unwrap());
        let wait = parse_retry_after(&h).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120), "{wait:?}");
        h.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
        h.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn a_captured_retry_after_reaches_the_classified_error() {
        let v = serde_json::json!({"error":{"code":429,"message":"m","errors":[{"reason":"rateLimitExceeded"}]}});
        let capture = RetryAfterCapture { retry_after: Some(Duration::from_secs(3)) };
        let e = capture.error(google_drive3::Error::BadRequest(v));
        assert_eq!(e.class(), ErrorClass::Retryable);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn only_an_error_naming_the_page_token_is_a_rejected_token() {
        let token = serde_json::json!({"error":{"code":400,"message":"Invalid Value","errors":[
            {"domain":"global","reason":"invalid","message":"Invalid Value","locationType":"parameter","location":"pageToken"}]}});
        assert!(matches!(DriveError::from_envelope(400, &token, None), DriveError::InvalidPageToken(_)));
        let worded = serde_json::json!({"error":{"code":400,"message":"The page token is invalid.","errors":[{"reason":"badRequest"}]}});
        assert!(matches!(DriveError::from_envelope(400, &worded, None), DriveError::InvalidPageToken(_)));
        let fields = serde_json::json!({"error":{"code":400,"message":"Invalid field selection time","errors":[
            {"domain":"global","reason":"invalidParameter","message":"Invalid field selection time","locationType":"parameter","location":"fields"}]}});
        let e = DriveError::from_envelope(400, &fields, None);
        assert!(matches!(&e, DriveError::Api { status: 400, reason, .. } if reason == "invalidParameter"), "{e:?}");
        let bare = serde_json::json!({"error":{"code":400,"message":"Invalid Value","errors":[{"reason":"invalid"}]}});
        assert!(matches!(DriveError::from_envelope(400, &bare, None), DriveError::Api { .. }));
    }

    #[test]
    fn envelope_is_parsed() {
        let v = serde_json::json!({"error":{"code":403,"message":"m","errors":[{"domain":"usageLimits","reason":"userRateLimitExceeded","message":"m"}]}});
        let e = DriveError::from_envelope(0, &v, None);
        assert_eq!(e.short_reason(), "userRateLimitExceeded");
        assert_eq!(e.class(), ErrorClass::Retryable);
    }
}
