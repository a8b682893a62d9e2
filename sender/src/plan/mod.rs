//! Know before you fire: whether the campaign's target can be met within
//! the providers' quotas and with the fleet, when devices will have the
//! notification, and what the opens do to the app's backends.
//!
//! A pure model: [`PlanInput`] holds what was counted and measured (the
//! audience per platform, the workers' measured send rate, the providers'
//! quotas, the backends' capacities), [`plan`] turns it into a [`Plan`]
//! with its gates. The CLI, the runbook's `plan` step and the app call the
//! same function.
//!
//! Facts the defaults come from:
//! - FCM HTTP v1 allows 600,000 messages per minute per project by default
//!   (over it: 429 `RESOURCE_EXHAUSTED`; 4xx for dead tokens count too).
//! - APNs takes several HTTP/2 connections; each connection's stream limit
//!   comes from the server's SETTINGS (1,000 is typical).

use serde::{Deserialize, Serialize};

use crate::audience::Platform;

pub mod aws;

/// FCM's default quota: messages per minute per project.
pub const DEFAULT_FCM_QUOTA_PER_MINUTE: u64 = 600_000;
/// The providers' round trip the model assumes, in ms (uniform).
pub const DEFAULT_RTT_MS: (f64, f64) = (20.0, 60.0);
/// The resolution of the delivery and load curves.
const STEP_S: f64 = 1.0;
/// How far the load forecast looks past the last delivery.
const FORECAST_TAIL_S: f64 = 30.0 * 60.0;

/// What the plan is computed from (recorded with the plan step's result,
/// so a replay or the app redraws the plan from it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanInput {
    /// Devices per platform (iOS, Android).
    pub devices: [u64; 2],
    /// The same devices per campaign market, in the campaign's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub markets: Vec<MarketDevices>,
    /// The campaign's target: devices within seconds.
    pub target_s: Option<f64>,
    /// FCM messages per minute for the project.
    pub fcm_quota_per_minute: u64,
    /// Notifier workers the fleet will run.
    pub workers: u32,
    /// Sends per second one worker managed when measured.
    pub per_worker_rate: f64,
    /// Sends one worker keeps in flight per provider.
    pub window_per_provider: u32,
    /// The providers' round trip, ms, uniform between the two.
    pub rtt_ms: (f64, f64),
    /// Worker tasks one instance carries (to size the ASG).
    pub tasks_per_instance: u32,
    /// A paced fire: devices per second at most, both platforms together.
    pub max_rate: Option<f64>,
    /// The app's backends, with what a notification's opens cost them.
    pub backends: Vec<BackendInput>,
    /// Where APNs sends go: `production`, `sandbox`, a URL, or what stands
    /// in for APNs (stated on the plan; not part of the model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apns_environment: Option<String>,
    /// AWS mode: the queues and the fleet's groups, read from AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<aws::AwsInput>,
}

/// The devices the campaign targets in one market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketDevices {
    /// The market's code.
    pub market: String,
    /// Devices per platform (iOS, Android).
    pub devices: [u64; 2],
}

/// One backend of the app, and the traffic an open brings it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendInput {
    /// Its name (the zombie flag's).
    pub name: String,
    /// Requests per second it serves.
    pub capacity_rps: f64,
    /// Requests one open makes to it.
    pub requests_per_open: f64,
    /// Share of notified devices that open the app.
    pub open_share: f64,
    /// Mean delay from delivery to the open, seconds (exponential).
    pub open_delay_s: f64,
}

/// The ids of the plan's gates, in the order a plan lists them.
/// (`queue-limits` and `aws-capacity` in AWS mode only.)
pub const GATE_IDS: [&str; 5] = ["provider-quota", "fleet-size", "backend-load", "queue-limits", "aws-capacity"];

/// A gate of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    /// One of [`GATE_IDS`].
    pub id: &'static str,
    /// Passed.
    pub ok: bool,
    /// What was found, and what would pass it.
    pub detail: String,
    /// Failing, but accepted by the runbook for this reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<String>,
}

impl Gate {
    /// Passed, or failing and accepted.
    pub fn passes(&self) -> bool {
        self.ok || self.accepted.is_some()
    }
}

