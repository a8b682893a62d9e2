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
use kickoff_sender::push::{FailReason, ModelConfig, ModelProvider, NullProvider, Provider};

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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProviderKind {
    /// Accept everything at once: measures the engine alone.
    Null,
    /// In-process latency and error model.
    Model,
}

#[derive(Debug, Args, Clone)]
struct ProviderArgs {
    /// The push provider.
    #[arg(long, value_enum, default_value = "null")]
    provider: ProviderKind,
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
            ProviderKind::Null => ProviderChoice::Null,
            ProviderKind::Model => ProviderChoice::Model(self.model()?),
        })
    }

    fn model(&self) -> anyhow::Result<ModelConfig> {
        let ms = |s: &str| -> anyhow::Result<Duration> {
            let v: f64 = s.trim().parse().with_context(|| format!("--rtt-ms: {s:?} is not a number of milliseconds"))?;
            if !(v >= 0.0 && v.is_finite()) {
                bail!("--rtt-ms: {s:?} is not a non-negative number");
            }
            Ok(Duration::from_secs_f64(v / 1000.0))
        };
        let (rtt_min, rtt_max) = match self.rtt_ms.split_once('-') {
            Some((a, b)) => (ms(a)?, ms(b)?),
            None => (ms(&self.rtt_ms)?, ms(&self.rtt_ms)?),
        };
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
    /// The fire ledger (default: ledger.sqlite in Kickoff's data directory).
    #[arg(long)]
    ledger: Option<PathBuf>,
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
    }
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
    let ledger_path = args.ledger.unwrap_or_else(|| kickoff_sender::sys::data_dir().join("ledger.sqlite"));
    let ledger = Arc::new(SqliteLedger::open(&ledger_path)?);
    let engine_config = args.provider.engine();
    // IO is enabled for the Ctrl-C handler.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let outcome = match args.provider.provider {
        ProviderKind::Null => rt.block_on(fire_with(warm, Arc::new(NullProvider::default()), ledger, engine_config, &args.operator)),
        ProviderKind::Model => {
            let model = args.provider.model()?;
            rt.block_on(fire_with(warm, Arc::new(ModelProvider::new(model, None)), ledger, engine_config, &args.operator))
        }
    }?;
    match outcome {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string(&serde_json::json!({ "status": "fired", "report": &*report }))?);
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
                for (reason, n) in &report.failed_by_reason {
                    println!("  failed {reason}: {}", group(*n));
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

async fn fire_with<P: Provider>(
    warm: Warm,
    provider: Arc<P>,
    ledger: Arc<SqliteLedger>,
    config: EngineConfig,
    operator: &str,
) -> anyhow::Result<Result<Arc<FireReport>, kickoff_sender::fanout::FireRecord>> {
    let excluded = warm.excluded().clone();
    let engine = Engine::start(warm, provider, ledger, Arc::new(MemoryMetrics::new()), config).await?;
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
    Ok(result)
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
