//! Reading an event back: its summary (computed from the recorded points,
//! so a replay checks the live run rather than repeating it), the steps'
//! planned and actual times, and one frame per second for playback.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{AuditEntry, EventLog};
use crate::metrics::LatencyHistogram;

/// What an event delivered. The live run writes its own to the recorder
/// (`meta.summary`); [`summarize`] recomputes it from the points.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventSummary {
    /// The campaign.
    pub campaign_id: String,
    /// Its content hash.
    pub campaign_hash: String,
    /// Devices targeted.
    pub devices: u64,
    /// Acknowledged by the providers.
    pub delivered: u64,
    /// Refused or failed.
    pub failed: u64,
    /// Deliveries beyond the first per device, counted at the receiver.
    pub duplicates: u64,
    /// Neither delivered nor failed.
    pub missing: u64,
    /// Delivery time percentiles (fire to acknowledgment), seconds.
    pub p50_s: f64,
    /// p95.
    pub p95_s: f64,
    /// p99.
    pub p99_s: f64,
    /// Slowest.
    pub max_s: f64,
    /// Failures by reason.
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Who pressed fire.
    pub fired_by: Option<String>,
    /// When (ms since the epoch).
    pub fired_at_ms: Option<u64>,
}

/// The last value of each `dims` of the series `name`.
fn last_by_dims(log: &EventLog, name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for p in log.series(name) {
        out.insert(p.dims.clone(), p.value);
    }
    out
}

/// The fire's audit entry, if there was one.
pub fn fire_entry(log: &EventLog) -> Option<&AuditEntry> {
    log.audit.iter().find(|a| a.action == "fire" && a.outcome == "ok")
}

/// The summary, from the recorded points.
pub fn summarize(log: &EventLog) -> EventSummary {
    let num = |k: &str| log.meta.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let delivered = log.series("sent").map(|p| p.value).sum::<f64>() as u64;
    let failed_by_reason: BTreeMap<String, u64> = last_by_dims(log, "failed_total")
        .into_iter()
        .filter_map(|(dims, v)| dims.strip_prefix("reason=").map(|r| (r.to_owned(), v as u64)))
        .collect();
    let failed = failed_by_reason.values().fold(0u64, |a, v| a.saturating_add(*v));
    // The histogram recorded at the end of the fire.
    let last_t = log.series("latency_bucket").map(|p| p.t_ms).max();
    let buckets = log
        .series("latency_bucket")
        .filter(|p| Some(p.t_ms) == last_t)
        .filter_map(|p| Some((p.dim("le_us")?.parse::<u64>().ok()?, p.value as u64)));
    let max_us = log.series("latency_max_us").last().map_or(0, |p| p.value as u64);
    let h = LatencyHistogram::from_buckets(buckets, max_us);
    let devices = num("targeted");
    let fire = fire_entry(log);
    EventSummary {
        campaign_id: log.meta.get("campaign_id").cloned().unwrap_or_default(),
        campaign_hash: log.meta.get("campaign_hash").cloned().unwrap_or_default(),
        devices,
        delivered,
        failed,
        duplicates: log.series("receiver_duplicates").last().map_or(0, |p| p.value as u64),
        missing: devices.saturating_sub(delivered.saturating_add(failed)),
        p50_s: h.quantile(0.5).as_secs_f64(),
        p95_s: h.quantile(0.95).as_secs_f64(),
        p99_s: h.quantile(0.99).as_secs_f64(),
        max_s: h.max().as_secs_f64(),
        failed_by_reason,
        fired_by: fire.map(|a| a.actor.clone()),
        fired_at_ms: fire.map(|a| a.t_ms),
    }
}

/// The summary the live run recorded, if it got that far.
pub fn live_summary(log: &EventLog) -> Option<EventSummary> {
    serde_json::from_str(log.meta.get("summary")?).ok()
}

/// A step's plan and what happened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepTiming {
    /// Step id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Planned time (`T-30m`), if any.
    pub planned: Option<String>,
    /// Planned start, ms since the epoch (needs the event time).
    pub planned_ms: Option<u64>,
    /// Started.
    pub started_ms: Option<u64>,
    /// Finished (done, failed or skipped).
    pub finished_ms: Option<u64>,
    /// How it ended.
    pub outcome: String,
    /// Who acted last.
    pub by: Option<String>,
}

