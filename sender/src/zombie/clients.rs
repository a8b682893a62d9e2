//! Simulated client apps, for the embedded mode: the return traffic a blast
//! brings, made real enough to watch and to switch off.
//!
//! A share of the notified devices opens the app after a delay (exponential,
//! the runbook's `[backends.NAME] open_share` and `open_delay`, the same
//! figures the plan forecasts with). An opening client asks the real flag
//! server over loopback whether it may call each backend
//! (`GET /v1/zombie?backend=NAME`); if not, it backs off for the flag's
//! `retry_after` and asks again then (a few old app versions,
//! [`ZOMBIE_LEAK`], ignore the flag); if so, it makes its
//! `requests_per_open` requests to the backend's stand-in on the same server.
//! The server counts both per backend ([`super::server::RequestCounts`]):
//! that count is the measured return traffic the recorder charts next to the
//! forecast.
//!
//! Clients move in 100 ms slots: one request per backend and slot carries
//! how many clients (or backend requests) it stands for, in
//! [`super::server::CLIENTS_HEADER`], so a million clients cost the machine
//! a few dozen requests a second.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use super::FlagsDocument;
use super::background::Background;
use super::server::{BACKENDS_PATH, CLIENTS_HEADER, PATH};
use crate::plan::BackendInput;

/// How often clients move.
pub const SLOT: Duration = Duration::from_millis(100);
/// Share of clients that ignore zombie mode (old app versions).
pub const ZOMBIE_LEAK: f64 = 0.05;
/// Opens are scheduled at most this far ahead.
const HORIZON: Duration = Duration::from_secs(30 * 60);

/// One backend's clients: backend requests due per slot from now.
#[derive(Debug)]
struct Due {
    backend: BackendInput,
    /// Backend requests due in each coming slot (index 0: now).
    slots: VecDeque<f64>,
    /// Fractions of a request not sent yet.
    carry: f64,
}

impl Due {
    /// `opened` devices were notified now: their opens (and requests)
    /// spread over the coming slots.
    fn schedule(&mut self, notified: f64) {
        let b = &self.backend;
        let amount = notified * b.open_share * b.requests_per_open;
        if amount <= 0.0 || !amount.is_finite() {
            return;
        }
        let slot = SLOT.as_secs_f64();
        let tau = b.open_delay_s.max(slot);
        let max = (HORIZON.as_secs_f64() / slot) as usize;
        for k in 0..max {
            let (a, z) = (k as f64 * slot, (k + 1) as f64 * slot);
            let p = (-a / tau).exp() - (-z / tau).exp();
            if self.slots.len() <= k {
                self.slots.push_back(0.0);
            }
            self.slots[k] += amount * p;
            if p < 1e-7 && k > 0 {
                break;
            }
        }
    }

    /// Adds `requests` to the slot `ahead` slots from now.
    fn defer(&mut self, requests: f64, ahead: usize) {
        while self.slots.len() <= ahead {
            self.slots.push_back(0.0);
        }
        self.slots[ahead] += requests;
    }
}

/// Deliveries reported, not yet scheduled.
#[derive(Debug, Default)]
struct Feed {
    seen: u64,
    new: u64,
}

/// The simulated clients, on a thread of their own; stopped on drop.
#[derive(Debug)]
pub struct ClientSim {
    feed: Arc<Mutex<Feed>>,
    _running: Background,
}

impl ClientSim {
    /// Clients of `backends` calling the flag server at `addr`.
    pub fn start(addr: SocketAddr, backends: Vec<BackendInput>) -> std::io::Result<Self> {
        let feed = Arc::new(Mutex::new(Feed::default()));
        let fed = feed.clone();
        let running = Background::spawn("kickoff-clients", move |stop| run(addr, backends, fed, stop))?;
        Ok(Self { feed, _running: running })
    }

    /// Devices delivered so far, a running total: the new ones start opening.
    pub fn delivered(&self, total: u64) {
        let mut f = self.feed.lock().expect("feed lock");
        if total > f.seen {
            f.new += total - f.seen;
            f.seen = total;
        }
    }
}

