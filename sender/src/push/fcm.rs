//! The FCM HTTP v1 API over HTTP/2: one `POST
//! /v1/projects/{project}/messages:send` per device, authorized by an OAuth2
//! access token obtained with the service account's JWT bearer grant and
//! refreshed before it expires.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method};

use super::auth::{AuthError, CachedToken, FCM_SCOPE, JWT_BEARER_GRANT, ServiceAccount, TokenCell, unix_now};
use super::h2client::{Call, CallError, ConnectError, Endpoint, Outgoing, Pool, RawResponse, SendEngine};

static AUTH: HeaderName = AUTHORIZATION;
static CONTENT_TYPE_NAME: HeaderName = CONTENT_TYPE;
static JSON: HeaderValue = HeaderValue::from_static("application/json");
use super::{FailReason, Handoff, Health, Outcome, PushRequest};

/// Google's FCM endpoint.
pub const FCM_URL: &str = "https://fcm.googleapis.com";

/// Everything the FCM provider needs.
#[derive(Debug, Clone)]
pub struct FcmSettings {
    /// The service account.
    pub account: Arc<ServiceAccount>,
    /// The Firebase project id.
    pub project: String,
    /// `https://fcm.googleapis.com` or a compatible URL.
    pub url: String,
    /// Connections per worker.
    pub connections: usize,
    /// The HTTP/2 engine.
    pub engine: SendEngine,
}

/// Could not start the FCM provider.
#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    /// A connection or URL problem.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The first access token could not be obtained.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Exchanges service-account assertions for access tokens.
#[derive(Debug, Clone)]
pub struct OAuth {
    client: reqwest::Client,
    account: Arc<ServiceAccount>,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

impl OAuth {
    /// A token client trusting what `tls` trusts.
    pub fn new(account: Arc<ServiceAccount>, tls: &Arc<rustls::ClientConfig>) -> Result<Self, AuthError> {
        let mut builder = reqwest::Client::builder().use_preconfigured_tls((**tls).clone()).timeout(Duration::from_secs(30));
        if account.token_uri.starts_with("http://") {
            // A cleartext (loopback) token endpoint speaks HTTP/2 only.
            builder = builder.http2_prior_knowledge();
        }
        let client = builder.build().map_err(|e| AuthError::Token { url: account.token_uri.clone(), message: e.to_string() })?;
        Ok(Self { client, account })
    }

    /// Requests an access token; returns it with its lifetime.
    pub async fn fetch(&self) -> Result<(String, Duration), AuthError> {
        let url = &self.account.token_uri;
        let fail = |message: String| AuthError::Token { url: url.clone(), message };
        let assertion = self.account.assertion(FCM_SCOPE, unix_now());
        let response = self
            .client
            .post(url)
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", assertion.as_str())])
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| fail(e.without_url().to_string()))?;
        if !status.is_success() {
            // `error` and `error_description` only: never echo anything else.
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let code = v.get("error").and_then(|e| e.as_str()).unwrap_or("");
            let description = v.get("error_description").and_then(|e| e.as_str()).unwrap_or("");
            return Err(fail(format!("{status} {code} {description}").trim().to_owned()));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| fail("the answer has no access_token".into()))?;
        Ok((answer.access_token, Duration::from_secs(answer.expires_in.max(1))))
    }
}

/// One early refresh of the access token when FCM answers 401 to the token
/// the sender believed valid (revoked, or an endpoint restarted that forgot
/// it): the requests go again with the new token; a 401 to the refreshed
/// token too stops FCM for the fire.
#[derive(Debug, Default)]
pub struct Reauth {
    /// Wakes the refresher now.
    now: tokio::sync::Notify,
    /// The token version an early refresh was asked for, plus one (0: none).
    asked_for: AtomicU64,
    /// The token version an early refresh produced (0: none).
    produced: AtomicU64,
}

impl Reauth {
    /// What a 401 to a request sent with token `version` (of `cell`) means.
    fn unauthenticated(&self, version: u64, cell: &TokenCell) -> Outcome {
        let current = cell.version();
        if version < current {
            // Refreshed since: send again with the new token.
            return Outcome::Unsent;
        }
        if self.produced.load(Ordering::Acquire) == current {
            // The refreshed token is refused too.
            return Outcome::Failed(FailReason::Auth);
        }
        if self.asked_for.swap(current + 1, Ordering::AcqRel) != current + 1 {
            tracing::warn!("FCM answered 401 to a token it had accepted: refreshing the access token once");
            self.now.notify_one();
        }
        Outcome::Unsent
    }
}

