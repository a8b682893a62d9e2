//! The app's and the CLI's side of AWS mode: [`AwsWorkers`] implements the
//! runbook's [`Workers`] over S3, SQS and CloudWatch, and
//! [`PublishedFlags`] publishes the zombie flags to S3.
//!
//! A fire is claimed in the S3 ledger, then queued as one FIFO message per
//! market. Its progress is followed from the batch records the workers
//! write (exact counts, the completion) and from CloudWatch (the live
//! chart), into the same [`FireRun`] and [`LiveMetrics`] the embedded mode
//! uses, so the runbook engine, the recorder and the UI do not know the
//! difference.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::BoxFuture;

use super::queues::Queues;
use super::store::WorkerState;
use super::store::{Store, WarmSpec};
use super::worker::WorkerLedger;
use super::{Aws, AwsError};
use crate::audience::Audience;
use crate::audience::AudienceSource;
use crate::campaign::{Campaign, Mode};
use crate::fanout::run::{Completion, FireRun, RunDelta, UnsentRange};
use crate::fanout::{Claim, FireClaim, FireHandle, FireLedger, FireOutcome, FireRecord, FireStatus, LedgerError, RetryPolicy, Warm};
use crate::metrics::MetricsSink;
use crate::provider::{ProviderChoice, Received, Setup};
use crate::push::FailReason;
use crate::queue::FireMsg;
use crate::recorder::live::LiveMetrics;
use crate::runbook::file::Runbook;
use crate::runbook::workers::{WarmReport, WorkerWarm, Workers, WorkersError, load_audience};
use crate::runbook::{ServiceOptions, Services, ServicesError};
use crate::testsend::TestSendReport;
use crate::testsend::TestSendStore;
use crate::zombie::SqliteFlagStore;
use crate::zombie::{FlagError, FlagStore, FlagsDocument, Switch, ZombieFlag};

/// Runs `f` with fresh clients on a runtime and a thread of its own, and
/// waits for it. The runbook engine calls the fire and the zombie switch
/// from synchronous code, the fire under its event lock: the work must not
/// need the caller's runtime, whose other threads may be waiting on that
/// lock (they would never drive its I/O).
pub(crate) fn run_apart<T, F, Fut>(config: &super::AwsConfig, f: F) -> Result<T, AwsError>
where
    T: Send,
    F: FnOnce(Aws) -> Fut + Send,
    Fut: std::future::Future<Output = T>,
{
    let work = || {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(AwsError::Runtime)?;
                    rt.block_on(async {
                        let aws = Aws::connect(config.clone()).await?;
                        Ok(f(aws).await)
                    })
                })
                .join()
                .map_err(|_| AwsError::Panicked)?
        })
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// An AWS failure as the runbook's workers report it.
fn platform(e: impl std::error::Error + Send + Sync + 'static) -> WorkersError {
    WorkersError::Platform(Box::new(e))
}

