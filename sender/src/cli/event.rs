//! `runbook`, `replay` and `zombie`: the event commands of the CLI.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use kickoff_sender::recorder::replay::{self, EventSummary};
use kickoff_sender::recorder::{EventLog, report};
use kickoff_sender::runbook::engine::{Actor, StepProgress};
use kickoff_sender::runbook::walk::{self, WalkObserver};
use kickoff_sender::runbook::{self, Event, Role, Runbook, StepState};
use kickoff_sender::session::{Session, SessionOptions};
use kickoff_sender::zombie::{self, FlagStore, FlagsDocument, SqliteFlagStore, Switch};

use super::args::ProviderArgs;
use super::{EXIT_INCOMPLETE, EXIT_STEP_FAILED, default_operator};

#[derive(Debug, Subcommand)]
pub(crate) enum RunbookCmd {
    /// Check a runbook file (and the campaign it names).
    Check {
        /// The runbook.
        file: PathBuf,
    },
    /// Walk a runbook step by step in the terminal (embedded mode, or AWS
    /// mode with --aws).
    Walk(Box<WalkArgs>),
    /// Approve the arm of a runbook whose arm needs more than one operator
    /// (`[approvals] arm = N`): joins its open event and records this
    /// operator's approval; with --aws, records it with the fire in S3 as
    /// the caller's AWS principal, from any machine.
    Approve(Box<ApproveArgs>),
    /// A printable launch-day checklist of the runbook: one HTML page with
    /// the roles, and per step a box to tick, its time, its role, what must
    /// hold first and its backup plan.
    Print {
        /// The runbook.
        file: PathBuf,
        /// The page to write (e.g. launch-day.html).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ApproveArgs {
    /// The runbook.
    file: PathBuf,
    /// Who approves.
    #[arg(long, default_value_t = default_operator())]
    operator: String,
    /// Roles taken (comma-separated); the arm step's role is needed.
    #[arg(long, default_value = "ops,engineer,marketer")]
    roles: String,
    /// The state database (default: kickoff.sqlite in Kickoff's data directory).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Event id (default: the runbook's open event).
    #[arg(long)]
    event: Option<String>,
    /// AWS mode: the AWS profile file (as `runbook walk --aws`). Who
    /// approves is the caller's AWS identity (STS), and the approval is
    /// kept with the fire in S3, so no open event is needed here.
    #[arg(long, value_name = "FILE")]
    aws: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct WalkArgs {
    /// The runbook.
    file: PathBuf,
    /// Run every step without asking, taking backup steps when one fails.
    #[arg(long, conflicts_with = "script")]
    yes: bool,
    /// Run the commands of this file (run STEP, skip STEP REASON, zombie
    /// on|off BACKEND [DURATION], disarm, abort REASON, wait DURATION, auto).
    #[arg(long)]
    script: Option<PathBuf>,
    /// Who is walking.
    #[arg(long, default_value_t = default_operator())]
    operator: String,
    /// Walk as a new event, whatever is open, and key its fire by that
    /// event: how a demo runbook is walked again. Without it a fire is the
    /// campaign's launch, once ever (a silent rehearsal is keyed per event).
    #[arg(long, conflicts_with = "event")]
    new_event: bool,
    /// Roles taken (comma-separated: ops, engineer, marketer).
    #[arg(long, default_value = "ops,engineer,marketer")]
    roles: String,
    /// The flight recorder file (default: events/<runbook>-<time>.kickoff.sqlite
    /// in Kickoff's data directory).
    #[arg(long)]
    record: Option<PathBuf>,
    /// The state database (default: kickoff.sqlite in Kickoff's data directory).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Event id (default: from the runbook's event_time, else new).
    #[arg(long)]
    event: Option<String>,
    /// Serve the zombie flags to client apps on this address (embedded
    /// mode; in AWS mode they are published to S3).
    #[arg(long, default_value = "127.0.0.1:0")]
    flags_listen: std::net::SocketAddr,
    /// AWS mode: the AWS profile file (as `worker --config`). The scale
    /// steps call the ASG and ECS, the service's workers warm and send;
    /// the provider options apply to test-sends.
    #[arg(long, value_name = "FILE")]
    aws: Option<PathBuf>,
    #[command(flatten)]
    provider: ProviderArgs,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ReplayArgs {
    #[command(subcommand)]
    command: Option<ReplayCmd>,
    /// The recorder file.
    file: Option<PathBuf>,
    /// Playback speed (1 = real time; 0 = as fast as possible).
    #[arg(long, default_value_t = 10.0)]
    speed: f64,
    /// Start: T+30s / T-5m (from the fire), +10s (from the start), or RFC 3339.
    #[arg(long)]
    from: Option<String>,
    /// End, same forms.
    #[arg(long)]
    to: Option<String>,
    /// Print the frames and summary as JSON lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ReplayCmd {
    /// Write charts (PNG, SVG) and a Markdown and HTML report.
    Report {
        /// The recorder file.
        file: PathBuf,
        /// Output directory.
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ZombieCmd {
    /// Tell client apps to stop calling BACKEND (for a while).
    On {
        /// The backend service.
        backend: String,
        /// How long zombie mode lasts (it turns itself off).
        #[arg(long = "for", default_value = "15m")]
        duration: humantime::Duration,
        /// What clients wait before calling again.
        #[arg(long, default_value = "120s")]
        retry_after: humantime::Duration,
        /// Why (recorded).
        #[arg(long, default_value = "")]
        why: String,
        #[command(flatten)]
        common: ZombieCommon,
    },
    /// Let client apps call BACKEND again.
    Off {
        /// The backend service.
        backend: String,
        /// Why (recorded).
        #[arg(long, default_value = "")]
        why: String,
        #[command(flatten)]
        common: ZombieCommon,
    },
    /// Show every backend's flag and the document clients read.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: ZombieCommon,
    },
    /// Serve the flags at GET /v1/zombie until interrupted.
    Serve {
        /// Address (127.0.0.1 only by default).
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        common: ZombieCommon,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ZombieCommon {
    /// Who is switching.
    #[arg(long, default_value_t = default_operator())]
    operator: String,
    /// The state database (default: kickoff.sqlite in Kickoff's data directory).
    #[arg(long)]
    state: Option<PathBuf>,
}

impl ZombieCommon {
    fn store(&self) -> anyhow::Result<SqliteFlagStore> {
        Ok(SqliteFlagStore::open(&self.state.clone().unwrap_or_else(kickoff_sender::sys::state_db))?)
    }
}

pub(crate) fn runbook_cmd(cmd: RunbookCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        RunbookCmd::Check { file } => {
            let rb = Runbook::load(&file)?;
            println!("{}: ok: {:?}, {} steps, campaign {}", file.display(), rb.name, rb.steps.len(), rb.campaign.display());
            for s in &rb.steps {
                let at = s.at.map(|a| a.display()).unwrap_or_default();
                let backup = s.backup_for.as_ref().map(|f| format!("  (backup for {f})")).unwrap_or_default();
                println!("  {:<18} {:<12} {:<9} {:<8} {}{backup}", s.id, s.kind.as_str(), s.role.as_str(), at, s.title);
            }
            Ok(ExitCode::SUCCESS)
        }
        RunbookCmd::Walk(args) => walk_cmd(*args),
        RunbookCmd::Approve(args) => approve_cmd(*args),
        RunbookCmd::Print { file, out } => {
            let rb = Runbook::load(&file)?;
            std::fs::write(&out, kickoff_sender::runbook::print::checklist_html(&rb))
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!("{} steps of {:?} in {}: open it in a browser and print", rb.steps.len(), rb.name, out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn approve_cmd(args: ApproveArgs) -> anyhow::Result<ExitCode> {
    let rb = Runbook::load(&args.file)?;
    let actor = Actor { name: args.operator.clone(), roles: parse_roles(&args.roles)? };
    let data_dir = kickoff_sender::sys::data_dir();
    let opts = SessionOptions {
        state_db: Some(args.state.clone().unwrap_or_else(kickoff_sender::sys::state_db)),
        // The approval goes to the event's audit log; this short session
        // keeps its own recording of it.
        record: None,
        event: args.event,
        provider: kickoff_sender::provider::ProviderChoice::Null,
        flag_server: None,
        aws: args.aws.as_deref().map(kickoff_sender::aws::AwsConfig::load).transpose()?,
        new_event: false,
        data_dir,
    };
    let aws_mode = opts.aws.is_some();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let session = Session::open(rb, opts).await?;
        // In AWS mode the approval is keyed by the fire, the same on every
        // machine: the arming event may well be open elsewhere.
        if !session.joined() && !aws_mode {
            let path = session.event().runbook().path.display().to_string();
            session.close().await;
            eprintln!("no event of {path} is open: an approval belongs to the event being armed (open it in the app or a walk first)");
            return Ok(ExitCode::from(EXIT_STEP_FAILED));
        }
        let said = session.event().approve(&actor).await;
        session.close().await;
        match said {
            Ok(line) => {
                println!("{line}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(EXIT_STEP_FAILED))
            }
        }
    })
}

fn parse_roles(s: &str) -> anyhow::Result<Vec<Role>> {
    s.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| Role::parse(r).with_context(|| format!("--roles: unknown role {r:?} (ops, engineer, marketer)")))
        .collect()
}

/// Prints steps as they go, with progress bars for long ones.
struct TermObserver {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl WalkObserver for TermObserver {
    fn step_starting(&self, event: &Event, id: &str) {
        print_step_header(event, id);
        let bar = indicatif::ProgressBar::new(100);
        bar.set_style(
            indicatif::ProgressStyle::with_template("    {bar:30} {pos}/{len} {msg}").expect("a valid template").progress_chars("=> "),
        );
        if !std::io::stderr().is_terminal() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        *self.bar.lock().expect("bar lock") = Some(bar);
    }

    fn step_ended(&self, _event: &Event, _id: &str, result: &Result<runbook::StepStatus, runbook::ActError>) {
        if let Some(bar) = self.bar.lock().expect("bar lock").take() {
            bar.finish_and_clear();
        }
        match result {
            Ok(s) => {
                println!("    {} {}", if s.state == StepState::Skipped { "skipped:" } else { "done:" }, s.note.clone().unwrap_or_default());
            }
            Err(e) => println!("    FAILED: {e}"),
        }
    }
}

impl TermObserver {
    fn show(&self, p: &StepProgress) {
        if let Some(bar) = self.bar.lock().expect("bar lock").as_ref() {
            bar.set_length(p.total.max(1.0) as u64);
            bar.set_position(p.done as u64);
            bar.set_message(format!("{} ({:.1} s)", p.label, p.elapsed_s));
        }
    }
}

fn print_step_header(event: &Event, id: &str) {
    let state = event.state();
    let n = state.steps.iter().position(|(s, _)| s.id == id).map_or(0, |i| i + 1);
    let Some(step) = event.runbook().step(id) else { return };
    let at = step.at.map(|a| format!("  [{}]", a.display())).unwrap_or_default();
    println!("\n[{n}/{}] {} — {} ({}){at}", state.steps.len(), step.id, step.title, step.role.as_str());
    if let Some((_, gates)) = state.steps.iter().find(|(s, _)| s.id == id) {
        for g in gates {
            println!("    gate {} {}: {}", if g.open { "✓" } else { "✗" }, g.what, g.detail);
        }
    }
    if let Some(b) = &step.backup {
        println!("    backup plan: {}{}", b.text, b.step.as_ref().map(|s| format!(" (step {s})")).unwrap_or_default());
    }
}

fn walk_cmd(args: WalkArgs) -> anyhow::Result<ExitCode> {
    let rb = Runbook::load(&args.file)?;
    let roles = parse_roles(&args.roles)?;
    let actor = Actor { name: args.operator.clone(), roles };
    let script = match &args.script {
        Some(p) => Some(walk::parse_script(&std::fs::read_to_string(p).with_context(|| p.display().to_string())?, p)?),
        None => None,
    };
    let aws = args.aws.as_deref().map(kickoff_sender::aws::AwsConfig::load).transpose()?;
    let interactive = !args.yes && script.is_none();
    if interactive && !std::io::stdin().is_terminal() {
        bail!("no terminal to ask on: pass --yes or --script FILE");
    }
    let opts = SessionOptions {
        data_dir: kickoff_sender::sys::data_dir(),
        state_db: Some(args.state.clone().unwrap_or_else(kickoff_sender::sys::state_db)),
        record: args.record.clone(),
        event: args.event.clone(),
        provider: args.provider.choice()?,
        flag_server: Some(args.flags_listen),
        aws,
        new_event: args.new_event,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        // Joins the event another walk or app window has open for this
        // runbook, so that both share one fire; or opens a new one.
        let session = Session::open(rb, opts).await?;
        let event = session.event().clone();
        if session.joined() && args.event.is_none() {
            println!("Joining the open event {} of this runbook (its fire is shared).", event.id());
        }
        let record = session.record().to_owned();
        let services = event.services();
        println!("Runbook {:?}, event {}", event.runbook().name, event.id());
        println!("  fleet: {}", services.fleet.describe());
        if let Some(url) = &services.flag_url {
            println!("  zombie flags served at {url}");
        }
        println!("  recording to {}", record.display());
        let observer = Arc::new(TermObserver { bar: std::sync::Mutex::new(None) });
        // Progress of long steps drives the bar.
        let progress_task = {
            let (event, observer) = (event.clone(), observer.clone());
            let mut rx = event.subscribe();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let state = event.state();
                    if let Some(p) = state.steps.iter().find(|(s, _)| s.state == StepState::Running).and_then(|(s, _)| s.progress.clone()) {
                        observer.show(&p);
                    }
                }
            })
        };
        // Ctrl-C aborts the event (and its fire, in whichever process sends
        // it), like `fire`: the report follows and the exit code is 4.
        let interrupt_task = {
            let (event, actor) = (event.clone(), actor.clone());
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("\naborting (Ctrl-C): no more devices are handed off; waiting for answers in flight");
                    if let Err(e) = event.abort(&actor, "Ctrl-C in the terminal") {
                        eprintln!("{e}");
                    }
                    if interactive {
                        eprintln!("press Enter to finish the walk");
                    }
                }
            })
        };
        let result: Result<(), String> = if let Some(script) = script {
            walk::run_script(&event, &actor, &script, observer.as_ref()).await.map_err(|(line, e)| format!("script line {line}: {e}"))
        } else if args.yes {
            walk::auto(&event, &actor, observer.as_ref()).await.map_err(|e| e.to_string())
        } else {
            interactive_walk(&event, &actor, observer.as_ref()).await
        };
        // Let the sender finish and the last second be recorded.
        let unanswered = match event.services().workers.handle() {
            Some(h) => h.wait().await.unanswered(),
            None => 0,
        };
        session.close().await;
        progress_task.abort();
        interrupt_task.abort();
        let state = event.state();
        if let Some(s) = &state.summary {
            print_summary(s);
        }
        println!("\nRecorded in {}; replay with:\n  kickoff-sender replay {}", record.display(), record.display());
        if let Some((by, why)) = &state.aborted {
            eprintln!("aborted by {by}: {why}");
            return Ok(ExitCode::from(super::EXIT_ABORTED));
        }
        match result {
            Ok(()) if unanswered > 0 => {
                eprintln!("error: the fire left {} devices without a final answer", super::group(unanswered));
                Ok(ExitCode::from(EXIT_INCOMPLETE))
            }
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(EXIT_STEP_FAILED))
            }
        }
    })
}

