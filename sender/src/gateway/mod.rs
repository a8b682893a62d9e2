//! The loopback push gateway: a real HTTP/2 server (TLS with its own test CA,
//! or h2c) speaking the APNs provider API and the FCM v1 API with its OAuth
//! token endpoint, on 127.0.0.1.
//!
//! It validates requests as the real services do (headers, token formats,
//! JWT signatures and ages, payload size and JSON shape) and answers with
//! their statuses and error bodies. Latency, dead (410) tokens, 429 and 5xx
//! rates and the stream limit can be injected. Every delivery is recorded
//! per token, so duplicates and missing devices are measured at the far end.
//!
//! Embedded mode starts one in-process on port 0; `kickoff-sender gateway`
//! runs one on its own.
//!
//! - [`keys`]: the test credentials and CA.
//! - [`record`]: what arrived.
//! - `apns` / `fcm`: request validation per service.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{HeaderName, HeaderValue, Response};
use tokio::net::{TcpListener, TcpStream};
use xxhash_rust::xxh3::xxh3_64;

use crate::push::apns::{ApnsProvider, ApnsSettings};
use crate::push::auth::ApnsRefresh;
use crate::push::fcm::{FcmError, FcmProvider, FcmSettings};
use crate::push::h2client::SendEngine;
use crate::push::providers::PushProviders;
use crate::rng::SplitMix64;

mod apns;
mod fcm;
pub mod keys;
pub mod record;

pub use fcm::DEFAULT_TOKEN_LIFETIME;
pub use keys::GatewayKeys;
pub use record::{Captured, DeliveryCheck, GatewayStats, Records};

/// What the gateway injects and allows.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Worker threads of the gateway's runtime.
    pub threads: usize,
    /// SETTINGS_MAX_CONCURRENT_STREAMS per connection.
    pub max_concurrent_streams: u32,
    /// Response latency, uniform in `[min, max]`.
    pub latency: (Duration, Duration),
    /// Tokens that answer 410 Unregistered (APNs) / 404 UNREGISTERED (FCM).
    pub unregistered: HashSet<String>,
    /// A further share of all tokens that answer as unregistered, chosen by
    /// hash so a token is consistently dead.
    pub unregistered_rate: f64,
    /// Share of requests answered 429.
    pub rate_429: f64,
    /// Share of requests answered 500.
    pub rate_500: f64,
    /// Share of requests answered 503.
    pub rate_503: f64,
    /// `retry-after` seconds sent with 429 and 503.
    pub retry_after: Option<u64>,
    /// Inject 429/500/503 only for this long after the first request (a
    /// storm that passes); `None`: for as long as the gateway runs.
    pub faults_for: Option<Duration>,
    /// Lifetime of issued OAuth access tokens.
    pub token_lifetime: Duration,
    /// Seed of the fault and latency draws.
    pub seed: u64,
    /// Requests kept whole (method, path, header list, body) for
    /// inspection, the first ones in arrival order ([`Records::captured`]).
    pub capture: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            threads: 1,
            max_concurrent_streams: 1000,
            latency: (Duration::ZERO, Duration::ZERO),
            unregistered: HashSet::new(),
            unregistered_rate: 0.0,
            rate_429: 0.0,
            rate_500: 0.0,
            rate_503: 0.0,
            retry_after: None,
            faults_for: None,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            seed: 42,
            capture: 0,
        }
    }
}

/// A response.
#[derive(Debug)]
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Reply {
    fn new(status: u16, body: Bytes) -> Self {
        Self { status, headers: Vec::new(), body }
    }

    fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(status, Bytes::from(value.to_string())).header("content-type", HeaderValue::from_static("application/json"))
    }

    fn header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.headers.push((HeaderName::from_static(name), value));
        self
    }
}

/// Deserializes any JSON object and nothing else, without building it.
pub(crate) struct AnyObject;

