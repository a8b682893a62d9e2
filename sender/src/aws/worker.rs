//! `kickoff-sender worker --config FILE`: one binary for both roles.
//!
//! - On start it reads what to warm from S3 (`campaign/warm.json`),
//!   downloads the audience's shards, verifies every checksum and the
//!   campaign hash, starts its provider sessions, and reports `warm` in
//!   `workers/<id>.json`. A new warm spec (the next verify-warm) reloads it.
//! - **dispatch**: takes a market's fire message from the FIFO queue, checks
//!   the ledger's claim, plans the market's batches and queues them, records
//!   the dispatch, then deletes the fire message. A dispatch recorded before
//!   is not repeated.
//! - **notify**: receives batches (at most `max_batches` held), skips those
//!   recorded as done, hands the rest to the fan-out engine's notifiers, keeps
//!   them invisible while they are sent, and for each finished batch writes
//!   its record (first writer wins) before deleting the message. An abort
//!   recorded in S3 stops its hand-offs within 250 ms.
//! - On SIGTERM (or Ctrl-C) it stops receiving, lets the dispatcher finish
//!   its market, finishes what it holds within a grace period, then stops
//!   handing off: each batch it started is recorded with what it sent and
//!   the rest queued as a batch of its own; then it exits.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::dispatcher::Dispatcher;
use super::dispatcher::Plans;
use super::metrics::CloudWatchSink;
use super::queues::{Queues, Received};
use super::receiver::{Unclaimed, spawn_receiver};
use super::store::{DoneRecord, Holding, Role, Store, WarmSpec, WorkerState, WorkerStatus};
use super::{Aws, AwsConfig, AwsError};
use crate::audience::Audience;
use crate::fanout::{BatchDone, Claim, Engine, EngineConfig, FireClaim, FireHandle, FireLedger, FireRecord, FireStatus, LedgerError, Warm};
use crate::metrics::prometheus::{PromSink, Tee};
use crate::provider::{ProviderChoice, Setup};
use crate::push::PushConfig;
use crate::queue::BatchMsg;

/// The ledger of runs that never complete where they run (an AWS worker's
/// adopted fires) or whose end is written elsewhere (the app's mirror).
#[derive(Debug, Default)]
pub struct WorkerLedger;

impl FireLedger for WorkerLedger {
    fn claim(&self, claim: &FireClaim) -> Result<Claim, LedgerError> {
        Err(LedgerError { path: PathBuf::from("s3"), message: format!("{}: fires are claimed in the S3 ledger", claim.campaign_id) })
    }

    fn finish(&self, _: &str, _: FireStatus, _: &str) -> Result<(), LedgerError> {
        Ok(())
    }

    fn get(&self, _: &str) -> Result<Option<FireRecord>, LedgerError> {
        Ok(None)
    }
}

/// The worker's id: the configured one, else host and process.
pub fn worker_id(config: &AwsConfig) -> String {
    config.worker.id.clone().unwrap_or_else(|| format!("{}-{}", crate::fanout::ledger::host_name(), std::process::id()))
}

/// A loaded campaign and audience, with the sending engine.
struct Loaded {
    spec: WarmSpec,
    /// Every market's batches, planned at warm time: the dispatcher needs
    /// nothing else, so it runs as its own task.
    plans: Arc<Plans>,
    engine: Engine,
    sink: Arc<CloudWatchSink>,
    shards: u32,
    _setup: Setup,
}

/// How often a worker sending a fire reads S3 for its abort.
const ABORT_POLL: Duration = Duration::from_millis(250);

/// Where a worker sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerProvider {
    /// APNs and FCM through the credentials of `[worker] push_config`.
    Configured,
    /// Nowhere (every send accepted at once): only when asked for, for a
    /// rehearsal of the fleet; status and metrics say `null`.
    Null,
}

