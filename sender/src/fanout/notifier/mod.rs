//! The notifier tier: a worker takes batch messages, walks each range of its
//! shard, and hands every device to its provider session, keeping up to
//! `in_flight_per_worker` sends outstanding *per provider*.
//!
//! A worker owns one OS thread and a current-thread runtime: its session's
//! connections, its in-flight futures and its counters never cross threads.
//! Counts go into a private [`FanoutStats`] and reach the shared run and the
//! metrics sink in one flush every ~100 ms, never per device.
//!
//! Each provider is a [`Lane`] of its own: its own batch queue, in-flight
//! window, retries and outage state. A mixed audience therefore takes as
//! long as its larger provider share, not the sum of both, and one
//! provider's trouble (a full window of slow answers, an outage) never
//! slows the other.
//!
//! Transient failures are retried here, with jittered exponential backoff
//! that honours the provider's `retry-after`, and only while the fire's
//! retry budget allows: a provider outage cannot multiply the traffic. A
//! request that never reached the provider costs no budget: its lane pauses
//! and sends it again once a connection is back.

use std::cmp::Reverse;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::Shared;
use super::run::{FireRun, RunDelta, UnsentRange};
use crate::audience::Platform;
use crate::metrics::FanoutStats;
use crate::push::{DeviceRef, FailReason, Handoff, Outcome, PushRequest, Session};
use crate::queue::BatchMsg;
use crate::rng::SplitMix64;
use lane::{Lane, Tries};

mod answers;
mod lane;

const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Synchronous deliveries are time-stamped once per this many devices: an
/// `Instant::now()` per device would cost more than the send itself.
const STAMP_EVERY: u64 = 256;
/// One pending send in this many is time-stamped to measure the provider's
/// round trip.
const RTT_SAMPLE_EVERY: u32 = 64;
/// A request lost with its connection is sent again this many times at no
/// cost to the retry budget; after that, as a budgeted retry (a request
/// that kills every connection it is sent on must not loop forever).
const MAX_FREE_RESENDS: u8 = 3;

/// A send in flight, tagged with its device.
struct InFlight<F> {
    fut: F,
    slot: u32,
    index: u32,
    lane: u8,
    tries: Tries,
    /// When it was sent, for one send in [`RTT_SAMPLE_EVERY`].
    sent_at: Option<Instant>,
}

/// An answer, with what the notifier needs to place it.
struct Answer {
    slot: u32,
    index: u32,
    lane: u8,
    tries: Tries,
    outcome: Outcome,
    sent_at: Option<Instant>,
}

impl<F: Future<Output = Outcome> + Unpin> Future for InFlight<F> {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let (slot, index, lane, tries, sent_at) = (self.slot, self.index, self.lane, self.tries, self.sent_at);
        Pin::new(&mut self.fut).poll(cx).map(|outcome| Answer { slot, index, lane, tries, outcome, sent_at })
    }
}

/// Counts pending sends and stamps one in [`RTT_SAMPLE_EVERY`].
fn stamp(counter: &mut u32) -> Option<Instant> {
    *counter = counter.wrapping_add(1);
    counter.is_multiple_of(RTT_SAMPLE_EVERY).then(Instant::now)
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
    /// The lanes this run was told are down (so it is told when they are up).
    told_down: [bool; 2],
}

pub(crate) struct Notifier<S: Session> {
    session: S,
    shared: Arc<Shared>,
    inflight: FuturesUnordered<InFlight<S::Pending>>,
    lanes: [Lane; 2],
    slots: Vec<Option<OpenBatch>>,
    free_slots: Vec<u32>,
    runs: Vec<RunLocal>,
    token: Vec<u8>,
    rng: SplitMix64,
    last_flush: Instant,
    /// Pending sends so far, for round-trip sampling.
    stamps: u32,
}

impl<S: Session> Notifier<S> {
    pub(crate) fn new(session: S, shared: Arc<Shared>, seed: u64) -> Self {
        let mut notifier = Self {
            session,
            shared,
            inflight: FuturesUnordered::new(),
            lanes: Platform::ALL.map(Lane::new),
            slots: Vec::new(),
            free_slots: Vec::new(),
            runs: Vec::new(),
            token: Vec::with_capacity(256),
            rng: SplitMix64::new(seed),
            last_flush: Instant::now(),
            stamps: 0,
        };
        notifier.update_limits();
        notifier
    }

