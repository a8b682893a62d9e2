//! The loopback flag server of the embedded mode: client apps (and the
//! return-traffic model) read `GET /v1/zombie`.
//!
//! Answers carry `Cache-Control: max-age` (at most [`super::MAX_CACHE`], and
//! never past the next expiry) and an `ETag`, so a million clients polling
//! behind a CDN cost the origin little and still see a switch within
//! seconds. If the store cannot be read the server answers 503 with
//! `Retry-After`, and clients keep what they had.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use super::{FlagStore, FlagsDocument, now_ms};

/// The path client apps read.
pub const PATH: &str = "/v1/zombie";

fn answer(store: &dyn FlagStore, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &str| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(text.to_owned())))
            .expect("a valid response")
    };
    if req.uri().path() != PATH {
        return plain(StatusCode::NOT_FOUND, "not found; zombie flags are at /v1/zombie\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
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

/// Serves the flags on `listener` until `stop` fires.
pub async fn serve(listener: tokio::net::TcpListener, store: Arc<dyn FlagStore>, mut stop: oneshot::Receiver<()>) {
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
        let store = store.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(answer(store.as_ref(), &req)) }
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
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FlagServer {
    /// Listens on `addr` (port 0: any free port) and serves `store`.
    pub fn start(store: Arc<dyn FlagStore>, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name("kickoff-flags".into()).spawn(move || {
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => serve(l, store, rx).await,
                    Err(e) => tracing::error!("flag server: {e}"),
                }
            });
        })?;
        Ok(Self { addr, stop: Some(tx), thread: Some(thread) })
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

impl Drop for FlagServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
