//! What the gateway received: deliveries per token, arrival times, answers
//! by status.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::audience::Platform;
use crate::metrics::LatencyHistogram;

const SHARDS: usize = 16;

/// Counts by token (a 64-bit hash of platform and token: 16 bytes per token,
/// collisions negligible at millions), arrivals, and answers. One lock per
/// delivery: a shard of tokens; the arrival clock sits with it.
#[derive(Debug)]
pub struct Records {
    shards: [Mutex<Shard>; SHARDS],
    deliveries: AtomicU64,
    without_collapse: AtomicU64,
    mark: Mutex<Option<Instant>>,
    mark_version: AtomicU64,
    statuses: Mutex<HashMap<u16, u64>>,
    capture_limit: usize,
    captured: Mutex<Vec<Captured>>,
}

/// A request as the gateway decoded it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Captured {
    /// `:method`.
    pub method: String,
    /// `:scheme`, `:authority` and `:path`, as a URI.
    pub uri: String,
    /// Every header field, in the order decoded.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
struct Shard {
    tokens: HashMap<u64, u32>,
    arrivals: LatencyHistogram,
    /// This shard's copy of the mark, refreshed when the mark moves.
    mark: Option<Instant>,
    mark_version: u64,
}

impl Default for Records {
    fn default() -> Self {
        Self::with_capture(0)
    }
}

impl Records {
    /// Records that keep the first `capture` requests whole.
    pub fn with_capture(capture: usize) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            deliveries: AtomicU64::new(0),
            without_collapse: AtomicU64::new(0),
            mark: Mutex::new(None),
            mark_version: AtomicU64::new(0),
            statuses: Mutex::new(HashMap::new()),
            capture_limit: capture,
            captured: Mutex::new(Vec::new()),
        }
    }

    /// Keeps the request whole while fewer than the capture limit are kept.
    pub(crate) fn capture(&self, parts: &http::request::Parts, body: &[u8]) {
        if self.capture_limit == 0 {
            return;
        }
        let mut captured = self.captured.lock().expect("capture lock");
        if captured.len() < self.capture_limit {
            captured.push(Captured {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                headers: parts.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect(),
                body: body.to_vec(),
            });
        }
    }

    /// The requests kept whole, in arrival order.
    pub fn captured(&self) -> Vec<Captured> {
        self.captured.lock().expect("capture lock").clone()
    }
}

/// Per-token results against an expected audience.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryCheck {
    /// Tokens expected.
    pub expected: u64,
    /// Expected tokens delivered at least once.
    pub delivered: u64,
    /// Expected tokens never delivered.
    pub missing: u64,
    /// Deliveries beyond the first, over all tokens.
    pub duplicates: u64,
    /// Tokens delivered that were not expected.
    pub unexpected: u64,
}

/// A summary of what arrived.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GatewayStats {
    /// Accepted notifications (200).
    pub deliveries: u64,
    /// Deliveries without a collapse id (APNs) or key (FCM): a duplicate
    /// of one would show twice on the phone.
    pub without_collapse_id: u64,
    /// Distinct tokens delivered.
    pub unique_tokens: u64,
    /// Deliveries beyond the first per token.
    pub duplicates: u64,
    /// Answers per HTTP status.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    /// Arrival time since the mark (or the first arrival), seconds.
    pub arrival_p50_s: f64,
    /// 95th percentile.
    pub arrival_p95_s: f64,
    /// 99th percentile.
    pub arrival_p99_s: f64,
    /// Last arrival.
    pub arrival_max_s: f64,
}

fn key(platform: Platform, token: &[u8]) -> u64 {
    xxh3_64_with_seed(token, platform as u64)
}

impl Records {
    /// Sets the instant arrivals are measured from (the fire).
    pub fn mark(&self, at: Instant) {
        *self.mark.lock().expect("mark lock") = Some(at);
        self.mark_version.fetch_add(1, Ordering::Release);
    }

    /// Counts an answer.
    pub fn status(&self, status: u16) {
        *self.statuses.lock().expect("status lock").entry(status).or_default() += 1;
    }

    /// Counts a delivery of `token`; `collapsible` when it carried a
    /// collapse id (APNs) or key (FCM), so a second copy replaces the first.
    pub fn delivered(&self, platform: Platform, token: &[u8], now: Instant, collapsible: bool) {
        let k = key(platform, token);
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        if !collapsible {
            self.without_collapse.fetch_add(1, Ordering::Relaxed);
        }
        let version = self.mark_version.load(Ordering::Acquire);
        let mut shard = self.shards[(k as usize) % SHARDS].lock().expect("records lock");
        *shard.tokens.entry(k).or_default() += 1;
        if shard.mark.is_none() || shard.mark_version != version {
            let mut mark = self.mark.lock().expect("mark lock");
            shard.mark = Some(*mark.get_or_insert(now));
            shard.mark_version = version;
        }
        let since = now.saturating_duration_since(shard.mark.expect("set above"));
        shard.arrivals.record(since);
    }

