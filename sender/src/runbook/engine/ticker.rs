//! The once-a-second sampler: fleet counts, zombie flags, the backends'
//! return traffic (measured at the flag server where the simulated clients
//! call it, modelled otherwise) and the fire's metrics into the recorder,
//! and the end-of-fire summary once the send is over.

use std::sync::Arc;
use std::time::Duration;

use super::{Event, StepState};
use crate::fleet::Group;
use crate::recorder::replay::EventSummary;
use crate::recorder::{AuditEntry, Point, now_ms};

/// Return-traffic model: share of devices that open the app within a
/// few seconds of the notification, and how long they keep calling.
const OPEN_RATE: f64 = 0.2;
const OPEN_WINDOW_S: f64 = 10.0;
/// Under zombie mode, the share of clients that still call (old app versions).
const ZOMBIE_LEAK: f64 = 0.05;

/// Devices delivered per second over the last [`OPEN_WINDOW_S`] seconds of
/// a per-second, per-platform series.
fn recent_rate(sent_per_second: &[[u64; 2]]) -> f64 {
    let from = sent_per_second.len().saturating_sub(OPEN_WINDOW_S as usize);
    sent_per_second[from..].iter().map(|x| (x[0] + x[1]) as f64).sum::<f64>() / OPEN_WINDOW_S
}

/// Return traffic: a backend's base load (a tenth of its capacity) plus the
/// share of recently notified devices that open the app and call it; under
/// zombie mode only the clients that ignore the flag still call.
fn backend_rps(capacity: f64, recent_per_s: f64, zombie: bool) -> f64 {
    let demand = capacity * 0.1 + recent_per_s * OPEN_RATE;
    if zombie { demand * ZOMBIE_LEAK } else { demand }
}

impl Event {
    /// Samples the event once: fleet counts, zombie flags, the backends'
    /// modelled load, and (during the fire) the send's metrics; when the
    /// fire has ended, writes the summary. Call it once a second.
    pub async fn tick(self: &Arc<Self>) {
        let now = now_ms();
        let rec = self.services.recorder.clone();
        for g in [Group::Asg, Group::Service] {
            if let Ok(s) = self.services.fleet.status(g).await
                && let Some(r) = &rec
            {
                r.point(Point::new(now, &format!("{}_desired", g.as_str()), &[], f64::from(s.desired)));
                r.point(Point::new(now, &format!("{}_running", g.as_str()), &[], f64::from(s.running)));
                r.point(Point::new(now, &format!("{}_pending", g.as_str()), &[], f64::from(s.pending)));
            }
        }
        let flags = self.services.flags.flags().unwrap_or_default();
        // Switches made elsewhere (the CLI, another app) go to the audit log too.
        let since = self.inner.lock().expect("event lock").opened_ms;
        for f in self.services.flags.history(since).unwrap_or_default() {
            if self.inner.lock().expect("event lock").zombie_seen.insert((f.backend.clone(), f.version)) {
                let action = if f.enabled { "zombie-on" } else { "zombie-off" };
                self.audit(AuditEntry::new(&f.set_by, action, "ok").payload(&serde_json::to_value(&f).unwrap_or_default()).at(f.set_at_ms));
            }
        }
        let handle = self.services.workers.handle();
        let mut sample = None;
        if let Some(h) = &handle {
            let done = h.progress().done;
            let already = {
                let mut inner = self.inner.lock().expect("event lock");
                let already = inner.summary.is_some() || inner.finishing;
                if done && !already {
                    inner.finishing = true;
                }
                already
            };
            if !already {
                let s = self.services.live.sample(h.campaign_id(), now, done);
                if done {
                    self.finish(h, &s).await;
                }
                sample = Some(s);
            }
        }
        let recent = sample.as_ref().map_or(0.0, |s| recent_rate(&s.sent_per_second));
        // Embedded mode: the notified devices open the app (simulated
        // clients), and what reaches the flag server is the return traffic.
        let measured = match (&self.services.clients, &self.services.flag_server) {
            (Some(clients), Some(server)) => {
                if let Some(s) = &sample {
                    clients.delivered(s.delivered);
                }
                Some(server.counts().take())
            }
            _ => None,
        };
        for (backend, cap) in &self.runbook.backend_capacity {
            let zombie = flags.iter().any(|f| &f.backend == backend && f.active(now));
            let rps = match &measured {
                Some(m) => {
                    let per_s = |n: Option<&u64>| n.copied().unwrap_or(0) as f64 / m.seconds.max(1e-3);
                    if let Some(r) = &rec {
                        r.point(Point::new(now, "flag_polls", &[("backend", backend)], per_s(m.polls.get(backend))));
                    }
                    per_s(m.requests.get(backend))
                }
                None => backend_rps(*cap, recent, zombie),
            };
            let peak = {
                let mut inner = self.inner.lock().expect("event lock");
                let p = inner.peak_rps.entry(backend.clone()).or_default();
                *p = p.max(rps);
                *p
            };
            if let Some(r) = &rec {
                r.point(Point::new(now, "backend_rps", &[("backend", backend)], rps));
                r.point(Point::new(now, "backend_peak_rps", &[("backend", backend)], peak));
            }
        }
        if let Some(r) = &rec {
            for b in &self.runbook.backends {
                let on = flags.iter().any(|f| &f.backend == b && f.active(now));
                r.point(Point::new(now, "zombie", &[("backend", b)], f64::from(u8::from(on))));
            }
        }
        self.bump();
    }

