//! The `nghttp2` send engine: libnghttp2 (through `kickoff-nghttp2`, the
//! one crate allowed `unsafe`) driven sans-IO on the worker's thread.
//!
//! Each connection is one [`kickoff_nghttp2::Session`] behind a mutex that
//! only the worker's thread takes (the pool submitting, the connection's
//! driver task reading and writing), so it is never contended. A request is
//! a slot in the connection's call table: submitting it queues its frames
//! inside the session and wakes the driver once; the driver writes every
//! queued frame in one buffer (one TLS write for many requests) and feeds
//! what it reads back to the session, which completes the calls' slots and
//! wakes their futures. nghttp2 keeps the protocol: the server's stream limit
//! (requests beyond it wait inside the session), flow control, PING,
//! GOAWAY (streams above the last id come back refused, so unsent) and
//! RST_STREAM.
//!
//! A connection that ends fails its calls as unsent (never serialised) or
//! in doubt, and is replaced in the background while the others carry on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use kickoff_nghttp2 as ng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::h2client::{
    CallError, CallFailure, ConnectError, Endpoint, MAX_KEPT_BODY, Outgoing, RawResponse, SETTINGS_WAIT, Transport, parse_retry_after,
};

/// Bytes gathered from the session before they are written.
const WRITE_CHUNK: usize = 64 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// A session's connections to one endpoint.
pub(crate) struct NgPool {
    endpoint: Arc<Endpoint>,
    conns: Vec<Arc<Conn>>,
}

impl std::fmt::Debug for NgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NgPool").field("endpoint", &self.endpoint.url).field("connections", &self.conns.len()).finish()
    }
}

/// One connection slot: its current session (none while reconnecting).
struct Conn {
    endpoint: Arc<Endpoint>,
    live: AtomicBool,
    inflight: AtomicUsize,
    state: Mutex<State>,
}

struct State {
    session: Option<ng::Session>,
    calls: Calls,
    /// The driver, parked until there is something to write.
    driver: Option<Waker>,
    /// The pool is gone: end the connection once its calls are done.
    closed: bool,
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it leaves plain data; carry on with it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl NgPool {
    pub(crate) async fn open(endpoint: Arc<Endpoint>, connections: usize) -> Result<Self, ConnectError> {
        // Built as it goes: if a later connection fails, dropping the pool
        // closes the ones already started.
        let mut pool = Self { endpoint: endpoint.clone(), conns: Vec::new() };
        for _ in 0..connections.max(1) {
            let conn = Arc::new(Conn {
                endpoint: endpoint.clone(),
                live: AtomicBool::new(false),
                inflight: AtomicUsize::new(0),
                state: Mutex::new(State { session: None, calls: Calls::default(), driver: None, closed: false }),
            });
            pool.conns.push(conn.clone());
            let transport = endpoint.transport().await?;
            start(&conn, transport)?;
        }
        let deadline = tokio::time::Instant::now() + SETTINGS_WAIT;
        while pool.capacity() <= pool.conns.len() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(pool)
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Submits a request on the least busy live connection; `None` when
    /// none can take it now.
    pub(crate) fn send(&mut self, request: &Outgoing<'_>, body: Bytes, keep_body: bool) -> Option<NgCall> {
        let conn = self.conns.iter().filter(|c| c.live.load(Ordering::Relaxed)).min_by_key(|c| c.inflight.load(Ordering::Relaxed))?;
        let mut guard = conn.lock();
        let State { session, calls, driver, .. } = &mut *guard;
        let session = session.as_mut()?;
        let endpoint = &self.endpoint;
        // The path is new with every device: indexing it in the HPACK table
        // would only evict the fields that repeat, so it is never indexed
        // (like `apns-id`, which the provider marks sensitive).
        let pseudo = [
            (b":method".as_slice(), request.method.as_str().as_bytes(), false),
            (b":scheme", endpoint.scheme.as_str().as_bytes(), false),
            (b":authority", endpoint.authority.as_str().as_bytes(), false),
            (b":path", request.path.as_bytes(), true),
        ];
        let fields = request.headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes(), v.is_sensitive()));
        // On the stack: a provider's request has at most a dozen fields.
        let mut headers = [ng::Header { name: b"", value: b"", sensitive: false }; 16];
        let mut n = 0;
        for (name, value, sensitive) in pseudo.into_iter().chain(fields) {
            let Some(slot) = headers.get_mut(n) else {
                tracing::error!("a request with more than 16 header fields; not sent");
                return None;
            };
            *slot = ng::Header { name, value, sensitive };
            n += 1;
        }
        let headers = &headers[..n];
        let key = calls.open(keep_body);
        match session.submit(headers, Some(body), key) {
            Ok(_) => {}
            Err(e) => {
                calls.release(key);
                if e.is_closed() {
                    // A GOAWAY: the driver ends the connection once its
                    // streams are done, and a new one replaces it.
                    conn.live.store(false, Ordering::Relaxed);
                }
                tracing::debug!(error = %e, "nghttp2 refused a request");
                return None;
            }
        }
        if let Some(w) = driver.take() {
            w.wake();
        }
        conn.inflight.fetch_add(1, Ordering::Relaxed);
        Some(NgCall { conn: conn.clone(), key, done: false })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.limits().fold(0, usize::saturating_add)
    }

