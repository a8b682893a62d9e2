//! HTTP/2 connections to a push provider, over TLS (rustls, ALPN `h2`) or
//! cleartext with prior knowledge (h2c, for the loopback gateway).
//!
//! A worker's session owns a small [`Pool`] of connections on its own
//! thread and hands it each request as an [`Outgoing`] (borrowed parts). Two
//! send engines stand behind the pool ([`SendEngine`], `[pool] engine` in
//! kickoff.toml): `nghttp2` (the default: libnghttp2 driven sans-IO,
//! `engine_nghttp2.rs`) and `h2` (the Rust crate, `engine_h2.rs`, the
//! fallback). Both answer with the same [`RawResponse`] or [`CallError`], so
//! everything above them is one code path; the same test suites run on both.
//!
//! [`Call`] is the response side of one request: it reads the response to
//! the end of its stream (a client that drops response bodies gets its
//! streams reset and, against a strict server, its connection closed) and
//! keeps the body only when asked to.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Method};
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
    /// The `h2` crate: the engine Kickoff started with, kept as the
    /// fallback.
    H2,
    /// libnghttp2 (the library behind curl and h2load), sans-IO on the
    /// worker's thread: less CPU per request (BENCHMARKS.md).
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
    H2(super::engine_h2::H2Pool),
    Nghttp2(super::engine_nghttp2::NgPool),
}

/// How long a new pool waits for the servers' SETTINGS (their stream limit).
pub(super) const SETTINGS_WAIT: Duration = Duration::from_millis(250);

impl Pool {
    /// Opens `connections` connections (at least one) and gives the
    /// server's SETTINGS a moment to arrive, so [`capacity`](Self::capacity)
    /// reports the server's stream limit rather than the initial one.
    pub async fn open(endpoint: Arc<Endpoint>, connections: usize) -> Result<Self, ConnectError> {
        Ok(Self(match endpoint.engine {
            SendEngine::H2 => PoolInner::H2(super::engine_h2::H2Pool::open(endpoint, connections).await?),
            SendEngine::Nghttp2 => PoolInner::Nghttp2(super::engine_nghttp2::NgPool::open(endpoint, connections).await?),
        }))
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        match &self.0 {
            PoolInner::H2(p) => p.endpoint(),
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

/// The response side of one request, on either engine.
#[derive(Debug)]
pub struct Call(CallInner);

#[derive(Debug)]
enum CallInner {
    H2(super::engine_h2::H2Call),
    Nghttp2(super::engine_nghttp2::NgCall),
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

/// `retry-after` in its seconds form; an HTTP date (which neither provider
/// sends) or garbage is ignored.
pub fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    v.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}
