//! The fan-out engine: fire ledger, dispatch tier, notifier tier, abort.
//!
//! ```text
//! fire(campaign, operator)
//!   -> ledger.claim            durable, once per campaign id, ever
//!   -> fire queue -> dispatcher: shards x markets -> batch messages (ranges),
//!      iOS and Android interleaved in proportion
//!   -> one batch queue per platform -> notifier workers (one thread each),
//!      each with one lane per provider (its own window, retries, outage
//!      and pacing): device -> Session
//!   -> FireRun counters + MetricsSink; the last batch completes the run,
//!      writes the report to the ledger and wakes `FireHandle::wait`.
//! ```
//!
//! Workers are started (and their provider sessions warmed) by
//! [`Engine::start`], before any fire, so a fire pays for sending only.
//!
//! - [`ledger`]: the durable fire ledger.
//! - [`warm`]: audience + campaign -> per-device payload routes.
//! - [`run`]: one fire's shared counters, abort switch and report.
//! - [`journal`]: which devices have a final answer, for a resume.
//! - `dispatch` / `notifier`: the two tiers (`notifier::lane`: one
//!   provider's window, outage and pacing).
//! - [`retry`]: the backoff and the fire's retry budget.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use crate::metrics::MetricsSink;
use crate::push::{Provider, ProviderError, Session as _};
use crate::queue::{BatchMsg, EmbeddedQueue, FireMsg};

pub mod dispatch;
pub mod journal;
pub mod ledger;
mod notifier;
pub mod reports;
pub mod retry;
pub mod run;
pub mod warm;

pub use journal::Standing;
pub use ledger::{
    AbortAnswer, AbortRequest, Claim, FireClaim, FireLedger, FireRecord, FireScope, FireStatus, LedgerError, SqliteLedger, TakeOver,
};
pub use retry::{RetryBudget, RetryPolicy};
pub use run::{DeviceNote, FireReport, FireRun, Progress, UnsentRange};
pub use warm::{Warm, WarmError};

/// The default [`EngineConfig::outage_timeout`].
pub const DEFAULT_OUTAGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings of the notifier tier.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Notifier workers (threads). Default: one per core.
    pub workers: usize,
    /// Sends a worker keeps outstanding to each provider (APNs and FCM
    /// have a window each). Default 4,000 (4 connections x 1,000 streams).
    pub in_flight_per_worker: usize,
    /// After an abort, how long to wait for sends already in flight before
    /// reporting them as in doubt.
    pub drain_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// How long hand-offs wait for a provider with no live connection
    /// before the fire stops as interrupted (resumable). Default 120 s.
    pub outage_timeout: Duration,
    /// Where each fire's prune and undelivered reports go
    /// (`<dir>/<campaign id>/*.csv`); none are written when unset.
    pub reports_dir: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            in_flight_per_worker: 4 * 1000,
            drain_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            outage_timeout: DEFAULT_OUTAGE_TIMEOUT,
            reports_dir: None,
        }
    }
}

/// The engine could not start or fire.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A provider session failed to warm up.
    #[error("a notifier could not warm its provider session: {0}")]
    Provider(#[from] ProviderError),
    /// A worker thread could not be started.
    #[error("could not start a worker thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The ledger could not be read or written; nothing was sent.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A worker thread died while warming up (a bug; see the log).
    #[error("a worker thread stopped while warming up")]
    WorkerDied,
}

/// What the tiers share.
pub(crate) struct Shared {
    pub(crate) warm: Warm,
    pub(crate) config: EngineConfig,
    pub(crate) ledger: Arc<dyn FireLedger>,
    pub(crate) metrics: Arc<dyn MetricsSink>,
    pub(crate) fire_queue: EmbeddedQueue<FireMsg>,
    /// One batch queue per platform: each provider's lane takes its own.
    batch_queues: [EmbeddedQueue<BatchMsg>; 2],
    runs: Mutex<HashMap<String, Arc<FireRun>>>,
    /// The provider's alerts (a stopped provider), read at the end of a fire.
    alerts: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    /// Told of every batch a notifier finishes (AWS workers acknowledge
    /// the queue message with it).
    pub(crate) on_batch_done: Option<BatchDoneHook>,
    /// Which devices have a final answer, durably (the embedded ledger).
    pub(crate) journal: Option<journal::Journal>,
    /// No more hand-offs: a worker is stopping ([`Engine::stop_handoffs`]).
    pub(crate) draining: std::sync::atomic::AtomicBool,
}

