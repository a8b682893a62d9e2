//! The workers a runbook drives: warm, test-send, fire. [`Workers`] is the
//! seam; [`EmbeddedWorkers`] are the fan-out engine's notifier threads in
//! this process, and AWS mode implements the same trait over S3 and SQS
//! (`aws::control::AwsWorkers`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::audience::{Audience, AudienceError, AudienceSource};
use crate::campaign::Campaign;
use crate::fanout::{Engine, EngineConfig, EngineError, FireHandle, FireOutcome, FireScope, LedgerError, SqliteLedger, Warm, WarmError};
use crate::metrics::MetricsSink;
use crate::provider::{ProviderChoice, Received, Setup, SetupError};
use crate::testsend::{TestSendError, TestSendReport};

/// What one worker holds after warming.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkerWarm {
    /// Worker (task) id.
    pub worker: String,
    /// Shards loaded and verified.
    pub shards: u32,
    /// Shards of the audience.
    pub shards_total: u32,
    /// The campaign hash it holds.
    pub campaign_hash: String,
}

/// The workers' warm state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WarmReport {
    /// The campaign hash every worker holds.
    pub campaign_hash: String,
    /// Audience checksum + campaign hash.
    pub checksum: String,
    /// Devices the campaign targets.
    pub devices: u64,
    /// Per worker.
    pub workers: Vec<WorkerWarm>,
}

impl WarmReport {
    /// Every worker holds every shard.
    pub fn all_shards_warm(&self) -> bool {
        !self.workers.is_empty() && self.workers.iter().all(|w| w.shards == w.shards_total && w.campaign_hash == self.campaign_hash)
    }
}

