//! Runbooks as guided steps: the file format ([`file`]), the engine that
//! enforces the gates and serializes every transition ([`engine`]), the
//! services it drives ([`services`]), and walking a runbook from start to end
//! ([`walk`]). The CLI's `runbook walk` and the desktop app use the same
//! [`engine::Event`].

pub mod engine;
pub mod file;
pub mod services;
pub mod walk;

pub use engine::{ActError, Actor, Event, EventState, StepState, StepStatus};
pub use file::{Role, Runbook, RunbookError, Step, StepKind};
pub use services::{EmbeddedOptions, Services};

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
