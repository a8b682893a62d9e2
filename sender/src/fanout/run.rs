//! One fire of one campaign while it runs: the counters every tier updates,
//! the abort switch, and the final report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, watch};

use super::ledger::{FireLedger, FireRecord, FireStatus};
use super::retry::RetryBudget;
use crate::audience::{Audience, Platform};
use crate::campaign::ApnsOptions;
use crate::push::{ApnsHeaders, DeviceRef, FailReason};

/// At most this many unsent ranges are listed in a report; the total is
/// always given.
const MAX_LISTED_RANGES: usize = 1000;
const NOT_YET: u64 = u64::MAX;

/// Devices that were never handed to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct UnsentRange {
    /// Shard index.
    pub shard: u32,
    /// Platform section.
    pub platform: Platform,
    /// First device not sent.
    pub start: u32,
    /// One past the last.
    pub end: u32,
}

/// A device and what became of it, for the prune and undelivered reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceNote {
    /// The device.
    pub device: DeviceRef,
    /// Why it is listed.
    pub reason: FailReason,
    /// When the answer came.
    pub at: SystemTime,
}

/// A live view of a fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// Devices the campaign sends to.
    pub targeted: u64,
    /// Devices handed to a provider.
    pub handed_off: u64,
    /// Acknowledged by the provider.
    pub delivered: u64,
    /// Refused or failed.
    pub failed: u64,
    /// Time since the fire.
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
    /// Finished (completed or aborted).
    pub done: bool,
    /// An abort was requested.
    pub aborted: bool,
    /// Since when APNs takes no requests (its hand-offs paused), ms since
    /// the UNIX epoch.
    pub apns_unreachable_since_ms: Option<u64>,
    /// Since when FCM takes no requests, likewise.
    pub fcm_unreachable_since_ms: Option<u64>,
}

impl Progress {
    /// "APNs unreachable since 2026-12-06T10:31:02Z, paused", for each provider in an
    /// outage; `None` while both take requests.
    pub fn paused_line(&self) -> Option<String> {
        let parts: Vec<String> = [("APNs", self.apns_unreachable_since_ms), ("FCM", self.fcm_unreachable_since_ms)]
            .into_iter()
            .filter_map(|(p, since)| since.map(|ms| format!("{p} unreachable since {}, paused", crate::clock::rfc3339_s(ms))))
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// How a fire ended, from the sender's side.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FireReport {
    /// The campaign.
    pub campaign_id: String,
    /// Its content hash.
    pub campaign_hash: String,
    /// Who fired.
    pub operator: String,
    /// When (RFC 3339).
    pub fired_at: String,
    /// Devices the campaign sends to.
    pub targeted: u64,
    /// Handed to a provider (`delivered + failed + in_doubt`).
    pub handed_off: u64,
    /// Acknowledged by the provider.
    pub delivered: u64,
    /// Refused or failed, total.
    pub failed: u64,
    /// Failures by reason.
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Never handed to a provider (`targeted - handed_off`).
    pub not_sent: u64,
    /// Handed off, but abandoned before an answer (after an abort, past the
    /// drain timeout): they may or may not have arrived.
    pub in_doubt: u64,
    /// Retries sent.
    pub retries: u64,
    /// The retry budget at the end of the fire.
    pub retry_budget: u64,
    /// Devices refused a retry because the budget was spent.
    pub budget_exhausted: u64,
    /// 429 answers sent again at no cost to the budget: the provider was
    /// throttling, and the sender slowed down to its pace instead.
    pub throttled: u64,
    /// Tokens the providers reported dead (unregistered or malformed).
    pub pruned: u64,
    /// The prune report (CSV: user_id, platform, token, reason, time).
    pub prune_report: Option<String>,
    /// Devices that failed after a transient error (budget spent, attempts
    /// used up, or an abort): not delivered, worth sending again later.
    pub undelivered: u64,
    /// The undelivered report (same CSV columns).
    pub undelivered_report: Option<String>,
    /// Problems an operator must act on (a provider stopped, a report that
    /// could not be written).
    pub alerts: Vec<String>,
    /// An abort stopped the fire.
    pub aborted: bool,
    /// Who aborted.
    pub aborted_by: Option<String>,
    /// Why the fire stopped before the end on its own (a provider outage
    /// past the timeout): resume it with `fire --resume`.
    pub interrupted: Option<String>,
    /// From the abort to the last hand-off, in seconds.
    pub abort_to_last_handoff_s: Option<f64>,
    /// From the fire to the last outcome, in seconds.
    pub elapsed_s: f64,
    /// From the fire to the last hand-off, in seconds.
    pub last_handoff_s: f64,
    /// Ranges never sent (the first 1000).
    pub unsent_ranges: Vec<UnsentRange>,
    /// Number of unsent ranges in all.
    pub unsent_ranges_total: u64,
    /// For a resumed fire: how the interrupted fire stood when it was
    /// resumed (`targeted` above counts only the devices sent again).
    pub resumed: Option<super::journal::Standing>,
}

impl FireReport {
    /// Devices left without a final answer: never sent, in doubt, failed
    /// after a transient error, or not sent because the provider refused
    /// the sender's credentials. A final answer is a delivery, a dead token
    /// or a refusal of the notification itself (too large, malformed).
    pub fn unanswered(&self) -> u64 {
        // Unexpected answers are among the undelivered.
        let by = |r: crate::push::FailReason| self.failed_by_reason.get(r.as_str()).copied().unwrap_or(0);
        let unauthorized = by(crate::push::FailReason::Auth) + by(crate::push::FailReason::ProviderStopped);
        self.not_sent + self.in_doubt + self.undelivered + unauthorized
    }