/// How one platform's send goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlatformPlan {
    /// `ios` or `android`.
    pub platform: &'static str,
    /// Devices.
    pub devices: u64,
    /// Sends per second it gets.
    pub rate_per_s: f64,
    /// Seconds to hand them all off.
    pub seconds: f64,
    /// What bounds the rate: `quota`, `window`, `cpu`, `paced` or (AWS
    /// mode) `queue`.
    pub bound: &'static str,
}

/// The forecast load on one backend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendPlan {
    /// The backend.
    pub name: String,
    /// Its capacity, requests/s.
    pub capacity_rps: f64,
    /// The forecast peak, requests/s.
    pub peak_rps: f64,
    /// When the peak comes, seconds after the fire.
    pub peak_at_s: f64,
    /// Seconds the forecast stays over capacity.
    pub over_capacity_s: f64,
    /// Zombie mode this long from the fire keeps it under capacity (its
    /// clients stop calling meanwhile), in seconds; 0 when never over.
    pub zombie_for_s: f64,
    /// A fire paced at this rate keeps it under capacity (sends/s); `None`
    /// when it is never over.
    pub paced_rate_per_s: Option<f64>,
    /// The forecast, requests/s per second after the fire.
    pub load: Vec<f64>,
}

/// The plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// What it was computed from.
    pub input: PlanInput,
    /// Per platform.
    pub platforms: Vec<PlatformPlan>,
    /// Seconds after the fire until 50, 95 and 99% of devices are delivered.
    pub p50_s: f64,
    /// 95%.
    pub p95_s: f64,
    /// 99%.
    pub p99_s: f64,
    /// Devices delivered by each second after the fire (both platforms).
    pub delivered: Vec<f64>,
    /// Per backend.
    pub backends: Vec<BackendPlan>,
    /// The gates, in order.
    pub gates: Vec<Gate>,
}

impl PlatformPlan {
    /// Bounded by what the fleet brings (CPU, windows): quotas and pacing
    /// are not, and more workers change neither.
    fn fleet_bound(&self) -> bool {
        self.bound == "cpu" || self.bound == "window"
    }
}

impl Plan {
    /// Every gate passed.
    pub fn ok(&self) -> bool {
        self.gates.iter().all(Gate::passes)
    }

    /// Accepts the failing gates named in `accept` (gate id to reason).
    pub fn accept(&mut self, accept: &std::collections::BTreeMap<String, String>) {
        for g in self.gates.iter_mut().filter(|g| !g.ok) {
            g.accepted = accept.get(g.id).cloned();
        }
    }

    /// Each platform's expected share delivered over time, percent:
    /// `(platform, [(seconds after the fire, %)])`, for platforms with
    /// devices, sampled finely enough to draw a sub-second send.
    pub fn delivery_curves(&self) -> Vec<(&'static str, Vec<(f64, f64)>)> {
        const POINTS: usize = 200;
        let rtt_s = mean_rtt_s(&self.input);
        let end = last_delivery_s(rtt_s, &self.platforms) * 1.1;
        self.platforms
            .iter()
            .filter(|p| p.devices > 0)
            .map(|p| {
                let points = (0..=POINTS)
                    .map(|k| {
                        let t = end * k as f64 / POINTS as f64;
                        (t, delivered_at(rtt_s, std::slice::from_ref(p), t) * 100.0 / p.devices as f64)
                    })
                    .collect();
                (p.platform, points)
            })
            .collect()
    }

    /// The plan without its per-second curves: what `plan --json` prints
    /// and the `plan` step records.
    pub fn summary(&self) -> serde_json::Value {
        let backends: Vec<_> = self
            .backends
            .iter()
            .map(|b| {
                serde_json::json!({
                    "name": b.name, "capacity_rps": b.capacity_rps, "peak_rps": b.peak_rps, "peak_at_s": b.peak_at_s,
                    "over_capacity_s": b.over_capacity_s, "zombie_for_s": b.zombie_for_s, "paced_rate_per_s": b.paced_rate_per_s,
                })
            })
            .collect();
        serde_json::json!({
            "ok": self.ok(),
            "gates": self.gates,
            "p50_s": self.p50_s,
            "p95_s": self.p95_s,
            "p99_s": self.p99_s,
            "platforms": self.platforms,
            "backends": backends,
            "input": self.input,
        })
    }
}

