//! One provider's side of a notifier worker: its in-flight window, the
//! batch it hands off, its retries, and whether the provider can be reached
//! and at what pace.
//!
//! ```text
//!            no live connection                 an answer
//!  normal ───────────────────────▶ outage ──────────────────▶ normal
//!    │        (pause 50 ms, doubling to 1 s; past the outage timeout: the
//!    │         fire stops interrupted, the lane starts afresh)
//!    │  > 1 answer in 50 is a 429 (per ~100 ms)      a clean interval
//!    └──────────────────────────────▶ throttled ───────────────────▶ normal
//!       (window halved per interval, pause = retry-after ≤ the policy's
//!        maximum, else 0.5 s doubling to 4 s; window grows back a sixteenth
//!        per clean interval; no delivery for the outage timeout: stops)
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant, SystemTime};

use crate::audience::Platform;
use crate::fanout::RetryPolicy;
use crate::push::{FailReason, Outcome};

/// A device the provider throttled (429) goes again this many times at no
/// cost to the retry budget (the lane slows down instead); after that its
/// 429s are budgeted retries (a token APNs keeps refusing as "too many
/// requests" must not hold its batch open forever).
pub(super) const MAX_FREE_THROTTLED: u8 = 8;
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
pub(super) struct Tries {
    /// Budgeted attempts so far (0: the first send).
    pub(super) attempt: u8,
    /// Free re-sends after a lost connection.
    pub(super) resends: u8,
    /// Free re-sends after a 429.
    pub(super) throttled: u8,
}

/// A device waiting for its next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Due {
    pub(super) at: Instant,
    pub(super) slot: u32,
    pub(super) index: u32,
    pub(super) tries: Tries,
    /// Why the last attempt failed.
    pub(super) reason: FailReason,
}

/// One provider's side of a worker.
#[derive(Debug)]
pub(super) struct Lane {
    pub(super) platform: Platform,
    limit: usize,
    /// Once the window is full, hand-offs resume only below this mark, so
    /// requests leave in groups (one write for many) rather than one per
    /// answer.
    pub(super) low_water: usize,
    /// Sends of this lane in the worker's in-flight set.
    pub(super) inflight: usize,
    /// The batch being handed off.
    pub(super) current: Option<u32>,
    /// The window filled: hand-offs wait until it drains below
    /// `low_water` (a batch opened meanwhile waits too).
    pub(super) full: bool,
    pub(super) retries: BinaryHeap<Reverse<Due>>,
    /// The lane's batch queue is closed.
    pub(super) closed: bool,
    /// Since when no request reaches the provider (an outage), on both clocks.
    outage: Option<(Instant, SystemTime)>,
    /// Hand-offs wait until then.
    pub(super) paused_until: Option<Instant>,
    /// The next outage pause, doubling while the outage lasts.
    pub(super) pause: Duration,
    /// When an outage was last logged.
    outage_logged: Option<Instant>,
    /// The window the provider's throttling allows now (at most `limit`).
    cwnd: usize,
    /// Answers and 429s since the last pacing; the longest `retry-after`.
    answers: u32,
    throttled: u32,
    retry_after: Option<Duration>,
    /// Throttled intervals in a row (the pause doubles with them).
    throttled_run: u32,
    /// Since when the lane has had 429s and no delivery nor final answer:
    /// bounded by the outage timeout, like an outage.
    stalled: Option<Instant>,
}

impl Lane {
    pub(super) fn new(platform: Platform) -> Self {
        Self {
            platform,
            limit: 1,
            low_water: 1,
            inflight: 0,
            current: None,
            full: false,
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
    pub(super) fn window(&self) -> usize {
        self.limit.min(self.cwnd).max(1)
    }

    /// Sets the limit: the engine's, within what the session can carry to
    /// this provider now.
    pub(super) fn set_limit(&mut self, engine: usize, session: Option<usize>) {
        self.limit = engine.min(session.unwrap_or(usize::MAX)).max(1);
        self.cwnd = self.cwnd.min(self.limit);
        let window = self.window();
        self.low_water = if window > 1 { window - (window / 16).clamp(1, 64) } else { 1 };
    }

    pub(super) fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| now < t)
    }

