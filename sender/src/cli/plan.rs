//! `plan`: before the fire, whether the campaign's target can be met within
//! the providers' quotas and with the fleet the runbook scales to, when
//! devices will have it, and what the opens do to the app's backends.
//! Exit 0 when every gate passes, 2 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use kickoff_sender::aws::planning::plan_facts;
use kickoff_sender::aws::{Aws, AwsConfig};
use kickoff_sender::plan::{Gate, Plan, group};
use kickoff_sender::provider::ProviderChoice;
use kickoff_sender::runbook::Runbook;
use kickoff_sender::runbook::planning::{PlanOptions, plan_runbook};

/// Exit code when a gate of the plan fails.
const EXIT_GATE_FAILED: u8 = 2;

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The runbook file.
    runbook: PathBuf,
    /// AWS mode: the AWS configuration (TOML). The plan then reads the ECS
    /// service, the auto-scaling group and the batch queue, and checks the
    /// fire's messages against SQS's limits and the group's size.
    #[arg(long, value_name = "FILE")]
    aws: Option<PathBuf>,
    /// Config file whose `[fcm] quota_per_minute` is the FCM quota
    /// (default: kickoff.toml in Kickoff's data directory, if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// FCM messages per minute for the project [default: the config's, else 600000].
    #[arg(long)]
    fcm_quota_per_minute: Option<u64>,
    /// The providers' round trip, ms: LOW-HIGH (uniform) or one value.
    #[arg(long, default_value = "20-60", value_parser = parse_rtt)]
    rtt_ms: (f64, f64),
    /// One worker's sends per second, instead of measuring it.
    #[arg(long)]
    per_worker_rate: Option<f64>,
    /// Devices the measurement sends.
    #[arg(long, default_value_t = kickoff_sender::runbook::planning::CALIBRATION_DEVICES)]
    calibration_devices: u64,
    /// Where the runbook's audience is prepared [default: a temporary directory].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// One JSON object on stdout: gates, expected percentiles, platforms, backends.
    #[arg(long)]
    json: bool,
    /// Writes the plan's charts here (created if needed), as SVG and PNG:
    /// plan-delivery (expected share delivered per platform) and plan-load
    /// (forecast backend load against capacity).
    #[arg(long, value_name = "DIR")]
    charts: Option<PathBuf>,
}

fn parse_rtt(s: &str) -> Result<(f64, f64), String> {
    let num = |t: &str| t.trim().parse::<f64>().map_err(|_| format!("{t:?} is not a number of ms"));
    match s.split_once('-') {
        Some((lo, hi)) => Ok((num(lo)?, num(hi)?)),
        None => num(s).map(|v| (v, v)),
    }
}

