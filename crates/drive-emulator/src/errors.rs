//! Google's JSON error envelope, so clients parse emulator errors exactly as Drive's.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

/// One API error rendered as `{"error":{"code","message","errors":[..],"status"}}`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub domain: &'static str,
    pub reason: &'static str,
    pub message: String,
    /// `(locationType, location)` as Google reports for parameter/header errors.
    pub location: Option<(&'static str, String)>,
    /// Total size, for the `Content-Range: bytes */N` header of a 416.
    pub unsatisfiable_size: Option<u64>,
    /// `Retry-After` seconds to send (0 = no header).
    pub retry_after_secs: u32,
}

impl ApiError {
    fn new(status: StatusCode, domain: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            domain,
            reason,
            message: message.into(),
            location: None,
            unsatisfiable_size: None,
            retry_after_secs: 0,
        }
    }

    /// Adds `Retry-After: <secs>` to the answer (none when 0).
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = secs;
        self
    }

    fn at(mut self, location_type: &'static str, location: &str) -> Self {
        self.location = Some((location_type, location.to_string()));
        self
    }

    /// A parameter has a value Drive would reject (`invalid`).
    pub fn invalid_value(param: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "global", "invalid", message).at("parameter", param)
    }

    /// The `fields` selection names something the resource does not have.
    pub fn invalid_fields(selection: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "global", "invalidParameter", format!("Invalid field selection {selection}"))
            .at("parameter", "fields")
    }

    /// A required parameter is missing.
    pub fn required(param: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "global", "required", message).at("parameter", param)
    }

    /// Generic 400 `badRequest` (e.g. unsupported export conversion, malformed body).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "global", "badRequest", message)
    }

    /// A `changes.watch` address Drive will not deliver to: Google answers 400
    /// `push.webhookUrlNotHttps` "WebHook callback must be HTTPS: <address>".
    pub fn webhook_url_not_https(address: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "global",
            "push.webhookUrlNotHttps",
            format!("WebHook callback must be HTTPS: {address}"),
        )
    }

    /// A Bearer token that is not (or no longer) valid: expired or revoked. Google's "Resolve
    /// errors" page: 401 `authError` "Invalid Credentials"; the client refreshes its access token.
    pub fn invalid_credentials() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "global", "authError", "Invalid Credentials").at("header", "Authorization")
    }

    /// Missing or malformed Bearer token.
    pub fn auth() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "global",
            "authError",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        )
        .at("header", "Authorization")
    }

    /// File id unknown (or not visible without `supportsAllDrives`).
    pub fn file_not_found(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "global", "notFound", format!("File not found: {id}."))
            .at("parameter", "fileId")
    }

    /// Shared drive id unknown.
    pub fn drive_not_found(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "global", "notFound", format!("Shared drive not found: {id}"))
            .at("parameter", "driveId")
    }

    /// Unknown path under the API.
    pub fn route_not_found(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "global", "notFound", format!("Not Found: {path}"))
    }

    /// Unknown notification channel in `channels.stop`.
    pub fn channel_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "global",
            "notFound",
            format!("Channel '{id}' not found for project 'mirrorflow-emulator'"),
        )
    }

    /// 403 `userRateLimitExceeded`.
    pub fn user_rate_limit() -> Self {
        Self::new(StatusCode::FORBIDDEN, "usageLimits", "userRateLimitExceeded", "User rate limit exceeded.")
    }

    /// 403 `rateLimitExceeded`.
    pub fn rate_limit() -> Self {
        Self::new(StatusCode::FORBIDDEN, "usageLimits", "rateLimitExceeded", "Rate limit exceeded.")
    }

    /// 429 `rateLimitExceeded`.
    pub fn too_many_requests() -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "usageLimits", "rateLimitExceeded", "Rate limit exceeded.")
    }

    /// 500 or 503 `backendError`.
    pub fn backend(status: StatusCode) -> Self {
        let message = if status == StatusCode::SERVICE_UNAVAILABLE { "Service Unavailable" } else { "Internal Error" };
        Self::new(status, "global", "backendError", message)
    }

    /// alt=media on a folder, Google Doc or shortcut.
    pub fn not_downloadable() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "global",
            "fileNotDownloadable",
            "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
        )
        .at("parameter", "alt")
    }

    /// alt=media on an abuse-flagged file without `acknowledgeAbuse=true`, or with it from a user who
    /// is neither the file's owner nor an organizer of its shared drive.
    pub fn abusive() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "global",
            "cannotDownloadAbusiveFile",
            "This file has been identified as malware or spam and cannot be downloaded.",
        )
        .at("parameter", "acknowledgeAbuse")
    }

    /// alt=media or an export of a file whose owner disabled downloads (`capabilities.canDownload`
    /// false): Google answers 403 `cannotDownloadFile`.
    pub fn cannot_download() -> Self {
        Self::new(StatusCode::FORBIDDEN, "global", "cannotDownloadFile", "This file cannot be downloaded by the user.")
    }

    /// alt=media of a file whose download quota is used up (too many downloads of it lately): Google
    /// answers 403 `downloadQuotaExceeded` for hours.
    pub fn download_quota_exceeded() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "usageLimits",
            "downloadQuotaExceeded",
            "The download quota for this file has been exceeded.",
        )
    }

    /// files.export of a non-Docs file.
    pub fn not_exportable() -> Self {
        Self::new(StatusCode::FORBIDDEN, "global", "fileNotExportable", "Export only supports Docs Editors files.")
    }

    /// files.export over the 10 MB limit.
    pub fn export_too_large() -> Self {
        Self::new(StatusCode::FORBIDDEN, "global", "exportSizeLimitExceeded", "This file is too large to be exported.")
    }

    /// Unsupported export target type.
    pub fn unsupported_conversion() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "global", "badRequest", "The requested conversion is not supported.")
            .at("parameter", "convertTo")
    }

    /// Range starts past the end of the file.
    pub fn range_not_satisfiable(size: u64) -> Self {
        let mut e = Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "global",
            "requestedRangeNotSatisfiable",
            "Request range not satisfiable",
        )
        .at("header", "Range");
        e.unsatisfiable_size = Some(size);
        e
    }

    /// The canonical status string Google puts next to an HTTP code.
    fn status_name(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            416 => "OUT_OF_RANGE",
            429 => "RESOURCE_EXHAUSTED",
            503 => "UNAVAILABLE",
            _ => "INTERNAL",
        }
    }

    /// The envelope as JSON.
    pub fn body(&self) -> serde_json::Value {
        let mut inner = json!({"message": self.message, "domain": self.domain, "reason": self.reason});
        if let Some((kind, loc)) = &self.location {
            inner["locationType"] = json!(kind);
            inner["location"] = json!(loc);
        }
        json!({"error": {"code": self.status.as_u16(), "message": self.message, "errors": [inner], "status": self.status_name()}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
        if let Some(size) = self.unsatisfiable_size
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            headers.insert(header::CONTENT_RANGE, v);
        }
        if self.retry_after_secs > 0 {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after_secs));
        }
        resp
    }
}
