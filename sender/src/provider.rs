//! Choosing and starting a provider: the one path the drill, `fire`,
//! `test-send` and the desktop app take.
//!
//! [`AnyProvider`] puts the four kinds behind one type (one `match` per
//! send, measured as noise), so the engine is started the same way whatever
//! the choice, and [`Setup::received`] counts deliveries at the receiving
//! end wherever there is one.

use std::future::{Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::audience::{Audience, Platform};
use crate::gateway::{Gateway, GatewayConfig, GatewayError};
use crate::push::h2client::SendEngine;
use crate::push::model::{ModelConfig, ModelProvider, ModelSession};
use crate::push::null::{NullProvider, NullSession};
use crate::push::providers::{PushPending, PushProviders, PushSessions};
use crate::push::{DeliveryTally, Handoff, Outcome, Provider, ProviderError, PushConfig, PushRequest, PushSetupError, Session};

/// Which provider to send to.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderChoice {
    /// The loopback gateway, started in-process: real HTTP/2, real APNs and
    /// FCM protocols, deliveries counted per token at the gateway.
    Gateway {
        /// What it injects.
        config: GatewayConfig,
        /// TLS (default) or h2c.
        tls: bool,
        /// Connections per worker and provider.
        connections: usize,
        /// The HTTP/2 engine.
        engine: SendEngine,
    },
    /// APNs and FCM as configured (real, or any compatible endpoint).
    Http(PushConfig),
    /// Accept at once: measures the engine.
    Null,
    /// Latency and error model.
    Model(ModelConfig),
}

impl ProviderChoice {
    /// The gateway with its defaults (TLS).
    pub fn gateway() -> Self {
        Self::Gateway {
            config: GatewayConfig::default(),
            tls: true,
            connections: crate::push::config::DEFAULT_CONNECTIONS,
            engine: SendEngine::default(),
        }
    }

    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Gateway { .. } => "gateway",
            Self::Http(_) => "http",
            Self::Null => "null",
            Self::Model(_) => "model",
        }
    }
}

/// What the arm and the plan state about a provider choice: where APNs
/// sends go and which key files a send reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProviderFacts {
    /// `gateway`, `http`, `null` or `model`.
    pub name: &'static str,
    /// `production`, `sandbox`, a URL, or what stands in for APNs.
    pub apns_environment: String,
    /// The key files (what each is, where).
    pub key_files: Vec<(&'static str, std::path::PathBuf)>,
}

impl ProviderChoice {
    /// The facts of this choice.
    pub fn facts(&self) -> ProviderFacts {
        let (apns_environment, key_files) = match self {
            Self::Gateway { .. } => ("the loopback gateway (embedded; keys made in memory)".to_owned(), Vec::new()),
            Self::Http(c) => (c.apns_environment(), c.key_files()),
            Self::Null => ("none: the null provider sends nothing".to_owned(), Vec::new()),
            Self::Model(_) => ("none: the latency model sends nothing".to_owned(), Vec::new()),
        };
        ProviderFacts { name: self.name(), apns_environment, key_files }
    }
}

/// Any provider.
#[derive(Debug)]
pub enum AnyProvider {
    /// Null.
    Null(NullProvider),
    /// The latency model.
    Model(ModelProvider),
    /// APNs and FCM (real or the gateway).
    Push(PushProviders),
}

/// A session of any provider.
#[derive(Debug)]
pub enum AnySession {
    /// Null.
    Null(NullSession),
    /// The latency model.
    Model(ModelSession),
    /// APNs and FCM (boxed: far larger than the others).
    Push(Box<PushSessions>),
}

/// A send in flight to any provider.
pub enum AnyPending {
    /// Never pending in practice.
    Null(Ready<Outcome>),
    /// The model's timer.
    Model(<ModelSession as Session>::Pending),
    /// An HTTP/2 call.
    Push(PushPending),
}

impl std::fmt::Debug for AnyPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnyPending")
    }
}

impl Future for AnyPending {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.get_mut() {
            Self::Null(p) => Pin::new(p).poll(cx),
            Self::Model(p) => p.as_mut().poll(cx),
            Self::Push(p) => Pin::new(p).poll(cx),
        }
    }
}

impl Provider for AnyProvider {
    type Session = AnySession;

    fn name(&self) -> &'static str {
        match self {
            Self::Null(p) => p.name(),
            Self::Model(p) => p.name(),
            Self::Push(p) => p.name(),
        }
    }

    fn session(&self) -> AnySession {
        match self {
            Self::Null(p) => AnySession::Null(p.session()),
            Self::Model(p) => AnySession::Model(p.session()),
            Self::Push(p) => AnySession::Push(Box::new(p.session())),
        }
    }

    fn alerts(&self) -> Vec<String> {
        match self {
            Self::Push(p) => p.alerts(),
            _ => Vec::new(),
        }
    }
}

impl Session for AnySession {
    type Pending = AnyPending;

    async fn warm(&mut self) -> Result<(), ProviderError> {
        match self {
            Self::Push(s) => s.warm().await,
            _ => Ok(()),
        }
    }