impl<'de> serde::Deserialize<'de> for AnyObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AnyObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<AnyObject, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(AnyObject)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// One request as the handlers see it.
pub(crate) struct Incoming<'a> {
    method: &'a http::Method,
    path: &'a str,
    headers: &'a http::HeaderMap,
    body: &'a [u8],
    now: Instant,
}

/// Per-connection fault and latency draws.
#[derive(Debug)]
pub(crate) struct Faults {
    rng: SplitMix64,
    config: Arc<GatewayConfig>,
    /// When the gateway saw its first request (shared by every connection).
    first_request: Arc<std::sync::OnceLock<Instant>>,
}

impl Faults {
    /// A status to inject instead of the real answer, if the dice say so.
    fn inject(&mut self) -> Option<u16> {
        let c = &self.config;
        if c.rate_429 + c.rate_500 + c.rate_503 == 0.0 {
            return None;
        }
        if let Some(window) = c.faults_for
            && self.first_request.get_or_init(Instant::now).elapsed() >= window
        {
            return None;
        }
        let roll = self.rng.next_f64();
        if roll < c.rate_429 {
            Some(429)
        } else if roll < c.rate_429 + c.rate_500 {
            Some(500)
        } else if roll < c.rate_429 + c.rate_500 + c.rate_503 {
            Some(503)
        } else {
            None
        }
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.config.latency;
        lo + hi.saturating_sub(lo).mul_f64(self.rng.next_f64())
    }
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct State {
    config: Arc<GatewayConfig>,
    keys: GatewayKeys,
    apns_verifier: p256::ecdsa::VerifyingKey,
    fcm_verifier: rsa::PublicKey,
    access_tokens: Mutex<HashMap<String, Instant>>,
    records: Arc<Records>,
    ids: AtomicU64,
    id_prefix: u64,
    connections: AtomicU64,
    first_request: Arc<std::sync::OnceLock<Instant>>,
}

impl State {
    fn is_unregistered(&self, token: &str) -> bool {
        self.config.unregistered.contains(token)
            || (self.config.unregistered_rate > 0.0 && (xxh3_64(token.as_bytes()) % 1_000_000) as f64 / 1e6 < self.config.unregistered_rate)
    }

    fn new_apns_id(&self) -> HeaderValue {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let p = self.id_prefix;
        let text = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            p >> 32,
            (p >> 16) & 0xffff,
            p & 0xfff,
            (n >> 48) & 0xfff,
            n & 0xffff_ffff_ffff
        );
        HeaderValue::try_from(text).expect("hex")
    }
}

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The address could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The credentials are unusable.
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    /// The gateway's runtime could not start.
    #[error("gateway runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A running gateway. Stops when dropped.
#[derive(Debug)]
pub struct Gateway {
    addr: SocketAddr,
    keys: GatewayKeys,
    records: Arc<Records>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Generates test credentials and starts a gateway on 127.0.0.1, port 0.
    pub fn start_local(config: GatewayConfig, tls: bool, topic: &str) -> Result<Self, GatewayError> {
        Self::start_at(([127, 0, 0, 1], 0).into(), config, tls, topic)
    }