/// A fire that could not be claimed or queued.
#[derive(Debug, thiserror::Error)]
pub enum FireError {
    /// The S3 ledger could not be written: nothing was sent.
    #[error("fire ledger: {0}; nothing was sent")]
    Claim(#[source] AwsError),
    /// Claimed, but the fire queue could not be opened.
    #[error("the fire is claimed but cannot be queued: {0}")]
    Queues(#[source] AwsError),
    /// Claimed, but a market's message could not be queued.
    #[error("the fire is claimed but market {market} could not be queued: {source}")]
    Market {
        /// The market.
        market: String,
        /// The cause.
        #[source]
        source: AwsError,
    },
}

/// Options of the AWS workers.
#[derive(Debug, Clone)]
pub struct AwsWorkersOptions {
    /// The runbook's audience.
    pub source: AudienceSource,
    /// Where the audience is compiled before upload.
    pub work_dir: PathBuf,
    /// What the fire is for, which makes its key.
    pub scope: crate::fanout::FireScope,
    /// The provider of test-sends (sent from here).
    pub provider: ProviderChoice,
    /// How long verify-warm waits for the workers.
    pub warm_timeout: Duration,
    /// The runbook's `[send] outage_timeout`, handed to the workers with
    /// the warm spec.
    pub outage_timeout: Option<Duration>,
}

/// What the last verify-warm published.
#[derive(Debug, Clone)]
struct Warmed {
    campaign: Arc<Campaign>,
    audience: Arc<Audience>,
    targeted: u64,
}

/// The workers of an ECS service, driven through S3 and SQS.
#[derive(Debug)]
pub struct AwsWorkers {
    aws: Aws,
    store: Store,
    opts: AwsWorkersOptions,
    live: Arc<LiveMetrics>,
    warmed: Mutex<Option<Warmed>>,
    audience: tokio::sync::Mutex<Option<(PathBuf, Arc<Audience>)>>,
    handle: Mutex<Option<FireHandle>>,
    setup: tokio::sync::Mutex<Option<Arc<Setup>>>,
}

impl AwsWorkers {
    /// Workers behind `aws`, reporting to `live`.
    pub fn new(aws: Aws, opts: AwsWorkersOptions, live: Arc<LiveMetrics>) -> Self {
        Self {
            store: aws.store(),
            aws,
            opts,
            live,
            warmed: Mutex::new(None),
            audience: tokio::sync::Mutex::new(None),
            handle: Mutex::new(None),
            setup: tokio::sync::Mutex::new(None),
        }
    }

    /// The runbook's audience, compiled here once per event.
    async fn local_audience(&self) -> Result<(PathBuf, Arc<Audience>), WorkersError> {
        let mut slot = self.audience.lock().await;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let (dir, audience) = load_audience(&self.opts.source, &self.opts.work_dir).await?;
        let audience = Arc::new(audience);
        *slot = Some((dir.clone(), audience.clone()));
        Ok((dir, audience))
    }

    async fn warm_async(&self, campaign: Arc<Campaign>, tasks: u32) -> Result<WarmReport, WorkersError> {
        if tasks == 0 {
            return Err(WorkersError::NoTasks);
        }
        let (dir, audience) = self.local_audience().await?;
        let fire_id = self.opts.scope.key(&campaign.id);
        let hash = campaign.hash().to_owned();
        let fired = Arc::new(Campaign::clone(&campaign).with_id(fire_id.clone()));
        // Checked here first: a campaign the audience cannot take fails now,
        // with the file's name, not in every worker.
        let warm = Warm::new(audience.clone(), fired.clone())?;
        let text =
            std::fs::read_to_string(campaign.source()).map_err(|source| WorkersError::Io { path: campaign.source().to_owned(), source })?;
        let spec = WarmSpec {
            fire_id: fire_id.clone(),
            campaign_hash: hash.clone(),
            silent: campaign.mode == Mode::Silent,
            audience_checksum: format!("{:016x}", audience.checksum()),
            outage_timeout_s: self.opts.outage_timeout.map(|t| t.as_secs().max(1)),
        };
        self.store.upload_audience(&dir).await.map_err(platform)?;
        self.store.put_warm(&spec, &text).await.map_err(platform)?;
        let since = crate::fanout::ledger::ms(SystemTime::now());
        let deadline = Instant::now() + self.opts.warm_timeout;
        let shards_total = audience.shards().len() as u32;
        let workers = loop {
            let all = self.store.workers().await.map_err(platform)?;
            let current: Vec<_> =
                all.iter().filter(|w| w.fire_id == fire_id && w.at_ms + 2_000 >= since && w.state != WorkerState::Stopped).collect();
            if let Some(bad) = current.iter().find(|w| w.state == WorkerState::Error) {
                return Err(WorkersError::WorkerFailed { worker: bad.worker.clone(), error: bad.error.clone().unwrap_or_default() });
            }
            let warm: Vec<_> = current.iter().filter(|w| w.state == WorkerState::Warm && w.campaign_hash == hash).collect();
            if warm.len() >= tasks as usize {
                break warm
                    .into_iter()
                    .map(|w| WorkerWarm {
                        worker: w.worker.clone(),
                        shards: w.shards,
                        shards_total,
                        campaign_hash: w.campaign_hash.clone(),
                    })
                    .collect();
            }
            if Instant::now() >= deadline {
                return Err(WorkersError::WarmTimeout {
                    warm: warm.len(),
                    tasks,
                    after: self.opts.warm_timeout,
                    status: self.store.url("workers/"),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        *self.warmed.lock().expect("warm lock") = Some(Warmed { campaign: fired, audience, targeted: warm.targeted() });
        Ok(WarmReport { campaign_hash: hash, checksum: warm.checksum().to_owned(), devices: warm.targeted(), workers })
    }

    fn fire_now(&self, operator: &str) -> Result<FireOutcome, WorkersError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| WorkersError::Internal(e.to_string()))?;
        let warmed = self.warmed.lock().expect("warm lock").clone().ok_or(WorkersError::NotWarm)?;
        let campaign = &warmed.campaign;
        let fired = run_apart(&self.aws.config, |aws| async move { fire(&aws, campaign, operator).await }).map_err(platform)?;
        let record = match fired.map_err(platform)?.claim {
            Claim::AlreadyFired(r) => return Ok(FireOutcome::AlreadyFired(r)),
            Claim::Won(r) => r,
        };
        let run = Arc::new(FireRun::joined(&record, &warmed.campaign.apns, warmed.targeted));
        let handle = FireHandle::from_run(run.clone());
        *self.handle.lock().expect("handle lock") = Some(handle.clone());
        runtime.spawn(follow(self.aws.clone(), record, warmed, run, self.live.clone()));
        Ok(FireOutcome::Started(handle))
    }
}

/// What a press did in AWS mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// Won: this press fired. Already fired: somebody pressed first.
    pub claim: Claim,
    /// Markets of a fire claimed before but not fully queued (its press
    /// failed midway), queued by this press.
    pub requeued: Vec<String>,
}

/// Fires `campaign` (its id is the fire id): claims it in the S3 ledger,
/// then queues one FIFO message per market. Whoever loses the claim, in any
/// process and at any time, gets [`Claim::AlreadyFired`] and fires nothing
/// new; if that fire is still under way, markets it has not dispatched are
/// queued again ([`complete`]).
pub async fn fire(aws: &Aws, campaign: &Campaign, operator: &str) -> Result<Fired, FireError> {
    let claim = FireClaim {
        campaign_id: campaign.id.clone(),
        campaign_hash: campaign.hash().to_owned(),
        operator: operator.to_owned(),
        at: SystemTime::now(),
        warm_checksum: None,
    };
    match aws.store().claim(&claim).await.map_err(FireError::Claim)? {
        Claim::AlreadyFired(r) => {
            let requeued = complete(aws, campaign, &r).await?;
            Ok(Fired { claim: Claim::AlreadyFired(r), requeued })
        }
        Claim::Won(r) => {
            let markets: Vec<&str> = campaign.markets.iter().map(|m| m.code.as_str()).collect();
            queue_markets(aws, campaign, &r, &markets).await?;
            Ok(Fired { claim: Claim::Won(r), requeued: Vec::new() })
        }
    }
}

/// Completes a fire claimed but not fully queued (the press that claimed
/// it failed before every market's message was queued, so no `queued`
/// record): queues the fire message of every market with no dispatch
/// record yet. Safe to repeat: the FIFO queue
/// drops a copy of a message it still holds (5-minute window) and a
/// dispatcher drops a market recorded as dispatched, so a market is
/// dispatched once whatever the number of presses. An aborted or ended
/// fire is left alone.
pub async fn complete(aws: &Aws, campaign: &Campaign, record: &FireRecord) -> Result<Vec<String>, FireError> {
    let store = aws.store();
    let id = &record.campaign_id;
    if record.status != FireStatus::Fired
        || store.is_queued(id).await.map_err(FireError::Queues)?
        || store.abort_mark(id).await.map_err(FireError::Queues)?.is_some()
    {
        return Ok(Vec::new());
    }
    let dispatched: HashSet<String> =
        store.all_dispatched(&record.campaign_id).await.map_err(FireError::Queues)?.into_iter().map(|d| d.market).collect();
    let missing: Vec<&str> = campaign.markets.iter().map(|m| m.code.as_str()).filter(|m| !dispatched.contains(*m)).collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    tracing::info!(fire = %record.campaign_id, markets = ?missing, "the fire was claimed but not every market was queued: queued again");
    queue_markets(aws, campaign, record, &missing).await?;
    Ok(missing.into_iter().map(str::to_owned).collect())
}

async fn queue_markets(aws: &Aws, campaign: &Campaign, record: &FireRecord, markets: &[&str]) -> Result<(), FireError> {
    let queues = Queues::open(aws).await.map_err(FireError::Queues)?;
    for market in markets {
        let msg = FireMsg {
            campaign_id: campaign.id.clone(),
            campaign_hash: record.campaign_hash.clone(),
            operator: record.operator.clone(),
            fired_at_ms: record.fired_at_ms,
            market: Some((*market).to_owned()),
        };
        queues.send_fire(&msg).await.map_err(|source| FireError::Market { market: (*market).to_owned(), source })?;
    }
    // From here on, a press of this fire queues nothing more.
    let all: Vec<&str> = campaign.markets.iter().map(|m| m.code.as_str()).collect();
    aws.store().put_queued(&campaign.id, &all).await.map_err(FireError::Queues)?;
    Ok(())
}

/// How an abort request was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aborted {
    /// Recorded: every worker stops its hand-offs within 250 ms.
    Requested(FireRecord),
    /// An abort was recorded before; it stands.
    AlreadyRequested(super::store::AbortMark),
    /// The fire already ended.
    Ended(FireRecord),
    /// The fire was never claimed.
    NeverFired,
}

/// Records the abort of fire `fire_id` in S3, where every worker (and the
/// window following the fire) reads it: how any process stops an AWS fire,
/// including when the process that pressed fire is gone.
pub async fn abort(aws: &Aws, fire_id: &str, by: &str, why: &str) -> Result<Aborted, AwsError> {
    let store = aws.store();
    let Some(record) = store.fire_record(fire_id).await? else { return Ok(Aborted::NeverFired) };
    if record.status != FireStatus::Fired {
        return Ok(Aborted::Ended(record));
    }
    if store.put_abort(fire_id, by, why).await? {
        Ok(Aborted::Requested(record))
    } else {
        let mark = store.abort_mark(fire_id).await?.ok_or_else(|| AwsError::Data(format!("{fire_id}: the abort mark vanished")))?;
        Ok(Aborted::AlreadyRequested(mark))
    }
}

/// The campaign the workers hold (from S3), under its fire id.
pub async fn warmed_campaign(aws: &Aws) -> Result<(WarmSpec, Campaign), AwsError> {
    let store = aws.store();
    let (spec, text) = store.warm().await?.ok_or_else(|| AwsError::NotWarm { url: store.url("campaign/warm.json") })?;
    let campaign = spec.campaign(&text, std::path::Path::new(&store.url("campaign/campaign.toml")))?;
    Ok((spec, campaign))
}

/// How long a finished fire waits for CloudWatch to catch up with the
/// batch records.
const CHART_GRACE: Duration = Duration::from_secs(15);

/// Follows a fire to its end: batch records into the run, CloudWatch into
/// the live metrics, an abort out to the workers, the end into the ledger.
async fn follow(aws: Aws, record: FireRecord, warmed: Warmed, run: Arc<FireRun>, live: Arc<LiveMetrics>) {
    let store = aws.store();
    let fire_id = record.campaign_id.clone();
    let markets = warmed.campaign.markets.len();
    let mut seen: HashSet<String> = HashSet::new();
    let mut batches: Option<u64> = None;
    // Batches a stopping worker split (their rest queued as batches of
    // their own): each is one more batch to wait for.
    let mut split = 0u64;
    let mut records_complete_at: Option<Instant> = None;
    let mut abort_sent = false;
    let mut abort_checked = Instant::now();
    let mut charted = super::metrics::Series::default();
    let fired_at_s = record.fired_at_ms / 1000;
    let captured = CapturedLedger::default();
    loop {
        if run.is_aborted() && !abort_sent {
            let by = run.aborted_by().unwrap_or_else(|| "operator".into());
            match store.put_abort(&fire_id, &by, "").await {
                Ok(_) => abort_sent = true,
                Err(e) => tracing::error!(error = %e, "could not record the abort in S3; retrying"),
            }
        }
        // An abort from elsewhere (`aws abort`, another window).
        if !run.is_aborted() && abort_checked.elapsed() >= Duration::from_secs(1) {
            abort_checked = Instant::now();
            if let Ok(Some(mark)) = store.abort_mark(&fire_id).await {
                run.abort(&mark.by_and_why());
                abort_sent = true;
            }
        }
        if batches.is_none() {
            match store.all_dispatched(&fire_id).await {
                Ok(d) if d.len() >= markets => {
                    let n = d.iter().map(|d| d.batches).sum();
                    run.dispatched(n + split);
                    batches = Some(n);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading dispatch records"),
            }
        }
        match store.done_names(&fire_id).await {
            Ok(names) => {
                for name in names {
                    if seen.contains(&name) {
                        continue;
                    }
                    match store.done(&fire_id, &name).await {
                        Ok(Some(r)) => {
                            let now = Instant::now();
                            let d = &r.done;
                            let mut delta = RunDelta {
                                handed_off: u64::from(d.handed_off),
                                delivered: u64::from(d.delivered),
                                in_doubt: u64::from(d.in_doubt),
                                batches_done: 1,
                                last_handoff: Some(now),
                                last_outcome: Some(now),
                                ..RunDelta::default()
                            };
                            for (reason, n) in &d.failed {
                                if let Some(reason) = FailReason::parse(reason) {
                                    delta.failed[reason.index()] += u64::from(*n);
                                }
                            }
                            run.first_sends(u64::from(d.handed_off));
                            if r.requeued.is_some() {
                                // The rest is a batch of its own, counted
                                // when its record comes.
                                split += 1;
                                if let Some(n) = batches {
                                    run.dispatched(n + split);
                                }
                            } else {
                                run.unsent(UnsentRange {
                                    shard: d.msg.shard,
                                    platform: d.msg.platform,
                                    start: d.msg.end - d.unsent,
                                    end: d.msg.end,
                                });
                            }
                            run.apply(delta);
                            seen.insert(name);
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "reading a batch record"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing batch records"),
        }
        // The live chart: CloudWatch's per-second points, new counts only.
        let to = SystemTime::now() + Duration::from_secs(1);
        let from = record.fired_at() - Duration::from_secs(1);
        if let Ok(series) = super::metrics::read_delivered(&aws.cloudwatch, &aws.config.namespace, &fire_id, from, to).await {
            let mut delta = super::metrics::Series::default();
            for (second, v) in &series.delivered {
                let old = charted.delivered.get(second).copied().unwrap_or_default();
                let d = [v[0].saturating_sub(old[0]), v[1].saturating_sub(old[1])];
                if d != [0, 0] {
                    delta.delivered.insert(*second, d);
                }
            }
            if !delta.delivered.is_empty() {
                live.record(&fire_id, &delta.to_stats(fired_at_s));
            }
            charted = series;
        }
        // Every batch has its record: give CloudWatch a few seconds to hold
        // the same count, so the chart agrees with the outcome when the fire
        // is reported done (the workers put their points every second).
        if records_complete_at.is_none() && batches.is_some_and(|n| seen.len() as u64 >= n + split) {
            records_complete_at = Some(Instant::now());
        }
        let chart_lags = charted.total() < run.progress().delivered;
        if chart_lags && !run.is_aborted() && records_complete_at.is_some_and(|at| at.elapsed() < CHART_GRACE) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        run.try_complete(Completion {
            ledger: &captured,
            audience: &warmed.audience,
            reports_dir: None,
            alerts: Vec::new(),
            budget: RetryPolicy::default().budget,
        });
        if run.progress().done {
            let (status, json) = captured.0.lock().expect("ledger lock").clone().unwrap_or((FireStatus::Completed, "{}".into()));
            if let Err(e) = store.finish(&record, status, &json).await {
                tracing::error!(error = %e, "could not record the end of the fire in S3");
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Keeps the end of a mirrored run, to write it to S3.
#[derive(Debug, Default)]
struct CapturedLedger(Mutex<Option<(FireStatus, String)>>);

impl FireLedger for CapturedLedger {
    fn claim(&self, claim: &FireClaim) -> Result<Claim, LedgerError> {
        WorkerLedger.claim(claim)
    }

    fn finish(&self, _: &str, status: FireStatus, summary_json: &str) -> Result<(), LedgerError> {
        *self.0.lock().expect("ledger lock") = Some((status, summary_json.to_owned()));
        Ok(())
    }

    fn get(&self, _: &str) -> Result<Option<FireRecord>, LedgerError> {
        Ok(None)
    }
}

impl Workers for AwsWorkers {
    fn warm(&self, campaign: Arc<Campaign>, tasks: u32) -> BoxFuture<'_, Result<WarmReport, WorkersError>> {
        Box::pin(self.warm_async(campaign, tasks))
    }

    fn test_send<'a>(&'a self, campaign: &'a Campaign, operator: &'a str) -> BoxFuture<'a, Result<TestSendReport, WorkersError>> {
        Box::pin(async move {
            let mut slot = self.setup.lock().await;
            let setup = match slot.as_ref() {
                Some(s) => s.clone(),
                None => {
                    let (_, audience) = self.local_audience().await?;
                    let s = Arc::new(Setup::start(&self.opts.provider, &audience, &campaign.apns.topic).await?);
                    *slot = Some(s.clone());
                    s
                }
            };
            Ok(crate::testsend::send(campaign, &setup.provider, operator).await?)
        })
    }

    fn fire(&self, operator: &str) -> Result<FireOutcome, WorkersError> {
        self.fire_now(operator)
    }

    fn plan_facts(&self) -> BoxFuture<'_, Result<Option<crate::plan::aws::AwsFacts>, WorkersError>> {
        Box::pin(async { Ok(Some(super::planning::plan_facts(&self.aws).await.map_err(platform)?)) })
    }

    fn handle(&self) -> Option<FireHandle> {
        self.handle.lock().expect("handle lock").clone()
    }

    fn request_abort(&self, campaign_id: &str, by: &str, why: &str) -> Result<(), WorkersError> {
        let fire_id = self.opts.scope.key(campaign_id);
        run_apart(&self.aws.config, |aws| async move { abort(&aws, &fire_id, by, why).await }).and_then(|r| r).map_err(platform)?;
        Ok(())
    }

    fn received(&self, sender_delivered: u64) -> Received {
        Received { delivered: sender_delivered, duplicates: 0, measured_at: "sender" }
    }

    fn shutdown(&self) {}
}

/// Zombie flags kept in the state database, each switch published to S3 as
/// the document client apps read (`flags.json`).
#[derive(Debug)]
pub struct PublishedFlags {
    inner: Arc<dyn FlagStore>,
    config: super::AwsConfig,
    url: String,
}

impl PublishedFlags {
    /// Publishes `inner`'s switches to the bucket of `aws`.
    pub fn new(inner: Arc<dyn FlagStore>, aws: &Aws) -> Self {
        Self { inner, config: aws.config.clone(), url: aws.store().url("flags.json") }
    }
}

impl FlagStore for PublishedFlags {
    fn switch(&self, switch: &Switch) -> Result<ZombieFlag, FlagError> {
        let flag = self.inner.switch(switch)?;
        let (doc, _) = FlagsDocument::at(&self.inner.flags()?, crate::zombie::now_ms());
        let doc = &doc;
        run_apart(&self.config, |aws| async move { aws.store().put_flags(doc).await })
            .and_then(|r| r)
            .map_err(|e| FlagError::Store { path: PathBuf::from(&self.url), message: format!("switched here, but not published: {e}") })?;
        Ok(flag)
    }

    fn flags(&self) -> Result<Vec<ZombieFlag>, FlagError> {
        self.inner.flags()
    }

    fn history(&self, since_ms: u64) -> Result<Vec<ZombieFlag>, FlagError> {
        self.inner.history(since_ms)
    }
}

/// The AWS set of services for `runbook`: the scale steps call the ASG and
/// ECS, verify-warm publishes the audience and campaign to S3 and waits for
/// the service's workers to report them warm, the fire is claimed in the S3
/// ledger and queued on SQS, the live charts read CloudWatch, and zombie
/// switches are published to S3 as `flags.json`. Test-sends go from here
/// through `opts.provider`.
pub fn services(runbook: &Runbook, opts: &ServiceOptions, aws: Aws) -> Result<Services, ServicesError> {
    let (recorder, live) = opts.recorder()?;
    let local: Arc<dyn FlagStore> = Arc::new(SqliteFlagStore::open(&opts.state_db)?);
    let flag_url = Some(aws.store().url("flags.json"));
    let workers = AwsWorkers::new(
        aws.clone(),
        AwsWorkersOptions {
            source: runbook.audience.clone().unwrap_or_default(),
            work_dir: opts.work_dir.clone(),
            // A launch is one fire per campaign id and environment, ever:
            // windows and CLI walks on other machines have other local
            // events but fire the same key, which the S3 ledger admits once.
            scope: opts.fire_scope.clone(),
            provider: opts.provider.clone(),
            warm_timeout: Duration::from_secs(300),
            outage_timeout: runbook.outage_timeout,
        },
        live.clone(),
    );
    Ok(Services {
        fleet: Arc::new(super::fleet::AwsFleet::new(&aws)),
        workers: Arc::new(workers),
        flags: Arc::new(PublishedFlags::new(local, &aws)),
        testsends: Arc::new(TestSendStore::open(&opts.state_db)?),
        recorder,
        live,
        flag_url,
        // Who approves is the caller's AWS principal; approvals live with
        // the fire in S3, where every machine of the launch sees them.
        approvals: Arc::new(super::approvals::S3Approvals::new(&aws)),
        fire_scope: opts.fire_scope.clone(),
        provider: opts.provider.facts(),
        flag_server: None,
        clients: None,
    })
}