async fn interactive_walk(event: &Arc<Event>, actor: &Actor, observer: &TermObserver) -> Result<(), String> {
    loop {
        let Some(id) = event.next_step() else { return Ok(()) };
        print_step_header(event, &id);
        print!("    run it? [y]es / [s]kip / [a]bort / [q]uit: ");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("input closed".into());
        }
        match line.trim() {
            "" | "y" | "yes" => {
                observer.step_starting(event, &id);
                let r = event.run_step(&id, actor).await;
                observer.step_ended(event, &id, &r);
                if r.is_err()
                    && let Some(i) = event.state().interrupted
                {
                    offer_resume(event, actor, &i)?;
                }
            }
            "s" | "skip" => {
                print!("    reason: ");
                let _ = std::io::stdout().flush();
                let mut why = String::new();
                let _ = std::io::stdin().lock().read_line(&mut why);
                if let Err(e) = event.skip(&id, actor, why.trim()) {
                    println!("    {e}");
                }
            }
            "a" | "abort" => {
                println!("    abort plan: {}", event.runbook().abort_plan);
                return event.abort(actor, "aborted from the terminal").map_err(|e| e.to_string());
            }
            "q" | "quit" => return Ok(()),
            other => println!("    {other:?}? answer y, s, a or q"),
        }
    }
}