    /// Has devices to hand off now: a current batch, not paused, and room
    /// in the window (once it filled, only below the low-water mark, so
    /// requests leave in groups).
    pub(super) fn wants_hand_off(&self, now: Instant) -> bool {
        let room = if self.full { self.inflight < self.low_water } else { self.inflight < self.window() };
        self.current.is_some() && room && !self.paused(now)
    }

    /// Can take a new batch from its queue.
    pub(super) fn can_take(&self, now: Instant) -> bool {
        self.current.is_none() && self.inflight < self.window() && !self.closed && !self.paused(now)
    }

    pub(super) fn idle(&self) -> bool {
        self.inflight == 0 && self.current.is_none() && self.retries.is_empty()
    }

    /// Counts an answer from the provider (not a request that never reached
    /// it) for pacing; a 429 is noted with its `retry-after`.
    pub(super) fn answered(&mut self, outcome: &Outcome, now: Instant) {
        self.answers = self.answers.saturating_add(1);
        match outcome {
            Outcome::Retry { reason: FailReason::TooManyRequests, after } => {
                self.throttled = self.throttled.saturating_add(1);
                self.retry_after = self.retry_after.max(*after);
                self.stalled.get_or_insert(now);
            }
            Outcome::Delivered | Outcome::Failed(_) => self.stalled = None,
            _ => {}
        }
    }

    /// Once per flush: a lane whose provider throttled it (429s) halves its
    /// window and pauses (the provider's `retry-after`, capped by the
    /// policy, else a backoff that doubles while the throttling lasts); a
    /// clean interval grows the window back. This paces the lane to what
    /// the provider takes, instead of spending the retry budget against it.
    pub(super) fn pace(&mut self, now: Instant, policy: &RetryPolicy) {
        let provider = self.platform.provider();
        let throttled = self.throttled > 0 && self.throttled.saturating_mul(THROTTLED_SHARE) > self.answers;
        if throttled {
            if self.throttled_run == 0 {
                tracing::warn!(provider, "{provider} is throttling (429): its window halves and its hand-offs are paced");
            }
            self.throttled_run += 1;
            self.cwnd = (self.window() / 2).max(1);
            let backoff = policy.base.saturating_mul(1 << self.throttled_run.min(8)).min(MAX_THROTTLE_PAUSE);
            let pause = self.retry_after.map_or(backoff, |after| after.min(policy.max));
            self.paused_until = Some(self.paused_until.map_or(now + pause, |t| t.max(now + pause)));
        } else if self.answers > self.throttled {
            if self.throttled_run > 0 {
                tracing::info!(provider, "{provider} takes requests again: its window grows back");
            }
            self.throttled_run = 0;
            if self.cwnd < self.limit {
                self.cwnd = self.cwnd.saturating_add((self.limit / 16).max(1)).min(self.limit);
            }
        }
        (self.answers, self.throttled, self.retry_after) = (0, 0, None);
    }

    /// A request could not reach the provider: hand-offs pause until
    /// `until`. Returns when the outage started, if it starts now (logged
    /// once; a flapping provider is one state change in the log).
    pub(super) fn enter_outage(&mut self, now: Instant, until: Instant) -> Option<SystemTime> {
        let started = self.outage.is_none().then(|| {
            let provider = self.platform.provider();
            if self.outage_logged.is_some_and(|t| now.saturating_duration_since(t) < OUTAGE_LOG_QUIET) {
                tracing::debug!(provider, "hand-offs paused again");
            } else {
                self.outage_logged = Some(now);
                tracing::warn!(
                    provider,
                    "{provider} is not taking requests (no live connection, or its access token is being refreshed): its hand-offs paused"
                );
            }
            let since = SystemTime::now();
            self.outage = Some((now, since));
            since
        });
        self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        started
    }

    /// True while the provider cannot be reached.
    pub(super) fn in_outage(&self) -> bool {
        self.outage.is_some()
    }

    /// Since when the provider cannot be reached, if it cannot.
    pub(super) fn outage_since(&self) -> Option<SystemTime> {
        self.outage.map(|(_, since)| since)
    }

    /// The provider answers again.
    pub(super) fn leave_outage(&mut self, now: Instant) {
        if let Some((since, _)) = self.outage {
            tracing::info!(provider = self.platform.provider(), after = ?now.saturating_duration_since(since), "the provider answers again: its hand-offs resume");
        }
        self.outage = None;
        self.paused_until = None;
        self.pause = FIRST_PAUSE;
    }

