//! Server-side copies of S3 objects larger than one `CopyObject` may copy (5 GiB: AWS and Supabase
//! refuse a larger source), as a multipart upload whose parts are `UploadPartCopy` requests, each
//! copying one byte range of the source. object_store has `UploadPartCopy` only internally (the whole
//! object, no range), so each part request is built and signed here (AWS Signature Version 4, header
//! authentication) with object_store's own credentials; the upload is created and completed (or
//! aborted) through object_store's `MultipartStore`.

use crate::config::RetryConfig;
use aws_lc_rs::{digest, hmac};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{Attributes, MultipartId, PutMultipartOptions};
use std::sync::Arc;
use std::time::Duration;

/// S3's copy limits, defined beside the settings they bound (so `config` needs nothing from `dest`).
pub use crate::config::keys::{COPY_OBJECT_LIMIT, MAX_PART, MIN_PART};
/// S3's most parts per upload.
const MAX_PARTS: u64 = 10_000;
/// Part size of a copy unless configured: 10 to 20 requests for a 5 to 10 GiB object, each done by
/// the server in seconds, and 10,000 parts reach S3's 5 TiB object limit.
const DEFAULT_PART: u64 = 512 << 20;
/// Part copies in flight per object.
const PARTS_AT_ONCE: usize = 4;
/// SHA-256 of an empty body: an `UploadPartCopy` request has none.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// When a copy goes multipart, and in parts of what size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyPlan {
    /// Sources larger than this many bytes are copied in parts.
    pub above: u64,
    /// Bytes per part (raised when the object would need more than 10,000).
    pub part_size: u64,
}

impl Default for CopyPlan {
    fn default() -> Self {
        CopyPlan { above: COPY_OBJECT_LIMIT, part_size: DEFAULT_PART }
    }
}

impl CopyPlan {
    /// The inclusive byte ranges of the parts of a `size`-byte object: `part_size` each (raised so
    /// that at most 10,000 parts cover it), the last one shorter.
    pub fn ranges(&self, size: u64) -> Vec<(u64, u64)> {
        let part = self.part_size.clamp(MIN_PART, MAX_PART).max(size.div_ceil(MAX_PARTS));
        (0..size.div_ceil(part)).map(|i| (i * part, ((i + 1) * part).min(size) - 1)).collect()
    }
}

/// Where the bucket answers: what a request signed here needs besides credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketAddress {
    /// The bucket's URL, without a trailing slash (`https://s3.eu-west-1.amazonaws.com/b`,
    /// `http://127.0.0.1:9000/b`, `https://bucket.s3.region.amazonaws.com`).
    pub url: String,
    /// The bucket's name (for `x-amz-copy-source`).
    pub bucket: String,
    /// The signing region.
    pub region: String,
}

impl BucketAddress {
    /// The address object_store's S3 client will use for `builder`, by the rule its `build` applies
    /// (`AWS_ENDPOINT_URL_S3` over the endpoint; with an endpoint the bucket is appended unless
    /// virtual-hosted; else AWS's regional endpoint).
    pub fn of(builder: &AmazonS3Builder) -> Option<BucketAddress> {
        let get = |k| builder.get_config_value(&k);
        let bucket = get(AmazonS3ConfigKey::Bucket)?;
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let virtual_hosted = get(AmazonS3ConfigKey::VirtualHostedStyleRequest).as_deref() == Some("true");
        let endpoint = get(AmazonS3ConfigKey::S3Endpoint).or_else(|| get(AmazonS3ConfigKey::Endpoint));
        let url = match (endpoint, virtual_hosted) {
            (Some(e), true) => e.trim_end_matches('/').to_string(),
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        Some(BucketAddress { url, bucket, region })
    }
}

/// Why one signed copy request (`UploadPartCopy` or `CopyObject`) failed.
#[derive(Debug, thiserror::Error)]
pub enum PartCopyError {
    /// object_store could not produce credentials.
    #[error("credentials: {0}")]
    Credentials(object_store::Error),
    /// The request could not be built (a URL that does not parse).
    #[error("request: {0}")]
    Request(String),
    /// The request did not get an answer.
    #[error("copy request: {0}")]
    Http(#[from] reqwest::Error),
    /// The server refused, or answered 200 with an `<Error>` body (S3 may, once a copy has started).
    #[error("copy request answered {status}: {excerpt}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        excerpt: String,
    },
    /// A success without its result (the part's ETag, or `<CopyObjectResult>`).
    #[error("copy answer has no result: {0}")]
    NoETag(String),
}

impl PartCopyError {
    /// Worth another attempt: no answer, a server error, throttling, or an error inside a 200.
    fn retryable(&self) -> bool {
        match self {
            PartCopyError::Http(_) => true,
            PartCopyError::Refused { status, .. } => *status >= 500 || *status == 429 || *status == 200,
            _ => false,
        }
    }