/// Asks whether to resume an interrupted fire, and does.
fn offer_resume(event: &Arc<Event>, actor: &Actor, i: &kickoff_sender::runbook::Interrupted) -> Result<(), String> {
    let standing = match (i.answered, i.targeted) {
        (Some(a), Some(t)) => {
            format!(": {} of {} devices have a final answer, {} do not", super::group(a), super::group(t), super::group(t - a.min(t)))
        }
        _ => String::new(),
    };
    println!("    the fire of {} (by {}) was INTERRUPTED ({}){standing}", i.fire_id, i.by, i.why);
    print!("    resume it (send exactly the devices without a final answer)? [y/N]: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())?;
    if matches!(line.trim(), "y" | "yes") {
        match event.resume(actor) {
            Ok(_) => println!("    resumed: the watch step follows the rest of the send"),
            Err(e) => println!("    {e}"),
        }
    }
    Ok(())
}

fn print_summary(s: &EventSummary) {
    println!(
        "\nOutcome: {} of {} devices delivered, {} failed, {} duplicates, {} missing",
        s.delivered, s.devices, s.failed, s.duplicates, s.missing
    );
    println!("  delivery time p50 {:.3} s, p95 {:.3} s, p99 {:.3} s, max {:.3} s", s.p50_s, s.p95_s, s.p99_s, s.max_s);
    if let (Some(by), Some(at)) = (&s.fired_by, s.fired_at_ms) {
        println!("  fired by {by} at {}", humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(at)));
    }
    for (reason, n) in &s.failed_by_reason {
        println!("  failed {reason}: {n}");
    }
}