/// Called with every finished batch, from the notifier thread.
pub type BatchDoneHook = Box<dyn Fn(BatchDone) + Send + Sync>;

/// A batch a notifier finished: every device handed off has an answer (or
/// was given up as in doubt after an abort), and the rest were not sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchDone {
    /// The batch.
    pub msg: BatchMsg,
    /// Handed to the provider.
    pub handed_off: u32,
    /// Acknowledged.
    pub delivered: u32,
    /// Failures by reason (reason names as in reports).
    pub failed: BTreeMap<String, u32>,
    /// Handed off, abandoned unanswered after an abort.
    pub in_doubt: u32,
    /// Never handed off (aborted).
    pub unsent: u32,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Shared {
    /// The batch queue of `platform`'s provider.
    pub(crate) fn batch_queue(&self, platform: crate::audience::Platform) -> &EmbeddedQueue<BatchMsg> {
        &self.batch_queues[platform as usize]
    }

    /// Queues batches, each on its platform's queue.
    pub(crate) fn queue_batches(&self, batches: impl IntoIterator<Item = BatchMsg>) {
        let [mut ios, mut android] = [Vec::new(), Vec::new()];
        for b in batches {
            match b.platform {
                crate::audience::Platform::Ios => ios.push(b),
                crate::audience::Platform::Android => android.push(b),
            }
        }
        self.batch_queues[0].send_all(ios);
        self.batch_queues[1].send_all(android);
    }

    pub(crate) fn run(&self, campaign_id: &str) -> Option<Arc<FireRun>> {
        self.runs.lock().expect("runs lock").get(campaign_id).cloned()
    }

    /// Completes `run` if its last batch is done.
    pub(crate) fn try_complete(&self, run: &FireRun) {
        let completed = run.try_complete(run::Completion {
            ledger: self.ledger.as_ref(),
            audience: &self.warm.audience,
            reports_dir: self.config.reports_dir.as_deref(),
            alerts: (self.alerts)(),
            budget: self.config.retry.budget,
        });
        if completed && let Some(journal) = &self.journal {
            journal.live(&run.campaign_id, false);
        }
    }
}

/// The answer to a fire.
#[derive(Debug)]
pub enum FireOutcome {
    /// This press fired; the handle follows the send.
    Started(FireHandle),
    /// The campaign was fired before; nothing was sent. For a resume: the
    /// fire is not interrupted (still sending somewhere, or it ended).
    AlreadyFired(FireRecord),
    /// A resume of a campaign never fired; nothing was sent.
    NeverFired,
    /// A resume from another audience or campaign than the fire's: nothing
    /// was sent (the journal's positions would name other devices).
    Mismatch {
        /// The interrupted fire.
        record: FireRecord,
        /// What this engine holds ([`Warm::checksum`]).
        now: String,
    },
}

/// A fire in progress.
#[derive(Debug, Clone)]
pub struct FireHandle {
    run: Arc<FireRun>,
}

impl FireHandle {
    /// A handle on a run followed from elsewhere (AWS mode).
    pub(crate) fn from_run(run: Arc<FireRun>) -> Self {
        Self { run }
    }

    /// The campaign.
    pub fn campaign_id(&self) -> &str {
        &self.run.campaign_id
    }

    /// A live view.
    pub fn progress(&self) -> Progress {
        self.run.progress()
    }

    /// Stops the fire: no device is handed off after this returns (beyond
    /// the one being handed off at this instant). Returns false if it was
    /// already aborted.
    pub fn abort(&self, by: &str) -> bool {
        self.run.abort(by)
    }

