//! Retries of transient failures: how long to wait, and how many the fire
//! may spend.
//!
//! The budget is global to a fire: at most `floor + ratio x first sends`
//! retries in all. A provider that fails everything therefore sees at most
//! 1 + ratio times the traffic, never a retry storm; devices refused a retry
//! are reported, not silently dropped.

use std::time::Duration;

use crate::rng::SplitMix64;

/// How many retries a fire may spend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// Retries allowed per first send (0.1: one retry per ten sends).
    pub ratio: f64,
    /// Retries always allowed, so a small fire can ride out a blip.
    pub floor: u64,
}

impl RetryBudget {
    /// Retries allowed after `first_sends` first attempts.
    pub fn allowance(&self, first_sends: u64) -> u64 {
        self.floor + (first_sends as f64 * self.ratio) as u64
    }
}

/// When and how often a transient failure is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per device, the first one included.
    pub max_attempts: u8,
    /// Backoff before the first retry; doubles each attempt.
    pub base: Duration,
    /// Longest backoff.
    pub max: Duration,
    /// The fire's budget.
    pub budget: RetryBudget,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base: Duration::from_millis(250),
            max: Duration::from_secs(30),
            budget: RetryBudget { ratio: 0.1, floor: 100 },
        }
    }
}

impl RetryPolicy {
    /// The wait before retrying a device whose attempt number `attempt`
    /// (0 = the first send) failed: exponential with "equal jitter" (half
    /// fixed, half random, so retries of one burst spread out), and never
    /// sooner than the provider's `retry-after`, which is capped at
    /// [`RetryPolicy::max`]: a provider's answer never parks a device (or
    /// overflows a deadline) past the policy.
    pub fn delay(&self, attempt: u8, retry_after: Option<Duration>, rng: &mut SplitMix64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.min(20)).min(self.max);
        let jittered = exp.mul_f64(0.5 + 0.5 * rng.next_f64());
        match retry_after {
            // Spread the herd that was told the same moment.
            Some(after) => after.min(self.max) + self.base.mul_f64(rng.next_f64()),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_honours_retry_after() {
        let p = RetryPolicy::default();
        let mut rng = SplitMix64::new(1);
        let d0: Vec<Duration> = (0..200).map(|_| p.delay(0, None, &mut rng)).collect();
        assert!(d0.iter().all(|d| (Duration::from_millis(125)..=Duration::from_millis(250)).contains(d)));
        assert!(d0.iter().any(|d| *d != d0[0]), "jittered");
        let d2 = p.delay(2, None, &mut rng);
        assert!((Duration::from_millis(500)..=Duration::from_millis(1000)).contains(&d2), "{d2:?}");
        assert!(p.delay(30, None, &mut rng) <= p.max);
        let after = p.delay(0, Some(Duration::from_secs(7)), &mut rng);
        assert!((Duration::from_secs(7)..Duration::from_secs(7) + p.base).contains(&after), "{after:?}");
        let absurd = p.delay(0, Some(Duration::from_secs(u64::MAX)), &mut rng);
        assert!((p.max..p.max + p.base).contains(&absurd), "retry-after is capped: {absurd:?}");
    }

    #[test]
    fn the_budget_is_a_floor_plus_a_share_of_sends() {
        let b = RetryBudget { ratio: 0.1, floor: 100 };
        assert_eq!(b.allowance(0), 100);
        assert_eq!(b.allowance(10_000), 1_100);
    }
}
