//! `kickoff-sender worker` and `kickoff-sender aws ...`: AWS mode from the
//! command line. Every command goes through the library calls the app uses.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use kickoff_sender::aws::provision::{self, ProvisionOptions};
use kickoff_sender::aws::{Aws, AwsConfig, control};
use kickoff_sender::fanout::Claim;

/// `worker --config FILE`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The AWS configuration (TOML): resources and the `[worker]` settings.
    #[arg(long)]
    config: PathBuf,
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
    runtime()?.block_on(async move {
        let stop = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("stopping: finishing or releasing the batches held");
        };
        kickoff_sender::aws::worker::run(config, stop).await
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
            match control::fire(&aws, &campaign, &operator).await.map_err(anyhow::Error::msg)? {
                Claim::Won(r) => {
                    println!("{}", serde_json::json!({ "outcome": "fired", "record": r }));
                    Ok(ExitCode::SUCCESS)
                }
                Claim::AlreadyFired(r) => {
                    println!("{}", serde_json::json!({ "outcome": "already_fired", "record": r }));
                    Ok(ExitCode::from(super::EXIT_ALREADY_FIRED))
                }
            }
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
