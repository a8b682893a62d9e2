//! Push providers: what a notifier hands each device to.
//!
//! A [`Provider`] is shared by the fleet; each notifier worker opens its own
//! [`Session`] on its own thread (HTTP/2 connections are per worker, never
//! shared across threads). [`Session::send`] answers either at once
//! ([`Handoff::Done`], no allocation, no future polled: what keeps the null
//! provider at tens of millions per second) or with a future the notifier
//! keeps in its in-flight window ([`Handoff::Pending`]).
//!
//! - [`null`]: accepts everything immediately; measures the engine itself.
//! - [`model`]: a latency and error model of a real provider, in process.
//! - [`tally`]: the receiving end's per-device count, to measure duplicates
//!   and missing devices instead of assuming them.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use crate::audience::Platform;
use crate::campaign::{ApnsOptions, RenderedPayload};

pub mod apns;
pub mod auth;
pub mod config;
mod engine_h2;
mod engine_nghttp2;
pub mod fcm;
pub mod h2client;
pub mod model;
pub mod null;
pub mod providers;
pub mod tally;

pub use config::{PushConfig, PushSetupError};
pub use model::{ModelConfig, ModelProvider};
pub use null::NullProvider;
pub use providers::PushProviders;
pub use tally::DeliveryTally;

/// A device by position: shard, platform section, index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceRef {
    /// Shard index.
    pub shard: u32,
    /// Platform section of the shard.
    pub platform: Platform,
    /// Index within the section.
    pub index: u32,
}

/// Why a notification was not delivered. Names are stable: they appear in
/// metrics, reports and the flight recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// The token is no longer valid (APNs 410, FCM `UNREGISTERED`): prune it.
    Unregistered,
    /// The token is malformed for the provider (APNs `BadDeviceToken`, FCM
    /// token `INVALID_ARGUMENT`): prune it.
    BadDeviceToken,
    /// The provider refused the payload size.
    PayloadTooLarge,
    /// The provider refused this notification as malformed (a 400 about
    /// the request itself).
    BadRequest,
    /// Authentication or authorization failed (403, 401).
    Auth,
    /// The provider asked us to slow down (429).
    TooManyRequests,
    /// The provider failed (500).
    ServerError,
    /// The provider is unavailable (503).
    Unavailable,
    /// The connection failed or was reset.
    Transport,
    /// No answer in time.
    Timeout,
    /// The provider was stopped earlier in this fire (after an
    /// authentication failure) and this device was not sent.
    ProviderStopped,
    /// An answer the sender does not know (a status neither provider
    /// documents for a notification): not retried, and not a final answer
    /// either; the device is listed as undelivered.
    Unexpected,
}

impl FailReason {
    /// Number of reasons.
    pub const COUNT: usize = 12;
    /// Every reason, in index order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Unregistered,
        Self::BadDeviceToken,
        Self::PayloadTooLarge,
        Self::BadRequest,
        Self::Auth,
        Self::TooManyRequests,
        Self::ServerError,
        Self::Unavailable,
        Self::Transport,
        Self::Timeout,
        Self::ProviderStopped,
        Self::Unexpected,
    ];

    /// Position in [`ALL`](Self::ALL), for counting in arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unregistered => "unregistered",
            Self::BadDeviceToken => "bad_device_token",
            Self::PayloadTooLarge => "payload_too_large",
            Self::BadRequest => "bad_request",
            Self::Auth => "auth",
            Self::TooManyRequests => "too_many_requests",
            Self::ServerError => "server_error",
            Self::Unavailable => "unavailable",
            Self::Transport => "transport",
            Self::Timeout => "timeout",
            Self::ProviderStopped => "provider_stopped",
            Self::Unexpected => "unexpected",
        }
    }

    /// True for failures that may pass on a later attempt (429, 5xx, a lost
    /// connection, a timeout).
    pub fn is_transient(self) -> bool {
        matches!(self, Self::TooManyRequests | Self::ServerError | Self::Unavailable | Self::Transport | Self::Timeout)
    }

    /// True for reasons that mean the token is dead: prune it, never retry.
    pub fn prunes(self) -> bool {
        matches!(self, Self::Unregistered | Self::BadDeviceToken)
    }

    /// True for a final answer about the device or the notification (a dead
    /// token, a refused notification): sending it again would not change it.
    /// Everything else (credentials, transient trouble) leaves the device
    /// without a final answer, for a resume or a later send.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Unregistered | Self::BadDeviceToken | Self::PayloadTooLarge | Self::BadRequest)
    }

    /// Parses a name from [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted the notification.
    Delivered,
    /// The provider refused it for good, or it could not be sent.
    Failed(FailReason),
    /// A transient failure (429, 500, 503, a lost connection): worth another
    /// try, no sooner than `after` when the provider said so. The engine
    /// decides whether the fire's retry budget allows it.
    Retry {
        /// What happened.
        reason: FailReason,
        /// The provider's `retry-after`.
        after: Option<Duration>,
    },
    /// The request never reached the provider (no live connection, the
    /// stream refused, or above a GOAWAY's last stream): the engine sends it
    /// again once a connection is back, at no cost to the retry budget. The
    /// outage timeout bounds the wait.
    Unsent,
    /// The connection died with the request in flight: it may or may not
    /// have arrived. The engine sends it again (the campaign's collapse id
    /// makes a second copy replace the first), at no cost to the retry
    /// budget a few times, then as a budgeted retry.
    Lost,
}