    /// Every targeted device has a final answer.
    pub fn complete(&self) -> bool {
        self.unanswered() == 0
    }
}

/// Shared state of one fire.
#[derive(Debug)]
pub struct FireRun {
    pub(crate) campaign_id: String,
    pub(crate) campaign_hash: String,
    pub(crate) operator: String,
    pub(crate) fired_at: Instant,
    pub(crate) fired_at_wall: SystemTime,
    pub(crate) apns: ApnsHeaders,
    pub(crate) targeted: u64,
    aborted: AtomicBool,
    abort_at_ns: AtomicU64,
    aborted_by: Mutex<Option<String>>,
    /// Why the fire stopped short on its own (a provider outage past the
    /// timeout): it ends interrupted, resumable, rather than aborted.
    interrupted: Mutex<Option<String>>,
    pub(crate) abort_notify: Notify,
    handed_off: AtomicU64,
    delivered: AtomicU64,
    failed: [AtomicU64; FailReason::COUNT],
    in_doubt: AtomicU64,
    last_handoff_ns: AtomicU64,
    last_outcome_ns: AtomicU64,
    batches_total: AtomicU64,
    batches_done: AtomicU64,
    /// First attempts handed off so far, counted at hand-off time (not at
    /// the periodic flush) so the retry budget grows with the send.
    first_sends: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    budget_exhausted: AtomicU64,
    pruned: Mutex<Vec<DeviceNote>>,
    undelivered: Mutex<Vec<DeviceNote>>,
    unsent: Mutex<(Vec<UnsentRange>, u64)>,
    completed: AtomicBool,
    report: watch::Sender<Option<Arc<FireReport>>>,
    /// The batches to send, when not the whole plan (a resume).
    plan: Mutex<Option<super::dispatch::Plan>>,
    resumed: Option<super::journal::Standing>,
    /// Per platform: the workers whose provider is unreachable, and since
    /// when (ms since the epoch) the first of them saw it.
    unreachable: [Mutex<(u32, u64)>; 2],
}

/// What a worker adds to a run's counters in one flush.
#[derive(Debug, Default)]
pub(crate) struct RunDelta {
    pub(crate) handed_off: u64,
    pub(crate) delivered: u64,
    pub(crate) failed: [u64; FailReason::COUNT],
    pub(crate) in_doubt: u64,
    pub(crate) batches_done: u64,
    pub(crate) retried: u64,
    pub(crate) throttled: u64,
    pub(crate) budget_exhausted: u64,
    pub(crate) pruned: Vec<DeviceNote>,
    pub(crate) undelivered: Vec<DeviceNote>,
    pub(crate) last_handoff: Option<Instant>,
    pub(crate) last_outcome: Option<Instant>,
}

impl RunDelta {
    pub(crate) fn is_empty(&self) -> bool {
        self.handed_off == 0
            && self.batches_done == 0
            && self.in_doubt == 0
            && self.delivered == 0
            && self.retried == 0
            && self.throttled == 0
            && self.failed.iter().all(|f| *f == 0)
    }
}

/// What finishing a run needs besides the run itself.
pub(crate) struct Completion<'a> {
    pub(crate) ledger: &'a dyn FireLedger,
    pub(crate) audience: &'a Audience,
    pub(crate) reports_dir: Option<&'a std::path::Path>,
    pub(crate) alerts: Vec<String>,
    pub(crate) budget: RetryBudget,
}

