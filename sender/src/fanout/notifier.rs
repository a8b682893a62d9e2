//! The notifier tier: a worker takes batch messages, walks each range of its
//! shard, and hands every device to its provider session, keeping up to
//! `in_flight_per_worker` sends outstanding.
//!
//! A worker owns one OS thread and a current-thread runtime: its session's
//! connections, its in-flight futures and its counters never cross threads.
//! Counts go into a private [`FanoutStats`] and reach the shared run and the
//! metrics sink in one flush every ~100 ms, never per device.
//!
//! Transient failures are retried here, with jittered exponential backoff
//! that honours the provider's `retry-after`, and only while the fire's
//! retry budget allows: a provider outage cannot multiply the traffic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::Shared;
use super::run::{DeviceNote, FireRun, RunDelta, UnsentRange};
use crate::metrics::FanoutStats;
use crate::push::{DeviceRef, FailReason, Handoff, Outcome, PushRequest, Session};
use crate::queue::BatchMsg;
use crate::rng::SplitMix64;

const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Synchronous deliveries are time-stamped once per this many devices: an
/// `Instant::now()` per device would cost more than the send itself.
const STAMP_EVERY: u64 = 256;
/// One pending send in this many is time-stamped to measure the provider's
/// round trip.
const RTT_SAMPLE_EVERY: u32 = 64;

/// A send in flight, tagged with its device.
struct InFlight<F> {
    fut: F,
    slot: u32,
    index: u32,
    attempt: u8,
    /// When it was sent, for one send in [`RTT_SAMPLE_EVERY`].
    sent_at: Option<Instant>,
}

impl<F: Future<Output = Outcome> + Unpin> Future for InFlight<F> {
    type Output = (u32, u32, u8, Outcome, Option<Instant>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (slot, index, attempt, sent_at) = (self.slot, self.index, self.attempt, self.sent_at);
        Pin::new(&mut self.fut).poll(cx).map(|o| (slot, index, attempt, o, sent_at))
    }
}

/// Counts pending sends and stamps one in [`RTT_SAMPLE_EVERY`].
fn stamp(counter: &mut u32) -> Option<Instant> {
    *counter = counter.wrapping_add(1);
    counter.is_multiple_of(RTT_SAMPLE_EVERY).then(Instant::now)
}

/// A device waiting for its next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Instant,
    slot: u32,
    index: u32,
    attempt: u8,
    /// Why the last attempt failed.
    reason: FailReason,
}

/// A batch being handed off or waiting for its in-flight sends and retries.
struct OpenBatch {
    msg: BatchMsg,
    run: usize,
    /// Next device to hand off.
    next: u32,
    /// Sends in flight plus retries scheduled.
    outstanding: u32,
    delivered: u32,
    failed: [u32; FailReason::COUNT],
    in_doubt: u32,
    /// Devices handed off that ended without a final answer (for the journal).
    unanswered: Vec<u32>,
}

/// A run's counts local to this worker, flushed periodically.
struct RunLocal {
    run: Arc<FireRun>,
    stats: FanoutStats,
    delta: RunDelta,
    open_batches: usize,
}

pub(crate) struct Notifier<S: Session> {
    session: S,
    shared: Arc<Shared>,
    limit: usize,
    /// Once the window is full, hand-offs resume only below this mark, so
    /// requests leave in groups (one write for many) rather than one per
    /// answer.
    low_water: usize,
    inflight: FuturesUnordered<InFlight<S::Pending>>,
    retries: BinaryHeap<Reverse<Due>>,
    slots: Vec<Option<OpenBatch>>,
    free_slots: Vec<u32>,
    /// The batch being handed off.
    current: Option<u32>,
    runs: Vec<RunLocal>,
    token: Vec<u8>,
    rng: SplitMix64,
    last_flush: Instant,
    /// Pending sends so far, for round-trip sampling.
    stamps: u32,
    /// Since when no request reaches the provider (an outage).
    outage: Option<Instant>,
    /// Hand-offs wait until then (the provider has no live connection).
    paused_until: Option<Instant>,
    /// The next pause, doubling while the outage lasts.
    pause: Duration,
    /// When an outage was last logged.
    outage_logged: Option<Instant>,
}