/// The worker's provider credentials, checked before it touches AWS: a
/// worker without them refuses to start (it would otherwise mark every
/// device delivered having sent nothing), unless `Null` was asked for.
pub fn push_config(config: &AwsConfig, provider: WorkerProvider) -> Result<Option<PushConfig>, AwsError> {
    match (&config.worker.push_config, provider) {
        (_, WorkerProvider::Null) => Ok(None),
        (Some(p), WorkerProvider::Configured) => {
            PushConfig::load(p).map(Some).map_err(|e| AwsError::Config { path: p.clone(), message: e.to_string() })
        }
        (None, WorkerProvider::Configured) => Err(AwsError::Config {
            path: config.source.clone(),
            message: "[worker] has no push_config: a worker needs provider credentials (push_config = \"kickoff.toml\", \
                      with [apns] and/or [fcm]) to send; to rehearse the fleet without sending, start it with --provider null"
                .into(),
        }),
    }
}

/// Runs a worker until `stop` completes.
pub async fn run(config: AwsConfig, provider: WorkerProvider, stop: impl Future<Output = ()>) -> Result<(), AwsError> {
    let push = push_config(&config, provider)?;
    let aws = Aws::connect(config).await?;
    let queues = Queues::open(&aws).await?;
    let ctx = Ctx { store: aws.store(), queues, id: worker_id(&aws.config), aws };
    let (aws, store, id) = (&ctx.aws, &ctx.store, ctx.id.clone());
    let cfg = aws.config.worker.clone();
    let cache = cfg.cache_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("kickoff-worker").join(&id));
    // Every fire's counts, for Prometheus, across the engines of each warm.
    let prom = Arc::new(PromSink::new());
    if let Some(addr) = cfg.metrics_listen {
        prom.clone().listen(addr).await.map_err(|e| AwsError::Data(format!("[worker] metrics_listen {addr}: {e}")))?;
    }
    let provider_name = match &push {
        Some(p) => crate::push::PushProviders::name_of(p),
        None => "null",
    };
    tracing::info!(worker = %id, roles = ?cfg.roles, provider = provider_name, "worker started");
    tokio::pin!(stop);
    let mut status = WorkerStatus {
        worker: id.clone(),
        roles: cfg.roles.clone(),
        state: WorkerState::Loading,
        fire_id: String::new(),
        campaign_hash: String::new(),
        shards: 0,
        shards_total: 0,
        error: None,
        at_ms: 0,
        provider: provider_name.to_owned(),
        holding: Holding::default(),
    };
    loop {
        // Wait for something to warm.
        let (loaded, done_rx) = loop {
            match store.warm().await {
                Ok(Some((spec, text))) => match load(aws, &spec, &text, &cache, push.as_ref(), &prom).await {
                    Ok(loaded) => break loaded,
                    Err(e) => {
                        tracing::error!(error = %e, "could not warm");
                        status.state = WorkerState::Error;
                        status.error = Some(e.to_string());
                        status.fire_id = spec.fire_id.clone();
                        status.campaign_hash = spec.campaign_hash.clone();
                    }
                },
                Ok(None) => status.state = WorkerState::Waiting,
                Err(e) => tracing::warn!(error = %e, "cannot read the warm spec"),
            }
            write_status(store, &mut status).await;
            tokio::select! {
                () = &mut stop => {
                    status.state = WorkerState::Stopped;
                    write_status(store, &mut status).await;
                    return Ok(());
                }
                () = tokio::time::sleep(cfg.heartbeat) => {}
            }
        };
        status.state = WorkerState::Warm;
        status.error = None;
        status.fire_id = loaded.spec.fire_id.clone();
        status.campaign_hash = loaded.spec.campaign_hash.clone();
        status.shards = loaded.shards;
        status.shards_total = loaded.shards;
        write_status(store, &mut status).await;
        tracing::info!(fire = %loaded.spec.fire_id, shards = loaded.shards, "warm");
        let stopped = Box::pin(serve(&ctx, &loaded, done_rx, &status, &mut stop)).await;
        status.holding = Holding::default();
        if let Err(e) = loaded.sink.flush().await {
            tracing::warn!(error = %e, "CloudWatch points lost at shutdown");
        }
        loaded.engine.shutdown();
        if stopped {
            status.state = WorkerState::Stopped;
            write_status(store, &mut status).await;
            tracing::info!(worker = %id, "worker stopped");
            return Ok(());
        }
        status.state = WorkerState::Loading;
    }
}

