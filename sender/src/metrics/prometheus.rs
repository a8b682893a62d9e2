//! Prometheus' text exposition format (0.0.4) of what a process sends, for
//! teams that scrape metrics rather than read CloudWatch.
//!
//! [`PromSink`] is a [`MetricsSink`] that keeps the totals of every
//! campaign this process sent (delivered per platform, failures by reason,
//! the delivery-time and provider round-trip histograms, hand-offs, retries
//! and throttles); [`Tee`] puts it beside the sink a mode already has.
//! [`render`] writes those totals as one page, and [`serve`] answers
//! `GET /metrics` with it.
//!
//! Histogram buckets come from [`LatencyHistogram`]'s log-linear buckets:
//! a sample counts towards the first `le` bound at or above its bucket's
//! upper edge (under 1.6% above the sample), and `_sum` adds those upper
//! edges, so both lean slow, never fast.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::{FanoutStats, LatencyHistogram, MetricsSink};
use crate::push::FailReason;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds of the latency histograms, in seconds.
pub const BUCKETS_SECONDS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 10.0, 30.0, 60.0];

/// Totals across every campaign, for the exposition.
#[derive(Debug, Default)]
pub struct PromSink {
    totals: Mutex<FanoutStats>,
}

impl PromSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// The totals so far.
    pub fn totals(&self) -> FanoutStats {
        self.totals.lock().expect("prometheus totals lock").clone()
    }

    /// Answers `GET /metrics` on `addr` with these totals, from a task of
    /// the current runtime (it ends with the runtime). Returns the address
    /// bound.
    pub async fn listen(self: Arc<Self>, addr: std::net::SocketAddr) -> std::io::Result<std::net::SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        tracing::info!(%bound, "Prometheus metrics on /metrics");
        tokio::spawn(serve(listener, Arc::new(move || render(&self.totals())), std::future::pending()));
        Ok(bound)
    }
}

impl MetricsSink for PromSink {
    fn record(&self, _campaign_id: &str, delta: &FanoutStats) {
        self.totals.lock().expect("prometheus totals lock").merge(delta);
    }
}

/// Reports to two sinks.
#[derive(Debug)]
pub struct Tee(pub Arc<dyn MetricsSink>, pub Arc<dyn MetricsSink>);

impl MetricsSink for Tee {
    fn record(&self, campaign_id: &str, delta: &FanoutStats) {
        self.0.record(campaign_id, delta);
        self.1.record(campaign_id, delta);
    }
}