/// Each step's planned and actual times, from the runbook recorded in
/// `meta.runbook` and the audit log.
pub fn step_timings(log: &EventLog) -> Vec<StepTiming> {
    #[derive(serde::Deserialize)]
    struct PlanStep {
        id: String,
        title: String,
        at: Option<String>,
        at_ms: Option<u64>,
    }
    let plan: Vec<PlanStep> = log.meta.get("runbook_plan").and_then(|p| serde_json::from_str(p).ok()).unwrap_or_default();
    plan.into_iter()
        .map(|s| {
            let entries: Vec<&AuditEntry> = log.audit.iter().filter(|a| a.step == s.id).collect();
            let started = entries.iter().find(|a| a.action == "start").map(|a| a.t_ms);
            let end = entries.iter().rev().find(|a| matches!(a.action.as_str(), "done" | "fail" | "skip"));
            StepTiming {
                id: s.id,
                title: s.title,
                planned: s.at,
                planned_ms: s.at_ms,
                started_ms: started,
                finished_ms: end.map(|a| a.t_ms),
                outcome: end.map_or_else(|| "not reached".to_owned(), |a| a.action.clone()),
                by: entries.last().map(|a| a.actor.clone()),
            }
        })
        .collect()
}

/// One second of playback.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Frame {
    /// Start of the second, ms since the epoch.
    pub t_ms: u64,
    /// Seconds since the fire (negative before it), or since the start.
    pub offset_s: f64,
    /// Delivered in this second, `[ios, android]`.
    pub sent: [u64; 2],
    /// Delivered so far.
    pub delivered: u64,
    /// Share of devices delivered so far, percent.
    pub delivered_pct: f64,
    /// Failures so far.
    pub failed: u64,
    /// Fleet counts at this second (`asg_running`, `ecs_running`, ...).
    pub fleet: BTreeMap<String, u64>,
    /// Backends in zombie mode.
    pub zombies: Vec<String>,
    /// What operators did in this second.
    pub actions: Vec<AuditEntry>,
}

/// The time everything is measured from: the fire, else the first record.
pub fn origin_ms(log: &EventLog) -> u64 {
    fire_entry(log).map(|a| a.t_ms).or_else(|| log.span_ms().map(|s| s.0)).unwrap_or(0)
}

/// Parses a replay bound: `T+30s` / `T-5m` (relative to the fire or the
/// start), `+30s` (relative to the start of the recording), or RFC 3339.
pub fn parse_time(s: &str, log: &EventLog) -> Result<u64, TimeError> {
    let bad = |e: &dyn std::fmt::Display| TimeError { text: s.to_owned(), why: e.to_string() };
    let rel = |origin: u64, sign: char, d: &str| -> Result<u64, TimeError> {
        let d = u64::try_from(humantime::parse_duration(d.trim()).map_err(|e| bad(&e))?.as_millis()).unwrap_or(u64::MAX);
        Ok(if sign == '-' { origin.saturating_sub(d) } else { origin.saturating_add(d) })
    };
    if let Some(rest) = s.strip_prefix('T').or_else(|| s.strip_prefix('t')) {
        let sign = rest.chars().next().ok_or_else(|| bad(&"empty offset"))?;
        if sign != '+' && sign != '-' {
            return Err(bad(&"expected + or - after T"));
        }
        return rel(origin_ms(log), sign, &rest[1..]);
    }
    if let Some(rest) = s.strip_prefix('+') {
        return rel(log.span_ms().map_or(0, |x| x.0), '+', rest);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| bad(&e))?;
    Ok(crate::clock::ms(t))
}

/// A replay bound that is not a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a time like T+30s, T-5m, +10s or 2026-11-26T20:00:00Z: {why}")]
pub struct TimeError {
    /// What was given.
    pub text: String,
    /// Why it is not a time.
    pub why: String,
}

/// The longest stretch a replay covers: a recording whose times span more
/// (a damaged or hand-edited file) is replayed for its first 48 hours.
pub const MAX_REPLAY_FRAMES: i64 = 48 * 3600;