async fn write_status(store: &Store, status: &mut WorkerStatus) {
    status.at_ms = crate::fanout::ledger::ms(std::time::SystemTime::now());
    if let Err(e) = store.put_worker(status).await {
        tracing::warn!(error = %e, "could not write the worker status");
    }
}

/// Downloads, verifies and starts sending sessions for `spec`.
async fn load(
    aws: &Aws,
    spec: &WarmSpec,
    campaign_text: &str,
    cache: &std::path::Path,
    push: Option<&PushConfig>,
    prom: &Arc<PromSink>,
) -> Result<(Loaded, mpsc::UnboundedReceiver<BatchDone>), AwsError> {
    let store = aws.store();
    let dir = cache.join("audience");
    let _ = std::fs::remove_dir_all(&dir);
    store.download_audience(&dir).await?;
    let audience = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || Audience::load(&dir))
            .await
            .map_err(|e| AwsError::Data(e.to_string()))?
            .map_err(|e| AwsError::Data(e.to_string()))?
    };
    let checksum = format!("{:016x}", audience.checksum());
    if checksum != spec.audience_checksum {
        return Err(AwsError::Data(format!(
            "the audience in S3 has checksum {checksum}, the warm spec expects {}",
            spec.audience_checksum
        )));
    }
    let campaign = Arc::new(spec.campaign(campaign_text, &PathBuf::from(store.url("campaign/campaign.toml")))?);
    let audience = Arc::new(audience);
    let warm = Warm::new(audience.clone(), campaign.clone()).map_err(|e| AwsError::Data(e.to_string()))?;
    let plans = Arc::new(super::dispatcher::plans(&warm, &spec.fire_id));
    let choice = match push {
        Some(p) => ProviderChoice::Http(p.clone()),
        None => ProviderChoice::Null,
    };
    let setup = Setup::start(&choice, &audience, &campaign.apns.topic).await.map_err(|e| AwsError::Data(e.to_string()))?;
    let sink = CloudWatchSink::start(aws.cloudwatch.clone(), aws.config.namespace.clone());
    let (tx, rx) = mpsc::unbounded_channel::<BatchDone>();
    let defaults = EngineConfig::default();
    let outage_timeout = spec
        .outage_timeout_s
        .map(Duration::from_secs)
        .or(push.and_then(|p| p.send.outage_timeout))
        .unwrap_or(defaults.outage_timeout)
        .clamp(Duration::from_secs(1), crate::clock::MAX_OUTAGE_TIMEOUT);
    let config =
        EngineConfig { workers: aws.config.worker.notifiers, reports_dir: Some(cache.join("reports")), outage_timeout, ..defaults };
    let hook: crate::fanout::BatchDoneHook = Box::new(move |d| {
        let _ = tx.send(d);
    });
    let engine = Engine::start_with(
        warm,
        setup.provider.clone(),
        Arc::new(WorkerLedger),
        Arc::new(Tee(sink.clone(), prom.clone())),
        config,
        Some(hook),
    )
    .await
    .map_err(|e| AwsError::Data(e.to_string()))?;
    Ok((Loaded { spec: spec.clone(), plans, engine, sink, shards: audience.shards().len() as u32, _setup: setup }, rx))
}

