//! What an event shows: step states, gates, the arm and the fire, and why
//! an action was refused. Plain data, serialized to the recorder and the UI.

use crate::recorder::replay::EventSummary;
use crate::runbook::workers::WarmReport;

/// A step's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Waiting for its gates.
    Pending,
    /// Gates open; can run.
    Ready,
    /// Someone is running it.
    Running,
    /// Done.
    Done,
    /// Failed (may be run again, or its backup taken).
    Failed,
    /// Skipped, with a reason.
    Skipped,
    /// A backup step: runs only if the step it backs fails.
    Standby,
}

/// Progress of a long step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepProgress {
    /// What is counted.
    pub label: String,
    /// So far.
    pub done: f64,
    /// Out of.
    pub total: f64,
    /// Seconds since the step started.
    pub elapsed_s: f64,
}

/// A step's status.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepStatus {
    /// Step id.
    pub id: String,
    /// State.
    pub state: StepState,
    /// Who ran (or skipped) it.
    pub by: Option<String>,
    /// Started, ms since the epoch.
    pub started_ms: Option<u64>,
    /// Finished.
    pub finished_ms: Option<u64>,
    /// Result or reason, for people.
    pub note: Option<String>,
    /// Progress while running.
    pub progress: Option<StepProgress>,
    /// The step's result, for UIs.
    pub result: Option<serde_json::Value>,
}

/// One gate of a step and whether it is open.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Gate {
    /// What must hold.
    pub what: String,
    /// It holds.
    pub open: bool,
    /// Why not, or since when.
    pub detail: String,
}

/// The armed state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Armed {
    /// Who armed.
    pub by: String,
    /// When.
    pub at_ms: u64,
    /// The campaign content armed.
    pub campaign_hash: String,
}

/// The fire of this event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FireInfo {
    /// Who pressed fire.
    pub by: String,
    /// When (from the ledger).
    pub at_ms: u64,
    /// Ledger id.
    pub fire_id: String,
}

/// A fire of this event that stopped before every device had a final
/// answer (its process died, or a provider stayed unreachable past the
/// outage timeout): an engineer can resume it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Interrupted {
    /// The fire key.
    pub fire_id: String,
    /// Who pressed fire.
    pub by: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Why it stopped, as far as known.
    pub why: String,
    /// Devices with a final answer, when the journal could tell.
    pub answered: Option<u64>,
    /// Devices the fire targets, likewise.
    pub targeted: Option<u64>,
}

/// The whole event, as UIs and the recorder see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EventState {
    /// Event id.
    pub event_id: String,
    /// The runbook's name.
    pub runbook: String,
    /// The campaign's current content hash.
    pub campaign_hash: String,
    /// Steps, in order, with their gates.
    pub steps: Vec<(StepStatus, Vec<Gate>)>,
    /// What the workers hold.
    pub warm: Option<WarmReport>,
    /// Armed.
    pub armed: Option<Armed>,
    /// Fired.
    pub fired: Option<FireInfo>,
    /// Aborted: by whom and why.
    pub aborted: Option<(String, String)>,
    /// The outcome of the send, once watched to its end.
    pub summary: Option<EventSummary>,
    /// The fire stopped short and can be resumed.
    pub interrupted: Option<Interrupted>,
}

/// Why an action was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum ActError {
    /// No such step.
    #[error("no step {0:?} in this runbook")]
    NoStep(String),
    /// The actor lacks the step's role.
    #[error("step {step} is for the {role} role; {actor} acts as {roles}")]
    Role {
        /// Step.
        step: String,
        /// Its role.
        role: String,
        /// Who tried.
        actor: String,
        /// Their roles.
        roles: String,
    },
    /// A gate is closed.
    #[error("step {step} is gated: {reasons}")]
    Gated {
        /// Step.
        step: String,
        /// The closed gates.
        reasons: String,
    },
    /// Someone else is running it.
    #[error("step {step} is running (started by {by})")]
    Busy {
        /// Step.
        step: String,
        /// Who.
        by: String,
    },
    /// It was already done: here is the result.
    #[error("step {step} was already {state} by {by} at {at}")]
    AlreadyDone {
        /// Step.
        step: String,
        /// done / skipped.
        state: String,
        /// Who.
        by: String,
        /// When (RFC 3339).
        at: String,
    },
    /// The campaign was fired already (by this event or, in the ledger, anyone).
    #[error("already fired at {at} by {by}")]
    AlreadyFired {
        /// Who.
        by: String,
        /// When (RFC 3339).
        at: String,
    },
    /// The event was aborted.
    #[error("the event was aborted by {by}: {why}")]
    Aborted {
        /// Who.
        by: String,
        /// Why.
        why: String,
    },
    /// The step ran and failed.
    #[error("step {step} failed: {message}")]
    Failed {
        /// Step.
        step: String,
        /// Why.
        message: String,
        /// What kind of failure, for the faces to act on.
        cause: FailureCause,
    },
    /// Anything else (a bad request).
    #[error("{0}")]
    Invalid(String),
}

/// What kind of failure a step met: what the operator should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// An outside service (AWS, the fleet) failed or did not answer: check
    /// the connection and the profile, then retry.
    Unavailable,
    /// The fleet stopped short of the size asked for: take the backup plan
    /// or ask for more capacity.
    Capacity,
    /// The push providers refused the credentials or are not configured.
    Credentials,
    /// Someone fired first.
    AlreadyFired,
    /// A bug or a crashed background task.
    Internal,
    /// The step's own check failed (a test-send error, a changed campaign...).
    Step,
}