    /// Binds `addr` (port 0: any free port), then generates test credentials
    /// for the bound address and serves.
    pub fn start_at(addr: SocketAddr, config: GatewayConfig, tls: bool, topic: &str) -> Result<Self, GatewayError> {
        if !addr.ip().is_loopback() {
            return Err(GatewayError::Bind { addr, source: std::io::Error::other("the gateway listens on loopback only") });
        }
        let listener = std::net::TcpListener::bind(addr).map_err(|source| GatewayError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(|source| GatewayError::Bind { addr, source })?;
        let keys = GatewayKeys::generate(bound, tls, topic)?;
        Self::serve(listener, keys, config)
    }

    /// Starts a gateway with existing credentials, on their address.
    pub fn start(keys: GatewayKeys, config: GatewayConfig) -> Result<Self, GatewayError> {
        if !keys.listen.ip().is_loopback() {
            return Err(GatewayError::Bind { addr: keys.listen, source: std::io::Error::other("the gateway listens on loopback only") });
        }
        let listener = std::net::TcpListener::bind(keys.listen).map_err(|source| GatewayError::Bind { addr: keys.listen, source })?;
        Self::serve(listener, keys, config)
    }

    fn serve(listener: std::net::TcpListener, keys: GatewayKeys, config: GatewayConfig) -> Result<Self, GatewayError> {
        let addr = listener.local_addr().map_err(|source| GatewayError::Bind { addr: keys.listen, source })?;
        listener.set_nonblocking(true).map_err(|source| GatewayError::Bind { addr, source })?;
        let tls = if keys.tls { Some(server_tls(&keys)?) } else { None };
        let records = Arc::new(Records::with_capture(config.capture));
        let fcm_verifier = crate::push::auth::rsa_public_key(&keys.service_account.public_key_pem()).expect("our own key");
        let state = Arc::new(State {
            config: Arc::new(config),
            apns_verifier: keys.apns.verifying_key(),
            fcm_verifier,
            keys: keys.clone(),
            access_tokens: Mutex::new(HashMap::new()),
            records: records.clone(),
            ids: AtomicU64::new(1),
            id_prefix: u64::from_le_bytes(crate::push::auth::rand_bytes::<8>()),
            connections: AtomicU64::new(0),
            first_request: Arc::default(),
        });
        let threads = state.config.threads.max(1);
        let rt = if threads == 1 {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        } else {
            tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
        }
        .map_err(GatewayError::Runtime)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("kickoff-gateway".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("a non-blocking listener");
                    accept_loop(listener, state, tls, rx).await;
                });
            })
            .map_err(GatewayError::Runtime)?;
        Ok(Self { addr, keys, records, shutdown: Some(tx), thread: Some(thread) })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL (`https://127.0.0.1:PORT` or `http://`).
    pub fn url(&self) -> String {
        format!("{}://{}", if self.keys.tls { "https" } else { "http" }, self.addr)
    }

    /// Its credentials.
    pub fn keys(&self) -> &GatewayKeys {
        &self.keys
    }

    /// What arrived.
    pub fn records(&self) -> &Arc<Records> {
        &self.records
    }

    /// APNs and FCM providers pointed at this gateway, with its credentials,
    /// started on the current tokio runtime.
    pub async fn providers(&self, connections: usize, engine: SendEngine) -> Result<PushProviders, FcmError> {
        let tls = crate::push::h2client::client_tls(None)?;
        let tls = with_extra_root(&tls, &self.keys.ca_pem);
        let apns = ApnsProvider::new(
            &ApnsSettings {
                key: self.keys.apns.clone(),
                url: self.url(),
                topic: None,
                connections,
                refresh: ApnsRefresh::default(),
                engine,
            },
            &tls,
        )?;
        let fcm = FcmProvider::start(
            &FcmSettings {
                account: self.keys.service_account.clone(),
                project: self.keys.service_account.project_id.clone(),
                url: self.url(),
                connections,
                engine,
            },
            &tls,
        )
        .await?;
        Ok(PushProviders { apns: Some(apns), fcm: Some(fcm) })
    }

    /// Stops accepting and closes connections.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client TLS config trusting `ca_pem` besides the system roots.
fn with_extra_root(base: &Arc<rustls::ClientConfig>, ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the defaults")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = base.alpn_protocols.clone();
    Arc::new(config)
}

