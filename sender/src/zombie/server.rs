//! The loopback flag server of the embedded mode: client apps (and the
//! return-traffic model) read `GET /v1/zombie`.
//!
//! Answers carry `Cache-Control: max-age` (at most [`super::MAX_CACHE`], and
//! never past the next expiry) and an `ETag`, so a million clients polling
//! behind a CDN cost the origin little and still see a switch within
//! seconds. If the store cannot be read the server answers 503 with
//! `Retry-After`, and clients keep what they had.
//!
//! The server counts what reaches it, per backend: polls of the flags
//! (`?backend=NAME` says which backend a client is about to call) and, in
//! embedded mode, requests to the stand-in backends at
//! [`BACKENDS_PATH`]`NAME` that the simulated clients
//! ([`super::clients`]) call. A request may stand for several clients with
//! the [`CLIENTS_HEADER`] header (the simulation sends one request per
//! backend per 100 ms for however many clients it moves).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use super::background::Background;
use super::{FlagStore, FlagsDocument, now_ms};
use crate::metrics::prometheus::{self, Exposition, PromSink, render};

/// The path client apps read.
pub const PATH: &str = "/v1/zombie";
/// Prometheus' page: the flag server's counts, and in embedded mode what
/// the engine sent.
pub const METRICS_PATH: &str = "/metrics";
/// Where the embedded mode's stand-in backends answer (`/v1/backends/api`).
pub const BACKENDS_PATH: &str = "/v1/backends/";
/// How many clients (or requests) one request stands for (1 to 1,000,000;
/// default 1).
pub const CLIENTS_HEADER: &str = "x-kickoff-clients";

/// Requests counted per backend since the last [`RequestCounts::take`],
/// and since the start (for `/metrics`).
#[derive(Debug)]
pub struct RequestCounts {
    inner: Mutex<(Counted, Instant)>,
    totals: Mutex<Counted>,
}

/// What [`RequestCounts::take`] returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counted {
    /// Polls of the flags, by the backend named (`*` when none).
    pub polls: BTreeMap<String, u64>,
    /// Requests to the stand-in backends, by backend.
    pub requests: BTreeMap<String, u64>,
    /// Seconds the counts cover.
    pub seconds: f64,
}

impl Default for RequestCounts {
    fn default() -> Self {
        Self { inner: Mutex::new((Counted::default(), Instant::now())), totals: Mutex::default() }
    }
}

impl RequestCounts {
    fn add(&self, poll: bool, backend: &str, n: u64) {
        let mut inner = self.inner.lock().expect("counts lock");
        let map = if poll { &mut inner.0.polls } else { &mut inner.0.requests };
        *map.entry(backend.to_owned()).or_default() += n;
        drop(inner);
        let mut totals = self.totals.lock().expect("counts lock");
        let map = if poll { &mut totals.polls } else { &mut totals.requests };
        *map.entry(backend.to_owned()).or_default() += n;
    }

    /// The Prometheus page: polls and stand-in backend requests since the
    /// start, per backend.
    fn exposition(&self, e: &mut Exposition) {
        let totals = self.totals.lock().expect("counts lock").clone();
        let family = |e: &mut Exposition, name: &str, help: &str, counts: &BTreeMap<String, u64>| {
            let labels: Vec<[(&str, &str); 1]> = counts.keys().map(|b| [("backend", b.as_str())]).collect();
            let samples: Vec<(&[(&str, &str)], u64)> = labels.iter().zip(counts.values()).map(|(l, n)| (&l[..], *n)).collect();
            e.counter(name, help, &samples);
        };
        family(
            e,
            "kickoff_flag_polls_total",
            "Polls of the zombie flags, by the backend a client is about to call (* none named).",
            &totals.polls,
        );
        family(
            e,
            "kickoff_backend_requests_total",
            "Requests to the stand-in backends, by backend (clients the simulation moves).",
            &totals.requests,
        );
    }

    /// The counts since the last take (and the seconds they cover); starts
    /// counting afresh.
    pub fn take(&self) -> Counted {
        let mut inner = self.inner.lock().expect("counts lock");
        let now = Instant::now();
        let mut out = std::mem::take(&mut inner.0);
        out.seconds = now.duration_since(inner.1).as_secs_f64();
        inner.1 = now;
        out
    }
}

