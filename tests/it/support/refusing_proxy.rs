//! An HTTP proxy for the S3 server that refuses writes of chosen objects the way a store refuses one
//! object on purpose — Supabase's `413 EntityTooLarge` (over the file size limit) and `400 InvalidKey`,
//! S3's `403 AccessDenied` — with S3's XML error body, and forwards everything else unchanged (any
//! method, bodies streamed both ways, headers kept, `Host` included, so SigV4 signatures still match).

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

type Body = BoxBody<Bytes, hyper::Error>;

/// How the store refuses an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refuse {
    /// `413 EntityTooLarge`: over the project's or the bucket's file size limit.
    TooLarge,
    /// `400 InvalidKey`.
    InvalidKey,
    /// `403 AccessDenied`.
    AccessDenied,
}

impl Refuse {
    fn answer(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Refuse::TooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "EntityTooLarge", "The object exceeded the maximum allowed size")
            }
            Refuse::InvalidKey => (StatusCode::BAD_REQUEST, "InvalidKey", "Invalid key"),
            Refuse::AccessDenied => (StatusCode::FORBIDDEN, "AccessDenied", "Access Denied"),
        }
    }
}

struct Shared {
    upstream: String,
    /// Last key segment (decoded) → how its writes are refused.
    rules: BTreeMap<String, Refuse>,
    client: Client<HttpConnector, Incoming>,
    refused: Mutex<BTreeMap<String, u64>>,
}

/// A running proxy; stops when dropped.
pub struct RefusingProxy {
    /// `http://127.0.0.1:<port>`: use it as the S3 endpoint.
    pub endpoint: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RefusingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RefusingProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) refusing every PUT and POST whose object key
    /// ends in one of `rules`' names (the key's last segment), as that rule says.
    pub async fn start(upstream: &str, rules: BTreeMap<String, Refuse>) -> RefusingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            rules,
            client: Client::builder(TokioExecutor::new()).build_http(),
            refused: Mutex::new(BTreeMap::new()),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        RefusingProxy { endpoint, shared, task }
    }

    /// Writes refused so far, by name.
    pub fn refused(&self) -> BTreeMap<String, u64> {
        self.shared.refused.lock().unwrap().clone()
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let is_write = matches!(*req.method(), hyper::Method::PUT | hyper::Method::POST);
    let name = percent_decode(req.uri().path().rsplit('/').next().unwrap_or_default());
    if let Some(refuse) = shared.rules.get(&name).filter(|_| is_write) {
        *shared.refused.lock().unwrap().entry(name).or_default() += 1;
        // Read the request body first, so the connection stays usable.
        let _ = req.into_body().collect().await;
        return Ok(refusal(*refuse));
    }
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = format!("{}{path}", shared.upstream).parse().expect("upstream URI");
    match shared.client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => Ok(resp.map(BodyExt::boxed)),
        Err(e) => Ok(text(StatusCode::BAD_GATEWAY, format!("proxy: {e}"))),
    }
}

/// `%XX` escapes of a URL path segment decoded (as UTF-8).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn refusal(refuse: Refuse) -> Response<Body> {
    let (status, code, message) = refuse.answer();
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut r = text(status, xml);
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/xml"));
    r
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let body = Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}
