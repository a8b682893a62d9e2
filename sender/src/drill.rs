//! The drill: generate (or load) an audience, warm the workers, fire, and
//! measure what arrived. The CLI (`kickoff-sender drill`) and the desktop app
//! run this same function.
//!
//! Deliveries are counted per device at the receiving end (the provider's
//! [`DeliveryTally`]), so `duplicates` and `missing` are measured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::audience::generate::{self, GenerateSpec};
use crate::audience::{Audience, AudienceError, CompileOptions, Platform, store};
use crate::campaign::{self, Campaign, CampaignError};
use crate::fanout::{
    Engine, EngineConfig, EngineError, FireLedger, FireOutcome, FireRecord, LedgerError, Progress, SqliteLedger, Warm, WarmError,
};
use crate::metrics::{MemoryMetrics, MetricsSink};
pub use crate::provider::ProviderChoice;
use crate::provider::{Setup, SetupError};

/// What to drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Devices to generate when no audience is given.
    pub devices: u64,
    /// A compiled audience directory, or an audience file to compile first.
    pub audience: Option<PathBuf>,
    /// A campaign file; the built-in demo campaign otherwise.
    pub campaign: Option<PathBuf>,
    /// The provider.
    pub provider: ProviderChoice,
    /// Notifier settings.
    pub engine: EngineConfig,
    /// Share of iOS devices, markets and seed of a generated audience.
    pub generate: GenerateSpec,
    /// Shards of a generated or compiled audience (default: 32, fewer for
    /// small audiences).
    pub shards: Option<u32>,
    /// Send the silent (rehearsal) rendering of the campaign.
    pub silent: bool,
    /// Who fires.
    pub operator: String,
    /// Where to put the generated audience and the drill's ledger; a
    /// temporary directory, removed afterwards, when absent.
    pub work_dir: Option<PathBuf>,
}

impl Default for DrillOptions {
    fn default() -> Self {
        Self {
            devices: 100_000,
            audience: None,
            campaign: None,
            provider: ProviderChoice::gateway(),
            engine: EngineConfig::default(),
            generate: GenerateSpec::default(),
            shards: None,
            silent: false,
            operator: "drill".to_owned(),
            work_dir: None,
        }
    }
}

/// What the drill measured. Field names are part of the CLI's JSON output.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DrillSummary {
    /// Devices the campaign targeted.
    pub devices: u64,
    /// Devices that received the notification, counted at the receiver.
    pub delivered: u64,
    /// Notifications beyond the first per device, counted at the receiver.
    pub duplicates: u64,
    /// Devices neither delivered nor reported failed.
    pub missing: u64,
    /// Devices whose send failed (the provider refused them).
    pub failed: u64,
    /// Devices left without a final answer ([`FireReport::unanswered`]).
    pub unanswered: u64,
    /// Fire to the last acknowledgment, seconds.
    pub elapsed_s: f64,
    /// Delivered per second over `elapsed_s`.
    pub rate_per_s: f64,
    /// Delivery time (fire to acknowledgment) percentiles, seconds.
    pub p50_s: f64,
    /// 95th percentile.
    pub p95_s: f64,
    /// 99th percentile.
    pub p99_s: f64,
    /// Slowest delivery.
    pub max_s: f64,
    /// Peak resident memory of the process, bytes.
    pub peak_rss_bytes: u64,
    /// Targeted iOS devices (sent through APNs).
    pub ios: u64,
    /// Targeted Android devices (sent through FCM).
    pub android: u64,
    /// Sends in flight allowed to APNs, over every worker (each provider
    /// has a window of its own; a provider's stream limits can lower it).
    pub apns_in_flight_limit: u64,
    /// Sends in flight allowed to FCM, over every worker.
    pub fcm_in_flight_limit: u64,
    /// Sends in flight allowed per provider (model provider only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight_limit: Option<u64>,
    /// Mean round trip of the model (model provider only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_rtt_s: Option<f64>,
    /// Little's-law bound: the longest over providers of that provider's
    /// devices x mean round trip / its in-flight limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub littles_law_s: Option<f64>,
    /// Failures by reason.
    pub failed_by_reason: BTreeMap<String, u64>,
    /// What the sender believes it delivered (must equal `delivered`).
    pub sender_delivered: u64,
    /// Fire to the last hand-off, seconds.
    pub handoff_s: f64,
    /// Generating or compiling the audience, seconds.
    pub prepare_s: f64,
    /// Loading the snapshot into memory, seconds.
    pub load_s: f64,
    /// Snapshot bytes held in memory.
    pub audience_bytes: u64,
    /// Devices in markets the campaign does not send to.
    pub excluded: u64,
    /// The provider.
    pub provider: String,
    /// Notifier workers.
    pub workers: usize,
    /// The (drill) campaign id.
    pub campaign_id: String,
    /// What the workers held: audience checksum and campaign hash.
    pub warm_checksum: String,
    /// Where `delivered`, `duplicates` and `missing` were counted:
    /// `receiver` (per device or token, at the provider end) or `sender`
    /// (what the providers acknowledged; a remote endpoint cannot be asked).
    pub measured_at: &'static str,
    /// Retries sent.
    pub retries: u64,
    /// Tokens reported dead.
    pub pruned: u64,
    /// The prune report, if any token was pruned.
    pub prune_report: Option<String>,
    /// Problems an operator must act on.
    pub alerts: Vec<String>,
}

