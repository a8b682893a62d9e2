//! CloudWatch: the workers' counts as 1-second points, and reading them back.
//!
//! Workers put `Delivered` (dimensions `Campaign`, `Platform`) stamped with
//! the second of the fire they fell in, and `Failed` (`Campaign`, `Reason`)
//! stamped when counted. Points are summed per second in memory and put once
//! a second, up to 1,000 to a call, at storage resolution 1. The app reads
//! them with GetMetricData (period 1 s) for its live charts and to import an
//! event into the flight recorder.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricDatum, MetricStat, StandardUnit};

use super::AwsError;
use crate::audience::Platform;
use crate::metrics::{FanoutStats, MetricsSink};
use crate::push::FailReason;

/// Points not yet put: (metric, campaign, dimension value, second) -> count.
type Pending = BTreeMap<(&'static str, String, String, u64), f64>;

/// The workers' metrics sink.
#[derive(Debug)]
pub struct CloudWatchSink {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
    fired_at_s: Mutex<BTreeMap<String, u64>>,
    pending: Mutex<Pending>,
}

impl CloudWatchSink {
    /// A sink whose points a task on the current runtime puts every second
    /// into `namespace`; the task ends when the sink is dropped.
    pub fn start(client: aws_sdk_cloudwatch::Client, namespace: String) -> Arc<Self> {
        let sink = Arc::new(Self { client, namespace, fired_at_s: Mutex::default(), pending: Mutex::default() });
        let weak = Arc::downgrade(&sink);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(sink) = weak.upgrade() else { return };
                if let Err(e) = sink.flush().await {
                    tracing::warn!(error = %e, "CloudWatch points not put yet; kept for the next second");
                }
            }
        });
        sink
    }

    /// Sets the fire time of `campaign_id` (ms since the epoch): delivery
    /// counts are stamped from it.
    pub fn begin(&self, campaign_id: &str, fired_at_ms: u64) {
        self.fired_at_s.lock().expect("metrics lock").insert(campaign_id.to_owned(), fired_at_ms / 1000);
    }

    /// Puts what is pending now (every second, and at shutdown). Points a
    /// failed call did not put are kept for the next flush.
    pub async fn flush(&self) -> Result<(), AwsError> {
        let batch = std::mem::take(&mut *self.pending.lock().expect("metrics lock"));
        let (result, unsent) = put(&self.client, &self.namespace, batch).await;
        if !unsent.is_empty() {
            let mut p = self.pending.lock().expect("metrics lock");
            for (key, n) in unsent {
                *p.entry(key).or_default() += n;
            }
        }
        result
    }
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl MetricsSink for CloudWatchSink {
    fn record(&self, campaign_id: &str, delta: &FanoutStats) {
        let base = self.fired_at_s.lock().expect("metrics lock").get(campaign_id).copied().unwrap_or_else(now_s);
        let mut p = self.pending.lock().expect("metrics lock");
        for (second, counts) in delta.delivered_per_second.iter().enumerate() {
            for platform in Platform::ALL {
                let n = counts[platform as usize];
                if n > 0 {
                    *p.entry(("Delivered", campaign_id.to_owned(), platform.as_str().to_owned(), base + second as u64)).or_default() +=
                        n as f64;
                }
            }
        }
        let now = now_s();
        for reason in FailReason::ALL {
            let n = delta.failed[reason.index()];
            if n > 0 {
                *p.entry(("Failed", campaign_id.to_owned(), reason.as_str().to_owned(), now)).or_default() += n as f64;
            }
        }
    }
}

/// Puts `batch`, up to 1,000 points to a call; returns the points of the
/// calls that failed, with the first failure.
async fn put(client: &aws_sdk_cloudwatch::Client, namespace: &str, batch: Pending) -> (Result<(), AwsError>, Pending) {
    let points: Vec<_> = batch.into_iter().collect();
    let mut result = Ok(());
    let mut unsent = Pending::new();
    for chunk in points.chunks(1000) {
        let data: Vec<MetricDatum> = chunk
            .iter()
            .map(|((metric, campaign, value, second), n)| {
                let dim = if *metric == "Delivered" { "Platform" } else { "Reason" };
                MetricDatum::builder()
                    .metric_name(*metric)
                    .dimensions(Dimension::builder().name("Campaign").value(campaign).build())
                    .dimensions(Dimension::builder().name(dim).value(value).build())
                    .timestamp(DateTime::from_secs(*second as i64))
                    .value(*n)
                    .unit(StandardUnit::Count)
                    .storage_resolution(1)
                    .build()
            })
            .collect();
        if let Err(e) = client.put_metric_data().namespace(namespace).set_metric_data(Some(data)).send().await {
            unsent.extend(chunk.iter().cloned());
            if result.is_ok() {
                result = Err(AwsError::call("CloudWatch", "PutMetricData", e));
            }
        }
    }
    (result, unsent)
}

/// A fire's deliveries per second, read back from CloudWatch.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Series {
    /// Second (since the epoch) -> `[ios, android]` delivered.
    pub delivered: BTreeMap<u64, [u64; 2]>,
}

impl Series {
    /// Delivered in all.
    pub fn total(&self) -> u64 {
        self.delivered.values().map(|v| v[0] + v[1]).sum()
    }

    /// As the engine's per-second counts since `fired_at_s`.
    pub fn to_stats(&self, fired_at_s: u64) -> FanoutStats {
        let mut stats = FanoutStats::default();
        for (&second, counts) in &self.delivered {
            let since = Duration::from_secs(second.saturating_sub(fired_at_s));
            for platform in Platform::ALL {
                let n = counts[platform as usize];
                if n > 0 {
                    stats.delivered(platform, since, n);
                }
            }
        }
        stats
    }
}

/// Reads `Delivered` of `campaign_id` per second in `[from, to)`.
///
/// The query names the namespace; CloudWatch filters by it (the emulator
/// used by the tests does not, so test campaigns use unique ids).
pub async fn read_delivered(
    client: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    campaign_id: &str,
    from: SystemTime,
    to: SystemTime,
) -> Result<Series, AwsError> {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let queries: Vec<MetricDataQuery> = Platform::ALL
        .iter()
        .map(|p| {
            let metric = Metric::builder()
                .namespace(namespace)
                .metric_name("Delivered")
                .dimensions(Dimension::builder().name("Campaign").value(campaign_id).build())
                .dimensions(Dimension::builder().name("Platform").value(p.as_str()).build())
                .build();
            MetricDataQuery::builder()
                .id(format!("d{}", *p as usize))
                .metric_stat(MetricStat::builder().metric(metric).period(1).stat("Sum").build())
                .return_data(true)
                .build()
        })
        .collect();
    let mut series = Series::default();
    let mut pages = client
        .get_metric_data()
        .set_metric_data_queries(Some(queries))
        .start_time(DateTime::from_secs(secs(from)))
        .end_time(DateTime::from_secs(secs(to)))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::call("CloudWatch", "GetMetricData", e))?;
        for r in page.metric_data_results() {
            let platform = if r.id() == Some("d1") { 1 } else { 0 };
            for (t, v) in r.timestamps().iter().zip(r.values()) {
                series.delivered.entry(t.secs() as u64).or_default()[platform] += *v as u64;
            }
        }
    }
    Ok(series)
}
