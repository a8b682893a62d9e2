//! The receiving end's count of deliveries per device.
//!
//! Providers that stand in for APNs/FCM (null, model) record here every
//! notification they accept, keyed by device, so a drill *measures*
//! duplicates and missing devices. One byte per device: 6 MB for 6 million.

use std::sync::atomic::{AtomicU8, Ordering};

use super::DeviceRef;
use crate::audience::{Audience, Platform};

/// Deliveries per device of an audience.
#[derive(Debug)]
pub struct DeliveryTally {
    /// `[shard][platform]` -> one counter per device (saturating at 255).
    counts: Vec<[Box<[AtomicU8]>; 2]>,
}

/// What the tally adds up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TallySummary {
    /// Devices that received at least one notification.
    pub delivered: u64,
    /// Notifications beyond the first, summed over devices.
    pub duplicates: u64,
    /// Devices that received nothing.
    pub untouched: u64,
}

fn zeros(n: usize) -> Box<[AtomicU8]> {
    (0..n).map(|_| AtomicU8::new(0)).collect()
}

impl DeliveryTally {
    /// A tally with a zero for every device of `audience`.
    pub fn for_audience(audience: &Audience) -> Self {
        Self { counts: audience.shards().iter().map(|s| [zeros(s.len(Platform::Ios)), zeros(s.len(Platform::Android))]).collect() }
    }

    /// Counts one delivery.
    #[inline]
    pub fn record(&self, d: DeviceRef) {
        let cell = &self.counts[d.shard as usize][d.platform as usize][d.index as usize];
        // Saturate rather than wrap: 255 deliveries to one device is already
        // a disaster the report must not turn into zero.
        if cell.fetch_add(1, Ordering::Relaxed) == u8::MAX {
            cell.store(u8::MAX, Ordering::Relaxed);
        }
    }

    /// Deliveries to one device.
    pub fn count(&self, d: DeviceRef) -> u8 {
        self.counts[d.shard as usize][d.platform as usize][d.index as usize].load(Ordering::Relaxed)
    }

    /// Totals over every device.
    pub fn summary(&self) -> TallySummary {
        let mut s = TallySummary::default();
        for shard in &self.counts {
            for cells in shard {
                for c in cells.iter() {
                    match c.load(Ordering::Relaxed) {
                        0 => s.untouched += 1,
                        n => {
                            s.delivered += 1;
                            s.duplicates += u64::from(n - 1);
                        }
                    }
                }
            }
        }
        s
    }
}
