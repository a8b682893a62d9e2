//! A runbook's plan: its audience counted through its campaign's markets,
//! one worker's send rate measured, the fleet it scales to, the providers'
//! quotas and its backends' return traffic, through [`crate::plan::plan`].
//! `kickoff-sender plan` calls [`plan_runbook`].

use std::path::PathBuf;
use std::sync::Arc;

use super::file::{Params, Runbook, StepKind};
use crate::audience::{AudienceError, Platform};
use crate::campaign::{Campaign, CampaignError};
use crate::drill::{DrillError, DrillOptions, ProviderChoice};
use crate::fanout::{EngineConfig, Warm, WarmError};
use crate::plan::aws::{AwsFacts, AwsInput};
use crate::plan::{DEFAULT_FCM_QUOTA_PER_MINUTE, DEFAULT_RTT_MS, MarketDevices, Plan, PlanInput};

/// Devices the calibration sends by default.
pub const CALIBRATION_DEVICES: u64 = 20_000;

/// What the plan assumes where the runbook does not say.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The plan step whose params apply (`fcm_quota_per_minute`,
    /// `per_worker_rate`, `accept`); by default the runbook's first.
    pub step: Option<String>,
    /// FCM messages per minute for the project, given explicitly: over the
    /// step's figure.
    pub fcm_quota_per_minute: Option<u64>,
    /// FCM messages per minute when neither is given (`kickoff.toml`, or
    /// FCM's default).
    pub default_fcm_quota_per_minute: u64,
    /// The providers' round trip, ms (uniform between the two).
    pub rtt_ms: (f64, f64),
    /// One worker's sends per second, given explicitly: over the step's
    /// figure; measured when neither is given.
    pub per_worker_rate: Option<f64>,
    /// Devices the measurement sends.
    pub calibration_devices: u64,
    /// Where the runbook's audience is prepared (a generated one is made
    /// once per directory).
    pub work_dir: PathBuf,
    /// Where APNs sends go (`production`, `sandbox`, ...), stated on the
    /// plan.
    pub apns_environment: Option<String>,
    /// AWS mode: what was read from the queues and the fleet's groups; the
    /// plan then counts the fire's messages and checks SQS's limits and
    /// the group's size.
    pub aws: Option<AwsFacts>,
}

impl PlanOptions {
    /// The defaults, preparing the audience in `work_dir`.
    pub fn new(work_dir: PathBuf) -> Self {
        Self {
            step: None,
            fcm_quota_per_minute: None,
            default_fcm_quota_per_minute: DEFAULT_FCM_QUOTA_PER_MINUTE,
            rtt_ms: DEFAULT_RTT_MS,
            per_worker_rate: None,
            calibration_devices: CALIBRATION_DEVICES,
            work_dir,
            apns_environment: None,
            aws: None,
        }
    }
}

