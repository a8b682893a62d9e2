//! The dispatch role of a worker: fire messages in (one per market, from
//! the FIFO fire queue), each market's batches out to the batch queue,
//! once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::queues::{Queues, Received};
use super::store::{Dispatched, Store};
use super::{AwsError, WorkerConfig};
use crate::queue::{BatchMsg, FireMsg};

/// The batches of each campaign market.
pub(super) type Plans = HashMap<String, Vec<(Duration, BatchMsg)>>;

/// The fire's plan, paced as a whole (a paced campaign's markets share its
/// rate), then split by market.
pub(super) fn plans(warm: &crate::fanout::Warm, fire_id: &str) -> Plans {
    use crate::fanout::dispatch::{pace, plan};
    let mut plans: Plans = warm.campaign.markets.iter().map(|m| (m.code.clone(), Vec::new())).collect();
    for (at, b) in pace(plan(warm, fire_id, None), warm.campaign.max_rate) {
        if let Some(m) = warm.routes[b.shard as usize].campaign_market[usize::from(b.market)] {
            plans.get_mut(&warm.campaign.markets[m].code).expect("a plan per market").push((at, b));
        }
    }
    plans
}

/// The dispatch role: fire messages in, a market's batches out.
pub(super) struct Dispatcher {
    pub(super) store: Store,
    pub(super) queues: Queues,
    pub(super) id: String,
    pub(super) plans: Arc<Plans>,
    pub(super) fire_id: String,
    pub(super) cfg: WorkerConfig,
}

impl Dispatcher {
    /// Dispatches until `stop` turns true; a market under way is finished
    /// first.
    pub(super) async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let got = tokio::select! {
                got = self.queues.receive_fires(self.cfg.wait_time, self.cfg.fire_visibility_timeout) => got,
                _ = stop.changed() => return,
            };
            let result = match got {
                Ok(got) => {
                    let mut result = Ok(());
                    for r in got {
                        result = result.and(Box::pin(self.dispatch(r)).await);
                    }
                    result
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "dispatch");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Dispatches one market's fire message, keeping it invisible while
    /// its batches are queued (a big market takes longer than one
    /// visibility timeout, and must not be dispatched twice).
    async fn dispatch(&self, r: Received<FireMsg>) -> Result<(), AwsError> {
        let visibility = self.cfg.fire_visibility_timeout;
        let work = self.dispatch_market(&r);
        tokio::pin!(work);
        let mut extend = tokio::time::interval_at(tokio::time::Instant::now() + visibility / 3, visibility / 3);
        loop {
            tokio::select! {
                result = &mut work => return result,
                _ = extend.tick() => {
                    if let Err(e) = self.queues.extend_fire(&r.handle, visibility).await {
                        tracing::warn!(error = %e, "could not extend the fire message's visibility");
                    }
                }
            }
        }
    }

    async fn dispatch_market(&self, r: &Received<FireMsg>) -> Result<(), AwsError> {
        let (store, queues, fire_id) = (&self.store, &self.queues, self.fire_id.as_str());
        let fire = &r.msg;
        let market = fire.market.clone().unwrap_or_default();
        if fire.campaign_id != fire_id {
            tracing::error!(campaign = %fire.campaign_id, holds = %fire_id, "a fire for a campaign this dispatcher is not warm for; left in the queue");
            return Ok(());
        }
        if store.dispatched(fire_id, &market).await?.is_some() {
            queues.delete_fire(&r.handle).await?;
            return Ok(());
        }
        let Some(record) = store.fire_record(fire_id).await? else {
            tracing::error!(fire = %fire_id, "a fire message without a ledger claim; left for the dead-letter queue");
            return Ok(());
        };
        let aborted = store.abort_mark(fire_id).await?.is_some();
        // A message without a market (not one Kickoff sends) stands for all of them.
        let planned: std::borrow::Cow<'_, [(Duration, BatchMsg)]> = match &fire.market {
            _ if aborted => (&[][..]).into(),
            Some(m) => self.plans.get(m).map_or(&[][..], Vec::as_slice).into(),
            None => self.plans.values().flatten().cloned().collect::<Vec<_>>().into(),
        };
        let devices = planned.iter().map(|(_, b)| u64::from(b.len())).sum();
        let fired_at = UNIX_EPOCH + Duration::from_millis(record.fired_at_ms);
        let batches = queues.send_batches(&planned, fired_at, self.cfg.max_delay).await?;
        store.put_dispatched(fire_id, &Dispatched { market: market.clone(), batches, devices, worker: self.id.clone() }).await?;
        queues.delete_fire(&r.handle).await?;
        tracing::info!(fire = %fire_id, market = %market, batches, devices, "dispatched");
        Ok(())
    }
}
