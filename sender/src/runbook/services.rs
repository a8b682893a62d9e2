//! What the runbook engine drives: the fleet, the workers, the flag store,
//! the test-send store, the recorder. [`Services::embedded`] builds the
//! embedded set: simulated fleet, in-process workers, the loopback push
//! gateway, SQLite flags and a loopback flag server. [`Services::aws`]
//! builds the AWS set: the ASG and the ECS service, the workers of that
//! service driven through S3 and SQS, flags published to S3, live charts
//! from CloudWatch.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::file::{AudienceSource, Runbook};
use crate::audience::generate::{self, GenerateSpec};
use crate::audience::{Audience, CompileOptions, store};
use crate::campaign::Campaign;
use crate::fanout::{Engine, EngineConfig, FireHandle, FireOutcome, SqliteLedger, Warm};
use crate::fleet::{Fleet, SimFleet};
use crate::push::choice::{ProviderChoice, Received, Setup};
use crate::recorder::Recorder;
use crate::recorder::live::LiveMetrics;
use crate::testsend::{TestSendReport, TestSendStore};
use crate::zombie::server::FlagServer;
use crate::zombie::{FlagStore, SqliteFlagStore};

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

/// The workers: warm, test-send, fire.
pub trait Workers: Send + Sync + std::fmt::Debug {
    /// Loads the audience and `campaign` into every worker (`tasks` of
    /// them) and verifies them.
    fn warm(&self, campaign: Arc<Campaign>, tasks: u32) -> BoxFuture<'_, Result<WarmReport, String>>;
    /// Sends the campaign to its test recipients.
    fn test_send<'a>(&'a self, campaign: &'a Campaign, operator: &'a str) -> BoxFuture<'a, Result<TestSendReport, String>>;
    /// Fires what was warmed, as `fire_id` (once per id, ever).
    fn fire(&self, operator: &str) -> Result<FireOutcome, String>;
    /// The fire of this event, once started.
    fn handle(&self) -> Option<FireHandle>;
    /// What arrived, counted at the receiver if it can be asked.
    fn received(&self, sender_delivered: u64) -> Received;
    /// Stops everything.
    fn shutdown(&self);
}

/// Everything a runbook event uses.
#[derive(Debug, Clone)]
pub struct Services {
    /// The fleet.
    pub fleet: Arc<dyn Fleet>,
    /// The workers.
    pub workers: Arc<dyn Workers>,
    /// Zombie flags.
    pub flags: Arc<dyn FlagStore>,
    /// Test-sends and confirmations.
    pub testsends: Arc<TestSendStore>,
    /// The flight recorder.
    pub recorder: Option<Arc<Recorder>>,
    /// The fire's live metrics (writes to the recorder).
    pub live: Arc<LiveMetrics>,
    /// Where client apps read the flags, if served here.
    pub flag_url: Option<String>,
    /// Keeps the flag server running.
    _flag_server: Option<Arc<FlagServer>>,
}

/// Options of the services, embedded or AWS.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// State database (fire ledger, test-sends, zombie flags).
    pub state_db: PathBuf,
    /// Where the generated audience and reports go.
    pub work_dir: PathBuf,
    /// The recorder file (none: do not record).
    pub recorder: Option<PathBuf>,
    /// The provider (the loopback gateway by default). In AWS mode, the
    /// provider of test-sends (sent from here; the workers send the fire).
    pub provider: ProviderChoice,
    /// Serve the flags on 127.0.0.1 (port 0: any). Embedded mode only: in
    /// AWS mode client apps read the flags document from S3.
    pub flag_server: Option<std::net::SocketAddr>,
    /// The fire's id in the ledger: `<campaign id>@<event id>`.
    pub event_id: String,
}

impl ServiceOptions {
    /// The recorder (if any) and the live metrics that write to it.
    fn recorder(&self) -> Result<(Option<Arc<Recorder>>, Arc<LiveMetrics>), String> {
        let recorder = match &self.recorder {
            Some(p) => Some(Arc::new(Recorder::create(p).map_err(|e| e.to_string())?)),
            None => None,
        };
        let live = Arc::new(LiveMetrics::new(recorder.clone()));
        Ok((recorder, live))
    }
}

/// The runbook's audience; without one, 10,000 generated devices.
fn audience_of(runbook: &Runbook) -> AudienceSource {
    runbook.audience.clone().unwrap_or(AudienceSource::Generate { devices: 10_000, seed: 1 })
}

