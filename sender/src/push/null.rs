//! The null provider: builds each request and accepts it at once. What a
//! fan-out to it costs is the engine's own cost plus request building.

use std::sync::Arc;

use super::{DeliveryTally, Handoff, Outcome, Provider, PushRequest, Session, build_request};

/// Accepts every notification immediately.
#[derive(Debug, Clone, Default)]
pub struct NullProvider {
    tally: Option<Arc<DeliveryTally>>,
}

impl NullProvider {
    /// A null provider counting deliveries in `tally`, if given.
    pub fn new(tally: Option<Arc<DeliveryTally>>) -> Self {
        Self { tally }
    }
}

/// A worker's null session.
#[derive(Debug)]
pub struct NullSession {
    tally: Option<Arc<DeliveryTally>>,
    path: Vec<u8>,
    body: Vec<u8>,
}

impl Provider for NullProvider {
    type Session = NullSession;

    fn name(&self) -> &'static str {
        "null"
    }

    fn session(&self) -> NullSession {
        NullSession { tally: self.tally.clone(), path: Vec::with_capacity(128), body: Vec::with_capacity(4096) }
    }
}

impl Session for NullSession {
    type Pending = std::future::Ready<Outcome>;

    #[inline]
    fn send(&mut self, req: &PushRequest<'_>) -> Handoff<Self::Pending> {
        build_request(req, &mut self.path, &mut self.body);
        std::hint::black_box((&self.path, &self.body));
        if let Some(t) = &self.tally {
            t.record(req.device);
        }
        Handoff::Done(Outcome::Delivered)
    }
}