    /// Deliveries of one token.
    pub fn count(&self, platform: Platform, token: &str) -> u32 {
        let k = key(platform, token.as_bytes());
        self.shards[(k as usize) % SHARDS].lock().expect("records lock").tokens.get(&k).copied().unwrap_or(0)
    }

    /// Compares what arrived with every device of `audience`, decoding one
    /// token at a time (no copy of the audience's tokens).
    pub fn check_audience(&self, audience: &crate::audience::Audience) -> DeliveryCheck {
        let mut buf = Vec::new();
        let mut c = DeliveryCheck::default();
        let mut seen = 0u64;
        for shard in audience.shards() {
            for platform in Platform::ALL {
                for i in 0..shard.len(platform) {
                    c.expected += 1;
                    match self.count(platform, shard.token_text(platform, i, &mut buf)) {
                        0 => c.missing += 1,
                        n => {
                            c.delivered += 1;
                            c.duplicates += u64::from(n - 1);
                            seen += 1;
                        }
                    }
                }
            }
        }
        let stats = self.stats();
        // Tokens outside the audience (test-sends to self) are not counted as
        // the audience's duplicates.
        c.unexpected = stats.unique_tokens.saturating_sub(seen);
        c
    }

    /// A summary.
    pub fn stats(&self) -> GatewayStats {
        let mut unique = 0u64;
        let mut dup = 0u64;
        let mut h = LatencyHistogram::new();
        for shard in &self.shards {
            let shard = shard.lock().expect("records lock");
            for n in shard.tokens.values() {
                unique += 1;
                dup += u64::from(n - 1);
            }
            h.merge(&shard.arrivals);
        }
        let secs = |d: Duration| d.as_secs_f64();
        GatewayStats {
            deliveries: self.deliveries.load(Ordering::Relaxed),
            without_collapse_id: self.without_collapse.load(Ordering::Relaxed),
            unique_tokens: unique,
            duplicates: dup,
            statuses: self.statuses.lock().expect("status lock").iter().map(|(k, v)| (*k, *v)).collect(),
            arrival_p50_s: secs(h.quantile(0.5)),
            arrival_p95_s: secs(h.quantile(0.95)),
            arrival_p99_s: secs(h.quantile(0.99)),
            arrival_max_s: secs(h.max()),
        }
    }

    /// Writes the per-token counts (and the totals) to `path`, so a
    /// gateway restarted after an outage counts on from them: one line per
    /// token, `<key hex> <count>`, after a `deliveries <n> <without
    /// collapse id>` line.
    pub fn save_counts(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let tmp = path.with_extension("tmp");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        writeln!(out, "deliveries {} {}", self.deliveries.load(Ordering::Relaxed), self.without_collapse.load(Ordering::Relaxed))?;
        for shard in &self.shards {
            for (k, n) in &shard.lock().expect("records lock").tokens {
                writeln!(out, "{k:016x} {n}")?;
            }
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(tmp, path)
    }

    /// Adds the counts [`save_counts`](Self::save_counts) wrote; a missing
    /// file adds nothing. A malformed line is an error naming it.
    pub fn load_counts(&self, path: &std::path::Path) -> std::io::Result<()> {
        let text = match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        };
        let bad = |n: usize| std::io::Error::other(format!("{}:{}: not a gateway count line", path.display(), n + 1));
        for (n, line) in text.lines().enumerate() {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some("deliveries"), Some(d), Some(w)) => {
                    self.deliveries.fetch_add(d.parse().map_err(|_| bad(n))?, Ordering::Relaxed);
                    self.without_collapse.fetch_add(w.parse().map_err(|_| bad(n))?, Ordering::Relaxed);
                }
                (Some(k), Some(c), None) => {
                    let k = u64::from_str_radix(k, 16).map_err(|_| bad(n))?;
                    let c: u32 = c.parse().map_err(|_| bad(n))?;
                    *self.shards[(k as usize) % SHARDS].lock().expect("records lock").tokens.entry(k).or_default() += c;
                }
                _ => return Err(bad(n)),
            }
        }
        Ok(())
    }

    /// Forgets everything.
    pub fn reset(&self) {
        for shard in &self.shards {
            *shard.lock().expect("records lock") = Shard::default();
        }
        self.deliveries.store(0, Ordering::Relaxed);
        self.without_collapse.store(0, Ordering::Relaxed);
        *self.mark.lock().expect("mark lock") = None;
        self.mark_version.fetch_add(1, Ordering::Release);
        self.statuses.lock().expect("status lock").clear();
    }
}
