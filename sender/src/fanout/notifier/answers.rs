//! The answer side of a notifier: what each provider's answer does to its
//! device and batch (delivered, final, throttled, retried, given up), and
//! the retries that are due.

use std::cmp::Reverse;
use std::time::{Instant, SystemTime};

use super::lane::{self, Due, Tries};
use super::{InFlight, MAX_FREE_RESENDS, Notifier, stamp};
use crate::fanout::run::DeviceNote;
use crate::push::{DeviceRef, FailReason, Handoff, Outcome, PushRequest, Session};

impl<S: Session> Notifier<S> {
    /// Counts a device that ends without a final answer for `reason`.
    pub(super) fn undelivered(&mut self, slot: u32, index: u32, reason: FailReason) {
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
    pub(super) fn close_if_done(&mut self, slot: u32) {
        let Some(batch) = self.slots[slot as usize].as_ref() else { return };
        let lane = batch.msg.platform as usize;
        if batch.outstanding == 0 && self.lanes[lane].current != Some(slot) {
            self.close_batch(slot);
        }
    }

    /// Handles one answer: counts it, prunes dead tokens, schedules retries.
    pub(super) fn outcome(&mut self, slot: u32, index: u32, tries: Tries, outcome: Outcome, now: Instant) {
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
        if self.lanes[lane].in_outage() {
            self.leave_outage(lane, now);
        }
        let l = &mut self.lanes[lane];
        l.answered(&outcome, now);
        if let Outcome::Retry { reason: FailReason::TooManyRequests, after } = outcome
            && tries.throttled < lane::MAX_FREE_THROTTLED
            && !aborted
        {
            // Throttled: the lane slows down (`Lane::pace`) and the device
            // goes again, at no cost to the budget.
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
    pub(super) fn send_due_retries(&mut self, lane_index: usize, now: Instant) -> bool {
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
    pub(super) fn resolve_aborted_retries(&mut self) {
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
}