    pub(crate) fn max_concurrent_streams(&self) -> Option<usize> {
        self.limits().min()
    }

    fn limits(&self) -> impl Iterator<Item = usize> + '_ {
        self.conns.iter().filter_map(|c| c.lock().session.as_ref().map(|s| s.max_concurrent_streams() as usize))
    }
}

impl Drop for NgPool {
    fn drop(&mut self) {
        for conn in &self.conns {
            let mut state = conn.lock();
            state.closed = true;
            if let Some(w) = state.driver.take() {
                w.wake();
            }
        }
    }
}

/// Puts a new session on `conn` and spawns the driver of `transport`.
fn start(conn: &Arc<Conn>, transport: Transport) -> Result<(), ConnectError> {
    let session = ng::Session::new(&ng::Options::default()).map_err(|e| conn.endpoint.fail(e.to_string()))?;
    conn.lock().session = Some(session);
    conn.live.store(true, Ordering::Relaxed);
    match transport {
        Transport::Plain(io) => tokio::spawn(drive(conn.clone(), io)),
        Transport::Tls(io) => tokio::spawn(drive(conn.clone(), *io)),
    };
    Ok(())
}

/// Runs one connection until it ends, then fails its calls and, unless the
/// pool is gone, connects again.
async fn drive<T: AsyncRead + AsyncWrite + Unpin>(conn: Arc<Conn>, io: T) {
    let mut driver = Driver {
        conn: conn.clone(),
        io,
        read: vec![0; READ_CHUNK],
        out: Vec::with_capacity(WRITE_CHUNK),
        written: 0,
        flushing: false,
        terminating: false,
    };
    let end = std::future::poll_fn(|cx| driver.poll(cx)).await;
    drop(driver);
    conn.live.store(false, Ordering::Relaxed);
    let closed = {
        let mut state = conn.lock();
        state.session = None;
        state.driver = None;
        let why = match &end {
            Ok(()) => "the connection closed".to_owned(),
            Err(e) => e.to_string(),
        };
        state.calls.fail_all(&why);
        state.closed
    };
    if let Err(e) = end {
        tracing::debug!(error = %e, "provider connection closed");
    }
    if !closed {
        tokio::spawn(reconnect(conn));
    }
}

