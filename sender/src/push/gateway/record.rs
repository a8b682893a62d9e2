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
/// collisions negligible at millions), arrivals, and answers.
#[derive(Debug)]
pub struct Records {
    tokens: [Mutex<HashMap<u64, u32>>; SHARDS],
    deliveries: AtomicU64,
    arrivals: Mutex<LatencyHistogram>,
    mark: Mutex<Option<Instant>>,
    statuses: Mutex<HashMap<u16, u64>>,
}

impl Default for Records {
    fn default() -> Self {
        Self {
            tokens: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            deliveries: AtomicU64::new(0),
            arrivals: Mutex::new(LatencyHistogram::new()),
            mark: Mutex::new(None),
            statuses: Mutex::new(HashMap::new()),
        }
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
    }

    /// Counts an answer.
    pub fn status(&self, status: u16) {
        *self.statuses.lock().expect("status lock").entry(status).or_default() += 1;
    }

    /// Counts a delivery of `token`.
    pub fn delivered(&self, platform: Platform, token: &[u8], now: Instant) {
        let k = key(platform, token);
        *self.tokens[(k as usize) % SHARDS].lock().expect("token lock").entry(k).or_default() += 1;
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        let since = {
            let mut mark = self.mark.lock().expect("mark lock");
            let start = *mark.get_or_insert(now);
            now.saturating_duration_since(start)
        };
        self.arrivals.lock().expect("arrival lock").record(since);
    }

    /// Deliveries of one token.
    pub fn count(&self, platform: Platform, token: &str) -> u32 {
        let k = key(platform, token.as_bytes());
        self.tokens[(k as usize) % SHARDS].lock().expect("token lock").get(&k).copied().unwrap_or(0)
    }

    /// Compares what arrived with the tokens that were meant to.
    pub fn check<'a>(&self, expected: impl IntoIterator<Item = (Platform, &'a str)>) -> DeliveryCheck {
        let mut c = DeliveryCheck::default();
        let mut seen = 0u64;
        for (platform, token) in expected {
            c.expected += 1;
            match self.count(platform, token) {
                0 => c.missing += 1,
                n => {
                    c.delivered += 1;
                    seen += 1;
                    c.duplicates += u64::from(n - 1);
                }
            }
        }
        let stats = self.stats();
        c.unexpected = stats.unique_tokens.saturating_sub(seen);
        // Duplicates of unexpected tokens count too.
        c.duplicates = stats.duplicates;
        c
    }

    /// A summary.
    pub fn stats(&self) -> GatewayStats {
        let mut unique = 0u64;
        let mut dup = 0u64;
        for shard in &self.tokens {
            for n in shard.lock().expect("token lock").values() {
                unique += 1;
                dup += u64::from(n - 1);
            }
        }
        let h = self.arrivals.lock().expect("arrival lock");
        let secs = |d: Duration| d.as_secs_f64();
        GatewayStats {
            deliveries: self.deliveries.load(Ordering::Relaxed),
            unique_tokens: unique,
            duplicates: dup,
            statuses: self.statuses.lock().expect("status lock").iter().map(|(k, v)| (*k, *v)).collect(),
            arrival_p50_s: secs(h.quantile(0.5)),
            arrival_p95_s: secs(h.quantile(0.95)),
            arrival_p99_s: secs(h.quantile(0.99)),
            arrival_max_s: secs(h.max()),
        }
    }

    /// Forgets everything.
    pub fn reset(&self) {
        for shard in &self.tokens {
            shard.lock().expect("token lock").clear();
        }
        self.deliveries.store(0, Ordering::Relaxed);
        self.arrivals.lock().expect("arrival lock").clear();
        *self.mark.lock().expect("mark lock") = None;
        self.statuses.lock().expect("status lock").clear();
    }
}