/// Why there is no plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The runbook's campaign could not be read.
    #[error(transparent)]
    Campaign(#[from] CampaignError),
    /// The runbook's audience could not be prepared or loaded.
    #[error("audience: {0}")]
    Audience(#[from] AudienceError),
    /// The campaign does not fit the audience.
    #[error(transparent)]
    Warm(#[from] WarmError),
    /// Measuring a worker's send rate failed.
    #[error("measuring the send rate: {0}")]
    Calibration(#[from] DrillError),
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// How fast one worker sends, measured: a short drill through the real
/// provider path (HTTP/2, TLS) to the loopback gateway in this process.
/// The gateway shares the machine, so the figure is a floor.
pub async fn calibrate(devices: u64) -> Result<f64, PlanError> {
    let opts = DrillOptions { devices, provider: ProviderChoice::gateway(), ..DrillOptions::default() };
    let summary = crate::drill::run(&opts, &|_| {}).await?;
    if summary.delivered == 0 || !summary.rate_per_s.is_finite() {
        return Err(PlanError::Invalid("the calibration delivered nothing".into()));
    }
    Ok(summary.rate_per_s)
}

/// The plan of `runbook`: the devices its campaign targets, the workers its
/// scale-ecs steps ask for, each worker's rate (measured unless given).
pub async fn plan_runbook(runbook: &Runbook, opts: &PlanOptions) -> Result<Plan, PlanError> {
    let step = match &opts.step {
        Some(id) => Some(runbook.plan_step_named(id).ok_or_else(|| PlanError::Invalid(format!("no plan step `{id}` in the runbook")))?),
        None => runbook.plan_step().map(|(_, p)| p),
    };
    let fcm_quota_per_minute =
        opts.fcm_quota_per_minute.or(step.and_then(|p| p.fcm_quota_per_minute)).unwrap_or(opts.default_fcm_quota_per_minute);
    let given_rate = opts.per_worker_rate.or(step.and_then(|p| p.per_worker_rate));
    if fcm_quota_per_minute == 0 {
        return Err(PlanError::Invalid("the FCM quota must be at least 1 message per minute".into()));
    }
    let (lo, hi) = opts.rtt_ms;
    if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi && hi <= 60_000.0) {
        return Err(PlanError::Invalid(format!("round trip {lo}-{hi} ms: give two times in ms, 0 < low ≤ high ≤ 60000")));
    }
    if let Some(r) = given_rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        return Err(PlanError::Invalid(format!("a worker's send rate must be positive, not {r}")));
    }
    let campaign = Arc::new(Campaign::load(&runbook.campaign)?);
    let source = runbook.audience.clone().unwrap_or_default();
    let work = opts.work_dir.clone();
    let audience = tokio::task::spawn_blocking(move || source.load(&work))
        .await
        .map_err(|e| PlanError::Invalid(format!("loading the audience: {e}")))??
        .1;
    let warm = Warm::new(Arc::new(audience), campaign.clone())?;
    let devices = Platform::ALL.map(|p| warm.targeted_on(p));
    let markets = market_devices(&warm);
    let aws = opts.aws.clone().map(|facts| aws_input(runbook, &warm, facts));
    drop(warm);
    let per_worker_rate = match given_rate {
        Some(r) => r,
        None => calibrate(opts.calibration_devices).await?,
    };
    let engine = EngineConfig::default();
    let input = PlanInput {
        devices,
        markets,
        target_s: campaign.target.as_ref().map(|t| t.seconds),
        fcm_quota_per_minute,
        workers: workers(runbook),
        per_worker_rate,
        window_per_provider: u32::try_from(engine.in_flight_per_worker * engine.workers).unwrap_or(u32::MAX),
        rtt_ms: opts.rtt_ms,
        tasks_per_instance: runbook.fleet.tasks_per_instance.max(1),
        max_rate: campaign.max_rate.map(|r| r as f64),
        backends: runbook.return_traffic.clone(),
        apns_environment: opts.apns_environment.clone(),
        aws,
    };
    let mut plan = crate::plan::plan(input);
    if let Some(p) = step {
        plan.accept(&p.accept);
    }
    Ok(plan)
}

/// The devices per campaign market and platform, counted over the same
/// dispatch plan the fire sends.
fn market_devices(warm: &Warm) -> Vec<MarketDevices> {
    let mut per = vec![[0u64; 2]; warm.campaign.markets.len()];
    for (_, b) in crate::fanout::dispatch::plan(warm, &warm.campaign.id, None) {
        if let Some(m) = warm.routes[b.shard as usize].campaign_market[usize::from(b.market)] {
            per[m][b.platform as usize] += u64::from(b.end.saturating_sub(b.start));
        }
    }
    warm.campaign.markets.iter().zip(per).map(|(m, devices)| MarketDevices { market: m.code.clone(), devices }).collect()
}

/// The fire's messages as the dispatchers will queue them (the same
/// dispatch plan), per market, with what was read from AWS.
fn aws_input(runbook: &Runbook, warm: &Warm, facts: AwsFacts) -> AwsInput {
    let markets = warm.campaign.markets.len();
    let mut per_market = vec![0u64; markets];
    for (_, b) in crate::fanout::dispatch::plan(warm, &warm.campaign.id, None) {
        if let Some(m) = warm.routes[b.shard as usize].campaign_market[usize::from(b.market)] {
            per_market[m] += 1;
        }
    }
    AwsInput {
        facts,
        batch_messages: per_market.iter().sum(),
        largest_market_messages: per_market.iter().copied().max().unwrap_or(0),
        markets: u32::try_from(markets).unwrap_or(u32::MAX),
        asg_planned: largest_scale(runbook, StepKind::ScaleAsg),
    }
}

/// The largest count the runbook's steps of `kind` scale to.
fn largest_scale(runbook: &Runbook, kind: StepKind) -> Option<u32> {
    runbook
        .steps
        .iter()
        .filter(|s| s.kind == kind)
        .filter_map(|s| match s.params {
            Params::Scale { desired, .. } => Some(desired),
            _ => None,
        })
        .max()
}

/// The worker tasks the runbook scales the service to (its largest
/// scale-ecs), or the fleet's baseline.
fn workers(runbook: &Runbook) -> u32 {
    largest_scale(runbook, StepKind::ScaleEcs).unwrap_or(runbook.fleet.baseline_tasks).max(1)
}
