//! HTTP/2 connections to a push provider, over TLS (rustls, ALPN `h2`) or
//! cleartext with prior knowledge (h2c, for the loopback gateway).
//!
//! Two send engines stand behind the same [`Pool`] and [`Call`]
//! ([`SendEngine`], `[pool] engine` in kickoff.toml): `h2`, the Rust crate
//! (here), and `nghttp2`, libnghttp2 driven sans-IO on the worker's thread
//! ([`super::ngclient`]). Both answer with the same [`RawResponse`] and
//! [`CallError`], so everything above them is one code path.
//!
//! A worker's session owns a small [`Pool`] of connections on its own thread.
//! Requests go to the live connection with the fewest calls in flight; h2
//! itself keeps each connection within the server's
//! SETTINGS_MAX_CONCURRENT_STREAMS (extra streams wait in its open queue),
//! and the engine's in-flight window bounds the total. A dead connection is
//! replaced in the background while the others carry on.
//!
//! [`Call`] is the response side of one request: it reads the response to
//! the end of its stream (a client that drops response bodies gets its
//! streams reset and, against a strict server, its connection closed) and
//! keeps the body only when asked to.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Method, Request};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject as _;
use tokio::net::TcpStream;

/// Largest response body kept (error bodies are a few hundred bytes).
pub(super) const MAX_KEPT_BODY: usize = 8 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection-level failure.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not usable.
    #[error("bad provider URL {url:?}: {message}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// TCP, TLS or the HTTP/2 handshake failed.
    #[error("connecting to {authority}: {message}")]
    Connect {
        /// host:port.
        authority: String,
        /// What failed.
        message: String,
    },
    /// The CA file could not be used.
    #[error("{path}: {message}", path = path.display())]
    CaFile {
        /// The CA file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Builds the rustls client configuration: the system's roots plus an extra
/// CA (the loopback gateway's), HTTP/2 by ALPN, the `ring` provider.
pub fn client_tls(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A broken certificate in the system store must not block startup.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let bad = |message: String| ConnectError::CaFile { path: path.to_owned(), message };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(bad("no certificate in the file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(format!("unusable certificate: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The HTTP/2 implementation a pool sends with (`[pool] engine`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SendEngine {
    /// The `h2` crate: the long-standing engine.
    H2,
    /// libnghttp2 (the library behind curl and h2load), sans-IO on the
    /// worker's thread: about half the CPU per request (BENCHMARKS.md).
    #[default]
    Nghttp2,
}

impl SendEngine {
    /// The name in kickoff.toml and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H2 => "h2",
            Self::Nghttp2 => "nghttp2",
        }
    }
}

/// Where a provider listens.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The URL as given.
    pub url: String,
    /// `http` (h2c) or `https`.
    pub scheme: Scheme,
    /// host:port.
    pub authority: Authority,
    host: String,
    port: u16,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// The path prefix of the URL (no trailing slash), e.g. for a gateway
    /// mounted under a path.
    pub base_path: String,
    /// The engine its pools send with.
    pub engine: SendEngine,
}

/// A connected byte stream to a provider, before HTTP/2.
pub(super) enum Transport {
    /// h2c.
    Plain(TcpStream),
    /// TLS with ALPN h2.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Endpoint {
    /// Parses `https://host[:port][/base]` or `http://...` (h2c).
    pub fn parse(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<Self, ConnectError> {
        let bad = |message: &str| ConnectError::Url { url: url.to_owned(), message: message.to_owned() };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme (https:// or http://)"))?;
        let secure = match scheme.as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(bad("the scheme must be https or http")),
        };
        let host = uri.host().ok_or_else(|| bad("no host"))?.trim_matches(['[', ']']).to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let authority: Authority = format!("{}:{port}", uri.host().unwrap_or_default()).parse().map_err(|_| bad("bad host"))?;
        let tls = if secure {
            let name = ServerName::try_from(host.clone()).map_err(|_| bad("the host is not a valid TLS server name"))?;
            Some((tls.clone(), name))
        } else {
            None
        };
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self { url: url.to_owned(), scheme, authority, host, port, tls, base_path, engine: SendEngine::default() })
    }

    /// `outgoing` as an `http::Request` to this endpoint (the h2 engine's
    /// form).
    fn request(&self, outgoing: &Outgoing<'_>) -> Request<()> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        // Providers build their paths from checked parts (hex tokens, a
        // validated project id).
        parts.path_and_query = Some(PathAndQuery::try_from(outgoing.path).expect("a valid request path"));
        let mut request = Request::new(());
        *request.method_mut() = outgoing.method.clone();
        *request.uri_mut() = http::Uri::from_parts(parts).expect("scheme, authority and path");
        let headers = request.headers_mut();
        headers.reserve(outgoing.headers.len());
        for (name, value) in outgoing.headers {
            headers.append(*name, (*value).clone());
        }
        request
    }

    /// This endpoint, sent to with `engine`.
    pub fn with_engine(mut self, engine: SendEngine) -> Self {
        self.engine = engine;
        self
    }

    pub(super) fn fail(&self, message: String) -> ConnectError {
        ConnectError::Connect { authority: self.authority.to_string(), message }
    }

    /// Connects TCP (no Nagle) and, for https, TLS with ALPN h2.
    pub(super) async fn transport(&self) -> Result<Transport, ConnectError> {
        let fail = |message: String| self.fail(message);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
        let Some((config, name)) = &self.tls else { return Ok(Transport::Plain(tcp)) };
        let tls =
            tokio_rustls::TlsConnector::from(config.clone()).connect(name.clone(), tcp).await.map_err(|e| fail(format!("TLS: {e}")))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(fail("the server did not agree to HTTP/2 (ALPN h2)".into()));
        }
        Ok(Transport::Tls(Box::new(tls)))
    }

    /// Opens one HTTP/2 connection with the `h2` crate and spawns its driver
    /// task on the current runtime.
    async fn connect(&self) -> Result<(SendRequest<Bytes>, tokio::task::JoinHandle<()>), ConnectError> {
        let fail = |message: String| self.fail(message);
        let transport = self.transport().await?;
        let mut builder = h2::client::Builder::new();
        builder
            .enable_push(false)
            // APNs allows one stream until it has seen a valid token; the real
            // limit comes with the server's SETTINGS (see `Pool::open`).
            .initial_max_send_streams(1)
            .initial_window_size(1 << 20)
            .initial_connection_window_size(8 << 20)
            .max_concurrent_reset_streams(4096);
        match transport {
            Transport::Tls(tls) => {
                let (send, conn) = builder.handshake(Unvectored(*tls)).await.map_err(|e| fail(format!("HTTP/2: {e}")))?;
                Ok((send, tokio::spawn(drive(conn))))
            }
            Transport::Plain(tcp) => {
                let (send, conn) = builder.handshake(tcp).await.map_err(|e| fail(format!("HTTP/2: {e}")))?;
                Ok((send, tokio::spawn(drive(conn))))
            }
        }
    }
}

async fn drive<T>(conn: h2::client::Connection<T, Bytes>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "provider connection closed");
    }
}

