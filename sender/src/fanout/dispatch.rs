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
/// after the fire at which it may go. Batches are interleaved across shards
/// so notifiers spread over them.
pub fn plan(warm: &Warm, campaign_id: &str, only_market: Option<&str>) -> Plan {
    let mut planned = Vec::new();
    for (shard_index, (shard, routes)) in warm.audience.shards().iter().zip(&warm.routes).enumerate() {
        let mut seq = 0u32;
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
                };
                planned.push((offset, seq, msg));
                seq += 1;
                start = end;
            }
        }
    }
    planned.sort_by_key(|(offset, seq, msg)| (*offset, *seq, msg.shard));
    planned.into_iter().map(|(o, _, m)| (o, m)).collect()
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
    let planned = run.take_plan().unwrap_or_else(|| plan(&shared.warm, &fire.campaign_id, fire.market.as_deref()));
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
        shared.batch_queue.send_all(planned[i..group_end].iter().map(|(_, b)| b.clone()));
        queued += (group_end - i) as u64;
        i = group_end;
    }
    run.dispatched(queued);
    shared.try_complete(run);
}
