//! Runbooks as guided steps: the file format ([`file`]), the engine that
//! enforces the gates and serializes every transition ([`engine`]), the
//! services it drives ([`services`]), and walking a runbook from start to end
//! ([`walk`]). The CLI's `runbook walk` and the desktop app use the same
//! [`engine::Event`].

pub mod approvals;
pub mod engine;
pub mod file;
pub mod health;
pub mod planning;
pub mod print;
pub mod registry;
pub mod services;
pub mod walk;
pub mod workers;

pub use engine::{ActError, Actor, Event, EventState, FailureCause, Interrupted, StepProgress, StepState, StepStatus};
pub use file::{Role, Runbook, RunbookError, Step, StepKind};
pub use services::{ServiceOptions, Services, ServicesError};
pub use workers::{WarmReport, WorkerWarm, Workers, WorkersError};

/// An event id for `runbook`: `<file stem>@<event time>` when the runbook
/// has one (so every process walking the same event shares one fire), else
/// `<file stem>@<now>` (a new event per walk).
pub fn event_id(runbook: &Runbook) -> String {
    let stem = runbook.path.file_stem().and_then(|s| s.to_str()).unwrap_or("event");
    let ms = runbook.event_time_ms.unwrap_or_else(crate::recorder::now_ms);
    let stamp =
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string().replace(':', "");
    format!("{stem}@{stamp}")
}

/// The runbooks that ship with Kickoff, by file name (relative to a
/// `runbooks/` directory, campaigns under `campaigns/`).
pub const SHIPPED: &[(&str, &str)] = &[
    ("launch-day.toml", include_str!("../../../runbooks/launch-day.toml")),
    ("rehearsal.toml", include_str!("../../../runbooks/rehearsal.toml")),
    ("cloud-scale-test.toml", include_str!("../../../runbooks/cloud-scale-test.toml")),
    ("campaigns/demo.toml", crate::campaign::DEMO_CAMPAIGN),
];

/// Writes the shipped runbooks into `dir` where they are missing (an edited
/// copy is never overwritten) and returns the runbook files found there.
pub fn install_shipped(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    for (name, text) in SHIPPED {
        let path = dir.join(name);
        if !path.exists() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, text)?;
        }
    }
    let mut files: Vec<_> =
        std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
    files.sort();
    Ok(files)
}
