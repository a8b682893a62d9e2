//! The error every command returns: a stable machine code and a message for
//! people, serialized as `{ "code": ..., "message": ... }`.

use kickoff_sender::drill::DrillError;

/// A command's failure as the UI receives it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct CommandError {
    /// Stable, for the UI to branch on: what to do next. `invalid` (a
    /// request or file to fix), `busy`, `audience`, `campaign`, `runbook`,
    /// `recording`, `engine`, `provider`, `aws`, `embedded`, `unavailable`
    /// (AWS or a provider does not answer), `capacity`, `credentials`,
    /// `already_fired`, `aborted`, `gated`, `role`, `step_failed`, `internal`.
    pub code: &'static str,
    /// What happened, for people. Never contains secrets.
    pub message: String,
}

impl CommandError {
    /// A request the user can fix.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { code: "invalid", message: message.into() }
    }

    /// Something is already running.
    pub fn busy(message: impl Into<String>) -> Self {
        Self { code: "busy", message: message.into() }
    }

    /// A bug or a crash of a background task.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self { code: "internal", message: e.to_string() }
    }
}

impl From<DrillError> for CommandError {
    fn from(e: DrillError) -> Self {
        let code = match &e {
            DrillError::Invalid(_) => "invalid",
            DrillError::Audience(_) => "audience",
            DrillError::Campaign(_) | DrillError::Warm(_) => "campaign",
            DrillError::Engine(_) | DrillError::Ledger(_) | DrillError::AlreadyFired(_) => "engine",
            DrillError::Setup(_) => "provider",
            DrillError::WorkDir { .. } | DrillError::Runtime(_) => "internal",
        };
        Self { code, message: e.to_string() }
    }
}