    async fn finish(&self, h: &crate::fanout::FireHandle, last: &crate::recorder::live::Sample) {
        let report = h.wait().await;
        let received = self.services.workers.received(report.delivered);
        // The campaign as the event knows it (its id and file hash, not the
        // fire id the ledger keys on).
        let (fired, campaign_id, campaign_hash) = {
            let inner = self.inner.lock().expect("event lock");
            (inner.fired.clone(), inner.campaign.id.clone(), inner.campaign_hash.clone())
        };
        let summary = EventSummary {
            campaign_id,
            campaign_hash,
            devices: report.targeted,
            delivered: report.delivered,
            failed: report.failed,
            duplicates: received.duplicates,
            missing: report.targeted.saturating_sub(report.delivered + report.failed),
            p50_s: last.p50_s,
            p95_s: last.p95_s,
            p99_s: last.p99_s,
            max_s: self.services.live.snapshot(h.campaign_id()).latency.max().as_secs_f64(),
            failed_by_reason: report.failed_by_reason.clone(),
            fired_by: fired.as_ref().map(|f| f.by.clone()),
            fired_at_ms: fired.as_ref().map(|f| f.at_ms),
        };
        if let Some(r) = &self.services.recorder {
            let now = now_ms();
            r.point(Point::new(now, "receiver_delivered", &[], received.delivered as f64));
            r.point(Point::new(now, "receiver_duplicates", &[], received.duplicates as f64));
            r.meta("summary", &serde_json::to_string(&summary).expect("summary serializes"));
            r.meta("fire_report", &serde_json::to_string(&*report).expect("report serializes"));
            r.meta("measured_at", received.measured_at);
        }
        let aborted_elsewhere = {
            let mut inner = self.inner.lock().expect("event lock");
            // Aborted from another window, walk or process (through the
            // ledger): this event is aborted too.
            let elsewhere = report.aborted && inner.aborted.is_none();
            if elsewhere {
                let by = report.aborted_by.clone().unwrap_or_else(|| "someone".into());
                inner.aborted = Some((by, "the fire was aborted from another window or process".into()));
                inner.armed = None;
                for st in &mut inner.steps {
                    if matches!(st.state, StepState::Pending | StepState::Ready | StepState::Standby) {
                        st.state = StepState::Skipped;
                        st.note = Some("the fire was aborted".into());
                    }
                }
            }
            if let Some(why) = &report.interrupted {
                let before = report.resumed.map_or(0, |s| s.answered);
                inner.interrupted = Some(super::Interrupted {
                    fire_id: report.campaign_id.clone(),
                    by: fired.as_ref().map_or_else(|| report.operator.clone(), |f| f.by.clone()),
                    at_ms: fired.as_ref().map_or(0, |f| f.at_ms),
                    why: why.clone(),
                    answered: Some(before + report.targeted.saturating_sub(report.unanswered())),
                    targeted: Some(report.resumed.map_or(report.targeted, |s| s.targeted)),
                });
            }
            inner.summary = Some(summary);
            elsewhere.then(|| inner.aborted.clone()).flatten()
        };
        if let Some((by, why)) = aborted_elsewhere {
            self.audit(AuditEntry::new(&by, "abort", "ok").payload(&serde_json::json!({ "why": why })));
        }
        self
            .audit(AuditEntry::new("kickoff", "fire-complete", if report.aborted { "aborted" } else { "ok" }).payload(&serde_json::json!({
            "delivered": report.delivered, "failed": report.failed, "duplicates": received.duplicates, "measured_at": received.measured_at
        })));
        self.finished.notify_waiters();
        self.snapshot_to_recorder();
    }

    /// Starts the once-a-second sampler on the current runtime; it stops
    /// when the event is dropped.
    pub fn start_ticker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(event) = weak.upgrade() else { return };
                event.tick().await;
            }
        })
    }

    /// Ends the event: a last sample, then the recorder is closed.
    pub async fn close(self: &Arc<Self>) {
        self.tick().await;
        self.audit(AuditEntry::new("kickoff", "close", "ok"));
        self.snapshot_to_recorder();
        self.services.workers.shutdown();
        if let Some(r) = &self.services.recorder
            && let Err(e) = r.close()
        {
            tracing::error!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombie_mode_cuts_the_return_traffic() {
        let recent = recent_rate(&[[0, 0], [600, 400], [600, 400]]);
        assert!((recent - 200.0).abs() < 1e-9);
        let open = backend_rps(1000.0, recent, false);
        assert!((open - (100.0 + 40.0)).abs() < 1e-9);
        assert!((backend_rps(1000.0, recent, true) - open * ZOMBIE_LEAK).abs() < 1e-9);
    }
}