/// A step of a drill, for progress display.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum DrillEvent {
    /// Generating the synthetic audience.
    Generating {
        /// Devices generated.
        done: u64,
        /// Devices to generate.
        total: u64,
    },
    /// Compiling an audience file.
    Compiling {
        /// The file.
        path: String,
    },
    /// Loading the snapshot.
    Loading,
    /// Workers warm; about to fire.
    Warm {
        /// Devices targeted.
        devices: u64,
        /// Workers.
        workers: usize,
    },
    /// Sending.
    Sending(Progress),
}

/// Why a drill could not run.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The audience could not be prepared or loaded.
    #[error(transparent)]
    Audience(#[from] AudienceError),
    /// The campaign is invalid.
    #[error(transparent)]
    Campaign(#[from] CampaignError),
    /// The campaign cannot serve the audience.
    #[error(transparent)]
    Warm(#[from] WarmError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The drill's ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The drill's work directory could not be created.
    #[error("work directory {path}: {source}", path = path.display())]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The providers could not start.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The drill's own async runtime could not start.
    #[error("could not start the drill's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The drill's campaign id was fired before (only with a reused work dir).
    #[error("{0}")]
    AlreadyFired(Box<FireRecord>),
    /// A parameter is out of range.
    #[error("{0}")]
    Invalid(String),
}

fn default_shards(devices: u64) -> u32 {
    devices.div_ceil(1_000).clamp(1, u64::from(crate::audience::compile::DEFAULT_SHARDS)) as u32
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Prepares the audience: generated, compiled from a file, or an existing
/// audience directory. Returns the directory.
fn prepare_audience(opts: &DrillOptions, work: &Path, on_event: &(dyn Fn(&DrillEvent) + Send + Sync)) -> Result<PathBuf, DrillError> {
    match &opts.audience {
        Some(dir) if dir.join(store::MANIFEST).is_file() => Ok(dir.clone()),
        Some(file) => {
            on_event(&DrillEvent::Compiling { path: file.display().to_string() });
            let out = work.join("audience");
            let opts = CompileOptions {
                shards: opts.shards.unwrap_or(crate::audience::compile::DEFAULT_SHARDS),
                force: true,
                ..CompileOptions::default()
            };
            crate::audience::compile(std::slice::from_ref(file), &out, &opts, &mut |_| {})?;
            Ok(out)
        }
        None => {
            let spec = GenerateSpec { devices: opts.devices, ..opts.generate };
            let out = work.join("audience");
            let total = spec.devices;
            generate::compile_generated(&spec, &out, opts.shards.unwrap_or_else(|| default_shards(spec.devices)), true, &|done| {
                on_event(&DrillEvent::Generating { done, total });
            })?;
            Ok(out)
        }
    }
}

/// A fire started in this process: the provider, the warm engine and the
/// outcome of the press.
#[derive(Debug)]
pub struct LocalFire {
    /// The started provider (the in-process gateway stops when it drops).
    pub setup: Setup,
    /// The engine; shut it down when the fire is over.
    pub engine: Engine,
    /// Started, or already fired (by anyone, ever, in `ledger`).
    pub outcome: FireOutcome,
}

/// What a press does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    /// Fire the campaign (once ever, through the ledger).
    Fire,
    /// Resume its interrupted fire: send the devices without a final answer.
    Resume,
}

/// Starts `provider`, warms an engine on `warm` and presses fire (or
/// resume) as `operator`: the one sequence the drill and `kickoff-sender
/// fire` share. Arrival times at the receiving end count from the press.
pub async fn fire_local(
    warm: Warm,
    provider: &ProviderChoice,
    ledger: Arc<dyn FireLedger>,
    metrics: Arc<dyn MetricsSink>,
    config: EngineConfig,
    operator: &str,
    press: Press,
) -> Result<LocalFire, DrillError> {
    let audience = warm.audience().clone();
    let topic = warm.campaign().apns.topic.clone();
    let setup = Setup::start(provider, &audience, &topic).await?;
    let engine = Engine::start(warm, setup.provider.clone(), ledger, metrics, config).await?;
    setup.mark_fire();
    let outcome = match press {
        Press::Fire => engine.fire(operator)?,
        Press::Resume => engine.resume(operator)?,
    };
    Ok(LocalFire { setup, engine, outcome })
}

/// Runs a drill on the caller's runtime. Generating or compiling the
/// audience runs inline (CPU-bound, seconds for millions of devices); from a
/// UI thread, prefer [`run_blocking`] on a blocking thread.
pub async fn run(opts: &DrillOptions, on_event: &(dyn Fn(&DrillEvent) + Send + Sync)) -> Result<DrillSummary, DrillError> {
    if opts.audience.is_none() && opts.devices == 0 {
        return Err(DrillError::Invalid("a drill needs at least 1 device".into()));
    }
    if let ProviderChoice::Model(m) = &opts.provider {
        m.check().map_err(|e| DrillError::Invalid(e.to_string()))?;
    }
    opts.generate.check()?;
    let _tmp;
    let work = match &opts.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| DrillError::WorkDir { path: dir.clone(), source })?;
            dir.clone()
        }
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("kickoff-drill-")
                .tempdir()
                .map_err(|source| DrillError::WorkDir { path: std::env::temp_dir(), source })?;
            let path = tmp.path().to_owned();
            _tmp = tmp;
            path
        }
    };

    let started = Instant::now();
    let dir = prepare_audience(opts, &work, on_event)?;
    let prepare = started.elapsed();

    on_event(&DrillEvent::Loading);
    let loading = Instant::now();
    let audience = Arc::new(Audience::load(&dir)?);
    let load = loading.elapsed();

    let mut campaign = match &opts.campaign {
        Some(path) => Campaign::load(path)?,
        None => campaign::demo(),
    };
    if opts.silent {
        campaign = campaign.into_silent();
    }
    // A drill never shares a campaign id with a real fire, even on a ledger
    // it should not have been pointed at.
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let drill_id = format!("{}-drill-{stamp}", campaign.id);
    let campaign = Arc::new(campaign.with_id(drill_id));
    let warm = Warm::new(audience.clone(), campaign.clone())?;
    let devices = warm.targeted();
    let (ios, android) = (warm.targeted_on(Platform::Ios), warm.targeted_on(Platform::Android));
    let excluded = warm.excluded().values().sum();
    let warm_checksum = warm.checksum().to_owned();

    let metrics = Arc::new(MemoryMetrics::new());
    let ledger = Arc::new(SqliteLedger::open(&work.join("drill-ledger.sqlite"))?);
    let workers = opts.engine.workers.max(1);
    let mut config = opts.engine.clone();
    config.reports_dir.get_or_insert_with(|| work.join("reports"));
    let LocalFire { setup, engine, outcome } =
        fire_local(warm, &opts.provider, ledger, metrics.clone(), config, &opts.operator, Press::Fire).await?;
    on_event(&DrillEvent::Warm { devices, workers });
    let handle = match outcome {
        FireOutcome::Started(h) => h,
        FireOutcome::AlreadyFired(record) => return Err(DrillError::AlreadyFired(Box::new(record))),
        FireOutcome::NeverFired | FireOutcome::Mismatch { .. } => {
            return Err(DrillError::Invalid("a drill fires; it has nothing to resume".into()));
        }
    };
    let wait = handle.wait();
    tokio::pin!(wait);
    let report = loop {
        tokio::select! {
            report = &mut wait => break report,
            () = tokio::time::sleep(Duration::from_millis(100)) => on_event(&DrillEvent::Sending(handle.progress())),
        }
    };
    on_event(&DrillEvent::Sending(handle.progress()));
    engine.shutdown();
    let received = setup.received(&audience, report.delivered);
    let (delivered, duplicates, measured_at) = (received.delivered, received.duplicates, received.measured_at);
    drop(setup);
    let stats = metrics.snapshot(&campaign.id);
    let elapsed = report.elapsed_s;
    let model = match &opts.provider {
        ProviderChoice::Model(cfg) => Some(cfg.mean_rtt()),
        _ => None,
    };
    let per_provider = (workers * opts.engine.in_flight_per_worker.max(1)) as u64;
    let in_flight_limit = model.map(|_| per_provider);
    Ok(DrillSummary {
        devices,
        delivered,
        duplicates,
        missing: devices.saturating_sub(delivered + report.failed),
        failed: report.failed,
        unanswered: report.unanswered(),
        elapsed_s: elapsed,
        rate_per_s: if elapsed > 0.0 { delivered as f64 / elapsed } else { 0.0 },
        p50_s: secs(stats.latency.quantile(0.50)),
        p95_s: secs(stats.latency.quantile(0.95)),
        p99_s: secs(stats.latency.quantile(0.99)),
        max_s: secs(stats.latency.max()),
        peak_rss_bytes: crate::sys::peak_rss_bytes().unwrap_or(0),
        ios,
        android,
        apns_in_flight_limit: per_provider,
        fcm_in_flight_limit: per_provider,
        in_flight_limit,
        mean_rtt_s: model.map(secs),
        littles_law_s: model.zip(in_flight_limit).map(|(rtt, limit)| ios.max(android) as f64 * rtt.as_secs_f64() / limit as f64),
        failed_by_reason: report.failed_by_reason.clone(),
        sender_delivered: report.delivered,
        handoff_s: report.last_handoff_s,
        prepare_s: secs(prepare),
        load_s: secs(load),
        audience_bytes: audience.resident_bytes() as u64,
        excluded,
        provider: opts.provider.name().to_owned(),
        workers,
        campaign_id: campaign.id.clone(),
        warm_checksum,
        measured_at,
        retries: report.retries,
        pruned: report.pruned,
        prune_report: report.prune_report.clone(),
        alerts: report.alerts.clone(),
    })
}

/// Runs a drill on a runtime of its own, blocking the calling thread.
pub fn run_blocking(opts: &DrillOptions, on_event: &(dyn Fn(&DrillEvent) + Send + Sync)) -> Result<DrillSummary, DrillError> {
    // IO for the providers' token requests and the refreshers.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(DrillError::Runtime)?;
    rt.block_on(run(opts, on_event))
}