impl FireRun {
    /// The run of the fire `record` claimed, pressed at `pressed` on this
    /// clock, sending `apns` headers to `targeted` devices.
    pub(crate) fn for_record(record: &FireRecord, apns: &ApnsOptions, targeted: u64, pressed: Instant) -> Self {
        let fired_at_wall = record.fired_at();
        Self {
            campaign_id: record.campaign_id.clone(),
            campaign_hash: record.campaign_hash.clone(),
            operator: record.operator.clone(),
            fired_at: pressed,
            fired_at_wall,
            apns: ApnsHeaders::for_fire(apns, fired_at_wall),
            targeted,
            aborted: AtomicBool::new(false),
            abort_at_ns: AtomicU64::new(NOT_YET),
            aborted_by: Mutex::new(None),
            interrupted: Mutex::new(None),
            abort_notify: Notify::new(),
            handed_off: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: std::array::from_fn(|_| AtomicU64::new(0)),
            in_doubt: AtomicU64::new(0),
            last_handoff_ns: AtomicU64::new(0),
            last_outcome_ns: AtomicU64::new(0),
            batches_total: AtomicU64::new(NOT_YET),
            batches_done: AtomicU64::new(0),
            first_sends: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            budget_exhausted: AtomicU64::new(0),
            pruned: Mutex::new(Vec::new()),
            undelivered: Mutex::new(Vec::new()),
            unsent: Mutex::new((Vec::new(), 0)),
            completed: AtomicBool::new(false),
            report: watch::channel(None).0,
            plan: Mutex::new(None),
            resumed: None,
            unreachable: [Mutex::new((0, 0)), Mutex::new((0, 0))],
        }
    }

    /// The run of a resumed fire: it sends `plan` (the devices without a
    /// final answer), `standing` tells how far the fire had got.
    pub(crate) fn resuming(
        record: &FireRecord,
        apns: &ApnsOptions,
        plan: super::dispatch::Plan,
        standing: super::journal::Standing,
    ) -> Self {
        let targeted = plan.iter().map(|(_, b)| u64::from(b.end - b.start)).sum();
        Self { plan: Mutex::new(Some(plan)), resumed: Some(standing), ..Self::for_record(record, apns, targeted, Instant::now()) }
    }

    /// The batches to send instead of the whole plan, once.
    pub(crate) fn take_plan(&self) -> Option<super::dispatch::Plan> {
        self.plan.lock().expect("plan lock").take()
    }

    /// [`FireRun::for_record`] for a fire pressed elsewhere: its instant on
    /// this clock is derived from its age (wall clocks agree to NTP precision).
    pub(crate) fn joined(record: &FireRecord, apns: &ApnsOptions, targeted: u64) -> Self {
        let age = SystemTime::now().duration_since(record.fired_at()).unwrap_or_default();
        let pressed = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        Self::for_record(record, apns, targeted, pressed)
    }