/// Outages closer than this to the last one logged are not logged again.
const OUTAGE_LOG_QUIET: Duration = Duration::from_secs(10);

/// The first pause after a request could not reach the provider; it
/// doubles up to [`MAX_PAUSE`] while the outage lasts.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

impl<S: Session> Notifier<S> {
    pub(crate) fn new(session: S, shared: Arc<Shared>, seed: u64) -> Self {
        let mut notifier = Self {
            session,
            shared,
            limit: 1,
            low_water: 1,
            inflight: FuturesUnordered::new(),
            retries: BinaryHeap::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            current: None,
            runs: Vec::new(),
            token: Vec::with_capacity(256),
            rng: SplitMix64::new(seed),
            last_flush: Instant::now(),
            stamps: 0,
            outage: None,
            paused_until: None,
            pause: FIRST_PAUSE,
            outage_logged: None,
        };
        notifier.update_limit();
        notifier
    }

    /// The in-flight window: the engine's limit, within what the session can
    /// carry now (a provider may raise its stream limit after the first
    /// valid request, or lower it).
    fn update_limit(&mut self) {
        let limit = self.shared.config.in_flight_per_worker.min(self.session.capacity().unwrap_or(usize::MAX)).max(1);
        self.limit = limit;
        self.low_water = if limit > 1 { limit - (limit / 16).clamp(1, 64) } else { 1 };
    }