/// A TLS stream that tells h2 it has no vectored writes. h2 then copies
/// each DATA payload into its write buffer instead of chaining payloads of
/// 256 bytes or more as separate slices, so a flush carries many requests'
/// HEADERS and DATA in a few full TLS records and one `write`, not a record
/// and a syscall per FCM body (`h2/src/codec/framed_write.rs`).
struct Unvectored<T>(T);

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Unvectored<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Unvectored<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    // `is_write_vectored` keeps its default, false: the point of the type.
}

enum SlotState {
    Live { send: SendRequest<Bytes>, task: tokio::task::JoinHandle<()> },
    Reconnecting,
}

struct Slot {
    /// Only the reconnect task contends for it, rarely.
    state: Arc<Mutex<SlotState>>,
    live: Arc<std::sync::atomic::AtomicBool>,
    inflight: Arc<AtomicU32>,
}

/// One request as a provider hands it to a [`Pool`]: borrowed parts, so the
/// nghttp2 engine encodes it without building an `http::Request`.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path, with the endpoint's base path and any query.
    pub path: &'a str,
    /// Header fields besides the pseudo-headers (lowercase names).
    pub headers: &'a [(&'a HeaderName, &'a HeaderValue)],
}

/// A session's connections to one endpoint, on the endpoint's engine.
#[derive(Debug)]
pub struct Pool(PoolInner);