/// A batch this worker holds.
struct Held {
    handle: String,
    since: Instant,
    /// Devices in the batch.
    devices: u64,
    /// Its place among `max_batches`.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Serves the roles for `loaded` until the warm spec changes (false) or
/// `stop` completes (true).
/// What a worker talks to.
struct Ctx {
    aws: Aws,
    store: Store,
    queues: Queues,
    id: String,
}

async fn serve(
    ctx: &Ctx,
    loaded: &Loaded,
    mut done_rx: mpsc::UnboundedReceiver<BatchDone>,
    status: &WorkerStatus,
    stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let (store, queues, id) = (&ctx.store, &ctx.queues, ctx.id.as_str());
    let cfg = &ctx.aws.config.worker;
    let fire_id = loaded.spec.fire_id.clone();
    let dispatch = cfg.roles.contains(&Role::Dispatch);
    let mut held: HashMap<String, Held> = HashMap::new();
    // The fire this worker sends, once its first batch arrives.
    let mut fire: Option<FireHandle> = None;
    let mut last_extend = Instant::now();
    let (tx, mut received) = mpsc::channel(10);
    // Received but not yet taken: their visibility is extended too.
    let unclaimed = Unclaimed::default();
    let receiver = cfg.roles.contains(&Role::Notify).then(|| {
        spawn_receiver(queues.clone(), Arc::new(tokio::sync::Semaphore::new(cfg.max_batches)), cfg.clone(), tx, unclaimed.clone())
    });
    // The dispatcher runs on its own: a busy notifier loop never delays a
    // market's dispatch (FIFO messages of one fire are served one at a time).
    // Told to stop, it finishes the market it is dispatching: a market is
    // queued whole, once.
    let (stop_dispatch, dispatch_stopped) = tokio::sync::watch::channel(false);
    let dispatcher = dispatch.then(|| {
        let d = Dispatcher {
            store: store.clone(),
            queues: queues.clone(),
            id: id.to_owned(),
            plans: loaded.plans.clone(),
            fire_id: fire_id.clone(),
            cfg: cfg.clone(),
        };
        tokio::spawn(d.run(dispatch_stopped))
    });
    // Finished batches are recorded and deleted concurrently.
    let mut finishing = tokio::task::JoinSet::new();
    // The heartbeat and the abort poll run on their own: an S3 call that
    // takes seconds never delays a stop, a finished batch or a new one.
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let (respec_tx, mut respec) = mpsc::unbounded_channel();
    let (stop_side, side_stopped) = tokio::sync::watch::channel(false);
    let beat = tokio::spawn(heartbeat(
        store.clone(),
        cfg.heartbeat,
        status.clone(),
        loaded.spec.clone(),
        tally.clone(),
        respec_tx,
        side_stopped.clone(),
    ));
    let aborts = tokio::spawn(poll_abort(store.clone(), fire_id.clone(), tally.clone(), side_stopped));
    // Wakes the loop to extend the held batches' visibility in time, even
    // when nothing else happens: a held batch must never reappear in the
    // queue for another worker while this one sends it.
    let mut extend = tokio::time::interval(cfg.visibility_timeout / 3);
    extend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopped = loop {
        tokio::select! {
            () = &mut *stop => break true,
            _ = extend.tick() => {}
            Some(d) = done_rx.recv() => {
                tally.lock().expect("tally lock").finished_handed_off += u64::from(d.handed_off);
                finish_batch(ctx, &fire_id, &mut held, &mut finishing, d, false);
            }
            Some(_) = finishing.join_next(), if !finishing.is_empty() => {}
            Some((r, permit)) = received.recv() => {
                unclaimed.claim(&r.handle);
                take_batch(ctx, loaded, &mut fire, &mut held, r, permit).await;
                let mut t = tally.lock().expect("tally lock");
                if t.fire.is_none() {
                    t.fire.clone_from(&fire);
                }
            }
            Some(()) = respec.recv() => {
                if held.is_empty() {
                    break false;
                }
            }
        }
        {
            let mut t = tally.lock().expect("tally lock");
            t.batches = u32::try_from(held.len()).unwrap_or(u32::MAX);
            t.devices = held.values().map(|h| h.devices).sum();
        }
        if last_extend.elapsed() >= cfg.visibility_timeout / 4 {
            last_extend = Instant::now();
            let handles: Vec<String> = held.values().map(|h| h.handle.clone()).chain(unclaimed.handles()).collect();
            if !handles.is_empty()
                && let Err(e) = queues.extend(&handles, cfg.visibility_timeout).await
            {
                tracing::warn!(error = %e, "could not extend the visibility of held batches");
            }
        }
    };
    if let Some(r) = receiver {
        r.abort();
    }
    // The abort poll writes nothing: it stops at once. The heartbeat goes on
    // reporting what is held while the batches are finished, and is joined
    // last (below).
    aborts.abort();
    if let Some(d) = dispatcher {
        let _ = stop_dispatch.send(true);
        if stopped {
            // Finishes the market under way (a fire message it held and did
            // not finish reappears after its visibility timeout; a market
            // recorded as dispatched is never dispatched again).
            let abort = d.abort_handle();
            if tokio::time::timeout(cfg.grace.max(Duration::from_secs(1)), d).await.is_err() {
                tracing::warn!("the dispatcher did not finish its market within the grace period; its fire message goes back to the queue");
                abort.abort();
            }
        } else {
            d.abort();
        }
    }
    // Batches received but not yet taken go back at once.
    received.close();
    while let Some((r, _)) = received.recv().await {
        let _ = queues.release(&r.handle).await;
    }
    if stopped && !held.is_empty() {
        // Finish what is held within the grace period...
        let deadline = Instant::now() + cfg.grace.min(cfg.visibility_timeout);
        while !held.is_empty() {
            match tokio::time::timeout_at(deadline.into(), done_rx.recv()).await {
                Ok(Some(d)) => finish_batch(ctx, &fire_id, &mut held, &mut finishing, d, false),
                _ => break,
            }
        }
        // ...then stop handing off: each open batch ends with what it handed
        // off (its answers in flight are waited for) and the rest of it goes
        // back to the queue as a batch of its own, so no device is sent by
        // this worker and another one.
        if !held.is_empty() {
            loaded.engine.stop_handoffs();
            let drain = Instant::now() + EngineConfig::default().drain_timeout + Duration::from_secs(1);
            while !held.is_empty() {
                match tokio::time::timeout_at(drain.into(), done_rx.recv()).await {
                    Ok(Some(d)) => finish_batch(ctx, &fire_id, &mut held, &mut finishing, d, true),
                    _ => break,
                }
            }
        }
        for (name, h) in held.drain() {
            tracing::warn!(batch = %name, held_for = ?h.since.elapsed(), "released unfinished at shutdown (answers still outstanding)");
            let _ = store.untake(&fire_id, &name).await;
            let _ = queues.release(&h.handle).await;
        }
    }
    // Every finished batch's record is written (or its message left to
    // reappear) before the worker moves on or exits.
    while finishing.join_next().await.is_some() {}
    // The heartbeat finishes the write under way, so no status of this loop
    // lands after the caller's next one.
    let _ = stop_side.send(true);
    let _ = beat.await;
    stopped
}

/// What the heartbeat reports of the batches held, kept by the serve loop.
#[derive(Default)]
struct Tally {
    batches: u32,
    devices: u64,
    /// Devices handed off in the batches finished so far: the engine's
    /// count less this is what the held batches have handed off.
    finished_handed_off: u64,
    /// The fire being sent, once its first batch is taken.
    fire: Option<FireHandle>,
}

impl Tally {
    fn holding(&self) -> Holding {
        let handed_off = self.fire.as_ref().map_or(0, |h| h.progress().handed_off);
        Holding { batches: self.batches, devices: self.devices, handed_off: handed_off.saturating_sub(self.finished_handed_off) }
    }
}

/// Writes the worker's status every heartbeat, and says so on `respec`
/// when the warm spec in S3 is no longer the one loaded (the serve loop
/// moves on once it holds nothing). Ends when `stop` turns true.
async fn heartbeat(
    store: Store,
    every: Duration,
    mut status: WorkerStatus,
    loaded: WarmSpec,
    tally: Arc<std::sync::Mutex<Tally>>,
    respec: mpsc::UnboundedSender<()>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut beat = tokio::time::interval(every);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = beat.tick() => {}
        }
        status.holding = tally.lock().expect("tally lock").holding();
        write_status(&store, &mut status).await;
        if let Ok(Some(spec)) = store.warm_spec().await
            && spec != loaded
        {
            let _ = respec.send(());
        }
    }
}