    /// Waits for the final report.
    pub async fn wait(&self) -> Arc<FireReport> {
        self.run.wait().await
    }
}

/// How often the engine reads the ledger for an abort requested elsewhere
/// (another process, a joined window or walk).
pub const ABORT_POLL: Duration = Duration::from_millis(200);

/// The embedded sender: warm workers waiting for a fire.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Reads durable abort requests for the fires this engine sends.
    abort_watch: Option<(Arc<std::sync::atomic::AtomicBool>, JoinHandle<()>)>,
}

/// Aborts a run of `shared` once the ledger holds an abort request for it.
fn watch_aborts(shared: &Shared, stop: &std::sync::atomic::AtomicBool) {
    let mut failing = false;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        std::thread::park_timeout(ABORT_POLL);
        let live: Vec<Arc<FireRun>> =
            shared.runs.lock().expect("runs lock").values().filter(|r| !r.is_aborted() && !r.progress().done).cloned().collect();
        for run in live {
            if shared.journal.as_ref().is_some_and(|j| j.is_lost(&run.campaign_id)) {
                run.abort("another process (it resumed this fire)");
                continue;
            }
            match shared.ledger.abort_request(&run.campaign_id) {
                Ok(Some(request)) => {
                    tracing::warn!(campaign = %run.campaign_id, by = %request.by, why = %request.why, "abort requested through the ledger: stopping hand-offs");
                    run.abort(&format!("{} ({})", request.by, request.why));
                    failing = false;
                }
                Ok(None) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "could not read the ledger for an abort; retrying");
                    }
                    failing = true;
                }
            }
        }
    }
}

fn spawn_worker(
    name: String,
    ready: oneshot::Sender<Result<(), ProviderError>>,
    work: impl FnOnce(oneshot::Sender<Result<(), ProviderError>>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send + 'static,
) -> Result<JoinHandle<()>, EngineError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            // IO for the providers' HTTP/2 connections.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime");
            rt.block_on(work(ready));
        })
        .map_err(EngineError::Thread)
}

impl Engine {
    /// Starts the dispatcher and `config.workers` notifier workers, each
    /// with its own session of `provider`, and returns once every session is
    /// warm.
    pub async fn start<P: Provider>(
        warm: Warm,
        provider: Arc<P>,
        ledger: Arc<dyn FireLedger>,
        metrics: Arc<dyn MetricsSink>,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        Self::start_with(warm, provider, ledger, metrics, config, None).await
    }

    /// [`Engine::start`], telling `on_batch_done` of every finished batch:
    /// how an AWS worker acknowledges the batch messages it received.
    pub async fn start_with<P: Provider>(
        warm: Warm,
        provider: Arc<P>,
        ledger: Arc<dyn FireLedger>,
        metrics: Arc<dyn MetricsSink>,
        config: EngineConfig,
        on_batch_done: Option<BatchDoneHook>,
    ) -> Result<Self, EngineError> {
        let workers = config.workers.max(1);
        let alerts_of = provider.clone();
        let journal = ledger.journal()?;
        let shared = Arc::new(Shared {
            warm,
            config,
            ledger,
            metrics,
            fire_queue: EmbeddedQueue::new(),
            batch_queues: [EmbeddedQueue::new(), EmbeddedQueue::new()],
            runs: Mutex::new(HashMap::new()),
            alerts: Box::new(move || alerts_of.alerts()),
            on_batch_done,
            journal,
            draining: std::sync::atomic::AtomicBool::new(false),
        });
        let mut engine = Self { shared: shared.clone(), threads: Vec::new(), abort_watch: None };
        let mut waits = Vec::new();
        for id in 0..workers {
            let (tx, rx) = oneshot::channel();
            let (provider, shared) = (provider.clone(), shared.clone());
            engine.threads.push(spawn_worker(format!("kickoff-notifier-{id}"), tx, move |ready| {
                Box::pin(async move {
                    let mut session = provider.session();
                    match session.warm().await {
                        Ok(()) => {
                            let _ = ready.send(Ok(()));
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    }
                    notifier::Notifier::new(session, shared, id as u64).run().await;
                })
            })?);
            waits.push(rx);
        }
        let (tx, rx) = oneshot::channel();
        let dispatcher_shared = shared.clone();
        engine.threads.push(spawn_worker("kickoff-dispatch".into(), tx, move |ready| {
            Box::pin(async move {
                let _ = ready.send(Ok(()));
                dispatch::run(dispatcher_shared).await;
            })
        })?);
        waits.push(rx);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (watch_shared, watch_stop) = (shared.clone(), stop.clone());
        let watcher = std::thread::Builder::new()
            .name("kickoff-abort-watch".into())
            .spawn(move || watch_aborts(&watch_shared, &watch_stop))
            .map_err(EngineError::Thread)?;
        engine.abort_watch = Some((stop, watcher));
        for rx in waits {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(EngineError::WorkerDied),
            }
        }
        Ok(engine)
    }