pub(crate) fn plan_cmd(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let runbook = Runbook::load(&args.runbook)?;
    let config = super::args::config_file(args.config.as_deref())?;
    let tmp = tempfile::tempdir().context("creating a work directory")?;
    let mut opts = PlanOptions::new(args.work_dir.clone().unwrap_or_else(|| tmp.path().to_owned()));
    opts.fcm_quota_per_minute = args.fcm_quota_per_minute;
    if let Some(q) = config.fcm.quota_per_minute {
        opts.default_fcm_quota_per_minute = q;
    }
    // The providers the config names, else the embedded default.
    let provider = if config.is_empty() { ProviderChoice::gateway() } else { ProviderChoice::Http(config) };
    opts.apns_environment = Some(provider.facts().apns_environment);
    opts.rtt_ms = args.rtt_ms;
    opts.per_worker_rate = args.per_worker_rate;
    opts.calibration_devices = args.calibration_devices.max(1);
    if opts.per_worker_rate.or(runbook.plan_step().and_then(|(_, p)| p.per_worker_rate)).is_none() && !args.json {
        eprintln!("measuring one worker's send rate ({} devices through the loopback gateway)...", group(opts.calibration_devices));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let aws = match &args.aws {
        Some(file) => Some(rt.block_on(async {
            let aws = Aws::connect(AwsConfig::load(file)?).await?;
            opts.aws = Some(plan_facts(&aws).await.with_context(|| format!("reading the deployment of {}", file.display()))?);
            anyhow::Ok(aws)
        })?),
        None => None,
    };
    // An [audience.dynamodb] is read as an event would read it.
    let mut runbook = runbook;
    rt.block_on(kickoff_sender::aws::audience::resolve(&mut runbook, &opts.work_dir, aws.as_ref()))
        .context("the audience from DynamoDB")?;
    let plan = rt.block_on(plan_runbook(&runbook, &opts))?;
    if let Some(dir) = &args.charts {
        let written = write_charts(&plan, dir)?;
        if !args.json {
            eprintln!("charts: {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&plan.summary())?);
    } else {
        print(&runbook, &plan, if args.per_worker_rate.is_some() { "given" } else { "measured" });
    }
    Ok(if plan.ok() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_GATE_FAILED) })
}

/// The chart size, pixels.
const CHART_SIZE: (u32, u32) = (960, 400);

fn write_charts(plan: &Plan, dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for (stem, chart) in kickoff_sender::recorder::report::plan_charts(plan) {
        let svg = dir.join(format!("{stem}.svg"));
        std::fs::write(&svg, chart.svg(CHART_SIZE.0, CHART_SIZE.1)?).with_context(|| format!("writing {}", svg.display()))?;
        let png = dir.join(format!("{stem}.png"));
        chart.png(&png, CHART_SIZE.0, CHART_SIZE.1)?;
        written.extend([svg, png]);
    }
    Ok(written)
}

fn print(runbook: &Runbook, plan: &Plan, measured: &str) {
    let i = &plan.input;
    println!("plan for {} ({})", runbook.name, runbook.path.display());
    println!(
        "  {} workers at {:.0} sends/s each ({}), {} in flight per provider each, round trip {:.0}-{:.0} ms",
        i.workers, i.per_worker_rate, measured, i.window_per_provider, i.rtt_ms.0, i.rtt_ms.1
    );
    for p in &plan.platforms {
        println!(
            "  {:<8} {:>12} devices at {:>10.0}/s: {:>7.1} s ({}-bound)",
            p.platform,
            group(p.devices),
            p.rate_per_s,
            p.seconds,
            p.bound
        );
    }
    for m in &i.markets {
        println!("    market {:<6} {:>12} iOS {:>12} Android", m.market, group(m.devices[0]), group(m.devices[1]));
    }
    if let Some(env) = &i.apns_environment {
        println!("  APNs environment: {env}");
    }
    if let Some(aws) = &i.aws {
        let f = &aws.facts;
        println!(
            "  AWS: service {} ({} of {} running), ASG {} ({} desired, max {}), SQS round trip {:.0} ms",
            f.service, f.service_running, f.service_desired, f.asg, f.asg_desired, f.asg_max, f.sqs_rtt_ms
        );
        println!(
            "       {} batch messages over {} markets, {} in the largest; {} already queued",
            group(aws.batch_messages),
            aws.markets,
            group(aws.largest_market_messages),
            group(f.backlog)
        );
    }
    println!("  expected delivery: 50% by {:.1} s, 95% by {:.1} s, 99% by {:.1} s", plan.p50_s, plan.p95_s, plan.p99_s);
    for b in &plan.backends {
        println!("  backend {}: peak {:.0} req/s at {:.0} s (capacity {:.0})", b.name, b.peak_rps, b.peak_at_s, b.capacity_rps);
    }
    for Gate { id, ok, detail, accepted } in &plan.gates {
        match accepted {
            Some(why) if !ok => println!("  ACCEPTED {id}: {detail} (accepted by the runbook: {why})"),
            _ => println!("  {} {id}: {detail}", if *ok { "ok  " } else { "FAIL" }),
        }
    }
}