    /// Each lane's in-flight window: the engine's limit, within what the
    /// session can carry to that provider now (a provider may raise its
    /// stream limit after the first valid request, or lower it).
    fn update_limits(&mut self) {
        for lane in &mut self.lanes {
            lane.set_limit(self.shared.config.in_flight_per_worker, self.session.capacity(lane.platform));
        }
    }

    /// Works until both batch queues are closed and everything in flight is
    /// done.
    pub(crate) async fn run(mut self) {
        loop {
            let now = Instant::now();
            let mut busy = false;
            for lane in 0..2 {
                busy |= self.send_due_retries(lane, now);
            }
            if busy {
                continue;
            }
            for lane in 0..2 {
                if self.lanes[lane].wants_hand_off(now) {
                    self.hand_off(lane);
                    busy = true;
                }
                if self.lanes[lane].can_take(now)
                    && let Some(msg) = self.shared.batch_queue(self.lanes[lane].platform).try_recv()
                {
                    self.open(msg);
                    busy = true;
                }
            }
            if self.last_flush.elapsed() >= FLUSH_EVERY {
                self.check_outages();
                self.resolve_aborted_retries();
                self.drop_abandoned();
                self.flush();
            }
            if busy {
                // More may be ready at once: waiting here would idle a
                // lane that can send (a synchronous session never fills
                // its window).
                continue;
            }
            if self.lanes.iter().all(Lane::idle) {
                // Idle: report everything before waiting.
                self.flush();
                if self.lanes.iter().all(|l| l.closed) {
                    return;
                }
                let [ios, android] = &self.lanes;
                let (ios_open, android_open) = (!ios.closed, !android.closed);
                let shared = self.shared.clone();
                tokio::select! {
                    msg = shared.batch_queue(Platform::Ios).recv(), if ios_open => self.received(0, msg),
                    msg = shared.batch_queue(Platform::Android).recv(), if android_open => self.received(1, msg),
                }
                continue;
            }
            let now = Instant::now();
            let can_take = [self.lanes[0].can_take(now), self.lanes[1].can_take(now)];
            let mut wake = now + FLUSH_EVERY;
            for lane in &self.lanes {
                if let Some(Reverse(d)) = lane.retries.peek() {
                    wake = wake.min(d.at);
                }
                if let Some(t) = lane.paused_until.filter(|t| now < *t) {
                    wake = wake.min(t);
                }
            }
            let shared = self.shared.clone();
            tokio::select! {
                biased;
                Some(answer) = self.inflight.next(), if !self.inflight.is_empty() => {
                    let now = Instant::now();
                    self.answer(answer, now);
                    // Take every other answer that is already in.
                    while let Some(Some(answer)) = futures_util::FutureExt::now_or_never(self.inflight.next()) {
                        self.answer(answer, now);
                    }
                }
                msg = shared.batch_queue(Platform::Ios).recv(), if can_take[0] => self.received(0, msg),
                msg = shared.batch_queue(Platform::Android).recv(), if can_take[1] => self.received(1, msg),
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// A batch from lane `lane`'s queue, or its close.
    fn received(&mut self, lane: usize, msg: Option<BatchMsg>) {
        match msg {
            Some(msg) => self.open(msg),
            None => self.lanes[lane].closed = true,
        }
    }

    fn answer(&mut self, a: Answer, now: Instant) {
        self.lanes[usize::from(a.lane)].inflight -= 1;
        self.rtt(a.slot, a.sent_at, now);
        self.outcome(a.slot, a.index, a.tries, a.outcome, now);
    }

    fn open(&mut self, msg: BatchMsg) {
        let Some(run) = self.shared.run(&msg.campaign_id) else {
            tracing::warn!(campaign = %msg.campaign_id, "batch for an unknown run; dropped");
            return;
        };
        let run_index = match self.runs.iter().position(|r| Arc::ptr_eq(&r.run, &run)) {
            Some(i) => i,
            None => {
                let mut local =
                    RunLocal { run, stats: FanoutStats::default(), delta: RunDelta::default(), open_batches: 0, told_down: [false; 2] };
                // A lane already down is down for this run too.
                for lane in &self.lanes {
                    if let Some(since) = lane.outage_since() {
                        local.run.provider_down(lane.platform, since);
                        local.told_down[lane.platform as usize] = true;
                    }
                }
                self.runs.push(local);
                self.runs.len() - 1
            }
        };
        self.runs[run_index].open_batches += 1;
        let lane = msg.platform as usize;
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
        debug_assert!(self.lanes[lane].current.is_none(), "a lane opens one batch at a time");
        self.lanes[lane].current = Some(slot);
    }

    /// Hands devices of lane `lane`'s current batch to the session until
    /// the batch ends, the lane's window is full, or the run is aborted.
    fn hand_off(&mut self, lane_index: usize) {
        let Some(slot) = self.lanes[lane_index].current else { return };
        let Self { session, shared, inflight, slots, runs, token, stamps, lanes, .. } = self;
        let lane = &mut lanes[lane_index];
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
        let window = lane.window();
        let draining = shared.draining.load(std::sync::atomic::Ordering::Acquire);
        while i < end && lane.inflight < window {
            if run.is_aborted() || draining {
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
                    inflight.push(InFlight {
                        fut,
                        slot,
                        index: i,
                        lane: lane_index as u8,
                        tries: Tries::default(),
                        sent_at: stamp(stamps),
                    });
                    lane.inflight += 1;
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
        lane.full = lane.inflight >= window;
        let finished = i == batch.msg.end || run.is_aborted() || draining;
        if finished && i < batch.msg.end {
            run.unsent(UnsentRange { shard: batch.msg.shard, platform, start: i, end: batch.msg.end });
        }
        // Count the deferred answers as outstanding so the batch cannot close
        // before they are handled.
        batch.outstanding += other.len() as u32;
        if finished {
            lane.current = None;
        }
        for (index, o) in other {
            self.outcome(slot, index, Tries::default(), o, now);
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

    fn is_aborted(&self, slot: u32) -> bool {
        self.slots[slot as usize].as_ref().is_some_and(|b| self.runs[b.run].run.is_aborted())
    }

    /// A request could not reach lane `lane`'s provider: its hand-offs
    /// pause until `until`; the runs are told when the outage starts.
    fn enter_outage(&mut self, lane_index: usize, now: Instant, until: Instant) {
        if let Some(since) = self.lanes[lane_index].enter_outage(now, until) {
            let platform = self.lanes[lane_index].platform;
            for local in &mut self.runs {
                local.run.provider_down(platform, since);
                local.told_down[lane_index] = true;
            }
        }
    }

    /// Lane `lane`'s provider answers again.
    fn leave_outage(&mut self, lane_index: usize, now: Instant) {
        self.lanes[lane_index].leave_outage(now);
        self.tell_up(lane_index);
    }

    /// Tells every run that lane `lane` is up.
    fn tell_up(&mut self, lane_index: usize) {
        let platform = self.lanes[lane_index].platform;
        for local in &mut self.runs {
            if std::mem::take(&mut local.told_down[lane_index]) {
                local.run.provider_up(platform);
            }
        }
    }

    /// Past the outage timeout (unreachable, or throttled without a single
    /// answer), every fire of this worker stops as interrupted: resumable,
    /// nothing counted as delivered that was not. The lane then starts
    /// afresh (a long-lived worker's next fire must not inherit it).
    fn check_outages(&mut self) {
        let timeout = self.shared.config.outage_timeout;
        for lane in 0..2 {
            let Some(why) = self.lanes[lane].timed_out(timeout) else { continue };
            for local in &self.runs {
                if !local.run.is_aborted() {
                    tracing::error!(campaign = %local.run.campaign_id, "{why}");
                    local.run.interrupt(&why);
                }
            }
            self.lanes[lane].reset();
            self.tell_up(lane);
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
        let policy = self.shared.config.retry;
        for lane in &mut self.lanes {
            lane.pace(self.last_flush, &policy);
        }
        self.update_limits();
        for local in &mut self.runs {
            // The run's hand-off counts ride along to the sinks too.
            let d = &local.delta;
            (local.stats.handed_off, local.stats.retried, local.stats.throttled, local.stats.in_doubt) =
                (d.handed_off, d.retried, d.throttled, d.in_doubt);
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
            let local = self.runs.pop().expect("checked");
            for lane in &self.lanes {
                if local.told_down[lane.platform as usize] {
                    local.run.provider_up(lane.platform);
                }
            }
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
                self.lanes[usize::from(f.lane)].inflight -= 1;
                self.runs[batch.run].delta.in_doubt += 1;
                if batch.outstanding == 0 && self.lanes[usize::from(f.lane)].current != Some(f.slot) {
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