/// Polls S3 for an abort of the fire being sent, and stops its hand-offs
/// when there is one (within [`ABORT_POLL`]). Ends when `stop` turns true.
async fn poll_abort(store: Store, fire_id: String, tally: Arc<std::sync::Mutex<Tally>>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut poll = tokio::time::interval(ABORT_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(h) = tally.lock().expect("tally lock").fire.clone() else { continue };
        let progress = h.progress();
        if progress.aborted || progress.done {
            continue;
        }
        if let Ok(Some(mark)) = store.abort_mark(&fire_id).await {
            tracing::warn!(by = %mark.by, why = %mark.why, "abort recorded in S3: stopping sends");
            h.abort(&mark.by_and_why());
        }
    }
}

/// Takes one received batch: skips done ones, refuses foreign ones, adopts
/// the fire and hands the batch to the notifiers.
/// Whether this worker may send a delivered batch: it marks it taken, or
/// finds it taken by a worker that is gone and takes it over. A batch a
/// live worker took is left alone (the queue handed it out twice); this
/// delivery reappears after its visibility timeout and is deleted then as
/// done.
async fn take(ctx: &Ctx, r: &Received<BatchMsg>) -> bool {
    let (store, fire_id, name) = (&ctx.store, r.msg.campaign_id.as_str(), super::store::batch_name(&r.msg));
    let mark = match store.take(fire_id, &r.msg, &ctx.id).await {
        Ok(None) => return true,
        Ok(Some(mark)) => mark,
        Err(e) => {
            tracing::warn!(error = %e, batch = %name, "cannot mark a batch taken; released");
            let _ = ctx.queues.release(&r.handle).await;
            return false;
        }
    };
    let cfg = &ctx.aws.config.worker;
    // Gone: no heartbeat for ten beats (at least 3 s), or the visibility
    // timeout, whichever is shorter.
    let stale = (cfg.heartbeat * 10).max(Duration::from_secs(3)).min(cfg.visibility_timeout.max(Duration::from_secs(3)));
    let stale_ms = u64::try_from(stale.as_millis()).unwrap_or(u64::MAX);
    let alive = match store.worker_status(&mark.worker).await {
        Ok(Some(s)) => s.state != WorkerState::Stopped && crate::clock::now_ms().saturating_sub(s.at_ms) < stale_ms,
        Ok(None) => false,
        // Cannot tell: leave it (it reappears).
        Err(_) => true,
    };
    if alive {
        tracing::warn!(batch = %name, holder = %mark.worker, "a batch another worker is sending (the queue delivered it twice); left to it");
        return false;
    }
    tracing::warn!(batch = %name, holder = %mark.worker, "taking over a batch from a worker that is gone");
    store.retake(fire_id, &r.msg, &ctx.id).await.is_ok()
}

