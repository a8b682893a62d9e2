//! `audience compile|inspect|generate` and `campaign check`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use kickoff_sender::audience::generate;
use kickoff_sender::audience::{self, Audience, CompileOptions, Platform, Shard};
use kickoff_sender::campaign::{self, Campaign, Payloads};

use super::args::GenerateArgs;
use super::{bar, bytes, group, write_json};

#[derive(Debug, Subcommand)]
pub(crate) enum AudienceCmd {
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
    /// Import the audience from where it lives (DynamoDB).
    #[command(subcommand)]
    Import(super::import::ImportCmd),
    /// Write a synthetic audience file (realistic tokens), for drills and benchmarks.
    Generate {
        #[command(flatten)]
        spec: GenerateArgs,
        /// Output file; `.jsonl` for JSON Lines, CSV otherwise.
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CampaignCmd {
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

pub(crate) fn audience_cmd(cmd: AudienceCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AudienceCmd::Import(cmd) => super::import::import_cmd(cmd),
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

pub(crate) fn campaign_check(file: &Path, show: Option<&str>, silent: bool) -> anyhow::Result<ExitCode> {
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