fn mean_rtt_s(input: &PlanInput) -> f64 {
    (input.rtt_ms.0 + input.rtt_ms.1) / 2.0 / 1000.0
}

/// Sends per second FCM's quota allows.
fn quota_rate(per_minute: u64) -> f64 {
    per_minute as f64 / 60.0
}

/// 1234567 -> "1,234,567" (the CLI's counts read the same).
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Each platform's rate: the smallest of what its in-flight windows carry
/// over the round trip, its quota, and its share of the workers' measured
/// CPU rate (shared in proportion to the devices, as the dispatch plan
/// interleaves them).
fn platforms(input: &PlanInput) -> Vec<PlatformPlan> {
    let total = (input.devices[0] + input.devices[1]).max(1) as f64;
    let workers = f64::from(input.workers.max(1));
    Platform::ALL
        .iter()
        .map(|&p| {
            let n = input.devices[p as usize];
            let window = workers * f64::from(input.window_per_provider.max(1)) / mean_rtt_s(input).max(1e-6);
            let cpu = workers * input.per_worker_rate.max(1e-9) * n as f64 / total;
            let quota = match p {
                Platform::Android => quota_rate(input.fcm_quota_per_minute),
                Platform::Ios => f64::INFINITY,
            };
            // A paced fire interleaves the platforms in proportion too.
            let paced = input.max_rate.map_or(f64::INFINITY, |r| r * n as f64 / total);
            // So does the queue in AWS mode.
            let queue = aws::queue_rate(input) * n as f64 / total;
            let (rate, bound) = [(quota, "quota"), (window, "window"), (cpu, "cpu"), (paced, "paced"), (queue, "queue")]
                .into_iter()
                .fold((f64::INFINITY, "cpu"), |best, (r, b)| if r < best.0 { (r, b) } else { best });
            let seconds = if n == 0 { 0.0 } else { n as f64 / rate };
            PlatformPlan { platform: p.as_str(), devices: n, rate_per_s: rate, seconds, bound }
        })
        .collect()
}

/// Devices delivered `t` seconds after the fire: each platform hands off
/// at its rate, answers come a round trip later.
fn delivered_at(rtt_s: f64, platforms: &[PlatformPlan], t: f64) -> f64 {
    let t = t - rtt_s;
    platforms.iter().map(|p| if t <= 0.0 { 0.0 } else { (p.rate_per_s * t).min(p.devices as f64) }).sum()
}

/// When the last device is delivered.
fn last_delivery_s(rtt_s: f64, platforms: &[PlatformPlan]) -> f64 {
    platforms.iter().map(|p| p.seconds).fold(0.0, f64::max) + rtt_s
}

/// Devices delivered by each second.
fn delivered_curve(rtt_s: f64, platforms: &[PlatformPlan]) -> Vec<f64> {
    let steps = (last_delivery_s(rtt_s, platforms) / STEP_S).ceil() as usize + 1;
    (0..=steps).map(|k| delivered_at(rtt_s, platforms, k as f64 * STEP_S)).collect()
}

/// The first time by which `share` of the devices are delivered.
fn time_to(rtt_s: f64, platforms: &[PlatformPlan], share: f64) -> f64 {
    let goal = share * platforms.iter().map(|p| p.devices as f64).sum::<f64>();
    if goal == 0.0 {
        return 0.0;
    }
    // Delivered(t) is piecewise linear and increasing: bisect.
    let (mut lo, mut hi) = (0.0, last_delivery_s(rtt_s, platforms));
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if delivered_at(rtt_s, platforms, mid) >= goal { hi = mid } else { lo = mid }
    }
    hi
}

/// Requests/s on `b` by second, for devices delivered at `rate` per second
/// (the curve from `delivered`), with the backend closed (zombie mode) for
/// the first `zombie_s` seconds: its clients do not call it then.
fn load(b: &BackendInput, delivered: &[f64], zombie_s: f64) -> Vec<f64> {
    let len = delivered.len() + (FORECAST_TAIL_S / STEP_S) as usize;
    let tau = b.open_delay_s.max(STEP_S);
    // Opens per second: each second's new deliveries open over an
    // exponential delay.
    let mut opens = vec![0.0; len];
    for k in 0..delivered.len() {
        let new = delivered[k] - if k == 0 { 0.0 } else { delivered[k - 1] };
        if new <= 0.0 {
            continue;
        }
        let opening = new * b.open_share;
        for (j, slot) in opens.iter_mut().enumerate().skip(k) {
            let d = (j - k) as f64 * STEP_S;
            let p = (-d / tau).exp() - (-(d + STEP_S) / tau).exp();
            *slot += opening * p / STEP_S;
            if p < 1e-9 {
                break;
            }
        }
    }
    opens.into_iter().enumerate().map(|(k, o)| if (k as f64 * STEP_S) < zombie_s { 0.0 } else { o * b.requests_per_open }).collect()
}