    /// As object_store's error, so the destination classifies it like any other store failure.
    pub fn into_store_error(self, path: &Path) -> object_store::Error {
        let path = path.to_string();
        match &self {
            PartCopyError::Refused { status: 404, .. } => object_store::Error::NotFound { path, source: self.into() },
            PartCopyError::Refused { status: 403, .. } => {
                object_store::Error::PermissionDenied { path, source: self.into() }
            }
            PartCopyError::Refused { status: 401, .. } => {
                object_store::Error::Unauthenticated { path, source: self.into() }
            }
            _ => object_store::Error::Generic { store: "S3", source: self.into() },
        }
    }
}

/// A failed step of a multipart copy: which one, and object_store's error.
#[derive(Debug)]
pub struct CopyFailure {
    /// The step (`create_multipart`, `upload_part_copy`, `complete_multipart`).
    pub op: &'static str,
    /// Its error.
    pub source: object_store::Error,
}

/// Copies large objects of one bucket in parts.
#[derive(Clone, Debug)]
pub struct MultipartCopier {
    s3: Arc<AmazonS3>,
    address: BucketAddress,
    http: reqwest::Client,
    /// When and how.
    pub plan: CopyPlan,
    attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
}

impl MultipartCopier {
    /// A copier for the bucket `s3` reaches at `address`; each part request waits `timeout` at most
    /// and is tried up to `retry.max_attempts` times.
    pub fn new(
        s3: Arc<AmazonS3>,
        address: BucketAddress,
        timeout: Duration,
        retry: &RetryConfig,
    ) -> Result<MultipartCopier, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(timeout).connect_timeout(Duration::from_secs(10)).build()?;
        Ok(MultipartCopier {
            s3,
            address,
            http,
            plan: CopyPlan::default(),
            attempts: retry.max_attempts.max(1),
            base_delay: retry.base_delay.0,
            max_delay: retry.max_delay.0,
        })
    }

    /// Copies the `size`-byte object `from` to `to` in parts, giving the copy `attributes` (content
    /// type and user metadata: unlike `CopyObject`, a new upload does not take the source's). The
    /// upload is aborted when a step fails. Returns the number of parts.
    pub async fn copy(&self, from: &Path, to: &Path, size: u64, attributes: Attributes) -> Result<usize, CopyFailure> {
        let opts = PutMultipartOptions { attributes, ..Default::default() };
        let id = self
            .s3
            .create_multipart_opts(to, opts)
            .await
            .map_err(|source| CopyFailure { op: "create_multipart", source })?;
        match self.copy_parts(from, to, &id, size).await {
            Ok(parts) => {
                let count = parts.len();
                match self.s3.complete_multipart(to, &id, parts).await {
                    Ok(_) => Ok(count),
                    Err(source) => Err(self.abandon(to, &id, CopyFailure { op: "complete_multipart", source }).await),
                }
            }
            Err(source) => Err(self.abandon(to, &id, CopyFailure { op: "upload_part_copy", source }).await),
        }
    }