async fn take_batch(
    ctx: &Ctx,
    loaded: &Loaded,
    fire: &mut Option<FireHandle>,
    held: &mut HashMap<String, Held>,
    r: Received<BatchMsg>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (store, queues, engine, fire_id) = (&ctx.store, &ctx.queues, &loaded.engine, loaded.spec.fire_id.as_str());
    let name = super::store::batch_name(&r.msg);
    if r.at.elapsed() >= ctx.aws.config.worker.visibility_timeout {
        // Its visibility ran out before it was taken: another worker may
        // hold it now. Left alone (it reappears if no one does).
        tracing::warn!(batch = %name, waited_s = r.at.elapsed().as_secs(), "a batch waited out its visibility before it was taken; left to the queue");
        return;
    }
    if r.msg.campaign_id != fire_id {
        tracing::error!(batch = %name, campaign = %r.msg.campaign_id, holds = %fire_id, "a batch of a fire this worker is not warm for; left in the queue");
        return;
    }
    if let Some(at) = r.msg.not_before_ms
        && at > crate::clock::now_ms()
    {
        // Due later than the queue could delay it: queued again for the
        // rest of its wait (the copy is queued before this one is deleted,
        // so the batch is never lost).
        let fired_at = std::time::SystemTime::now();
        let wait = Duration::from_millis(at - crate::clock::now_ms());
        let mut msg = r.msg.clone();
        msg.not_before_ms = None;
        match queues.send_batches(&[(wait, msg)], fired_at, ctx.aws.config.worker.max_delay).await {
            Ok(_) => {
                let _ = queues.delete_batch(&r.handle).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, batch = %name, "could not queue an early batch again; released");
                let _ = queues.release(&r.handle).await;
            }
        }
        return;
    }
    match store.is_done(fire_id, &r.msg).await {
        Ok(true) => {
            // Redelivered after another worker finished it.
            let _ = queues.delete_batch(&r.handle).await;
            return;
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a batch; released");
            let _ = queues.release(&r.handle).await;
            return;
        }
    }
    if held.contains_key(&name) || !take(ctx, &r).await {
        return;
    }
    if fire.is_none() {
        match store.fire_record(fire_id).await {
            Ok(Some(record)) => {
                loaded.sink.begin(fire_id, record.fired_at_ms);
                let h = engine.adopt(&record);
                if let Ok(Some(mark)) = store.abort_mark(fire_id).await {
                    h.abort(&mark.by_and_why());
                }
                *fire = Some(h);
            }
            Ok(None) => {
                tracing::error!(fire = %fire_id, "a batch of a fire the ledger does not know; left in the queue");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the ledger; batch released");
                let _ = queues.release(&r.handle).await;
                return;
            }
        }
    }
    let devices = u64::from(r.msg.end - r.msg.start);
    if held.insert(name, Held { handle: r.handle, since: Instant::now(), devices, _permit: permit }).is_none() {
        engine.submit(r.msg);
    }
}

