//! A fault-injecting HTTP proxy for the S3 server: a seeded share of requests is answered the way S3
//! throttles (`503 SlowDown` with S3's XML error), the rest is forwarded unchanged — any method, bodies
//! streamed both ways, headers kept, the `Host` header included, so SigV4 signatures made for the proxy's
//! address still match what the server receives. It can also hold every write (PUT, POST) until told
//! to let them through: a destination that blocks, while reads still answer.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::{Rng, SeedableRng};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// S3's throttling answer.
pub const SLOW_DOWN_XML: &str =
    "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

type Body = BoxBody<Bytes, hyper::Error>;

struct Shared {
    upstream: String,
    pct: f64,
    rng: Mutex<rand::rngs::StdRng>,
    client: Client<HttpConnector, Incoming>,
    injected: AtomicU64,
    forwarded: AtomicU64,
    hold: tokio::sync::watch::Sender<bool>,
    held: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct SlowDownProxy {
    /// `http://127.0.0.1:<port>`: use it as the S3 endpoint.
    pub endpoint: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SlowDownProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SlowDownProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) answering `pct` % of requests with SlowDown.
    pub async fn start(upstream: &str, pct: f64, seed: u64) -> SlowDownProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            pct,
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            client: Client::builder(TokioExecutor::new()).build_http(),
            injected: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            hold: tokio::sync::watch::Sender::new(false),
            held: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        SlowDownProxy { endpoint, shared, task }
    }

    /// Requests answered with 503 SlowDown so far.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// Holds every PUT and POST from now on (`true`), or lets the held ones and all later ones through.
    pub fn hold_writes(&self, hold: bool) {
        self.shared.hold.send_replace(hold);
    }

    /// Writes waiting at the proxy now.
    pub fn writes_held(&self) -> u64 {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Requests forwarded to the server so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
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
    if matches!(*req.method(), hyper::Method::PUT | hyper::Method::POST) && *shared.hold.borrow() {
        shared.held.fetch_add(1, Ordering::SeqCst);
        let mut released = shared.hold.subscribe();
        let _ = released.wait_for(|hold| !hold).await;
        shared.held.fetch_sub(1, Ordering::SeqCst);
    }
    let roll: f64 = shared.rng.lock().unwrap().random::<f64>() * 100.0;
    if roll < shared.pct {
        shared.injected.fetch_add(1, Ordering::SeqCst);
        // Read the request body first, as S3 does, so the connection stays usable.
        let _ = req.into_body().collect().await;
        return Ok(slow_down());
    }
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = format!("{}{path}", shared.upstream).parse().expect("upstream URI");
    match shared.client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => Ok(resp.map(BodyExt::boxed)),
        Err(e) => Ok(text(StatusCode::BAD_GATEWAY, format!("proxy: {e}"))),
    }
}

fn slow_down() -> Response<Body> {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, SLOW_DOWN_XML.to_string());
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/xml"));
    r
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let body = Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}