    fn since_fire_ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.fired_at).as_nanos() as u64
    }

    /// True once an abort was requested. Checked before every hand-off.
    #[inline]
    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }

    /// When the abort was requested.
    pub(crate) fn abort_instant(&self) -> Option<Instant> {
        match self.abort_at_ns.load(Ordering::Acquire) {
            NOT_YET => None,
            ns => Some(self.fired_at + Duration::from_nanos(ns)),
        }
    }

    /// Requests an abort. Returns false if it was already aborted.
    pub(crate) fn abort(&self, by: &str) -> bool {
        let mut who = self.aborted_by.lock().expect("abort lock");
        if self.aborted.load(Ordering::Acquire) {
            return false;
        }
        *who = Some(by.to_owned());
        self.abort_at_ns.store(self.since_fire_ns(Instant::now()), Ordering::Release);
        self.aborted.store(true, Ordering::Release);
        drop(who);
        self.abort_notify.notify_waiters();
        true
    }

    /// Stops the fire like an abort, but it ends *interrupted*: `fire
    /// --resume` sends what is left.
    /// An abort that came first stands: the fire then ends aborted.
    pub(crate) fn interrupt(&self, why: &str) {
        let mut slot = self.interrupted.lock().expect("interrupt lock");
        if self.is_aborted() {
            return;
        }
        *slot = Some(why.to_owned());
        drop(slot);
        if !self.abort("outage timeout") {
            // An operator's abort won the race.
            *self.interrupted.lock().expect("interrupt lock") = None;
        }
    }

    /// A worker finds `platform`'s provider unreachable since `since`.
    pub(crate) fn provider_down(&self, platform: Platform, since: SystemTime) {
        let mut u = self.unreachable[platform as usize].lock().expect("unreachable lock");
        let ms = crate::clock::ms(since);
        u.1 = if u.0 == 0 { ms } else { u.1.min(ms) };
        u.0 += 1;
    }

    /// A worker that found `platform`'s provider unreachable reaches it again.
    pub(crate) fn provider_up(&self, platform: Platform) {
        let mut u = self.unreachable[platform as usize].lock().expect("unreachable lock");
        u.0 = u.0.saturating_sub(1);
    }

    fn unreachable_since(&self, platform: Platform) -> Option<u64> {
        let u = self.unreachable[platform as usize].lock().expect("unreachable lock");
        (u.0 > 0).then_some(u.1)
    }

    /// Who aborted, if anyone did.
    pub(crate) fn aborted_by(&self) -> Option<String> {
        self.aborted_by.lock().expect("abort lock").clone()
    }

    /// Records devices that will never be sent.
    pub(crate) fn unsent(&self, range: UnsentRange) {
        if range.start >= range.end {
            return;
        }
        let mut u = self.unsent.lock().expect("unsent lock");
        if u.0.len() < MAX_LISTED_RANGES {
            u.0.push(range);
        }
        u.1 += 1;
    }

    /// Counts first attempts as they are handed off.
    #[inline]
    pub(crate) fn first_sends(&self, n: u64) {
        self.first_sends.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes one retry from the budget, if any is left.
    pub(crate) fn try_retry(&self, budget: &RetryBudget) -> bool {
        let allowance = budget.allowance(self.first_sends.load(Ordering::Relaxed));
        self.retries.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| (used < allowance).then_some(used + 1)).is_ok()
    }

    /// Adds a worker's counts. Counters are added before the batch count,
    /// so whoever sees the last batch done also sees every count.
    pub(crate) fn apply(&self, d: RunDelta) {
        if !d.pruned.is_empty() {
            self.pruned.lock().expect("pruned lock").extend(d.pruned);
        }
        if !d.undelivered.is_empty() {
            self.undelivered.lock().expect("undelivered lock").extend(d.undelivered);
        }
        self.budget_exhausted.fetch_add(d.budget_exhausted, Ordering::Relaxed);
        self.throttled.fetch_add(d.throttled, Ordering::Relaxed);
        self.handed_off.fetch_add(d.handed_off, Ordering::Relaxed);
        self.delivered.fetch_add(d.delivered, Ordering::Relaxed);
        self.in_doubt.fetch_add(d.in_doubt, Ordering::Relaxed);
        for (a, n) in self.failed.iter().zip(d.failed) {
            if n > 0 {
                a.fetch_add(n, Ordering::Relaxed);
            }
        }
        if let Some(t) = d.last_handoff {
            self.last_handoff_ns.fetch_max(self.since_fire_ns(t), Ordering::Relaxed);
        }
        if let Some(t) = d.last_outcome {
            self.last_outcome_ns.fetch_max(self.since_fire_ns(t), Ordering::Relaxed);
        }
        if d.batches_done > 0 {
            // SeqCst pairs with `dispatched` and `try_complete`: of the
            // dispatcher storing the total and a worker adding the last
            // batch, at least one sees the other's write.
            self.batches_done.fetch_add(d.batches_done, Ordering::SeqCst);
        }
    }

    /// Called by the dispatcher once every batch is queued (or the abort
    /// stopped it).
    pub(crate) fn dispatched(&self, batches: u64) {
        self.batches_total.store(batches, Ordering::SeqCst);
    }

    /// Finishes the run if every dispatched batch is done: builds the
    /// report, records it in the ledger and wakes the waiters. Safe to call
    /// from any thread, any number of times. True for the call that
    /// completed it.
    pub(crate) fn try_complete(&self, ctx: Completion<'_>) -> bool {
        let total = self.batches_total.load(Ordering::SeqCst);
        if total == NOT_YET || self.batches_done.load(Ordering::SeqCst) < total {
            return false;
        }
        if self.completed.swap(true, Ordering::AcqRel) {
            return false;
        }
        let mut report = self.build_report(ctx.alerts);
        let pruned = std::mem::take(&mut *self.pruned.lock().expect("pruned lock"));
        let undelivered = std::mem::take(&mut *self.undelivered.lock().expect("undelivered lock"));
        report.retry_budget = ctx.budget.allowance(report.handed_off);
        report.pruned = pruned.len() as u64;
        report.undelivered = undelivered.len() as u64;
        if let Some(dir) = ctx.reports_dir {
            let dir = dir.join(&self.campaign_id);
            for (notes, name, slot) in
                [(&pruned, "pruned.csv", &mut report.prune_report), (&undelivered, "undelivered.csv", &mut report.undelivered_report)]
            {
                if notes.is_empty() {
                    continue;
                }
                let path = dir.join(name);
                match super::reports::write_device_csv(&path, notes, ctx.audience) {
                    Ok(()) => *slot = Some(path.display().to_string()),
                    Err(e) => report.alerts.push(format!("could not write {}: {e}", path.display())),
                }
            }
        }
        let report = Arc::new(report);
        let status = match (&report.interrupted, report.aborted) {
            (Some(_), _) => FireStatus::Interrupted,
            (None, true) => FireStatus::Aborted,
            (None, false) => FireStatus::Completed,
        };
        let json = serde_json::to_string(&*report).expect("report serializes");
        if let Err(e) = ctx.ledger.finish(&self.campaign_id, status, &json) {
            tracing::error!(error = %e, campaign = %self.campaign_id, "could not record the end of the fire");
        }
        self.report.send_replace(Some(report));
        true
    }

    fn build_report(&self, alerts: Vec<String>) -> FireReport {
        let failed_by_reason: BTreeMap<String, u64> = FailReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), self.failed[r.index()].load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let failed = failed_by_reason.values().sum();
        let handed_off = self.handed_off.load(Ordering::Relaxed);
        let last_handoff = Duration::from_nanos(self.last_handoff_ns.load(Ordering::Relaxed));
        let last_outcome = Duration::from_nanos(self.last_outcome_ns.load(Ordering::Relaxed)).max(last_handoff);
        let abort_at = self.abort_instant().map(|t| t - self.fired_at);
        let interrupted = self.interrupted.lock().expect("interrupt lock").clone();
        let (unsent_ranges, unsent_ranges_total) = self.unsent.lock().expect("unsent lock").clone();
        FireReport {
            campaign_id: self.campaign_id.clone(),
            campaign_hash: self.campaign_hash.clone(),
            operator: self.operator.clone(),
            fired_at: humantime::format_rfc3339_millis(self.fired_at_wall).to_string(),
            targeted: self.targeted,
            handed_off,
            delivered: self.delivered.load(Ordering::Relaxed),
            failed,
            failed_by_reason,
            not_sent: self.targeted.saturating_sub(handed_off),
            in_doubt: self.in_doubt.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            retry_budget: 0,
            budget_exhausted: self.budget_exhausted.load(Ordering::Relaxed),
            pruned: 0,
            prune_report: None,
            undelivered: 0,
            undelivered_report: None,
            alerts,
            aborted: abort_at.is_some() && interrupted.is_none(),
            aborted_by: if interrupted.is_none() { self.aborted_by.lock().expect("abort lock").clone() } else { None },
            interrupted,
            abort_to_last_handoff_s: abort_at.map(|a| last_handoff.saturating_sub(a).as_secs_f64()),
            elapsed_s: last_outcome.as_secs_f64(),
            last_handoff_s: last_handoff.as_secs_f64(),
            unsent_ranges,
            unsent_ranges_total,
            resumed: self.resumed,
        }
    }

    /// A live view.
    pub fn progress(&self) -> Progress {
        Progress {
            targeted: self.targeted,
            handed_off: self.handed_off.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.iter().map(|f| f.load(Ordering::Relaxed)).sum(),
            elapsed: self.fired_at.elapsed(),
            done: self.completed.load(Ordering::Acquire),
            aborted: self.is_aborted(),
            apns_unreachable_since_ms: self.unreachable_since(Platform::Ios),
            fcm_unreachable_since_ms: self.unreachable_since(Platform::Android),
        }
    }

    /// Waits for the final report.
    pub async fn wait(&self) -> Arc<FireReport> {
        let mut rx = self.report.subscribe();
        let report = rx.wait_for(Option::is_some).await.expect("the run owns the sender");
        report.clone().expect("checked by wait_for")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> FireRun {
        let record = FireRecord {
            campaign_id: "c".into(),
            campaign_hash: "h".into(),
            operator: "ana".into(),
            fired_at_ms: 0,
            host: "h".into(),
            pid: 1,
            status: FireStatus::Fired,
            finished_at_ms: None,
            summary: None,
            heartbeat_ms: None,
            warm_checksum: None,
        };
        FireRun::for_record(&record, &crate::campaign::demo().apns, 10, Instant::now())
    }

    #[test]
    fn an_operators_abort_that_came_first_is_not_turned_into_an_interruption() {
        let r = run();
        assert!(r.abort("bo"));
        r.interrupt("FCM unreachable");
        let report = r.build_report(Vec::new());
        assert!(report.aborted && report.interrupted.is_none(), "{report:?}");
        assert_eq!(report.aborted_by.as_deref(), Some("bo"));
        let r = run();
        r.interrupt("FCM unreachable");
        assert!(!r.abort("bo"), "the interruption stopped it first");
        let report = r.build_report(Vec::new());
        assert!(!report.aborted && report.interrupted.as_deref() == Some("FCM unreachable"), "{report:?}");
    }

    #[test]
    fn the_status_line_names_each_unreachable_provider_until_every_worker_reaches_it() {
        let r = run();
        assert_eq!(r.progress().paused_line(), None);
        r.provider_down(Platform::Android, SystemTime::UNIX_EPOCH + Duration::from_secs(86_400));
        r.provider_down(Platform::Android, SystemTime::now());
        let line = r.progress().paused_line().unwrap();
        assert!(line.starts_with("FCM unreachable since 1970-01-02T00:00:00Z, paused"), "{line}");
        r.provider_up(Platform::Android);
        assert!(r.progress().paused_line().is_some(), "one worker still cannot reach it");
        r.provider_up(Platform::Android);
        assert_eq!(r.progress().paused_line(), None);
    }
}