    /// What the workers hold.
    pub fn warm(&self) -> &Warm {
        &self.shared.warm
    }

    /// Re-reads `record` once its process, gone from this host, has been
    /// quiet long enough to read as interrupted (a fire `kill -9`ed a
    /// moment ago). Waits at most [`ledger::QUIET_HEARTBEAT`].
    pub fn settle(&self, record: FireRecord) -> Result<FireRecord, EngineError> {
        match record.dying() {
            Some(wait) => {
                std::thread::sleep(wait);
                Ok(self.shared.ledger.get(&record.campaign_id)?.unwrap_or(record))
            }
            None => Ok(record),
        }
    }

    /// Fires the warm campaign. Idempotent through the ledger: a campaign
    /// fired before, by anyone, answers [`FireOutcome::AlreadyFired`] and
    /// sends nothing. If the ledger cannot answer, nothing is sent.
    pub fn fire(&self, operator: &str) -> Result<FireOutcome, EngineError> {
        let pressed = Instant::now();
        let at = SystemTime::now();
        let campaign = &self.shared.warm.campaign;
        let claim = FireClaim {
            campaign_id: campaign.id.clone(),
            campaign_hash: campaign.hash().to_owned(),
            operator: operator.to_owned(),
            at,
            warm_checksum: Some(self.shared.warm.checksum().to_owned()),
        };
        let record = match self.shared.ledger.claim(&claim)? {
            Claim::AlreadyFired(record) => return Ok(FireOutcome::AlreadyFired(record)),
            Claim::Won(record) => record,
        };
        let run = Arc::new(FireRun::for_record(&record, &campaign.apns, self.shared.warm.targeted(), pressed));
        Ok(FireOutcome::Started(self.start_run(record, run)))
    }

    fn start_run(&self, record: FireRecord, run: Arc<FireRun>) -> FireHandle {
        if let Some(journal) = &self.shared.journal {
            journal.live(&record.campaign_id, true);
        }
        self.shared.runs.lock().expect("runs lock").insert(record.campaign_id.clone(), run.clone());
        self.shared.fire_queue.send_all([FireMsg {
            campaign_id: record.campaign_id,
            campaign_hash: record.campaign_hash,
            operator: record.operator,
            fired_at_ms: record.fired_at_ms,
            market: None,
        }]);
        FireHandle { run }
    }

    /// How the warm campaign's fire stands in the journal: every device
    /// with a final answer, counted over what the fire targets. `None` if
    /// the ledger keeps no journal.
    pub fn standing(&self) -> Result<Option<Standing>, EngineError> {
        Ok(self.remaining()?.map(|(standing, _)| standing))
    }

    fn remaining(&self) -> Result<Option<(Standing, dispatch::Plan)>, EngineError> {
        let warm = &self.shared.warm;
        let Some(answered) = self.shared.ledger.answered(&warm.campaign.id, warm)? else { return Ok(None) };
        let left = dispatch::pace(answered.remaining(dispatch::plan(warm, &warm.campaign.id, None)), warm.campaign.max_rate);
        let unanswered: u64 = left.iter().map(|(_, b)| u64::from(b.end - b.start)).sum();
        let targeted = warm.targeted();
        Ok(Some((Standing { targeted, answered: targeted.saturating_sub(unanswered) }, left)))
    }

