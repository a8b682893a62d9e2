//! Metrics of a fan-out: what was delivered each second per platform,
//! failures by reason, and the delivery-time histogram (fire to provider
//! acknowledgment).
//!
//! Notifier workers count in a private [`FanoutStats`] and hand it to the
//! [`MetricsSink`] every ~100 ms, so the hot path never touches shared state.
//! [`MemoryMetrics`] keeps them in process; later sinks (the flight recorder,
//! CloudWatch) implement the same trait.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use crate::audience::Platform;
use crate::push::FailReason;

pub mod histogram;
pub mod prometheus;

pub use histogram::LatencyHistogram;

/// Counts over some span of a fan-out: a worker's delta, or a running total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutStats {
    /// Delivered notifications per second since the fire, `[ios, android]`.
    pub delivered_per_second: Vec<[u64; 2]>,
    /// Failures per reason (indexed by [`FailReason::index`]).
    pub failed: [u64; FailReason::COUNT],
    /// Delivery time of every delivered notification.
    pub latency: LatencyHistogram,
    /// Provider round trips (send to answer), sampled.
    pub rtt: LatencyHistogram,
    /// Devices handed to a provider for the first time.
    pub handed_off: u64,
    /// Sends again after a retryable answer (429, 5xx, a lost connection).
    pub retried: u64,
    /// Answers that were throttles.
    pub throttled: u64,
    /// Devices left without an answer when an aborted fire stopped waiting.
    pub in_doubt: u64,
}

impl FanoutStats {
    /// Counts `n` deliveries on `platform`, acknowledged `since_fire` after the fire.
    #[inline]
    pub fn delivered(&mut self, platform: Platform, since_fire: Duration, n: u64) {
        let second = since_fire.as_secs() as usize;
        if self.delivered_per_second.len() <= second {
            self.delivered_per_second.resize(second + 1, [0; 2]);
        }
        self.delivered_per_second[second][platform as usize] += n;
        self.latency.record_n(since_fire, n);
    }

    /// Counts a failure.
    #[inline]
    pub fn failed(&mut self, reason: FailReason) {
        self.failed[reason.index()] += 1;
    }

    /// Delivered notifications per platform.
    pub fn delivered_total(&self, platform: Platform) -> u64 {
        self.delivered_per_second.iter().map(|s| s[platform as usize]).sum()
    }

    /// Failed notifications.
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }

    /// Failures by reason name, non-zero only.
    pub fn failed_by_reason(&self) -> BTreeMap<String, u64> {
        FailReason::ALL.iter().filter(|r| self.failed[r.index()] > 0).map(|r| (r.as_str().to_owned(), self.failed[r.index()])).collect()
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.latency.count() == 0
            && self.failed_total() == 0
            && self.rtt.count() == 0
            && self.handed_off == 0
            && self.retried == 0
            && self.throttled == 0
            && self.in_doubt == 0
    }

    /// Devices handed off without a final answer yet: in flight, or
    /// waiting for a retry.
    pub fn outstanding(&self) -> u64 {
        let delivered: u64 = self.delivered_per_second.iter().map(|s| s[0] + s[1]).sum();
        self.handed_off.saturating_sub(delivered + self.failed_total() + self.in_doubt)
    }

    /// Adds another span's counts.
    pub fn merge(&mut self, other: &Self) {
        if self.delivered_per_second.len() < other.delivered_per_second.len() {
            self.delivered_per_second.resize(other.delivered_per_second.len(), [0; 2]);
        }
        for (a, b) in self.delivered_per_second.iter_mut().zip(&other.delivered_per_second) {
            a[0] += b[0];
            a[1] += b[1];
        }
        for (a, b) in self.failed.iter_mut().zip(&other.failed) {
            *a += b;
        }
        self.latency.merge(&other.latency);
        self.rtt.merge(&other.rtt);
        self.handed_off += other.handed_off;
        self.retried += other.retried;
        self.throttled += other.throttled;
        self.in_doubt += other.in_doubt;
    }

    /// Empties it, keeping allocations.
    pub fn clear(&mut self) {
        self.delivered_per_second.clear();
        self.failed = [0; FailReason::COUNT];
        self.latency.clear();
        self.rtt.clear();
        self.handed_off = 0;
        self.retried = 0;
        self.throttled = 0;
        self.in_doubt = 0;
    }
}

/// Where notifier workers report their counts.
pub trait MetricsSink: Send + Sync + std::fmt::Debug {
    /// Adds a worker's counts for `campaign_id` since its last report.
    fn record(&self, campaign_id: &str, delta: &FanoutStats);
}

/// Keeps every campaign's totals in memory.
#[derive(Debug, Default)]
pub struct MemoryMetrics {
    totals: Mutex<HashMap<String, FanoutStats>>,
}

impl MemoryMetrics {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The totals of a campaign so far.
    pub fn snapshot(&self, campaign_id: &str) -> FanoutStats {
        self.totals.lock().expect("metrics lock").get(campaign_id).cloned().unwrap_or_default()
    }
}

impl MetricsSink for MemoryMetrics {
    fn record(&self, campaign_id: &str, delta: &FanoutStats) {
        let mut totals = self.totals.lock().expect("metrics lock");
        match totals.get_mut(campaign_id) {
            Some(t) => t.merge(delta),
            None => {
                totals.insert(campaign_id.to_owned(), delta.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_add_up_per_campaign() {
        let m = MemoryMetrics::new();
        let mut d = FanoutStats::default();
        d.delivered(Platform::Ios, Duration::from_millis(1500), 3);
        d.failed(FailReason::Unregistered);
        m.record("a", &d);
        d.clear();
        d.delivered(Platform::Android, Duration::from_millis(200), 2);
        m.record("a", &d);
        let t = m.snapshot("a");
        assert_eq!(t.delivered_per_second, vec![[0, 2], [3, 0]]);
        assert_eq!(t.delivered_total(Platform::Ios), 3);
        assert_eq!(t.failed_by_reason().get("unregistered"), Some(&1));
        assert_eq!(t.latency.count(), 5);
        assert!(m.snapshot("b").is_empty());
    }
}
