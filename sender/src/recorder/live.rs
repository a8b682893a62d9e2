//! Live metrics of a fire: the notifiers' counts, turned once a second into
//! points for the flight recorder and samples for live charts.
//!
//! Points (names are the recorder's vocabulary, shared with replay):
//! - `sent{platform}`: deliveries acknowledged in each second after the fire
//!   (stamped at the start of that second); counts that arrive after their
//!   second closed (CloudWatch's, in AWS mode, lag by a second or two) are
//!   written as further points of the same second, so sums stay exact;
//! - `delivered_total`, `failed_total{reason}`: running totals;
//! - `latency_s{q=p50|p95|p99}`: delivery time so far (fire to acknowledgment);
//! - `rtt_s{q=p50|p99}`: provider round trips in the last interval;
//! - at the end, `latency_bucket{le_us}` and `latency_max_us`: the whole
//!   delivery-time histogram, so a replay computes the same percentiles.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::{Point, Recorder};
use crate::audience::Platform;
use crate::metrics::{FanoutStats, LatencyHistogram, MetricsSink};

/// Deltas reach the sink every ~100 ms; a second is closed this long after it ends.
const SETTLE_MS: u64 = 300;

#[derive(Debug, Default)]
struct Live {
    fired_at_ms: u64,
    totals: FanoutStats,
    rtt_interval: LatencyHistogram,
    /// What was emitted as `sent` points, per second.
    emitted: Vec<[u64; 2]>,
}

/// One sample of a fire, for live charts.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    /// When (ms since the epoch).
    pub t_ms: u64,
    /// Seconds since the fire.
    pub since_fire_s: f64,
    /// Delivered per second so far, `[ios, android]`, one entry per second since the fire.
    pub sent_per_second: Vec<[u64; 2]>,
    /// Delivered so far.
    pub delivered: u64,
    /// Failures by reason so far.
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Delivery time percentiles so far, seconds.
    pub p50_s: f64,
    /// p95.
    pub p95_s: f64,
    /// p99.
    pub p99_s: f64,
    /// Provider round trip in the last interval, seconds (p50, p99), if sampled.
    pub rtt_s: Option<(f64, f64)>,
}

/// The fire's metrics sink: keeps totals per campaign and, given a recorder,
/// writes its points.
#[derive(Debug, Default)]
pub struct LiveMetrics {
    recorder: Option<Arc<Recorder>>,
    state: Mutex<HashMap<String, Live>>,
}

impl LiveMetrics {
    /// A sink writing to `recorder`, if any.
    pub fn new(recorder: Option<Arc<Recorder>>) -> Self {
        Self { recorder, state: Mutex::default() }
    }

    /// Marks the fire time of `campaign_id` (ms since the epoch).
    pub fn begin(&self, campaign_id: &str, fired_at_ms: u64) {
        self.state.lock().expect("live lock").entry(campaign_id.to_owned()).or_default().fired_at_ms = fired_at_ms;
    }

    /// The campaign's totals so far.
    pub fn snapshot(&self, campaign_id: &str) -> FanoutStats {
        self.state.lock().expect("live lock").get(campaign_id).map(|l| l.totals.clone()).unwrap_or_default()
    }