    fn capacity(&self, platform: crate::audience::Platform) -> Option<usize> {
        match self {
            Self::Push(s) => s.capacity(platform),
            _ => None,
        }
    }

    #[inline]
    fn send(&mut self, req: &PushRequest<'_>) -> Handoff<AnyPending> {
        match self {
            Self::Null(s) => s.send(req).map(AnyPending::Null),
            Self::Model(s) => s.send(req).map(AnyPending::Model),
            Self::Push(s) => s.send(req).map(AnyPending::Push),
        }
    }
}

/// A started provider and, for the embedded ones, its receiving end.
#[derive(Debug)]
pub struct Setup {
    /// The provider, to hand to the engine.
    pub provider: Arc<AnyProvider>,
    /// The in-process gateway, when chosen (stops when dropped).
    pub gateway: Option<Gateway>,
    /// The per-device tally of the null and model providers.
    pub tally: Option<Arc<DeliveryTally>>,
}

/// Deliveries as counted at the receiving end, or as acknowledged to the
/// sender when the receiver cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Devices (or tokens) that received the notification.
    pub delivered: u64,
    /// Deliveries beyond the first.
    pub duplicates: u64,
    /// Where it was counted: `receiver` or `sender`.
    pub measured_at: &'static str,
}

/// The providers could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Credentials or endpoints.
    #[error(transparent)]
    Push(#[from] PushSetupError),
    /// The in-process gateway.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The audience has a platform no provider serves.
    #[error("the audience has {devices} {platform} devices but no {what} are configured")]
    Unserved {
        /// The platform.
        platform: Platform,
        /// How many devices.
        devices: usize,
        /// What to configure.
        what: &'static str,
    },
}

impl Setup {
    /// Starts the chosen provider on the current tokio runtime, for
    /// `audience`, whose iOS pushes carry `topic`.
    pub async fn start(choice: &ProviderChoice, audience: &Audience, topic: &str) -> Result<Self, SetupError> {
        Self::start_for(choice, Some(audience), topic).await
    }

    /// Starts the chosen provider for a test-send: no audience to count
    /// deliveries of or to check the configured platforms against.
    pub async fn start_for_test_send(choice: &ProviderChoice, topic: &str) -> Result<Self, SetupError> {
        Self::start_for(choice, None, topic).await
    }

    async fn start_for(choice: &ProviderChoice, audience: Option<&Audience>, topic: &str) -> Result<Self, SetupError> {
        let tally = || audience.map(|a| Arc::new(DeliveryTally::for_audience(a)));
        Ok(match choice {
            ProviderChoice::Null => {
                let tally = tally();
                Self { provider: Arc::new(AnyProvider::Null(NullProvider::new(tally.clone()))), gateway: None, tally }
            }
            ProviderChoice::Model(cfg) => {
                let tally = tally();
                Self { provider: Arc::new(AnyProvider::Model(ModelProvider::new(cfg.clone(), tally.clone()))), gateway: None, tally }
            }
            ProviderChoice::Gateway { config, tls, connections, engine } => {
                let gateway = Gateway::start_local(config.clone(), *tls, topic)?;
                let providers = gateway.providers(*connections, *engine).await.map_err(PushSetupError::Fcm)?;
                Self { provider: Arc::new(AnyProvider::Push(providers)), gateway: Some(gateway), tally: None }
            }
            ProviderChoice::Http(config) => {
                let providers = config.providers().await?;
                for platform in Platform::ALL.into_iter().filter(|_| audience.is_some()) {
                    let devices: usize = audience.map_or(0, |a| a.shards().iter().map(|s| s.len(platform)).sum());
                    if devices > 0 && !providers.serves(platform) {
                        let what = match platform {
                            Platform::Ios => "APNs credentials ([apns] key_file, key_id and team_id)",
                            Platform::Android => "FCM credentials ([fcm] service_account)",
                        };
                        return Err(SetupError::Unserved { platform, devices, what });
                    }
                }
                Self { provider: Arc::new(AnyProvider::Push(providers)), gateway: None, tally: None }
            }
        })
    }

    /// Marks the fire instant at the receiving end (arrival times count
    /// from it).
    pub fn mark_fire(&self) {
        if let Some(g) = &self.gateway {
            g.records().mark(std::time::Instant::now());
        }
    }

    /// What arrived, counted per device (null, model) or per token (the
    /// gateway); otherwise what the providers acknowledged.
    pub fn received(&self, audience: &Audience, sender_delivered: u64) -> Received {
        if let Some(t) = &self.tally {
            let s = t.summary();
            return Received { delivered: s.delivered, duplicates: s.duplicates, measured_at: "receiver" };
        }
        if let Some(g) = &self.gateway {
            let check = g.records().check_audience(audience);
            return Received { delivered: check.delivered, duplicates: check.duplicates, measured_at: "receiver" };
        }
        Received { delivered: sender_delivered, duplicates: 0, measured_at: "sender" }
    }
}
