//! The APNs provider API over HTTP/2: `POST /3/device/<token>` with token
//! authentication (ES256 JWT shared by every connection of every worker).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue, Method};

use super::auth::{ApnsKey, ApnsRefresh, CachedToken, TokenCell, spawn_apns_refresher};
use super::h2client::{Call, CallError, ConnectError, Endpoint, Outgoing, Pool, RawResponse, SendEngine};
use super::{FailReason, Handoff, Health, Outcome, PushRequest};

static AUTH: HeaderName = AUTHORIZATION;
static APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
static APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
static APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
static APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
static APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");
static APNS_ID: HeaderName = HeaderName::from_static("apns-id");

/// Apple's production endpoint.
pub const PRODUCTION: &str = "https://api.push.apple.com";
/// Apple's development endpoint.
pub const SANDBOX: &str = "https://api.sandbox.push.apple.com";

/// Resolves `production`, `sandbox` or a URL.
pub fn endpoint_url(name: &str) -> &str {
    match name {
        "production" => PRODUCTION,
        "sandbox" | "development" => SANDBOX,
        url => url,
    }
}

/// Everything the APNs provider needs.
#[derive(Debug, Clone)]
pub struct ApnsSettings {
    /// The token key.
    pub key: Arc<ApnsKey>,
    /// `https://api.push.apple.com`, the sandbox, or a compatible URL.
    pub url: String,
    /// Overrides the campaign's `apns-topic`.
    pub topic: Option<String>,
    /// Connections per worker.
    pub connections: usize,
    /// Provider-token age at which it is replaced.
    pub refresh: ApnsRefresh,
    /// The HTTP/2 engine.
    pub engine: SendEngine,
}

/// The APNs provider, shared by all workers.
#[derive(Debug)]
pub struct ApnsProvider {
    endpoint: Arc<Endpoint>,
    token: Arc<TokenCell>,
    topic: Option<HeaderValue>,
    connections: usize,
    pub(crate) health: Arc<Health>,
}

impl ApnsProvider {
    /// Sets the provider up and starts its token refresher on the current
    /// tokio runtime. Connections open when each worker warms its session.
    pub fn new(settings: &ApnsSettings, tls: &Arc<rustls::ClientConfig>) -> Result<Self, ConnectError> {
        let endpoint = Arc::new(Endpoint::parse(&settings.url, tls)?.with_engine(settings.engine));
        let topic = match &settings.topic {
            Some(t) => Some(
                HeaderValue::from_str(t)
                    .map_err(|_| ConnectError::Url { url: settings.url.clone(), message: format!("bad topic {t:?}") })?,
            ),
            None => None,
        };
        Ok(Self {
            endpoint,
            token: spawn_apns_refresher(settings.key.clone(), settings.refresh),
            topic,
            connections: settings.connections.max(1),
            health: Arc::new(Health::new("APNs")),
        })
    }

    /// A worker's session (connects in [`ApnsSession::warm`]).
    pub fn session(&self) -> ApnsSession {
        ApnsSession {
            endpoint: self.endpoint.clone(),
            pool: None,
            connections: self.connections,
            token: CachedToken::new(self.token.clone()),
            topic: self.topic.clone(),
            health: self.health.clone(),
            ids: IdGen::new(),
            path: String::with_capacity(128),
        }
    }
}

/// Makes `apns-id` values: a random 64-bit session prefix plus a counter,
/// formatted as a canonical lowercase UUID. Unique per request without a
/// random number per request.
#[derive(Debug)]
struct IdGen {
    prefix: u64,
    counter: u64,
}

impl IdGen {
    fn new() -> Self {
        Self { prefix: u64::from_le_bytes(super::auth::rand_bytes::<8>()), counter: 0 }
    }

    fn next(&mut self) -> HeaderValue {
        self.counter += 1;
        let mut hex = [0u8; 32];
        let digits = b"0123456789abcdef";
        for (i, byte) in self.prefix.to_be_bytes().iter().chain(self.counter.to_be_bytes().iter()).enumerate() {
            hex[i * 2] = digits[usize::from(byte >> 4)];
            hex[i * 2 + 1] = digits[usize::from(byte & 15)];
        }
        // Version 4 and RFC 4122 variant nibbles, so it reads as a UUID.
        hex[12] = b'4';
        hex[16] = digits[8 + usize::from(hex[16] & 3)];
        let mut out = [0u8; 36];
        let mut o = 0;
        for (i, c) in hex.iter().enumerate() {
            if matches!(i, 8 | 12 | 16 | 20) {
                out[o] = b'-';
                o += 1;
            }
            out[o] = *c;
            o += 1;
        }
        let mut value = HeaderValue::from_bytes(&out).expect("hex and dashes");
        value.set_sensitive(true);
        value
    }
}

/// A worker's APNs session.
#[derive(Debug)]
pub struct ApnsSession {
    endpoint: Arc<Endpoint>,
    pool: Option<Pool>,
    connections: usize,
    token: CachedToken,
    topic: Option<HeaderValue>,
    health: Arc<Health>,
    ids: IdGen,
    /// The request path, rebuilt per request.
    path: String,
}

impl ApnsSession {
    /// Opens the connections.
    pub async fn warm(&mut self) -> Result<(), ConnectError> {
        self.pool = Some(Pool::open(self.endpoint.clone(), self.connections).await?);
        Ok(())
    }