async fn reconnect(conn: Arc<Conn>) {
    let mut delay = Duration::from_millis(100);
    loop {
        if conn.lock().closed {
            return;
        }
        let attempt = match conn.endpoint.transport().await {
            Ok(transport) => start(&conn, transport),
            Err(e) => Err(e),
        };
        match attempt {
            Ok(()) => return,
            Err(e) => {
                // The engine logs the provider's outage once; each attempt
                // is detail.
                tracing::debug!(error = %e, "reconnect failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("the provider closed the connection")]
    Closed,
    #[error("the connection stopped taking data")]
    WriteZero,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] ng::Error),
}

struct Driver<T> {
    conn: Arc<Conn>,
    io: T,
    read: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    flushing: bool,
    /// Its GOAWAY is queued.
    terminating: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Driver<T> {
    /// Reads, writes and parks until the connection ends: `Ok` once the
    /// session is finished, `Err` on an I/O or protocol failure.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Ended>> {
        loop {
            let mut progress = false;
            let mut buf = ReadBuf::new(&mut self.read);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Err(Ended::Closed)),
                Poll::Ready(Ok(())) => {
                    let mut state = self.conn.lock();
                    let State { session, calls, .. } = &mut *state;
                    let Some(session) = session.as_mut() else { return Poll::Ready(Ok(())) };
                    session.receive(buf.filled(), calls)?;
                    if !session.accepts_requests() {
                        // A GOAWAY: no new requests here; the others take them
                        // while this one finishes its streams.
                        self.conn.live.store(false, Ordering::Relaxed);
                    }
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {}
            }
            if self.written == self.out.len() {
                self.out.clear();
                self.written = 0;
                let mut state = self.conn.lock();
                let State { session, calls, driver, closed } = &mut *state;
                let Some(session) = session.as_mut() else { return Poll::Ready(Ok(())) };
                // Once idle, end a connection the pool no longer needs or that
                // takes no new requests (a GOAWAY, or stream ids used up), so
                // that a fresh one replaces it.
                if (*closed || !session.accepts_requests()) && calls.active == 0 && !self.terminating {
                    self.terminating = true;
                    session.terminate();
                }
                session.send(&mut self.out, WRITE_CHUNK, calls)?;
                if self.out.is_empty() {
                    if !session.is_alive() && !self.flushing {
                        return Poll::Ready(Ok(()));
                    }
                    if !driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *driver = Some(cx.waker().clone());
                    }
                }
            }
            while self.written < self.out.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(Ended::WriteZero)),
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        self.flushing = true;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => break,
                }
            }
            if self.flushing && self.written == self.out.len() {
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flushing = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => {}
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }
}

/// A connection's calls, by key (the slot index handed to nghttp2).
#[derive(Default)]
struct Calls {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Slots not free: open, abandoned or done but not yet taken.
    active: usize,
}

#[derive(Default)]
struct Slot {
    phase: Phase,
    waker: Option<Waker>,
    keep_body: bool,
    /// Its HEADERS were serialised: the provider may have seen it.
    sent: bool,
    response: Option<RawResponse>,
    result: Option<Result<RawResponse, CallError>>,
}

#[derive(Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Free,
    /// Waiting for its answer.
    Open,
    /// Its future was dropped; the slot frees when the stream closes.
    Abandoned,
    /// Answered; the future takes the result.
    Done,
}

impl Calls {
    fn open(&mut self, keep_body: bool) -> usize {
        let key = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        });
        let slot = &mut self.slots[key];
        slot.phase = Phase::Open;
        slot.keep_body = keep_body;
        slot.sent = false;
        self.active += 1;
        key
    }

    fn release(&mut self, key: usize) {
        let slot = &mut self.slots[key];
        slot.phase = Phase::Free;
        slot.waker = None;
        slot.response = None;
        slot.result = None;
        self.free.push(key);
        self.active -= 1;
    }

    fn finish(&mut self, key: usize, result: Result<RawResponse, CallError>) {
        let slot = &mut self.slots[key];
        match slot.phase {
            Phase::Open => {
                slot.phase = Phase::Done;
                slot.result = Some(result);
                if let Some(w) = slot.waker.take() {
                    w.wake();
                }
            }
            Phase::Abandoned => self.release(key),
            Phase::Free | Phase::Done => {}
        }
    }

    /// The connection ended: every call without an answer fails, as unsent
    /// when its request never left, in doubt otherwise.
    fn fail_all(&mut self, why: &str) {
        for key in 0..self.slots.len() {
            if matches!(self.slots[key].phase, Phase::Open | Phase::Abandoned) {
                let kind = if self.slots[key].sent { CallFailure::InDoubt } else { CallFailure::NotSent };
                self.finish(key, Err(CallError { kind, message: why.to_owned() }));
            }
        }
    }

    fn response(&mut self, key: usize) -> &mut RawResponse {
        self.slots[key].response.get_or_insert_with(|| RawResponse { status: 0, retry_after: None, apns_id: None, body: Vec::new() })
    }
}