    /// Takes a sample at `now_ms`, writing its points; seconds that ended
    /// more than 300 ms ago are closed (all of them when `last`).
    pub fn sample(&self, campaign_id: &str, now_ms: u64, last: bool) -> Sample {
        let mut state = self.state.lock().expect("live lock");
        let live = state.entry(campaign_id.to_owned()).or_default();
        let t = &live.totals;
        let q = |h: &LatencyHistogram, q: f64| h.quantile(q).as_secs_f64();
        let sample = Sample {
            t_ms: now_ms,
            since_fire_s: now_ms.saturating_sub(live.fired_at_ms) as f64 / 1000.0,
            sent_per_second: t.delivered_per_second.clone(),
            delivered: t.delivered_total(Platform::Ios) + t.delivered_total(Platform::Android),
            failed_by_reason: t.failed_by_reason(),
            p50_s: q(&t.latency, 0.5),
            p95_s: q(&t.latency, 0.95),
            p99_s: q(&t.latency, 0.99),
            rtt_s: (live.rtt_interval.count() > 0).then(|| (q(&live.rtt_interval, 0.5), q(&live.rtt_interval, 0.99))),
        };
        if let Some(rec) = &self.recorder {
            let closed =
                if last { t.delivered_per_second.len() } else { (now_ms.saturating_sub(live.fired_at_ms + SETTLE_MS) / 1000) as usize };
            let closed = closed.min(t.delivered_per_second.len());
            // Late counts of seconds emitted before, then the newly closed seconds.
            let emitted = live.emitted.len();
            live.emitted.resize(closed.max(emitted), [0, 0]);
            for (s, done) in live.emitted.iter_mut().enumerate() {
                let now = t.delivered_per_second[s];
                let at = live.fired_at_ms + s as u64 * 1000;
                for (i, platform) in ["ios", "android"].into_iter().enumerate() {
                    let new = now[i].saturating_sub(done[i]);
                    if new > 0 || s >= emitted {
                        rec.point(Point::new(at, "sent", &[("platform", platform)], new as f64));
                    }
                }
                *done = now;
            }
            rec.point(Point::new(now_ms, "delivered_total", &[], sample.delivered as f64));
            for (reason, n) in &sample.failed_by_reason {
                rec.point(Point::new(now_ms, "failed_total", &[("reason", reason)], *n as f64));
            }
            for (name, v) in [("p50", sample.p50_s), ("p95", sample.p95_s), ("p99", sample.p99_s)] {
                rec.point(Point::new(now_ms, "latency_s", &[("q", name)], v));
            }
            if let Some((p50, p99)) = sample.rtt_s {
                rec.point(Point::new(now_ms, "rtt_s", &[("q", "p50")], p50));
                rec.point(Point::new(now_ms, "rtt_s", &[("q", "p99")], p99));
            }
            if last {
                for (le, n) in t.latency.buckets() {
                    rec.point(Point::new(now_ms, "latency_bucket", &[("le_us", &le.to_string())], n as f64));
                }
                rec.point(Point::new(now_ms, "latency_max_us", &[], t.latency.max().as_micros() as f64));
            }
        }
        live.rtt_interval.clear();
        sample
    }
}

impl MetricsSink for LiveMetrics {
    fn record(&self, campaign_id: &str, delta: &FanoutStats) {
        let mut state = self.state.lock().expect("live lock");
        let live = state.entry(campaign_id.to_owned()).or_default();
        live.totals.merge(delta);
        live.rtt_interval.merge(&delta.rtt);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::recorder::EventLog;

    #[test]
    fn seconds_close_once_and_the_histogram_is_kept_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Arc::new(Recorder::create(&dir.path().join("e.sqlite")).unwrap());
        let live = LiveMetrics::new(Some(rec.clone()));
        live.begin("c", 10_000);
        let mut d = FanoutStats::default();
        d.delivered(Platform::Ios, Duration::from_millis(400), 5);
        d.delivered(Platform::Android, Duration::from_millis(1500), 2);
        d.rtt.record(Duration::from_millis(3));
        live.record("c", &d);
        // At 11.2 s only second 0 may close (second 1 ends at 12.0 s).
        let s = live.sample("c", 11_400, false);
        assert_eq!(s.delivered, 7);
        assert!(s.rtt_s.is_some());
        live.sample("c", 11_500, false);
        let end = live.sample("c", 12_100, true);
        assert!(end.rtt_s.is_none(), "the interval was reset");
        rec.flush().unwrap();
        let log = EventLog::open(rec.path()).unwrap();
        let sent: Vec<_> = log.series("sent").map(|p| (p.t_ms, p.dim("platform").unwrap().to_owned(), p.value)).collect();
        assert_eq!(
            sent,
            vec![
                (10_000, "ios".into(), 5.0),
                (10_000, "android".into(), 0.0),
                (11_000, "ios".into(), 0.0),
                (11_000, "android".into(), 2.0)
            ]
        );
        let buckets: f64 = log.series("latency_bucket").map(|p| p.value).sum();
        assert_eq!(buckets, 7.0);
    }
}
