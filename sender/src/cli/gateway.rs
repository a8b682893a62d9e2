//! `gateway`: the loopback push gateway as its own process, and
//! `gateway keys`, the test credentials that point a sender at it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use kickoff_sender::audience::Audience;
use kickoff_sender::gateway::{self, Gateway, GatewayKeys};

use super::args::GatewayFlags;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct GatewayArgs {
    #[command(subcommand)]
    command: Option<GatewayCmd>,
    /// Credentials directory; created (keys generated for --listen) if missing.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Address to listen on (port 0: any free port); ignored when --keys exists.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// APNs topic the gateway accepts (new keys only).
    #[arg(long, default_value = "dev.kickoff.demo")]
    topic: String,
    /// Tokens answering 410 / UNREGISTERED, one per line.
    #[arg(long)]
    unregistered_file: Option<PathBuf>,
    /// Print, on exit, which tokens of this audience were missed or duplicated.
    #[arg(long)]
    expect: Option<PathBuf>,
    /// Count on from the per-token counts in this file (if it exists) and
    /// write them back on exit: a gateway stopped and started again (an
    /// outage drill) counts every delivery once.
    #[arg(long)]
    counts: Option<PathBuf>,
    #[command(flatten)]
    faults: GatewayFlags,
}

#[derive(Debug, Subcommand)]
pub(crate) enum GatewayCmd {
    /// Write test credentials: APNs .p8 key, key id and team id; an FCM
    /// service account whose token_uri is the gateway; the CA certificate;
    /// and a kickoff.toml pointing the sender at the gateway.
    Keys {
        /// Output directory.
        #[arg(long, short)]
        out: PathBuf,
        /// Address the gateway will listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Cleartext HTTP/2 (h2c) instead of TLS.
        #[arg(long)]
        h2c: bool,
        /// APNs topic the gateway accepts.
        #[arg(long, default_value = "dev.kickoff.demo")]
        topic: String,
    },
}

pub(crate) fn gateway_cmd(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    if let Some(GatewayCmd::Keys { out, listen, h2c, topic }) = args.command {
        let keys = GatewayKeys::generate(listen, !h2c, &topic)?;
        keys.write(&out)?;
        println!(
            "wrote test credentials for {} to {} (sender config: {})",
            keys.url(),
            out.display(),
            out.join(gateway::keys::CONFIG_FILE).display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = args.faults.config()?;
    if let Some(path) = &args.unregistered_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        config.unregistered = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    }
    let tls = !args.faults.h2c;
    let mut gw = match &args.keys {
        Some(dir) if dir.join(gateway::keys::GATEWAY_FILE).is_file() => Gateway::start(GatewayKeys::load(dir)?, config)?,
        Some(dir) => {
            let gw = Gateway::start_at(args.listen, config, tls, &args.topic)?;
            gw.keys().write(dir)?;
            gw
        }
        None => bail!("--keys DIR is needed: clients read the CA, the .p8 key and the service account from it"),
    };
    if let Some(path) = &args.counts {
        gw.records().load_counts(path).with_context(|| format!("reading gateway counts {}", path.display()))?;
    }
    let dir = args.keys.as_deref().expect("checked");
    println!("gateway listening on {} (keys and sender config in {})", gw.url(), dir.display());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    // Stopped first: nothing is accepted after the counts are written.
    gw.stop();
    if let Some(path) = &args.counts {
        gw.records().save_counts(path).with_context(|| format!("writing gateway counts {}", path.display()))?;
    }
    // Whoever started us may have stopped reading; the stats are a courtesy.
    use std::io::Write as _;
    let stats = gw.records().stats();
    let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&stats)?);
    if let Some(dir) = &args.expect {
        let check = gw.records().check_audience(&Audience::load(dir)?);
        let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&check)?);
    }
    Ok(ExitCode::SUCCESS)
}
