//! `audience import dynamodb`: the audience from a DynamoDB table, compiled
//! as any audience file is (`aws::dynamodb`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use kickoff_sender::audience::CompileOptions;
use kickoff_sender::aws::dynamodb::{self, ImportOptions, Selection, TableSpec};
use kickoff_sender::aws::{Aws, AwsConfig};

use super::{bar, group};

/// `audience import ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ImportCmd {
    /// Read each user's devices from a DynamoDB table (BatchGetItem when the
    /// user id is the table's whole key, else a Query per user; in parallel,
    /// backing off when throttled), or the whole table (--scan), and compile
    /// them into an audience directory.
    Dynamodb(Box<DynamoArgs>),
}

#[derive(Debug, Args)]
pub(crate) struct DynamoArgs {
    /// The AWS configuration (region, credentials, endpoint), as for `aws`.
    #[arg(long, value_name = "FILE")]
    aws: PathBuf,
    /// The table.
    #[arg(long)]
    table: String,
    /// The users, one id per line (blank lines and `#` comments skipped).
    #[arg(long, value_name = "FILE", required_unless_present = "scan", conflicts_with = "scan")]
    user_ids: Option<PathBuf>,
    /// Read the whole table instead, in parallel segments.
    #[arg(long)]
    scan: bool,
    /// Scan segments.
    #[arg(long, default_value_t = 8)]
    segments: u32,
    /// Query this index instead of the table (its partition key is the user id).
    #[arg(long)]
    index: Option<String>,
    /// Attribute names: user id (the partition key), platform, token, locale, market.
    #[arg(long, value_delimiter = ',', default_value = "user_id,platform,token,locale,market")]
    attributes: Vec<String>,
    /// Requests in flight at most (throttling lowers it, then it grows back).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Output audience directory (the rows read are kept beside it, as DIR.rows.jsonl).
    #[arg(long, short)]
    out: PathBuf,
    /// Number of shards.
    #[arg(long, default_value_t = kickoff_sender::audience::compile::DEFAULT_SHARDS)]
    shards: u32,
    /// Replace the output directory if it exists.
    #[arg(long)]
    force: bool,
    /// Also write the full report (every rejected item by key and reason) as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[allow(clippy::print_stdout)]
pub(crate) fn import_cmd(cmd: ImportCmd) -> anyhow::Result<ExitCode> {
    let ImportCmd::Dynamodb(args) = cmd;
    let [user_id, platform, token, locale, market] = <[String; 5]>::try_from(args.attributes.clone())
        .map_err(|_| anyhow::anyhow!("--attributes takes five names: user id, platform, token, locale, market"))?;
    let spec = TableSpec { table: args.table.clone(), index: args.index.clone(), user_id, platform, token, locale, market };
    let selection = match &args.user_ids {
        Some(f) => Selection::Users(kickoff_sender::audience::source::read_user_ids(f)?),
        None => Selection::Scan { segments: args.segments },
    };
    let opts = ImportOptions {
        concurrency: args.concurrency,
        compile: CompileOptions { shards: args.shards, force: args.force, max_listed: 1000, ..CompileOptions::default() },
        ..ImportOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let progress = bar(0, "reading {bar:40} {pos}/{len} ({eta}) {msg}");
    let report = rt.block_on(async {
        let aws = Aws::connect(AwsConfig::load(&args.aws)?).await?;
        let shown = progress.clone();
        let on = move |p: dynamodb::ImportProgress| {
            shown.set_length(p.total);
            shown.set_position(p.done);
            shown.set_message(format!("{} items", group(p.items)));
        };
        anyhow::Ok(dynamodb::import(&aws.dynamodb, &spec, &selection, &args.out, &opts, &on).await?)
    })?;
    progress.finish_and_clear();
    if let Some(path) = &args.report {
        super::write_json(path, &report)?;
    }
    let c = &report.compile;
    println!(
        "{} items read ({}){}; {} devices kept, {} rejected; throttled {} times (down to {} requests in flight)",
        group(report.items),
        report.method,
        if report.missing_users.is_empty() {
            String::new()
        } else {
            format!(", {} users with no device", group(report.missing_users.len() as u64))
        },
        group(c.accepted),
        group(report.items.saturating_sub(c.lines) + c.rejected_total()),
        report.throttled,
        report.lowest_concurrency
    );
    for u in report.missing_users.iter().take(20) {
        println!("  missing user {u}");
    }
    for r in report.rejected.iter().take(20) {
        let token = r.token.as_deref().map_or_else(|| "-".to_owned(), kickoff_sender::audience::input::token_preview);
        println!("  rejected user {} token {token}: {}", r.user_id, r.reason);
    }
    println!("audience in {} (rows in {})", args.out.display(), report.rows.display());
    Ok(ExitCode::SUCCESS)
}