/// A keep-alive HTTP/1.1 connection to the flag server, opened on demand.
struct Conn {
    addr: SocketAddr,
    send: Option<SendRequest<Empty<Bytes>>>,
}

impl Conn {
    /// GET `path` standing for `n` clients; the body of a 200.
    async fn get(&mut self, path: &str, n: u64) -> Option<Bytes> {
        if self.send.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.addr).await.ok()?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.send = Some(send);
        }
        let send = self.send.as_mut()?;
        send.ready().await.ok()?;
        let req = http::Request::get(path)
            .header(http::header::HOST, self.addr.to_string())
            .header(CLIENTS_HEADER, n.to_string())
            .body(Empty::new())
            .ok()?;
        let res = match send.send_request(req).await {
            Ok(r) => r,
            Err(_) => {
                self.send = None;
                return None;
            }
        };
        let ok = res.status() == http::StatusCode::OK;
        let body = res.into_body().collect().await.ok()?.to_bytes();
        ok.then_some(body)
    }
}

async fn run(addr: SocketAddr, backends: Vec<BackendInput>, feed: Arc<Mutex<Feed>>, mut stop: oneshot::Receiver<()>) {
    let mut due: Vec<Due> = backends.into_iter().map(|backend| Due { backend, slots: VecDeque::new(), carry: 0.0 }).collect();
    let mut conn = Conn { addr, send: None };
    let mut tick = tokio::time::interval(SLOT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let new = std::mem::take(&mut feed.lock().expect("feed lock").new);
        for d in &mut due {
            if new > 0 {
                d.schedule(new as f64);
            }
            let requests = d.slots.pop_front().unwrap_or(0.0) + d.carry;
            let whole = requests.floor();
            d.carry = requests - whole;
            if whole < 1.0 {
                continue;
            }
            let name = d.backend.name.clone();
            let clients = (whole / d.backend.requests_per_open.max(1e-9)).ceil().max(1.0) as u64;
            // Ask the flags first; no answer: carry on as before (clients
            // keep the last document they had; here: none, so call).
            let flag = conn
                .get(&format!("{PATH}?backend={name}"), clients)
                .await
                .and_then(|body| serde_json::from_slice::<FlagsDocument>(&body).ok())
                .and_then(|doc| doc.backends.get(&name).cloned())
                .filter(|f| f.zombie);
            let (call, backoff) = match &flag {
                Some(f) => {
                    let leak = (whole * ZOMBIE_LEAK).floor();
                    (leak, Some((whole - leak, f.retry_after)))
                }
                None => (whole, None),
            };
            if let Some((requests, retry_after_s)) = backoff {
                let ahead = ((retry_after_s as f64) / SLOT.as_secs_f64()).ceil().max(1.0) as usize;
                d.defer(requests, ahead.saturating_sub(1));
            }
            if call >= 1.0 {
                let _ = conn.get(&format!("{BACKENDS_PATH}{name}"), call as u64).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> BackendInput {
        BackendInput { name: "api".into(), capacity_rps: 1000.0, requests_per_open: 20.0, open_share: 0.1, open_delay_s: 10.0 }
    }

    #[test]
    fn notified_devices_open_over_the_delay_and_bring_their_requests() {
        let mut d = Due { backend: api(), slots: VecDeque::new(), carry: 0.0 };
        d.schedule(10_000.0);
        let total: f64 = d.slots.iter().sum();
        assert!((total - 10_000.0 * 0.1 * 20.0).abs() < 1.0, "every open's requests, once: {total}");
        // Exponential: the first 10 s (one mean delay) hold 1 - 1/e of them.
        let first: f64 = d.slots.iter().take(100).sum();
        assert!((first / total - (1.0 - (-1.0f64).exp())).abs() < 1e-4, "{first} of {total}");
        d.defer(5.0, 3);
        assert!((d.slots.iter().sum::<f64>() - total - 5.0).abs() < 1e-9);
    }
}
