//! APNs and FCM behind one [`Provider`]: each device goes to its platform's
//! provider.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::apns::{ApnsPending, ApnsProvider, ApnsSession};
use super::fcm::{FcmPending, FcmProvider, FcmSession};
use super::h2client::{CallError, RawResponse};
use super::{FailReason, Handoff, Outcome, Provider, ProviderError, PushRequest, Session};
use crate::audience::Platform;

/// The real providers (or any compatible endpoints).
#[derive(Debug)]
pub struct PushProviders {
    /// APNs, if configured.
    pub apns: Option<ApnsProvider>,
    /// FCM, if configured.
    pub fcm: Option<FcmProvider>,
}

impl PushProviders {
    /// The name [`Provider::name`] will give the providers `config` sets up.
    pub fn name_of(config: &super::PushConfig) -> &'static str {
        let apns = config.apns.key_file.is_some() || config.apns.key_id.is_some();
        match (apns, config.fcm.service_account.is_some()) {
            (true, true) => "apns+fcm",
            (true, false) => "apns",
            (false, true) => "fcm",
            (false, false) => "none",
        }
    }

    /// True if `platform` has a provider.
    pub fn serves(&self, platform: Platform) -> bool {
        match platform {
            Platform::Ios => self.apns.is_some(),
            Platform::Android => self.fcm.is_some(),
        }
    }
}

impl Provider for PushProviders {
    type Session = PushSessions;

    fn name(&self) -> &'static str {
        match (&self.apns, &self.fcm) {
            (Some(_), Some(_)) => "apns+fcm",
            (Some(_), None) => "apns",
            (None, Some(_)) => "fcm",
            (None, None) => "none",
        }
    }

    fn session(&self) -> PushSessions {
        PushSessions { apns: self.apns.as_ref().map(ApnsProvider::session), fcm: self.fcm.as_ref().map(FcmProvider::session) }
    }

    fn alerts(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(a) = &self.apns {
            out.extend(a.health.alerts());
        }
        if let Some(f) = &self.fcm {
            out.extend(f.health.alerts());
        }
        out
    }
}

/// A worker's sessions with both providers.
#[derive(Debug)]
pub struct PushSessions {
    apns: Option<ApnsSession>,
    fcm: Option<FcmSession>,
}

/// A send in flight to either provider.
#[derive(Debug)]
pub enum PushPending {
    /// To APNs.
    Apns(ApnsPending),
    /// To FCM.
    Fcm(FcmPending),
}

impl Future for PushPending {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.get_mut() {
            Self::Apns(p) => Pin::new(p).poll(cx),
            Self::Fcm(p) => Pin::new(p).poll(cx),
        }
    }
}

impl PushSessions {
    /// Sends one notification and returns the provider's whole answer
    /// (test-send).
    pub async fn send_detailed(&mut self, req: &PushRequest<'_>) -> Result<RawResponse, CallError> {
        match (req.platform(), &mut self.apns, &mut self.fcm) {
            (Platform::Ios, Some(s), _) => s.send_detailed(req).await,
            (Platform::Android, _, Some(s)) => s.send_detailed(req).await,
            (p, _, _) => Err(CallError::not_sent(format!("no provider is configured for {p}"))),
        }
    }
}

impl Session for PushSessions {
    type Pending = PushPending;

    async fn warm(&mut self) -> Result<(), ProviderError> {
        if let Some(s) = &mut self.apns {
            s.warm().await.map_err(|e| ProviderError { provider: "APNs", message: e.to_string() })?;
        }
        if let Some(s) = &mut self.fcm {
            s.warm().await.map_err(|e| ProviderError { provider: "FCM", message: e.to_string() })?;
        }
        Ok(())
    }

    fn capacity(&self, platform: Platform) -> Option<usize> {
        match platform {
            Platform::Ios => self.apns.as_ref().map(ApnsSession::capacity),
            Platform::Android => self.fcm.as_ref().map(FcmSession::capacity),
        }
    }

    #[inline]
    fn send(&mut self, req: &PushRequest<'_>) -> Handoff<PushPending> {
        match (req.platform(), &mut self.apns, &mut self.fcm) {
            (Platform::Ios, Some(s), _) => s.send(req).map(PushPending::Apns),
            (Platform::Android, _, Some(s)) => s.send(req).map(PushPending::Fcm),
            // Checked before a fire starts; kept safe regardless.
            _ => Handoff::Done(Outcome::Failed(FailReason::ProviderStopped)),
        }
    }
}