    /// Aborts a failed copy's upload (S3 keeps, and bills, an upload never completed nor aborted).
    async fn abandon(&self, to: &Path, id: &MultipartId, failure: CopyFailure) -> CopyFailure {
        if let Err(e) = self.s3.abort_multipart(to, id).await {
            tracing::warn!(key = %to, error = %e, "cannot abort the upload of a failed multipart copy");
        }
        failure
    }

    async fn copy_parts(
        &self,
        from: &Path,
        to: &Path,
        id: &MultipartId,
        size: u64,
    ) -> Result<Vec<PartId>, object_store::Error> {
        let ranges = self.plan.ranges(size);
        futures::stream::iter(ranges.into_iter().enumerate())
            .map(|(i, range)| async move {
                let content_id =
                    self.part_with_retries(from, to, id, i + 1, range).await.map_err(|e| e.into_store_error(from))?;
                Ok(PartId { content_id })
            })
            .buffered(PARTS_AT_ONCE)
            .try_collect()
            .await
    }

    /// One signed request, tried again with backoff while the failure is transient.
    async fn with_retries<T, F, Fut>(&self, to: &Path, what: &str, mut request: F) -> Result<T, PartCopyError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PartCopyError>>,
    {
        let mut delay = self.base_delay;
        let mut attempt = 1;
        loop {
            match request().await {
                Err(e) if e.retryable() && attempt < self.attempts => {
                    tracing::debug!(key = %to, what, error = %e, "retrying a copy request");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.max_delay);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One part, tried again with backoff while the failure is transient.
    async fn part_with_retries(
        &self,
        from: &Path,
        to: &Path,
        id: &MultipartId,
        number: usize,
        range: (u64, u64),
    ) -> Result<String, PartCopyError> {
        self.with_retries(to, "UploadPartCopy", || self.part(from, to, id, number, range)).await
    }

    /// One signed `UploadPartCopy`: part `number` of upload `id` at `to` is bytes `range` of `from`.
    /// Returns the part's ETag.
    async fn part(
        &self,
        from: &Path,
        to: &Path,
        id: &MultipartId,
        number: usize,
        range: (u64, u64),
    ) -> Result<String, PartCopyError> {
        let number = number.to_string();
        let headers = vec![
            ("x-amz-copy-source".to_string(), self.copy_source(from)),
            ("x-amz-copy-source-range".to_string(), format!("bytes={}-{}", range.0, range.1)),
        ];
        let (status, body) = self.signed_put(to, &[("partNumber", &number), ("uploadId", id)], headers).await?;
        etag_of(status, &body)
    }

    /// One `CopyObject` of `from` to `to` that gives the copy `attributes` (content type and user
    /// metadata) instead of the source's (`x-amz-metadata-directive: REPLACE`): a copy made for another
    /// file (a content-dedup copy, a renamed file) carries that file's `drive-id`, `drive-name` and
    /// `drive-md5`. object_store's `copy` sends no directive (S3 then keeps the source's metadata) and
    /// takes no attributes, so the request is signed here. Sources above 5 GiB go through [`Self::copy`].
    pub async fn copy_object(
        &self,
        from: &Path,
        to: &Path,
        attributes: &Attributes,
    ) -> Result<(), object_store::Error> {
        let mut headers = vec![
            ("x-amz-copy-source".to_string(), self.copy_source(from)),
            ("x-amz-metadata-directive".to_string(), "REPLACE".to_string()),
        ];
        headers.extend(attribute_headers(attributes));
        self.with_retries(to, "CopyObject", || async {
            let (status, body) = self.signed_put(to, &[], headers.clone()).await?;
            copied(status, &body)
        })
        .await
        .map_err(|e| e.into_store_error(from))
    }

    /// `x-amz-copy-source` for `from` in this bucket.
    fn copy_source(&self, from: &Path) -> String {
        format!("{}/{}", self.address.bucket, uri_encode(from.as_ref(), false))
    }

    /// A body-less PUT of object `to` with `query` and `headers`, signed with SigV4 (object_store's
    /// credentials); returns the status and body.
    async fn signed_put(
        &self,
        to: &Path,
        query: &[(&str, &str)],
        mut headers: Vec<(String, String)>,
    ) -> Result<(u16, String), PartCopyError> {
        let credential = self.s3.credentials().get_credential().await.map_err(PartCopyError::Credentials)?;
        let mut text = format!("{}/{}", self.address.url, uri_encode(to.as_ref(), false));
        for (i, (k, v)) in query.iter().enumerate() {
            text.push_str(&format!("{}{k}={}", if i == 0 { '?' } else { '&' }, uri_encode(v, true)));
        }
        let url = url::Url::parse(&text).map_err(|e| PartCopyError::Request(format!("{text}: {e}")))?;
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let amz_date = amz_date(time::OffsetDateTime::now_utc());
        headers.push(("host".to_string(), host));
        headers.push(("x-amz-content-sha256".to_string(), EMPTY_SHA256.to_string()));
        headers.push(("x-amz-date".to_string(), amz_date.clone()));
        if let Some(token) = &credential.token {
            headers.push(("x-amz-security-token".to_string(), token.clone()));
        }
        let request = Canonical {
            method: "PUT",
            path: url.path(),
            query,
            headers: &headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(),
            payload_sha256: EMPTY_SHA256,
        };
        let key = Key { id: &credential.key_id, secret: &credential.secret_key };
        let authorization = authorization(&request, &key, &self.address.region, &amz_date);
        let mut call = self.http.put(url.clone()).header("authorization", authorization).body(Vec::<u8>::new());
        for (name, value) in headers.iter().filter(|(n, _)| n != "host") {
            call = call.header(name, value);
        }
        let response = call.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }
}

/// The request headers S3 stores as `attributes` (object_store's own mapping: `Content-Type` and the
/// like, `x-amz-meta-<name>` for user metadata).
fn attribute_headers(attributes: &Attributes) -> Vec<(String, String)> {
    use object_store::Attribute;
    attributes
        .iter()
        .filter_map(|(attribute, value)| {
            let name = match attribute {
                Attribute::ContentType => "content-type".to_string(),
                Attribute::ContentDisposition => "content-disposition".to_string(),
                Attribute::ContentEncoding => "content-encoding".to_string(),
                Attribute::ContentLanguage => "content-language".to_string(),
                Attribute::CacheControl => "cache-control".to_string(),
                Attribute::StorageClass => "x-amz-storage-class".to_string(),
                Attribute::Metadata(name) => format!("x-amz-meta-{name}"),
                _ => return None,
            };
            Some((name, value.as_ref().to_string()))
        })
        .collect()
}

/// Whether a `CopyObject` answer is a success (`<CopyObjectResult>`; S3 may answer 200 with an
/// `<Error>` body once a copy has started).
fn copied(status: u16, body: &str) -> Result<(), PartCopyError> {
    let excerpt = || body.chars().take(300).collect::<String>();
    if !(200..300).contains(&status) || body.contains("<Error>") {
        return Err(PartCopyError::Refused { status, excerpt: excerpt() });
    }
    if body.contains("<CopyObjectResult") { Ok(()) } else { Err(PartCopyError::NoETag(excerpt())) }
}

/// The part's ETag from an `UploadPartCopy` answer (`<CopyPartResult><ETag>"…"</ETag>…`), quotes
/// kept as `CompleteMultipartUpload` wants them.
fn etag_of(status: u16, body: &str) -> Result<String, PartCopyError> {
    let excerpt = || body.chars().take(300).collect::<String>();
    if !(200..300).contains(&status) || body.contains("<Error>") {
        return Err(PartCopyError::Refused { status, excerpt: excerpt() });
    }
    let result = body.split("<CopyPartResult").nth(1).ok_or_else(|| PartCopyError::NoETag(excerpt()))?;
    super::uploads::element(result, "ETag")
        .map(super::uploads::unescape)
        .ok_or_else(|| PartCopyError::NoETag(excerpt()))
}

/// SigV4's time stamp, `20130524T000000Z`.
fn amz_date(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// AWS's `UriEncode`: every byte but the unreserved `A-Z a-z 0-9 - . _ ~` as `%XX` (upper-case hex),
/// and `/` too when `slash` (a query value) but not in a path.
pub fn uri_encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (b == b'/' && !slash) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What SigV4 signs of a request.
pub struct Canonical<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The URL's path, already URI-encoded (S3 does not encode it twice).
    pub path: &'a str,
    /// Query parameters, not encoded.
    pub query: &'a [(&'a str, &'a str)],
    /// Every header signed (`host` and the `x-amz-*` ones at least), names in any case.
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body (`x-amz-content-sha256`).
    pub payload_sha256: &'a str,
}

/// An access key.
pub struct Key<'a> {
    /// Access key id.
    pub id: &'a str,
    /// Secret access key.
    pub secret: &'a str,
}

impl Canonical<'_> {
    /// Header names, lower case, sorted: `SignedHeaders`.
    fn signed_headers(&self) -> String {
        let mut names: Vec<String> = self.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
        names.sort();
        names.join(";")
    }

    /// The canonical request.
    fn text(&self) -> String {
        let mut query: Vec<(String, String)> =
            self.query.iter().map(|(k, v)| (uri_encode(k, true), uri_encode(v, true))).collect();
        query.sort();
        let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
            .collect();
        headers.sort();
        let headers: String = headers.into_iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
        format!(
            "{}\n{}\n{}\n{headers}\n{}\n{}",
            self.method,
            self.path,
            query.join("&"),
            self.signed_headers(),
            self.payload_sha256
        )
    }
}

/// The `Authorization` header of `request` signed with `key` for S3 in `region` at `amz_date`.
pub fn authorization(request: &Canonical<'_>, key: &Key<'_>, region: &str, amz_date: &str) -> String {
    let day = &amz_date[..amz_date.len().min(8)];
    let scope = format!("{day}/{region}/s3/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(digest::digest(&digest::SHA256, request.text().as_bytes()))
    );
    let signing_key = [day, region, "s3", "aws4_request"]
        .iter()
        .fold(format!("AWS4{}", key.secret).into_bytes(), |k, part| hmac_sha256(&k, part.as_bytes()));
    let signature = hex::encode(hmac_sha256(&signing_key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope},SignedHeaders={},Signature={signature}",
        key.id,
        request.signed_headers()
    )
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data).as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example key (S3 API reference, "Examples: Signature Calculations").
    const EXAMPLE: Key<'static> =
        Key { id: "AKIAIOSFODNN7EXAMPLE", secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" };
    const DATE: &str = "20130524T000000Z";

    fn signature_of(method: &str, path: &str, query: &[(&str, &str)], headers: &[(&str, &str)], body: &str) -> String {
        let request = Canonical { method, path, query, headers, payload_sha256: body };
        let auth = authorization(&request, &EXAMPLE, "us-east-1", DATE);
        auth.rsplit_once("Signature=").map(|(_, s)| s.to_string()).unwrap()
    }

    #[test]
    fn signs_aws_documented_get_object_example() {
        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", DATE),
        ];
        let request =
            Canonical { method: "GET", path: "/test.txt", query: &[], headers: &headers, payload_sha256: EMPTY_SHA256 };
        assert_eq!(
            authorization(&request, &EXAMPLE, "us-east-1", DATE),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn signs_aws_documented_put_object_example_with_an_encoded_path() {
        let body_sha = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-date", DATE),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", body_sha),
        ];
        let path = format!("/{}", uri_encode("test$file.text", false));
        assert_eq!(path, "/test%24file.text");
        assert_eq!(
            signature_of("PUT", &path, &[], &headers, body_sha),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn signs_aws_documented_list_objects_example_with_a_sorted_query() {
        let headers =
            [("Host", "examplebucket.s3.amazonaws.com"), ("x-amz-date", DATE), ("x-amz-content-sha256", EMPTY_SHA256)];
        assert_eq!(
            signature_of("GET", "/", &[("prefix", "J"), ("max-keys", "2")], &headers, EMPTY_SHA256),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    #[test]
    fn a_changed_secret_or_header_changes_the_signature() {
        let headers = [("host", "h"), ("x-amz-copy-source-range", "bytes=0-9"), ("x-amz-date", DATE)];
        let sign = |headers: &[(&str, &str)], secret: &str| {
            let request = Canonical { method: "PUT", path: "/k", query: &[], headers, payload_sha256: EMPTY_SHA256 };
            authorization(&request, &Key { id: "id", secret }, "us-east-1", DATE)
        };
        let base = sign(&headers, "s");
        assert_ne!(base, sign(&headers, "t"));
        let mut other = headers;
        other[1].1 = "bytes=0-10";
        assert_ne!(base, sign(&other, "s"));
    }

    #[test]
    fn parts_cover_the_object_within_s3_limits() {
        let plan = CopyPlan { above: 6 << 20, part_size: 5 << 20 };
        assert_eq!(
            plan.ranges(12 << 20),
            vec![(0, (5 << 20) - 1), (5 << 20, (10 << 20) - 1), (10 << 20, (12 << 20) - 1)]
        );
        assert_eq!(plan.ranges(10 << 20).len(), 2);
        let big = 5u64 << 40;
        let ranges = CopyPlan::default().ranges(big);
        assert!(ranges.len() as u64 <= MAX_PARTS, "{} parts", ranges.len());
        assert_eq!(ranges.last().unwrap().1, big - 1);
        assert!(ranges.windows(2).all(|w| w[0].1 + 1 == w[1].0 && w[0].1 - w[0].0 < MAX_PART));
        assert_eq!(CopyPlan::default().ranges(6 << 30).len(), 12);
    }

    #[test]
    fn reads_the_part_etag_and_refuses_errors_inside_a_200() {
        let ok = "<?xml version=\"1.0\"?><CopyPartResult><LastModified>x</LastModified>\
                  <ETag>&quot;b54357faf0632cce46e942fa68356b38&quot;</ETag></CopyPartResult>";
        assert_eq!(etag_of(200, ok).unwrap(), "\"b54357faf0632cce46e942fa68356b38\"");
        let inside = "<Error><Code>InternalError</Code></Error>";
        assert!(matches!(etag_of(200, inside), Err(e @ PartCopyError::Refused { .. }) if e.retryable()));
        assert!(matches!(etag_of(403, "<Error/>"), Err(e @ PartCopyError::Refused { .. }) if !e.retryable()));
        assert!(matches!(etag_of(200, "<CopyPartResult></CopyPartResult>"), Err(PartCopyError::NoETag(_))));
    }

    #[test]
    fn encodes_like_aws_uri_encode() {
        assert_eq!(uri_encode("a b/ü~+", false), "a%20b/%C3%BC~%2B");
        assert_eq!(uri_encode("a/b=", true), "a%2Fb%3D");
        assert_eq!(amz_date(time::macros::datetime!(2013-05-24 0:00 UTC)), DATE);
    }

    #[test]
    fn finds_the_bucket_where_object_store_does() {
        let b = AmazonS3Builder::new().with_bucket_name("b").with_region("eu-west-1");
        assert_eq!(BucketAddress::of(&b).unwrap().url, "https://s3.eu-west-1.amazonaws.com/b");
        let b = b.with_endpoint("http://127.0.0.1:9000/").with_virtual_hosted_style_request(false);
        let address = BucketAddress::of(&b).unwrap();
        assert_eq!((address.url.as_str(), address.region.as_str()), ("http://127.0.0.1:9000/b", "eu-west-1"));
    }
}