impl ng::Handler for Calls {
    fn on_header(&mut self, key: usize, name: &[u8], value: &[u8]) {
        let response = self.response(key);
        match name {
            b":status" => response.status = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(0),
            b"retry-after" => response.retry_after = HeaderValue::from_bytes(value).ok().as_ref().and_then(parse_retry_after),
            b"apns-id" => response.apns_id = HeaderValue::from_bytes(value).ok(),
            _ => {}
        }
    }

    fn on_data(&mut self, key: usize, data: &[u8]) {
        let keep = self.slots[key].keep_body;
        let response = self.response(key);
        if (keep || response.status != 200) && response.body.len() < MAX_KEPT_BODY {
            let room = MAX_KEPT_BODY - response.body.len();
            response.body.extend_from_slice(&data[..data.len().min(room)]);
        }
    }

    fn on_sent(&mut self, key: usize) {
        self.slots[key].sent = true;
    }

    fn on_close(&mut self, key: usize, close: ng::Close) {
        let response = self.slots[key].response.take();
        let result = match response {
            // A whole answer, or an accepted notification whatever happened
            // to the rest of its body.
            Some(r) if r.status != 0 && (close.error_code == 0 || r.status == 200) => Ok(r),
            _ => {
                let kind = if close.refused() {
                    CallFailure::NotSent
                } else if close.reset_by_peer {
                    CallFailure::Reset
                } else {
                    CallFailure::InDoubt
                };
                Err(CallError { kind, message: format!("stream closed with HTTP/2 error code {}", close.error_code) })
            }
        };
        self.finish(key, result);
    }

    fn on_goaway(&mut self, last_stream_id: i32, error_code: u32) {
        tracing::debug!(last_stream_id, error_code, "the provider sent GOAWAY");
    }
}

/// The response side of one request.
pub(crate) struct NgCall {
    conn: Arc<Conn>,
    key: usize,
    done: bool,
}

impl std::fmt::Debug for NgCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NgCall").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Future for NgCall {
    type Output = Result<RawResponse, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        assert!(!self.done, "NgCall polled after completion");
        let conn = self.conn.clone();
        let mut state = conn.lock();
        let slot = &mut state.calls.slots[self.key];
        if slot.phase == Phase::Done {
            let result = slot.result.take().expect("a done call has its result");
            state.calls.release(self.key);
            conn.inflight.fetch_sub(1, Ordering::Relaxed);
            self.done = true;
            // A closed pool's connection ends once its last call is taken.
            if state.closed
                && state.calls.active == 0
                && let Some(w) = state.driver.take()
            {
                w.wake();
            }
            return Poll::Ready(result);
        }
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for NgCall {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.conn.inflight.fetch_sub(1, Ordering::Relaxed);
        let mut state = self.conn.lock();
        match state.calls.slots[self.key].phase {
            Phase::Done => state.calls.release(self.key),
            Phase::Open => state.calls.slots[self.key].phase = Phase::Abandoned,
            Phase::Free | Phase::Abandoned => {}
        }
        // A closed pool's connection ends once its last call is gone.
        if state.closed
            && let Some(w) = state.driver.take()
        {
            w.wake();
        }
    }
}