    /// Works until the batch queue is closed and everything in flight is done.
    pub(crate) async fn run(mut self) {
        let mut closed = false;
        loop {
            if self.send_due_retries(Instant::now()) {
                continue;
            }
            let paused = self.paused_until.is_some_and(|t| Instant::now() < t);
            if self.current.is_some() && self.inflight.len() < self.low_water && !paused {
                self.hand_off();
                if self.last_flush.elapsed() < FLUSH_EVERY {
                    continue;
                }
            }
            if self.current.is_none()
                && self.inflight.len() < self.limit
                && !closed
                && !paused
                && let Some(msg) = self.shared.batch_queue.try_recv()
            {
                self.open(msg);
                continue;
            }
            if self.last_flush.elapsed() >= FLUSH_EVERY {
                self.check_outage();
                self.resolve_aborted_retries();
                self.drop_abandoned();
                self.flush();
            }
            if self.inflight.is_empty() && self.current.is_none() && self.retries.is_empty() {
                // Idle: report everything before waiting.
                self.flush();
                if closed {
                    return;
                }
                match self.shared.batch_queue.recv().await {
                    Some(msg) => self.open(msg),
                    None => closed = true,
                }
                continue;
            }
            let can_take = self.current.is_none() && self.inflight.len() < self.limit && !closed && !paused;
            let next_retry = self.retries.peek().map(|Reverse(d)| d.at);
            let mut wake = next_retry.map_or(Instant::now() + FLUSH_EVERY, |at| at.min(Instant::now() + FLUSH_EVERY));
            if let Some(t) = self.paused_until.filter(|_| paused) {
                wake = wake.min(t);
            }
            tokio::select! {
                biased;
                Some((slot, index, attempt, outcome, sent_at)) = self.inflight.next(), if !self.inflight.is_empty() => {
                    let now = Instant::now();
                    self.rtt(slot, sent_at, now);
                    self.outcome(slot, index, attempt, outcome, now);
                    // Take every other answer that is already in.
                    while let Some(Some((slot, index, attempt, outcome, sent_at))) = futures_util::FutureExt::now_or_never(self.inflight.next()) {
                        self.rtt(slot, sent_at, now);
                        self.outcome(slot, index, attempt, outcome, now);
                    }
                }
                msg = self.shared.batch_queue.recv(), if can_take => match msg {
                    Some(msg) => self.open(msg),
                    None => closed = true,
                },
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    fn open(&mut self, msg: BatchMsg) {
        let Some(run) = self.shared.run(&msg.campaign_id) else {
            tracing::warn!(campaign = %msg.campaign_id, "batch for an unknown run; dropped");
            return;
        };
        let run_index = match self.runs.iter().position(|r| Arc::ptr_eq(&r.run, &run)) {
            Some(i) => i,
            None => {
                self.runs.push(RunLocal { run, stats: FanoutStats::default(), delta: RunDelta::default(), open_batches: 0 });
                self.runs.len() - 1
            }
        };
        self.runs[run_index].open_batches += 1;
        let batch = OpenBatch {
            next: msg.start,
            msg,
            run: run_index,
            outstanding: 0,
            delivered: 0,
            failed: [0; FailReason::COUNT],
            in_doubt: 0,
            unanswered: Vec::new(),
        };
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(batch);
                s
            }
            None => {
                self.slots.push(Some(batch));
                (self.slots.len() - 1) as u32
            }
        };
        self.current = Some(slot);
    }

    /// Hands devices of the current batch to the session until the batch
    /// ends, the in-flight window is full, or the run is aborted.
    fn hand_off(&mut self) {
        let Some(slot) = self.current else { return };
        let Self { session, shared, inflight, slots, runs, token, limit, stamps, .. } = self;
        let batch = slots[slot as usize].as_mut().expect("current batch is open");
        let local = &mut runs[batch.run];
        let run = &*local.run;
        let warm = &shared.warm;
        let shard = &warm.audience.shards()[batch.msg.shard as usize];
        let routes = &warm.routes[batch.msg.shard as usize];
        let platform = batch.msg.platform;
        let end = batch.msg.end;
        let first = batch.next;
        let mut sync_ok = 0u64;
        let mut answered = false;
        // Synchronous answers other than "delivered" are rare; they are
        // handled after the loop, through the same path as async answers.
        let mut other: Vec<(u32, Outcome)> = Vec::new();
        let mut i = first;
        // The window only limits sends that are actually pending: a session
        // that answers synchronously runs through the whole batch.
        while i < end && inflight.len() < *limit {
            if run.is_aborted() {
                break;
            }
            let locale = shard.locale(platform, i as usize);
            let payload = warm.payloads.get(platform, usize::from(routes.payload_of_locale[usize::from(locale)]));
            let req = PushRequest {
                device: DeviceRef { shard: batch.msg.shard, platform, index: i },
                token: shard.token_text(platform, i as usize, token),
                payload,
                apns: &run.apns,
            };
            match session.send(&req) {
                Handoff::Done(Outcome::Delivered) => {
                    sync_ok += 1;
                    batch.delivered += 1;
                }
                Handoff::Done(Outcome::Unsent) => {
                    // No live connection: this device waits for one, and so
                    // does the rest of the batch.
                    other.push((i, Outcome::Unsent));
                    i += 1;
                    break;
                }
                Handoff::Done(o) => other.push((i, o)),
                Handoff::Pending(fut) => {
                    inflight.push(InFlight { fut, slot, index: i, attempt: 0, sent_at: stamp(stamps) });
                    batch.outstanding += 1;
                }
            }
            i += 1;
            if sync_ok == STAMP_EVERY {
                local.stats.delivered(platform, run.fired_at.elapsed(), sync_ok);
                local.delta.delivered += sync_ok;
                sync_ok = 0;
                answered = true;
            }
        }
        let now = Instant::now();
        if sync_ok > 0 {
            local.stats.delivered(platform, now - run.fired_at, sync_ok);
            local.delta.delivered += sync_ok;
            answered = true;
        }
        if answered {
            local.delta.last_outcome = Some(now);
        }
        if i > first {
            local.delta.handed_off += u64::from(i - first);
            local.delta.last_handoff = Some(now);
            run.first_sends(u64::from(i - first));
        }
        batch.next = i;
        let finished = i == batch.msg.end || run.is_aborted();
        if finished && i < batch.msg.end {
            run.unsent(UnsentRange { shard: batch.msg.shard, platform, start: i, end: batch.msg.end });
        }
        // Count the deferred answers as outstanding so the batch cannot close
        // before they are handled.
        batch.outstanding += other.len() as u32;
        if finished {
            self.current = None;
        }
        for (index, o) in other {
            self.outcome(slot, index, 0, o, now);
            // `outcome` took one off `outstanding` for a send in flight.
        }
        if finished && self.slots[slot as usize].as_ref().is_some_and(|b| b.outstanding == 0) {
            self.close_batch(slot);
        }
    }

    /// Counts a sampled round trip.
    fn rtt(&mut self, slot: u32, sent_at: Option<Instant>, now: Instant) {
        if let Some(at) = sent_at
            && let Some(batch) = self.slots[slot as usize].as_ref()
        {
            self.runs[batch.run].stats.rtt.record(now.saturating_duration_since(at));
        }
    }

    /// Handles one answer: counts it, prunes dead tokens, schedules retries.
    fn outcome(&mut self, slot: u32, index: u32, attempt: u8, outcome: Outcome, now: Instant) {
        let batch = self.slots[slot as usize].as_mut().expect("answer for an open batch");
        batch.outstanding -= 1;
        let platform = batch.msg.platform;
        let device = DeviceRef { shard: batch.msg.shard, platform, index };
        let local = &mut self.runs[batch.run];
        let run = &local.run;
        if outcome == Outcome::Unsent {
            if run.is_aborted() {
                // An aborted fire does not wait for the provider: the device
                // was not sent.
                batch.unanswered.push(index);
                batch.failed[FailReason::Transport.index()] += 1;
                local.stats.failed(FailReason::Transport);
                local.delta.failed[FailReason::Transport.index()] += 1;
                local.delta.undelivered.push(DeviceNote { device, reason: FailReason::Transport, at: SystemTime::now() });
                if batch.outstanding == 0 && self.current != Some(slot) {
                    self.close_batch(slot);
                }
                return;
            }
            batch.outstanding += 1;
            let at = now + self.pause;
            self.retries.push(Reverse(Due { at, slot, index, attempt, reason: FailReason::Transport }));
            self.enter_outage(now, at);
            return;
        }
        local.delta.last_outcome = Some(now);
        if self.outage.take().is_some_and(|since| {
            tracing::info!(after = ?now.saturating_duration_since(since), "the provider answers again: hand-offs resume");
            true
        }) {
            self.paused_until = None;
            self.pause = FIRST_PAUSE;
        }
        let retry = &self.shared.config.retry;
        let batch = self.slots[slot as usize].as_mut().expect("answer for an open batch");
        let local = &mut self.runs[batch.run];
        let run = &local.run;
        match outcome {
            // Handled above.
            Outcome::Unsent => {}
            Outcome::Delivered => {
                local.stats.delivered(platform, now - run.fired_at, 1);
                local.delta.delivered += 1;
                batch.delivered += 1;
            }
            Outcome::Failed(reason) => {
                if !reason.is_final() {
                    batch.unanswered.push(index);
                }
                batch.failed[reason.index()] += 1;
                local.stats.failed(reason);
                local.delta.failed[reason.index()] += 1;
                if reason.prunes() {
                    local.delta.pruned.push(DeviceNote { device, reason, at: SystemTime::now() });
                }
            }
            Outcome::Retry { reason, after } => {
                let last_attempt = attempt + 1 >= retry.max_attempts;
                if !last_attempt && !run.is_aborted() && run.try_retry(&retry.budget) {
                    let delay = retry.delay(attempt, after, &mut self.rng);
                    batch.outstanding += 1;
                    local.delta.retried += 1;
                    self.retries.push(Reverse(Due { at: now + delay, slot, index, attempt: attempt + 1, reason }));
                } else {
                    batch.unanswered.push(index);
                    batch.failed[reason.index()] += 1;
                    local.stats.failed(reason);
                    local.delta.failed[reason.index()] += 1;
                    if !last_attempt && !run.is_aborted() {
                        local.delta.budget_exhausted += 1;
                    }
                    local.delta.undelivered.push(DeviceNote { device, reason, at: SystemTime::now() });
                }
            }
        }
        if batch.outstanding == 0 && self.current != Some(slot) {
            self.close_batch(slot);
        }
    }

    /// Sends the retries that are due, within the in-flight window. Returns
    /// true if it sent any.
    fn send_due_retries(&mut self, now: Instant) -> bool {
        let mut sent = false;
        while self.inflight.len() < self.limit {
            match self.retries.peek() {
                Some(Reverse(d)) if d.at <= now => {}
                _ => break,
            }
            let Reverse(due) = self.retries.pop().expect("peeked");
            let Self { session, shared, inflight, slots, runs, token, stamps, .. } = self;
            let batch = slots[due.slot as usize].as_mut().expect("retry of an open batch");
            let local = &runs[batch.run];
            let warm = &shared.warm;
            let shard = &warm.audience.shards()[batch.msg.shard as usize];
            let routes = &warm.routes[batch.msg.shard as usize];
            let platform = batch.msg.platform;
            let locale = shard.locale(platform, due.index as usize);
            let req = PushRequest {
                device: DeviceRef { shard: batch.msg.shard, platform, index: due.index },
                token: shard.token_text(platform, due.index as usize, token),
                payload: warm.payloads.get(platform, usize::from(routes.payload_of_locale[usize::from(locale)])),
                apns: &local.run.apns,
            };
            match session.send(&req) {
                // The retry stays counted as outstanding while in flight.
                Handoff::Pending(fut) => {
                    inflight.push(InFlight { fut, slot: due.slot, index: due.index, attempt: due.attempt, sent_at: stamp(stamps) });
                }
                Handoff::Done(o) => self.outcome(due.slot, due.index, due.attempt, o, now),
            }
            sent = true;
        }
        sent
    }

    /// Retries of an aborted fire are not sent: they end as failures now.
    fn resolve_aborted_retries(&mut self) {
        if !self.retries.iter().any(|Reverse(d)| self.is_aborted(d.slot)) {
            return;
        }
        let now = Instant::now();
        let (aborted, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.retries).into_iter().partition(|Reverse(d)| self.is_aborted(d.slot));
        self.retries = keep.into_iter().collect();
        for Reverse(d) in aborted {
            // As if this were the last attempt: it fails with the reason of
            // the attempt before.
            self.outcome(d.slot, d.index, u8::MAX - 1, Outcome::Retry { reason: d.reason, after: None }, now);
        }
    }

    fn is_aborted(&self, slot: u32) -> bool {
        self.slots[slot as usize].as_ref().is_some_and(|b| self.runs[b.run].run.is_aborted())
    }

    /// A request could not reach the provider: hand-offs pause until `until`
    /// (the outage is logged once, when it starts).
    fn enter_outage(&mut self, now: Instant, until: Instant) {
        if self.outage.is_none() {
            // A flapping provider (connections coming back one by one, a
            // token refresh right after) is one state change in the log.
            if self.outage_logged.is_some_and(|t| now.saturating_duration_since(t) < OUTAGE_LOG_QUIET) {
                tracing::debug!("hand-offs paused again");
            } else {
                self.outage_logged = Some(now);
                tracing::warn!(
                    "a provider is not taking requests (no live connection, or its access token is being refreshed): hand-offs paused"
                );
            }
            self.outage = Some(now);
        }
        self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
        self.pause = (self.pause * 2).min(MAX_PAUSE);
    }

    /// Past the outage timeout, every fire of this worker stops as
    /// interrupted: resumable, nothing counted as delivered that was not.
    fn check_outage(&mut self) {
        let timeout = self.shared.config.outage_timeout;
        let Some(since) = self.outage.filter(|since| since.elapsed() >= timeout) else { return };
        let why = format!(
            "the provider was unreachable for {} s (the outage timeout): the fire stopped, resume it when the provider is back",
            since.elapsed().as_secs()
        );
        for local in &self.runs {
            if !local.run.is_aborted() {
                tracing::error!(campaign = %local.run.campaign_id, "{why}");
                local.run.interrupt(&why);
            }
        }
    }

    fn close_batch(&mut self, slot: u32) {
        let batch = self.slots[slot as usize].take().expect("open batch");
        self.free_slots.push(slot);
        let local = &mut self.runs[batch.run];
        local.delta.batches_done += 1;
        local.open_batches -= 1;
        if let Some(journal) = &self.shared.journal {
            let m = &batch.msg;
            journal.record(
                &m.campaign_id,
                super::journal::JournalEntry {
                    shard: m.shard,
                    platform: m.platform,
                    start: m.start,
                    end: batch.next,
                    unanswered: batch.unanswered.clone(),
                },
            );
        }
        if let Some(hook) = &self.shared.on_batch_done {
            let failed = FailReason::ALL
                .iter()
                .filter(|r| batch.failed[r.index()] > 0)
                .map(|r| (r.as_str().to_owned(), batch.failed[r.index()]))
                .collect();
            hook(super::BatchDone {
                handed_off: batch.next - batch.msg.start,
                unsent: batch.msg.end - batch.next,
                delivered: batch.delivered,
                failed,
                in_doubt: batch.in_doubt,
                msg: batch.msg,
            });
        }
    }

    /// Reports every run's counts: first the metrics sink, then the run's
    /// counters, the batch count last (it may complete the run).
    fn flush(&mut self) {
        self.last_flush = Instant::now();
        self.update_limit();
        for local in &mut self.runs {
            if !local.stats.is_empty() {
                self.shared.metrics.record(&local.run.campaign_id, &local.stats);
                local.stats.clear();
            }
            if !local.delta.is_empty() {
                let delta = std::mem::take(&mut local.delta);
                local.run.apply(delta);
                self.shared.try_complete(&local.run);
            }
        }
        // Forget runs with nothing open; batch slots refer to runs by index,
        // so only trailing entries can go.
        while self.runs.last().is_some_and(|r| r.open_batches == 0) {
            self.runs.pop();
        }
    }

    /// After an abort, sends still unanswered past the drain timeout are
    /// abandoned and reported as in doubt, so an unresponsive provider cannot
    /// hold the abort open.
    fn drop_abandoned(&mut self) {
        let timeout = self.shared.config.drain_timeout;
        let expired: Vec<usize> = self
            .runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.run.abort_instant().is_some_and(|t| t.elapsed() >= timeout))
            .map(|(i, _)| i)
            .collect();
        if expired.is_empty() || self.inflight.is_empty() {
            return;
        }
        let old = std::mem::take(&mut self.inflight);
        let mut closed = Vec::new();
        for f in old {
            let batch = self.slots[f.slot as usize].as_mut().expect("open batch");
            if expired.contains(&batch.run) {
                batch.outstanding -= 1;
                batch.in_doubt += 1;
                batch.unanswered.push(f.index);
                self.runs[batch.run].delta.in_doubt += 1;
                if batch.outstanding == 0 && self.current != Some(f.slot) {
                    closed.push(f.slot);
                }
            } else {
                self.inflight.push(f);
            }
        }
        for slot in closed {
            self.close_batch(slot);
        }
    }
}
