//! `drill`, `fire` and `test-send`: sending from the command line, through
//! the same library calls the desktop app makes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use kickoff_sender::audience::Audience;
use kickoff_sender::campaign::Campaign;
use kickoff_sender::drill::{self, DrillEvent, DrillOptions, DrillSummary, ProviderChoice};
use kickoff_sender::fanout::{EngineConfig, FireOutcome, FireRecord, FireReport, FireScope, FireStatus, SqliteLedger, Standing, Warm};
use kickoff_sender::metrics::MemoryMetrics;
use kickoff_sender::provider::Setup;
use kickoff_sender::testsend::{self, TestSendStatus, TestSendStore};

use super::args::{GenerateArgs, ProviderArgs, ProviderKind, PushFlags};
use super::{EXIT_ABORTED, EXIT_ALREADY_FIRED, EXIT_INCOMPLETE, bar, bytes, default_operator, group};

#[derive(Debug, Args)]
pub(crate) struct DrillArgs {
    /// The generated audience (ignored with --audience).
    #[command(flatten)]
    generate: GenerateArgs,
    /// A compiled audience directory, or an audience file to compile.
    #[arg(long)]
    audience: Option<PathBuf>,
    /// A campaign file (default: the built-in demo campaign).
    #[arg(long)]
    campaign: Option<PathBuf>,
    #[command(flatten)]
    provider: ProviderArgs,
    /// Shards of a generated or compiled audience.
    #[arg(long)]
    shards: Option<u32>,
    /// Send the silent (rehearsal) rendering.
    #[arg(long)]
    silent: bool,
    /// Keep the generated audience and the drill ledger here.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct FireArgs {
    /// A compiled audience directory.
    #[arg(long)]
    audience: PathBuf,
    /// The campaign file.
    #[arg(long)]
    campaign: PathBuf,
    /// Who is firing (recorded in the ledger).
    #[arg(long, default_value_t = default_operator())]
    operator: String,
    /// The fire ledger (default: kickoff.sqlite in Kickoff's data directory).
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Where the prune and undelivered reports go (default: reports/ in
    /// Kickoff's data directory).
    #[arg(long)]
    reports: Option<PathBuf>,
    #[command(flatten)]
    provider: ProviderArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Fire as this new event (a drill of a demo campaign again): the key is
    /// `<campaign id>@<EVENT>`. Without it the fire is the campaign's launch,
    /// once ever, the same key a runbook walk or the app uses.
    #[arg(long, value_name = "EVENT")]
    new_event: Option<String>,
    /// Resume this campaign's interrupted fire (its process died, or it
    /// stopped after a provider outage): send exactly the devices without a
    /// final answer. Give the same arguments as the fire.
    #[arg(long)]
    resume: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TestSendArgs {
    /// The campaign file.
    #[arg(long)]
    campaign: PathBuf,
    /// Record that the test notifications arrived (for the campaign's
    /// current content) instead of sending.
    #[arg(long, conflicts_with = "status")]
    confirm: bool,
    /// Show the test-send status of the campaign's current content.
    #[arg(long)]
    status: bool,
    /// Send the silent (rehearsal) rendering.
    #[arg(long)]
    silent: bool,
    /// Who is sending or confirming.
    #[arg(long, default_value_t = default_operator())]
    operator: String,
    /// The state database (default: kickoff.sqlite in Kickoff's data directory).
    #[arg(long)]
    state: Option<PathBuf>,
    /// gateway (default) or http; null and model cannot test-send.
    #[arg(long, value_enum, default_value = "gateway")]
    provider: ProviderKind,
    #[command(flatten)]
    push: PushFlags,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn drill_cmd(args: DrillArgs) -> anyhow::Result<ExitCode> {
    let opts = DrillOptions {
        devices: args.generate.devices,
        audience: args.audience,
        campaign: args.campaign,
        provider: args.provider.choice()?,
        engine: args.provider.engine()?,
        generate: args.generate.spec(),
        shards: args.shards,
        silent: args.silent,
        operator: default_operator(),
        work_dir: args.work_dir,
    };
    let progress = bar(0, "{msg:>10} {bar:40} {pos}/{len} ({per_sec})");
    let summary = drill::run_blocking(&opts, &|event| match event {
        DrillEvent::Generating { done, total } => {
            progress.set_message("generating");
            progress.set_length(*total);
            progress.set_position(*done);
        }
        DrillEvent::Compiling { path } => progress.set_message(format!("compiling {path}")),
        DrillEvent::Loading => progress.set_message("loading"),
        DrillEvent::Warm { devices, .. } => {
            progress.reset();
            progress.set_message("sending");
            progress.set_length(*devices);
        }
        DrillEvent::Sending(p) => progress.set_position(p.delivered + p.failed),
    });
    progress.finish_and_clear();
    let summary = summary?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_drill(&summary);
    }
    if summary.unanswered > 0 || summary.missing > 0 {
        eprintln!(
            "error: {} devices without a final answer, {} missing at the receiver",
            group(summary.unanswered),
            group(summary.missing)
        );
        return Ok(ExitCode::from(EXIT_INCOMPLETE));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_drill(s: &DrillSummary) {
    println!(
        "drill {}: {} devices ({} iOS, {} Android), provider {}, {} workers",
        s.campaign_id,
        group(s.devices),
        group(s.ios),
        group(s.android),
        s.provider,
        s.workers
    );
    println!(
        "  delivered   {}   duplicates {}   missing {}   failed {}",
        group(s.delivered),
        group(s.duplicates),
        group(s.missing),
        group(s.failed)
    );
    for (reason, n) in &s.failed_by_reason {
        println!("    {reason:<20} {}", group(*n));
    }
    println!("  elapsed     {:.3} s   rate {}/s   last hand-off {:.3} s", s.elapsed_s, group(s.rate_per_s as u64), s.handoff_s);
    println!("  delivery    p50 {:.3} s   p95 {:.3} s   p99 {:.3} s   max {:.3} s", s.p50_s, s.p95_s, s.p99_s, s.max_s);
    if let (Some(limit), Some(rtt), Some(bound)) = (s.in_flight_limit, s.mean_rtt_s, s.littles_law_s) {
        println!(
            "  model       in flight {} per provider   mean rtt {:.1} ms   Little's law {:.3} s ({:+.1}%)",
            group(limit),
            rtt * 1000.0,
            bound,
            (s.elapsed_s / bound - 1.0) * 100.0
        );
    }
    println!("  memory      peak RSS {}   audience in memory {}", bytes(s.peak_rss_bytes), bytes(s.audience_bytes));
    println!("  prepare     {:.2} s   load {:.3} s", s.prepare_s, s.load_s);
}

pub(crate) fn fire_cmd(args: FireArgs) -> anyhow::Result<ExitCode> {
    let audience = Arc::new(Audience::load(&args.audience)?);
    let campaign = Campaign::load(&args.campaign)?;
    // One key rule with walks and the app: a silent campaign rehearses (its
    // own key per run), an explicit new event is keyed by it, else the launch.
    let rehearsal = format!("cli-{}", kickoff_sender::clock::rfc3339_s(kickoff_sender::clock::now_ms()).replace(':', ""));
    let scope = FireScope::of(
        campaign.mode == kickoff_sender::campaign::Mode::Silent,
        args.new_event.is_some(),
        args.new_event.as_deref().unwrap_or(&rehearsal),
    );
    let key = scope.key(&campaign.id);
    let campaign_id = key.clone();
    let campaign = Arc::new(campaign.with_id(key));
    let warm = Warm::new(audience, campaign)?;
    let data = kickoff_sender::sys::data_dir();
    let ledger = Arc::new(SqliteLedger::open(&args.ledger.clone().unwrap_or_else(kickoff_sender::sys::state_db))?);
    let choice = args.provider.choice()?;
    let mut config = args.provider.engine()?;
    config.reports_dir = Some(args.reports.clone().unwrap_or_else(|| data.join("reports")));
    // IO is enabled for the providers and the Ctrl-C handler.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let press = if args.resume { drill::Press::Resume } else { drill::Press::Fire };
    let (outcome, received) = rt.block_on(fire_with(warm, &choice, ledger, config, &args.operator, press))?;
    match outcome {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(
                        &serde_json::json!({ "status": "fired", "report": &*report, "unanswered": report.unanswered(), "received": received })
                    )?
                );
            } else {
                println!(
                    "fired {} at {} by {}: delivered {}, failed {}, not sent {}, elapsed {:.3} s",
                    report.campaign_id,
                    report.fired_at,
                    report.operator,
                    group(report.delivered),
                    group(report.failed),
                    group(report.not_sent),
                    report.elapsed_s
                );
                if let Some(before) = report.resumed {
                    println!(
                        "  resumed: {} devices had a final answer before; these {} had none",
                        group(before.answered),
                        group(report.targeted)
                    );
                }
                if let Some((delivered, duplicates)) = received {
                    println!("  counted at the gateway: {} delivered, {} duplicates", group(delivered), group(duplicates));
                }
                for (reason, n) in &report.failed_by_reason {
                    println!("  failed {reason}: {}", group(*n));
                }
                if report.retries > 0 {
                    println!(
                        "  retries {} of a budget of {}; {} refused for lack of budget",
                        group(report.retries),
                        group(report.retry_budget),
                        group(report.budget_exhausted)
                    );
                }
                for (label, path) in [("pruned tokens", &report.prune_report), ("undelivered devices", &report.undelivered_report)] {
                    if let Some(path) = path {
                        println!("  {label}: {path}");
                    }
                }
                for alert in &report.alerts {
                    println!("  ALERT: {alert}");
                }
                if report.aborted {
                    println!(
                        "  aborted by {}; {} devices in {} ranges were not sent; {} in doubt",
                        report.aborted_by.as_deref().unwrap_or("?"),
                        group(report.not_sent),
                        report.unsent_ranges_total,
                        group(report.in_doubt)
                    );
                }
            }
            if report.aborted {
                return Ok(ExitCode::from(EXIT_ABORTED));
            }
            if let Some(why) = &report.interrupted {
                eprintln!("error: {why}");
                eprintln!("resume it with the same arguments and --resume:\n  {} --resume", resume_command().trim_end_matches(" --resume"));
                return Ok(ExitCode::from(EXIT_INCOMPLETE));
            }
            if !report.complete() {
                eprintln!(
                    "error: {} devices were left without a final answer; the undelivered report lists them",
                    group(report.unanswered())
                );
                return Ok(ExitCode::from(EXIT_INCOMPLETE));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(NotSent::NeverFired) => {
            if args.json {
                println!("{}", serde_json::to_string(&serde_json::json!({ "status": "never_fired" }))?);
            } else {
                println!("campaign {campaign_id} was never fired; nothing to resume (fire it without --resume)");
            }
            Ok(ExitCode::from(EXIT_ALREADY_FIRED))
        }
        Err(NotSent::Mismatch(record, now)) => {
            let fired = record.warm_checksum.clone().unwrap_or_default();
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(&serde_json::json!({ "status": "mismatch", "record": record, "fired_from": fired, "now": now }))?
                );
            } else {
                println!(
                    "campaign {} was fired from audience and campaign {fired}, but --audience and --campaign now hold {now}: \
                     a resume must send from the same files (the journal names devices by position); nothing was sent",
                    record.campaign_id
                );
            }
            Ok(ExitCode::from(EXIT_ALREADY_FIRED))
        }
        Err(NotSent::AlreadyFired(record, standing)) => {
            let interrupted = record.status == FireStatus::Interrupted;
            if args.json {
                let status = if interrupted { "interrupted" } else { "already_fired" };
                println!("{}", serde_json::to_string(&serde_json::json!({ "status": status, "record": record, "standing": standing }))?);
            } else if interrupted {
                let standing = standing.map_or_else(String::new, |s| {
                    format!(
                        ": {} of {} devices have a final answer, {} do not",
                        group(s.answered),
                        group(s.targeted),
                        group(s.unanswered())
                    )
                });
                println!(
                    "campaign {} was fired at {} by {} and INTERRUPTED (its process stopped before the end){standing}; nothing was sent now",
                    record.campaign_id,
                    humantime::format_rfc3339_millis(record.fired_at()),
                    record.operator
                );
                println!("resume it with the same arguments and --resume:");
                println!("  {} --resume", resume_command());
            } else if args.resume {
                let why = if record.status == FireStatus::Fired {
                    format!("it is still sending (process {} on {})", record.pid, record.host)
                } else {
                    "it is not interrupted".to_owned()
                };
                println!("{record}; {why}; nothing was sent");
            } else {
                println!("{record}; nothing was sent");
            }
            Ok(ExitCode::from(EXIT_ALREADY_FIRED))
        }
    }
}

/// This command line, as typed (for the resume hint).
fn resume_command() -> String {
    let quote = |a: String| if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+".contains(c)) { a } else { format!("{a:?}") };
    std::env::args().map(quote).collect::<Vec<_>>().join(" ")
}

/// Why a fire sent nothing.
enum NotSent {
    /// Fired before (the record, and for an interrupted fire how it stands).
    AlreadyFired(FireRecord, Option<Standing>),
    /// A resume of a campaign never fired.
    NeverFired,
    /// A resume from another audience or campaign than the fire's.
    Mismatch(FireRecord, String),
}

type FireResult = (Result<Arc<FireReport>, NotSent>, Option<(u64, u64)>);

async fn fire_with(
    warm: Warm,
    choice: &ProviderChoice,
    ledger: Arc<SqliteLedger>,
    config: EngineConfig,
    operator: &str,
    press: drill::Press,
) -> anyhow::Result<FireResult> {
    let audience = warm.audience().clone();
    let excluded = warm.excluded().clone();
    let drill::LocalFire { setup, engine, outcome } =
        drill::fire_local(warm, choice, ledger, Arc::new(MemoryMetrics::new()), config, operator, press).await?;
    let result = match outcome {
        FireOutcome::Started(handle) => {
            if !excluded.is_empty() {
                let list: Vec<String> = excluded.iter().map(|(m, n)| format!("{m} {}", group(*n))).collect();
                eprintln!("not targeted (markets not in the campaign): {}", list.join(", "));
            }
            let progress = bar(handle.progress().targeted, "sending {bar:40} {pos}/{len} ({per_sec}) Ctrl-C aborts");
            let wait = handle.wait();
            let interrupt = tokio::signal::ctrl_c();
            tokio::pin!(wait, interrupt);
            let mut aborted = false;
            // A provider's outage is told once when it starts and once when
            // it ends, not on every tick.
            let mut paused: Option<String> = None;
            let report = loop {
                tokio::select! {
                    report = &mut wait => break report,
                    Ok(()) = &mut interrupt, if !aborted => {
                        eprintln!("aborting: no more devices are handed off; waiting for answers in flight");
                        handle.abort(operator);
                        aborted = true;
                    }
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        let p = handle.progress();
                        progress.set_position(p.delivered + p.failed);
                        let line = p.paused_line();
                        if line != paused {
                            match &line {
                                Some(l) => progress.suspend(|| eprintln!("{l}")),
                                None => progress.suspend(|| eprintln!("every provider takes requests again: sending")),
                            }
                            paused = line;
                        }
                    }
                }
            };
            progress.finish_and_clear();
            Ok(report)
        }
        FireOutcome::AlreadyFired(record) => {
            // A fire whose process died a moment ago reads as interrupted
            // once its heartbeat is quiet: say so rather than "fired".
            let record = engine.settle(record)?;
            let standing = if record.status == FireStatus::Interrupted { engine.standing()? } else { None };
            Err(NotSent::AlreadyFired(record, standing))
        }
        FireOutcome::NeverFired => Err(NotSent::NeverFired),
        FireOutcome::Mismatch { record, now } => Err(NotSent::Mismatch(record, now)),
    };
    engine.shutdown();
    let received = match (&result, &setup.gateway) {
        (Ok(report), Some(_)) => {
            let r = setup.received(&audience, report.delivered);
            Some((r.delivered, r.duplicates))
        }
        _ => None,
    };
    Ok((result, received))
}