/// Why the workers could not warm, test-send or fire. Each variant keeps
/// its cause, so a face can tell a missing scale-up from bad credentials
/// from an unreachable AWS.
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    /// No task runs to warm.
    #[error("no ECS task is running: scale the service first")]
    NoTasks,
    /// A fire before any verify-warm finished.
    #[error("the workers are not warm")]
    NotWarm,
    /// A fire while a verify-warm runs.
    #[error("the workers are warming; fire when they are warm")]
    Warming,
    /// The runbook's audience could not be prepared or loaded.
    #[error("audience: {0}")]
    Audience(#[from] AudienceError),
    /// The campaign does not fit the audience.
    #[error(transparent)]
    Warm(#[from] WarmError),
    /// The providers could not start: credentials or endpoints.
    #[error("provider: {0}")]
    Provider(#[from] SetupError),
    /// The fan-out engine refused.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The fire ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The test-send failed.
    #[error(transparent)]
    TestSend(#[from] TestSendError),
    /// A worker reported that it cannot warm.
    #[error("worker {worker} could not warm: {error}")]
    WorkerFailed {
        /// Its id.
        worker: String,
        /// What it reported.
        error: String,
    },
    /// Not every worker was warm in time.
    #[error("{warm} of {tasks} workers warm after {}: see {status}", humantime::format_duration(*after))]
    WarmTimeout {
        /// Workers warm.
        warm: usize,
        /// Workers expected.
        tasks: u32,
        /// How long it waited.
        after: Duration,
        /// Where the workers' status is.
        status: String,
    },
    /// A file the workers need could not be read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An outside service the workers depend on (AWS) failed or did not
    /// answer; nothing more is known here.
    #[error("{0}")]
    Platform(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A background task panicked or was cancelled (a bug).
    #[error("internal: {0}")]
    Internal(String),
    /// These workers cannot resume a fire.
    #[error("these workers cannot resume a fire (in AWS mode, a stopped worker's batches go back to the queue by themselves)")]
    NotResumable,
}

/// The workers: warm, test-send, fire.
pub trait Workers: Send + Sync + std::fmt::Debug {
    /// Loads the audience and `campaign` into every worker (`tasks` of
    /// them) and verifies them.
    fn warm(&self, campaign: Arc<Campaign>, tasks: u32) -> BoxFuture<'_, Result<WarmReport, WorkersError>>;
    /// Sends the campaign to its test recipients.
    fn test_send<'a>(&'a self, campaign: &'a Campaign, operator: &'a str) -> BoxFuture<'a, Result<TestSendReport, WorkersError>>;
    /// Fires what was warmed (once per fire id, ever).
    fn fire(&self, operator: &str) -> Result<FireOutcome, WorkersError>;
    /// The fire of this event, once started.
    fn handle(&self) -> Option<FireHandle>;
    /// Resumes the interrupted fire of what was warmed: sends the devices
    /// without a final answer. Workers that cannot (AWS: a stopped worker's
    /// batches go back to the queue on their own) say so.
    fn resume(&self, _operator: &str) -> Result<FireOutcome, WorkersError> {
        Err(WorkersError::NotResumable)
    }
    /// How the warm campaign's fire stands: devices with a final answer,
    /// when the workers keep a journal.
    fn standing(&self) -> Result<Option<crate::fanout::Standing>, WorkersError> {
        Ok(None)
    }
    /// Asks whichever process sends this event's fire of `campaign_id` to
    /// stop, durably (a joined window or walk has no handle to abort).
    /// Nothing happens if the campaign was not fired.
    fn request_abort(&self, _campaign_id: &str, _by: &str, _why: &str) -> Result<(), WorkersError> {
        Ok(())
    }
    /// What a plan checks of the workers' deployment (AWS: the queues and
    /// the fleet's groups); nothing in process.
    fn plan_facts(&self) -> BoxFuture<'_, Result<Option<crate::plan::aws::AwsFacts>, WorkersError>> {
        Box::pin(async { Ok(None) })
    }
    /// What arrived, counted at the receiver if it can be asked.
    fn received(&self, sender_delivered: u64) -> Received;
    /// Stops everything.
    fn shutdown(&self);
}

/// Loads `source` into `work` on a blocking thread.
pub(crate) async fn load_audience(source: &AudienceSource, work: &std::path::Path) -> Result<(PathBuf, Audience), WorkersError> {
    let (source, work) = (source.clone(), work.to_owned());
    let loaded = tokio::task::spawn_blocking(move || source.load(&work)).await.map_err(|e| WorkersError::Internal(e.to_string()))?;
    Ok(loaded?)
}

/// In-process workers: the fan-out engine's notifier threads, one per ECS
/// task up to the cores of this machine.
#[derive(Debug)]
pub struct EmbeddedWorkers {
    source: AudienceSource,
    work_dir: PathBuf,
    ledger: PathBuf,
    provider: ProviderChoice,
    scope: FireScope,
    /// Where the engines report (the recorder's live metrics, and
    /// Prometheus' totals).
    metrics: Arc<dyn MetricsSink>,
    /// The warm engine (replaced by each verify-warm).
    engine: tokio::sync::Mutex<Option<Engine>>,
    handle: Mutex<Option<FireHandle>>,
    /// The started provider (the gateway), kept for the whole event.
    setup: Mutex<Option<Arc<Setup>>>,
    audience: Mutex<Option<Arc<Audience>>>,
    /// The runbook's `[send] outage_timeout`.
    outage_timeout: Option<Duration>,
}

impl EmbeddedWorkers {
    /// Workers for `source`, compiled into `work_dir`, claiming fires in
    /// the ledger at `ledger` under `scope`'s key.
    pub fn new(
        source: AudienceSource,
        work_dir: PathBuf,
        ledger: PathBuf,
        provider: ProviderChoice,
        scope: FireScope,
        metrics: Arc<dyn MetricsSink>,
    ) -> Self {
        Self {
            source,
            work_dir,
            ledger,
            provider,
            scope,
            metrics,
            engine: tokio::sync::Mutex::new(None),
            handle: Mutex::new(None),
            setup: Mutex::new(None),
            audience: Mutex::new(None),
            outage_timeout: None,
        }
    }

    /// Fires wait this long for an unreachable provider (default:
    /// [`crate::fanout::DEFAULT_OUTAGE_TIMEOUT`]).
    pub fn with_outage_timeout(mut self, t: Option<Duration>) -> Self {
        self.outage_timeout = t;
        self
    }

    async fn audience(&self) -> Result<Arc<Audience>, WorkersError> {
        if let Some(a) = self.audience.lock().expect("audience lock").clone() {
            return Ok(a);
        }
        let (_, audience) = load_audience(&self.source, &self.work_dir).await?;
        let audience = Arc::new(audience);
        *self.audience.lock().expect("audience lock") = Some(audience.clone());
        Ok(audience)
    }

    async fn setup(&self, audience: &Audience, topic: &str) -> Result<Arc<Setup>, WorkersError> {
        if let Some(s) = self.setup.lock().expect("setup lock").clone() {
            return Ok(s);
        }
        let s = Arc::new(Setup::start(&self.provider, audience, topic).await?);
        *self.setup.lock().expect("setup lock") = Some(s.clone());
        Ok(s)
    }
}

impl Workers for EmbeddedWorkers {
    fn warm(&self, campaign: Arc<Campaign>, tasks: u32) -> BoxFuture<'_, Result<WarmReport, WorkersError>> {
        Box::pin(async move {
            if tasks == 0 {
                return Err(WorkersError::NoTasks);
            }
            let audience = self.audience().await?;
            let setup = self.setup(&audience, &campaign.apns.topic).await?;
            let fire_id = self.scope.key(&campaign.id);
            let hash = campaign.hash().to_owned();
            let campaign = Arc::new(Campaign::clone(&campaign).with_id(fire_id));
            let warm = Warm::new(audience.clone(), campaign)?;
            let devices = warm.targeted();
            let checksum = warm.checksum().to_owned();
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let defaults = EngineConfig::default();
            let config = EngineConfig {
                workers: (tasks as usize).clamp(1, cores),
                reports_dir: Some(self.work_dir.join("reports")),
                outage_timeout: self.outage_timeout.unwrap_or(defaults.outage_timeout),
                ..defaults
            };
            let ledger = Arc::new(SqliteLedger::open(&self.ledger)?);
            let mut slot = self.engine.lock().await;
            if let Some(old) = slot.take() {
                old.shutdown();
            }
            let engine = Engine::start(warm, setup.provider.clone(), ledger, self.metrics.clone(), config.clone()).await?;
            *slot = Some(engine);
            let shards = audience.shards().len() as u32;
            let workers = (0..config.workers)
                .map(|i| WorkerWarm { worker: format!("notifier-{i}"), shards, shards_total: shards, campaign_hash: hash.clone() })
                .collect();
            Ok(WarmReport { campaign_hash: hash, checksum, devices, workers })
        })
    }

    fn test_send<'a>(&'a self, campaign: &'a Campaign, operator: &'a str) -> BoxFuture<'a, Result<TestSendReport, WorkersError>> {
        Box::pin(async move {
            let audience = self.audience().await?;
            let setup = self.setup(&audience, &campaign.apns.topic).await?;
            Ok(crate::testsend::send(campaign, &setup.provider, operator).await?)
        })
    }

    fn fire(&self, operator: &str) -> Result<FireOutcome, WorkersError> {
        let slot = self.engine.try_lock().map_err(|_| WorkersError::Warming)?;
        let engine = slot.as_ref().ok_or(WorkersError::NotWarm)?;
        if let Some(s) = self.setup.lock().expect("setup lock").as_ref() {
            s.mark_fire();
        }
        let outcome = match engine.fire(operator)? {
            // A fire whose process died a moment ago reads as interrupted
            // once its heartbeat is quiet (a few seconds at most).
            FireOutcome::AlreadyFired(r) => FireOutcome::AlreadyFired(engine.settle(r)?),
            other => other,
        };
        if let FireOutcome::Started(h) = &outcome {
            *self.handle.lock().expect("handle lock") = Some(h.clone());
        }
        Ok(outcome)
    }

    fn handle(&self) -> Option<FireHandle> {
        self.handle.lock().expect("handle lock").clone()
    }

    fn resume(&self, operator: &str) -> Result<FireOutcome, WorkersError> {
        let slot = self.engine.try_lock().map_err(|_| WorkersError::Warming)?;
        let engine = slot.as_ref().ok_or(WorkersError::NotWarm)?;
        let outcome = engine.resume(operator)?;
        if let FireOutcome::Started(h) = &outcome {
            *self.handle.lock().expect("handle lock") = Some(h.clone());
        }
        Ok(outcome)
    }

    fn standing(&self) -> Result<Option<crate::fanout::Standing>, WorkersError> {
        let slot = self.engine.try_lock().map_err(|_| WorkersError::Warming)?;
        Ok(slot.as_ref().map(Engine::standing).transpose()?.flatten())
    }

    fn request_abort(&self, campaign_id: &str, by: &str, why: &str) -> Result<(), WorkersError> {
        use crate::fanout::FireLedger as _;
        let ledger = SqliteLedger::open(&self.ledger)?;
        let request = crate::fanout::AbortRequest { by: by.to_owned(), why: why.to_owned(), at_ms: crate::clock::now_ms() };
        ledger.request_abort(&self.scope.key(campaign_id), &request)?;
        Ok(())
    }

    fn received(&self, sender_delivered: u64) -> Received {
        let setup = self.setup.lock().expect("setup lock").clone();
        let audience = self.audience.lock().expect("audience lock").clone();
        match (setup, audience) {
            (Some(s), Some(a)) => s.received(&a, sender_delivered),
            _ => Received { delivered: sender_delivered, duplicates: 0, measured_at: "sender" },
        }
    }

    fn shutdown(&self) {
        if let Ok(mut slot) = self.engine.try_lock()
            && let Some(e) = slot.take()
        {
            e.shutdown();
        }
        self.setup.lock().expect("setup lock").take();
    }
}