fn server_tls(keys: &GatewayKeys) -> Result<tokio_rustls::TlsAcceptor, keys::KeysError> {
    use rustls_pki_types::pem::PemObject as _;
    let bad = |m: String| keys::KeysError::Certificate(m);
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(keys.server_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(keys.server_key_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (state, tls, shutdown) = (state.clone(), tls.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, state, tls, shutdown).await {
                            tracing::debug!(error = %e, "gateway connection ended");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "gateway accept failed"),
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn connection(
    stream: TcpStream,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    stream.set_nodelay(true)?;
    match tls {
        Some(acceptor) => serve_h2(acceptor.accept(stream).await?, state, shutdown).await,
        None => serve_h2(stream, state, shutdown).await,
    }
}

/// Per-connection state of both services.
#[derive(Debug, Default)]
struct ConnState {
    apns: apns::ApnsConn,
    fcm: fcm::FcmConn,
}

type Respond = h2::server::SendResponse<Bytes>;

async fn read_body(request: http::Request<h2::RecvStream>, respond: Respond) -> Result<(http::request::Parts, Bytes, Respond), h2::Error> {
    let (parts, mut body) = request.into_parts();
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        // A body past twice the payload limit is refused without keeping it.
        if buf.len() < 2 * crate::campaign::MAX_PAYLOAD_BYTES + 8192 {
            buf.extend_from_slice(&chunk);
        }
    }
    Ok((parts, buf.freeze(), respond))
}

fn send(mut respond: Respond, reply: Reply) {
    let mut response = Response::new(());
    *response.status_mut() = http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value);
    }
    let end = reply.body.is_empty();
    if let Ok(mut stream) = respond.send_response(response, end)
        && !end
    {
        let _ = stream.send_data(reply.body, true);
    }
}

async fn serve_h2<T>(
    io: T,
    state: Arc<State>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut conn = h2::server::Builder::new()
        .max_concurrent_streams(state.config.max_concurrent_streams)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .max_concurrent_reset_streams(4096)
        .handshake::<_, Bytes>(io)
        .await?;
    let n = state.connections.fetch_add(1, Ordering::Relaxed);
    let mut faults = Faults {
        rng: SplitMix64::new(state.config.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        config: state.config.clone(),
        first_request: state.first_request.clone(),
    };
    let mut conn_state = ConnState::default();
    let mut reading = FuturesUnordered::new();
    let mut delayed = FuturesUnordered::new();
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((request, respond))) => reading.push(read_body(request, respond)),
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            Some(read) = reading.next(), if !reading.is_empty() => {
                let Ok((parts, body, respond)) = read else { continue };
                let now = Instant::now();
                let reply = route(&state, &mut conn_state, &parts, &body, now, &mut faults);
                state.records.status(reply.status);
                let delay = faults.latency();
                if delay.is_zero() {
                    send(respond, reply);
                } else {
                    delayed.push(async move {
                        tokio::time::sleep(delay).await;
                        (respond, reply)
                    });
                }
            }
            Some((respond, reply)) = delayed.next(), if !delayed.is_empty() => send(respond, reply),
            _ = shutdown.changed() => {
                conn.graceful_shutdown();
            }
        }
    }
}

fn route(state: &State, conn: &mut ConnState, parts: &http::request::Parts, body: &[u8], now: Instant, faults: &mut Faults) -> Reply {
    let path = parts.uri.path();
    state.records.capture(parts, body);
    let req = Incoming { method: &parts.method, path, headers: &parts.headers, body, now };
    if path.starts_with("/3/device") {
        return apns::handle(state, &mut conn.apns, &req, faults);
    }
    if path == "/token" {
        return fcm::token_endpoint(state, &parts.method, body);
    }
    if let Some(rest) = path.strip_prefix("/v1/projects/")
        && let Some(project) = rest.strip_suffix("/messages:send")
    {
        return fcm::send(state, &mut conn.fcm, project, &req, faults);
    }
    match path {
        "/_kickoff/stats" => Reply::json(200, &serde_json::to_value(state.records.stats()).expect("JSON")),
        "/_kickoff/mark" => {
            state.records.mark(now);
            Reply::new(204, Bytes::new())
        }
        "/_kickoff/reset" => {
            state.records.reset();
            Reply::new(204, Bytes::new())
        }
        _ => Reply::json(404, &serde_json::json!({ "reason": "BadPath" })),
    }
}