/// Records a finished batch, then deletes its message (in a task of
/// `finishing`: records of many batches are written at once). `stopping`:
/// the engine stopped its hand-offs, and a batch it only partly handed off
/// has the rest queued as a batch of its own (one it never started is
/// released whole).
fn finish_batch(
    ctx: &Ctx,
    fire_id: &str,
    held: &mut HashMap<String, Held>,
    finishing: &mut tokio::task::JoinSet<()>,
    d: BatchDone,
    stopping: bool,
) {
    let name = super::store::batch_name(&d.msg);
    let handle = held.remove(&name).map(|h| h.handle);
    let (store, queues, fire_id) = (ctx.store.clone(), ctx.queues.clone(), fire_id.to_owned());
    let rest = (stopping && d.unsent > 0).then(|| BatchMsg { start: d.msg.end - d.unsent, not_before_ms: None, ..d.msg.clone() });
    if stopping && d.handed_off == 0 {
        if let Some(handle) = handle {
            finishing.spawn(async move {
                let _ = store.untake(&fire_id, &name).await;
                let _ = queues.release(&handle).await;
            });
        }
        return;
    }
    let max_delay = ctx.aws.config.worker.max_delay;
    let record = DoneRecord { done: d, worker: ctx.id.clone(), requeued: rest.clone() };
    finishing.spawn(async move {
        // The rest is queued before the record is written: a crash between
        // the two sends the rest twice, never loses it.
        if let Some(rest) = &rest
            && let Err(e) = queues.send_batches(&[(Duration::ZERO, rest.clone())], std::time::SystemTime::now(), max_delay).await
        {
            tracing::error!(error = %e, batch = %name, "could not queue the rest of a batch; the whole batch goes back to the queue");
            if let Some(handle) = handle {
                let _ = queues.release(&handle).await;
            }
            return;
        }
        if let Err(e) = store.put_done(&fire_id, &record).await {
            // Not deleted: the message reappears and the batch is sent again
            // rather than lost.
            tracing::error!(error = %e, batch = %name, "could not record a finished batch");
            return;
        }
        if let Some(handle) = handle
            && let Err(e) = queues.delete_batch(&handle).await
        {
            tracing::warn!(error = %e, batch = %name, "could not delete a finished batch (its record stops a resend)");
        }
    });
}
