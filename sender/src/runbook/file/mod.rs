//! Runbook files: TOML in, a checked [`Runbook`] out; every error names the
//! file and line.
//!
//! ```toml
//! name = "Launch day"
//! campaign = "campaigns/demo.toml"        # relative to this file
//! event_time = "2026-11-26T20:00:00Z"     # optional; T-offsets count from it
//! [audience]
//! generate = 200_000                      # or dir = "..." / file = "..."
//! [fleet]                                 # the embedded fleet simulation
//! instance_startup = "2s"
//! [[steps]]
//! id = "scale-asg"
//! title = "Scale the ASG"
//! role = "ops"
//! kind = "scale-asg"
//! at = "T-30m"
//! deadline = "T-20m"
//! params = { desired = 8, timeout = "2m" }
//! backup = { text = "Take what we got", step = "accept-partial" }
//! [send]                                  # optional
//! outage_timeout = "5m"                   # 1 s to 1 h; default 2m
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::audience::AudienceSource;
use crate::fleet::SimConfig;

mod check;
mod raw;

/// A runbook file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RunbookError {
    /// The file could not be read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The runbook file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A syntax or rule error at a line.
    #[error("{path}:{line}: {message}", path = path.display())]
    Invalid {
        /// The runbook file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The campaign the runbook names is invalid.
    #[error("{path}:{line}: campaign: {source}", path = path.display())]
    Campaign {
        /// The runbook file.
        path: PathBuf,
        /// Line of `campaign = ...`.
        line: usize,
        /// The campaign's own error (with its file and line).
        #[source]
        source: crate::campaign::CampaignError,
    },
}

/// Who does a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Scales the fleet, watches the backends, switches zombie mode.
    Ops,
    /// Verifies the workers, test-sends, arms.
    Engineer,
    /// Confirms the message and presses fire.
    Marketer,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Ops, Role::Engineer, Role::Marketer];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ops => "ops",
            Self::Engineer => "engineer",
            Self::Marketer => "marketer",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// Set the ASG's desired capacity and wait for the instances.
    ScaleAsg,
    /// Set the ECS service's desired count and wait for the tasks.
    ScaleEcs,
    /// Load the audience and campaign into every worker and verify them.
    VerifyWarm,
    /// Send the campaign to its test recipients.
    TestSend,
    /// Confirm the test notifications arrived.
    Confirm,
    /// Arm the fire button.
    Arm,
    /// Fire.
    Fire,
    /// Watch the send to its end and check the outcome.
    Watch,
    /// Switch zombie mode for a backend (on a condition).
    Zombie,
    /// Scale the fleet back down.
    ScaleDown,
    /// A list to tick off by hand.
    Checklist,
    /// Wait until the step's `at` time.
    WaitUntil,
    /// Check the plan: provider quotas, fleet size, backend load
    /// (`kickoff-sender plan`); fails when a gate fails (skip it with a
    /// reason to accept).
    Plan,
}

impl StepKind {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaleAsg => "scale-asg",
            Self::ScaleEcs => "scale-ecs",
            Self::VerifyWarm => "verify-warm",
            Self::TestSend => "test-send",
            Self::Confirm => "confirm",
            Self::Arm => "arm",
            Self::Fire => "fire",
            Self::Watch => "watch",
            Self::Zombie => "zombie",
            Self::ScaleDown => "scale-down",
            Self::Checklist => "checklist",
            Self::WaitUntil => "wait-until",
            Self::Plan => "plan",
        }
    }
}

/// When to switch zombie mode on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ZombieWhen {
    /// Only if the backend's load is over its capacity.
    OverCapacity,
    /// Always.
    Always,
}

/// A step's checked parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Params {
    /// scale-asg / scale-ecs.
    Scale {
        /// Target count.
        desired: u32,
        /// Give up (and fail) after this long.
        #[serde(with = "crate::clock::duration")]
        timeout: Duration,
    },
    /// scale-down.
    ScaleDown {
        /// Instances to keep.
        asg: u32,
        /// Tasks to keep.
        ecs: u32,
    },
    /// test-send.
    TestSend {
        /// Send the silent rendering.
        silent: bool,
    },
    /// watch.
    Watch {
        /// Devices that may go missing before the step fails.
        max_missing: u64,
        /// Give up after this long.
        #[serde(with = "crate::clock::duration")]
        timeout: Duration,
    },
    /// zombie.
    Zombie {
        /// The backend.
        backend: String,
        /// How long zombie mode lasts.
        #[serde(with = "crate::clock::duration")]
        duration: Duration,
        /// What clients are told to wait.
        retry_after_s: u64,
        /// The condition.
        when: ZombieWhen,
    },
    /// checklist.
    Checklist {
        /// Items to tick.
        items: Vec<String>,
    },
    /// plan.
    Plan(PlanParams),
    /// Steps without parameters.
    None,
}