    /// Resumes the warm campaign's interrupted fire: sends exactly the
    /// devices the journal has no final answer for (batches that were in
    /// flight when the fire stopped go again, whole; the campaign's collapse
    /// id makes a second copy replace the first on the device). Markets
    /// whose send offset is still ahead keep their time.
    pub fn resume(&self, operator: &str) -> Result<FireOutcome, EngineError> {
        let warm = &self.shared.warm;
        let mut settled = false;
        let record = loop {
            match self.shared.ledger.take_over(&warm.campaign.id, warm.checksum())? {
                TakeOver::Resumed(record) => break record,
                TakeOver::NotInterrupted(record) => match record.dying() {
                    // Its process is gone but its heartbeat still fresh:
                    // it reads as interrupted in a moment.
                    Some(wait) if !settled => {
                        settled = true;
                        std::thread::sleep(wait);
                    }
                    _ => return Ok(FireOutcome::AlreadyFired(record)),
                },
                TakeOver::NeverFired => return Ok(FireOutcome::NeverFired),
                TakeOver::Mismatch { record, now } => return Ok(FireOutcome::Mismatch { record, now }),
            }
        };
        let Some((standing, left)) = self.remaining()? else {
            return Err(EngineError::Ledger(LedgerError {
                path: std::path::PathBuf::from(&warm.campaign.id),
                message: "the ledger keeps no journal to resume from".into(),
            }));
        };
        // Offsets count from the original press.
        let since_fire = SystemTime::now().duration_since(record.fired_at()).unwrap_or_default();
        let plan = left.into_iter().map(|(offset, b)| (offset.saturating_sub(since_fire), b)).collect();
        tracing::info!(campaign = %record.campaign_id, %operator, answered = standing.answered, left = standing.unanswered(), "resuming an interrupted fire");
        let run = Arc::new(FireRun::resuming(&record, &warm.campaign.apns, plan, standing));
        Ok(FireOutcome::Started(self.start_run(record, run)))
    }

    /// Joins a fire claimed elsewhere (by the app, through the durable
    /// ledger): its batches arrive through [`Engine::submit`]. The run is
    /// never completed here; the workers only report batches. Returns the
    /// existing handle if the fire is known.
    pub fn adopt(&self, record: &FireRecord) -> FireHandle {
        let mut runs = self.shared.runs.lock().expect("runs lock");
        let run = runs
            .entry(record.campaign_id.clone())
            .or_insert_with(|| Arc::new(FireRun::joined(record, &self.shared.warm.campaign.apns, self.shared.warm.targeted())));
        FireHandle { run: run.clone() }
    }

    /// Hands a batch of an adopted fire to the notifiers.
    pub fn submit(&self, batch: BatchMsg) {
        self.shared.queue_batches([batch]);
    }

    /// The handle of a fire started by this engine.
    pub fn handle(&self, campaign_id: &str) -> Option<FireHandle> {
        self.shared.run(campaign_id).map(|run| FireHandle { run })
    }

    /// Stops handing off, without aborting anything: every open batch
    /// ends with the devices it handed off (their answers in flight are
    /// still taken), the rest of it reported unsent in its
    /// [`BatchDone`]; batches not yet started end with nothing handed off.
    /// How a stopping AWS worker gives back exactly what it did not send.
    pub fn stop_handoffs(&self) {
        self.shared.draining.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Stops the workers after aborting any fire still running.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for run in self.shared.runs.lock().expect("runs lock").values() {
            if !run.progress().done {
                run.abort("shutdown");
            }
        }
        self.shared.fire_queue.close();
        for q in &self.shared.batch_queues {
            q.close();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some((stop, watcher)) = self.abort_watch.take() {
            stop.store(true, std::sync::atomic::Ordering::Release);
            watcher.thread().unpark();
            let _ = watcher.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}
