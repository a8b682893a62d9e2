//! A runbook's `[audience.dynamodb]`, imported into an event's work
//! directory when the event opens (`session`), so every step after it (the
//! plan, warm, the fire, AWS mode's upload) reads a compiled audience
//! directory like any other.
//!
//! The import goes to a name of this process's own and is renamed into
//! place when it is whole: a window that joins the event meanwhile, or a
//! crash half-way, never sees half an audience. An event imports once; a
//! new event reads the table again.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::dynamodb::{self, ImportError, ImportOptions, ImportReport, Selection};
use super::{Aws, AwsConfig};
use crate::audience::source::read_user_ids;
use crate::audience::{AudienceSource, CompileOptions, DynamoSource, DynamoUsers, store};
use crate::runbook::Runbook;

/// Gives `runbook` its audience as a compiled directory: a
/// `[audience.dynamodb]` is imported into `work` (`import_for_event`);
/// any other source is left as it is. The session layer calls it when an
/// event opens, `plan` before it plans.
pub async fn resolve(runbook: &mut Runbook, work: &Path, aws: Option<&Aws>) -> Result<(), ImportError> {
    if let Some(AudienceSource::DynamoDb(source)) = &runbook.audience {
        let dir = import_for_event(source, work, aws).await?;
        runbook.audience = Some(AudienceSource::Path(dir));
    }
    Ok(())
}

/// Imports `source` into `work/audience` (the rows read beside it, the
/// report as `work/audience.import.json`) unless the event has it already,
/// and returns the directory. The AWS configuration is the source's own
/// (`aws = FILE`), else the event's (`aws`, AWS mode); embedded mode with
/// neither is refused by name.
async fn import_for_event(source: &DynamoSource, work: &Path, aws: Option<&Aws>) -> Result<PathBuf, ImportError> {
    let out = work.join("audience");
    if out.join(store::MANIFEST).is_file() {
        return Ok(out);
    }
    let table = &source.spec.table;
    let own;
    let aws = match (&source.aws, aws) {
        (Some(file), _) => {
            own = Aws::connect(AwsConfig::load(file)?).await?;
            &own
        }
        (None, Some(aws)) => aws,
        (None, None) => {
            return Err(ImportError::Invalid(format!(
                "[audience.dynamodb] reads table {table} from AWS: name an AWS configuration file with `aws = \"aws.toml\"` \
                 in [audience.dynamodb], or open the event in AWS mode"
            )));
        }
    };
    let selection = match &source.users {
        DynamoUsers::File(path) => Selection::Users(read_user_ids(path)?),
        DynamoUsers::Scan { segments } => Selection::Scan { segments: *segments },
    };
    std::fs::create_dir_all(work).map_err(|e| io(work, e))?;
    let pending = work.join(format!("audience.import-{}", std::process::id()));
    let pending_rows = rows_beside(&pending);
    let opts = ImportOptions { compile: CompileOptions { force: true, ..ImportOptions::default().compile }, ..ImportOptions::default() };
    let last = Mutex::new(Instant::now());
    let progress = |p: dynamodb::ImportProgress| {
        let mut last = last.lock().expect("progress lock");
        if last.elapsed() >= Duration::from_secs(2) {
            *last = Instant::now();
            tracing::info!(table = %table, done = p.done, of = p.total, items = p.items, "reading the audience from DynamoDB");
        }
    };
    tracing::info!(table = %table, out = %out.display(), "importing the event's audience from DynamoDB");
    let report = match dynamodb::import(&aws.dynamodb, &source.spec, &selection, &pending, &opts, &progress).await {
        Ok(report) => report,
        Err(e) => {
            // (The import removes its own rows file when it fails.)
            let _ = std::fs::remove_dir_all(&pending);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&pending, &out) {
        // Another window of the event finished first: its audience is the
        // event's, this one goes.
        let _ = std::fs::remove_dir_all(&pending);
        let _ = std::fs::remove_file(&pending_rows);
        if out.join(store::MANIFEST).is_file() {
            return Ok(out);
        }
        return Err(io(&out, e));
    }
    let rows = rows_beside(&out);
    if let Err(e) = std::fs::rename(&pending_rows, &rows) {
        let _ = std::fs::remove_file(&pending_rows);
        return Err(io(&rows, e));
    }
    let report = ImportReport { rows, ..report };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| ImportError::Invalid(format!("the import report: {e}")))?;
    let report_path = work.join("audience.import.json");
    std::fs::write(&report_path, json).map_err(|e| io(&report_path, e))?;
    tracing::info!(
        table = %table,
        items = report.items,
        devices = report.compile.accepted,
        missing_users = report.missing_users.len(),
        rejected = report.rejected.len(),
        throttled = report.throttled,
        "the event's audience is imported from DynamoDB"
    );
    Ok(out)
}

/// `dir`.rows.jsonl, beside `dir`: where an import keeps the rows it read.
pub fn rows_beside(dir: &Path) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.with_file_name(format!("{name}.rows.jsonl"))
}

fn io(path: &Path, source: std::io::Error) -> ImportError {
    ImportError::Audience(crate::audience::AudienceError::Io { path: path.to_owned(), source })
}
