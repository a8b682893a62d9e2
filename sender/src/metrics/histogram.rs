//! A fixed-size log-linear histogram of durations in microseconds (the
//! HdrHistogram layout with 64 sub-buckets per power of two: under 1.6%
//! relative error, 18 KB, O(1) record, cheap to merge).

use std::time::Duration;

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values up to 2^40 µs (12.7 days) are kept exactly to their bucket; larger
/// ones land in the last bucket.
const MAX_EXP: u32 = 40;
const BUCKETS: usize = (2 * SUB + (MAX_EXP - SUB_BITS) as u64 * SUB) as usize;

/// Durations, bucketed.
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Box<[u64]>,
    total: u64,
    max_us: u64,
    /// Lowest and highest bucket touched since the last clear: merges and
    /// clears only walk that range.
    lo: usize,
    hi: usize,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram").field("total", &self.total).field("max_us", &self.max_us).finish_non_exhaustive()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self { counts: vec![0; BUCKETS].into_boxed_slice(), total: 0, max_us: 0, lo: BUCKETS, hi: 0 }
    }
}

#[inline]
fn index_of(us: u64) -> usize {
    if us < 2 * SUB {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros();
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let shift = exp - SUB_BITS;
    let sub = (us >> shift) - SUB;
    (2 * SUB + u64::from(shift - 1) * SUB + sub) as usize
}

/// The highest value that lands in bucket `i`.
fn upper_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = (i - 2 * SUB) / SUB + 1;
    let sub = (i - 2 * SUB) % SUB;
    ((SUB + sub + 1) << shift) - 1
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `n` samples of `d`.
    #[inline]
    pub fn record_n(&mut self, d: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = index_of(us);
        self.counts[i] += n;
        self.total += n;
        self.max_us = self.max_us.max(us);
        self.lo = self.lo.min(i);
        self.hi = self.hi.max(i);
    }

    /// Records one sample.
    #[inline]
    pub fn record(&mut self, d: Duration) {
        self.record_n(d, 1);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest sample, exactly.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }

    /// The value at quantile `q` in `[0, 1]`, as the upper bound of its
    /// bucket (never reports a sample as faster than it was), capped by the
    /// true maximum. Zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for i in self.lo..=self.hi {
            seen += self.counts[i];
            if seen >= rank {
                return Duration::from_micros(upper_bound(i).min(self.max_us));
            }
        }
        self.max()
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Self) {
        if other.total == 0 {
            return;
        }
        for i in other.lo..=other.hi {
            self.counts[i] += other.counts[i];
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
        self.lo = self.lo.min(other.lo);
        self.hi = self.hi.max(other.hi);
    }

    /// The non-empty buckets as (highest value in the bucket in µs, count),
    /// lowest first: enough to rebuild the histogram with
    /// [`LatencyHistogram::from_buckets`].
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let range = if self.total == 0 { 0..0 } else { self.lo..self.hi + 1 };
        range.filter(|&i| self.counts[i] > 0).map(|i| (upper_bound(i), self.counts[i]))
    }

    /// Rebuilds a histogram from [`LatencyHistogram::buckets`] and the true
    /// maximum (µs).
    pub fn from_buckets(buckets: impl IntoIterator<Item = (u64, u64)>, max_us: u64) -> Self {
        let mut h = Self::new();
        for (upper_us, n) in buckets {
            h.record_n(Duration::from_micros(upper_us), n);
        }
        if h.total > 0 {
            h.max_us = max_us;
        }
        h
    }

    /// Empties it, keeping the allocation.
    pub fn clear(&mut self) {
        if self.total > 0 {
            self.counts[self.lo..=self.hi].fill(0);
        }
        *self = Self { counts: std::mem::take(&mut self.counts), ..Self::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut prev = 0;
        for i in 1..BUCKETS - 1 {
            let ub = upper_bound(i);
            assert_eq!(index_of(ub), i, "bucket {i}");
            assert_eq!(index_of(prev + 1), i, "bucket {i} starts after {prev}");
            if ub > 1000 {
                assert!((ub - prev) as f64 / ub as f64 <= 1.0 / 63.0, "bucket {i} too wide");
            }
            prev = ub;
        }
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut h = LatencyHistogram::new();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).as_secs_f64() * 1000.0;
        let p99 = h.quantile(0.99).as_secs_f64() * 1000.0;
        assert!((500.0..=508.0).contains(&p50), "{p50}");
        assert!((990.0..=1000.0).contains(&p99), "{p99}");
        assert_eq!(h.max(), Duration::from_millis(1000));
        assert_eq!(h.quantile(1.0), Duration::from_millis(1000));
    }

    #[test]
    fn buckets_round_trip() {
        let mut h = LatencyHistogram::new();
        for us in [3, 700, 701, 90_000, 1_234_567] {
            h.record(Duration::from_micros(us));
        }
        let back = LatencyHistogram::from_buckets(h.buckets().collect::<Vec<_>>(), h.max().as_micros() as u64);
        assert_eq!(back, h);
        assert_eq!(LatencyHistogram::from_buckets([], 0), LatencyHistogram::new());
    }

    #[test]
    fn merge_and_clear() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record_n(Duration::from_micros(10), 3);
        b.record_n(Duration::from_secs(2), 1);
        a.merge(&b);
        assert_eq!(a.count(), 4);
        assert_eq!(a.quantile(0.5), Duration::from_micros(10));
        assert!(a.quantile(1.0) >= Duration::from_secs(2));
        a.clear();
        assert_eq!(a.count(), 0);
        assert_eq!(a, LatencyHistogram::new());
    }
}
