//! The `h2` send engine: the `h2` crate's client, one connection task per
//! connection (the engine Kickoff started with, kept as `engine = "h2"`).
//!
//! Requests go to the live connection with the fewest calls in flight; h2
//! itself keeps each connection within the server's
//! SETTINGS_MAX_CONCURRENT_STREAMS (extra streams wait in its open queue),
//! and the engine's in-flight window bounds the total. A dead connection is
//! replaced in the background while the others carry on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use http::Request;
use http::uri::PathAndQuery;

use super::h2client::{
    CallError, CallFailure, ConnectError, Endpoint, MAX_KEPT_BODY, Outgoing, RawResponse, SETTINGS_WAIT, Transport, parse_retry_after,
};

/// Opens one HTTP/2 connection with the `h2` crate and spawns its driver
/// task on the current runtime.
async fn connect(endpoint: &Endpoint) -> Result<(SendRequest<Bytes>, tokio::task::JoinHandle<()>), ConnectError> {
    let fail = |message: String| endpoint.fail(message);
    let transport = endpoint.transport().await?;
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

/// `outgoing` as an `http::Request` to `endpoint`.
fn request(endpoint: &Endpoint, outgoing: &Outgoing<'_>) -> Request<()> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(endpoint.scheme.clone());
    parts.authority = Some(endpoint.authority.clone());
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

/// The `h2` crate's pool.
pub(super) struct H2Pool {
    endpoint: Arc<Endpoint>,
    slots: Vec<Slot>,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Pool").field("endpoint", &self.endpoint.url).field("connections", &self.slots.len()).finish()
    }
}

impl H2Pool {
    pub(super) async fn open(endpoint: Arc<Endpoint>, connections: usize) -> Result<Self, ConnectError> {
        let mut slots = Vec::new();
        for _ in 0..connections.max(1) {
            let (send, task) = connect(&endpoint).await?;
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

    pub(super) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub(super) fn send(&mut self, outgoing: &Outgoing<'_>, body: Bytes, keep_body: bool) -> Option<H2Call> {
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
        let request = request(&self.endpoint, outgoing);
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
                match connect(&endpoint).await {
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

    pub(super) fn capacity(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|s| match &*s.state.lock().expect("slot lock") {
                SlotState::Live { send, .. } => Some(send.current_max_send_streams()),
                SlotState::Reconnecting => None,
            })
            .fold(0, usize::saturating_add)
    }

    pub(super) fn max_concurrent_streams(&self) -> Option<usize> {
        self.slots
            .iter()
            .filter_map(|s| match &*s.state.lock().expect("slot lock") {
                SlotState::Live { send, .. } => Some(send.current_max_send_streams()),
                SlotState::Reconnecting => None,
            })
            .min()
    }
}

enum CallState {
    Head(ResponseFuture),
    Body(h2::RecvStream, RawResponse),
    Failed,
    Done,
}

/// The response side of one request on the `h2` crate.
pub(super) struct H2Call {
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
                            return Poll::Ready(Err(call_error(&e)));
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
                        return Poll::Ready(Err(call_error(&e)));
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

fn call_error(e: &h2::Error) -> CallError {
    let kind = if e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote()) {
        CallFailure::NotSent
    } else if e.is_reset() && e.is_remote() {
        CallFailure::Reset
    } else {
        // An I/O error, the connection closed, or a protocol error on
        // our side: the connection is gone with the request.
        CallFailure::InDoubt
    };
    CallError { kind, message: e.to_string() }
}