    /// Builds the request for `req` and hands it to a connection: the
    /// header values are the session's and the fire's own, borrowed, and
    /// only the path and the `apns-id` are made per request.
    fn submit(&mut self, req: &PushRequest<'_>, keep_body: bool) -> Option<Call> {
        let id = self.ids.next();
        let Self { endpoint, pool, token, topic, path, .. } = self;
        path.clear();
        path.push_str(&endpoint.base_path);
        path.push_str("/3/device/");
        path.push_str(req.token);
        let apns = req.apns;
        let topic = topic.as_ref().unwrap_or(&apns.topic);
        let mut fields = [
            (&AUTH, token.current()),
            (&APNS_TOPIC, topic),
            (&APNS_PUSH_TYPE, &apns.push_type),
            (&APNS_PRIORITY, &apns.priority),
            (&APNS_ID, &id),
            (&APNS_ID, &id),
            (&APNS_ID, &id),
        ];
        let mut n = 4;
        for (name, value) in [(&APNS_EXPIRATION, apns.expiration.as_ref()), (&APNS_COLLAPSE_ID, apns.collapse_id.as_ref())] {
            if let Some(value) = value {
                fields[n] = (name, value);
                n += 1;
            }
        }
        // Unique per request, so never indexed (`IdGen` marks it
        // sensitive): it cannot push the repeated fields out of the
        // connection's HPACK table. Last, like the others' order before.
        fields[n] = (&APNS_ID, &id);
        let outgoing = Outgoing { method: &Method::POST, path, headers: &fields[..=n] };
        pool.as_mut()?.send(&outgoing, req.payload.head.clone(), keep_body)
    }

    /// Streams the connections can carry at once.
    pub fn capacity(&self) -> usize {
        self.pool.as_ref().map_or(0, Pool::capacity)
    }

    /// Hands one notification over.
    pub fn send(&mut self, req: &PushRequest<'_>) -> Handoff<ApnsPending> {
        if self.health.is_stopped() {
            return Handoff::Done(Outcome::Failed(FailReason::ProviderStopped));
        }
        match self.submit(req, false) {
            Some(call) => Handoff::Pending(ApnsPending { call, health: self.health.clone() }),
            None => Handoff::Done(Outcome::Unsent),
        }
    }

    /// Sends one notification and returns APNs's whole answer (test-send).
    pub async fn send_detailed(&mut self, req: &PushRequest<'_>) -> Result<RawResponse, CallError> {
        match self.submit(req, true) {
            Some(call) => call.await,
            None => Err(CallError::not_sent("no connection to APNs")),
        }
    }
}

/// An APNs send in flight.
#[derive(Debug)]
pub struct ApnsPending {
    call: Call,
    health: Arc<Health>,
}

impl Future for ApnsPending {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let answer = std::task::ready!(Pin::new(&mut self.call).poll(cx));
        let outcome = match &answer {
            Ok(raw) => classify(raw),
            Err(e) => e.outcome(),
        };
        if outcome == Outcome::Failed(FailReason::Auth)
            && let Ok(raw) = &answer
        {
            self.health.stop(format!(
                "APNs answered {} {}: APNs is stopped for this fire; check the key id, team id and .p8 key",
                raw.status,
                reason(raw)
            ));
        }
        Poll::Ready(outcome)
    }
}

/// The `reason` of an APNs error body.
pub fn reason(raw: &RawResponse) -> String {
    serde_json::from_slice::<serde_json::Value>(&raw.body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

/// What an APNs answer means for the sender.
pub fn classify(raw: &RawResponse) -> Outcome {
    match raw.status {
        200 => Outcome::Delivered,
        410 => Outcome::Failed(FailReason::Unregistered),
        400 if reason(raw) == "BadDeviceToken" => Outcome::Failed(FailReason::BadDeviceToken),
        403 => Outcome::Failed(FailReason::Auth),
        _ => raw.common_outcome(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(status: u16, body: &str) -> RawResponse {
        RawResponse { status, retry_after: None, apns_id: None, body: body.as_bytes().to_vec() }
    }

    #[test]
    fn answers_map_to_outcomes() {
        assert_eq!(classify(&raw(200, "")), Outcome::Delivered);
        assert_eq!(classify(&raw(410, r#"{"reason":"Unregistered","timestamp":1}"#)), Outcome::Failed(FailReason::Unregistered));
        assert_eq!(classify(&raw(400, r#"{"reason":"BadDeviceToken"}"#)), Outcome::Failed(FailReason::BadDeviceToken));
        assert_eq!(classify(&raw(400, r#"{"reason":"BadTopic"}"#)), Outcome::Failed(FailReason::BadRequest));
        assert_eq!(classify(&raw(403, r#"{"reason":"InvalidProviderToken"}"#)), Outcome::Failed(FailReason::Auth));
        let mut busy = raw(429, r#"{"reason":"TooManyRequests"}"#);
        busy.retry_after = Some(std::time::Duration::from_secs(3));
        assert_eq!(classify(&busy), Outcome::Retry { reason: FailReason::TooManyRequests, after: Some(std::time::Duration::from_secs(3)) });
        assert_eq!(
            classify(&raw(503, r#"{"reason":"ServiceUnavailable"}"#)),
            Outcome::Retry { reason: FailReason::Unavailable, after: None }
        );
    }

    #[test]
    fn apns_ids_are_unique_lowercase_uuids() {
        let mut ids = IdGen::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(s.as_bytes()[14], b'4');
        assert!(s.chars().all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_lowercase()), "{s}");
    }
}