fn backend_plan(input: &PlanInput, b: &BackendInput, delivered: &[f64]) -> BackendPlan {
    let forecast = load(b, delivered, 0.0);
    let (peak_at, peak) = forecast.iter().enumerate().fold((0, 0.0), |best, (k, v)| if *v > best.1 { (k, *v) } else { best });
    let over = forecast.iter().filter(|v| **v > b.capacity_rps).count() as f64 * STEP_S;
    let zombie_for_s = forecast.iter().rposition(|v| *v > b.capacity_rps).map_or(0.0, |k| (k + 1) as f64 * STEP_S);
    let paced_rate_per_s = (over > 0.0).then(|| paced_rate(input, b));
    BackendPlan {
        name: b.name.clone(),
        capacity_rps: b.capacity_rps,
        peak_rps: peak,
        peak_at_s: peak_at as f64 * STEP_S,
        over_capacity_s: over,
        zombie_for_s,
        paced_rate_per_s,
        load: forecast,
    }
}

/// The highest send rate whose forecast stays under `b`'s capacity.
fn paced_rate(input: &PlanInput, b: &BackendInput) -> f64 {
    let total = (input.devices[0] + input.devices[1]) as f64;
    let peak_at = |rate: f64| -> f64 {
        let secs = (total / rate / STEP_S).ceil() as usize + 1;
        let delivered: Vec<f64> = (0..=secs).map(|k| (rate * k as f64 * STEP_S).min(total)).collect();
        load(b, &delivered, 0.0).into_iter().fold(0.0, f64::max)
    };
    // At the steady state a fire at rate r brings r x share x requests per
    // open: the peak never exceeds it, so that rate always passes.
    let steady = b.capacity_rps / (b.open_share * b.requests_per_open).max(1e-12);
    let (mut lo, mut hi) = (steady.min(total).max(1.0), total.max(1.0));
    for _ in 0..40 {
        let mid = (lo * hi).sqrt();
        if peak_at(mid) <= b.capacity_rps { lo = mid } else { hi = mid }
    }
    lo.floor()
}

