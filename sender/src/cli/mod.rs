//! The command-line face of the sender library, one module per command
//! group. Every command parses its arguments, calls one library function,
//! and prints; `main.rs` only starts it.
//!
//! - [`args`]: argument groups several commands share (the provider,
//!   credentials, gateway faults, a generated audience).
//! - [`audience`]: `audience compile|inspect|generate`, `campaign check`;
//!   [`import`]: `audience import dynamodb`.
//! - [`send`]: `drill`, `fire`, `test-send`.
//! - [`gateway`]: the loopback push gateway as its own process.
//! - [`event`]: `runbook check|walk`, `replay`, `zombie`.
//! - [`plan`]: `plan`, the capacity, quota and backend-load plan of a runbook.
//! - [`aws_mode`]: `worker` and `aws provision|fire|status`.
//! - [`docs`]: `completions` and `man`, generated from these definitions.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

mod abort;
mod args;
mod audience;
mod aws_mode;
mod docs;
mod event;
mod gateway;
mod import;
mod plan;
mod send;

/// Exit code when a fire was refused because the campaign was already fired.
pub(crate) const EXIT_ALREADY_FIRED: u8 = 3;
/// Exit code when a fire was aborted before every device was sent.
pub(crate) const EXIT_ABORTED: u8 = 4;
/// Exit code when a runbook step failed with no backup plan left.
pub(crate) const EXIT_STEP_FAILED: u8 = 5;
/// Exit code when a fire (or drill) ended with devices left without a final
/// answer: not sent, in doubt, failed after transient errors, or refused for
/// the sender's credentials.
pub(crate) const EXIT_INCOMPLETE: u8 = 6;

#[derive(Debug, Parser)]
#[command(name = "kickoff-sender", version, about = "Kickoff's sender: audiences, campaigns, drills and fires", long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Audience files: compile, inspect, generate.
    #[command(subcommand)]
    Audience(audience::AudienceCmd),
    /// Campaign files: check and preview.
    #[command(subcommand)]
    Campaign(audience::CampaignCmd),
    /// Generate or load an audience, warm the workers, fire, and measure.
    Drill(Box<send::DrillArgs>),
    /// Fire a campaign at a compiled audience (embedded mode). Idempotent:
    /// a campaign fired before answers "already fired" and sends nothing.
    Fire(Box<send::FireArgs>),
    /// Abort a fire from any process (embedded mode): the process sending
    /// it stops handing off within a second and exits 4 with its report.
    Abort(abort::AbortArgs),
    /// The loopback push gateway: APNs and FCM v1 over HTTP/2 on 127.0.0.1.
    Gateway(gateway::GatewayArgs),
    /// Send the campaign's exact payloads to its test recipients, confirm
    /// they arrived, or show where the campaign stands.
    TestSend(send::TestSendArgs),
    /// Before the fire: can the campaign's target be met within the
    /// providers' quotas and with the fleet, when will devices have it, and
    /// what will the opens do to the backends. Exit 2 when a gate fails.
    Plan(plan::PlanArgs),
    /// Runbooks: check a file, or walk it step by step (embedded mode).
    #[command(subcommand)]
    Runbook(event::RunbookCmd),
    /// Play a recorded event back in the terminal, or write its report.
    Replay(event::ReplayArgs),
    /// Zombie-mode flags: tell client apps to stop calling a drowning backend.
    #[command(subcommand)]
    Zombie(event::ZombieCmd),
    /// An AWS worker (an ECS task): the dispatch and notify roles, fed by
    /// SQS, warmed from S3, reporting to CloudWatch.
    Worker(aws_mode::WorkerArgs),
    /// AWS mode: provision resources, fire what is warm, show status.
    #[command(subcommand)]
    Aws(aws_mode::AwsCmd),
    /// Shell completions on stdout: `kickoff-sender completions bash > /etc/bash_completion.d/kickoff-sender`.
    Completions(docs::CompletionsArgs),
    /// Man pages: kickoff-sender.1 and one page per command, written to a directory.
    Man(docs::ManArgs),
}

/// Logs to stderr at `KICKOFF_LOG` (default: warnings), as
/// `KICKOFF_LOG_FORMAT` says (`json`: one object per line).
pub(crate) fn init_logging() {
    kickoff_sender::logging::init(tracing::Level::WARN);
}

/// Runs one command.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Audience(cmd) => audience::audience_cmd(cmd),
        Command::Campaign(audience::CampaignCmd::Check { file, show, silent }) => audience::campaign_check(&file, show.as_deref(), silent),
        Command::Drill(args) => send::drill_cmd(*args),
        Command::Fire(args) => send::fire_cmd(*args),
        Command::Abort(args) => abort::abort_cmd(args),
        Command::Gateway(args) => gateway::gateway_cmd(args),
        Command::TestSend(args) => send::test_send_cmd(args),
        Command::Plan(args) => plan::plan_cmd(args),
        Command::Runbook(cmd) => event::runbook_cmd(cmd),
        Command::Replay(args) => event::replay_cmd(args),
        Command::Zombie(cmd) => event::zombie_cmd(cmd),
        Command::Worker(args) => aws_mode::worker_cmd(args),
        Command::Aws(cmd) => aws_mode::aws_cmd(cmd),
        Command::Completions(args) => docs::completions_cmd(&args),
        Command::Man(args) => docs::man_cmd(&args),
    }
}

/// What to type instead, for a library error whose fix is a flag: the
/// library speaks of options (the app shows its messages too), the CLI of
/// flags.
pub(crate) fn hint(e: &anyhow::Error) -> Option<&'static str> {
    use kickoff_sender::audience::AudienceError;
    use kickoff_sender::aws::dynamodb::ImportError;
    use kickoff_sender::push::config::PushSetupError;
    let audience = e.downcast_ref::<AudienceError>().or_else(|| match e.downcast_ref::<ImportError>() {
        Some(ImportError::Audience(a)) => Some(a),
        _ => None,
    });
    match audience {
        Some(AudienceError::OutputExists { .. }) => return Some("pass --force to replace it"),
        Some(AudienceError::Strict { .. }) => return Some("without --strict the valid rows are written and the rest reported"),
        _ => {}
    }
    match e.downcast_ref::<PushSetupError>() {
        Some(PushSetupError::Config(m)) if m.contains("apns.") => Some("--apns-key-file, --apns-key-id and --apns-team-id set these too"),
        Some(PushSetupError::Config(m)) if m.contains("fcm.") => Some("--fcm-service-account sets it too"),
        _ => None,
    }
}

/// Who is acting, by default: the login name.
pub(crate) fn default_operator() -> String {
    std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "operator".into())
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub(crate) fn bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    bar
}

/// Writes `value` as pretty JSON to `path`.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(value)?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

pub(crate) use kickoff_sender::plan::group;

/// Bytes as megabytes.
pub(crate) fn bytes(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1e6)
}