/// The backend a poll names (`?backend=api`), `*` when none.
fn polled_backend(req: &Request<Incoming>) -> String {
    req.uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("backend=")))
        .filter(|b| !b.is_empty() && b.len() <= 64)
        .unwrap_or("*")
        .to_owned()
}

fn clients_of(req: &Request<Incoming>) -> u64 {
    req.headers().get(CLIENTS_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()).map_or(1, |n| n.clamp(1, 1_000_000))
}

fn answer(store: &dyn FlagStore, counts: &RequestCounts, sends: Option<&PromSink>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &str| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(text.to_owned())))
            .expect("a valid response")
    };
    if let Some(backend) = req.uri().path().strip_prefix(BACKENDS_PATH).filter(|b| !b.is_empty() && b.len() <= 64 && !b.contains('/')) {
        counts.add(false, backend, clients_of(req));
        return Response::builder().status(StatusCode::NO_CONTENT).body(Full::new(Bytes::new())).expect("a valid response");
    }
    if req.uri().path() == METRICS_PATH {
        let mut e = Exposition::default();
        counts.exposition(&mut e);
        let mut page = e.finish();
        if let Some(sends) = sends {
            page.push_str(&render(&sends.totals()));
        }
        let mut r = plain(StatusCode::OK, &page);
        r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(prometheus::CONTENT_TYPE));
        return r;
    }
    if req.uri().path() != PATH {
        return plain(StatusCode::NOT_FOUND, "not found; zombie flags are at /v1/zombie\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    counts.add(true, &polled_backend(req), clients_of(req));
    let flags = match store.flags() {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("flag server: {e}");
            let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "flags unavailable; keep the last answer\n");
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            return r;
        }
    };
    let (doc, max_age) = FlagsDocument::at(&flags, now_ms());
    let body = serde_json::to_vec(&doc).expect("the document serializes");
    let etag = format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(&body));
    let fresh =
        req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let builder =
        Response::builder().header(header::CACHE_CONTROL, format!("public, max-age={}", max_age.as_secs())).header(header::ETAG, &etag);
    let (status, body) = if fresh { (StatusCode::NOT_MODIFIED, Bytes::new()) } else { (StatusCode::OK, Bytes::from(body)) };
    let body = if req.method() == Method::HEAD { Bytes::new() } else { body };
    builder.status(status).header(header::CONTENT_TYPE, "application/json").body(Full::new(body)).expect("a valid response")
}

/// Serves the flags on `listener` until `stop` fires, counting requests
/// into `counts`; `/metrics` adds what `sends` counted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn FlagStore>,
    counts: Arc<RequestCounts>,
    sends: Option<Arc<PromSink>>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!("flag server accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let (store, counts, sends) = (store.clone(), counts.clone(), sends.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (store, counts, sends) = (store.clone(), counts.clone(), sends.clone());
                async move { Ok::<_, Infallible>(answer(store.as_ref(), &counts, sends.as_deref(), &req)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!("flag server connection: {e}");
            }
        });
    }
}

/// A flag server on a thread of its own.
#[derive(Debug)]
pub struct FlagServer {
    addr: SocketAddr,
    counts: Arc<RequestCounts>,
    _serving: Background,
}

impl FlagServer {
    /// Listens on `addr` (port 0: any free port) and serves `store`, and
    /// at `/metrics` its counts and what `sends` counted.
    pub fn start(store: Arc<dyn FlagStore>, addr: SocketAddr, sends: Option<Arc<PromSink>>) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(RequestCounts::default());
        let serving = counts.clone();
        let serving = Background::spawn("kickoff-flags", move |stop| async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => serve(l, store, serving, sends, stop).await,
                Err(e) => tracing::error!("flag server: {e}"),
            }
        })?;
        Ok(Self { addr, counts, _serving: serving })
    }

    /// What reached it, per backend.
    pub fn counts(&self) -> &RequestCounts {
        &self.counts
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL client apps read.
    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }
}