/// The plan for `input`.
pub fn plan(input: PlanInput) -> Plan {
    let platforms = platforms(&input);
    let rtt_s = mean_rtt_s(&input);
    let delivered = delivered_curve(rtt_s, &platforms);
    let [p50_s, p95_s, p99_s] = [0.50, 0.95, 0.99].map(|share| time_to(rtt_s, &platforms, share));
    let backends: Vec<BackendPlan> = input.backends.iter().map(|b| backend_plan(&input, b, &delivered)).collect();
    let mut gates = Vec::new();
    let target = input.target_s;
    // Provider quota: FCM's messages per minute.
    let android = &platforms[Platform::Android as usize];
    let quota_s = android.devices as f64 / quota_rate(input.fcm_quota_per_minute).max(1e-9);
    gates.push(match target {
        Some(t) if quota_s > t => Gate {
            id: "provider-quota",
            ok: false,
            accepted: None,
            detail: format!(
                "FCM: {} Android devices at {}/min take about {:.0} s, over the {t:.0} s target; a quota of {}/min would meet it",
                group(android.devices),
                group(input.fcm_quota_per_minute),
                quota_s,
                group((android.devices as f64 / t * 60.0).ceil() as u64)
            ),
        },
        _ => Gate {
            id: "provider-quota",
            ok: true,
            accepted: None,
            detail: format!(
                "FCM: {} Android devices at {}/min take about {:.1} s{}",
                group(android.devices),
                group(input.fcm_quota_per_minute),
                quota_s,
                target.map(|t| format!(", within the {t:.0} s target")).unwrap_or_default()
            ),
        },
    });
    // Fleet size: the workers' measured rate, and their windows.
    let slowest = platforms.iter().filter(|p| p.fleet_bound()).map(|p| p.seconds).fold(0.0, f64::max);
    gates.push(match target {
        Some(t) if slowest > t => {
            let workers = needed_workers(&input, t);
            let instances = workers.div_ceil(input.tasks_per_instance.max(1));
            Gate {
                id: "fleet-size",
                ok: false,
                accepted: None,
                detail: format!(
                    "{} workers take about {slowest:.1} s, over the {t:.0} s target; {workers} workers ({instances} instances at {} per instance) would meet it",
                    input.workers,
                    input.tasks_per_instance.max(1)
                ),
            }
        }
        _ => Gate {
            id: "fleet-size",
            ok: true,
            accepted: None,
            detail: format!(
                "{} workers at {:.0} sends/s each: about {slowest:.1} s to hand off{}",
                input.workers,
                input.per_worker_rate,
                target.map(|t| format!(", within the {t:.0} s target")).unwrap_or_default()
            ),
        },
    });
    let over: Vec<&BackendPlan> = backends.iter().filter(|b| b.over_capacity_s > 0.0).collect();
    gates.push(if over.is_empty() {
        Gate {
            id: "backend-load",
            ok: true,
            accepted: None,
            detail: if backends.is_empty() {
                "no backends declared".to_owned()
            } else {
                backends.iter().map(|b| format!("{}: peak {:.0} of {:.0} req/s", b.name, b.peak_rps, b.capacity_rps)).collect::<Vec<_>>().join("; ")
            },
        }
    } else {
        Gate {
            id: "backend-load",
            ok: false,
            accepted: None,
            detail: over
                .iter()
                .map(|b| {
                    format!(
                        "{}: peak {:.0} req/s at {:.0} s against {:.0}, over for {:.0} s; zombie mode for {:.0} s or a fire paced at {:.0}/s keeps it under",
                        b.name,
                        b.peak_rps,
                        b.peak_at_s,
                        b.capacity_rps,
                        b.over_capacity_s,
                        b.zombie_for_s,
                        b.paced_rate_per_s.unwrap_or(0.0)
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        }
    });
    gates.extend(aws::gates(&input));
    Plan { input, platforms, p50_s, p95_s, p99_s, delivered, backends, gates }
}

/// The fewest workers whose windows and CPU hand everything off within
/// `target_s` (quotas aside: more workers do not raise them).
fn needed_workers(input: &PlanInput, target_s: f64) -> u32 {
    (input.workers.max(1)..=100_000)
        .find(|&w| platforms(&PlanInput { workers: w, ..input.clone() }).iter().filter(|p| p.fleet_bound()).all(|p| p.seconds <= target_s))
        .unwrap_or(100_000)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plan's input for tests: 2 workers at 50,000/s, a 5 s target.
    pub(crate) fn input(ios: u64, android: u64) -> PlanInput {
        PlanInput {
            devices: [ios, android],
            markets: Vec::new(),
            target_s: Some(5.0),
            fcm_quota_per_minute: DEFAULT_FCM_QUOTA_PER_MINUTE,
            workers: 2,
            per_worker_rate: 50_000.0,
            window_per_provider: 4000,
            rtt_ms: DEFAULT_RTT_MS,
            tasks_per_instance: 2,
            max_rate: None,
            backends: Vec::new(),
            apns_environment: None,
            aws: None,
        }
    }

    #[test]
    fn a_paced_fire_shares_its_rate_between_the_platforms_and_is_not_the_fleets_fault() {
        let p = plan(PlanInput { max_rate: Some(10_000.0), fcm_quota_per_minute: 100_000_000, ..input(600_000, 400_000) });
        assert_eq!((p.platforms[0].bound, p.platforms[1].bound), ("paced", "paced"));
        assert!((p.platforms[0].rate_per_s - 6_000.0).abs() < 1e-6 && (p.platforms[1].rate_per_s - 4_000.0).abs() < 1e-6);
        // 1M devices at 10,000/s: 100 s, over the 5 s target, but no worker count helps.
        assert!((p.p99_s - 99.04).abs() < 0.1, "{}", p.p99_s);
        assert!(gate(&p, "fleet-size").ok, "{:?}", p.gates);
    }

    fn gate<'a>(p: &'a Plan, id: &str) -> &'a Gate {
        p.gates.iter().find(|g| g.id == id).unwrap()
    }

    #[test]
    fn the_fcm_quota_fails_a_five_second_target_for_1_6m_android_devices() {
        let p = plan(input(2_400_000, 1_600_000));
        let g = gate(&p, "provider-quota");
        assert!(!g.ok, "{g:?}");
        assert!(g.detail.contains("about 160 s"), "{}", g.detail);
        assert_eq!(p.platforms[1].bound, "quota");
        let p = plan(PlanInput { fcm_quota_per_minute: 100_000_000, ..input(2_400_000, 1_600_000) });
        assert!(gate(&p, "provider-quota").ok, "{:?}", p.gates);
    }

    #[test]
    fn the_fleet_gate_names_the_workers_and_instances_the_target_needs() {
        // 4M devices at 50k/s per worker: 2 workers take 40 s.
        let p = plan(PlanInput { fcm_quota_per_minute: 100_000_000, ..input(2_400_000, 1_600_000) });
        let g = gate(&p, "fleet-size");
        assert!(!g.ok, "{g:?}");
        assert!(g.detail.contains("16 workers (8 instances"), "{}", g.detail);
        let p = plan(PlanInput { fcm_quota_per_minute: 100_000_000, workers: 16, ..input(2_400_000, 1_600_000) });
        assert!(gate(&p, "fleet-size").ok, "{:?}", p.gates);
    }

    #[test]
    fn the_percentiles_follow_the_larger_share_and_the_round_trip() {
        // Window-bound: 2 workers x 4000 in flight / 40 ms = 200k/s each.
        let p = plan(PlanInput { per_worker_rate: 1e9, fcm_quota_per_minute: u64::MAX / 2, ..input(600_000, 400_000) });
        assert_eq!(p.platforms[0].bound, "window");
        assert!((p.platforms[0].seconds - 3.0).abs() < 1e-6, "{:?}", p.platforms);
        assert!((p.platforms[1].seconds - 2.0).abs() < 1e-6, "{:?}", p.platforms);
        assert!(p.p50_s < p.p95_s && p.p95_s < p.p99_s && p.p99_s <= 3.04 + 1e-6, "{p:?}");
        // Half the devices by 1.29 s: 400k/s for both, then iOS alone.
        assert!((p.p50_s - 1.29).abs() < 0.01, "{}", p.p50_s);
    }

    #[test]
    fn the_backend_forecast_finds_the_peak_and_its_remedies() {
        let api = BackendInput { name: "api".into(), capacity_rps: 3000.0, requests_per_open: 20.0, open_share: 0.05, open_delay_s: 60.0 };
        let p = plan(PlanInput { backends: vec![api.clone()], fcm_quota_per_minute: 100_000_000, ..input(600_000, 400_000) });
        let b = &p.backends[0];
        // 1M x 5% x 20 / 60 s: about 16,600 req/s right after the send.
        assert!(b.peak_rps > 14_000.0 && b.peak_rps < 17_000.0, "{}", b.peak_rps);
        assert!(b.over_capacity_s > 60.0 && b.zombie_for_s >= b.over_capacity_s, "{b:?}");
        assert!(!gate(&p, "backend-load").ok);
        // The remedies hold: zombie mode for that long, or the paced rate.
        let delivered = &p.delivered;
        assert!(load(&api, delivered, b.zombie_for_s).iter().all(|v| *v <= api.capacity_rps));
        let rate = b.paced_rate_per_s.unwrap();
        // Steady state: rate x 5% x 20 = capacity.
        assert!((rate - 3000.0).abs() / 3000.0 < 0.1, "{rate}");
        let big = BackendInput { capacity_rps: 1e9, ..api };
        let p = plan(PlanInput { backends: vec![big], ..input(600_000, 400_000) });
        assert!(gate(&p, "backend-load").ok && p.backends[0].paced_rate_per_s.is_none());
    }

    #[test]
    fn counts_read_with_separators() {
        assert_eq!(group(1_600_000), "1,600,000");
        assert_eq!(group(600), "600");
        assert_eq!(group(0), "0");
    }
}
