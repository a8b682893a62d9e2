//! The dispatch tier: turns a fire message into batch messages, one per
//! range of at most 500 iOS or 250 Android devices of one shard and market,
//! honouring per-market send offsets.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::run::{FireRun, UnsentRange};
use super::warm::Warm;
use crate::queue::{BatchMsg, FireMsg};

/// Batches with the delay after the fire at which each may go.
pub type Plan = Vec<(Duration, BatchMsg)>;

/// Every batch of a fire (of one campaign market, if given), with the delay
/// after the fire at which it may go. Within one delay, batches are
/// interleaved across shards (so notifiers spread over them) and across
/// platforms in proportion to their counts (so both providers' windows fill
/// from the first batch to the last, also where one queue carries both, as
/// SQS does in AWS mode).
pub fn plan(warm: &Warm, campaign_id: &str, only_market: Option<&str>) -> Plan {
    // (offset, platform, seq within the shard's platform section, shard, batch)
    let mut planned = Vec::new();
    for (shard_index, (shard, routes)) in warm.audience.shards().iter().zip(&warm.routes).enumerate() {
        let mut seq = [0u32; 2];
        for run in shard.runs() {
            let Some(market) = routes.campaign_market[usize::from(run.market)] else { continue };
            if only_market.is_some_and(|m| m != warm.campaign.markets[market].code) {
                continue;
            }
            let offset = warm.campaign.markets[market].send_offset;
            let size = run.platform.batch_size();
            let mut start = run.start;
            while start < run.end {
                let end = run.end.min(start + size);
                let msg = BatchMsg {
                    campaign_id: campaign_id.to_owned(),
                    shard: shard_index as u32,
                    platform: run.platform,
                    market: run.market,
                    start,
                    end,
                    not_before_ms: None,
                };
                let p = run.platform as usize;
                planned.push((offset, p, seq[p], msg));
                seq[p] += 1;
                start = end;
            }
        }
    }
    // Each platform's batches in shard-interleaved order...
    planned.sort_by_key(|(offset, p, seq, msg)| (*offset, *p, *seq, msg.shard));
    // ...then merged by how far through its platform's list each batch is.
    let mut keyed = Vec::with_capacity(planned.len());
    let mut i = 0;
    while i < planned.len() {
        let (offset, p) = (planned[i].0, planned[i].1);
        let n = planned[i..].iter().take_while(|(o, q, _, _)| *o == offset && *q == p).count();
        for k in 0..n {
            keyed.push((offset, (k as f64 + 0.5) / n as f64, i + k));
        }
        i += n;
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut slots: Vec<Option<BatchMsg>> = planned.into_iter().map(|(_, _, _, m)| Some(m)).collect();
    keyed.into_iter().map(|(offset, _, at)| (offset, slots[at].take().expect("each batch once"))).collect()
}

/// `planned` paced at `max_rate` devices per second (none: unchanged): each
/// batch goes once the batches before it, at that rate, have gone, and
/// never before its market's offset. The batches keep their order; a fire
/// at its pace hands off at most one batch ahead of the rate.
pub fn pace(planned: Plan, max_rate: Option<u64>) -> Plan {
    let Some(rate) = max_rate.filter(|r| *r > 0) else { return planned };
    let rate = rate as f64;
    // When the next batch may go, in seconds after the fire.
    let mut free = 0.0_f64;
    planned
        .into_iter()
        .map(|(offset, b)| {
            let at = free.max(offset.as_secs_f64());
            free = at + f64::from(b.len()) / rate;
            (Duration::from_secs_f64(at).max(offset), b)
        })
        .collect()
}

/// Runs the dispatch tier until the fire queue closes.
pub(crate) async fn run(shared: Arc<Shared>) {
    while let Some(fire) = shared.fire_queue.recv().await {
        let Some(run) = shared.run(&fire.campaign_id) else {
            tracing::warn!(campaign = %fire.campaign_id, "fire message for an unknown run; ignored");
            continue;
        };
        dispatch(&shared, &fire, &run).await;
    }
}

async fn dispatch(shared: &Shared, fire: &FireMsg, run: &FireRun) {
    let planned = run
        .take_plan()
        .unwrap_or_else(|| pace(plan(&shared.warm, &fire.campaign_id, fire.market.as_deref()), shared.warm.campaign.max_rate));
    let mut queued = 0u64;
    let mut i = 0;
    while i < planned.len() {
        let offset = planned[i].0;
        let group_end = planned[i..].iter().position(|(o, _)| *o != offset).map_or(planned.len(), |n| i + n);
        let due = run.fired_at + offset;
        if tokio::time::Instant::now() < due.into() {
            let aborted = run.abort_notify.notified();
            tokio::pin!(aborted);
            aborted.as_mut().enable();
            if !run.is_aborted() {
                tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => {}
                    () = aborted => {}
                }
            }
        }
        if run.is_aborted() {
            for (_, b) in &planned[i..] {
                run.unsent(UnsentRange { shard: b.shard, platform: b.platform, start: b.start, end: b.end });
            }
            break;
        }
        shared.queue_batches(planned[i..group_end].iter().map(|(_, b)| b.clone()));
        queued += (group_end - i) as u64;
        i = group_end;
    }
    run.dispatched(queued);
    shared.try_complete(run);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audience::generate::{self, GenerateSpec};
    use crate::audience::{Audience, Platform};

    #[test]
    fn platforms_are_interleaved_in_proportion_and_every_device_is_planned_once() {
        let dir = tempfile::tempdir().unwrap();
        let spec = GenerateSpec { devices: 200_000, ios_share: 0.6, markets: 3, seed: 5 };
        generate::compile_generated(&spec, &dir.path().join("a"), 3, true, &|_| {}).unwrap();
        let audience = Arc::new(Audience::load(&dir.path().join("a")).unwrap());
        let warm = Warm::new(audience, Arc::new(crate::campaign::demo())).unwrap();
        let planned = plan(&warm, "c", None);
        let devices: u64 = planned.iter().map(|(_, b)| u64::from(b.len())).sum();
        assert_eq!(devices, warm.targeted());
        let batches_of = |p: Platform, part: &[(Duration, BatchMsg)]| part.iter().filter(|(_, b)| b.platform == p).count() as f64;
        let (ios, android) = (batches_of(Platform::Ios, &planned), batches_of(Platform::Android, &planned));
        assert!(ios > 0.0 && android > 0.0);
        // Every tenth of the plan holds both platforms in the plan's proportion,
        // so neither provider's window waits for the other's batches.
        for part in planned.chunks_exact(planned.len() / 10) {
            let share = batches_of(Platform::Ios, part) / part.len() as f64;
            assert!((share - ios / (ios + android)).abs() < 0.1, "iOS share {share:.2} in a tenth of the plan");
        }
        // Shards are interleaved too: the first batches come from every shard.
        let first: std::collections::BTreeSet<u32> = planned[..6].iter().map(|(_, b)| b.shard).collect();
        assert_eq!(first.len(), 3, "{first:?}");
    }

    fn batch(start: u32, end: u32) -> BatchMsg {
        BatchMsg { campaign_id: "c".into(), shard: 0, platform: Platform::Ios, market: 0, start, end, not_before_ms: None }
    }

    #[test]
    fn a_paced_plan_spaces_its_batches_at_the_rate_and_keeps_market_offsets() {
        let planned: Plan = (0..100)
            .map(|i| (Duration::ZERO, batch(i * 500, (i + 1) * 500)))
            .chain([(Duration::from_secs(60), batch(50_000, 50_500))])
            .collect();
        assert_eq!(pace(planned.clone(), None), planned, "no rate: unchanged");
        let paced = pace(planned, Some(10_000));
        // 500 devices at 10,000/s: one batch every 50 ms, the first at once.
        for (i, (at, _)) in paced.iter().take(100).enumerate() {
            assert_eq!(at.as_millis(), 50 * i as u128, "batch {i}");
        }
        // Devices handed off by any time stay within one batch of the rate.
        let mut devices = 0u64;
        for (at, b) in &paced {
            assert!(devices as f64 <= 10_000.0 * at.as_secs_f64() + 1.0, "{devices} devices before {at:?}");
            devices += u64::from(b.len());
        }
        // A market sent a minute later still goes a minute later.
        assert_eq!(paced[100].0, Duration::from_secs(60));
        assert!(paced.windows(2).all(|w| w[0].0 <= w[1].0), "in order");
    }
}