/// The furthest a step may be planned from the event, either side.
pub const MAX_T_OFFSET: Duration = Duration::from_secs(30 * 24 * 3600);

/// A time relative to the event: `T-30m`, `T`, `T+5m`, at most
/// [`MAX_T_OFFSET`] away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct TOffset {
    /// Signed milliseconds from the event time.
    pub ms: i64,
}

impl TOffset {
    /// Parses `T`, `T-30m`, `T+1h 30m`.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.trim().strip_prefix('T')?;
        if rest.is_empty() {
            return Some(Self { ms: 0 });
        }
        let (sign, d) = match rest.as_bytes()[0] {
            b'-' => (-1, &rest[1..]),
            b'+' => (1, &rest[1..]),
            _ => return None,
        };
        let d = crate::clock::parse_duration(d, MAX_T_OFFSET).ok()?;
        Some(Self { ms: sign * i64::try_from(d.as_millis()).ok()? })
    }

    /// `T-30m`.
    pub fn display(self) -> String {
        if self.ms == 0 {
            return "T".into();
        }
        let sign = if self.ms < 0 { '-' } else { '+' };
        format!("T{sign}{}", humantime::format_duration(Duration::from_millis(self.ms.unsigned_abs())))
    }

    /// The absolute time, given the event time.
    pub fn at(self, event_ms: u64) -> u64 {
        event_ms.saturating_add_signed(self.ms)
    }
}

/// What to do when a step fails.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Backup {
    /// What to do, for people.
    pub text: String,
    /// An alternative step that stands in for this one.
    pub step: Option<String>,
}

/// A checked step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Step {
    /// Unique id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Who does it.
    pub role: Role,
    /// What it does.
    pub kind: StepKind,
    /// Parameters.
    pub params: Params,
    /// Steps that must be done first.
    pub after: Vec<String>,
    /// Named checks that must pass first.
    pub checks: Vec<Check>,
    /// Planned time.
    pub at: Option<TOffset>,
    /// Latest acceptable completion.
    pub deadline: Option<TOffset>,
    /// The backup plan.
    pub backup: Option<Backup>,
    /// Another step's backup: it runs only if that step fails.
    pub backup_for: Option<String>,
    /// Line in the file.
    pub line: usize,
    /// Line of the backup plan.
    #[serde(skip)]
    pub backup_line: usize,
}

/// Checks a step may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Every worker holds every shard of the audience, checksums verified.
    AllShardsWarm,
    /// The ASG and the ECS service run what they were asked for.
    FleetAtDesired,
    /// The test-send of the current campaign was confirmed.
    TestSendConfirmed,
    /// The fire button is armed.
    Armed,
    /// The runbook's plan step passed, or was skipped with a reason.
    PlanPassed,
    /// The providers proved healthy within 10 minutes (tokens accepted,
    /// key files readable): `runbook::health`.
    ProvidersHealthy,
}

impl Check {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllShardsWarm => "all-shards-warm",
            Self::FleetAtDesired => "fleet-at-desired",
            Self::TestSendConfirmed => "test-send-confirmed",
            Self::Armed => "armed",
            Self::PlanPassed => "plan-passed",
            Self::ProvidersHealthy => "providers-healthy",
        }
    }
}

/// How long an approval of the arm counts, unless `[approvals] within` says.
pub const DEFAULT_APPROVAL_WINDOW: Duration = Duration::from_secs(10 * 60);

/// `[approvals] arm = N, within = "10m"`: the arm needs N different
/// operators, each approving within the window of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ArmApprovals {
    /// Different operators (2 to 5).
    pub count: u32,
    /// How long an approval counts.
    #[serde(with = "humantime_serde_secs")]
    pub within: Duration,
}

mod humantime_serde_secs {
    pub(super) fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}

/// A `plan` step's params.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PlanParams {
    /// FCM messages per minute (default: `kickoff.toml`'s, or FCM's 600,000).
    pub fcm_quota_per_minute: Option<u64>,
    /// One worker's sends per second (default: measured).
    pub per_worker_rate: Option<f64>,
    /// Gates (by id) accepted if they fail, each with the reason recorded.
    pub accept: std::collections::BTreeMap<String, String>,
}

