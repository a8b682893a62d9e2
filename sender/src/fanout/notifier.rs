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
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::Shared;
use super::run::{DeviceNote, FireRun, RunDelta, UnsentRange};
use crate::audience::Platform;
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
/// A request lost with its connection is sent again this many times at no
/// cost to the retry budget; after that, as a budgeted retry (a request
/// that kills every connection it is sent on must not loop forever).
const MAX_FREE_RESENDS: u8 = 3;
/// A device the provider throttled (429) goes again this many times at no
/// cost to the retry budget (the lane slows down instead); after that its
/// 429s are budgeted retries.
const MAX_FREE_THROTTLED: u8 = 8;
/// An interval is throttled when more than one answer in this many is a
/// 429 (a stray per-device 429 from APNs does not slow the lane).
const THROTTLED_SHARE: u32 = 50;
/// The longest a throttled lane pauses without a `retry-after`.
const MAX_THROTTLE_PAUSE: Duration = Duration::from_secs(4);

/// Outages closer than this to the last one logged are not logged again.
const OUTAGE_LOG_QUIET: Duration = Duration::from_secs(10);

/// The first pause after a request could not reach the provider; it
/// doubles up to [`MAX_PAUSE`] while the outage lasts.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Where a send stands in its device's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
struct Tries {
    /// Budgeted attempts so far (0: the first send).
    attempt: u8,
    /// Free re-sends after a lost connection.
    resends: u8,
    /// Free re-sends after a 429.
    throttled: u8,
}

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

/// A device waiting for its next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Instant,
    slot: u32,
    index: u32,
    tries: Tries,
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
    /// The lanes this run was told are down (so it is told when they are up).
    told_down: [bool; 2],
}

/// One provider's side of a worker: its window, its batch, its retries and
/// whether it can be reached.
struct Lane {
    platform: Platform,
    limit: usize,
    /// Once the window is full, hand-offs resume only below this mark, so
    /// requests leave in groups (one write for many) rather than one per
    /// answer.
    low_water: usize,
    /// Sends of this lane in the worker's in-flight set.
    inflight: usize,
    /// The batch being handed off.
    current: Option<u32>,
    retries: BinaryHeap<Reverse<Due>>,
    /// The lane's batch queue is closed.
    closed: bool,
    /// Since when no request reaches the provider (an outage).
    outage: Option<(Instant, SystemTime)>,
    /// Hand-offs wait until then (the provider has no live connection).
    paused_until: Option<Instant>,
    /// The next pause, doubling while the outage lasts.
    pause: Duration,
    /// When an outage was last logged.
    outage_logged: Option<Instant>,
    /// The window the provider's throttling allows now (at most `limit`):
    /// halved for each throttled interval, grown back by a sixteenth of
    /// `limit` for each clean one.
    cwnd: usize,
    /// Answers and 429s since the last flush; the longest `retry-after`.
    answers: u32,
    throttled: u32,
    retry_after: Option<Duration>,
    /// Throttled intervals in a row (the pause doubles with them).
    throttled_run: u32,
    /// Since when the lane has had no delivery nor final answer while
    /// throttled: bounded by the outage timeout, like an outage.
    stalled: Option<Instant>,
}

impl Lane {
    fn new(platform: Platform) -> Self {
        Self {
            platform,
            limit: 1,
            low_water: 1,
            inflight: 0,
            current: None,
            retries: BinaryHeap::new(),
            closed: false,
            outage: None,
            paused_until: None,
            pause: FIRST_PAUSE,
            outage_logged: None,
            cwnd: usize::MAX,
            answers: 0,
            throttled: 0,
            retry_after: None,
            throttled_run: 0,
            stalled: None,
        }
    }

    /// The window in force: the limit, within what throttling allows.
    fn window(&self) -> usize {
        self.limit.min(self.cwnd).max(1)
    }

    fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| now < t)
    }

    /// Can take a new batch from its queue.
    fn can_take(&self, now: Instant) -> bool {
        self.current.is_none() && self.inflight < self.window() && !self.closed && !self.paused(now)
    }

    fn idle(&self) -> bool {
        self.inflight == 0 && self.current.is_none() && self.retries.is_empty()
    }

    /// Back to normal after an outage ended or its fires stopped.
    fn clear_outage(&mut self) {
        self.outage = None;
        self.paused_until = None;
        self.pause = FIRST_PAUSE;
    }
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
            let limit = self.shared.config.in_flight_per_worker.min(self.session.capacity(lane.platform).unwrap_or(usize::MAX)).max(1);
            lane.limit = limit;
            lane.cwnd = lane.cwnd.min(limit);
            let window = lane.window();
            lane.low_water = if window > 1 { window - (window / 16).clamp(1, 64) } else { 1 };
        }
    }

    /// Once per flush: a lane whose provider throttled it (429s) halves its
    /// window and pauses (the provider's `retry-after`, else a backoff that
    /// doubles while the throttling lasts); a clean interval grows the
    /// window back. This paces the lane to what the provider takes, instead
    /// of spending the retry budget against it.
    fn pace(&mut self, now: Instant) {
        let policy = self.shared.config.retry;
        for lane in &mut self.lanes {
            let throttled = lane.throttled > 0 && lane.throttled.saturating_mul(THROTTLED_SHARE) > lane.answers;
            if throttled {
                if lane.throttled_run == 0 {
                    tracing::warn!(
                        provider = lane.platform.provider(),
                        "{} is throttling (429): its window halves and its hand-offs are paced",
                        lane.platform.provider()
                    );
                }
                lane.throttled_run += 1;
                lane.cwnd = (lane.window() / 2).max(1);
                let backoff = policy.base.saturating_mul(1 << lane.throttled_run.min(8)).min(MAX_THROTTLE_PAUSE);
                let pause = lane.retry_after.map_or(backoff, |after| after.min(policy.max));
                lane.paused_until = Some(lane.paused_until.map_or(now + pause, |t| t.max(now + pause)));
            } else if lane.answers > lane.throttled {
                if lane.throttled_run > 0 {
                    tracing::info!(
                        provider = lane.platform.provider(),
                        "{} takes requests again: its window grows back",
                        lane.platform.provider()
                    );
                }
                lane.throttled_run = 0;
                if lane.cwnd < lane.limit {
                    lane.cwnd = lane.cwnd.saturating_add((lane.limit / 16).max(1)).min(lane.limit);
                }
            }
            (lane.answers, lane.throttled, lane.retry_after) = (0, 0, None);
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
                let l = &self.lanes[lane];
                if l.current.is_some() && l.inflight < l.low_water && !l.paused(now) {
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
            if busy && self.last_flush.elapsed() < FLUSH_EVERY {
                continue;
            }
            if self.last_flush.elapsed() >= FLUSH_EVERY {
                self.check_outages();
                self.resolve_aborted_retries();
                self.drop_abandoned();
                self.flush();
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
                    if let Some((_, since)) = lane.outage {
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

    /// Counts a device that ends without a final answer for `reason`.
    fn undelivered(&mut self, slot: u32, index: u32, reason: FailReason) {
        let batch = self.slots[slot as usize].as_mut().expect("answer for an open batch");
        let device = DeviceRef { shard: batch.msg.shard, platform: batch.msg.platform, index };
        let local = &mut self.runs[batch.run];
        batch.unanswered.push(index);
        batch.failed[reason.index()] += 1;
        local.stats.failed(reason);
        local.delta.failed[reason.index()] += 1;
        local.delta.undelivered.push(DeviceNote { device, reason, at: SystemTime::now() });
    }

    /// Closes the batch of `slot` once nothing of it is outstanding.
    fn close_if_done(&mut self, slot: u32) {
        let Some(batch) = self.slots[slot as usize].as_ref() else { return };
        let lane = batch.msg.platform as usize;
        if batch.outstanding == 0 && self.lanes[lane].current != Some(slot) {
            self.close_batch(slot);
        }
    }

    /// Handles one answer: counts it, prunes dead tokens, schedules retries.
    fn outcome(&mut self, slot: u32, index: u32, tries: Tries, outcome: Outcome, now: Instant) {
        let batch = self.slots[slot as usize].as_mut().expect("answer for an open batch");
        batch.outstanding -= 1;
        let platform = batch.msg.platform;
        let lane = platform as usize;
        let aborted = self.runs[batch.run].run.is_aborted();
        let outcome = match outcome {
            Outcome::Lost if tries.resends >= MAX_FREE_RESENDS => Outcome::Retry { reason: FailReason::Transport, after: None },
            o => o,
        };
        if matches!(outcome, Outcome::Unsent | Outcome::Lost) {
            if aborted {
                // An aborted fire does not wait for the provider.
                self.undelivered(slot, index, FailReason::Transport);
                self.close_if_done(slot);
                return;
            }
            batch.outstanding += 1;
            let l = &self.lanes[lane];
            let (at, tries) = match outcome {
                // Never reached the provider: the lane pauses.
                Outcome::Unsent => (now + l.pause, tries),
                // Lost with its connection: again as soon as the lane may
                // send (a dead connection shows as "no connection" next).
                _ => (l.paused_until.unwrap_or(now).max(now), Tries { resends: tries.resends + 1, ..tries }),
            };
            self.lanes[lane].retries.push(Reverse(Due { at, slot, index, tries, reason: FailReason::Transport }));
            if outcome == Outcome::Unsent {
                self.enter_outage(lane, now, at);
            }
            return;
        }
        if self.lanes[lane].outage.is_some() {
            self.leave_outage(lane, now);
        }
        let l = &mut self.lanes[lane];
        l.answers = l.answers.saturating_add(1);
        if let Outcome::Retry { reason: FailReason::TooManyRequests, after } = outcome
            && tries.throttled < MAX_FREE_THROTTLED
            && !aborted
        {
            // Throttled: the lane slows down (see `pace`) and the device
            // goes again, at no cost to the budget.
            l.throttled += 1;
            l.retry_after = l.retry_after.max(after);
            l.stalled.get_or_insert(now);
            let retry = &self.shared.config.retry;
            let delay = retry.delay(tries.throttled.min(4), after, &mut self.rng);
            let at = now.checked_add(delay).unwrap_or(now + retry.max);
            self.lanes[lane].retries.push(Reverse(Due {
                at,
                slot,
                index,
                tries: Tries { throttled: tries.throttled + 1, ..tries },
                reason: FailReason::TooManyRequests,
            }));
            let batch = self.slots[slot as usize].as_mut().expect("answer for an open batch");
            batch.outstanding += 1;
            self.runs[batch.run].delta.throttled += 1;
            return;
        }
        if matches!(outcome, Outcome::Delivered | Outcome::Failed(_)) {
            l.stalled = None;
        }
        let retry = &self.shared.config.retry;
        let batch = self.slots[slot as usize].as_mut().expect("answer for an open batch");
        let device = DeviceRef { shard: batch.msg.shard, platform, index };
        let local = &mut self.runs[batch.run];
        let run = &local.run;
        local.delta.last_outcome = Some(now);
        match outcome {
            // Handled above.
            Outcome::Unsent | Outcome::Lost => {}
            Outcome::Delivered => {
                local.stats.delivered(platform, now - run.fired_at, 1);
                local.delta.delivered += 1;
                batch.delivered += 1;
            }
            Outcome::Failed(reason) if reason.is_final() => {
                batch.failed[reason.index()] += 1;
                local.stats.failed(reason);
                local.delta.failed[reason.index()] += 1;
                if reason.prunes() {
                    local.delta.pruned.push(DeviceNote { device, reason, at: SystemTime::now() });
                }
            }
            Outcome::Failed(reason) => {
                // Credentials refused, the provider stopped, an unknown
                // answer: no final answer for this device.
                batch.unanswered.push(index);
                batch.failed[reason.index()] += 1;
                local.stats.failed(reason);
                local.delta.failed[reason.index()] += 1;
                if reason == FailReason::Unexpected {
                    local.delta.undelivered.push(DeviceNote { device, reason, at: SystemTime::now() });
                }
            }
            Outcome::Retry { reason, after } => {
                let last_attempt = tries.attempt + 1 >= retry.max_attempts;
                if !last_attempt && !run.is_aborted() && run.try_retry(&retry.budget) {
                    let delay = retry.delay(tries.attempt, after, &mut self.rng);
                    batch.outstanding += 1;
                    local.delta.retried += 1;
                    let at = now.checked_add(delay).unwrap_or(now + retry.max);
                    let tries = Tries { attempt: tries.attempt + 1, ..tries };
                    self.lanes[lane].retries.push(Reverse(Due { at, slot, index, tries, reason }));
                } else {
                    if !last_attempt && !run.is_aborted() {
                        local.delta.budget_exhausted += 1;
                    }
                    self.undelivered(slot, index, reason);
                }
            }
        }
        self.close_if_done(slot);
    }

    /// Sends lane `lane`'s retries that are due, within its window. Returns
    /// true if it sent any.
    fn send_due_retries(&mut self, lane_index: usize, now: Instant) -> bool {
        let mut sent = false;
        loop {
            let lane = &self.lanes[lane_index];
            if lane.inflight >= lane.window() || lane.paused(now) {
                break;
            }
            match lane.retries.peek() {
                Some(Reverse(d)) if d.at <= now => {}
                _ => break,
            }
            let Self { session, shared, inflight, slots, runs, token, stamps, lanes, .. } = self;
            let lane = &mut lanes[lane_index];
            let Reverse(due) = lane.retries.pop().expect("peeked");
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
                    inflight.push(InFlight {
                        fut,
                        slot: due.slot,
                        index: due.index,
                        lane: lane_index as u8,
                        tries: due.tries,
                        sent_at: stamp(stamps),
                    });
                    lane.inflight += 1;
                }
                Handoff::Done(o) => self.outcome(due.slot, due.index, due.tries, o, now),
            }
            sent = true;
        }
        sent
    }

    /// Retries of an aborted fire are not sent: they end as failures now.
    fn resolve_aborted_retries(&mut self) {
        let now = Instant::now();
        for lane in 0..2 {
            if !self.lanes[lane].retries.iter().any(|Reverse(d)| self.is_aborted(d.slot)) {
                continue;
            }
            let (aborted, keep): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.lanes[lane].retries).into_iter().partition(|Reverse(d)| self.is_aborted(d.slot));
            self.lanes[lane].retries = keep.into_iter().collect();
            for Reverse(d) in aborted {
                // As if this were the last attempt: it fails with the reason
                // of the attempt before.
                let last = Tries { attempt: u8::MAX - 1, ..d.tries };
                self.outcome(d.slot, d.index, last, Outcome::Retry { reason: d.reason, after: None }, now);
            }
        }
    }

    fn is_aborted(&self, slot: u32) -> bool {
        self.slots[slot as usize].as_ref().is_some_and(|b| self.runs[b.run].run.is_aborted())
    }

    /// A request could not reach lane `lane`'s provider: its hand-offs
    /// pause until `until` (the outage is logged once, when it starts).
    fn enter_outage(&mut self, lane_index: usize, now: Instant, until: Instant) {
        let lane = &mut self.lanes[lane_index];
        if lane.outage.is_none() {
            let provider = lane.platform.provider();
            // A flapping provider (connections coming back one by one, a
            // token refresh right after) is one state change in the log.
            if lane.outage_logged.is_some_and(|t| now.saturating_duration_since(t) < OUTAGE_LOG_QUIET) {
                tracing::debug!(provider, "hand-offs paused again");
            } else {
                lane.outage_logged = Some(now);
                tracing::warn!(
                    provider,
                    "{provider} is not taking requests (no live connection, or its access token is being refreshed): its hand-offs paused"
                );
            }
            let since = SystemTime::now();
            lane.outage = Some((now, since));
            for local in &mut self.runs {
                local.run.provider_down(lane.platform, since);
                local.told_down[lane_index] = true;
            }
        }
        let lane = &mut self.lanes[lane_index];
        lane.paused_until = Some(lane.paused_until.map_or(until, |t| t.max(until)));
        lane.pause = (lane.pause * 2).min(MAX_PAUSE);
    }

    /// Lane `lane`'s provider answers again.
    fn leave_outage(&mut self, lane_index: usize, now: Instant) {
        let lane = &mut self.lanes[lane_index];
        if let Some((since, _)) = lane.outage {
            tracing::info!(provider = lane.platform.provider(), after = ?now.saturating_duration_since(since), "the provider answers again: its hand-offs resume");
        }
        lane.clear_outage();
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

    /// Past the outage timeout, every fire of this worker stops as
    /// interrupted: resumable, nothing counted as delivered that was not.
    /// The lane then starts afresh (a long-lived worker's next fire must
    /// not inherit the outage).
    fn check_outages(&mut self) {
        let timeout = self.shared.config.outage_timeout;
        for lane in 0..2 {
            let l = &self.lanes[lane];
            let provider = l.platform.provider();
            let why = if let Some((since, _)) = l.outage.filter(|(since, _)| since.elapsed() >= timeout) {
                format!(
                    "{provider} was unreachable for {} s (the outage timeout): the fire stopped, resume it when the provider is back",
                    since.elapsed().as_secs()
                )
            } else if let Some(since) = l.stalled.filter(|since| since.elapsed() >= timeout) {
                format!(
                    "{provider} throttled every request (429) for {} s (the outage timeout): the fire stopped, resume it when the provider takes requests",
                    since.elapsed().as_secs()
                )
            } else {
                continue;
            };
            for local in &self.runs {
                if !local.run.is_aborted() {
                    tracing::error!(campaign = %local.run.campaign_id, "{why}");
                    local.run.interrupt(&why);
                }
            }
            let l = &mut self.lanes[lane];
            l.clear_outage();
            (l.stalled, l.cwnd, l.throttled_run) = (None, usize::MAX, 0);
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
        self.pace(self.last_flush);
        self.update_limits();
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