/// Writes metric families in the text format.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A counter with one sample per label set.
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(&[(&str, &str)], u64)]) {
        self.family(name, "counter", help);
        for (labels, v) in samples {
            self.sample(name, labels, v);
        }
    }

    /// A gauge with one sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    /// A histogram of `h` over [`BUCKETS_SECONDS`].
    pub fn histogram(&mut self, name: &str, help: &str, h: &LatencyHistogram) {
        self.family(name, "histogram", help);
        let buckets: Vec<(u64, u64)> = h.buckets().collect();
        let bucket = format!("{name}_bucket");
        for bound in BUCKETS_SECONDS {
            let bound_us = (bound * 1e6) as u64;
            let n: u64 = buckets.iter().filter(|(upper, _)| *upper <= bound_us).map(|(_, n)| n).sum();
            self.sample(&bucket, &[("le", &format!("{bound}"))], n);
        }
        self.sample(&bucket, &[("le", "+Inf")], h.count());
        let sum_us: u128 = buckets.iter().map(|&(upper, n)| u128::from(upper) * u128::from(n)).sum();
        self.sample(&format!("{name}_sum"), &[], format!("{:.6}", sum_us as f64 / 1e6));
        self.sample(&format!("{name}_count"), &[], h.count());
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The page for a sender: `stats`, a [`PromSink`]'s totals.
pub fn render(stats: &FanoutStats) -> String {
    let mut e = Exposition::default();
    e.counter("kickoff_handed_off_total", "Devices handed to a provider for the first time.", &[(&[], stats.handed_off)]);
    let (ios, android) = (stats.delivered_total(crate::audience::Platform::Ios), stats.delivered_total(crate::audience::Platform::Android));
    e.counter(
        "kickoff_delivered_total",
        "Notifications the provider accepted, by platform.",
        &[(&[("platform", "ios")], ios), (&[("platform", "android")], android)],
    );
    let reasons: Vec<(&'static str, u64)> = FailReason::ALL.iter().map(|r| (r.as_str(), stats.failed[r.index()])).collect();
    let labels: Vec<[(&str, &str); 1]> = reasons.iter().map(|(r, _)| [("reason", *r)]).collect();
    let samples: Vec<(&[(&str, &str)], u64)> = labels.iter().zip(&reasons).map(|(l, (_, n))| (&l[..], *n)).collect();
    e.counter("kickoff_failed_total", "Notifications that failed for good, by reason.", &samples);
    e.counter("kickoff_retries_total", "Sends again after a retryable answer (429, 5xx, a lost connection).", &[(&[], stats.retried)]);
    e.counter("kickoff_throttled_total", "Provider answers that were throttles (429).", &[(&[], stats.throttled)]);
    e.gauge(
        "kickoff_outstanding",
        "Devices handed off without a final answer yet (in flight or waiting for a retry).",
        stats.outstanding(),
    );
    e.histogram("kickoff_delivery_seconds", "Time from the fire to the provider's acknowledgment.", &stats.latency);
    e.histogram("kickoff_provider_latency_seconds", "Provider round trips (request to answer), sampled.", &stats.rtt);
    e.finish()
}

/// Answers `GET /metrics` on `listener` with `page()` until `shutdown`
/// resolves; anything else is 404.
pub async fn serve(
    listener: tokio::net::TcpListener,
    page: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let page = page.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let page = page.clone();
                async move { Ok::<_, Infallible>(answer(&req, &*page)) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn answer(req: &Request<Incoming>, page: &(dyn Fn() -> String + Send + Sync)) -> Response<Full<Bytes>> {
    let mut response = if req.method() == Method::GET && req.uri().path() == "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from(page())));
        r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(CONTENT_TYPE));
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"GET /metrics\n")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    };
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audience::Platform;

    #[test]
    fn the_page_counts_every_delivery_and_failure_and_buckets_cumulatively() {
        let sink = PromSink::new();
        let mut d = FanoutStats::default();
        d.delivered(Platform::Ios, Duration::from_millis(3), 2);
        d.delivered(Platform::Android, Duration::from_millis(700), 1);
        d.failed(FailReason::Unregistered);
        d.rtt.record(Duration::from_millis(20));
        (d.handed_off, d.retried, d.throttled) = (5, 2, 1);
        sink.record("a", &d);
        sink.record("b", &d);
        let page = render(&sink.totals());
        for line in [
            "kickoff_delivered_total{platform=\"ios\"} 4",
            "kickoff_delivered_total{platform=\"android\"} 2",
            "kickoff_failed_total{reason=\"unregistered\"} 2",
            "kickoff_handed_off_total 10",
            "kickoff_retries_total 4",
            "kickoff_throttled_total 2",
            "kickoff_outstanding 2",
            "kickoff_delivery_seconds_bucket{le=\"0.005\"} 4",
            "kickoff_delivery_seconds_bucket{le=\"0.5\"} 4",
            "kickoff_delivery_seconds_bucket{le=\"1\"} 6",
            "kickoff_delivery_seconds_bucket{le=\"+Inf\"} 6",
            "kickoff_delivery_seconds_count 6",
            "kickoff_provider_latency_seconds_bucket{le=\"0.025\"} 2",
            "# TYPE kickoff_provider_latency_seconds histogram",
        ] {
            assert!(page.lines().any(|l| l == line), "{line} missing from\n{page}");
        }
        // Every sample line is `name[{labels}] value`, every family typed once.
        let types = page.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let names: std::collections::BTreeSet<&str> =
            page.lines().filter(|l| l.starts_with("# TYPE ")).map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(types, names.len());
        for l in page.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::default();
        e.counter("x_total", "X.", &[(&[("k", "a\"b\\c\nd")], 1)]);
        assert!(e.finish().contains("x_total{k=\"a\\\"b\\\\c\\nd\"} 1"));
    }
}