impl Services {
    /// The embedded set for `runbook`.
    pub fn embedded(runbook: &Runbook, opts: &ServiceOptions) -> Result<Self, String> {
        let (recorder, live) = opts.recorder()?;
        let flags: Arc<dyn FlagStore> = Arc::new(SqliteFlagStore::open(&opts.state_db).map_err(|e| e.to_string())?);
        let flag_server = match opts.flag_server {
            Some(addr) => Some(Arc::new(FlagServer::start(flags.clone(), addr).map_err(|e| format!("flag server on {addr}: {e}"))?)),
            None => None,
        };
        let workers = EmbeddedWorkers {
            source: audience_of(runbook),
            work_dir: opts.work_dir.clone(),
            ledger: opts.state_db.clone(),
            provider: opts.provider.clone(),
            fire_suffix: format!("@{}", opts.event_id),
            live: live.clone(),
            engine: tokio::sync::Mutex::new(None),
            handle: Mutex::new(None),
            setup: Mutex::new(None),
            audience: Mutex::new(None),
        };
        Ok(Self {
            fleet: Arc::new(SimFleet::new(runbook.fleet.clone()).map_err(|e| e.to_string())?),
            workers: Arc::new(workers),
            flags,
            testsends: Arc::new(TestSendStore::open(&opts.state_db).map_err(|e| e.to_string())?),
            recorder,
            live,
            flag_url: flag_server.as_ref().map(|s| s.url()),
            _flag_server: flag_server,
        })
    }

    /// The AWS set for `runbook`: the scale steps call the ASG and ECS,
    /// verify-warm publishes the audience and campaign to S3 and waits for
    /// the service's workers to report them warm, the fire is claimed in
    /// the S3 ledger and queued on SQS, the live charts read CloudWatch,
    /// and zombie switches are published to S3 as `flags.json`. Test-sends
    /// go from here through `opts.provider`.
    pub fn aws(runbook: &Runbook, opts: &ServiceOptions, aws: crate::aws::Aws) -> Result<Self, String> {
        use crate::aws::control::{AwsWorkers, AwsWorkersOptions, PublishedFlags};
        let (recorder, live) = opts.recorder()?;
        let store = aws.store();
        let local: Arc<dyn FlagStore> = Arc::new(SqliteFlagStore::open(&opts.state_db).map_err(|e| e.to_string())?);
        let flag_url = Some(store.url("flags.json"));
        let workers = AwsWorkers::new(
            aws.clone(),
            AwsWorkersOptions {
                source: audience_of(runbook),
                work_dir: opts.work_dir.clone(),
                // One fire per campaign id and environment, ever: windows
                // and CLI walks on other machines have other local events
                // but fire the same campaign, which the S3 ledger admits once.
                fire_suffix: String::new(),
                provider: opts.provider.clone(),
                warm_timeout: Duration::from_secs(300),
            },
            live.clone(),
        );
        Ok(Self {
            fleet: Arc::new(crate::aws::fleet::AwsFleet::new(&aws)),
            workers: Arc::new(workers),
            flags: Arc::new(PublishedFlags::new(local, &aws)),
            testsends: Arc::new(TestSendStore::open(&opts.state_db).map_err(|e| e.to_string())?),
            recorder,
            live,
            flag_url,
            _flag_server: None,
        })
    }
}

/// In-process workers: the fan-out engine's notifier threads, one per ECS
/// task up to the cores of this machine.
#[derive(Debug)]
struct EmbeddedWorkers {
    source: AudienceSource,
    work_dir: PathBuf,
    ledger: PathBuf,
    provider: ProviderChoice,
    fire_suffix: String,
    live: Arc<LiveMetrics>,
    /// The warm engine (replaced by each verify-warm).
    engine: tokio::sync::Mutex<Option<Engine>>,
    handle: Mutex<Option<FireHandle>>,
    /// The started provider (the gateway), kept for the whole event.
    setup: Mutex<Option<Arc<Setup>>>,
    audience: Mutex<Option<Arc<Audience>>>,
}

/// The runbook's audience as a compiled directory (compiled or generated
/// into `work` if needed).
pub(crate) fn prepare(source: &AudienceSource, work: &Path) -> Result<PathBuf, String> {
    match source {
        AudienceSource::Path(p) if p.join(store::MANIFEST).is_file() => Ok(p.clone()),
        AudienceSource::Path(file) => {
            let out = work.join("audience");
            let opts = CompileOptions { force: true, ..CompileOptions::default() };
            crate::audience::compile(std::slice::from_ref(file), &out, &opts, &mut |_| {}).map_err(|e| e.to_string())?;
            Ok(out)
        }
        AudienceSource::Generate { devices, seed } => {
            let out = work.join("audience");
            if out.join(store::MANIFEST).is_file() {
                return Ok(out);
            }
            let spec = GenerateSpec { devices: *devices, seed: *seed, ..GenerateSpec::default() };
            let shards = devices.div_ceil(10_000).clamp(1, 32) as u32;
            generate::compile_generated(&spec, &out, shards, true, &|_| {}).map_err(|e| e.to_string())?;
            Ok(out)
        }
    }
}