#[derive(Debug)]
enum PoolInner {
    H2(H2Pool),
    Nghttp2(super::ngclient::NgPool),
}

/// How long a new pool waits for the servers' SETTINGS (their stream limit).
pub(super) const SETTINGS_WAIT: Duration = Duration::from_millis(250);

impl Pool {
    /// Opens `connections` connections (at least one) and gives the
    /// server's SETTINGS a moment to arrive, so [`capacity`](Self::capacity)
    /// reports the server's stream limit rather than the initial one.
    pub async fn open(endpoint: Arc<Endpoint>, connections: usize) -> Result<Self, ConnectError> {
        Ok(Self(match endpoint.engine {
            SendEngine::H2 => PoolInner::H2(H2Pool::open(endpoint, connections).await?),
            SendEngine::Nghttp2 => PoolInner::Nghttp2(super::ngclient::NgPool::open(endpoint, connections).await?),
        }))
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        match &self.0 {
            PoolInner::H2(p) => &p.endpoint,
            PoolInner::Nghttp2(p) => p.endpoint(),
        }
    }

    /// Sends a request with `body` on the least busy live connection.
    /// `None` when no connection is usable right now (reconnects are under
    /// way); the caller retries later.
    pub fn send(&mut self, request: &Outgoing<'_>, body: Bytes, keep_body: bool) -> Option<Call> {
        match &mut self.0 {
            PoolInner::H2(p) => p.send(request, body, keep_body).map(|c| Call(CallInner::H2(c))),
            PoolInner::Nghttp2(p) => p.send(request, body, keep_body).map(|c| Call(CallInner::Nghttp2(c))),
        }
    }

    /// Streams the pool can carry at once: each live connection up to the
    /// server's SETTINGS_MAX_CONCURRENT_STREAMS.
    pub fn capacity(&self) -> usize {
        match &self.0 {
            PoolInner::H2(p) => p.capacity(),
            PoolInner::Nghttp2(p) => p.capacity(),
        }
    }

    /// The smallest SETTINGS_MAX_CONCURRENT_STREAMS among live connections.
    pub fn max_concurrent_streams(&self) -> Option<usize> {
        match &self.0 {
            PoolInner::H2(p) => p.max_concurrent_streams(),
            PoolInner::Nghttp2(p) => p.max_concurrent_streams(),
        }
    }
}

/// The `h2` crate's pool.
struct H2Pool {
    endpoint: Arc<Endpoint>,
    slots: Vec<Slot>,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Pool").field("endpoint", &self.endpoint.url).field("connections", &self.slots.len()).finish()
    }
}

impl H2Pool {
    async fn open(endpoint: Arc<Endpoint>, connections: usize) -> Result<Self, ConnectError> {
        let mut slots = Vec::new();
        for _ in 0..connections.max(1) {
            let (send, task) = endpoint.connect().await?;
            slots.push(Slot {
                state: Arc::new(Mutex::new(SlotState::Live { send, task })),
                live: Arc::new(std::sync::atomic::AtomicBool::new(true)),
                inflight: Arc::new(AtomicU32::new(0)),
            });
        }
        let pool = Self { endpoint, slots };
        let deadline = tokio::time::Instant::now() + SETTINGS_WAIT;
        while pool.capacity() <= pool.slots.len() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(pool)
    }