pub(crate) fn test_send_cmd(args: TestSendArgs) -> anyhow::Result<ExitCode> {
    let mut campaign = Campaign::load(&args.campaign)?;
    if args.silent {
        campaign = campaign.into_silent();
    }
    let store = TestSendStore::open(&args.state.clone().unwrap_or_else(kickoff_sender::sys::state_db))?;
    if args.status || args.confirm {
        let status = if args.confirm { store.confirm(&campaign, &args.operator)? } else { store.status(&campaign)? };
        if args.json {
            println!("{}", serde_json::to_string(&status)?);
        } else {
            println!("campaign {} (content {}): {}", campaign.id, &campaign.hash()[..16], describe_status(&status));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let choice = match args.provider {
        ProviderKind::Gateway => ProviderChoice::gateway(),
        ProviderKind::Http => {
            let config = args.push.config(Default::default())?;
            if config.is_empty() {
                bail!("--provider http needs credentials: --config FILE, or --apns-*/--fcm-* flags");
            }
            ProviderChoice::Http(config)
        }
        other => bail!("test-send goes through real providers or the gateway, not {other:?}"),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(async {
        let setup = Setup::start_for_test_send(&choice, &campaign.apns.topic).await?;
        anyhow::Ok(testsend::send(&campaign, &setup.provider, &args.operator).await?)
    })?;
    store.record(&report)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for r in &report.results {
            let answer = match (&r.error, &r.response_id) {
                (Some(e), _) => format!("ERROR {e}"),
                (None, Some(id)) => format!("accepted, id {id}"),
                (None, None) => format!("accepted ({})", r.status),
            };
            println!("{} ({}, {} -> message {}): {answer}", r.name, r.platform, r.locale, r.message_locale);
            println!("  payload: {}", r.payload);
        }
        if report.all_accepted() {
            println!(
                "every test notification was accepted; check the devices, then: kickoff-sender test-send --campaign {} --confirm",
                args.campaign.display()
            );
        } else {
            println!("some test notifications failed: fix them and test-send again before confirming");
        }
    }
    Ok(if report.all_accepted() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn describe_status(s: &TestSendStatus) -> String {
    let at = |ms: u64| kickoff_sender::clock::rfc3339_s(ms);
    match s {
        TestSendStatus::None => "never test-sent".into(),
        TestSendStatus::Sent { sent_at_ms, operator, all_accepted: true } => {
            format!("test-sent at {} by {operator}; waiting for confirmation", at(*sent_at_ms))
        }
        TestSendStatus::Sent { sent_at_ms, operator, all_accepted: false } => {
            format!("test-sent at {} by {operator} WITH FAILURES; test-send again", at(*sent_at_ms))
        }
        TestSendStatus::Confirmed { confirmed_at_ms, confirmed_by } => format!("confirmed at {} by {confirmed_by}", at(*confirmed_at_ms)),
        TestSendStatus::Voided { sent_at_ms, .. } => format!("the test-send of {} is VOID: the campaign changed since", at(*sent_at_ms)),
    }
}