    /// Why the fires must stop, once the provider has been unreachable, or
    /// throttled without a single answer, for `timeout`.
    pub(super) fn timed_out(&self, timeout: Duration) -> Option<String> {
        let provider = self.platform.provider();
        if let Some((since, _)) = self.outage.filter(|(since, _)| since.elapsed() >= timeout) {
            return Some(format!(
                "{provider} was unreachable for {} s (the outage timeout): the fire stopped, resume it when the provider is back",
                since.elapsed().as_secs()
            ));
        }
        self.stalled.filter(|since| since.elapsed() >= timeout).map(|since| {
            format!(
                "{provider} throttled every request (429) for {} s (the outage timeout): the fire stopped, resume it when the provider takes requests",
                since.elapsed().as_secs()
            )
        })
    }

    /// Starts afresh after its fires stopped: no outage, no throttling.
    pub(super) fn reset(&mut self) {
        self.leave_outage(Instant::now());
        (self.stalled, self.cwnd, self.throttled_run) = (None, self.limit, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(limit: usize) -> Lane {
        let mut l = Lane::new(Platform::Android);
        l.set_limit(limit, None);
        l
    }

    fn throttle(l: &mut Lane, now: Instant, after: Option<Duration>) {
        for _ in 0..10 {
            l.answered(&Outcome::Retry { reason: FailReason::TooManyRequests, after }, now);
        }
    }

    #[test]
    fn throttling_halves_the_window_and_pauses_and_clean_intervals_grow_it_back() {
        let policy = RetryPolicy::default();
        let now = Instant::now();
        let mut l = lane(1600);
        throttle(&mut l, now, None);
        l.pace(now, &policy);
        assert_eq!(l.window(), 800);
        assert!(l.paused(now) && !l.paused(now + MAX_THROTTLE_PAUSE), "paused for a backoff within the cap");
        for _ in 0..20 {
            throttle(&mut l, now, Some(Duration::from_secs(u64::MAX)));
            l.pace(now, &policy);
        }
        assert_eq!(l.window(), 1, "never below one");
        assert!(!l.paused(now + policy.max + Duration::from_millis(1)), "an absurd retry-after is capped by the policy");
        // A stray 429 among many answers does not slow the lane.
        for _ in 0..100 {
            l.answered(&Outcome::Delivered, now);
        }
        l.answered(&Outcome::Retry { reason: FailReason::TooManyRequests, after: None }, now);
        l.pace(now, &policy);
        assert_eq!(l.window(), 1 + 100, "grew by a sixteenth of the limit");
        for _ in 0..20 {
            l.answered(&Outcome::Delivered, now);
            l.pace(now, &policy);
        }
        assert_eq!(l.window(), 1600, "back to the limit, not beyond");
    }

    #[test]
    fn an_outage_is_entered_once_pauses_longer_while_it_lasts_and_times_out() {
        let now = Instant::now();
        let mut l = lane(100);
        assert!(l.enter_outage(now, now + FIRST_PAUSE).is_some(), "the outage starts");
        assert!(l.enter_outage(now, now + l.pause).is_none(), "once");
        assert!(l.pause > FIRST_PAUSE && l.pause <= MAX_PAUSE);
        assert!(l.timed_out(Duration::from_secs(3600)).is_none());
        std::thread::sleep(Duration::from_millis(5));
        assert!(l.timed_out(Duration::from_millis(1)).unwrap().contains("FCM was unreachable"));
        l.reset();
        assert!(!l.in_outage() && !l.paused(now) && l.timed_out(Duration::from_millis(1)).is_none(), "a reset lane starts afresh");
    }

    #[test]
    fn a_lane_throttled_without_a_delivery_times_out_and_a_delivery_clears_it() {
        let now = Instant::now();
        let mut l = lane(100);
        throttle(&mut l, now, None);
        std::thread::sleep(Duration::from_millis(5));
        assert!(l.timed_out(Duration::from_millis(1)).unwrap().contains("throttled every request"));
        l.answered(&Outcome::Delivered, now);
        assert!(l.timed_out(Duration::from_millis(1)).is_none());
    }
}