    fn send(&mut self, outgoing: &Outgoing<'_>, body: Bytes, keep_body: bool) -> Option<H2Call> {
        let mut best: Option<(usize, u32)> = None;
        for (i, slot) in self.slots.iter().enumerate() {
            let load = slot.inflight.load(Ordering::Relaxed);
            if slot.live.load(Ordering::Relaxed) && best.is_none_or(|(_, b)| load < b) {
                best = Some((i, load));
            }
        }
        let (i, _) = best?;
        let slot = &self.slots[i];
        let mut state = slot.state.lock().expect("slot lock");
        let SlotState::Live { send, task } = &mut *state else { return None };
        if task.is_finished() {
            drop(state);
            self.reconnect(i);
            return None;
        }
        let request = self.endpoint.request(outgoing);
        // A clone carries no "previous stream still waiting to open" state, so
        // h2 queues the stream instead of refusing it; the engine's in-flight
        // window (capped at the pool's capacity) bounds that queue.
        match send.clone().send_request(request, body.is_empty()) {
            Ok((response, mut stream)) => {
                slot.inflight.fetch_add(1, Ordering::Relaxed);
                // One DATA frame with END_STREAM: small non-final frames count
                // against the server's abuse limits.
                if !body.is_empty() && stream.send_data(body, true).is_err() {
                    return Some(H2Call::failed(slot.inflight.clone()));
                }
                Some(H2Call::new(response, slot.inflight.clone(), keep_body))
            }
            Err(e) => {
                if e.is_io() || e.is_go_away() || e.is_remote() {
                    tracing::debug!(error = %e, "connection lost; replacing it");
                    drop(state);
                    self.reconnect(i);
                }
                None
            }
        }
    }

    fn reconnect(&self, i: usize) {
        let slot = &self.slots[i];
        if !slot.live.swap(false, Ordering::Relaxed) {
            return;
        }
        *slot.state.lock().expect("slot lock") = SlotState::Reconnecting;
        let endpoint = self.endpoint.clone();
        let (state, live) = (slot.state.clone(), slot.live.clone());
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                match endpoint.connect().await {
                    Ok((send, task)) => {
                        *state.lock().expect("slot lock") = SlotState::Live { send, task };
                        live.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => {
                        // The engine logs the provider's outage once; each
                        // attempt is detail.
                        tracing::debug!(error = %e, "reconnect failed; retrying in {delay:?}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
    }

    fn capacity(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|s| match &*s.state.lock().expect("slot lock") {
                SlotState::Live { send, .. } => Some(send.current_max_send_streams()),
                SlotState::Reconnecting => None,
            })
            .fold(0, usize::saturating_add)
    }

    fn max_concurrent_streams(&self) -> Option<usize> {
        self.slots
            .iter()
            .filter_map(|s| match &*s.state.lock().expect("slot lock") {
                SlotState::Live { send, .. } => Some(send.current_max_send_streams()),
                SlotState::Reconnecting => None,
            })
            .min()
    }
}

/// A provider's answer, as far as the sender needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// HTTP status.
    pub status: u16,
    /// `retry-after`, in seconds form.
    pub retry_after: Option<Duration>,
    /// `apns-id`, if the provider sent one.
    pub apns_id: Option<HeaderValue>,
    /// The body: always for errors, for successes only when asked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// What an answer means where APNs and FCM agree: 400 a refused
    /// notification, 413 too large, 429 throttled, 500 / 502-504 transient
    /// (retried, honouring `retry-after`), anything else unexpected (not a
    /// final answer). Each provider handles its own success, token and
    /// authentication answers first.
    pub fn common_outcome(&self) -> crate::push::Outcome {
        use crate::push::{FailReason, Outcome};
        match self.status {
            400 => Outcome::Failed(FailReason::BadRequest),
            413 => Outcome::Failed(FailReason::PayloadTooLarge),
            429 => Outcome::Retry { reason: FailReason::TooManyRequests, after: self.retry_after },
            500 => Outcome::Retry { reason: FailReason::ServerError, after: self.retry_after },
            502..=504 => Outcome::Retry { reason: FailReason::Unavailable, after: self.retry_after },
            _ => Outcome::Failed(FailReason::Unexpected),
        }
    }
}

/// Why a call produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// Whether the provider may have seen the request.
    pub kind: CallFailure,
    /// What happened.
    pub message: String,
}

/// How far a request got before its call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The provider never processed it: no live connection, the stream was
    /// refused (REFUSED_STREAM) or above a GOAWAY's last stream id.
    NotSent,
    /// The connection died with the request in flight: in doubt.
    InDoubt,
    /// The provider reset this one stream on a live connection.
    Reset,
}

impl CallError {
    /// A request that could not be sent at all.
    pub fn not_sent(message: impl Into<String>) -> Self {
        Self { kind: CallFailure::NotSent, message: message.into() }
    }