/// The FCM provider, shared by all workers.
#[derive(Debug)]
pub struct FcmProvider {
    endpoint: Arc<Endpoint>,
    path: PathAndQuery,
    token: Arc<TokenCell>,
    reauth: Arc<Reauth>,
    connections: usize,
    pub(crate) health: Arc<Health>,
}

impl FcmProvider {
    /// Obtains the first access token (so bad credentials fail before any
    /// fire) and starts refreshing it on the current tokio runtime at 80% of
    /// its lifetime.
    pub async fn start(settings: &FcmSettings, tls: &Arc<rustls::ClientConfig>) -> Result<Self, FcmError> {
        let endpoint = Arc::new(Endpoint::parse(&settings.url, tls)?.with_engine(settings.engine));
        let path = format!("{}/v1/projects/{}/messages:send", endpoint.base_path, settings.project);
        let path = PathAndQuery::try_from(path)
            .map_err(|_| ConnectError::Url { url: settings.url.clone(), message: format!("bad project id {:?}", settings.project) })?;
        let oauth = OAuth::new(settings.account.clone(), tls)?;
        let (token, lifetime) = oauth.fetch().await?;
        let cell = Arc::new(TokenCell::new("Bearer", &token));
        let reauth = Arc::new(Reauth::default());
        spawn_refresher(oauth, Arc::downgrade(&cell), reauth.clone(), lifetime);
        Ok(Self { endpoint, path, token: cell, reauth, connections: settings.connections.max(1), health: Arc::new(Health::new("FCM")) })
    }

    /// A worker's session (connects in [`FcmSession::warm`]).
    pub fn session(&self) -> FcmSession {
        FcmSession {
            endpoint: self.endpoint.clone(),
            path: self.path.clone(),
            pool: None,
            connections: self.connections,
            token: CachedToken::new(self.token.clone()),
            cell: self.token.clone(),
            reauth: self.reauth.clone(),
            health: self.health.clone(),
            body: BytesMut::with_capacity(64 * 1024),
        }
    }
}

