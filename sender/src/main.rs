#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a CLI prints its results")]

//! `kickoff-sender`: the command-line face of the sender library. Every
//! command parses its arguments, calls one library function, and prints.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use kickoff_sender::audience::generate::{self, GenerateSpec};
use kickoff_sender::audience::{self, Audience, CompileOptions, Platform, Shard};
use kickoff_sender::campaign::{self, Campaign, Payloads};
use kickoff_sender::drill::{self, DrillEvent, DrillOptions, DrillSummary, ProviderChoice};
use kickoff_sender::fanout::{Engine, EngineConfig, FireOutcome, FireReport, SqliteLedger, Warm};
use kickoff_sender::metrics::MemoryMetrics;
use kickoff_sender::push::choice::Setup;
use kickoff_sender::push::config::{ApnsConfig, FcmConfig, PoolConfig, TlsConfig};
use kickoff_sender::push::gateway::{self, Gateway, GatewayConfig, GatewayKeys};
use kickoff_sender::push::{FailReason, ModelConfig, PushConfig};
use kickoff_sender::testsend::{self, TestSendStatus, TestSendStore};

#[path = "cli/aws.rs"]
mod aws;
#[path = "cli/event.rs"]
mod event;

/// Exit code when a fire was refused because the campaign was already fired.
const EXIT_ALREADY_FIRED: u8 = 3;
/// Exit code when a fire was aborted before every device was sent.
const EXIT_ABORTED: u8 = 4;

#[derive(Debug, Parser)]
#[command(name = "kickoff-sender", version, about = "Kickoff's sender: audiences, campaigns, drills and fires", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Audience files: compile, inspect, generate.
    #[command(subcommand)]
    Audience(AudienceCmd),
    /// Campaign files: check and preview.
    #[command(subcommand)]
    Campaign(CampaignCmd),
    /// Generate or load an audience, warm the workers, fire, and measure.
    Drill(DrillArgs),
    /// Fire a campaign at a compiled audience (embedded mode). Idempotent:
    /// a campaign fired before answers "already fired" and sends nothing.
    Fire(FireArgs),
    /// The loopback push gateway: APNs and FCM v1 over HTTP/2 on 127.0.0.1.
    Gateway(GatewayArgs),
    /// Send the campaign's exact payloads to its test recipients, confirm
    /// they arrived, or show where the campaign stands.
    TestSend(TestSendArgs),
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
    Worker(aws::WorkerArgs),
    /// AWS mode: provision resources, fire what is warm, show status.
    #[command(subcommand)]
    Aws(aws::AwsCmd),
}