    fn of(e: &h2::Error) -> Self {
        let kind = if e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote()) {
            CallFailure::NotSent
        } else if e.is_reset() && e.is_remote() {
            CallFailure::Reset
        } else {
            // An I/O error, the connection closed, or a protocol error on
            // our side: the connection is gone with the request.
            CallFailure::InDoubt
        };
        Self { kind, message: e.to_string() }
    }

    /// What the failure means for the send.
    pub fn outcome(&self) -> crate::push::Outcome {
        use crate::push::{FailReason, Outcome};
        match self.kind {
            CallFailure::NotSent => Outcome::Unsent,
            CallFailure::InDoubt => Outcome::Lost,
            CallFailure::Reset => Outcome::Retry { reason: FailReason::Transport, after: None },
        }
    }
}

enum CallState {
    Head(ResponseFuture),
    Body(h2::RecvStream, RawResponse),
    Failed,
    Done,
}

/// The response side of one request, on either engine.
#[derive(Debug)]
pub struct Call(CallInner);

#[derive(Debug)]
enum CallInner {
    H2(H2Call),
    Nghttp2(super::ngclient::NgCall),
}

impl Future for Call {
    type Output = Result<RawResponse, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            CallInner::H2(c) => Pin::new(c).poll(cx),
            CallInner::Nghttp2(c) => Pin::new(c).poll(cx),
        }
    }
}

/// The response side of one request on the `h2` crate.
struct H2Call {
    state: CallState,
    inflight: Arc<AtomicU32>,
    keep_body: bool,
}

impl std::fmt::Debug for H2Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Call").finish_non_exhaustive()
    }
}

impl H2Call {
    fn new(response: ResponseFuture, inflight: Arc<AtomicU32>, keep_body: bool) -> Self {
        Self { state: CallState::Head(response), inflight, keep_body }
    }

    /// A call whose request could not be written; `inflight` was counted.
    fn failed(inflight: Arc<AtomicU32>) -> Self {
        Self { state: CallState::Failed, inflight, keep_body: false }
    }
}

impl Drop for H2Call {
    fn drop(&mut self) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `retry-after` in its seconds form; an HTTP date (which neither provider
/// sends) or garbage is ignored.
pub fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    v.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Future for H2Call {
    type Output = Result<RawResponse, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                CallState::Failed => {
                    this.state = CallState::Done;
                    return Poll::Ready(Err(CallError { kind: CallFailure::InDoubt, message: "the request could not be written".into() }));
                }
                CallState::Done => panic!("Call polled after completion"),
                CallState::Head(fut) => {
                    let response = match Pin::new(fut).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => {
                            this.state = CallState::Done;
                            return Poll::Ready(Err(CallError::of(&e)));
                        }
                        Poll::Ready(Ok(r)) => r,
                    };
                    let (head, body) = response.into_parts();
                    let raw = RawResponse {
                        status: head.status.as_u16(),
                        retry_after: head.headers.get(http::header::RETRY_AFTER).and_then(parse_retry_after),
                        apns_id: head.headers.get("apns-id").cloned(),
                        body: Vec::new(),
                    };
                    if body.is_end_stream() {
                        this.state = CallState::Done;
                        return Poll::Ready(Ok(raw));
                    }
                    this.state = CallState::Body(body, raw);
                }
                CallState::Body(body, raw) => match body.poll_data(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(chunk))) => {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        if (this.keep_body || raw.status != 200) && raw.body.len() < MAX_KEPT_BODY {
                            let room = MAX_KEPT_BODY - raw.body.len();
                            raw.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        let CallState::Body(_, raw) = std::mem::replace(&mut this.state, CallState::Done) else { unreachable!() };
                        // The status is in: an accepted notification was
                        // accepted, whatever happened to the rest of its body.
                        if raw.status == 200 {
                            return Poll::Ready(Ok(raw));
                        }
                        return Poll::Ready(Err(CallError::of(&e)));
                    }
                    Poll::Ready(None) => {
                        let CallState::Body(_, raw) = std::mem::replace(&mut this.state, CallState::Done) else { unreachable!() };
                        return Poll::Ready(Ok(raw));
                    }
                },
            }
        }
    }
}
