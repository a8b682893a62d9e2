//! An in-process model of a push provider: each request takes a round trip
//! drawn from a configured distribution and fails with configured rates.
//! With the notifier's in-flight window it reproduces what bounds a real
//! send (Little's law: throughput = in-flight / mean round trip) without a
//! network, so the engine's own overhead can be told apart from waiting.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{DeliveryTally, FailReason, Handoff, Outcome, Provider, PushRequest, Session, build_request};
use crate::rng::SplitMix64;

/// The model's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Shortest round trip.
    pub rtt_min: Duration,
    /// Longest round trip; round trips are uniform in `[rtt_min, rtt_max]`.
    pub rtt_max: Duration,
    /// Probability of each failure, per request.
    pub errors: Vec<(FailReason, f64)>,
    /// Seed of the sessions' generators.
    pub seed: u64,
}

impl Default for ModelConfig {
    /// Round trips uniform in 20-60 ms, no errors.
    fn default() -> Self {
        Self { rtt_min: Duration::from_millis(20), rtt_max: Duration::from_millis(60), errors: Vec::new(), seed: 7 }
    }
}

impl ModelConfig {
    /// Mean round trip.
    pub fn mean_rtt(&self) -> Duration {
        (self.rtt_min + self.rtt_max) / 2
    }

    /// Checks the parameters.
    pub fn check(&self) -> Result<(), ModelError> {
        if self.rtt_max < self.rtt_min {
            return Err(ModelError::RoundTrip);
        }
        let total: f64 = self.errors.iter().map(|(_, p)| p).sum();
        if self.errors.iter().any(|(_, p)| !(0.0..=1.0).contains(p)) || total > 1.0 {
            return Err(ModelError::Rates);
        }
        Ok(())
    }
}

/// Model parameters that make no sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The round-trip range is reversed.
    #[error("the longest round trip is shorter than the shortest")]
    RoundTrip,
    /// An error rate is out of range, or they add up to more than 1.
    #[error("error rates must be between 0 and 1 and add up to at most 1")]
    Rates,
}

/// The latency and error model.
#[derive(Debug)]
pub struct ModelProvider {
    config: ModelConfig,
    tally: Option<Arc<DeliveryTally>>,
    sessions: AtomicU64,
}

impl ModelProvider {
    /// A model counting accepted notifications in `tally`, if given.
    pub fn new(config: ModelConfig, tally: Option<Arc<DeliveryTally>>) -> Self {
        Self { config, tally, sessions: AtomicU64::new(0) }
    }
}

/// A worker's session with the model.
#[derive(Debug)]
pub struct ModelSession {
    config: ModelConfig,
    tally: Option<Arc<DeliveryTally>>,
    rng: SplitMix64,
    path: Vec<u8>,
    body: Vec<u8>,
}

impl Provider for ModelProvider {
    type Session = ModelSession;

    fn name(&self) -> &'static str {
        "model"
    }

    fn session(&self) -> ModelSession {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        ModelSession {
            config: self.config.clone(),
            tally: self.tally.clone(),
            rng: SplitMix64::new(self.config.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            path: Vec::with_capacity(128),
            body: Vec::with_capacity(4096),
        }
    }
}

impl Session for ModelSession {
    type Pending = Pin<Box<dyn Future<Output = Outcome>>>;

    fn send(&mut self, req: &PushRequest<'_>) -> Handoff<Self::Pending> {
        build_request(req, &mut self.path, &mut self.body);
        std::hint::black_box((&self.path, &self.body));
        let span = self.config.rtt_max.saturating_sub(self.config.rtt_min);
        let rtt = self.config.rtt_min + span.mul_f64(self.rng.next_f64());
        let mut roll = self.rng.next_f64();
        let mut outcome = Outcome::Delivered;
        for (reason, p) in &self.config.errors {
            if roll < *p {
                outcome = if reason.is_transient() { Outcome::Retry { reason: *reason, after: None } } else { Outcome::Failed(*reason) };
                break;
            }
            roll -= p;
        }
        let tally = self.tally.clone();
        let device = req.device;
        Handoff::Pending(Box::pin(async move {
            tokio::time::sleep(rtt).await;
            // The device counts it when the provider acknowledges: a request
            // abandoned before its answer is not a delivery.
            if let (Outcome::Delivered, Some(t)) = (outcome, &tally) {
                t.record(device);
            }
            outcome
        }))
    }
}
