//! `kickoff-sender worker` and `kickoff-sender aws ...`: AWS mode from the
//! command line. Every command goes through the library calls the app uses.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use kickoff_sender::aws::provision::{self, ProvisionOptions};
use kickoff_sender::aws::worker::WorkerProvider;
use kickoff_sender::aws::{Aws, AwsConfig, control};
use kickoff_sender::fanout::Claim;

/// `worker --config FILE`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The AWS configuration (TOML): resources and the `[worker]` settings.
    #[arg(long)]
    config: PathBuf,
    /// `null` sends nowhere (a rehearsal of the fleet): every device counts
    /// as delivered. Without it, the worker sends through the credentials
    /// of `[worker] push_config`, and refuses to start if there are none.
    #[arg(long, value_parser = ["null"])]
    provider: Option<String>,
}

/// `aws ...`.
#[derive(Debug, Subcommand)]
pub enum AwsCmd {
    /// Create the bucket, queues, ECS cluster and service and the
    /// auto-scaling group (emulator and sandbox accounts; production uses
    /// deploy/cloudformation.yaml).
    Provision {
        /// The AWS configuration.
        #[arg(long)]
        config: PathBuf,
        /// The worker's container image.
        #[arg(long, default_value = "kickoff-sender:latest")]
        image: String,
    },
    /// Fire what the workers hold (the last verify-warm). Once per fire id,
    /// ever: a second press, from anywhere, answers "already fired".
    Fire {
        /// The AWS configuration.
        #[arg(long)]
        config: PathBuf,
        /// Who fires.
        #[arg(long)]
        operator: String,
    },
    /// Abort the warm fire (or --fire ID): every worker stops handing off
    /// within 250 ms, whichever process pressed fire, even if it is
    /// gone.
    Abort {
        /// The AWS configuration.
        #[arg(long)]
        config: PathBuf,
        /// Why (recorded with the abort; required).
        #[arg(long)]
        why: String,
        /// Who aborts.
        #[arg(long, default_value_t = super::default_operator())]
        operator: String,
        /// The fire id (default: the fire the workers are warm for).
        #[arg(long)]
        fire: Option<String>,
    },
    /// The workers' status, the ledger's record of the warm fire, and the
    /// zombie flags published to client apps.
    Status {
        /// The AWS configuration.
        #[arg(long)]
        config: PathBuf,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

async fn connect(config: &std::path::Path) -> anyhow::Result<Aws> {
    Ok(Aws::connect(AwsConfig::load(config)?).await?)
}

/// Runs a worker until SIGTERM or Ctrl-C.
pub fn worker_cmd(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let config = AwsConfig::load(&args.config)?;
    let provider = if args.provider.is_some() { WorkerProvider::Null } else { WorkerProvider::Configured };
    // Checked before anything starts, so the error is the first thing seen.
    kickoff_sender::aws::worker::push_config(&config, provider)?;
    runtime()?.block_on(async move {
        let stop = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("stopping: finishing or releasing the batches held");
        };
        kickoff_sender::aws::worker::run(config, provider, stop).await
    })?;
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
pub fn aws_cmd(cmd: AwsCmd) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match cmd {
        AwsCmd::Provision { config, image } => rt.block_on(async {
            let aws = connect(&config).await?;
            let out = provision::provision(&aws, &ProvisionOptions { image, ..ProvisionOptions::default() }).await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }),
        AwsCmd::Fire { config, operator } => rt.block_on(async {
            let aws = connect(&config).await?;
            let (_, campaign) = control::warmed_campaign(&aws).await.map_err(anyhow::Error::msg)?;
            let fired = control::fire(&aws, &campaign, &operator).await.map_err(anyhow::Error::msg)?;
            match fired.claim {
                Claim::Won(r) => {
                    println!("{}", serde_json::json!({ "outcome": "fired", "record": r }));
                    Ok(ExitCode::SUCCESS)
                }
                Claim::AlreadyFired(r) => {
                    if !fired.requeued.is_empty() {
                        eprintln!(
                            "the fire was claimed before but markets {} had not been dispatched: they are queued again (nothing is sent twice)",
                            fired.requeued.join(", ")
                        );
                    }
                    println!("{}", serde_json::json!({ "outcome": "already_fired", "record": r, "requeued": fired.requeued }));
                    Ok(ExitCode::from(super::EXIT_ALREADY_FIRED))
                }
            }
        }),
        AwsCmd::Abort { config, why, operator, fire } => rt.block_on(async {
            if why.trim().is_empty() {
                anyhow::bail!("--why must say why the fire is aborted (it goes to the audit log)");
            }
            let aws = connect(&config).await?;
            let fire_id = match fire {
                Some(id) => id,
                None => aws.store().warm().await?.map(|(spec, _)| spec.fire_id).context("nothing is warm: give --fire ID")?,
            };
            let (outcome, code) = match control::abort(&aws, &fire_id, &operator, why.trim()).await? {
                control::Aborted::Requested(r) => {
                    eprintln!("abort recorded: the workers stop handing off {} within 250 ms", r.campaign_id);
                    (serde_json::json!({ "outcome": "aborted", "fire": fire_id, "by": operator, "why": why.trim() }), ExitCode::SUCCESS)
                }
                control::Aborted::AlreadyRequested(mark) => {
                    (serde_json::json!({ "outcome": "already_aborted", "fire": fire_id, "mark": mark }), ExitCode::from(super::EXIT_ALREADY_FIRED))
                }
                control::Aborted::Ended(r) => {
                    (serde_json::json!({ "outcome": "ended", "fire": fire_id, "record": r }), ExitCode::from(super::EXIT_ALREADY_FIRED))
                }
                control::Aborted::NeverFired => {
                    (serde_json::json!({ "outcome": "never_fired", "fire": fire_id }), ExitCode::from(super::EXIT_ALREADY_FIRED))
                }
            };
            println!("{outcome}");
            Ok(code)
        }),
        AwsCmd::Status { config } => rt.block_on(async {
            let aws = connect(&config).await?;
            let store = aws.store();
            let workers = store.workers().await?;
            let warm = store.warm().await?.map(|(spec, _)| spec);
            let record = match &warm {
                Some(w) => store.fire_record(&w.fire_id).await.context("the ledger")?,
                None => None,
            };
            let flags = store.flags().await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "warm": warm, "workers": workers, "fire": record, "flags": flags }))?
            );
            Ok(ExitCode::SUCCESS)
        }),
    }
}