fn spawn_refresher(oauth: OAuth, cell: std::sync::Weak<TokenCell>, reauth: Arc<Reauth>, mut lifetime: Duration) {
    tokio::spawn(async move {
        loop {
            let early = tokio::select! {
                () = tokio::time::sleep(lifetime.mul_f64(0.8).max(Duration::from_secs(1))) => false,
                () = reauth.now.notified() => true,
            };
            let mut backoff = Duration::from_secs(1);
            loop {
                if cell.strong_count() == 0 {
                    return;
                }
                match oauth.fetch().await {
                    Ok((token, life)) => {
                        if let Some(cell) = cell.upgrade() {
                            cell.set("Bearer", &token);
                            if early {
                                reauth.produced.store(cell.version(), Ordering::Release);
                            }
                        }
                        lifetime = life;
                        tracing::info!("FCM access token refreshed");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "FCM access token refresh failed; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                }
            }
        }
    });
}

/// A worker's FCM session.
#[derive(Debug)]
pub struct FcmSession {
    endpoint: Arc<Endpoint>,
    path: PathAndQuery,
    pool: Option<Pool>,
    connections: usize,
    token: CachedToken,
    cell: Arc<TokenCell>,
    reauth: Arc<Reauth>,
    health: Arc<Health>,
    /// Request bodies are cut from this buffer, refilled in 64 KB blocks.
    body: BytesMut,
}

impl FcmSession {
    /// Opens the connections.
    pub async fn warm(&mut self) -> Result<(), ConnectError> {
        self.pool = Some(Pool::open(self.endpoint.clone(), self.connections).await?);
        Ok(())
    }

    /// Builds the message for `req` (the body with its token) and hands it
    /// to a connection.
    fn submit(&mut self, req: &PushRequest<'_>, keep_body: bool) -> Option<Call> {
        let p = req.payload;
        let need = p.head.len() + req.token.len() + p.tail.len();
        if self.body.capacity() - self.body.len() < need {
            self.body.reserve((64 * 1024).max(need));
        }
        self.body.put_slice(&p.head);
        self.body.put_slice(req.token.as_bytes());
        self.body.put_slice(&p.tail);
        let body = self.body.split().freeze();
        let fields = [(&AUTH, self.token.current()), (&CONTENT_TYPE_NAME, &JSON)];
        let outgoing = Outgoing { method: &Method::POST, path: self.path.as_str(), headers: &fields };
        self.pool.as_mut()?.send(&outgoing, body, keep_body)
    }

    /// Streams the connections can carry at once.
    pub fn capacity(&self) -> usize {
        self.pool.as_ref().map_or(0, Pool::capacity)
    }

    /// Hands one notification over.
    pub fn send(&mut self, req: &PushRequest<'_>) -> Handoff<FcmPending> {
        if self.health.is_stopped() {
            return Handoff::Done(Outcome::Failed(FailReason::ProviderStopped));
        }
        let token_version = self.token.version();
        match self.submit(req, false) {
            Some(call) => Handoff::Pending(FcmPending {
                call,
                health: self.health.clone(),
                token_version,
                cell: self.cell.clone(),
                reauth: self.reauth.clone(),
            }),
            None => Handoff::Done(Outcome::Unsent),
        }
    }

    /// Sends one message and returns FCM's whole answer (test-send).
    pub async fn send_detailed(&mut self, req: &PushRequest<'_>) -> Result<RawResponse, CallError> {
        match self.submit(req, true) {
            Some(call) => call.await,
            None => Err(CallError::not_sent("no connection to FCM")),
        }
    }
}

/// An FCM send in flight.
#[derive(Debug)]
pub struct FcmPending {
    call: Call,
    health: Arc<Health>,
    /// The access token version the request carried.
    token_version: u64,
    cell: Arc<TokenCell>,
    reauth: Arc<Reauth>,
}

impl Future for FcmPending {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let answer = std::task::ready!(Pin::new(&mut self.call).poll(cx));
        let outcome = match &answer {
            Ok(raw) if raw.status == 401 => self.reauth.unauthenticated(self.token_version, &self.cell),
            Ok(raw) => classify(raw),
            Err(e) => e.outcome(),
        };
        if outcome == Outcome::Failed(FailReason::Auth)
            && let Ok(raw) = &answer
        {
            let (status, code, _) = error_of(raw);
            self.health.stop(format!(
                "FCM answered {} {status} {code}: FCM is stopped for this fire; check the service account and project",
                raw.status
            ));
        }
        Poll::Ready(outcome)
    }
}

/// `(status, errorCode, message)` of an FCM error body.
pub fn error_of(raw: &RawResponse) -> (String, String, String) {
    let v: serde_json::Value = serde_json::from_slice(&raw.body).unwrap_or_default();
    let e = &v["error"];
    let code =
        e["details"].as_array().and_then(|d| d.iter().find_map(|d| d.get("errorCode").and_then(|c| c.as_str()))).unwrap_or("").to_owned();
    (e["status"].as_str().unwrap_or("").to_owned(), code, e["message"].as_str().unwrap_or("").to_owned())
}

/// What an FCM answer means for the sender.
pub fn classify(raw: &RawResponse) -> Outcome {
    match raw.status {
        200 => Outcome::Delivered,
        404 => Outcome::Failed(FailReason::Unregistered),
        400 => {
            let (_, code, message) = error_of(raw);
            if code == "UNREGISTERED" {
                Outcome::Failed(FailReason::Unregistered)
            } else if message.contains("registration token") {
                Outcome::Failed(FailReason::BadDeviceToken)
            } else {
                Outcome::Failed(FailReason::BadRequest)
            }
        }
        401 | 403 => Outcome::Failed(FailReason::Auth),
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
        let unregistered = r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#;
        assert_eq!(classify(&raw(404, unregistered)), Outcome::Failed(FailReason::Unregistered));
        let bad_token = r#"{"error":{"code":400,"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"}]}}"#;
        assert_eq!(classify(&raw(400, bad_token)), Outcome::Failed(FailReason::BadDeviceToken));
        let bad_data =
            r#"{"error":{"code":400,"message":"Invalid value at 'message.data[0].value' (TYPE_STRING), 12","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(classify(&raw(400, bad_data)), Outcome::Failed(FailReason::BadRequest));
        assert_eq!(classify(&raw(401, "{}")), Outcome::Failed(FailReason::Auth));
        assert_eq!(classify(&raw(503, "{}")), Outcome::Retry { reason: FailReason::Unavailable, after: None });
        assert_eq!(error_of(&raw(404, unregistered)).1, "UNREGISTERED");
    }
}
