//! `abort`: stops a fire from any process, through the durable ledger. The
//! process sending it reads the request within a quarter of a second, stops
//! handing off and exits 4 with its report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use kickoff_sender::fanout::{AbortAnswer, AbortRequest, FireLedger, FireStatus, SqliteLedger};

use super::{EXIT_ALREADY_FIRED, default_operator};

#[derive(Debug, Args)]
pub(crate) struct AbortArgs {
    /// The fire's key: the campaign id for a launch (`<id>@<event>` for a
    /// new event, `<id>~rehearsal@<event>` for a rehearsal).
    #[arg(long)]
    campaign: String,
    /// Why (recorded with the abort).
    #[arg(long)]
    why: String,
    /// Who is aborting.
    #[arg(long, default_value_t = default_operator())]
    operator: String,
    /// The fire ledger (default: kickoff.sqlite in Kickoff's data directory).
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// How long to wait for the sending process to stop [default: 10s].
    #[arg(long, value_parser = |s: &str| kickoff_sender::clock::parse_duration(s, Duration::from_secs(3600)))]
    wait: Option<Duration>,
}

pub(crate) fn abort_cmd(args: AbortArgs) -> anyhow::Result<ExitCode> {
    if args.why.trim().is_empty() {
        anyhow::bail!("--why is empty: say why the fire is aborted (it goes to the ledger and the audit log)");
    }
    let ledger = SqliteLedger::open(&args.ledger.clone().unwrap_or_else(kickoff_sender::sys::state_db))?;
    let request = AbortRequest { by: args.operator.clone(), why: args.why.clone(), at_ms: kickoff_sender::clock::now_ms() };
    match ledger.request_abort(&args.campaign, &request)? {
        AbortAnswer::NeverFired => {
            println!("campaign {} was never fired (ledger {}); nothing to abort", args.campaign, ledger.path().display());
            Ok(ExitCode::FAILURE)
        }
        AbortAnswer::Ended(record) => {
            println!("{record}; it already ended, nothing to abort");
            Ok(ExitCode::from(EXIT_ALREADY_FIRED))
        }
        AbortAnswer::AlreadyRequested(first) => {
            println!(
                "an abort of {} was already requested at {} by {}: {}",
                args.campaign,
                kickoff_sender::clock::rfc3339_s(first.at_ms),
                first.by,
                first.why
            );
            wait_for_end(&ledger, &args)
        }
        AbortAnswer::Requested(record) if record.status == FireStatus::Aborted => {
            println!("campaign {} was interrupted; it is now aborted and will not be resumed", args.campaign);
            Ok(ExitCode::SUCCESS)
        }
        AbortAnswer::Requested(record) => {
            println!("abort of {} requested; process {} on {} stops handing off within a second", args.campaign, record.pid, record.host);
            wait_for_end(&ledger, &args)
        }
    }
}

/// Waits for the sending process to record the end of the fire.
fn wait_for_end(ledger: &SqliteLedger, args: &AbortArgs) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + args.wait.unwrap_or(Duration::from_secs(10));
    loop {
        let record = ledger.get(&args.campaign)?.ok_or_else(|| anyhow::anyhow!("the fire {} vanished from the ledger", args.campaign))?;
        match record.status {
            FireStatus::Aborted | FireStatus::Completed => {
                println!("the fire stopped: {}", record.status.as_str());
                return Ok(ExitCode::SUCCESS);
            }
            FireStatus::Interrupted => {
                println!("the sending process is gone; the fire is interrupted and the abort stands");
                return Ok(ExitCode::SUCCESS);
            }
            FireStatus::Fired if Instant::now() >= deadline => {
                println!("the sending process has not recorded its end yet; the abort stands and it will read it");
                return Ok(ExitCode::SUCCESS);
            }
            FireStatus::Fired => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