/// The APNs headers of a fire, validated once when it starts and cloned
/// onto every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsHeaders {
    /// `apns-topic`.
    pub topic: HeaderValue,
    /// `apns-push-type`.
    pub push_type: HeaderValue,
    /// `apns-priority`.
    pub priority: HeaderValue,
    /// `apns-collapse-id`.
    pub collapse_id: Option<HeaderValue>,
    /// `apns-expiration`, UNIX seconds.
    pub expiration: Option<HeaderValue>,
}

impl ApnsHeaders {
    /// Headers for a fire at `fired_at`: expiration becomes absolute.
    pub fn for_fire(opts: &ApnsOptions, fired_at: SystemTime) -> Self {
        let epoch = fired_at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let value = |s: &str| HeaderValue::from_str(s).expect("campaign values are checked to be header-safe");
        Self {
            topic: value(&opts.topic),
            push_type: HeaderValue::from_static(opts.push_type.as_str()),
            priority: HeaderValue::from_static(if opts.priority == 5 { "5" } else { "10" }),
            collapse_id: opts.collapse_id.as_deref().map(value),
            expiration: opts.expiration.map(|e| HeaderValue::from(if e.is_zero() { 0 } else { (epoch + e).as_secs() })),
        }
    }
}

/// One notification to one device.
#[derive(Debug, Clone, Copy)]
pub struct PushRequest<'a> {
    /// Which device (for the receiver's tally and the prune report).
    pub device: DeviceRef,
    /// The device token as text (64 hex characters for APNs).
    pub token: &'a str,
    /// The rendered payload for the device's locale and platform.
    pub payload: &'a RenderedPayload,
    /// APNs headers of this fire.
    pub apns: &'a ApnsHeaders,
}

impl PushRequest<'_> {
    /// The platform.
    pub fn platform(&self) -> Platform {
        self.device.platform
    }
}

/// Writes what an HTTP/2 client puts on the wire for a request, minus the
/// framing: the `:path` and, for FCM, the body with the token inside (the
/// APNs body is the shared rendered payload). Providers that do not talk to
/// a network call this so that what they cost includes building requests.
#[inline]
pub fn build_request(req: &PushRequest<'_>, path: &mut Vec<u8>, body: &mut Vec<u8>) {
    path.clear();
    match req.platform() {
        Platform::Ios => {
            path.extend_from_slice(b"/3/device/");
            path.extend_from_slice(req.token.as_bytes());
        }
        Platform::Android => req.payload.write_body(req.token, body),
    }
}

/// Whether a provider may still be used in this fire, and what stopped it.
/// An authentication failure stops the provider: it never retries in a loop
/// against credentials that do not work.
#[derive(Debug)]
pub struct Health {
    provider: &'static str,
    stopped: std::sync::atomic::AtomicBool,
    alerts: std::sync::Mutex<Vec<String>>,
}

impl Health {
    /// A healthy provider called `provider`.
    pub fn new(provider: &'static str) -> Self {
        Self { provider, stopped: std::sync::atomic::AtomicBool::new(false), alerts: std::sync::Mutex::new(Vec::new()) }
    }

    /// True once stopped.
    #[inline]
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the provider and raises an alert (once).
    pub fn stop(&self, why: String) {
        if !self.stopped.swap(true, std::sync::atomic::Ordering::AcqRel) {
            tracing::error!(provider = self.provider, "{why}");
            self.alerts.lock().expect("alerts lock").push(why);
        }
    }

    /// The alerts raised so far.
    pub fn alerts(&self) -> Vec<String> {
        self.alerts.lock().expect("alerts lock").clone()
    }
}

/// How a send was taken.
#[derive(Debug)]
pub enum Handoff<F> {
    /// Finished synchronously.
    Done(Outcome),
    /// In flight; the future yields the outcome.
    Pending(F),
}

impl<F> Handoff<F> {
    /// Maps the pending future.
    pub fn map<G>(self, f: impl FnOnce(F) -> G) -> Handoff<G> {
        match self {
            Self::Done(o) => Handoff::Done(o),
            Self::Pending(p) => Handoff::Pending(f(p)),
        }
    }
}

/// A failure to open a provider session.
#[derive(Debug, thiserror::Error)]
#[error("{provider}: {message}")]
pub struct ProviderError {
    /// The provider's name.
    pub provider: &'static str,
    /// What went wrong (never a secret).
    pub message: String,
}

/// A push provider shared by all notifier workers.
pub trait Provider: Send + Sync + 'static {
    /// A worker's handle, living on that worker's thread.
    type Session: Session;

    /// Short name for reports ("null", "model", "apns+fcm").
    fn name(&self) -> &'static str;

    /// Opens a session for one worker; called on the worker's thread.
    fn session(&self) -> Self::Session;

    /// Problems an operator must act on, such as a provider stopped after
    /// an authentication failure. Read at the end of each fire.
    fn alerts(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One worker's connection to a provider.
pub trait Session {
    /// A send in flight.
    type Pending: Future<Output = Outcome> + Unpin;

    /// Prepares the session before the first send (connections, tokens).
    fn warm(&mut self) -> impl Future<Output = Result<(), ProviderError>> {
        std::future::ready(Ok(()))
    }

    /// Hands one notification over.
    fn send(&mut self, req: &PushRequest<'_>) -> Handoff<Self::Pending>;

    /// Sends the session can keep in flight to `platform`'s provider, once
    /// warm (for HTTP/2: its connections times the server's stream limit).
    /// Each provider has its own window: the engine never keeps more in
    /// flight to it; `None` leaves the engine's own limit alone.
    fn capacity(&self, _platform: Platform) -> Option<usize> {
        None
    }
}