impl EmbeddedWorkers {
    async fn audience(&self) -> Result<Arc<Audience>, String> {
        if let Some(a) = self.audience.lock().expect("audience lock").clone() {
            return Ok(a);
        }
        let (source, work) = (self.source.clone(), self.work_dir.clone());
        let audience = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
            let dir = prepare(&source, &work)?;
            Audience::load(&dir).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        let audience = Arc::new(audience);
        *self.audience.lock().expect("audience lock") = Some(audience.clone());
        Ok(audience)
    }

    async fn setup(&self, audience: &Audience, topic: &str) -> Result<Arc<Setup>, String> {
        if let Some(s) = self.setup.lock().expect("setup lock").clone() {
            return Ok(s);
        }
        let s = Arc::new(Setup::start(&self.provider, audience, topic).await.map_err(|e| e.to_string())?);
        *self.setup.lock().expect("setup lock") = Some(s.clone());
        Ok(s)
    }
}

impl Workers for EmbeddedWorkers {
    fn warm(&self, campaign: Arc<Campaign>, tasks: u32) -> BoxFuture<'_, Result<WarmReport, String>> {
        Box::pin(async move {
            if tasks == 0 {
                return Err("no ECS task is running: scale the service first".into());
            }
            let audience = self.audience().await?;
            let setup = self.setup(&audience, &campaign.apns.topic).await?;
            let fire_id = format!("{}{}", campaign.id, self.fire_suffix);
            let hash = campaign.hash().to_owned();
            let campaign = Arc::new(Campaign::clone(&campaign).with_id(fire_id));
            let warm = Warm::new(audience.clone(), campaign).map_err(|e| e.to_string())?;
            let devices = warm.targeted();
            let checksum = warm.checksum().to_owned();
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let config = EngineConfig {
                workers: (tasks as usize).clamp(1, cores),
                reports_dir: Some(self.work_dir.join("reports")),
                ..EngineConfig::default()
            };
            let ledger = Arc::new(SqliteLedger::open(&self.ledger).map_err(|e| e.to_string())?);
            let mut slot = self.engine.lock().await;
            if let Some(old) = slot.take() {
                old.shutdown();
            }
            let engine =
                Engine::start(warm, setup.provider.clone(), ledger, self.live.clone(), config.clone()).await.map_err(|e| e.to_string())?;
            *slot = Some(engine);
            let shards = audience.shards().len() as u32;
            let workers = (0..config.workers)
                .map(|i| WorkerWarm { worker: format!("notifier-{i}"), shards, shards_total: shards, campaign_hash: hash.clone() })
                .collect();
            Ok(WarmReport { campaign_hash: hash, checksum, devices, workers })
        })
    }

    fn test_send<'a>(&'a self, campaign: &'a Campaign, operator: &'a str) -> BoxFuture<'a, Result<TestSendReport, String>> {
        Box::pin(async move {
            let audience = self.audience().await?;
            let setup = self.setup(&audience, &campaign.apns.topic).await?;
            crate::testsend::send(campaign, &setup.provider, operator).await.map_err(|e| e.to_string())
        })
    }

    fn fire(&self, operator: &str) -> Result<FireOutcome, String> {
        let slot = self.engine.try_lock().map_err(|_| "the workers are warming; fire when they are warm".to_owned())?;
        let engine = slot.as_ref().ok_or("the workers are not warm")?;
        if let Some(s) = self.setup.lock().expect("setup lock").as_ref() {
            s.mark_fire();
        }
        let outcome = engine.fire(operator).map_err(|e| e.to_string())?;
        if let FireOutcome::Started(h) = &outcome {
            *self.handle.lock().expect("handle lock") = Some(h.clone());
        }
        Ok(outcome)
    }

    fn handle(&self) -> Option<FireHandle> {
        self.handle.lock().expect("handle lock").clone()
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

/// Polls often enough for progress bars, rarely enough to cost nothing.
pub const POLL: Duration = Duration::from_millis(200);