pub(crate) fn replay_cmd(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if let Some(ReplayCmd::Report { file, out }) = args.command {
        let log = EventLog::open(&file)?;
        let files = report::write(&log, &file, &out)?;
        println!(
            "wrote {} and {} with {} chart files in {}",
            files.markdown.display(),
            files.html.display(),
            files.charts.len(),
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let file = args.file.context("replay needs a recorder file (or: replay report FILE --out DIR)")?;
    if !(args.speed == 0.0 || (0.01..=1e6).contains(&args.speed)) {
        bail!("--speed must be 0 (as fast as possible) or between 0.01 and 1000000");
    }
    let log = EventLog::open(&file)?;
    let from = args.from.as_deref().map(|s| replay::parse_time(s, &log)).transpose()?;
    let to = args.to.as_deref().map(|s| replay::parse_time(s, &log)).transpose()?;
    if !args.json {
        println!("Replaying {} ({})", file.display(), log.meta.get("runbook").map_or("event", String::as_str));
    }
    let frames = replay::frames(&log, from, to);
    let mut stdout = std::io::stdout().lock();
    for f in &frames {
        if args.json {
            writeln!(stdout, "{}", serde_json::json!({ "frame": f }))?;
        } else {
            let fleet = ["asg_running", "ecs_running"]
                .iter()
                .filter_map(|k| f.fleet.get(*k).map(|v| format!("{}={v}", &k[..3])))
                .collect::<Vec<_>>()
                .join(" ");
            let zombies = if f.zombies.is_empty() { String::new() } else { format!(" zombie: {}", f.zombies.join(",")) };
            writeln!(
                stdout,
                "{:>9}  sent/s ios {:>8} android {:>8}  delivered {:>9} ({:5.1}%)  failed {:>6}  {fleet}{zombies}",
                replay::format_offset(f.offset_s),
                f.sent[0],
                f.sent[1],
                f.delivered,
                f.delivered_pct,
                f.failed
            )?;
            for a in &f.actions {
                let role = if a.role.is_empty() { String::new() } else { format!(" ({})", a.role) };
                let step = if a.step.is_empty() { String::new() } else { format!(" {}", a.step) };
                writeln!(stdout, "           > {}{role}: {}{step} {}", a.actor, a.action, a.outcome)?;
            }
        }
        stdout.flush()?;
        if args.speed > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(1.0 / args.speed));
        }
    }
    let summary = replay::summarize(&log);
    if args.json {
        writeln!(stdout, "{}", serde_json::json!({ "summary": summary }))?;
    } else {
        drop(stdout);
        print_summary(&summary);
        if let Some(live) = replay::live_summary(&log)
            && live != summary
        {
            println!("  note: the summary recorded live differs: {live:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn zombie_cmd(cmd: ZombieCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ZombieCmd::On { backend, duration, retry_after, why, common } => {
            let s =
                Switch { backend, on: true, retry_after: retry_after.into(), duration: duration.into(), by: common.operator.clone(), why };
            let flag = common.store()?.switch(&s)?;
            println!(
                "zombie mode ON for {} until {} (clients retry after {} s), switch #{} by {}",
                flag.backend,
                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(flag.expires_at_ms.unwrap_or(0))),
                flag.retry_after_s,
                flag.version,
                flag.set_by
            );
        }
        ZombieCmd::Off { backend, why, common } => {
            let flag = common.store()?.switch(&Switch::off(&backend, &common.operator, &why))?;
            println!("zombie mode OFF for {}, switch #{} by {}", flag.backend, flag.version, flag.set_by);
        }
        ZombieCmd::Status { json, common } => {
            let flags = common.store()?.flags()?;
            let now = zombie::now_ms();
            if json {
                let (doc, _) = FlagsDocument::at(&flags, now);
                println!("{}", serde_json::json!({ "flags": flags, "document": doc }));
            } else if flags.is_empty() {
                println!("no backend has ever been switched");
            }
            if !json {
                for f in &flags {
                    let state = if f.active(now) {
                        format!(
                            "ZOMBIE for {} more",
                            humantime::format_duration(Duration::from_secs((f.expires_at_ms.unwrap_or(now) - now) / 1000))
                        )
                    } else if f.enabled {
                        "off (expired)".into()
                    } else {
                        "off".into()
                    };
                    println!("  {:<16} {state:<28} switch #{} by {} — {}", f.backend, f.version, f.set_by, f.why);
                }
            }
        }
        ZombieCmd::Serve { listen, common } => {
            let store: Arc<dyn FlagStore> = Arc::new(common.store()?);
            let server = zombie::server::FlagServer::start(store, listen, None).with_context(|| format!("listen on {listen}"))?;
            println!("serving zombie flags at {}; Ctrl-C to stop", server.url());
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async { tokio::signal::ctrl_c().await })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