/// One frame per second from `from_ms` to `to_ms` (the whole event when
/// `None`), at most [`MAX_REPLAY_FRAMES`] of them.
pub fn frames(log: &EventLog, from_ms: Option<u64>, to_ms: Option<u64>) -> Vec<Frame> {
    let Some((lo, hi)) = log.span_ms() else { return Vec::new() };
    let clamp = |ms: u64| ms.min(i64::MAX as u64 / 2) as i64;
    let origin = clamp(origin_ms(log));
    // Align seconds to the fire.
    let first = origin - ((origin - clamp(lo).min(origin)) + 999) / 1000 * 1000;
    let from = from_ms.map_or(first, clamp).max(first);
    let to = clamp(to_ms.unwrap_or(hi)).min(from.saturating_add((MAX_REPLAY_FRAMES - 1) * 1000));
    let devices = log.meta.get("targeted").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let mut out = Vec::new();
    // The first frame shown: whole seconds after `first`, so a late `from`
    // does not walk every second before it.
    let mut t = first + (from - first) / 1000 * 1000;
    let (mut delivered, mut failed_now) = (0u64, BTreeMap::<String, u64>::new());
    let mut fleet = BTreeMap::new();
    let mut zombie = BTreeMap::<String, bool>::new();
    let (mut pi, mut ai) = (0usize, 0usize);
    let mut take_points = |until: i64, sent: &mut [u64; 2], pi: &mut usize| {
        while *pi < log.points.len() && clamp(log.points[*pi].t_ms) < until {
            let p = &log.points[*pi];
            match p.name.as_str() {
                "sent" => {
                    let i = usize::from(p.dim("platform") == Some("android"));
                    // Saturating: a damaged file may hold any number.
                    sent[i] = sent[i].saturating_add(p.value as u64);
                    delivered = delivered.saturating_add(p.value as u64);
                }
                "failed_total" => {
                    failed_now.insert(p.dims.clone(), p.value as u64);
                }
                "zombie" => {
                    zombie.insert(p.dim("backend").unwrap_or_default().to_owned(), p.value > 0.0);
                }
                n if n.starts_with("asg_") || n.starts_with("ecs_") => {
                    fleet.insert(n.to_owned(), p.value as u64);
                }
                _ => {}
            }
            *pi += 1;
        }
        (
            delivered,
            failed_now.values().fold(0u64, |a, v| a.saturating_add(*v)),
            fleet.clone(),
            zombie.iter().filter(|(_, on)| **on).map(|(b, _)| b.clone()).collect(),
        )
    };
    // What happened before the first frame counts in its running totals.
    take_points(t, &mut [0; 2], &mut pi);
    while ai < log.audit.len() && clamp(log.audit[ai].t_ms) < t {
        ai += 1;
    }
    while t <= to {
        let end = t + 1000;
        let mut sent = [0u64; 2];
        let (delivered, failed, fleet, zombies) = take_points(end, &mut sent, &mut pi);
        let mut actions = Vec::new();
        while ai < log.audit.len() && clamp(log.audit[ai].t_ms) < end {
            actions.push(log.audit[ai].clone());
            ai += 1;
        }
        out.push(Frame {
            t_ms: t.max(0) as u64,
            offset_s: (t - origin) as f64 / 1000.0,
            sent,
            delivered,
            delivered_pct: if devices > 0 { delivered as f64 * 100.0 / devices as f64 } else { 0.0 },
            failed,
            fleet,
            zombies,
            actions,
        });
        t = end;
    }
    out
}

/// `T+12.0s` style offset.
pub fn format_offset(offset_s: f64) -> String {
    let sign = if offset_s < 0.0 { '-' } else { '+' };
    // Offsets come from a recording, which may be damaged: no value panics.
    let Ok(d) = Duration::try_from_secs_f64(offset_s.abs()) else { return "T?".into() };
    if d >= Duration::from_secs(60) {
        format!("T{sign}{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("T{sign}{:.0}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::Point;

    #[test]
    fn a_recording_with_absurd_times_replays_a_bounded_number_of_frames() {
        let log = EventLog {
            points: vec![Point::new(1_000, "sent", &[("platform", "ios")], 5.0), Point::new(u64::MAX, "sent", &[("platform", "ios")], 7.0)],
            ..EventLog::default()
        };
        let frames = frames(&log, None, None);
        assert_eq!(frames.len() as i64, MAX_REPLAY_FRAMES);
        assert_eq!(frames[0].sent, [5, 0]);
        // A late start skips ahead without walking every second before it,
        // and keeps the running total.
        let late = super::frames(&log, Some(1_000 + 3_600_000), Some(1_000 + 3_602_000));
        assert_eq!(late.len(), 3);
        assert_eq!(late[0].delivered, 5);
        assert!(super::frames(&log, Some(u64::MAX), None).len() <= 1);
    }

    #[test]
    fn absurd_counts_saturate_instead_of_overflowing() {
        let log = EventLog {
            points: vec![
                Point::new(1_000, "sent", &[("platform", "ios")], 1e300),
                Point::new(1_500, "sent", &[("platform", "ios")], 1e300),
                Point::new(1_600, "failed_total", &[("reason", "a")], 1e300),
                Point::new(1_700, "failed_total", &[("reason", "b")], 1e300),
            ],
            ..EventLog::default()
        };
        let frames = frames(&log, None, None);
        assert_eq!(frames[0].sent[0], u64::MAX);
        assert_eq!(frames[0].failed, u64::MAX);
        assert_eq!(summarize(&log).failed, u64::MAX);
    }
}