#[derive(Debug, Args)]
struct TestSendArgs {
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

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct GatewayArgs {
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
    #[command(flatten)]
    faults: GatewayFlags,
}

#[derive(Debug, Subcommand)]
enum GatewayCmd {
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

#[derive(Debug, Subcommand)]
enum AudienceCmd {
    /// Validate audience files (CSV with a header, or JSON Lines) and compile
    /// them into shard snapshots.
    Compile {
        /// Input files; `.jsonl`/`.ndjson`/`.json` are JSON Lines, others CSV.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output audience directory.
        #[arg(long, short)]
        out: PathBuf,
        /// Number of shards.
        #[arg(long, default_value_t = audience::compile::DEFAULT_SHARDS)]
        shards: u32,
        /// Fail, writing nothing, if any line is rejected.
        #[arg(long)]
        strict: bool,
        /// Replace the output directory if it exists.
        #[arg(long)]
        force: bool,
        /// How many rejected lines to list.
        #[arg(long, default_value_t = audience::compile::DEFAULT_LISTED)]
        max_listed: usize,
        /// Also write the full report as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Show an audience directory (or one shard file) and verify its checksums.
    Inspect {
        /// An audience directory or a `.kshard` file.
        path: PathBuf,
        /// Also print the first N devices of each platform of the first shard.
        #[arg(long, default_value_t = 0)]
        devices: usize,
    },
    /// Write a synthetic audience file (realistic tokens), for drills and benchmarks.
    Generate {
        #[command(flatten)]
        spec: GenerateArgs,
        /// Output file; `.jsonl` for JSON Lines, CSV otherwise.
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(Debug, Args, Clone)]
struct GenerateArgs {
    /// Number of devices.
    #[arg(long, default_value_t = 100_000)]
    devices: u64,
    /// Share of iOS devices.
    #[arg(long, default_value_t = 0.6)]
    ios_share: f64,
    /// Number of markets (1-12).
    #[arg(long, default_value_t = 7)]
    markets: usize,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl GenerateArgs {
    fn spec(&self) -> GenerateSpec {
        GenerateSpec { devices: self.devices, ios_share: self.ios_share, markets: self.markets, seed: self.seed }
    }
}

#[derive(Debug, Subcommand)]
enum CampaignCmd {
    /// Check a campaign file and show its payload sizes.
    Check {
        /// The campaign file.
        file: PathBuf,
        /// Print the rendered payloads of this locale.
        #[arg(long)]
        show: Option<String>,
        /// Check the silent (rehearsal) rendering.
        #[arg(long)]
        silent: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProviderKind {
    /// The loopback gateway, started in-process: real HTTP/2 in the APNs and
    /// FCM protocols, deliveries counted per token.
    Gateway,
    /// APNs and FCM as configured by --config and the --apns-*/--fcm-* flags
    /// (the real services or any compatible endpoint).
    Http,
    /// Accept everything at once: measures the engine alone.
    Null,
    /// In-process latency and error model.
    Model,
}

/// Provider credentials and endpoints; override the config file key by key.
#[derive(Debug, Args, Clone, Default)]
struct PushFlags {
    /// Config file with [apns], [fcm], [tls], [pool] (default:
    /// kickoff.toml in Kickoff's data directory, if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// APNs token key (.p8).
    #[arg(long)]
    apns_key_file: Option<PathBuf>,
    /// APNs key id.
    #[arg(long)]
    apns_key_id: Option<String>,
    /// APNs team id.
    #[arg(long)]
    apns_team_id: Option<String>,
    /// Overrides the campaign's apns-topic.
    #[arg(long)]
    apns_topic: Option<String>,
    /// production, sandbox, or a URL.
    #[arg(long)]
    apns_url: Option<String>,
    /// FCM service-account JSON key file.
    #[arg(long)]
    fcm_service_account: Option<PathBuf>,
    /// Firebase project id (default: the service account's).
    #[arg(long)]
    fcm_project: Option<String>,
    /// FCM base URL.
    #[arg(long)]
    fcm_url: Option<String>,
    /// An extra CA certificate (PEM) to trust.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

impl PushFlags {
    /// The config file merged with the flags.
    fn config(&self, connections: Option<usize>) -> anyhow::Result<PushConfig> {
        let default = kickoff_sender::sys::data_dir().join("kickoff.toml");
        let file = match &self.config {
            Some(path) => PushConfig::load(path)?,
            None if default.is_file() => PushConfig::load(&default)?,
            None => PushConfig::default(),
        };
        let flags = PushConfig {
            apns: ApnsConfig {
                key_file: self.apns_key_file.clone(),
                key_id: self.apns_key_id.clone(),
                team_id: self.apns_team_id.clone(),
                topic: self.apns_topic.clone(),
                url: self.apns_url.clone(),
                refresh_minutes: None,
            },
            fcm: FcmConfig {
                service_account: self.fcm_service_account.clone(),
                project: self.fcm_project.clone(),
                url: self.fcm_url.clone(),
            },
            tls: TlsConfig { ca_file: self.ca_file.clone() },
            pool: PoolConfig { connections },
        };
        Ok(file.merged(flags))
    }
}

/// What the in-process gateway injects.
#[derive(Debug, Args, Clone)]
struct GatewayFlags {
    /// Cleartext HTTP/2 (h2c) instead of TLS.
    #[arg(long)]
    h2c: bool,
    /// Gateway response latency in ms: "5" or "2-8".
    #[arg(long, default_value = "0")]
    gateway_latency_ms: String,
    /// Share of tokens the gateway reports unregistered (410).
    #[arg(long, default_value_t = 0.0)]
    gateway_unregistered: f64,
    /// Share of requests answered 429.
    #[arg(long, default_value_t = 0.0)]
    gateway_429: f64,
    /// Share of requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    gateway_500: f64,
    /// Share of requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    gateway_503: f64,
    /// retry-after seconds on 429/503.
    #[arg(long)]
    gateway_retry_after: Option<u64>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS of the gateway.
    #[arg(long, default_value_t = 1000)]
    gateway_streams: u32,
    /// Gateway threads.
    #[arg(long, default_value_t = 1)]
    gateway_threads: usize,
}

impl GatewayFlags {
    fn config(&self) -> anyhow::Result<GatewayConfig> {
        let (lo, hi) = ms_range("--gateway-latency-ms", &self.gateway_latency_ms)?;
        for (name, rate) in [
            ("--gateway-unregistered", self.gateway_unregistered),
            ("--gateway-429", self.gateway_429),
            ("--gateway-500", self.gateway_500),
            ("--gateway-503", self.gateway_503),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                bail!("{name} {rate} is not between 0 and 1");
            }
        }
        Ok(GatewayConfig {
            threads: self.gateway_threads.max(1),
            max_concurrent_streams: self.gateway_streams.max(1),
            latency: (lo, hi),
            unregistered_rate: self.gateway_unregistered,
            rate_429: self.gateway_429,
            rate_500: self.gateway_500,
            rate_503: self.gateway_503,
            retry_after: self.gateway_retry_after,
            ..GatewayConfig::default()
        })
    }
}

fn ms_range(flag: &str, text: &str) -> anyhow::Result<(Duration, Duration)> {
    let ms = |s: &str| -> anyhow::Result<Duration> {
        let v: f64 = s.trim().parse().with_context(|| format!("{flag}: {s:?} is not a number of milliseconds"))?;
        if !(v >= 0.0 && v.is_finite()) {
            bail!("{flag}: {s:?} is not a non-negative number");
        }
        Ok(Duration::from_secs_f64(v / 1000.0))
    };
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (ms(a)?, ms(b)?),
        None => (ms(text)?, ms(text)?),
    };
    if hi < lo {
        bail!("{flag}: the range {text:?} ends before it starts");
    }
    Ok((lo, hi))
}

#[derive(Debug, Args, Clone)]
struct ProviderArgs {
    /// The push provider.
    #[arg(long, value_enum, default_value = "gateway")]
    provider: ProviderKind,
    #[command(flatten)]
    push: PushFlags,
    #[command(flatten)]
    gateway: GatewayFlags,
    /// Model round trip in milliseconds: "40" or a uniform range "20-60".
    #[arg(long, default_value = "20-60")]
    rtt_ms: String,
    /// Model error rates, e.g. "unregistered=0.01,server_error=0.001".
    #[arg(long, default_value = "")]
    errors: String,
    /// Notifier workers (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Connections per worker (in-flight window = connections x streams).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent streams per connection.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Model seed.
    #[arg(long = "model-seed", default_value_t = 7)]
    model_seed: u64,
}

impl ProviderArgs {
    fn engine(&self) -> EngineConfig {
        let mut config = EngineConfig::default();
        if let Some(w) = self.workers {
            config.workers = w.max(1);
        }
        config.in_flight_per_worker = (self.connections * self.streams).max(1);
        config
    }

    fn choice(&self) -> anyhow::Result<ProviderChoice> {
        Ok(match self.provider {
            ProviderKind::Gateway => ProviderChoice::Gateway {
                config: self.gateway.config()?,
                tls: !self.gateway.h2c,
                connections: self.pool_connections().unwrap_or(kickoff_sender::push::config::DEFAULT_CONNECTIONS),
            },
            ProviderKind::Http => {
                let config = self.push.config(self.pool_connections())?;
                if config.is_empty() {
                    bail!(
                        "--provider http needs credentials: --config FILE, or --apns-key-file/--apns-key-id/--apns-team-id and/or --fcm-service-account"
                    );
                }
                ProviderChoice::Http(config)
            }
            ProviderKind::Null => ProviderChoice::Null,
            ProviderKind::Model => ProviderChoice::Model(self.model()?),
        })
    }

    /// Connections per worker for HTTP/2 providers, when set explicitly.
    fn pool_connections(&self) -> Option<usize> {
        (self.connections != 4).then_some(self.connections)
    }

    fn model(&self) -> anyhow::Result<ModelConfig> {
        let (rtt_min, rtt_max) = ms_range("--rtt-ms", &self.rtt_ms)?;
        let mut errors = Vec::new();
        for part in self.errors.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, rate) = part.split_once('=').with_context(|| format!("--errors: {part:?} is not reason=rate"))?;
            let reason = FailReason::parse(name.trim()).with_context(|| {
                let names: Vec<_> = FailReason::ALL.iter().map(|r| r.as_str()).collect();
                format!("--errors: unknown reason {name:?}; reasons: {}", names.join(", "))
            })?;
            let rate: f64 = rate.trim().parse().with_context(|| format!("--errors: {rate:?} is not a rate"))?;
            errors.push((reason, rate));
        }
        let config = ModelConfig { rtt_min, rtt_max, errors, seed: self.model_seed };
        config.check().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        Ok(config)
    }
}

#[derive(Debug, Args)]
struct DrillArgs {
    /// Devices to generate (ignored with --audience).
    #[arg(long, default_value_t = 100_000)]
    devices: u64,
    /// A compiled audience directory, or an audience file to compile.
    #[arg(long)]
    audience: Option<PathBuf>,
    /// A campaign file (default: the built-in demo campaign).
    #[arg(long)]
    campaign: Option<PathBuf>,
    #[command(flatten)]
    provider: ProviderArgs,
    /// Share of iOS devices in a generated audience.
    #[arg(long, default_value_t = 0.6)]
    ios_share: f64,
    /// Markets in a generated audience (1-12).
    #[arg(long, default_value_t = 7)]
    markets: usize,
    /// Seed of a generated audience.
    #[arg(long, default_value_t = 1)]
    seed: u64,
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
struct FireArgs {
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
}

fn default_operator() -> String {
    std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "operator".into())
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let level = match std::env::var("KICKOFF_LOG").unwrap_or_default().to_ascii_lowercase().as_str() {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "info" => tracing::Level::INFO,
        "error" => tracing::Level::ERROR,
        _ => tracing::Level::WARN,
    };
    tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_target(false).init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Audience(cmd) => audience_cmd(cmd),
        Command::Campaign(CampaignCmd::Check { file, show, silent }) => campaign_check(&file, show.as_deref(), silent),
        Command::Drill(args) => drill_cmd(args),
        Command::Fire(args) => fire_cmd(args),
        Command::Gateway(args) => gateway_cmd(args),
        Command::TestSend(args) => test_send_cmd(args),
        Command::Runbook(cmd) => event::runbook_cmd(cmd),
        Command::Replay(args) => event::replay_cmd(args),
        Command::Zombie(cmd) => event::zombie_cmd(cmd),
        Command::Worker(args) => aws::worker_cmd(args),
        Command::Aws(cmd) => aws::aws_cmd(cmd),
    }
}

fn test_send_cmd(args: TestSendArgs) -> anyhow::Result<ExitCode> {
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
            let config = args.push.config(None)?;
            if config.is_empty() {
                bail!("--provider http needs credentials: --config FILE, or --apns-*/--fcm-* flags");
            }
            ProviderChoice::Http(config)
        }
        other => bail!("test-send goes through real providers or the gateway, not {other:?}"),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(async {
        let setup = match &choice {
            ProviderChoice::Gateway { config, tls, connections } => {
                let gw = Gateway::start_local(config.clone(), *tls, &campaign.apns.topic)?;
                let providers = gw.providers(*connections).await.map_err(kickoff_sender::push::PushSetupError::Fcm)?;
                (Some(gw), kickoff_sender::push::choice::AnyProvider::Push(providers))
            }
            ProviderChoice::Http(config) => (None, kickoff_sender::push::choice::AnyProvider::Push(config.providers().await?)),
            _ => unreachable!("refused above"),
        };
        anyhow::Ok(testsend::send(&campaign, &setup.1, &args.operator).await?)
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
    let at = |ms: u64| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string();
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

fn gateway_cmd(args: GatewayArgs) -> anyhow::Result<ExitCode> {
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
    let gw = match &args.keys {
        Some(dir) if dir.join(gateway::keys::GATEWAY_FILE).is_file() => Gateway::start(GatewayKeys::load(dir)?, config)?,
        Some(dir) => {
            let gw = Gateway::start_at(args.listen, config, tls, &args.topic)?;
            gw.keys().write(dir)?;
            gw
        }
        None => bail!("--keys DIR is needed: clients read the CA, the .p8 key and the service account from it"),
    };
    let dir = args.keys.as_deref().expect("checked");
    println!("gateway listening on {} (keys and sender config in {})", gw.url(), dir.display());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
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

fn bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    bar
}

fn audience_cmd(cmd: AudienceCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AudienceCmd::Compile { inputs, out, shards, strict, force, max_listed, report } => {
            let opts = CompileOptions { shards, strict, force, max_listed };
            let progress = bar(0, "compiling {bar:40} {bytes}/{total_bytes} ({eta})");
            let result = audience::compile(&inputs, &out, &opts, &mut |p| {
                progress.set_length(p.bytes_total);
                progress.set_position(p.bytes_read);
            });
            progress.finish_and_clear();
            let r = match result {
                Ok(r) => r,
                Err(e) => {
                    if let (Some(path), audience::AudienceError::Strict { report: r } | audience::AudienceError::NoDevices { report: r }) =
                        (&report, &e)
                    {
                        write_json(path, r)?;
                    }
                    return Err(e.into());
                }
            };
            eprint!("{r}");
            if let Some(path) = &report {
                write_json(path, &r)?;
            }
            let m = r.manifest.as_ref().expect("written");
            println!(
                "wrote {} ({} devices: {} iOS, {} Android; {} shards; checksum {})",
                out.display(),
                group(m.devices),
                group(m.ios),
                group(m.android),
                m.shards.len(),
                m.checksum
            );
            Ok(ExitCode::SUCCESS)
        }
        AudienceCmd::Inspect { path, devices } => inspect(&path, devices),
        AudienceCmd::Generate { spec, out } => {
            let spec = spec.spec();
            generate::write_file(&spec, &out)?;
            println!("wrote {} devices to {}", group(spec.devices), out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(value)?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

fn inspect(path: &Path, devices: usize) -> anyhow::Result<ExitCode> {
    let shards: Vec<Shard> = if path.is_dir() {
        let a = Audience::load(path)?;
        let m = a.manifest();
        println!("audience {}  checksum {}  created {}", path.display(), m.checksum, m.created_at);
        println!(
            "  devices {} (iOS {}, Android {}), {} shards, {} in memory",
            group(m.devices),
            group(m.ios),
            group(m.android),
            m.shards.len(),
            bytes(a.resident_bytes() as u64)
        );
        for s in &m.sources {
            println!("  source {}: {} lines, {} kept, {} rejected", s.path, group(s.lines), group(s.accepted), group(s.rejected));
        }
        println!("  markets: {}", m.markets.iter().map(|(k, v)| format!("{k} {}", group(*v))).collect::<Vec<_>>().join(", "));
        println!("  locales: {}", m.locales.iter().map(|(k, v)| format!("{k} {}", group(*v))).collect::<Vec<_>>().join(", "));
        if !m.rejected.is_empty() {
            println!("  rejected: {}", m.rejected.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
        }
        println!("  every shard's checksum verified");
        let mut shards = Vec::new();
        if devices > 0 {
            shards.push(Shard::load(&path.join(&m.shards[0].file))?);
        }
        shards
    } else {
        let s = Shard::load(path)?;
        println!(
            "shard {} of {}  checksum {:016x}  iOS {}  Android {}  {} in memory",
            s.index(),
            s.shard_count(),
            s.checksum(),
            group(s.len(Platform::Ios) as u64),
            group(s.len(Platform::Android) as u64),
            bytes(s.resident_bytes() as u64)
        );
        vec![s]
    };
    for s in shards.iter().filter(|_| devices > 0) {
        let users = s.user_ids()?;
        let mut buf = Vec::new();
        for platform in Platform::ALL {
            for i in 0..devices.min(s.len(platform)) {
                let token = s.token_text(platform, i, &mut buf).to_owned();
                println!(
                    "  {platform:<7} {:<12} {:<6} {}",
                    users.get(platform, i),
                    s.locales()[usize::from(s.locale(platform, i))],
                    audience::input::token_preview(&token)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn campaign_check(file: &Path, show: Option<&str>, silent: bool) -> anyhow::Result<ExitCode> {
    let mut c = Campaign::load(file)?;
    if silent {
        c = c.into_silent();
    }
    let payloads = Payloads::render(&c)?;
    println!("campaign {} ({:?}), hash {}", c.id, c.mode, &c.hash()[..16]);
    println!("  markets: {}", c.markets.iter().map(|m| m.code.as_str()).collect::<Vec<_>>().join(", "));
    for (i, locale) in payloads.locales().iter().enumerate() {
        println!(
            "  {locale:<8} APNs {:>4} bytes  FCM {:>4} bytes  (limit {})",
            payloads.get(Platform::Ios, i).size,
            payloads.get(Platform::Android, i).size,
            campaign::MAX_PAYLOAD_BYTES
        );
    }
    for (from, to) in &c.fallback {
        println!("  fallback {from} -> {to}");
    }
    println!("  test recipients: {}", c.test_recipients.len());
    if let Some(locale) = show {
        let resolved = c.resolve_locale(locale).with_context(|| format!("locale {locale:?} has no message"))?;
        let i = payloads.index_of(resolved).expect("resolved locales are rendered");
        println!("APNs {}:\n{}", resolved, payloads.get(Platform::Ios, i).body_for(""));
        println!("FCM {}:\n{}", resolved, payloads.get(Platform::Android, i).body_for("<token>"));
    }
    Ok(ExitCode::SUCCESS)
}

fn drill_cmd(args: DrillArgs) -> anyhow::Result<ExitCode> {
    let opts = DrillOptions {
        devices: args.devices,
        audience: args.audience,
        campaign: args.campaign,
        provider: args.provider.choice()?,
        engine: args.provider.engine(),
        generate: GenerateSpec { devices: args.devices, ios_share: args.ios_share, markets: args.markets, seed: args.seed },
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
    Ok(ExitCode::SUCCESS)
}

fn print_drill(s: &DrillSummary) {
    println!("drill {}: {} devices, provider {}, {} workers", s.campaign_id, group(s.devices), s.provider, s.workers);
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
            "  model       in flight {}   mean rtt {:.1} ms   Little's law {:.3} s ({:+.1}%)",
            group(limit),
            rtt * 1000.0,
            bound,
            (s.elapsed_s / bound - 1.0) * 100.0
        );
    }
    println!("  memory      peak RSS {}   audience in memory {}", bytes(s.peak_rss_bytes), bytes(s.audience_bytes));
    println!("  prepare     {:.2} s   load {:.3} s", s.prepare_s, s.load_s);
}

fn fire_cmd(args: FireArgs) -> anyhow::Result<ExitCode> {
    let audience = Arc::new(Audience::load(&args.audience)?);
    let campaign = Arc::new(Campaign::load(&args.campaign)?);
    let warm = Warm::new(audience, campaign)?;
    let data = kickoff_sender::sys::data_dir();
    let ledger = Arc::new(SqliteLedger::open(&args.ledger.clone().unwrap_or_else(kickoff_sender::sys::state_db))?);
    let choice = args.provider.choice()?;
    let mut config = args.provider.engine();
    config.reports_dir = Some(args.reports.clone().unwrap_or_else(|| data.join("reports")));
    // IO is enabled for the providers and the Ctrl-C handler.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (outcome, received) = rt.block_on(fire_with(warm, &choice, ledger, config, &args.operator))?;
    match outcome {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string(&serde_json::json!({ "status": "fired", "report": &*report, "received": received }))?);
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
            Ok(if report.aborted { ExitCode::from(EXIT_ABORTED) } else { ExitCode::SUCCESS })
        }
        Err(record) => {
            if args.json {
                println!("{}", serde_json::to_string(&serde_json::json!({ "status": "already_fired", "record": record }))?);
            } else {
                println!("{record}; nothing was sent");
            }
            Ok(ExitCode::from(EXIT_ALREADY_FIRED))
        }
    }
}

type FireResult = (Result<Arc<FireReport>, kickoff_sender::fanout::FireRecord>, Option<(u64, u64)>);

async fn fire_with(
    warm: Warm,
    choice: &ProviderChoice,
    ledger: Arc<SqliteLedger>,
    config: EngineConfig,
    operator: &str,
) -> anyhow::Result<FireResult> {
    let audience = warm.audience().clone();
    let excluded = warm.excluded().clone();
    let setup = Setup::start(choice, &audience, &warm.campaign().apns.topic).await?;
    let engine = Engine::start(warm, setup.provider.clone(), ledger, Arc::new(MemoryMetrics::new()), config).await?;
    setup.mark_fire();
    let result = match engine.fire(operator)? {
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
                    }
                }
            };
            progress.finish_and_clear();
            Ok(report)
        }
        FireOutcome::AlreadyFired(record) => Err(record),
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

/// 1234567 -> "1,234,567".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1e6)
}