/// A checked runbook.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Runbook {
    /// Name.
    pub name: String,
    /// The file it came from.
    pub path: PathBuf,
    /// The campaign file (absolute or relative to the working directory).
    pub campaign: PathBuf,
    /// The event (T), ms since the epoch, if set.
    pub event_time_ms: Option<u64>,
    /// Send the campaign as a silent rehearsal (APNs background, FCM data-only).
    pub silent: bool,
    /// The audience in embedded mode.
    pub audience: Option<AudienceSource>,
    /// The embedded fleet simulation.
    pub fleet: SimConfig,
    /// Backends with zombie flags.
    pub backends: Vec<String>,
    /// Modelled capacity of each backend (requests/s), for the return-traffic model.
    pub backend_capacity: BTreeMap<String, f64>,
    /// What a notification's opens cost each backend, for the plan's
    /// forecast (`[backends.NAME]` `requests_per_open`, `open_share`,
    /// `open_delay`).
    pub return_traffic: Vec<crate::plan::BackendInput>,
    /// What each role does (for people).
    pub roles: BTreeMap<Role, String>,
    /// The abort plan.
    pub abort_plan: String,
    /// `[send] outage_timeout`: how long the fire waits for an unreachable
    /// (or throttling) provider before it stops as interrupted. `None`: the
    /// default, [`crate::fanout::DEFAULT_OUTAGE_TIMEOUT`].
    pub outage_timeout: Option<Duration>,
    /// `[approvals] arm = N`: the arm needs N different operators.
    pub arm_approvals: Option<ArmApprovals>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Runbook {
    /// The first `plan` step and its params.
    pub fn plan_step(&self) -> Option<(&Step, &PlanParams)> {
        self.steps.iter().find_map(|s| match &s.params {
            Params::Plan(p) => Some((s, p)),
            _ => None,
        })
    }

    /// The params of the `plan` step `id`.
    pub fn plan_step_named(&self, id: &str) -> Option<&PlanParams> {
        self.steps.iter().find(|s| s.id == id).and_then(|s| match &s.params {
            Params::Plan(p) => Some(p),
            _ => None,
        })
    }

    /// Reads and checks a runbook file, and the campaign it names.
    pub fn load(path: &Path) -> Result<Self, RunbookError> {
        let text = std::fs::read_to_string(path).map_err(|source| RunbookError::Io { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Checks runbook text; `path` is used in messages and to resolve
    /// relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RunbookError> {
        let ctx = raw::Ctx { path, text };
        let raw: raw::RawRunbook = toml::from_str(text).map_err(|e| RunbookError::Invalid {
            path: path.to_owned(),
            line: crate::spans::toml_error_line(text, &e),
            message: e.message().trim().to_owned(),
        })?;
        let header = check::header(&ctx, &raw)?;
        let steps = check::steps(&ctx, &raw.steps, &header.backend_capacity)?;
        check::plan(path, &steps)?;
        let zombie_backends: BTreeSet<String> = steps
            .iter()
            .filter_map(|s| match &s.params {
                Params::Zombie { backend, .. } => Some(backend.clone()),
                _ => None,
            })
            .chain(header.backend_capacity.keys().cloned())
            .collect();
        let check::Header {
            name,
            campaign,
            event_time_ms,
            audience,
            fleet,
            roles,
            backend_capacity,
            return_traffic,
            abort_plan,
            outage_timeout,
            arm_approvals,
        } = header;
        Ok(Runbook {
            name,
            path: path.to_owned(),
            campaign,
            event_time_ms,
            silent: raw.silent,
            audience,
            fleet,
            backends: zombie_backends.into_iter().collect(),
            backend_capacity,
            return_traffic,
            roles,
            abort_plan,
            outage_timeout,
            arm_approvals,
            steps,
        })
    }

    /// The step `id`.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The plan as recorded in the flight recorder (`meta.runbook_plan`).
    pub fn plan_json(&self) -> String {
        let plan: Vec<serde_json::Value> = self
            .steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id,
                    "title": s.title,
                    "at": s.at.map(TOffset::display),
                    "at_ms": s.at.zip(self.event_time_ms).map(|(a, e)| a.at(e)),
                })
            })
            .collect();
        serde_json::to_string(&plan).expect("the plan serializes")
    }
}
